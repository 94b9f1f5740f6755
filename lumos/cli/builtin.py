"""`lumos builtin prepare | export | card`: a thin command line over `lumos.world.builtin` (the built-in
Moving Digits model's records, the export of a training run into a pipeline folder, its model card).

    lumos builtin prepare --out data/moving-digits            # text tokenizer + 20k token records
    lumos builtin prepare --out data/digits-wrap --num-frames 65 --edges wrap   # long clips that wrap
    lumos builtin prepare --out data/more --text-tokenizer lumos/assets/moving-digits/text_tokenizer.json
    lumos builtin export runs/moving-digits-stage3 --out out/moving-digits --eval report/report.json
    lumos builtin export runs/moving-digits-stage3 --into-package      # replaces lumos/assets/moving-digits
    lumos builtin card --eval docs/eval-moving-digits.json             # only the built-in model's README.md
"""

from __future__ import annotations

import argparse

from lumos.cli.flags import add_threads, apply_threads
from lumos.utils import LumosError
from lumos.world.builtin import ASSET, export, prepare, write_card


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="builtin_command", required=True, metavar="{prepare,export,card}",
                           help="prepare: records of the built-in world; export: a run as a pipeline folder; "
                                "card: rewrite a model card")
    a = sub.add_parser("prepare", help="text tokenizer + token records of the train split",
                       formatter_class=p.formatter_class)
    a.add_argument("--out", default="data/moving-digits", help="records folder (a rerun resumes it)")
    a.add_argument("--num-records", type=int, default=20_000, help="clips and images to render and encode")
    a.add_argument("--seed", type=int, default=0, help="seed of the rendered clips")
    a.add_argument("--tokenizer", default=str(ASSET / "tokenizer"), help="video tokenizer folder")
    a.add_argument("--num-frames", type=int, help="frames per clip (default: 17, the built-in model's)")
    a.add_argument("--edges", choices=("inside", "wrap"),
                   help="inside: digits stay on the canvas (default); wrap: a toroidal canvas, for long videos")
    a.add_argument("--text-tokenizer", help="use this text_tokenizer.json (e.g. the built-in model's, to fine-tune "
                                            "it) instead of training one")
    add_threads(a)
    e = sub.add_parser("export", help="a training run -> a pipeline folder (--out, or --into-package)",
                       formatter_class=p.formatter_class)
    e.add_argument("run", help="training run folder (its newest complete checkpoint is exported)")
    e.add_argument("--data", default="data/moving-digits", help="the `prepare` folder the run trained on")
    e.add_argument("--out", help="pipeline folder to write (required unless --into-package)")
    e.add_argument("--into-package", action="store_true",
                   help=f"replace the package's own built-in model ({ASSET})")
    e.add_argument("--tokenizer", default=str(ASSET / "tokenizer"), help="video tokenizer folder to ship")
    e.add_argument("--eval", help="`lumos eval` report.json whose table goes into the model card")
    c = sub.add_parser("card", help="rewrite only the model card (README.md) of an exported pipeline folder",
                       formatter_class=p.formatter_class)
    c.add_argument("--model", default=str(ASSET), help="pipeline folder")
    c.add_argument("--eval", help="`lumos eval` report.json whose table goes into the card")


def run(args) -> int:
    if args.builtin_command == "prepare":
        apply_threads(args)
        print(prepare(args.out, args.num_records, args.seed, args.tokenizer, num_frames=args.num_frames,
                      edges=args.edges, text_tokenizer=args.text_tokenizer))
    elif args.builtin_command == "export":
        if args.into_package == (args.out is not None):
            raise LumosError(f"export: give --out FOLDER, or --into-package to replace the built-in model in "
                             f"{ASSET} (not both)")
        print(export(args.run, args.data, ASSET if args.into_package else args.out, args.tokenizer, args.eval))
    else:
        print(write_card(args.model, args.eval))
    return 0
