"""Frame-causal masks: dense and FlexAttention block masks against a nested-loop reference."""

import numpy as np
import pytest
import torch

from lumos.masks import frame_causal_block_mask, frame_causal_mask, frame_ids
from lumos.vocab import Vocab
from seqs import ref_mask, t2v

V = Vocab.compact(64, 100, max_size=32)


def expand_block_mask(bm, L):
    """Token-level matrix of a BlockMask: full blocks True, partial blocks through mask_mod, rest False."""
    B = bm.kv_num_blocks.shape[0]
    bs_q, bs_kv = bm.BLOCK_SIZE
    out = torch.zeros(B, L, L, dtype=torch.bool)
    for b in range(B):
        for qb in range(bm.kv_num_blocks.shape[2]):
            for kind, num, idx in (("partial", bm.kv_num_blocks, bm.kv_indices),
                                   ("full", bm.full_kv_num_blocks, bm.full_kv_indices)):
                for n in range(int(num[b, 0, qb])):
                    kb = int(idx[b, 0, qb, n])
                    for q in range(qb * bs_q, min(L, (qb + 1) * bs_q)):
                        for kv in range(kb * bs_kv, min(L, (kb + 1) * bs_kv)):
                            if kind == "full":
                                out[b, q, kv] = True
                            else:
                                out[b, q, kv] = bool(bm.mask_mod(torch.tensor(b), torch.tensor(0),
                                                                 torch.tensor(q), torch.tensor(kv)))
    return out


SEQS = {
    "t2v-3": lambda: t2v(V, frames=3, h=4, w=5),
    "t2v-1": lambda: t2v(V, frames=1, h=2, w=2),
    "t2i": lambda: V.build_t2i([1, 2, 3], np.zeros((3, 3), np.int64)),
    "prompt": lambda: V.build_t2v([1, 2, 3], None, duration=1, fps=1),
}


@pytest.mark.parametrize("name", sorted(SEQS))
def test_dense_mask_matches_nested_loops(name):
    seq = SEQS[name]()
    fid = frame_ids(torch.as_tensor(seq)[None], V)
    dense = frame_causal_mask(fid)[0, 0].numpy()
    assert (dense == ref_mask(seq, V)).all()


def test_dense_mask_rows_and_cache_columns():
    seq = torch.as_tensor(SEQS["t2v-3"]())[None]
    fid = frame_ids(seq, V)
    full = frame_causal_mask(fid)[0, 0]
    rows = frame_causal_mask(fid, q_start=20, q_end=40, kv_len=len(seq[0]) + 7)[0, 0]
    assert torch.equal(rows[:, : len(seq[0])], full[20:40]) and not rows[:, len(seq[0]):].any()


def test_key_padding_never_attended_except_self():
    a, b = SEQS["t2v-3"](), SEQS["t2v-1"]()
    L = len(a)
    toks = torch.zeros(2, L, dtype=torch.long)
    toks[0], toks[1, L - len(b):] = torch.as_tensor(a), torch.as_tensor(b)    # left padding
    valid = torch.ones(2, L, dtype=torch.bool)
    valid[1, : L - len(b)] = False
    m = frame_causal_mask(frame_ids(toks, V), valid)[:, 0]
    assert not m[1, L - len(b):, : L - len(b)].any()
    assert m[1].diagonal().all()
    assert (m[1, L - len(b):, L - len(b):].numpy() == ref_mask(b, V)).all()


@pytest.mark.parametrize("block_size", [8, 16, 128])
def test_block_mask_equals_dense_mask(block_size):
    a, b = SEQS["t2v-3"](), SEQS["t2v-1"]()
    L = len(a)
    toks = torch.zeros(2, L, dtype=torch.long)
    toks[0], toks[1, : len(b)] = torch.as_tensor(a), torch.as_tensor(b)      # right padding
    valid = torch.arange(L)[None] < torch.tensor([[L], [len(b)]])
    fid = frame_ids(toks, V)
    for v in (None, valid):
        bm = frame_causal_block_mask(fid, v, block_size=block_size)
        assert torch.equal(expand_block_mask(bm, L), frame_causal_mask(fid, v)[:, 0])


def test_block_mask_skips_blocks_and_is_small():
    # 5 frames of 16x16: the block table is (L/16)^2 entries, and far-future blocks are skipped.
    seq = t2v(V, frames=5, h=16, w=16)
    L = len(seq)
    fid = frame_ids(torch.as_tensor(seq)[None], V)
    bm = frame_causal_block_mask(fid, block_size=16)
    nb = -(-L // 16)
    assert bm.kv_indices.shape == (1, 1, nb, nb)
    computed = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
    allowed_blocks = frame_causal_mask(fid)[0, 0]
    pad = nb * 16 - L
    dense_blocks = torch.nn.functional.pad(allowed_blocks, (0, pad, 0, pad)).view(nb, 16, nb, 16).any(3).any(1)
    assert computed == int(dense_blocks.sum()) < nb * nb
    assert int(bm.full_kv_num_blocks.sum()) > 0


def test_block_mask_for_a_384p_video_is_not_quadratic():
    """The released 384p layout: prompt + 7 latent frames of 48x84 (~28.9k tokens). Every tensor of the
    BlockMask is O((L/128)^2 + L); a dense mask would hold L^2 = 8.3e8 entries."""
    v = Vocab.chameleon()
    seq = v.build_t2v(np.arange(1, 280), np.zeros((7, 48, 84), np.int64), duration=2, fps=12)
    L = len(seq)
    assert 28_800 < L < 29_000
    fid = frame_ids(torch.as_tensor(seq)[None], v)
    bm = frame_causal_block_mask(fid)
    held = sum(t.numel() for t in bm.as_tuple() if isinstance(t, torch.Tensor))
    nb = -(-L // 128)
    assert held <= 4 * nb * nb + 4 * nb and held < L * L / 1000
    # ~57% of the tiles are computed for 7 frames (the rest is skipped)
    frac = float(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum()) / (nb * nb)
    assert 0.5 < frac < 0.6
