"""The vocabulary layout: builders, the parser, and the official records."""

import numpy as np
import pytest

from lumos.vocab import Vocab, video_prompt
from seqs import official_record, t2v


@pytest.fixture(params=["chameleon", "compact"])
def vocab(request):
    return Vocab.chameleon() if request.param == "chameleon" else Vocab.compact(64, 100, max_size=32)


def test_chameleon_ids_match_spec():
    v = Vocab.chameleon()
    assert (v.vocab_size, v.bos, v.sep, v.frame_start, v.frame_end, v.newline) == (129536, 0, 8710, 8197, 8196, 8803)
    assert (v.size_base, v.mask, v.video_start, v.video_end, v.visual_offset) == (8804, 9003, 9004, 9005, 65536)
    assert v.size_token(12) == 8816 and v.codebook_size == 64000


def test_compact_layout_is_dense_and_disjoint():
    v = Vocab.compact(100, 1000, max_size=40)
    ids = set(range(100)) | set(v.special_ids()) | {v.size_token(n) for n in range(41)}
    ids |= set(range(v.visual_offset, v.visual_offset + 1000))
    assert ids == set(range(v.vocab_size))


def test_frame_layout(vocab):
    g = vocab.grid_per_size
    codes = np.arange(2 * g * 3 * g).reshape(2 * g, 3 * g) % vocab.codebook_size
    toks = vocab.frame_tokens(codes)
    h, w = codes.shape
    assert len(toks) == vocab.frame_length(h, w) == h * (w + 1) + 4
    assert list(toks[:3]) == [vocab.frame_start, vocab.size_token(2), vocab.size_token(3)]
    assert toks[-1] == vocab.frame_end
    body = toks[3:-1].reshape(h, w + 1)
    assert (body[:, -1] == vocab.newline).all()
    assert (body[:, :-1] - vocab.visual_offset == codes).all()


def test_t2v_roundtrip(vocab):
    g = vocab.grid_per_size
    seq = t2v(vocab, frames=5, h=2 * g, w=3 * g, duration=2, fps=8)
    p = vocab.parse_video(seq)
    assert p.frames.shape == (5, 2 * g, 3 * g) and (p.duration, p.fps, p.complete) == (2, 8, True)
    assert seq[0] == vocab.bos and list(seq[-2:]) == [vocab.video_end, vocab.sep]
    again = np.concatenate([p.text, vocab.video_tokens(p.frames, p.duration, p.fps)])
    assert (again == seq).all()


def test_prompts_and_unconditional(vocab):
    g = vocab.grid_per_size
    text = [5, 6, 7]
    frame = np.zeros((g, g), np.int64)
    t2i = vocab.build_t2i(text, frame)
    assert vocab.parse_video(t2i).frames.shape == (1, g, g)
    assert list(t2i[5:8]) == [vocab.video_start, vocab.size_token(1), vocab.size_token(1)]
    gen = vocab.build_t2v(text, None, duration=2, fps=12)
    assert list(gen) == [vocab.bos, 5, 6, 7, vocab.sep, vocab.video_start, vocab.size_token(2), vocab.size_token(12)]
    i2v = vocab.build_i2v(text, frame, duration=2, fps=12)
    p = vocab.parse_video(i2v)
    assert p.frames.shape == (1, g, g) and not p.complete and i2v[-1] == vocab.frame_end
    cont = vocab.build_continuation(text, np.zeros((3, g, g), np.int64), duration=2, fps=12)
    assert vocab.parse_video(cont).frames.shape[0] == 3
    uncond = vocab.build(None, None, duration=2, fps=12, complete=False)
    assert uncond[0] == vocab.video_start and len(uncond) == 3


def test_parser_errors_name_the_problem(vocab):
    g = vocab.grid_per_size
    seq = t2v(vocab, frames=2, h=g, w=g)
    vs = int(np.flatnonzero(seq == vocab.video_start)[0])
    bad = seq.copy()
    bad[vs + 3 + 3 + g] = vocab.visual_offset  # a newline replaced by a code
    with pytest.raises(ValueError, match="NEWLINE"):
        vocab.parse_video(bad)
    bad = seq.copy()
    bad[vs + 3 + 3] = vocab.mask  # a code replaced by a non-visual id
    with pytest.raises(ValueError, match="not a visual id"):
        vocab.parse_video(bad)
    with pytest.raises(ValueError, match="cut off"):
        vocab.parse_video(seq[: vs + 8])
    with pytest.raises(ValueError, match="VIDEO_START"):
        vocab.parse_video(seq[:vs])
    with pytest.raises(ValueError, match="text token"):
        vocab.text_turn([vocab.text_vocab_size])
    with pytest.raises(ValueError, match="visual code"):
        vocab.frame_tokens(np.full((g, g), vocab.codebook_size))


def test_video_prompt_template():
    s = video_prompt("a cat", width=672, height=384, num_frames=24, fps=12)
    assert s == ("Generate a video with a resolution of 672x384, consisting of 24 frames at 12 frames per "
                 "second, according to the following prompt:\n a cat")
    assert video_prompt("a cat", 64, 64, 17, 8, template="{caption}") == "a cat"
    assert video_prompt("a cat", 64, 32, 17, 8, template="{width}x{height}: {caption}") == "64x32: a cat"
    for bad in ("no caption here", "{captoin}", "{caption} at {fsp} fps", "{caption", "{caption:{x}}", 3):
        with pytest.raises(ValueError, match="prompt template"):
            video_prompt("a cat", 64, 64, 17, 8, template=bad)


@pytest.mark.parametrize("name, frames, h, w", [("video-0", 22, 48, 84), ("video-1", 22, 48, 84),
                                                ("image-0", 1, 52, 72), ("image-1", 1, 52, 72)])
def test_official_records_parse_and_roundtrip(name, frames, h, w):
    v = Vocab.chameleon()
    rec = official_record(name)
    toks = np.asarray(rec["token"])
    p = v.parse_video(toks)
    assert p.frames.shape == (frames, h, w) and p.complete
    # counts: prompt + header + frames x (h (w+1) + 4) + VIDEO_END SEP
    assert len(toks) == p.video_start + 3 + frames * (h * (w + 1) + 4) + 2
    assert (p.frames >= 0).all() and (p.frames < 64000).all()
    assert (p.duration, p.fps) == ((7, 12) if frames > 1 else (1, 1))
    again = np.concatenate([p.text, v.video_tokens(p.frames, p.duration, p.fps)])
    assert (again == toks).all()
    # labels: -100 up to and including the first SEP, then equal to the tokens
    labels = np.asarray(rec["label"])
    sep = int(np.flatnonzero(toks == v.sep)[0])
    assert (labels[: sep + 1] == -100).all() and (labels[sep + 1:] == toks[sep + 1:]).all()


# ------------------------------------------------------------------------------------------ layout owner
def grids(vocab):
    """Latent grids to check: the smallest one (1 x 1 in the compact layout) and a wider one."""
    g = vocab.grid_per_size
    return [(g, g), (2 * g, 3 * g), (g, 2 * g)]


def test_header_lengths_are_those_the_builders_write(vocab):
    assert len(vocab.video_tokens(None, 2, 8, complete=False)) == Vocab.VIDEO_HEADER
    for h, w in grids(vocab):
        toks = vocab.frame_tokens(np.zeros((h, w), np.int64))
        g = vocab.grid_per_size
        assert list(toks[:Vocab.FRAME_HEADER]) == [vocab.frame_start, vocab.size_token(h // g), vocab.size_token(w // g)]
        assert vocab.body_length(h, w) == len(toks) - Vocab.FRAME_HEADER - 1 == h * (w + 1)


def test_code_offsets_and_masked_frame_against_brute_force(vocab):
    for h, w in grids(vocab):
        codes = np.arange(h * w).reshape(h, w)                      # distinct codes: each found once
        toks = vocab.frame_tokens(codes)
        want = [int(np.flatnonzero(toks == vocab.visual_offset + c)[0]) for c in range(h * w)]
        got = vocab.code_offsets(h, w)
        assert got.dtype == np.int64 and got.tolist() == want
        masked = vocab.masked_frame(h, w)
        expect = toks.copy()
        expect[want] = vocab.mask
        assert masked.dtype == np.int64 and masked.tolist() == expect.tolist()


def test_one_by_one_frame():
    v = Vocab.compact(64, 100, max_size=32)
    assert v.masked_frame(1, 1).tolist() == [v.frame_start, v.size_token(1), v.size_token(1), v.mask, v.newline,
                                             v.frame_end]
    assert v.code_offsets(1, 1).tolist() == [3] and v.frame_length(1, 1) == 6
    with pytest.raises(ValueError, match="multiple of 4"):
        Vocab.chameleon().masked_frame(1, 1)                           # a size token counts 4 latent rows there


def test_find_video_start_and_headers(vocab):
    g = vocab.grid_per_size
    seq = t2v(vocab, n_text=5, frames=2, h=g, w=2 * g, duration=3, fps=8)
    first = next(i for i, x in enumerate(seq) if x == vocab.video_start)
    assert vocab.find_video_start(seq) == first == 7                         # BOS, 5 text, SEP
    assert vocab.find_video_start(np.concatenate([seq, seq])) == first        # the first one
    assert vocab.find_video_start(seq[:first]) == -1 and vocab.find_video_start([]) == -1
    assert vocab.video_header(seq, first) == (3, 8)
    assert vocab.frame_grid(seq, first + Vocab.VIDEO_HEADER) == (g, 2 * g)
    with pytest.raises(ValueError, match="video header"):
        vocab.video_header(seq[:first + 2], first)
    with pytest.raises(ValueError, match="frame header"):
        vocab.frame_grid(seq[:first + 5], first + 3)


def ref_segments(tokens, vocab):
    """FrameSegments fields of one row, by walking the tokens. A token is inside a frame while more
    frames have been opened than closed before it (so a stray FRAME_END closes the next frame early)."""
    tokens = [int(x) for x in tokens]
    L = len(tokens)
    out = {k: [] for k in ("frame", "latest", "start", "offset", "rows", "cols")}
    latest, start, closed = -1, -1, 0
    for i, x in enumerate(tokens):
        if x == vocab.frame_start:
            latest, start = latest + 1, i
        out["frame"].append(latest if latest + 1 > closed else -1)
        if x == vocab.frame_end:
            closed += 1
        out["latest"].append(latest)
        out["start"].append(start)
        out["offset"].append(i - start - 3)
        n = [tokens[start + k] - vocab.size_base if 0 <= start and start + 2 < L else 0 for k in (1, 2)]
        ok = all(1 <= m <= vocab.max_size for m in n)
        out["rows"].append(n[0] * vocab.grid_per_size if ok else 0)
        out["cols"].append(n[1] * vocab.grid_per_size if ok else 0)
    return out


def test_frame_segments_against_walk(vocab):
    import torch

    g = vocab.grid_per_size
    rng = np.random.default_rng(0)
    markers = [vocab.frame_start, vocab.frame_end, vocab.newline, vocab.size_base, vocab.size_token(1), vocab.mask]
    rows = [t2v(vocab, frames=3, h=g, w=2 * g), t2v(vocab, frames=1, h=g, w=g, n_text=0),
            vocab.build_i2v([1, 2], np.zeros((g, g), np.int64), duration=1, fps=1), [vocab.frame_start]]
    for k in range(6):                                                      # malformed: markers anywhere, cut off
        r = t2v(vocab, frames=2, h=g, w=g, seed=k).copy()
        r[rng.integers(0, len(r), 4)] = rng.choice(markers, 4)
        rows.append(r[: rng.integers(1, len(r) + 1)])
    L = max(len(r) for r in rows)
    toks = torch.full((len(rows), L), vocab.bos, dtype=torch.long)          # right padding
    for i, r in enumerate(rows):
        toks[i, :len(r)] = torch.as_tensor(np.asarray(r, np.int64))
    seg = vocab.frame_segments(toks)
    assert torch.equal(vocab.frame_ids(toks), seg.frame)
    for i in range(len(rows)):
        want = ref_segments(toks[i], vocab)
        for name, got in seg._asdict().items():
            assert got.dtype == torch.long and got[i].tolist() == want[name], (i, name)
