"""Position ids and RoPE tables: pure functions of the token ids (spec `lumos1.md` §3).

- Text and special tokens (everything that is not frame content) use ordinary 1-D RoPE over the whole
  head_dim with position = sequence index.
- Visual content tokens (the codes of a latent frame and its row newlines, not the start/size/end
  tokens) get a 3-D position: for latent frame f, row i, column j (the newline is column w),
  (t, h, w) = (P0 + s_t f, P0 + s_h i, P0 + s_w j), with strides s = the tokenizer's compression
  (4, 8, 8 for Cosmos DV4x8x8) and P0 = the sequence index of the first content token of the first
  frame (the same offset for every frame).
- MM-RoPE assigns each of the head_dim/2 rotary frequencies to one axis, in meta-groups of 16
  consecutive frequencies: offsets {0,1,2,3} -> t, {4,5,8,9,12,13} -> h, {6,7,10,11,14,15} -> w
  (t:h:w = 2:3:3, h and w interleaved, every axis spans the whole spectrum).

Variants for the paper's ablations (`rope_type`): "1d" (every token by its sequence index), "mrope"
(Qwen2-VL M-RoPE: contiguous 2:3:3 chunks of the spectrum, unscaled positions offset by P0) and "3d"
(naive 3-D RoPE: contiguous chunks, unscaled positions starting at 0). Everything is vectorised over
tokens (the reference walks tokens in a Python loop); cos/sin are computed once per forward in fp32.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from lumos.vocab import Vocab

# Axis of each of the 16 frequencies in an MM-RoPE meta-group: 0 = t, 1 = h, 2 = w.
MMROPE_GROUP = (0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2)


class Positions(NamedTuple):
    text: torch.Tensor     # [B, L] int64: 1-D position (sequence index from the row's first real token)
    thw: torch.Tensor      # [B, L, 3] int64: (t, h, w) position of visual content tokens, 0 elsewhere
    visual: torch.Tensor   # [B, L] bool: frame content (codes and row newlines)

    def slice(self, start: int, end: int) -> "Positions":
        """The positions of tokens [start, end) (e.g. the frame being decoded, from a whole-sequence table)."""
        return Positions(self.text[:, start:end], self.thw[:, start:end], self.visual[:, start:end])


def shift(a: Positions, b: Positions, k: int = 1) -> Positions:
    """k times the position change from `a` to `b`, two equal-shape spans (e.g. latent frame j and frame
    j + 1 of a layout): positions are affine in the frame index for every rope type (text: + the frame's
    length; content: t + s_t, h and w unchanged), so `a + shift(a, b, k)` is where a frame's tokens sit k
    frames later. As a table for `LumosModel.move_cache`: the rotation that re-indexes cached keys."""
    return Positions(k * (b.text - a.text), k * (b.thw - a.thw), a.visual)


def add(a: Positions, d: Positions) -> Positions:
    """Positions `a` moved by `d` (`shift`)."""
    return Positions(a.text + d.text, a.thw + d.thw, a.visual)


def position_ids(tokens: torch.Tensor, vocab: Vocab, scale=(4, 8, 8), offset: bool = True,
                 start: torch.Tensor | None = None) -> Positions:
    """(t, h, w) and 1-D positions of every token.

    tokens: [B, L] (or [L]) int64 token ids.
    scale:  (s_t, s_h, s_w) position strides.
    offset: add P0 (the index of the first content token of the first frame) to the 3-D positions.
    start:  [B] index of each row's first real token (left padding); positions count from there.
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    B, L = tokens.shape
    device = tokens.device
    idx = torch.arange(L, device=device).expand(B, L)                           # (B, L)
    start = torch.zeros(B, dtype=torch.long, device=device) if start is None else start.to(device)

    seg = vocab.frame_segments(tokens)                                            # the latest frame of each token
    rows, cols, off = seg.rows, seg.cols, seg.offset                              # rows = cols = 0: no valid frame
    visual = (rows > 0) & (off >= 0) & (off < rows * (cols + 1))
    row = torch.div(off, cols + 1, rounding_mode="floor")
    col = off - row * (cols + 1)                                                  # the newline is column `cols`

    if offset:
        is_start = tokens == vocab.frame_start
        has = is_start.any(dim=1)
        first = torch.where(has, is_start.long().argmax(dim=1), torch.zeros_like(start))
        p0 = (first + vocab.FRAME_HEADER - start)[:, None]                        # (B, 1)
    else:
        p0 = torch.zeros(B, 1, dtype=torch.long, device=device)
    s_t, s_h, s_w = scale
    thw = torch.stack([seg.latest * s_t + p0, row * s_h + p0, col * s_w + p0], dim=-1)  # (B, L, 3)
    thw = torch.where(visual[..., None], thw, torch.zeros_like(thw))
    text = idx - start[:, None]
    return Positions(text=text, thw=thw, visual=visual)


def freq_axes(head_dim: int, rope_type: str) -> torch.Tensor:
    """Axis (0 t, 1 h, 2 w) of each of the head_dim/2 rotary frequencies for 3-D rope types."""
    n = head_dim // 2
    if rope_type == "mmrope":
        return torch.tensor(MMROPE_GROUP * (n // 16), dtype=torch.long)
    # Contiguous 2:3:3 chunks, t on the highest frequencies (lowest indices), as M-RoPE / naive 3-D.
    n_t, n_h = n * 2 // 8, n * 3 // 8
    return torch.tensor([0] * n_t + [1] * n_h + [2] * (n - n_t - n_h), dtype=torch.long)


def inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Standard RoPE inverse frequencies theta^(-2k/d), k = 0 .. d/2 - 1 (fp32)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_for(tokens: torch.Tensor, vocab: Vocab, rope_type: str, scale=(4, 8, 8),
             start: torch.Tensor | None = None) -> Positions:
    """Position ids as `rope_type` wants them: MM-RoPE scales and offsets; M-RoPE offsets only;
    naive 3-D does neither; 1-D ignores the 3-D part."""
    if rope_type == "mmrope":
        return position_ids(tokens, vocab, scale=scale, offset=True, start=start)
    if rope_type == "mrope":
        return position_ids(tokens, vocab, scale=(1, 1, 1), offset=True, start=start)
    return position_ids(tokens, vocab, scale=(1, 1, 1), offset=False, start=start)


@functools.lru_cache(maxsize=32)
def _freq_tables(head_dim: int, theta: float, rope_type: str, device: torch.device):
    """inv_freq and freq_axes on `device`, built once: a host-to-device copy per forward would make
    every decoding step wait on the host."""
    axes = freq_axes(head_dim, rope_type).to(device) if rope_type != "1d" else None
    return inv_freq(head_dim, theta).to(device), axes


def rope_cos_sin(pos: Positions, head_dim: int, theta: float, rope_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables `[B, L, head_dim]` (fp32, rotate-half layout: the d/2 angles repeated twice)."""
    freqs, axes = _freq_tables(head_dim, float(theta), rope_type, pos.text.device)  # (d/2,), (d/2,)
    angles = pos.text[..., None].float() * freqs                                  # (B, L, d/2)
    if rope_type != "1d":
        thw = pos.thw.float()                                                     # (B, L, 3)
        vis_angles = thw[..., axes] * freqs                                       # (B, L, d/2)
        angles = torch.where(pos.visual[..., None], vis_angles, angles)
    emb = torch.cat([angles, angles], dim=-1)                                     # (B, L, d)
    return emb.cos(), emb.sin()
