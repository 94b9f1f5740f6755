"""Training checkpoints, one format for both trainers (`lumos train`, `lumos train-tokenizer`).

    clean_checkpoints(out / "checkpoints")                  # rank 0, at start: leftovers of killed jobs
    step, path = resume_checkpoint(out / "checkpoints", model, optimizer, rt, load_weights=...)
    save_checkpoint(out / "checkpoints", step, model, optimizer, rt, save_weights=..., meta={...}, keep=3)
    found = list_checkpoints(out / "checkpoints")           # [(step, folder)], complete ones, oldest first
    state = read_state(found[-1][1])                        # the manifest: step, train_config, ...

One folder per checkpoint, `checkpoints/step-000100/`:
    train_state.json     format, step, world size, parallel mode, the trainer's `meta` (its config, ...)
                         and a manifest of every file with its size; written last
    model/               the weights in the model's own format (`save_weights`), e.g. the HF format
                         of `LumosModel.from_pretrained(".../model")`, or the tokenizer's vq.safetensors
    optimizer.pt         the optimizer's state_dict (one process / DDP), read with weights_only=True
    dcp/                 sharded model + optimizer state (FSDP, torch.distributed.checkpoint)
    rng-00000.pt ...     each rank's torch (and CUDA) RNG state, read with weights_only=True

Crash safety. A checkpoint is written under a temporary name (`.step-000100.tmp-*`) and renamed when
complete; pruning renames a checkpoint out of the listed names (`.step-000100.deleting-*`) before
deleting it. So a job killed at any moment leaves complete checkpoints under `step-NNNNNN` names and
dot-named leftovers, which `clean_checkpoints` removes at the next start.

Resuming (`resume_checkpoint`) takes the newest checkpoint that loads: one whose manifest is
unreadable or does not match its files, or whose optimizer / RNG / weight file does not load, is
reported in one line and the one before it is tried. Nothing of a checkpoint is applied to the model
or optimizer unless all of it loads. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch

from lumos.train.runtime import Runtime, all_reduce_sum, barrier, broadcast_object
from lumos.utils import LumosError, atomic_dir, atomic_write

CKPT_RE = re.compile(r"^step-(\d{6,})$")
# leftovers of killed jobs: atomic_dir's temporary and replaced folders, and checkpoints being pruned
LEFTOVER_RE = re.compile(r"^\.step-\d{6,}\.(tmp|old|deleting)-")
STATE = "train_state.json"


class DamagedCheckpoint(LumosError):
    """A checkpoint folder whose manifest or files do not load; the message names the file."""


# ---------------------------------------------------------------------------------------------- listing
def step_folders(root: Path) -> list[tuple[int, Path]]:
    """Every folder named step-NNNNNN under `root`, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CKPT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def check_manifest(path: Path) -> dict:
    """The manifest of the checkpoint folder `path`, after checking that it is readable and that the
    files it lists are there with their sizes; DamagedCheckpoint otherwise."""
    try:
        state = read_state(path)
        files, step = state["files"], int(state["step"])
        problem = None if isinstance(files, dict) and "parallel" in state else "not a checkpoint manifest"
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path / STATE}: missing (the save did not finish)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedCheckpoint(f"{path / STATE}: unreadable ({type(e).__name__})") from None
    if problem is None and step != int(CKPT_RE.match(path.name).group(1)):
        problem = f"says step {step}"
    if problem:
        raise DamagedCheckpoint(f"{path / STATE}: {problem}")
    for f, n in files.items():
        p = path / f
        if not p.is_file() or p.stat().st_size != n:
            raise DamagedCheckpoint(f"{p}: {'missing' if not p.is_file() else 'size differs from the manifest'}")
    return state


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first. Complete = named step-NNNNNN (temporary
    `.step-*.tmp-*` folders never are), with a readable train_state.json whose file manifest
    matches the files on disk (sizes). Anything else is skipped."""
    found = []
    for step, p in step_folders(root):
        try:
            check_manifest(p)
        except DamagedCheckpoint:
            continue
        found.append((step, p))
    return found


def read_state(path: Path) -> dict:
    """The manifest (train_state.json) of the checkpoint folder `path`."""
    return json.loads((path / STATE).read_text())


def changed_settings(saved: dict, config: dict) -> list[str]:
    """Top-level keys of `config` (a config's `to_dict()`) whose value differs from `saved` (the
    `train_config` of a checkpoint's manifest), compared as JSON: tuples and lists are the same."""
    now = json.loads(json.dumps(config))
    return sorted(k for k, v in now.items() if saved.get(k) != v)


# ---------------------------------------------------------------------------------------------- housekeeping
def remove_folder(path: Path) -> None:
    """Delete a checkpoint folder so that a kill midway leaves no half-deleted `step-NNNNNN`: it is
    renamed out of the listed names first (`.step-NNNNNN.deleting-PID`), then deleted."""
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def clean_checkpoints(root: Path) -> None:
    """Remove the leftovers of killed jobs under `root` (rank 0, at start, before any save): temporary
    and replaced checkpoint folders, and checkpoints being pruned."""
    for p in root.iterdir() if root.is_dir() else ():
        if LEFTOVER_RE.match(p.name):
            shutil.rmtree(p, ignore_errors=True)


def reset_checkpoints(root: Path, fresh: bool) -> None:
    """At a run's start (rank 0): `clean_checkpoints`, and on a fresh start (over an old run only with
    --restart) every old checkpoint removed too, each renamed out of the listed names first."""
    clean_checkpoints(root)
    for _, old in step_folders(root) if fresh else ():
        remove_folder(old)


def has_history(out: Path, root: Path) -> str | None:
    """What in the run folder `out` a fresh start would overwrite (a metrics.jsonl with lines, or
    checkpoint folders under `root`), as words for a message; None if nothing."""
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        return str(metrics)
    found = step_folders(root)
    return f"{root} ({found[-1][1].name})" if found else None


# ---------------------------------------------------------------------------------------------- saving
def save_checkpoint(root: Path, step: int, model, optimizer, rt: Runtime, *, save_weights: Callable[[Path], None],
                    meta: dict, keep: int) -> Path:
    """Write `root/step-NNNNNN` atomically, prune all but the newest `keep`; returns the folder.

    Every rank calls this. `save_weights(folder)` runs on every rank (it may gather FSDP shards) and
    writes the weights on rank 0. Every rank writes into rank 0's temporary folder; rank 0 writes the
    manifest last and renames the folder."""
    final = root / f"step-{step:06d}"
    if rt.rank == 0:
        with atomic_dir(final) as tmp:
            broadcast_object(str(tmp), rt)
            _write_parts(tmp, model, optimizer, rt, save_weights)
            barrier(rt)                                               # every rank's files are in
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            state = {"format": "lumos-train-checkpoint", "version": 1, "step": step, **meta,
                     "world_size": rt.world, "parallel": rt.parallel, "files": files}
            (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")   # last: marks the folder complete
        prune(root, step, keep)
    else:
        _write_parts(Path(broadcast_object(None, rt)), model, optimizer, rt, save_weights)
        barrier(rt)
    barrier(rt)                                                       # the rename is visible to all
    return final


def prune(root: Path, step: int, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints up to `step`; delete every checkpoint folder
    (complete or damaged) older than those. Folders after `step` (a resumed run's damaged or
    abandoned future) are left: the run overwrites them when it gets there."""
    kept = [s for s, _ in list_checkpoints(root) if s <= step][-keep:]
    for s, p in step_folders(root):
        if kept and s < kept[0]:
            remove_folder(p)


def _write_parts(tmp: Path, model, optimizer, rt: Runtime, save_weights: Callable[[Path], None]) -> None:
    save_weights(tmp / "model")
    if rt.parallel == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(tmp / "dcp"))
    elif rt.rank == 0:  # one process / DDP: every rank holds the same optimizer state
        with atomic_write(tmp / "optimizer.pt") as f:
            torch.save(optimizer.state_dict(), f)
    rng = {"torch": torch.get_rng_state()}
    if rt.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(rt.device)
    with atomic_write(tmp / f"rng-{rt.rank:05d}.pt") as f:
        torch.save(rng, f)


# ---------------------------------------------------------------------------------------------- loading
def _torch_file(path: Path, what: str, map_location=None):
    """torch.load(weights_only=True) of a checkpoint file; DamagedCheckpoint naming it otherwise
    (torch's own message is not quoted: it suggests turning weights_only off)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path}: missing") from None
    except pickle.UnpicklingError:   # garbage, or objects other than tensors: refused, nothing run
        why = "not a file of plain tensors; refused without unpickling it"
    except EOFError:
        why = "empty or cut short"
    except Exception:   # noqa: BLE001 - torch raises RuntimeError/OSError/... for a file that is not one of its own
        why = "not a torch file, or cut short"
    raise DamagedCheckpoint(f"{path}: cannot load the {what} ({why})")


def read_checkpoint(path: Path, rt: Runtime) -> tuple[dict, dict | None, dict | None]:
    """Read what this rank needs of the checkpoint `path` without applying anything: (manifest, RNG
    state or None, optimizer state_dict or None under FSDP). DamagedCheckpoint names a file that
    does not load."""
    state = check_manifest(path)
    if (state["parallel"] == "fsdp") != (rt.parallel == "fsdp"):
        raise LumosError(f"{path}: written with parallel={state['parallel']!r}, resuming with {rt.parallel!r}; "
                         f"resume with the same mode, or start a new run with init_from = '{path / 'model'}'")
    rng_file = path / f"rng-{rt.rank:05d}.pt"
    rng = None
    if rng_file.is_file():          # resuming on more ranks than were saved: those keep their own state
        rng = _torch_file(rng_file, "RNG state")
        if not (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
                and rng["torch"].dtype == torch.uint8):
            raise DamagedCheckpoint(f"{rng_file}: not an RNG state")
    osd = None if rt.parallel == "fsdp" else _torch_file(path / "optimizer.pt", "optimizer state", rt.device)
    return state, rng, osd


def apply_checkpoint(path: Path, parts: tuple, model, optimizer, rt: Runtime, *,
                     load_weights: Callable[[Path], None]) -> int:
    """Load what `read_checkpoint` read (and the weights) into the model and optimizer; returns the
    step. `load_weights(folder)` checks and loads the model/ folder, raising LumosError before
    changing anything (not called under FSDP: the sharded dcp/ state holds the weights). On
    DamagedCheckpoint nothing has been changed (one process / DDP)."""
    state, rng, osd = parts
    if rt.parallel == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, fsd = get_state_dict(model, optimizer)
        dcp.load({"model": msd, "optimizer": fsd}, checkpoint_id=str(path / "dcp"))
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=fsd)
    else:
        fresh = optimizer.state_dict()
        try:    # checks the parameter groups before changing anything
            optimizer.load_state_dict(osd)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise DamagedCheckpoint(f"{path / 'optimizer.pt'}: not the optimizer state of this model") from None
        try:
            load_weights(path / "model")
        except LumosError as e:
            optimizer.load_state_dict(fresh)
            raise DamagedCheckpoint(str(e)) from None
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and rt.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], rt.device)
    return int(state["step"])


def _together(fn: Callable, path: Path, rt: Runtime):
    """fn() on every rank; DamagedCheckpoint on every rank if it failed on any (all ranks must take
    the same checkpoint, and none may enter a collective load that another skips)."""
    try:
        out, err = fn(), None
    except DamagedCheckpoint as e:
        out, err = None, e
    if all_reduce_sum(torch.tensor([float(err is not None)]), rt).item():
        raise err or DamagedCheckpoint(f"{path}: another rank could not load its part")
    return out


def resume_checkpoint(root: Path, model, optimizer, rt: Runtime, *, load_weights: Callable[[Path], None],
                      who: str = "lumos train") -> tuple[int, Path | None, DamagedCheckpoint | None]:
    """Load the newest checkpoint under `root` that loads -> (its step, its folder, None); each newer,
    damaged one is reported on rank 0 in one line (`who: ...`). If none loads: (0, None, the problem
    of the newest one, or None when there are no checkpoint folders), nothing reported: the caller
    decides whether starting over is allowed. Every rank calls this and takes the same checkpoint."""
    damaged = []
    for _, path in reversed(step_folders(root)):
        try:
            parts = _together(lambda: read_checkpoint(path, rt), path, rt)
            step = _together(lambda: apply_checkpoint(path, parts, model, optimizer, rt, load_weights=load_weights),
                             path, rt)
        except DamagedCheckpoint as e:
            damaged.append((path, e))
            continue
        for bad, e in damaged if rt.rank == 0 else ():
            print(f"{who}: checkpoint {bad.name} is damaged ({e}); resuming from {path.name}", file=sys.stderr)
        return step, path, None
    return 0, None, damaged[0][1] if damaged else None
