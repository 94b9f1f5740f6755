"""Attention masks as pure functions (spec `lumos1.md` §4).

Allowed(q, k) = k <= q (causal everywhere: text, and across frames)
             OR (q and k lie in the same frame segment FRAME_START..FRAME_END: bidirectional in a frame)
and, when a `valid` (key padding) mask is given, k must be a real token (a query always sees itself,
so no row is empty).

Two renderings of the same rule:
- `frame_causal_mask`: a dense bool `[B, 1, Lq, Lk]` for `F.scaled_dot_product_attention` (CPU, short
  sequences, the KV-cache decode rows).
- `frame_causal_block_mask`: a FlexAttention `BlockMask` built directly from the frame structure at
  block granularity, so nothing of size L x L is ever allocated: (L/128)^2 block tables plus the
  token-level `mask_mod` evaluated inside partial blocks only.
"""

from __future__ import annotations

import torch

from lumos.vocab import Vocab

BLOCK_SIZE = 128


def frame_ids(tokens: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    """The masks' input: frame segment of every token, k >= 0 for the tokens of the k-th
    FRAME_START..FRAME_END segment (both markers included), -1 outside frames (the layout is
    Vocab's: `Vocab.frame_ids`). tokens: [B, L] -> [B, L] int64."""
    return vocab.frame_ids(tokens)


def frame_causal_mask(fid: torch.Tensor, valid: torch.Tensor | None = None, q_start: int = 0,
                      q_end: int | None = None, kv_len: int | None = None) -> torch.Tensor:
    """Dense bool mask `[B, 1, q_end - q_start, kv_len]` (True = attend).

    fid:   [B, L] frame ids of the whole sequence (`frame_ids`); queries are rows q_start..q_end of it.
    valid: [B, L] bool, False for padding keys.
    kv_len: number of key columns (>= q_end; columns at or beyond L, e.g. empty KV-cache slots, are False).
    """
    B, L = fid.shape
    q_end = L if q_end is None else q_end
    kv_len = L if kv_len is None else kv_len
    q = torch.arange(q_start, q_end, device=fid.device)[:, None]           # (Lq, 1)
    k = torch.arange(kv_len, device=fid.device)[None, :]                   # (1, Lk)
    k_in = k.clamp(max=L - 1)
    fq = fid[:, q_start:q_end, None]                                       # (B, Lq, 1)
    fk = fid[:, None, :].expand(B, 1, L).gather(2, k_in.expand(B, 1, kv_len))  # (B, 1, Lk)
    allowed = (k <= q) | ((fq == fk) & (fq >= 0))
    if valid is not None:
        vk = valid[:, None, :].gather(2, k_in.expand(B, 1, kv_len))
        allowed = allowed & (vk | (k == q))
    allowed = allowed & (k < L)
    return allowed[:, None]                                                 # (B, 1, Lq, Lk)


def frame_causal_mask_mod(fid: torch.Tensor, valid: torch.Tensor | None = None):
    """The FlexAttention `mask_mod(b, h, q, kv)` of the same rule. `fid`/`valid` must cover every index
    the kernel may ask for (pad them to a multiple of the block size: `_pad_to_blocks`)."""
    if valid is None:
        def mask_mod(b, h, q, kv):
            f = fid[b, q]
            return (kv <= q) | ((f == fid[b, kv]) & (f >= 0))
    else:
        def mask_mod(b, h, q, kv):
            f = fid[b, q]
            return ((kv <= q) | ((f == fid[b, kv]) & (f >= 0))) & (valid[b, kv] | (kv == q))
    return mask_mod


def _pad_to_blocks(x: torch.Tensor, n: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, n - x.shape[1]), value=value)


def frame_causal_block_mask(fid: torch.Tensor, valid: torch.Tensor | None = None, block_size: int = BLOCK_SIZE):
    """FlexAttention `BlockMask` for the frame-causal rule, built at block level.

    For query block i and key block j:
    - j < i: every key precedes every query -> allowed (full unless a key is padding);
    - j == i: the diagonal -> partial (full if both are one frame with no padding);
    - j > i: allowed only through a frame that spans both blocks. Frames are contiguous and ordered,
      so that frame is the last frame of block i and the first of block j.
    """
    from torch.nn.attention.flex_attention import BlockMask

    B, L = fid.shape
    nb = -(-L // block_size)
    n = nb * block_size
    fid_p = _pad_to_blocks(fid, n, -1)                                      # (B, n)
    valid_p = _pad_to_blocks(torch.ones_like(fid, dtype=torch.bool) if valid is None else valid, n, False)

    fb = fid_p.view(B, nb, block_size)                                      # (B, nb, bs)
    in_frame = fb >= 0
    big = torch.iinfo(fid.dtype).max
    fmin = torch.where(in_frame, fb, torch.full_like(fb, big)).amin(-1)     # (B, nb) first frame in block
    fmax = torch.where(in_frame, fb, torch.full_like(fb, -1)).amax(-1)      # (B, nb) last frame in block
    any_frame = in_frame.any(-1)
    one_frame = in_frame.all(-1) & (fmin == fmax)
    vb = valid_p.view(B, nb, block_size).all(-1)                             # (B, nb) no padding key

    i = torch.arange(nb, device=fid.device)[:, None]                         # q block
    j = torch.arange(nb, device=fid.device)[None, :]                         # kv block
    below, diag, above = j < i, j == i, j > i
    share = any_frame[:, :, None] & any_frame[:, None, :] & (fmax[:, :, None] == fmin[:, None, :])  # (B, nb, nb)
    same_whole = one_frame[:, :, None] & one_frame[:, None, :] & (fmin[:, :, None] == fmin[:, None, :])
    some = below | diag | (above & share)                                     # any allowed pair
    full = ((below | same_whole) & vb[:, None, :]) & some
    partial = some & ~full

    def to_indices(blocks):                                                  # (B, nb, nb) -> counts, indices
        counts = blocks.sum(-1).to(torch.int32)
        order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[:, None], order[:, None]                               # (B, 1, nb), (B, 1, nb, nb)

    kv_num, kv_idx = to_indices(partial)
    full_num, full_idx = to_indices(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=frame_causal_mask_mod(fid_p, None if valid is None else valid_p),
                                    seq_lengths=(L, L))
