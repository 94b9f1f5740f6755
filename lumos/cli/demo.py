"""`lumos demo` (what `make demo` runs): a thin command line over `lumos.world.demo`."""

from __future__ import annotations

import argparse
import json

from lumos.cli.flags import add_threads, apply_threads
from lumos.world.demo import demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--model", default="moving-digits", help="built-in model name or pipeline folder")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    apply_threads(args)
    files = demo(args.out, args.model, args.seed, progress=not args.no_progress)
    print(json.dumps([str(f) for f in files]))
    return 0
