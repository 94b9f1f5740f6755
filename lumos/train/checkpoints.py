"""Training checkpoints, one format for both trainers (`lumos train`, `lumos train-tokenizer`).

    save_checkpoint(out / "checkpoints", step, model, optimizer, rt, save_weights=..., meta={...}, keep=3)
    found = list_checkpoints(out / "checkpoints")           # [(step, folder)], complete ones, oldest first
    state = read_state(found[-1][1])                        # the manifest: step, train_config, ...
    step = load_checkpoint(found[-1][1], model, optimizer, rt, load_weights=...)

One folder per checkpoint, `checkpoints/step-000100/`:
    train_state.json     format, step, world size, parallel mode, the trainer's `meta` (its config, ...)
                         and a manifest of every file with its size; written last
    model/               the weights in the model's own format (`save_weights`), e.g. the HF format
                         of `LumosModel.from_pretrained(".../model")`, or the tokenizer's vq.safetensors
    optimizer.pt         the optimizer's state_dict (one process / DDP), read with weights_only=True
    dcp/                 sharded model + optimizer state (FSDP, torch.distributed.checkpoint)
    rng-00000.pt ...     each rank's torch (and CUDA) RNG state, read with weights_only=True
The folder is written under a temporary name and renamed when complete, so a job killed mid-save
leaves the previous checkpoint as the newest complete one; a folder whose manifest does not match its
files is never listed. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import torch

from lumos.train.runtime import Runtime, barrier, broadcast_object
from lumos.utils import LumosError, atomic_dir, atomic_write

CKPT_RE = re.compile(r"^step-(\d{6,})$")
STATE = "train_state.json"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first. Complete = named step-NNNNNN (temporary
    `.step-*.tmp-*` folders never are), with a readable train_state.json whose file manifest
    matches the files on disk (sizes). Anything else is skipped."""
    found = []
    if not root.is_dir():
        return found
    for p in root.iterdir():
        m = CKPT_RE.match(p.name)
        if not (m and p.is_dir() and (p / STATE).is_file()):
            continue
        try:
            files = read_state(p)["files"]
        except (ValueError, KeyError, OSError):
            continue
        if all((p / f).is_file() and (p / f).stat().st_size == n for f, n in files.items()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_state(path: Path) -> dict:
    """The manifest (train_state.json) of the checkpoint folder `path`."""
    return json.loads((path / STATE).read_text())


def changed_settings(saved: dict, config: dict) -> list[str]:
    """Top-level keys of `config` (a config's `to_dict()`) whose value differs from `saved` (the
    `train_config` of a checkpoint's manifest), compared as JSON: tuples and lists are the same."""
    now = json.loads(json.dumps(config))
    return sorted(k for k, v in now.items() if saved.get(k) != v)


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
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    else:
        _write_parts(Path(broadcast_object(None, rt)), model, optimizer, rt, save_weights)
        barrier(rt)
    barrier(rt)                                                       # the rename is visible to all
    return final


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


def load_checkpoint(path: Path, model, optimizer, rt: Runtime, *, load_weights: Callable[[Path], None]) -> int:
    """Restore weights, optimizer and this rank's RNG state from the complete checkpoint `path`;
    returns its step. `load_weights(folder)` reads the model/ folder (not called under FSDP: the
    sharded dcp/ state holds the weights)."""
    state = read_state(path)
    if (state["parallel"] == "fsdp") != (rt.parallel == "fsdp"):
        raise LumosError(f"{path}: written with parallel={state['parallel']!r}, resuming with {rt.parallel!r}; "
                         f"resume with the same mode, or start a new run with init_from = '{path / 'model'}'")
    if rt.parallel == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        dcp.load({"model": msd, "optimizer": osd}, checkpoint_id=str(path / "dcp"))
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd)
    else:
        load_weights(path / "model")
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=rt.device, weights_only=True))
    rng_file = path / f"rng-{rt.rank:05d}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and rt.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], rt.device)
    return int(state["step"])
