"""Where training runs: the device, the torch.distributed process group, the data-parallel mode and
the compute dtype, plus the few collectives the trainer needs (each a no-op on one process).

    rt = setup_runtime(device="auto", parallel="auto", precision="auto")   # reads torchrun's WORLD_SIZE
    n = all_reduce_sum(torch.tensor([3.0]), rt)                           # summed over ranks
    close_runtime(rt)                                                     # destroys the group it made

Under torchrun (WORLD_SIZE > 1) the process group is nccl for CUDA tensors and gloo for CPU tensors
(the step metrics), and `parallel = "auto"` means FSDP2; on one process it means no wrapper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lumos.utils import LumosError


@dataclass
class Runtime:
    rank: int
    world: int
    device: torch.device
    parallel: str           # none | ddp | fsdp (auto resolved)
    dtype: torch.dtype      # compute dtype (bf16 via FSDP mixed precision / autocast, or fp32)
    owns_group: bool        # this process initialised the process group (and destroys it)


def setup_runtime(device: str, parallel: str, precision: str) -> Runtime:
    """Device (auto: cuda if visible), process group (under torchrun: WORLD_SIZE is set),
    data-parallel mode (auto: fsdp on several processes, else none), compute dtype (auto: bf16 on GPU).
    A process group that already exists (a test's, a caller's) is reused and left open."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise LumosError("device = 'cuda' but no CUDA device is visible")
    dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        # nccl for CUDA tensors, gloo for the few CPU tensors (step metrics) reduced on the same group
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    parallel = parallel if parallel != "auto" else ("fsdp" if world > 1 else "none")
    if parallel != "none" and not dist.is_initialized():
        raise LumosError(f"parallel = {parallel!r} needs several processes: run it with torchrun")
    bf16 = precision == "bf16" or (precision == "auto" and use_cuda)
    return Runtime(rank, world, dev, parallel, torch.bfloat16 if bf16 else torch.float32, owns)


def single_process(device: str = "cpu") -> Runtime:
    """One fp32 process without a process group (the tokenizer trainer's checkpoints)."""
    return Runtime(0, 1, torch.device(device), "none", torch.float32, False)


def close_runtime(rt: Runtime) -> None:
    """Destroy the process group if `setup_runtime` created it."""
    if rt.owns_group:
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum `x` over ranks, in place; returns it."""
    if rt.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast_object(obj, rt: Runtime):
    """Rank 0's `obj` (any picklable value) on every rank."""
    box = [obj]
    if rt.world > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()
