"""The training loss: cross-entropy over the visual codes only, at masked positions only, in chunks.

    out = masked_visual_loss(hidden, model.lm_head.weight, targets, frame, vocab)
    out.loss.backward()

Why this shape (spec `lumos1.md` §5, notes §2.5):
- Only masked visual tokens are targets (`lumos.train.masking`), and they can only be visual codes, so the
  logits are computed against the `codebook_size` visual rows of `lm_head` (64,000 of the released
  129,536), never the full vocabulary. Like the reference (`train_with_vis_tok`), the softmax is over
  the visual codes alone. No shift: the hidden state at position i predicts the token at i.
- The reference builds fp32 logits `[B L, 129,536]` for every position and then selects; at 384p
  that is ~15 GB per sample. Here the target positions are gathered first (`[N, D]`), and
  `ChunkedVisualCE` computes logits for `chunk` positions at a time in the forward and again in the
  backward, keeping only the per-position log-sum-exp (`[N]`) in between. Peak memory is
  `chunk x codebook_size` fp32, whatever the full vocabulary size (benchmarks/loss_memory.py).
- The log-softmax is fp32 even when the model runs in bf16.
- The loss is the mean over all masked visual tokens of the batch. `normaliser` lets the training
  loop divide by the token count of the *global* batch (all ranks, all micro-batches), so
  gradient accumulation and data parallelism give the same gradient as one big batch. (The
  reference's extra `loss != 0` filter, notes §6.11, which drops exactly-zero losses, is not kept.)
- Optional z-loss: weight x mean of logsumexp^2 over the visual logits (weight 0 as released).
- The per-position losses are also summed per latent frame index: the paper's frame-wise loss
  diagnostic (with random masking later frames get a far lower loss than the first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lumos.utils import LumosError
from lumos.vocab import Vocab


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for the softmax of bf16/fp16/fp32 activations; fp64 stays fp64 (reference checks)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class ChunkedVisualCE(torch.autograd.Function):
    """Per-position cross-entropy and log-sum-exp over a class-weight matrix, `chunk` rows at a time.

    forward(h [N, D], w [K, D], y [N] int64 in [0, K), chunk) -> (nll [N] fp32, lse [N] fp32)
    with logits = h @ w.T (computed in h's dtype, then fp32), lse = logsumexp(logits),
    nll = lse - logits[y].

    Only h, w, y and lse are saved. The backward recomputes each chunk's logits: with upstream
    gradients g_nll, g_lse and p = softmax(logits),
        d/dlogits = p (g_nll + g_lse) - g_nll onehot(y),
    then grad_h = dlogits @ w and grad_w = sum over chunks of dlogits.T @ h (accumulated in fp32).
    """

    @staticmethod
    def forward(ctx, h, w, y, chunk):
        N = h.shape[0]
        acc = _acc_dtype(h)
        nll = torch.empty(N, dtype=acc, device=h.device)
        lse = torch.empty(N, dtype=acc, device=h.device)
        for s in range(0, N, chunk):
            logits = F.linear(h[s:s + chunk], w).to(acc)                           # (C, K) fp32
            lse_c = torch.logsumexp(logits, dim=-1)                                 # (C,)
            lse[s:s + chunk] = lse_c
            nll[s:s + chunk] = lse_c - logits.gather(1, y[s:s + chunk, None]).squeeze(1)
        ctx.save_for_backward(h, w, y, lse)
        ctx.chunk = chunk
        return nll, lse

    @staticmethod
    def backward(ctx, g_nll, g_lse):
        h, w, y, lse = ctx.saved_tensors
        chunk = ctx.chunk
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        acc = _acc_dtype(h)
        grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
        for s in range(0, h.shape[0], chunk):
            h_c, y_c = h[s:s + chunk], y[s:s + chunk]
            logits = F.linear(h_c, w).to(acc)                                       # (C, K) recomputed
            p = torch.exp(logits - lse[s:s + chunk, None])                         # softmax, (C, K)
            g = p * (g_nll[s:s + chunk] + g_lse[s:s + chunk])[:, None]
            g.scatter_add_(1, y_c[:, None], -g_nll[s:s + chunk, None])             # - g_nll at the target
            if need_h:
                grad_h[s:s + chunk] = (g.to(w.dtype) @ w).to(h.dtype)              # (C, D)
            if need_w:
                grad_w += g.t() @ h_c.to(acc)                                       # (K, D) fp32
        return grad_h, (grad_w.to(w.dtype) if need_w else None), None, None


def chunked_visual_ce(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, chunk: int = 1024):
    """(nll, lse) `[N]` fp32 of logits h @ w.T without building more than `chunk` rows of logits."""
    if chunk < 1:
        raise LumosError(f"loss chunk must be >= 1, got {chunk}")
    return ChunkedVisualCE.apply(h, w, y, chunk)


@dataclass
class LossOutput:
    loss: torch.Tensor         # scalar to backward: (sum nll + z_w sum lse^2) / normaliser
    nll_sum: torch.Tensor      # scalar fp32, detached: summed cross-entropy of this batch
    z_sum: torch.Tensor        # scalar fp32, detached: summed lse^2
    count: int                 # target positions in this batch
    frame_nll: torch.Tensor    # [F] fp32, detached: summed cross-entropy per latent frame index
    frame_count: torch.Tensor  # [F] fp32: targets per latent frame index


def masked_visual_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, targets: torch.Tensor,
                       frame: torch.Tensor, vocab: Vocab, *, chunk: int = 1024, z_loss_weight: float = 0.0,
                       normaliser: float | None = None, num_frames: int | None = None) -> LossOutput:
    """hidden: [B, L, D] final hidden states (after the final norm).
    lm_head_weight: [V, D] the full head; only rows visual_offset .. + codebook_size are used.
    targets: [B, L] int64 visual code at target positions, -100 elsewhere (`lumos.train.masking`).
    frame: [B, L] int64 latent frame index (used at target positions only).
    normaliser: divide the summed loss by this (default: this batch's target count).
    num_frames: length of the per-frame vectors (default: 1 + the largest frame index seen)."""
    D = hidden.shape[-1]
    flat_t = targets.reshape(-1)
    pos = torch.nonzero(flat_t >= 0).squeeze(1)                                    # (N,) target positions
    h = hidden.reshape(-1, D).index_select(0, pos)                                  # (N, D)
    y = flat_t.index_select(0, pos)                                                 # (N,) codes
    w = lm_head_weight[vocab.visual_offset: vocab.visual_offset + vocab.codebook_size]  # (K, D) view
    h = h.to(w.dtype)  # e.g. fp32 hidden states from autocast against fp32 master weights
    nll, lse = chunked_visual_ce(h, w, y, chunk)
    n = int(pos.numel())
    total = nll.sum()
    z = (lse * lse).sum()
    if z_loss_weight:
        total = total + z_loss_weight * z
    denom = float(normaliser) if normaliser is not None else float(max(n, 1))
    f = frame.reshape(-1).index_select(0, pos)                                      # (N,) frame of each target
    F_ = num_frames if num_frames is not None else (int(f.max()) + 1 if n else 0)
    frame_nll = torch.zeros(F_, dtype=torch.float32, device=hidden.device).index_add_(0, f, nll.detach().float())
    frame_count = torch.zeros(F_, dtype=torch.float32, device=hidden.device).index_add_(
        0, f, torch.ones(n, dtype=torch.float32, device=hidden.device))
    return LossOutput(loss=total / denom, nll_sum=nll.detach().sum().float(), z_sum=z.detach().float(), count=n,
                      frame_nll=frame_nll, frame_count=frame_count)

