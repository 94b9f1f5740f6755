"""The package's shape, read from the source with `ast` (nothing is imported or run).

- No import circle between modules of `lumos/`, counting lazy imports inside functions too (a circle
  that only works because one side imports late is still a circle).
- The core (the modules directly in `lumos/`) never imports a job package: `lumos.train`,
  `lumos.data`, `lumos.world`, `lumos.cli`. Jobs stand on the core, never the other way round.
- No folder-level circle between the job packages either (`__main__.py` entry points excepted: they
  sit above everything and nothing imports them).

Each rule is also checked against a small made-up tree, so a bug in the reader cannot make the real
check pass vacuously.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lumos"
JOBS = ("train", "data", "world", "serve", "cli")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_imports(root: Path) -> dict[str, set[str]]:
    """module -> the lumos modules it imports (anywhere in the file), resolved to existing modules."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:                   # `lumos.x.Y` (a name in lumos.x) -> lumos.x
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in files.items():
        pkg = mod if mod in packages else mod.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                               # relative import
                    anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from lumos.x import y`: y may be a module (lumos.x.y) or a name defined in lumos.x
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for n in names:
                if n.split(".")[0] == root.name and (r := resolve(n)) and r != mod:
                    out.add(r)
        graph[mod] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def room(mod: str, top: str) -> str:
    """The folder a module lives in: 'core' for the modules directly in the package."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in JOBS + ("tokenizers",)) else "core"


def core_violations(graph: dict[str, set[str]], top: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if room(a, top) == "core"
                  for b in deps if room(b, top) in JOBS)


def room_cycles(graph: dict[str, set[str]], top: str) -> list[list[str]]:
    rooms: dict[str, set[str]] = {}
    for a, deps in graph.items():
        if a.endswith(".__main__") or room(a, top) == "core":
            continue
        for b in deps:
            if room(b, top) not in ("core", room(a, top)):
                rooms.setdefault(room(a, top), set()).add(room(b, top))
    return cycles(rooms)


# ------------------------------------------------------------------------------------- the real tree
def test_no_import_circle_in_lumos():
    graph = read_imports(ROOT)
    assert len(graph) > 20 and sum(map(len, graph.values())) > 50       # the reader found the package
    assert cycles(graph) == []


def test_core_never_imports_a_job_package():
    assert core_violations(read_imports(ROOT), ROOT.name) == []


def test_no_circle_between_job_packages():
    assert room_cycles(read_imports(ROOT), ROOT.name) == []


# ------------------------------------------------------------------------- the checks can fail
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lumos"
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize("a_imports", [
    "from lumos.b import f",                          # plain
    "def g():\n    from lumos import b\n",             # lazy, `from package import module`
    "from . import b",                                # relative
    "import lumos.b as bb",
])
def test_reader_finds_a_circle(tmp_path, a_imports):
    root = _tree(tmp_path, {"__init__.py": "", "a.py": a_imports, "b.py": "from lumos.a import x\n"})
    assert cycles(read_imports(root)) == [["lumos.a", "lumos.b"]]


def test_reader_finds_core_to_job_imports_and_job_circles(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "model.py": "def f():\n    from lumos.train.loop import train\n",
        "train/__init__.py": "", "train/loop.py": "from lumos.world.digits import x\n",
        "world/__init__.py": "", "world/digits.py": "from lumos.train import loop\n",
        "cli/__init__.py": "", "cli/__main__.py": "from lumos.world import digits\n",
    })
    graph = read_imports(root)
    assert core_violations(graph, "lumos") == ["lumos.model -> lumos.train.loop"]
    assert room_cycles(graph, "lumos") == [["train", "world"]]
    assert cycles(graph) == [["lumos.train.loop", "lumos.world.digits"]]


# ------------------------------------------------------------------------------------- the package face
def test_package_face():
    import lumos
    from lumos import LumosModel, LumosPipeline, ModelConfig, Vocab

    assert LumosPipeline.__module__ == "lumos.pipeline" and LumosModel.__module__ == "lumos.model"
    assert ModelConfig.__module__ == "lumos.config" and Vocab.__module__ == "lumos.vocab"
    assert set(lumos.__all__) <= set(dir(lumos))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lumos.Nope


def test_import_lumos_is_cheap():
    """`import lumos` (and so `lumos --help`) loads no torch: the face imports on first use."""
    import subprocess
    import sys

    code = "import sys, lumos; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
