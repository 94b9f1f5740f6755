"""Command-line flags made from a settings dataclass (`lumos.sampling.SampleConfig`,
`lumos.pipeline.PipelineDefaults`), so that a setting is named, typed, documented and checked in one
place, the dataclass: the flag is the field's name with dashes (`--num-inference-steps`), its type the
field's, its help the field's trailing comment, and the values given are checked by the dataclass's
own validator (`check`), with the messages naming the flag.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import re
from dataclasses import fields

import torch

from lumos.sampling import setting_types
from lumos.utils import LumosError


@functools.cache
def field_comments(cls) -> dict[str, str]:
    """Field name -> the trailing comment of its line in the class body (a base class's fields included);
    {} for a class whose source cannot be read (then the flags have no help text)."""
    out = {}
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name in vars(klass).get("__annotations__", {}):          # the fields this class declares
            m = re.search(rf"^[ \t]+{name}[ \t]*:[^#\n]*#[ \t]*(.+)$", source, re.M)
            if m:
                out.setdefault(name, m.group(1).strip())
    return out


class SettingFlags:
    """The flags of some fields of a settings dataclass `cls`: `add(parser)` declares them, `read(args)`
    returns the values given on the command line, checked.

    names: the fields to expose (default: all of them), in this order. defaults: an instance of `cls`
    whose values become the flags' defaults; without it a flag left out is None, i.e. the library's
    default (a model's pipeline.json). aliases: field -> extra spellings kept for old command lines."""

    def __init__(self, cls, names=None, defaults=None, aliases=None):
        self.cls = cls
        self.names = tuple(names) if names else tuple(f.name for f in fields(cls))
        self.defaults = defaults
        aliases = aliases or {}
        self.flags = {n: ("--" + n.replace("_", "-"), *aliases.get(n, ())) for n in self.names}

    def add(self, parser) -> None:
        comments = field_comments(self.cls)
        for name in self.names:
            kind, _ = setting_types(self.cls)[name]
            default = None if self.defaults is None else getattr(self.defaults, name)
            text = comments.get(name, "").replace("%", "%%")  # argparse formats help text with %
            if kind is bool:
                parser.add_argument(*self.flags[name], dest=name, action=argparse.BooleanOptionalAction,
                                    default=default, help=text)
            else:
                parser.add_argument(*self.flags[name], dest=name, type=kind, default=default, help=text)

    def read(self, args) -> dict:
        """{field: value} of the flags that have a value (given, or a default), checked by the dataclass's
        validator; an error names the flag as argparse does (`--num-inference-steps/--steps`)."""
        given = {n: getattr(args, n) for n in self.names if getattr(args, n) is not None}
        return self.cls.check(given, name=lambda n: "/".join(self.flags[n]))


def add_threads(parser) -> None:
    """`--threads`, for every command that runs work (`apply_threads` sets it)."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def apply_threads(args) -> None:
    """Check `--threads` and set torch's CPU threads (nothing when it is not given)."""
    if args.threads is None:
        return
    if args.threads < 1:
        raise LumosError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def add_training_flags(parser, where: str, example: str) -> None:
    """The flags both trainers share: `--resume`, `--restart`, `--set KEY=VALUE` (the strict TOML loader's
    overrides, `lumos.train.config`) and `--threads`. where: the run folder as the help names it;
    example: override examples for the help."""
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from the newest checkpoint in {where}/checkpoints that loads")
    parser.add_argument("--restart", action="store_true",
                        help=f"start over at step 0 although {where} holds a run (its checkpoints and metrics "
                             f"are replaced); with --resume: only if no checkpoint loads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key; VALUE is TOML ({example}); repeatable")
    add_threads(parser)
