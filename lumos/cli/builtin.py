"""`lumos builtin prepare | export`: a thin command line over `lumos.world.builtin` (the built-in
Moving Digits model's records, and the export of a training run into a pipeline folder).

    lumos builtin prepare --out data/moving-digits            # text tokenizer + 20k token records
    lumos builtin export runs/moving-digits-stage3 --out out/moving-digits
"""

from __future__ import annotations

import argparse

from lumos.world.builtin import ASSET, export, prepare


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="builtin_command", required=True, metavar="{prepare,export}")
    a = sub.add_parser("prepare", help="text tokenizer + token records of the train split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("--out", default="data/moving-digits", help="records folder (a rerun resumes it)")
    a.add_argument("--num-records", type=int, default=20_000, help="clips and images to render and encode")
    a.add_argument("--seed", type=int, default=0, help="seed of the rendered clips")
    a.add_argument("--tokenizer", default=str(ASSET / "tokenizer"), help="video tokenizer folder")
    e = sub.add_parser("export", help="a training run -> a pipeline folder (default: the package's built-in model)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run", help="training run folder (its newest complete checkpoint is exported)")
    e.add_argument("--data", default="data/moving-digits", help="the `prepare` folder the run trained on")
    e.add_argument("--out", default=str(ASSET), help="pipeline folder to write")
    e.add_argument("--tokenizer", default=str(ASSET / "tokenizer"), help="video tokenizer folder to ship")


def run(args) -> int:
    if args.builtin_command == "prepare":
        print(prepare(args.out, args.num_records, args.seed, args.tokenizer))
    else:
        print(export(args.run, args.data, args.out, args.tokenizer))
    return 0
