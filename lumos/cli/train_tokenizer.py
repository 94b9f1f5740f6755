"""`lumos train-tokenizer CONFIG [--out DIR] [--set KEY=VALUE ...] [--resume] [--restart]`: a thin command line over
`lumos.world.train_tokenizer.train_tokenizer` (the built-in video tokenizer). The runbook is in that
module's docstring."""

from __future__ import annotations

import dataclasses

from lumos.world.train_tokenizer import TrainTokenizerConfig, train_tokenizer


def add_arguments(parser) -> None:
    parser.add_argument("config", help="TOML config (see configs/tokenizer-moving-digits.toml)")
    parser.add_argument("--out", help="output folder (overrides out_dir in the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in OUT/checkpoints/ that loads")
    parser.add_argument("--restart", action="store_true",
                        help="start over although OUT holds checkpoints (they are deleted); with --resume: "
                             "only if none loads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key; VALUE is TOML (steps=200, model.levels=[8,5,5,5]); repeatable")


def run(args) -> int:
    cfg = TrainTokenizerConfig.from_toml(args.config, args.overrides)
    if args.out:
        cfg = dataclasses.replace(cfg, out_dir=args.out)
    metrics = train_tokenizer(cfg, resume=args.resume, restart=args.restart)
    print(f"saved {cfg.out_dir}/vq.safetensors ({metrics['parameters']:,} parameters); validation PSNR "
          f"{metrics['psnr_mean']:.2f} dB (min {metrics['psnr_min']:.2f}) over {metrics['eval_videos']} clips, "
          f"codebook usage {100 * metrics['codebook_usage']:.1f}%")
    return 0
