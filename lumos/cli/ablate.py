"""`lumos ablate`: train the variants of an ablation suite on the same data, budget, data order and seeds,
score each, and write report.json, report.md and PNG plots; a thin command line over `lumos.world.ablate`.

    lumos ablate rope --budget tiny --seeds 1 --out ablate-rope-tiny   # every rope_type, a few steps each
    lumos ablate rope --budget quick --seeds 2 --out ablate-rope        # a smoke check on 2 CPU cores
    lumos ablate steps --budget quick --out ablate-steps                # decoding steps vs seconds, no training
    lumos ablate train-mask --budget quick --out ablate-mask            # tube / random / per_frame training masks
    lumos ablate history-mask --budget quick --out ablate-history       # history_mask_ratio 0 .. 0.9, no training
    lumos ablate history-mask --budget full --seeds 2 --out ablate-history-full   # docs/ablations.md's budget
    lumos ablate train-mask --budget full --seeds 2 --jobs 2 --threads 1 --out ablate-mask-full  # 2 runs at once

A rerun with the same --out skips every finished (variant, seed) and continues a killed one.
"""

from __future__ import annotations

import argparse

from lumos.cli.flags import add_threads, apply_threads
from lumos.world.ablate import BUDGETS, SUITES, check_args, run_suite


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE", help=f"the ablation suite: {', '.join(SUITES)}")
    p.add_argument("--budget", default="quick", help=f"training and evaluation budget: {', '.join(BUDGETS)}")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (0 .. N-1)")
    p.add_argument("--out", default="ablate", help="folder for the runs, results, report and plots")
    p.add_argument("--model", default="moving-digits",
                   help="the trained model of the steps and history-mask suites (pipeline folder or built-in "
                        "model name)")
    p.add_argument("--jobs", type=int, default=1,
                   help="trained suites: runs trained side by side in that many processes (each with --threads "
                        "torch threads; default: the threads split between them); output in OUT/logs")
    add_threads(p)


def run(args) -> int:
    check_args(args.suite, args.budget, args.seeds, args.out, args.model, args.jobs)   # refused before any work
    apply_threads(args)
    report = run_suite(args.suite, args.budget, args.seeds, args.out, model=args.model, jobs=args.jobs,
                       threads=args.threads)
    print(f"wrote report.json, report.md and plots of {len(report['variants'])} variants into {args.out}")
    return 0
