"""Child processes read from Linux /proc, for the tests that kill a parent or a worker and then check
what is left running."""

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), None if it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as dead)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX"


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`, oldest first."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            fields = _stat(int(p.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in "ZX":
                found.append((int(fields[19]), int(p.name)))       # (start time in ticks, pid)
    return [pid for _, pid in sorted(found)]


def spawned(pid: int) -> list[int]:
    """Live children of `pid` that run a `multiprocessing` spawn worker (not its resource tracker),
    oldest first."""
    found = []
    for kid in children(pid):
        try:
            if b"spawn_main" in (Path("/proc") / str(kid) / "cmdline").read_bytes():
                found.append(kid)
        except OSError:
            continue
    return found
