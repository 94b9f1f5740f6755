"""The paper's frame-wise loss imbalance (Lumos-1, AR-DF): with `random` masking, a masked token of a
later frame can often be copied from the visible token at the same place in an earlier frame, so
later frames get a far lower training loss than the first one, which has no history to copy from;
`tube` masking (one spatial pattern for every frame) removes that shortcut and keeps the frame-wise
losses balanced.

    .venv/bin/python benchmarks/frame_loss_imbalance.py            # ~2.5 minutes on 2 CPU cores

Two identical tiny trainings (configs/tiny.toml's model, 1500 steps of 16 videos) on
`SyntheticVideos` that differ only in `mask_mode`. The world: 5 latent frames of 4x4 codes; the
first frame is fresh random codes in 2x2 squares of one code (so a masked token can be inferred
from a visible neighbour in its square: there is something to learn inside a frame), and each next
frame is the previous one with 2% of its tokens redrawn (most of a frame repeats, as in real video).
Printed: the mean training loss of each latent frame over three windows of steps, and the ratio of
the last frame's loss to the first's (ln 64 = 4.16 nats is chance).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from lumos.train.batches import BatchOptions
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.world.ablate import frame_means


def run(mode: str, steps: int, out: str, classes: int, block: int, noise: float) -> list[dict]:
    cfg = TrainConfig(model="tiny", batch=BatchOptions(mask_mode=mode, max_frames=5, cfg_drop_prob=0.1),
                      max_steps=steps, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=20, tensorboard=False,
                      checkpoint_every=10 ** 9, out_dir=out,
                      synthetic=dict(num=4096, frames=5, height=4, width=4, classes=classes, block=block, noise=noise,
                                     image_fraction=0.0))
    return train(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--noise", type=float, default=0.02, help="fraction of tokens redrawn per frame")
    ap.add_argument("--classes", type=int, default=0)
    ap.add_argument("--block", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("random", "tube"):
            results[mode] = run(mode, args.steps, f"{tmp}/{mode}", args.classes, args.block, args.noise)
    s = args.steps
    windows = [(0, s // 6), (s // 2 - s // 12, s // 2 + s // 12), (s - s // 6, s)]
    print(f"\nper-frame training loss (nats; mean over the steps shown), {s} steps, 5 latent frames")
    for mode, hist in results.items():
        for a, b in windows:
            m = frame_means([r["frame_loss"] for r in hist[a:b]])      # per frame, over steps a+1..b
            print(f"{mode:>6}  steps {a + 1:>4}-{b:<4}  " + "  ".join(f"f{f} {v:.3f}" for f, v in enumerate(m))
                  + f"   last/first {m[-1] / m[0]:.2f}")


if __name__ == "__main__":
    main()
