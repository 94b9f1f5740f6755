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
