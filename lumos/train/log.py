"""What a training run reports, on rank 0: a tqdm bar (loss, tokens/s, ETA), `metrics.jsonl` (one
JSON line per step, flushed as written) and TensorBoard scalars under `tb/`.

    log = Logger(out_dir, start=0, total=1000, tensorboard=True, on=rt.rank == 0)
    log.log({"step": 1, "loss": 4.1, "lr": 1e-4, "grad_norm": 1.3, "tokens_per_s": 9e3, "frame_loss": [...]})
    log.close()

A resumed run rewrites metrics.jsonl up to its checkpoint's step first, so the lines of a killed run's
later steps (which the resumed run recomputes) do not appear twice. Nothing is written (nor the bar
drawn) before the first record: a run that fails before its first step leaves no file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from lumos.utils import atomic_write

SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "z_loss")


class Logger:
    """The bar, metrics.jsonl and tb/ of one run; with `on = False` (ranks other than 0) it logs nothing."""

    def __init__(self, out: Path, start: int, total: int, tensorboard: bool, on: bool):
        self.on, self.out, self.start, self.total, self.tensorboard = on, out, start, total, tensorboard
        self.file = self.tb = self.bar = None

    def _open(self) -> None:
        from tqdm import tqdm

        metrics = self.out / "metrics.jsonl"
        kept = [r for r in read_metrics(metrics) if r["step"] <= self.start]
        with atomic_write(metrics, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self.file = open(metrics, "a")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.start + 1)
        self.bar = tqdm(total=self.total, initial=self.start, desc="train", unit="step", dynamic_ncols=True)

    def log(self, r: dict) -> None:
        """One step's record: a metrics.jsonl line, its scalars (and per-frame losses) in tb/, the bar."""
        if not self.on:
            return
        if self.file is None:
            self._open()
        self.file.write(json.dumps(r) + "\n")
        self.file.flush()
        if self.tb is not None:
            s = r["step"]
            for k in SCALARS:
                if k in r:
                    self.tb.add_scalar(f"train/{k}", r[k], s)
            for f, v in enumerate(r["frame_loss"]):
                if v is not None:
                    self.tb.add_scalar(f"train/frame_loss/{f}", v, s)
        self.bar.set_postfix(loss=f"{r['loss']:.4f}", tok_s=f"{r['tokens_per_s']:.0f}")
        self.bar.update(1)

    def close(self) -> None:
        if self.file is not None:
            self.bar.close()
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def read_metrics(path: Path) -> list[dict]:
    """Lines of metrics.jsonl; a line cut by a kill is ignored."""
    out = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and isinstance(r.get("step"), int):
                out.append(r)
    return out
