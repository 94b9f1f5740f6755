"""Small shared helpers: the user-facing error type, strict config keys, the weights check and atomic
file writes.

Every file lumos writes goes through `atomic_write` / `atomic_dir`: written to a temporary name in the
same folder, flushed, then renamed over the target, so a job killed at any moment leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import numbers
import os
import shutil
import signal
import tempfile
import threading
import typing
from pathlib import Path

import numpy as np


class LumosError(ValueError):
    """The one error family of the library: a problem with the user's input (file, flag, config,
    checkpoint, prompt). The message is one line naming the problem and what to do; `lumos.cli.main`
    prints it as `lumos: error: ...` with exit code 2. A ValueError, so code that catches ValueError
    from a config class keeps working."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): what a one-line
    LumosError quotes of a third-party error (tokenizers, TorchScript, torch.load, PyAV, Pillow)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fits(want, v) -> tuple[bool, str]:
    """Does the value `v` fit the field type `want` (bool, int, float, str, tuple[int, ...] or a class)?
    -> (ok, the type's name for an error message). Strict where a config must be: a bool is not an
    int, a float is not an int; an int is a float; numpy scalars count as their Python kind."""
    integer = isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
    if want is bool:
        return isinstance(v, (bool, np.bool_)), "bool"
    if want is int:
        return integer, "int"
    if want is float:
        return integer or isinstance(v, (float, np.floating)), "float"
    if typing.get_origin(want) is tuple:
        return isinstance(v, (list, tuple)) and all(fits(int, x)[0] for x in v), "list of int"
    if isinstance(want, type):
        return isinstance(v, want), want.__name__
    return True, str(want)


def check_keys(cls, d, what: str, where=None) -> None:
    """Strict config loading: `d` must be a dict whose keys are fields of the dataclass `cls`. A typo
    must not silently fall back to a default, so an unknown key is a LumosError naming it:
    "[{where}: ]unknown {what} keys ['lerning_rate']; known: [...]"."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    at = f"{where}: " if where else ""
    if not isinstance(d, dict):
        raise LumosError(f"{at}{what} must be a table of keys ({', '.join(known)}), got {type(d).__name__}")
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise LumosError(f"{at}unknown {what} keys {unknown}; known: {known}")


def check_weights(expected: dict, sd: dict, where, *,
                  config: str = "its config.json", kind: str = "a Lumos-1 checkpoint",
                  dtype: bool = False) -> dict:
    """One clear error for the first missing key, unexpected key, wrong shape (or, with dtype=True,
    wrong dtype) of `sd` against `expected` (a state_dict, possibly of meta tensors). Returns sd."""
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LumosError(f"{where}: missing weight {missing[0]!r}{more}; the checkpoint does not match {config}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise LumosError(f"{where}: unexpected weight {unexpected[0]!r}{more}; is this {kind}?")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise LumosError(f"{where}: weight {k!r} has shape {tuple(sd[k].shape)}, {config} expects "
                             f"{tuple(v.shape)}")
        if dtype and sd[k].dtype != v.dtype:
            raise LumosError(f"{where}: weight {k!r} has dtype {sd[k].dtype}, expected {v.dtype}")
    return sd


def check_output(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """Check, before any work, that `path` can be written: a file (folder=False) must not be an
    existing folder, a folder must not be an existing file, and the nearest existing parent must be a
    folder we can create files in (tried with a temporary file, removed at once: permission bits say
    nothing when running as root, and nothing about read-only mounts). Folders on the way that do not
    exist yet are not created here. LumosError names the path and what to do. Returns the path."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        want = "a folder" if folder else "a file name"
        raise LumosError(f"{what} {path}: is {'a file' if folder else 'a folder'}; give {want}")
    parent = path if folder and path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LumosError(f"{what} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lumos-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LumosError(f"{what} {path}: cannot write in {parent} ({e.strerror or first_line(e)}); "
                         f"choose another location") from None
    return path


def take(x, at):
    """x (B, L, ...) at positions at (B, M) -> (B, M, ...): each row its own positions."""
    return x.gather(1, at.view(*at.shape, *(1,) * (x.dim() - 2)).expand(*at.shape, *x.shape[2:]))


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a file's bytes, or of a folder: of each regular file's name and sha256, in name
    order (e.g. a tokenizer folder: its config and weights)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.is_file()):
            h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """`with atomic_write(p) as f: f.write(...)`: the file appears at `p` only when the block ends
    without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """`with atomic_dir(d) as tmp: write files into tmp`: the folder appears at `d` (replacing an
    old one) only when the block ends without an exception. A leftover `.d.tmp-*` folder from a
    killed job is never mistaken for a finished one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        # mkdtemp makes 0700 folders, and some writers (mkstemp-based) 0600 files: the usual permissions
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- worker pools
def exit_with_parent() -> None:
    """In a `multiprocessing` worker: never outlive the main process. A thread waits on the parent's
    sentinel (which closes when the parent dies, SIGKILL included) and ends the worker at once, quietly."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()

    def watch():
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _serve(conn, fn, initializer, initargs) -> None:
    """The body of a `process_map` process: receives tasks down its pipe until the parent closes it, and
    sends (True, fn(task)) or (False, the exception) back for each. An exception of `initializer` is
    the answer to every task it is given (so the parent raises it with the first)."""
    import pickle

    def packed(e):
        try:
            pickle.dumps(e)
            return e
        except Exception:                           # an exception that does not pickle: its text
            return RuntimeError(f"{type(e).__name__}: {e}")

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C is the parent's to handle: it ends the others
    exit_with_parent()                             # never outlive the parent, however it ends
    failed = None
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:                  # noqa: BLE001 - it is the parent's to raise
            failed = packed(e)
    while True:
        try:
            task = conn.recv()
        except EOFError:                            # the parent has no more for this process
            return
        if failed is not None:
            conn.send((False, failed))
            continue
        try:
            out = (True, fn(task))
        except BaseException as e:                  # noqa: BLE001
            out = (False, packed(e))
        conn.send(out)


def process_map(fn, tasks, workers: int, *, initializer=None, initargs=(), describe=str, reuse=False):
    """fn(task) for every task in spawned processes, at most `workers` at once; yields (task, result) as
    each ends. By default one process per task (long tasks: a process's memory goes back when its task
    ends); `reuse=True` keeps each process for task after task, so `initializer` (loading a tokenizer,
    say) runs once per process rather than once per task.

    Unlike a `multiprocessing.Pool`, no lock is shared between the processes (each has its own pipe), so a
    process killed at any moment (a signal to the whole process group, the OOM killer) cannot leave the
    others or this one waiting forever: a process that ends without its result raises LumosError
    ("`describe(task)`: its process died ..."), an exception of fn (or of `initializer`) is raised here
    as it was raised there. Whatever leaves this generator (^C, SIGTERM under `sigterm_interrupts`, an
    error, the caller stopping) terminates every process still running first, and a process ends with
    this one even when it is SIGKILLed (`exit_with_parent`); ^C is left to this process. fn, the tasks and
    `initializer` must pickle (spawn)."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")       # no fork of a process with torch's threads running
    queue, running, idle, procs = list(tasks), {}, [], {}   # running: our end of a pipe -> task

    def start():
        conn, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(theirs, fn, initializer, initargs), daemon=True)
        try:
            proc.start()
        finally:
            theirs.close()                           # so that ours sees EOF when the process dies
        procs[conn] = proc
        return conn

    def finish(conn):                                 # no more tasks for this process: it returns
        conn.close()
        procs[conn].join()
        del procs[conn]

    def died(conn, task, when="finished"):            # it ended without answering: killed, or os._exit
        conn.close()
        proc = procs[conn]
        proc.join()
        del procs[conn]
        code = proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return LumosError(f"{describe(task)}: its process died ({how}) before it {when}")

    try:
        while queue or running:
            # Start every process needed before handing out tasks: a task larger than a pipe's buffer
            # waits in send until its process has started and run `initializer`.
            for _ in range(min(workers - len(running), len(queue)) - len(idle)):
                idle.append(start())
            while queue and idle and len(running) < workers:
                conn, task = idle.pop(0), queue.pop(0)
                try:
                    conn.send(task)
                except OSError:                       # an idle process that was killed
                    raise died(conn, task, "started") from None
                running[conn] = task
            for conn in wait(list(running)):
                task = running.pop(conn)
                try:
                    ok, value = conn.recv()
                except (EOFError, OSError):           # EOF, or a reset: the socket died with the process
                    raise died(conn, task) from None
                if reuse and queue:
                    idle.append(conn)
                else:
                    finish(conn)
                if not ok:
                    raise value
                yield task, value
            while idle and not queue:                 # none left to hand out
                finish(idle.pop())
    finally:
        for conn, proc in procs.items():
            proc.terminate()
            conn.close()
        for proc in procs.values():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM ends the main process as ^C does (KeyboardInterrupt), through a pool's exit, which
    terminates the workers; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
