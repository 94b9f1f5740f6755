"""Train a Lumos model: discrete diffusion inside each frame, AR-DF tube masking across frames.

Runbook:

    lumos train configs/tiny.toml                          # one process: CPU, or one GPU
    lumos train configs/tiny.toml --resume                 # continue from the newest checkpoint that loads
    lumos train configs/tiny.toml --restart                # start over, replacing the run in out_dir
    lumos train configs/tiny.toml --set lr=3e-4 --set batch.max_frames=2 --set 'out_dir="runs/x"'
    torchrun --nproc-per-node 2 -m lumos.train configs/tiny.toml            # FSDP2 over 2 processes
    torchrun --nproc-per-node 8 -m lumos.train configs/lumos1-finetune.toml --resume

Python: `train(TrainConfig.from_toml("configs/tiny.toml"))` returns the steps' metrics.
`python -m lumos.train CONFIG` is the same command as `lumos train CONFIG` (torchrun needs a module).
With torchrun, `parallel = "auto"` means FSDP2 (`lumos.train.parallelize`), gloo on CPU, nccl on GPU.
`batch_size` is the *global* batch: the same config gives the same samples, the same masks and
(up to float summation order) the same losses on 1 or N processes, with or without accumulation.

What one step does (`train_step`, read it top to bottom):
    lr = cfg.lr_at(step)                                # pure function of the step (lumos.train.lr)
    for each micro-batch of this rank:                  # lumos.train.batches: records -> masked tensors
        hidden = model(inputs, mask=frame-causal mask)  # final hidden states [B, L, D]
        loss = masked_visual_loss(hidden, lm_head)      # lumos.train.loss: visual rows, masked positions, chunked
        loss.backward()                                 # normalised by the global target count
    clip grad norm; AdamW step
and after it `train` logs and, every `checkpoint_every` steps, checkpoints.

Outputs in `out_dir`, written from the end of the first step on (a run that fails before leaves nothing):
    train_config.json              the config of the run
    metrics.jsonl, tb/             one line / scalars per step: loss, per-frame loss, lr, grad norm, tokens/s
    checkpoints/step-000100/       atomic, with a manifest (lumos.train.checkpoints); model/ is a pipeline
                                   folder (weights, tokenizers, pipeline.json, model card: lumos.train.outputs)
    latest.json                    the newest complete checkpoint: `lumos generate --model out_dir` uses it

Crashes: a run killed at any moment resumes with --resume, bit for bit. A checkpoint that does not
load (damaged manifest, optimizer or RNG file) is reported and the one before it is used; leftovers of
a killed save or prune are removed at the next start. A run never starts over silently on a folder
that holds one: without a checkpoint to continue from, that needs --restart.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch

from lumos.train.batches import Batcher
from lumos.train.build import build_model, load_weights, open_data, save_weights
from lumos.train.checkpoints import (changed_settings, has_history, read_state, reset_checkpoints,
                                    resume_checkpoint, save_checkpoint)
from lumos.train.config import TrainConfig
from lumos.train.log import Logger
from lumos.train.outputs import LATEST, RunPipeline, write_latest
from lumos.train.loss import masked_visual_loss
from lumos.train.runtime import Runtime, all_reduce_sum, close_runtime, setup_runtime
from lumos.utils import LumosError, atomic_write_json, check_output


def train(cfg: TrainConfig, resume: bool = False, restart: bool = False) -> list[dict]:
    """Run (or resume) training; returns the metrics of the steps run by this call (this rank's copy:
    the numbers are global). `restart`: start over at step 0 even though out_dir holds a run (its
    checkpoints are deleted and its metrics rewritten when the first step is done); with `resume`,
    only if no checkpoint of it loads."""
    rt = setup_runtime(cfg.device, cfg.parallel, cfg.precision)
    torch.manual_seed(cfg.seed)  # nothing below draws from the global RNG; this only pins it
    out = check_output(cfg.out_dir, "out_dir", folder=True)
    ckpt_root = out / "checkpoints"

    # 1. data and model (nothing is written into out_dir before the first step is done)
    source, mcfg = open_data(cfg)
    run_pipeline = RunPipeline.plan(cfg, source, mcfg)     # a checkpoint is a pipeline folder (lumos.train.outputs)
    micro_bs = cfg.micro_batch_size or cfg.batch_size // rt.world
    if micro_bs < 1 or cfg.batch_size % (micro_bs * rt.world):
        raise LumosError(f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size {micro_bs} x "
                         f"{rt.world} processes")
    batcher = Batcher(source, mcfg.vocab, cfg.batch, seed=cfg.seed, max_seq_len=mcfg.max_seq_len)
    model, core = build_model(cfg, mcfg, rt)
    # AdamW on every parameter with one weight decay, as released (no parameter groups).
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)

    # 2. resume: the newest checkpoint that loads; the data position is the step itself
    start = _resume(out, ckpt_root, model, core, optimizer, cfg, rt, resume, restart)
    logger = Logger(out, start, cfg.max_steps, cfg.tensorboard, on=rt.rank == 0)
    history = []

    # 3. the loop: a step, its log line, a checkpoint every checkpoint_every steps and at the end
    for step in range(start, cfg.max_steps):
        rec = train_step(step, model, core, optimizer, batcher, micro_bs, cfg, rt)
        if step == start and rt.rank == 0:
            _begin(out, ckpt_root, cfg, fresh=start == 0)
        logger.log(rec)
        history.append(rec)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            meta = {"samples_seen": (step + 1) * cfg.batch_size, "lr_next": cfg.lr_at(step + 1),
                    "train_config": cfg.to_dict(), "model_config": mcfg.to_dict()}

            def save_model(folder: Path, step=step + 1, meta=meta):
                save_weights(folder, model, core, rt)
                if rt.rank == 0:
                    run_pipeline.write(folder, step, meta, cfg.out_dir)

            ckpt = save_checkpoint(ckpt_root, step + 1, model, optimizer, rt, meta=meta, keep=cfg.keep_checkpoints,
                                   save_weights=save_model)
            if rt.rank == 0:
                write_latest(out, ckpt, step + 1)

    logger.close()
    close_runtime(rt)
    return history


def _resume(out: Path, ckpt_root: Path, model, core, optimizer, cfg: TrainConfig, rt: Runtime, resume: bool,
            restart: bool) -> int:
    """The step to start at: that of the newest checkpoint that loads (with `resume`), else 0. Never
    starts over silently on a run folder that holds a run (metrics or checkpoints): that needs
    `restart`."""
    start, path, problem = 0, None, None
    if resume:
        start, path, problem = resume_checkpoint(ckpt_root, model, optimizer, rt,
                                                 load_weights=lambda f: load_weights(f, core))
    if path is not None:
        _warn_changed(path, cfg, rt)
        return start
    held = has_history(out, ckpt_root)
    if held and not restart and not resume:
        raise LumosError(f"{out} already holds a run ({held}); pass --resume to continue it, or --restart "
                         f"to start over at step 0")
    why = f"the newest does not load: {problem}" if problem else "there is none"
    if held and not restart:
        raise LumosError(f"--resume: no checkpoint under {ckpt_root} to continue from ({why}); pass --restart to "
                         f"start over at step 0 (replacing the run's checkpoints and metrics)")
    if resume and rt.rank == 0:
        print(f"lumos train: no checkpoint under {ckpt_root} to continue from ({why}); starting at step 0",
              file=sys.stderr)
    return 0


def _begin(out: Path, ckpt_root: Path, cfg: TrainConfig, fresh: bool) -> None:
    """Rank 0, once the first step is done: the run's config; leftovers of killed jobs removed; on a
    fresh start (allowed over an old run only with restart), the old checkpoints deleted."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_config.json", "metrics.jsonl", LATEST):     # atomic_write's temporary files of a killed job
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    atomic_write_json(out / "train_config.json", cfg.to_dict())
    if fresh:                                              # the old run's pointer goes with its checkpoints
        (out / LATEST).unlink(missing_ok=True)
    reset_checkpoints(ckpt_root, fresh)


def train_step(step: int, model, core, optimizer, batcher: Batcher, micro_bs: int, cfg: TrainConfig,
               rt: Runtime) -> dict:
    """One optimizer step (0-based `step`) over this rank's micro-batches; returns its metrics.jsonl
    record (global numbers: summed over micro-batches and ranks)."""
    t0 = time.perf_counter()
    lr = cfg.lr_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    host = batcher.step_batches(step, cfg.batch_size, micro_bs, rt.rank, rt.world)
    counts = [(b.num_targets, b.num_tokens) for b in host]      # counted on the host, before the copy
    micro = [b.to(rt.device) for b in host]
    # Each micro-batch's loss is divided by the target count of the whole global batch (times the
    # world size, which DDP/FSDP divide by again when they average gradients): the sum of all
    # backward passes is then the gradient of the token-mean loss of the global batch.
    n_global = all_reduce_sum(torch.tensor([float(sum(t for t, _ in counts))]), rt).item()
    # see _sums; kept on the device and copied once per step below (the loss's nonzero() still syncs)
    sums = torch.zeros(3 + 2 * cfg.batch.max_frames, dtype=torch.float64, device=rt.device)
    for i, b in enumerate(micro):
        with _no_sync(model, rt, last=i == len(micro) - 1):
            with _autocast(rt):
                mask = core.build_mask(b.inputs, b.valid)                       # frame-causal, no padding keys
                hidden = model(b.inputs, mask=mask, return_hidden=True)          # (B, L, D)
            # The loss reads lm_head itself (visual rows only), outside autocast: fp32 softmax.
            out = masked_visual_loss(hidden, core.lm_head.weight, b.targets, b.frame, batcher.vocab,
                                     chunk=cfg.loss_chunk, z_loss_weight=cfg.z_loss_weight,
                                     normaliser=max(n_global, 1.0) / rt.world, num_frames=cfg.batch.max_frames)
            out.loss.backward()
        sums += _sums(out, counts[i][1])
    grad_norm = _clip(model, cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return _record(step + 1, all_reduce_sum(sums, rt).cpu(), n_global, lr, grad_norm, time.perf_counter() - t0, cfg)


def _warn_changed(path: Path, cfg: TrainConfig, rt: Runtime) -> None:
    """Resuming with other settings is allowed (e.g. more max_steps) but no longer reproduces the
    original run: say which keys changed (a key newer than the checkpoint, left empty, is no change)."""
    saved, now = read_state(path)["train_config"], cfg.to_dict()
    changed = [k for k in changed_settings(saved, now) if k != "out_dir" and (k in saved or now[k])]
    if changed and rt.rank == 0:
        print(f"lumos train: resuming {path.name} with changed settings: {', '.join(changed)}", file=sys.stderr)


def _sums(out, num_tokens: int) -> torch.Tensor:
    """This micro-batch's additive statistics, float64 [3 + 2F]: summed CE, summed lse^2, tokens,
    then the summed CE per latent frame [F] and the target count per latent frame [F]."""
    head = torch.stack([out.nll_sum.double(), out.z_sum.double(), torch.zeros_like(out.nll_sum, dtype=torch.float64)])
    head[2] += num_tokens    # a kernel with a scalar argument: no host-to-device copy
    return torch.cat([head, out.frame_nll.double(), out.frame_count.double()])


def _record(step: int, sums: torch.Tensor, n_targets: float, lr: float, grad_norm: float, seconds: float,
            cfg: TrainConfig) -> dict:
    """One metrics.jsonl line from the step's global sums (`_sums`, reduced over micro-batches and ranks)."""
    F, n = cfg.batch.max_frames, max(n_targets, 1.0)
    frame_nll, frame_n = sums[3:3 + F].tolist(), sums[3 + F:].tolist()
    rec = {"step": step, "loss": sums[0].item() / n, "lr": lr, "grad_norm": grad_norm,
           "tokens": int(sums[2].item()), "targets": int(n_targets), "tokens_per_s": sums[2].item() / seconds,
           # the paper's frame-wise diagnostic; None for a frame index no sample of the step reached
           "frame_loss": [s / c if c > 0 else None for s, c in zip(frame_nll, frame_n)]}
    if cfg.z_loss_weight:
        rec["z_loss"] = sums[1].item() / n
    return rec


def _autocast(rt: Runtime):
    """bf16 autocast for single-process / DDP runs on GPU (FSDP casts through its mixed-precision
    policy instead); nothing in fp32."""
    if rt.dtype == torch.float32 or rt.parallel == "fsdp":
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.dtype)


def _no_sync(model, rt: Runtime, last: bool):
    """DDP: skip the gradient all-reduce on all but the last micro-batch. (FSDP reduce-scatters every
    micro-batch into the sharded gradients: more communication, but no unsharded gradient memory.)"""
    if rt.parallel == "ddp" and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def _clip(model, max_norm: float) -> float:
    """Clip the global gradient norm (DTensor-aware under FSDP); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
