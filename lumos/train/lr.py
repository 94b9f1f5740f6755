"""The learning-rate schedule of both trainers: linear warmup, then cosine decay to a floor (or constant).

    lr = get_lr(step, peak=1e-3, warmup_steps=100, total_steps=1000, min_lr=1e-4)            # lumos train
    lr = get_lr(step, peak=2e-3, warmup_steps=100, total_steps=5000, min_lr_ratio=0.05)      # train-tokenizer

A pure function of the step, so a resumed run needs no scheduler state. Each config maps its own
keys onto it (`TrainConfig.lr_at`, `TrainTokenizerConfig.lr_at`).
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("cosine", "constant")


def get_lr(step: int, *, peak: float, warmup_steps: int, total_steps: int, schedule: str = "cosine",
           min_lr: float = 0.0, min_lr_ratio: float | None = None) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Steps 0 .. warmup_steps - 1 rise linearly to `peak` (step s: peak (s + 1) / warmup_steps); then
    `schedule` "constant" stays at `peak`, "cosine" falls to the floor at `total_steps` and stays there.
    The floor is `min_lr`, or `peak * min_lr_ratio` when a ratio is given. The two are evaluated as
    min_lr + (peak - min_lr) w and peak (ratio + (1 - ratio) w) (w: the cosine weight, 1 -> 0): the
    same curve, but each trainer keeps the rounding its earlier runs had, bit for bit."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    w = 0.5 * (1.0 + math.cos(math.pi * progress))
    if min_lr_ratio is not None:
        return peak * (min_lr_ratio + (1 - min_lr_ratio) * w)
    return min_lr + (peak - min_lr) * w
