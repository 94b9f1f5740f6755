"""`lumos tokenize`: a thin command line over `lumos.data.pretokenize` (media files + captions ->
sharded token records). The runbook is in that module's docstring."""

from __future__ import annotations

from dataclasses import fields

from lumos.cli.flags import add_threads, apply_threads
from lumos.data.pretokenize import TokenizeConfig, pretokenize, reindex
from lumos.utils import LumosError


def add_arguments(p) -> None:
    p.add_argument("--input", help="CSV (path, caption|text[, fps, duration, id]) or JSONL")
    p.add_argument("--out", required=True, help="records folder (a rerun resumes it)")
    p.add_argument("--tokenizer", help="visual tokenizer folder (Cosmos *.jit or vq_config.json)")
    p.add_argument("--text-tokenizer", help="tokenizers JSON file")
    p.add_argument("--fps", type=int, default=12, help="target frames per second")
    p.add_argument("--duration", type=int, default=2, help="target seconds per clip")
    p.add_argument("--size", type=int, default=528, help="size class in px: 352 ~ 256p, 528 ~ 384p")
    p.add_argument("--patch", type=int, default=None, help="aspect-bucket step in px (default: one size token)")
    p.add_argument("--max-ratio", type=float, default=4.0, help="most elongated bucket")
    p.add_argument("--vocab", choices=["chameleon", "compact"], default=None,
                   help="token layout (default: chameleon for Cosmos, compact otherwise)")
    p.add_argument("--window", choices=["center", "start"], default="center", help="where clips are cut")
    p.add_argument("--folder-fps", type=float, default=None, help="fps of folder-of-frames inputs")
    p.add_argument("--root", default=None, help="base folder of relative media paths (default: the input's folder)")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per shard")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine")
    p.add_argument("--rank", type=int, default=None, help="this machine's rank (default $RANK or 0)")
    p.add_argument("--world-size", type=int, default=None, help="number of ranks (default $WORLD_SIZE or 1)")
    p.add_argument("--device", default=None, help="visual tokenizer device (default cuda:$LOCAL_RANK or cpu)")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--index-only", action="store_true", help="only rebuild index.json and report.json")


def run(args) -> int:
    apply_threads(args)
    if args.index_only:
        reindex(args.out)
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("input", "tokenizer", "text_tokenizer") if not getattr(args, k)]
    if missing:
        raise LumosError(f"{', '.join(missing)} required (only --index-only works without them)")
    names = {f.name for f in fields(TokenizeConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in names}
    pretokenize(TokenizeConfig(**kwargs, progress=not args.no_progress))
    return 0

