"""`lumos eval`: generate the built-in Moving Digits world and score every video automatically; a thin
command line over `lumos.world.evaluate` (runs, reports) and `lumos.world.scoring` (the scorers).

    lumos eval                                            # the built-in model, default prompt sets, seed 0
    lumos eval --model runs/digits/final --out eval-digits --num-prompts 120 --batch-size 16
    lumos eval --sets heldout --num-inference-steps 8 --guidance-scale 3 --no-next-token
    lumos eval --long 65,129 --window-frames 8 --sink-frames 1    # long videos (default --sets heldout)

Writes report.json and report.md into --out and prints the table. With --long the run is the long-video
set instead (`lumos.world.evaluate.evaluate_long`): the prompts of --sets generated at each length and
scored whole and per 16-frame segment on the world's toroidal canvas.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lumos.cli.flags import SettingFlags, add_threads, apply_threads
from lumos.pipeline import LumosPipeline, resolve_device, resolve_model
from lumos.sampling import SampleConfig, check_seed
from lumos.utils import LumosError, check_output
from lumos.world.evaluate import (SETS, build_items, check_lengths, check_run, evaluate, evaluate_long, format_markdown,
                                  write_report)
from lumos.world.scoring import digit_classifier

# The sampling flags (left out: the model's pipeline.json); the size of the videos is the world's.
SAMPLING = SettingFlags(SampleConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="moving-digits", help="pipeline folder or built-in model name")
    p.add_argument("--out", default="lumos-eval", help="folder for report.json and report.md")
    p.add_argument("--seed", type=int, default=0, help="generation seed (the prompt sets are fixed)")
    p.add_argument("--num-prompts", type=int, default=60, help="validation-split prompts")
    p.add_argument("--num-i2v", type=int, default=8, help="image-to-video prompts")
    p.add_argument("--sets", help=f"comma-separated subset of {','.join(SETS)} (default: all; with --long: heldout)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per pipeline call")
    p.add_argument("--no-next-token", action="store_true", help="skip the next-token speed comparison")
    p.add_argument("--next-token-prompts", type=int, default=2, help="prompts decoded next-token for the speed ratio")
    p.add_argument("--ceiling-clips", type=int, default=32,
                   help="ground-truth clips scored after a round trip through the video tokenizer (0: skip)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    long = p.add_argument_group("long videos")
    long.add_argument("--long", metavar="LENGTHS",
                      help="comma-separated video lengths in frames, each 1 + 16k (17, 33, 65, 129, ...): run the "
                           "long-video set instead of the standard one")
    SAMPLING.add(p.add_argument_group("sampling (default: the model's pipeline.json)"))


def check_long(args) -> list[int] | None:
    """--long checked -> the lengths, or None without it. The window (--window-frames, --sink-frames) is
    a sampling setting like the others (default: the model's pipeline.json)."""
    if args.long is None:
        return None
    try:
        lengths = [int(x) for x in args.long.split(",") if x.strip()]
    except ValueError:
        raise LumosError(f"--long {args.long!r}: expected comma-separated frame counts, e.g. 65,129") from None
    try:
        return check_lengths(lengths)
    except LumosError as e:
        raise LumosError(f"--long {args.long!r}: {e}") from None


def check_args(args) -> tuple[list[str], dict, list[int] | None]:
    """The checks that need no model; returns the sets, the sampling settings given and the long-video
    lengths (`check_long`, None without --long)."""
    for name in ("num_prompts", "num_i2v", "next_token_prompts", "ceiling_clips"):
        if getattr(args, name) < 0:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.batch_size < 1:
        raise LumosError(f"--batch-size must be >= 1, got {args.batch_size}")
    apply_threads(args)
    settings = SAMPLING.read(args)
    long = check_long(args)
    given = args.sets if args.sets is not None else ("heldout" if long else ",".join(SETS))
    sets = [s.strip() for s in given.split(",") if s.strip()]
    if not sets or set(sets) - set(SETS):
        raise LumosError(f"--sets {given!r}: choose a comma-separated subset of {','.join(SETS)}")
    check_seed(args.seed, "--seed")
    for name in ("report.json", "report.md"):
        check_output(Path(args.out) / name, "--out")
    return sets, settings, long


def run(args) -> int:
    sets, settings, long = check_args(args)
    device, dtype = resolve_device(args.device)
    model_dir = resolve_model(args.model)            # a missing model fails before the classifier is fitted
    items = build_items(args.num_prompts, args.num_i2v, sets)
    if not items:
        raise LumosError("no prompts to evaluate (--num-prompts 0 and no other set)")
    # Every batch checked against the model's config (settings, length) before its weights are read.
    pipe = LumosPipeline.from_pretrained(model_dir, device=device, dtype=dtype, weights=False)
    if long:
        for n in long:
            check_run(pipe, items, args.batch_size, num_frames=n, **settings)
    else:
        check_run(pipe, items, args.batch_size, **settings)
    digit_classifier()                               # fit now, not inside the first timed batch
    pipe.load_weights()
    if long:
        report = evaluate_long(pipe, items, long, args.seed, batch_size=args.batch_size,
                               ceiling_clips=args.ceiling_clips, progress=not args.no_progress, **settings)
    else:
        report = evaluate(pipe, items, args.seed, batch_size=args.batch_size,
                          next_token_prompts=0 if args.no_next_token else args.next_token_prompts,
                          ceiling_clips=args.ceiling_clips, progress=not args.no_progress, **settings)
    report = {"model": str(args.model), "model_path": str(model_dir), **report}
    json_path, md_path = write_report(report, args.out)
    print(format_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0
