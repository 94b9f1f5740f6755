"""AR-DF masking and CFG dropout against brute-force references: Python loops that walk the tokens,
consume the generator in the documented order (ratios, then pattern scores) and pick the k smallest
scores by sorting. They share no code with lumos.train.masking beyond reading the same random numbers."""

import math

import numpy as np
import pytest
import torch

from lumos.train.masking import apply_mask, cfg_dropout, corrupt, draw_mask, drop_text, frame_layout, mask_ratio
from lumos.vocab import Vocab
from seqs import t2v

VOCAB = Vocab.compact(text_vocab_size=64, codebook_size=64, max_size=32)


def padded(seqs, pad=0):
    L = max(len(s) for s in seqs)
    return torch.tensor(np.stack([np.pad(s, (0, L - len(s)), constant_values=pad) for s in seqs]))


def mixed_batch(vocab=VOCAB):
    """Videos of different grids and lengths, an image, an unconditional video; right-padded."""
    rng = np.random.default_rng(3)
    g = vocab.grid_per_size  # grids must be multiples of it (4 for the released layout)
    img = vocab.build_t2i([5, 6, 7], rng.integers(0, vocab.codebook_size, (3 * g, 4 * g)))
    uncond = vocab.build(None, rng.integers(0, vocab.codebook_size, (2, 2 * g, 3 * g)), duration=1, fps=2)
    return padded([t2v(vocab, frames=3, h=4 * g, w=5 * g, seed=1), img, t2v(vocab, frames=4, h=2 * g, w=2 * g, seed=2),
                   uncond])


def ref_layout(tokens, vocab):
    """Walk the tokens: (frame index, body offset) of every body token, -1 elsewhere."""
    frame, off = [-1] * len(tokens), [-1] * len(tokens)
    i, f = 0, -1
    while i < len(tokens):
        if tokens[i] == vocab.frame_start:
            f += 1
            g = vocab.grid_per_size
            h, w = (tokens[i + 1] - vocab.size_base) * g, (tokens[i + 2] - vocab.size_base) * g
            for j in range(h * (w + 1)):
                frame[i + 3 + j], off[i + 3 + j] = f, j
            i += 3 + h * (w + 1) + 1
        else:
            i += 1
    return frame, off


def ref_k(r, n):
    """round(r n) in fp32, half to even, at least 1, at most n."""
    return min(max(int(np.round(np.float32(r) * np.float32(n))), 1), n) if n else 0


def smallest(scores, k):
    return set(sorted(range(len(scores)), key=lambda j: scores[j])[:k])


def ref_mask(tokens, vocab, seed, mode, schedule="cosine", min_rate=0.7):
    """The masking rule written out with loops (same generator draw order as lumos.train.masking)."""
    B, L = tokens.shape
    lay = [ref_layout(tokens[b].tolist(), vocab) for b in range(B)]
    n = [sum(1 for f in fr if f == 0) for fr, _ in lay]
    nf = [max(fr) + 1 for fr, _ in lay]
    g = torch.Generator().manual_seed(seed)
    sched = (lambda t: math.cos(math.pi * t / 2)) if schedule == "cosine" else (lambda t: 1 - t)
    r_of = lambda t: min(max(sched(float(t)), min_rate), 1.0)                       # noqa: E731
    masked = np.zeros((B, L), bool)
    if mode == "tube":
        t = torch.rand(B, generator=g)
        scores = torch.rand(B, max(n), generator=g)
        for b in range(B):
            chosen = smallest(scores[b, :n[b]].tolist(), ref_k(r_of(t[b]), n[b]))
            for i, (f, j) in enumerate(zip(*lay[b])):
                masked[b, i] = f >= 0 and j in chosen
    elif mode == "per_frame":
        t = torch.rand(B, max(nf), generator=g)
        scores = torch.rand(B, max(nf), max(n), generator=g)
        for b in range(B):
            chosen = [smallest(scores[b, f, :n[b]].tolist(), ref_k(r_of(t[b, f]), n[b])) for f in range(nf[b])]
            for i, (f, j) in enumerate(zip(*lay[b])):
                masked[b, i] = f >= 0 and j in chosen[f]
    else:  # random
        t = torch.rand(B, generator=g)
        scores = torch.rand(B, L, generator=g)
        for b in range(B):
            body = [i for i, f in enumerate(lay[b][0]) if f >= 0]
            pick = smallest([scores[b, i].item() for i in body], ref_k(r_of(t[b]), len(body)))
            for idx in pick:
                masked[b, body[idx]] = True
    return torch.from_numpy(masked)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("vocab", [VOCAB, Vocab.chameleon()], ids=["compact", "chameleon"])
def test_frame_layout_matches_walk(vocab):
    toks = mixed_batch(vocab)
    lay = frame_layout(toks, vocab)
    for b in range(toks.shape[0]):
        frame, off = ref_layout(toks[b].tolist(), vocab)
        assert lay.frame[b].tolist() == frame and lay.offset[b].tolist() == off
    assert lay.num_frames.tolist() == [3, 1, 4, 2]
    g = vocab.grid_per_size
    assert lay.body_len.tolist() == [4 * g * (5 * g + 1), 3 * g * (4 * g + 1), 2 * g * (2 * g + 1), 2 * g * (3 * g + 1)]


@pytest.mark.parametrize("mode", ["tube", "per_frame", "random"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_equal_brute_force(mode, seed):
    toks = mixed_batch()
    got = draw_mask(frame_layout(toks, VOCAB), torch.Generator().manual_seed(seed), mode).masked
    # exact although the ratios differ (fp32 torch.cos here, float64 math.cos there: by <= 6e-8): no
    # r n of these draws lies within 0.014 of a .5 rounding edge; the rest compares the same random floats
    assert torch.equal(got, ref_mask(toks, VOCAB, seed, mode))


def test_tube_pattern_identical_across_frames_and_random_is_not():
    toks = padded([t2v(VOCAB, frames=5, h=4, w=5, seed=s) for s in range(16)])
    lay = frame_layout(toks, VOCAB)
    n = int(lay.body_len[0])

    def per_frame(masked):  # (B, F, n) masked flags of each frame body
        return masked[lay.frame >= 0].view(16, 5, n)

    tube = draw_mask(lay, torch.Generator().manual_seed(0), "tube")
    m = per_frame(tube.masked)
    assert torch.equal(m, m[:, :1].expand_as(m))                         # same pattern in every frame
    k = torch.tensor([ref_k(r, n) for r in tube.ratio.tolist()])
    assert torch.equal(m.sum(-1), k[:, None].expand(16, 5))               # round(r n) per frame

    rnd = per_frame(draw_mask(lay, torch.Generator().manual_seed(0), "random").masked)
    assert not torch.equal(rnd, rnd[:, :1].expand_as(rnd))
    pf = draw_mask(lay, torch.Generator().manual_seed(0), "per_frame")
    counts = per_frame(pf.masked).sum(-1)
    assert torch.equal(counts, torch.tensor([[ref_k(r, n) for r in row] for row in pf.ratio.tolist()]))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_ratios_follow_schedule_and_floor(schedule):
    t = torch.linspace(0, 1, 101)
    expect = torch.cos(t * math.pi / 2) if schedule == "cosine" else 1 - t
    assert torch.allclose(mask_ratio(t, schedule, 0.0), expect.clamp(min=0.0), atol=1e-6)
    assert torch.allclose(mask_ratio(t, schedule, 0.7), expect.clamp(min=0.7), atol=1e-6)
    # The ratios drawn by a mask are the schedule of the first uniform draws of the generator.
    toks = padded([t2v(VOCAB, frames=2, h=4, w=5)] * 4000)
    m = draw_mask(frame_layout(toks, VOCAB), torch.Generator().manual_seed(5), "tube", schedule, 0.7)
    t0 = torch.rand(4000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(m.ratio, mask_ratio(t0, schedule, 0.7))
    assert m.ratio.min() >= 0.7 - 1e-7 and m.ratio.max() <= 1.0
    if schedule == "cosine":  # spec / notes 2.4: P(r = 0.7) = 1 - (2/pi) acos(0.7) ~ 0.494, E[r] ~ 0.80
        p_floor = 1 - 2 / math.pi * math.acos(0.7)
        assert abs((m.ratio == mask_ratio(torch.ones(1), "cosine", 0.7)).float().mean() - p_floor) < 0.03
        assert abs(m.ratio.mean() - 0.80) < 0.01
    frac = m.masked.sum(1).float() / (2 * 24)
    assert (frac >= 0.7 - 1 / 24).all()                                        # the floor holds per sample


def test_only_masked_visual_positions_are_targets():
    toks = mixed_batch()
    inputs, targets, frame, m = corrupt(toks, VOCAB, torch.Generator().manual_seed(0), "tube")
    visual = (toks >= VOCAB.visual_offset) & (toks < VOCAB.visual_offset + VOCAB.codebook_size)
    newline = toks == VOCAB.newline
    assert torch.equal(targets >= 0, m.masked & visual)
    assert torch.equal(targets[targets >= 0], toks[targets >= 0] - VOCAB.visual_offset)
    assert torch.equal(inputs == VOCAB.mask, m.masked)
    assert torch.equal(inputs[~m.masked], toks[~m.masked])                    # everything else untouched
    assert (m.masked & newline).any() and (targets[newline] == -100).all()   # newlines: masked, no target
    assert not (m.masked & ~(visual | newline)).any()                         # text/markers never masked
    assert torch.equal(frame, frame_layout(toks, VOCAB).frame)


def test_layout_rejects_frames_of_different_sizes():
    a = VOCAB.frame_tokens(np.zeros((2, 2), int))
    b = VOCAB.frame_tokens(np.zeros((2, 3), int))
    seq = np.concatenate([[VOCAB.video_start, VOCAB.size_base + 1, VOCAB.size_base + 1], a, b])
    with pytest.raises(ValueError, match="same body length"):
        frame_layout(torch.tensor(seq)[None], VOCAB)


def test_cfg_dropout_removes_exactly_the_text():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 64, (2, 4, 5))
    cond = VOCAB.build_t2v([3, 4, 5, 6], frames, duration=1, fps=2)
    assert np.array_equal(drop_text(cond, VOCAB), VOCAB.build(None, frames, duration=1, fps=2))
    seqs = [t2v(VOCAB, n_text=1 + i % 5, seed=i) for i in range(2000)]
    out, dropped = cfg_dropout(seqs, VOCAB, 0.3, torch.Generator().manual_seed(0))
    for s, o, d in zip(seqs, out, dropped.tolist()):
        vs = int(np.flatnonzero(s == VOCAB.video_start)[0])
        assert np.array_equal(o, s[vs:] if d else s)
    assert abs(dropped.float().mean() - 0.3) < 0.03
    assert not cfg_dropout(seqs[:50], VOCAB, 0.0, torch.Generator())[1].any()
    assert cfg_dropout(seqs[:50], VOCAB, 1.0, torch.Generator())[1].all()


def test_apply_mask_on_chameleon_ids():
    v = Vocab.chameleon()
    toks = torch.tensor(t2v(v, frames=2, h=4, w=4))[None]
    masked = frame_layout(toks, v).frame >= 0
    inputs, targets = apply_mask(toks, masked, v)
    assert (inputs[masked] == 9003).all()
    assert torch.equal(targets[toks >= 65536], toks[toks >= 65536] - 65536)
