"""The harness of the bad-input corpus (tests/test_bad_inputs_*.py): what a refusal must look like.

A bad input to a `lumos` command must give exit code 2 (or the documented one), one clear line on
stderr (at most 3 lines, no traceback) BEFORE any model is loaded or any work starts, and must leave
every file as it was: no new file, no changed file, no deleted file under the folders watched.

`refuse(argv, *watched)` runs `lumos.cli.main(argv)` in this process (an uncaught exception is a
traceback for the user: the test fails with it) and checks all of that. `refuse_api(fn, *watched)` is
the same for the Python API: a `LumosError` with a one-line message. `pickle_bomb(path, marker)`
writes a pickle that would create `marker` if anything unpickled it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
from pathlib import Path

from lumos.cli import main
from lumos.utils import LumosError


def snapshot(*roots) -> dict[str, tuple]:
    """path -> (kind, size, sha1) of everything under the roots (folders included, so a new empty
    folder counts as a change too)."""
    out = {}
    for root in map(Path, roots):
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = ("dir",)
            for f in filenames:
                p = os.path.join(dirpath, f)
                data = Path(p).read_bytes() if os.path.isfile(p) else b""
                out[p] = ("file", len(data), hashlib.sha1(data).hexdigest())
    return out


def refuse(argv: list[str], *watched, match: str | None = None, code: int = 2) -> str:
    """Run `lumos ARGV`; assert the refusal contract; return stderr's first line."""
    before = snapshot(*watched)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:                        # argparse
            rc = e.code
    text = err.getvalue()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert rc == code, f"exit code {rc}, expected {code}; stderr:\n{text}"
    assert "Traceback" not in text, text
    assert 1 <= len(lines) <= 3, f"{len(lines)} stderr lines:\n{text}"
    assert lines[0].startswith("lumos: error:"), text
    if match is not None:
        assert re.search(match, text), f"{match!r} not in:\n{text}"
    assert snapshot(*watched) == before, "files changed:\n" + _diff(before, snapshot(*watched))
    return lines[0]


def refuse_api(fn, *watched, match: str | None = None) -> str:
    """Call fn(); assert it raises a one-line LumosError and changes no file; return the message."""
    before = snapshot(*watched)
    try:
        fn()
    except LumosError as e:
        msg = str(e)
    else:
        raise AssertionError("no LumosError raised")
    assert "\n" not in msg.strip(), msg
    if match is not None:
        assert re.search(match, msg), f"{match!r} not in {msg!r}"
    assert snapshot(*watched) == before, "files changed:\n" + _diff(before, snapshot(*watched))
    return msg


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return "\n".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in keys if a.get(k) != b.get(k))


class _Bomb:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):          # what an unpickler would run
        return (open, (self.marker, "w"))


def pickle_bomb(path, marker) -> Path:
    """A file that looks like a checkpoint (a dict of "tensors") whose unpickling creates `marker`."""
    path = Path(path)
    path.write_bytes(pickle.dumps({"weight": _Bomb(marker)}, protocol=2))
    return path
