"""`lumos train CONFIG [--set KEY=VALUE ...] [--resume] [--restart]`: a thin command line over
`lumos.train.loop.train`. The runbook is in that module's docstring; the config keys are
`lumos.train.config.TrainConfig`'s."""

from __future__ import annotations

import os
from pathlib import Path

from lumos.train.checkpoints import list_checkpoints
from lumos.train.config import TrainConfig
from lumos.train.loop import train


def add_arguments(parser) -> None:
    parser.add_argument("config", help="training config (TOML), e.g. configs/tiny.toml")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in out_dir/checkpoints that loads")
    parser.add_argument("--restart", action="store_true",
                        help="start over at step 0 although out_dir holds a run (its checkpoints and metrics "
                             "are replaced); with --resume: only if no checkpoint loads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key; VALUE is TOML (lr=3e-4, batch.max_frames=3, "
                             "out_dir=\"runs/x\"); repeatable")


def run(args) -> int:
    cfg = TrainConfig.from_toml(args.config, args.overrides)
    train(cfg, resume=args.resume, restart=args.restart)
    if int(os.environ.get("RANK", "0")) == 0:   # under torchrun, one line for the whole job
        found = list_checkpoints(Path(cfg.out_dir) / "checkpoints")
        print(f"lumos train: run in {cfg.out_dir}, last checkpoint {found[-1][1] if found else '(none)'}")
    return 0
