"""Distributed training applied from outside the model (style habit 12; torchtitan's parallelize).

The model (`lumos.model`) never imports torch.distributed. This module changes it in a fixed order:

1. activation checkpointing: each Block is wrapped so its activations are recomputed in the backward
   (`checkpoint_wrapper`, non-reentrant; the wrapper's state-dict hooks keep the HF key names);
2. compile: each Block's forward is compiled in place (`Module.compile`: the blocks repeat, so the
   cost is paid once, and no `_orig_mod.` prefix enters the state dict);
3. data parallelism, one of
   - `fsdp`: FSDP2 `fully_shard` on every Block, then on [final norm, lm_head] together, then the
     root (embeddings). The [norm, lm_head] group is not resharded after the forward: the loss
     (`lumos.train.loss`) reads `lm_head.weight` right after the forward, outside any module's forward, and
     needs it unsharded (gathered when the final norm runs); its backward comes first anyway.
     Mixed precision on GPU: bf16 parameters for compute, fp32 gradient reduction, fp32 master weights.
   - `ddp`: plain DistributedDataParallel (replicated weights; fine for the small models).
   - `none`: a single process.

Call order for FSDP: build on the meta device, `parallelize`, `to_empty(device)`, then load weights
(`lumos.train` broadcasts rank 0's initial weights, so every world size starts from the same model).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lumos.utils import LumosError

PARALLEL = ("none", "ddp", "fsdp")


def apply_ac(model: nn.Module) -> None:
    """Wrap every transformer block in non-reentrant activation checkpointing."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    layers = model.model.layers
    for i, block in enumerate(layers):
        # preserve_rng_state=False: the blocks draw no random numbers (no dropout).
        layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=False)


def apply_compile(model: nn.Module) -> None:
    """Compile each block's forward in place (shapes vary with the padded length: dynamic=None lets
    dynamo mark the sequence dimension dynamic after the first recompile)."""
    for block in model.model.layers:
        block.compile()


def apply_fsdp(model: nn.Module, param_dtype: torch.dtype | None = None,
               reduce_dtype: torch.dtype = torch.float32) -> None:
    """FSDP2: shard every block, then [norm, lm_head] (kept unsharded between forward and backward),
    then the root. `param_dtype=None` keeps the parameters' own dtype (CPU tests run fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype) if param_dtype else None
    mp = mp or MixedPrecisionPolicy()  # fp32: no casts
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard([model.model.norm, model.lm_head], mp_policy=mp, reshard_after_forward=False)
    fully_shard(model, mp_policy=mp)


def parallelize(model: nn.Module, parallel: str, *, ac: bool = False, compile: bool = False,
                param_dtype: torch.dtype | None = None, device: torch.device | None = None) -> nn.Module:
    """Apply AC -> compile -> data parallelism in that order; returns the module to call (the DDP
    wrapper for `ddp`, the model itself otherwise). For `fsdp` the model may be on the meta device;
    for `ddp` it must already hold its weights (DDP broadcasts rank 0's at construction)."""
    if parallel not in PARALLEL:
        raise LumosError(f"parallel {parallel!r} is not one of {PARALLEL}")
    if ac:
        apply_ac(model)
    if compile:
        apply_compile(model)
    if parallel == "fsdp":
        apply_fsdp(model, param_dtype=param_dtype)
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device is not None and device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model
