"""Vectorised position ids and RoPE tables against token-by-token references from the spec."""

import numpy as np
import pytest
import torch

from lumos.positions import MMROPE_GROUP, freq_axes, position_ids, rope_cos_sin, rope_for
from lumos.vocab import Vocab
from seqs import official_record, ref_positions, ref_rope_angles, t2v

CHAM = Vocab.chameleon()
COMPACT = Vocab.compact(64, 100, max_size=32)


def check(tokens, vocab, scale=(4, 8, 8), offset=True):
    pos = position_ids(torch.as_tensor(tokens)[None], vocab, scale=scale, offset=offset)
    text, t, h, w, flag = ref_positions(tokens, vocab, scale=scale, offset=offset)
    assert pos.text[0].tolist() == text
    assert pos.visual[0].int().tolist() == flag
    assert pos.thw[0, :, 0].tolist() == [x if f else 0 for x, f in zip(t, flag)]
    assert pos.thw[0, :, 1].tolist() == [x if f else 0 for x, f in zip(h, flag)]
    assert pos.thw[0, :, 2].tolist() == [x if f else 0 for x, f in zip(w, flag)]
    return pos


CASES = {
    "t2i": lambda v: v.build_t2i(np.arange(1, 9), np.zeros((2 * v.grid_per_size, 3 * v.grid_per_size), np.int64)),
    "t2v-1": lambda v: t2v(v, frames=1, h=v.grid_per_size, w=2 * v.grid_per_size),
    "t2v-5": lambda v: t2v(v, frames=5, h=v.grid_per_size, w=2 * v.grid_per_size),
    "t2v-5-wide": lambda v: t2v(v, frames=5, h=2 * v.grid_per_size, w=4 * v.grid_per_size, seed=1),
    "prompt-only": lambda v: v.build_t2v([1, 2, 3], None, duration=2, fps=8),
    "i2v": lambda v: v.build_i2v([1, 2], np.ones((v.grid_per_size, v.grid_per_size), np.int64), duration=2, fps=8),
    "uncond": lambda v: v.build(None, np.zeros((2, v.grid_per_size, v.grid_per_size), np.int64), duration=2, fps=8),
}


@pytest.mark.parametrize("vocab", [CHAM, COMPACT], ids=["chameleon", "compact"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_positions_match_reference(case, vocab):
    check(CASES[case](vocab), vocab)


def test_positions_values_by_hand():
    v = COMPACT
    seq = v.build_t2v([7, 8], np.zeros((2, 2, 3), np.int64), duration=1, fps=1)
    pos = position_ids(torch.as_tensor(seq), v)
    # BOS 7 8 SEP VS d f | FS h w (c c c NL) x2 FE | FS ...
    p0 = 10  # first content token of frame 0
    assert pos.thw[0, p0].tolist() == [p0, p0, p0]
    assert pos.thw[0, p0 + 3].tolist() == [p0, p0, p0 + 24]         # newline = column w
    assert pos.thw[0, p0 + 4].tolist() == [p0, p0 + 8, p0]          # row 1
    f1 = p0 + 2 * 4 + 1 + 3                                         # frame 1 content
    assert pos.thw[0, f1].tolist() == [p0 + 4, p0, p0]
    assert not pos.visual[0, p0 - 3: p0].any() and not pos.visual[0, f1 - 4]  # FS, sizes, FE


def test_variants_scale_and_offset():
    seq = CASES["t2v-5"](COMPACT)
    for scale, offset in [((1, 1, 1), True), ((1, 1, 1), False), ((2, 4, 4), True)]:
        check(seq, COMPACT, scale=scale, offset=offset)
    mr = rope_for(torch.as_tensor(seq), COMPACT, "mrope")
    nv = rope_for(torch.as_tensor(seq), COMPACT, "3d")
    assert (mr.thw[mr.visual] - nv.thw[nv.visual] == mr.thw[mr.visual].min()).all()  # same up to P0


def test_batch_with_padding_left_and_right():
    a, b = CASES["t2v-5"](COMPACT), CASES["t2v-1"](COMPACT)
    L = len(a)
    right = torch.zeros(2, L, dtype=torch.long)
    right[0], right[1, : len(b)] = torch.as_tensor(a), torch.as_tensor(b)
    pos = position_ids(right, COMPACT)
    pa, pb = position_ids(torch.as_tensor(a), COMPACT), position_ids(torch.as_tensor(b), COMPACT)
    assert torch.equal(pos.thw[0], pa.thw[0]) and torch.equal(pos.thw[1, : len(b)], pb.thw[0])
    assert not pos.visual[1, len(b):].any()
    left = torch.zeros(2, L, dtype=torch.long)
    left[0], left[1, L - len(b):] = torch.as_tensor(a), torch.as_tensor(b)
    pos = position_ids(left, COMPACT, start=torch.tensor([0, L - len(b)]))
    assert torch.equal(pos.thw[1, L - len(b):], pb.thw[0]) and torch.equal(pos.text[1, L - len(b):], pb.text[0])


@pytest.mark.parametrize("name", ["video-0", "image-0"])
def test_official_records(name):
    toks = official_record(name)["token"]
    v = CHAM
    pos = position_ids(torch.as_tensor(toks), v)
    text, t, h, w, flag = ref_positions(toks, v)
    assert pos.visual[0].int().tolist() == flag
    thw = pos.thw[0][pos.visual[0]]
    f = np.asarray(flag, bool)
    assert thw[:, 0].tolist() == list(np.asarray(t)[f]) and thw[:, 1].tolist() == list(np.asarray(h)[f])
    assert thw[:, 2].tolist() == list(np.asarray(w)[f])
    vs = toks.index(v.video_start)
    p0 = vs + 3 + 3
    assert thw[0].tolist() == [p0, p0, p0]
    frames = 22 if name.startswith("video") else 1
    rows, cols = (48, 84) if frames > 1 else (52, 72)
    assert int(pos.visual.sum()) == frames * rows * (cols + 1)
    assert int(thw[:, 0].max()) == p0 + 4 * (frames - 1) and int(thw[:, 2].max()) == p0 + 8 * cols


def test_freq_axes_layout():
    ax = freq_axes(128, "mmrope").tolist()
    assert ax == list(MMROPE_GROUP) * 4 and (ax.count(0), ax.count(1), ax.count(2)) == (16, 24, 24)
    ax = freq_axes(64, "mrope").tolist()
    assert ax == [0] * 8 + [1] * 12 + [2] * 12


@pytest.mark.parametrize("head_dim", [32, 64])
def test_rope_tables_match_per_token_reference(head_dim):
    seq = CASES["t2v-5"](COMPACT)
    pos = position_ids(torch.as_tensor(seq), COMPACT)
    cos, sin = rope_cos_sin(pos, head_dim, 10000.0, "mmrope")
    ang = ref_rope_angles(ref_positions(seq, COMPACT), head_dim, 10000.0)
    # atol 5e-6 against float64: the fp32 angles (up to 48 rad) carry their own rounding (half an ulp
    # of 48 = 1.9e-6) and their frequency's (an ulp of pow/division x 48 ~ 3e-6); measured 1.7e-6
    torch.testing.assert_close(cos[0].double(), torch.from_numpy(np.cos(ang)), atol=5e-6, rtol=0)
    torch.testing.assert_close(sin[0].double(), torch.from_numpy(np.sin(ang)), atol=5e-6, rtol=0)
    # 1-D RoPE: every token by its sequence index
    cos1, _ = rope_cos_sin(pos, head_dim, 10000.0, "1d")
    text_only = ref_rope_angles((list(range(len(seq))), [0] * len(seq), [0] * len(seq), [0] * len(seq),
                                 [0] * len(seq)), head_dim, 10000.0)
    torch.testing.assert_close(cos1[0].double(), torch.from_numpy(np.cos(text_only)), atol=5e-6, rtol=0)  # as above
