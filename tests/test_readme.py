"""The README runs as written.

- Every ```python block runs, in a fresh process in an empty folder, on the CPU (they use the built-in
  model; the Hub examples are comments).
- Every `lumos ...` command of a ```bash block (continued lines joined) is accepted by the command
  line as written: the subcommand exists and every flag parses (`lumos.cli.parse`; nothing runs).
  Commands under `torchrun ... -m lumos.cli` / `-m lumos.train` are checked the same way.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lumos.cli import parse

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(README.read_text()) if k == kind]


def commands() -> list[list[str]]:
    """The argv of every `lumos` command in the README's bash blocks."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if not line:
                continue
            words = shlex.split(line)
            if words[0] == "lumos":
                out.append(words[1:])
            elif words[0] == "torchrun" and "-m" in words:
                module, rest = words[words.index("-m") + 1], words[words.index("-m") + 2:]
                if module == "lumos.cli":
                    out.append(rest)
                elif module == "lumos.train":
                    out.append(["train", *rest])
    return out


def test_readme_has_what_this_test_reads():
    assert len(blocks("python")) >= 3 and len(commands()) >= 15


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_python_block_runs(tmp_path, i):
    code = "import torch\ntorch.set_num_threads(1)\n" + blocks("python")[i]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README python block {i} failed:\n{blocks('python')[i]}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a)[:60])
def test_bash_command_parses(argv):
    try:
        args, module, _ = parse(argv)
    except SystemExit as e:               # argparse refused a flag: one line on stderr, code 2
        pytest.fail(f"`lumos {' '.join(argv)}` is not accepted (exit {e.code})")
    assert module is not None and hasattr(module, "run")
