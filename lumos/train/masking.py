"""Training-time corruption for discrete diffusion with AR-DF (spec `lumos1.md` §5, notes §2.4, §1.2).

Everything here is a pure function of token tensors and an explicit `torch.Generator`: no module
state, no global RNG, no Python loop over tokens.

1. The mask ratio. Per sample (or per frame) t ~ U(0, 1) and r = schedule(t) floored at
   `min_rate`: `cosine` r = cos(pi t / 2) (the paper; floor 0.7 as released, so r is in [0.7, 1],
   P(r = 0.7) ~ 0.494, E[r] ~ 0.80), or `linear` r = 1 - t.

2. Which tokens are masked. Only the *body* of a latent frame can be masked: its visual codes and the
   row NEWLINE tokens (the reference counts newlines as frame content: notes §2.4); the frame's
   FRAME_START, two size tokens and FRAME_END, the video header and all text stay visible.
   A frame body has n = h (w + 1) tokens and k = round(r n) of them are masked (at least 1, as the
   reference clamps), chosen uniformly at random:
   - `tube` (AR-DF, the paper's default): one pattern per sample, the same body offsets masked in
     every latent frame. A masked token never has a visible copy at the same place in an earlier
     frame, so later frames cannot shortcut by copying history, which balances the frame-wise loss.
   - `random`: k = round(r N) of all N body tokens of the sample, with no structure across frames (the
     ablation whose later frames learn to copy).
   - `per_frame`: an independent ratio and pattern per frame (diffusion-forcing style).
   A sample's frames must share one grid (true for every video; images are one frame). Samples of
   a batch may differ in grid, length and frame count.

3. Inputs and targets. Masked tokens become MASK in the input. A target is a masked *visual* token:
   the label is its code c = id - visual_offset (ready for the visual-rows loss), -100 elsewhere.
   A masked NEWLINE is therefore corrupted in the input but never a target, exactly as in the
   reference, where its label (< 65,536) is dropped by the visual-only loss. We keep that choice:
   at inference newlines are always given, so predicting them would only spend capacity; masking
   them in training keeps the train-time input distribution identical to the released models'.

4. CFG dropout: with probability p a sample loses everything before VIDEO_START (its BOS, prompt
   and SEP), which is the unconditional sequence the sampler uses (`text_only`, notes §1.2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from lumos.utils import LumosError
from lumos.vocab import Vocab

SCHEDULES = ("cosine", "linear")
MODES = ("tube", "random", "per_frame")


# ---------------------------------------------------------------------------------------------- ratio
def mask_ratio(t: torch.Tensor, schedule: str = "cosine", min_rate: float = 0.7) -> torch.Tensor:
    """Mask ratio for diffusion times `t` in [0, 1) (any shape): schedule(t) clamped to [min_rate, 1]."""
    if schedule == "cosine":
        r = torch.cos(t * (math.pi / 2))
    elif schedule == "linear":
        r = 1.0 - t
    else:
        raise LumosError(f"mask schedule {schedule!r} is not one of {SCHEDULES}")
    return r.clamp(min=min_rate, max=1.0)


# ---------------------------------------------------------------------------------------------- layout
class FrameLayout(NamedTuple):
    """Where the frame bodies are. All `[B, L]` int64 except the per-sample counts `[B]`."""
    frame: torch.Tensor      # latent frame index (0, 1, ...) of body tokens, -1 elsewhere
    offset: torch.Tensor     # position inside the frame body (0 .. n-1), -1 elsewhere
    body_len: torch.Tensor   # [B] n = tokens in one frame body (h (w + 1)); 0 without frames
    num_frames: torch.Tensor  # [B] latent frames in the sample


def frame_layout(tokens: torch.Tensor, vocab: Vocab) -> FrameLayout:
    """Locate frame bodies from the markers alone: a body token lies inside a FRAME_START..FRAME_END
    segment, past the frame header (`Vocab.FRAME_HEADER`: FRAME_START and the two size tokens), and
    is not the FRAME_END. tokens: [B, L] int64 (right padding with any non-marker id is fine)."""
    seg = vocab.frame_segments(tokens)                                            # (B, L) each
    body = (seg.frame >= 0) & (seg.offset >= 0) & (tokens != vocab.frame_end)
    frame = torch.where(body, seg.frame, torch.full_like(seg.frame, -1))
    offset = torch.where(body, seg.offset, torch.full_like(seg.offset, -1))
    num_frames = seg.latest[:, -1] + 1 if tokens.shape[1] else torch.zeros(len(tokens), dtype=torch.long)
    body_len = ((frame == 0).sum(1))                                              # (B,) length of frame 0
    if not torch.equal(body.sum(1), body_len * num_frames):
        bad = int(torch.nonzero(body.sum(1) != body_len * num_frames)[0])
        raise LumosError(f"sample {bad}: its latent frames do not all have the same body length "
                         f"(a cut-off frame, or frames of different grids in one video)")
    return FrameLayout(frame, offset, body_len, num_frames)


# ---------------------------------------------------------------------------------------------- masks
def _choose(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """True at the k smallest scores along the last axis. scores: [..., n]; k: [...] -> bool [..., n]."""
    rank = scores.argsort(dim=-1).argsort(dim=-1)                                 # rank of each entry
    return rank < k[..., None]


def _count(ratio: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """k = round(r n), at least 1 and at most n (0 when n is 0). torch.round is half-to-even, as in
    the reference (which also rounds a tensor)."""
    k = torch.round(ratio * n).long()
    return torch.minimum(k.clamp(min=1), n)


class Masking(NamedTuple):
    masked: torch.Tensor     # [B, L] bool: tokens replaced by MASK
    ratio: torch.Tensor      # [B] (tube, random) or [B, F] (per_frame) ratios drawn


def draw_mask(layout: FrameLayout, generator: torch.Generator, mode: str = "tube", schedule: str = "cosine",
              min_rate: float = 0.7) -> Masking:
    """Draw which body tokens to mask. Random numbers are drawn on the CPU generator in a fixed order
    (ratios first, then the pattern scores), so a result depends only on the generator's seed and
    the layout, never on the device.

    tube:      t [B]; scores [B, n_max]; frame body offset j of sample b is masked in every frame iff
               j is among the k_b = round(r_b n_b) smallest scores of b's first n_b entries.
    per_frame: t [B, F]; scores [B, F, n_max]; the same rule per (sample, frame).
    random:    t [B]; scores [B, L]; the k_b = round(r_b N_b) smallest scores over b's N_b body tokens.
    """
    frame, offset, n, nf = layout
    B, L = frame.shape
    body = frame >= 0
    dev = frame.device
    n_max = max(int(n.max()) if B else 0, 1)
    if mode == "tube":
        ratio = mask_ratio(torch.rand(B, generator=generator), schedule, min_rate).to(dev)
        scores = torch.rand(B, n_max, generator=generator).to(dev)                  # (B, n_max)
        j = torch.arange(n_max, device=dev)
        scores = torch.where(j < n[:, None], scores, torch.full_like(scores, 2.0))  # never pick beyond n_b
        pattern = _choose(scores, _count(ratio, n))                                  # (B, n_max)
        masked = pattern.gather(1, offset.clamp(min=0)) & body
    elif mode == "per_frame":
        F_max = max(int(nf.max()) if B else 0, 1)
        ratio = mask_ratio(torch.rand(B, F_max, generator=generator), schedule, min_rate).to(dev)
        scores = torch.rand(B, F_max, n_max, generator=generator).to(dev)           # (B, F, n_max)
        j = torch.arange(n_max, device=dev)
        scores = torch.where(j < n[:, None, None], scores, torch.full_like(scores, 2.0))
        pattern = _choose(scores, _count(ratio, n[:, None])).view(B, F_max * n_max)  # (B, F*n_max)
        flat = frame.clamp(min=0) * n_max + offset.clamp(min=0)                      # (B, L)
        masked = pattern.gather(1, flat) & body
    elif mode == "random":
        ratio = mask_ratio(torch.rand(B, generator=generator), schedule, min_rate).to(dev)
        scores = torch.rand(B, L, generator=generator).to(dev)
        scores = torch.where(body, scores, torch.full_like(scores, 2.0))
        masked = _choose(scores, _count(ratio, body.sum(1))) & body
    else:
        raise LumosError(f"mask mode {mode!r} is not one of {MODES}")
    return Masking(masked, ratio)


def apply_mask(tokens: torch.Tensor, masked: torch.Tensor, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) `[B, L]` int64: MASK where masked; target = visual code at masked visual ids,
    -100 elsewhere (masked NEWLINEs are corrupted but not targets: see the module docstring)."""
    visual = (tokens >= vocab.visual_offset) & (tokens < vocab.visual_offset + vocab.codebook_size)
    inputs = torch.where(masked, torch.full_like(tokens, vocab.mask), tokens)
    targets = torch.where(masked & visual, tokens - vocab.visual_offset, torch.full_like(tokens, -100))
    return inputs, targets


def corrupt(tokens: torch.Tensor, vocab: Vocab, generator: torch.Generator, mode: str = "tube",
            schedule: str = "cosine", min_rate: float = 0.7):
    """Layout + mask + apply in one call. tokens: [B, L] -> (inputs [B, L], targets [B, L],
    frame [B, L] (latent frame of body tokens, -1 elsewhere), Masking)."""
    layout = frame_layout(tokens, vocab)
    m = draw_mask(layout, generator, mode, schedule, min_rate)
    inputs, targets = apply_mask(tokens, m.masked, vocab)
    return inputs, targets, layout.frame, m


# ---------------------------------------------------------------------------------------------- CFG
def drop_text(tokens: np.ndarray, vocab: Vocab) -> np.ndarray:
    """The unconditional sequence: everything from the first VIDEO_START on. tokens: int [L]."""
    tokens = np.asarray(tokens)
    vs = vocab.find_video_start(tokens)
    if vs < 0:
        raise LumosError("CFG dropout needs a VIDEO_START token in the sequence")
    return tokens[vs:]


def cfg_dropout(sequences: list[np.ndarray], vocab: Vocab, p: float,
                generator: torch.Generator) -> tuple[list[np.ndarray], torch.Tensor]:
    """With probability p per sample, replace the sequence by `drop_text(sequence)`.
    Returns the new list and the bool `[B]` of dropped samples (one uniform draw per sample)."""
    drop = torch.rand(len(sequences), generator=generator) < p
    return [drop_text(s, vocab) if d else s for s, d in zip(sequences, drop.tolist())], drop
