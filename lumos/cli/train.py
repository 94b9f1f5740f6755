"""`lumos train CONFIG [--set KEY=VALUE ...] [--resume] [--restart]`: a thin command line over
`lumos.train.loop.train`. The runbook is in that module's docstring; the config keys are
`lumos.train.config.TrainConfig`'s."""

from __future__ import annotations

import os
from pathlib import Path

from lumos.cli.flags import add_training_flags, apply_threads
from lumos.train.checkpoints import list_checkpoints
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.train.outputs import missing_flags


def add_arguments(parser) -> None:
    parser.add_argument("config", help="training config (TOML), e.g. configs/tiny.toml")
    add_training_flags(parser, "out_dir", 'lr=3e-4, batch.max_frames=3, out_dir="runs/x"')


def run(args) -> int:
    apply_threads(args)
    cfg = TrainConfig.from_toml(args.config, args.overrides)
    train(cfg, resume=args.resume, restart=args.restart)
    if int(os.environ.get("RANK", "0")) == 0:   # under torchrun, one report for the whole job
        found = list_checkpoints(Path(cfg.out_dir) / "checkpoints")
        print(f"lumos train: run in {cfg.out_dir}, last checkpoint {found[-1][1] if found else '(none)'}")
        if found:   # each checkpoint's model/ is a pipeline folder (lumos.train.outputs); its card says what it lacks
            needs = [f"{flag} ..." for flag in missing_flags(found[-1][1] / "model")]
            print(f"lumos train: generate with: lumos generate --model {cfg.out_dir} --prompt \"...\""
                  + (f" {' '.join(needs)} (not known to the run: see {found[-1][1] / 'model' / 'README.md'})"
                     if needs else ""))
    return 0
