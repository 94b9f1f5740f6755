"""`lumos train-tokenizer CONFIG [--out DIR] [--set KEY=VALUE ...] [--resume] [--restart]`: a thin command line over
`lumos.world.train_tokenizer.train_tokenizer` (the built-in video tokenizer). The runbook is in that
module's docstring."""

from __future__ import annotations

import dataclasses

from lumos.cli.flags import add_training_flags, apply_threads
from lumos.world.train_tokenizer import TrainTokenizerConfig, train_tokenizer


def add_arguments(parser) -> None:
    parser.add_argument("config", help="TOML config (see configs/tokenizer-moving-digits.toml)")
    parser.add_argument("--out", help="output folder (overrides out_dir in the config)")
    add_training_flags(parser, "OUT", "steps=200, model.levels=[8,5,5,5]")


def run(args) -> int:
    apply_threads(args)
    cfg = TrainTokenizerConfig.from_toml(args.config, args.overrides)
    if args.out:
        cfg = dataclasses.replace(cfg, out_dir=args.out)
    metrics = train_tokenizer(cfg, resume=args.resume, restart=args.restart)
    print(f"saved {cfg.out_dir}/vq.safetensors ({metrics['parameters']:,} parameters); validation PSNR "
          f"{metrics['psnr_mean']:.2f} dB (min {metrics['psnr_min']:.2f}) over {metrics['eval_videos']} clips, "
          f"codebook usage {100 * metrics['codebook_usage']:.1f}%")
    return 0
