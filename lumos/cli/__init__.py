"""`lumos` command line: a thin layer over the Python API.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and `run(args) -> int`;
this file only maps names to modules (imported lazily, so `lumos --help` is fast). It is also the one
place where bad input becomes what the user sees: a `LumosError` from the library, or a flag argparse
refuses, is printed as one line `lumos: error: ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lumos.utils import LumosError

COMMANDS = {
    # name: (module, help)
    "tokenize": ("lumos.cli.tokenize", "pre-tokenize media + captions into sharded token records"),
    "train-tokenizer": ("lumos.cli.train_tokenizer", "train the built-in causal video tokenizer"),
    "train": ("lumos.cli.train", "train a Lumos model (discrete diffusion with AR-DF)"),
    "generate": ("lumos.cli.generate", "generate images / videos from prompts, images or videos"),
    "bench": ("lumos.cli.bench", "time parallel (masked) decoding against next-token decoding"),
    "eval": ("lumos.cli.eval", "generate and score the built-in Moving Digits world automatically"),
    "demo": ("lumos.cli.demo", "generate a few videos with the built-in model (what `make demo` runs)"),
    "builtin": ("lumos.cli.builtin", "prepare the built-in model's records; export a training run as a pipeline"),
    "ablate": ("lumos.cli.ablate", "train the variants of an ablation suite on one budget and compare them"),
    "serve": ("lumos.cli.serve", "the web UI: generate in the browser, frames as they are made (pip install 'lumos[ui]')"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a refused flag reported like every other bad input: one line, exit code 2 (not
    the whole usage text, which runs to a dozen lines for `lumos generate`)."""

    def error(self, message):
        self.exit(2, f"lumos: error: {message} (see `{self.prog} --help`)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in its help, except None and False (no value, an off switch): there the
    help text says what happens."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse(argv: list[str]):
    """-> (args, the module of the command, the parser). Only the command's own module is imported
    (all of them for `lumos --help`). Refused flags exit with code 2 (`_Parser.error`)."""
    parser = _Parser(prog="lumos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [a for a in argv if not a.startswith("-")][:1]
    modules = {}
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, formatter_class=_Help)
        if not wanted or wanted[0] == name:
            modules[name] = importlib.import_module(module)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return args, modules.get(args.command), parser


def main(argv=None) -> int:
    args, module, parser = parse(sys.argv[1:] if argv is None else list(argv))
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except LumosError as e:
        print(f"lumos: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lumos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
