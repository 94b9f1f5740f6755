"""Shared test material: sequence builders, the official-records locator, and brute-force references
written as plain loops straight from the spec (they share no code with lumos.positions / lumos.masks)."""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("LUMOS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OFFICIAL = SHARED_DATA / "official-records"


def sharp_model(seed=0, **overrides):
    """The tiny preset with weights and norm parameters far from their init, so that the logits are far
    from uniform and every parameter and every detail of the context moves them well above any tolerance."""
    import torch

    from lumos.config import ModelConfig
    from lumos.model import LumosModel

    model = LumosModel.from_config(ModelConfig.from_name("tiny", **overrides), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return model.eval()


def official_record(name: str) -> dict:
    f = OFFICIAL / f"{name}.json.gz"
    if not f.is_file():
        pytest.skip(f"official records not available ({f})")
    with gzip.open(f) as fh:
        return json.load(fh)


def t2v(vocab, n_text=7, frames=3, h=4, w=5, seed=0, duration=2, fps=8, complete=True):
    rng = np.random.default_rng(seed)
    text = rng.integers(1, min(vocab.text_vocab_size, 60), n_text)
    codes = rng.integers(0, vocab.codebook_size, (frames, h, w))
    return vocab.build_t2v(text, codes, duration=duration, fps=fps, complete=complete)


# ------------------------------------------------------------------------------------------ references
def ref_positions(tokens, vocab, scale=(4, 8, 8), offset=True):
    """The spec's rule walked token by token: returns lists text, t, h, w, flag."""
    tokens = [int(x) for x in tokens]
    L = len(tokens)
    text = list(range(L))
    t, h, w, flag = [0] * L, [0] * L, [0] * L, [0] * L
    i, frame, first = 0, -1, None
    g = vocab.grid_per_size
    while i < L:
        if tokens[i] == vocab.frame_start and i + 2 < L:
            frame += 1
            rows = (tokens[i + 1] - vocab.size_base) * g
            cols = (tokens[i + 2] - vocab.size_base) * g
            if first is None:
                first = i + 3
            for r in range(rows):
                for c in range(cols + 1):
                    j = i + 3 + r * (cols + 1) + c
                    if j < L:
                        t[j], h[j], w[j], flag[j] = scale[0] * frame, scale[1] * r, scale[2] * c, 1
            i += 3 + rows * (cols + 1)
        else:
            i += 1
    p0 = first if (offset and first is not None) else 0
    for j in range(L):
        if flag[j]:
            t[j] += p0
            h[j] += p0
            w[j] += p0
    return text, t, h, w, flag


def ref_mask(tokens, vocab):
    """Dense frame-causal mask by nested loops: causal, plus both tokens inside the same
    FRAME_START..FRAME_END segment."""
    tokens = [int(x) for x in tokens]
    L = len(tokens)
    seg = [-1] * L
    cur, k = -1, -1
    for i, x in enumerate(tokens):
        if x == vocab.frame_start:
            k += 1
            cur = k
        seg[i] = cur
        if x == vocab.frame_end:
            cur = -1
    m = np.zeros((L, L), bool)
    for q in range(L):
        for kv in range(L):
            m[q, kv] = kv <= q or (seg[q] >= 0 and seg[q] == seg[kv])
    return m


def ref_axis(j: int) -> str:
    """Axis of cos/sin channel j (0 <= j < head_dim) from the spec's index sets, groups of 16."""
    o = j % 16
    if o in (0, 1, 2, 3):
        return "t"
    if o in (4, 5, 8, 9, 12, 13):
        return "h"
    return "w"


def ref_rope_angles(pos, head_dim, theta):
    """Per-token, per-channel rotation angles [L, head_dim] (float64) for MM-RoPE."""
    text, t, h, w, flag = pos
    L = len(text)
    out = np.zeros((L, head_dim))
    for i in range(L):
        for j in range(head_dim):
            k = j % (head_dim // 2)
            f = theta ** (-2 * k / head_dim)
            if flag[i]:
                p = {"t": t[i], "h": h[i], "w": w[i]}[ref_axis(j)]
            else:
                p = text[i]
            out[i, j] = p * f
    return out


def cos_sin_from_angles(a):
    return np.cos(a), np.sin(a)


def full_vocab_loss(hidden, lm_head_weight, targets, vocab):
    """The reference's loss (for tests and benchmarks/loss_memory.py): fp32 logits over the *full*
    vocabulary for every position `[B L, V]`, then the visual columns of the target rows, then the
    mean cross-entropy. Same value as `masked_visual_loss(...).loss` with z-loss 0."""
    import torch
    import torch.nn.functional as F

    logits = F.linear(hidden.reshape(-1, hidden.shape[-1]), lm_head_weight)
    logits = logits.double() if logits.dtype == torch.float64 else logits.float()      # (B L, V)
    flat_t = targets.reshape(-1)
    keep = flat_t >= 0
    vis = logits[keep][:, vocab.visual_offset: vocab.visual_offset + vocab.codebook_size]
    return F.cross_entropy(vis, flat_t[keep])


def output_tokens(plan, codes):
    """The conditional sequences of a `lumos.sampling.Plan` with every frame filled in from `codes`
    `[n_cond, G + F, h, w]` (as `generate` returns them) and VIDEO_END appended: one int64 tensor per
    video, padding removed. Rebuilt from the prompt part of the plan and `Vocab.frame_tokens`."""
    import torch

    v = plan.vocab
    out = []
    for i in range(plan.n_cond):
        start = int((~plan.valid[i]).sum())
        head = plan.tokens[i, start:plan.video_col + v.VIDEO_HEADER].cpu().numpy()     # prompt + video header
        frames = [v.frame_tokens(c) for c in codes[i].cpu().numpy()]
        out.append(torch.from_numpy(np.concatenate([head, *frames, [v.video_end]])))
    return out


def record_lengths(reader):
    """Token count of every record of a `RecordReader`, from the shards' offsets.npy files alone."""
    return np.concatenate([np.diff(np.load(reader.root / s / "offsets.npy")) for s in reader.shards])


def allow_cpu_flex_backward(monkeypatch):
    """Give `lumos.model.flex_attention` a CPU backward for one test, to check the flex masks' gradients
    on the CPU (torch refuses FlexAttention backward there, and so does the library). Runs the unfused
    math path of the FlexAttention operator through torch's private API (it may move between torch
    versions: the test skips then); it materialises the scores, which is fine at test sizes. Calls
    that need no CPU backward go to the library's function as before."""
    import torch

    from lumos import model as M

    library = M.flex_attention
    try:
        from torch._higher_order_ops.flex_attention import flex_attention as flex_hop
        from torch.nn.attention.flex_attention import _apply_kernel_options
    except ImportError as e:
        pytest.skip(f"this torch has no private FlexAttention operator to run a CPU backward ({e})")

    def flex_attention(q, k, v, block_mask):
        if not (q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
            return library(q, k, v, block_mask)
        if q.shape[1] != k.shape[1]:                                                    # GQA
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        opts = _apply_kernel_options(q, k, v, True, None)
        return flex_hop(q, k, v, lambda s, b, h, i, j: s, block_mask.as_tuple(), q.shape[-1] ** -0.5, opts)[0]

    monkeypatch.setattr(M, "flex_attention", flex_attention)


__all__ = ["sharp_model", "official_record", "t2v", "ref_positions", "ref_mask", "ref_rope_angles", "math",
           "full_vocab_loss", "output_tokens", "record_lengths", "allow_cpu_flex_backward"]
