"""Train a Lumos model: discrete diffusion inside each frame, AR-DF tube masking across frames.

Runbook:

    lumos train configs/tiny.toml                          # one process: CPU, or one GPU
    lumos train configs/tiny.toml --resume                 # continue from the newest complete checkpoint
    lumos train configs/tiny.toml --set lr=3e-4 --set max_steps=50 --set 'out_dir="runs/x"'
    torchrun --nproc-per-node 2 -m lumos.train configs/tiny.toml            # FSDP2 over 2 processes
    torchrun --nproc-per-node 8 -m lumos.train configs/lumos1-finetune.toml --resume

`python -m lumos.train CONFIG` is the same command as `lumos train CONFIG` (torchrun needs a module).
With torchrun, `parallel = "auto"` means FSDP2 (`lumos.parallelize`), gloo on CPU, nccl on GPU.
`batch_size` is the *global* batch: the same config gives the same samples, the same masks and
(up to float summation order) the same losses on 1 or N processes, with or without accumulation.

What one step does (`train`, read it top to bottom):
    lr = get_lr(step)                                   # pure function of the step
    for each micro-batch of this rank:                  # lumos.batches: records -> masked tensors
        hidden = model(inputs, mask=frame-causal mask)  # final hidden states [B, L, D]
        loss = masked_visual_loss(hidden, lm_head)      # lumos.loss: visual rows, masked positions, chunked
        loss.backward()                                 # normalised by the global target count
    clip grad norm; AdamW step; log; checkpoint every `checkpoint_every` steps

Outputs in `out_dir`:
    metrics.jsonl                  one JSON line per step: loss, per-frame loss, lr, grad norm, tokens/s
    tb/                            the same scalars for TensorBoard (`tensorboard = true`)
    checkpoints/step-000100/       train_state.json (step, configs, file manifest; written last)
        model/                     the weights in the HF format: LumosModel.from_pretrained(".../model")
        optimizer.pt               AdamW state (single process / DDP), read with weights_only=True
        dcp/                       sharded model + optimizer state (FSDP, torch.distributed.checkpoint)
        rng-00000.pt ...           each rank's torch RNG state
A checkpoint folder is written under a temporary name and renamed when complete; `--resume` takes
the newest folder whose manifest matches its files, so a run killed mid-save resumes from the
previous one. Only the last `keep_checkpoints` are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from lumos.train.batches import WINDOWS, BatchOptions, Batcher, SyntheticVideos, open_source
from lumos.config import ModelConfig
from lumos.train.loss import masked_visual_loss
from lumos.train.masking import MODES, SCHEDULES
from lumos.train.parallelize import PARALLEL, parallelize
from lumos.utils import LumosError, atomic_dir, atomic_write, atomic_write_json, check_keys

CKPT_RE = re.compile(r"^step-(\d{6,})$")
STATE = "train_state.json"


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    # model
    model: str = "tiny"                # preset in lumos.config.CONFIGS (shapes)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields to change, e.g. {n_layers = 4}
    init_from: str = ""                # a save_pretrained folder to start from (fine-tuning); "" = random init
    # data
    data: list = field(default_factory=list)       # record folders (`lumos tokenize`); several = mixed (joint)
    synthetic: dict = field(default_factory=dict)  # SyntheticVideos arguments, used when `data` is empty
    max_frames: int = 7                # latent frames per video (reference: the first 7)
    frame_window: str = "first"        # first | random (which max_frames of a longer video)
    # objective (lumos.masking, lumos.loss)
    mask_mode: str = "tube"            # tube (AR-DF) | random | per_frame
    mask_schedule: str = "cosine"      # cosine | linear
    min_mask_rate: float = 0.7         # floor of the mask ratio (released: 0.7)
    cfg_drop_prob: float = 0.1         # P(drop the prompt) per sample, for classifier-free guidance
    z_loss_weight: float = 0.0         # weight of mean(logsumexp^2) (released: 0)
    loss_chunk: int = 1024             # target positions per logits chunk of the loss
    # optimisation
    max_steps: int = 1000              # optimizer steps
    batch_size: int = 8                # GLOBAL samples per optimizer step (all ranks, all micro-steps)
    micro_batch_size: int = 0          # samples per rank per forward; 0 = batch_size / world (no accumulation)
    lr: float = 1e-3                   # peak learning rate (released fine-tuning: 2.5e-5)
    min_lr: float = 1e-4               # end of the cosine decay
    lr_schedule: str = "cosine"        # cosine | constant (after warmup)
    warmup_steps: int = 100            # linear warmup from lr / warmup_steps
    weight_decay: float = 0.1          # AdamW, on every parameter (the reference has no param groups)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 4.0             # max global grad norm (released: 4); 0 = no clipping
    # system
    parallel: str = "auto"             # auto (fsdp under torchrun, else none) | none | ddp | fsdp
    device: str = "auto"               # auto (cuda if available) | cpu | cuda
    precision: str = "auto"            # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    activation_checkpointing: bool = False  # recompute each block in the backward
    compile: bool = False              # torch.compile each block
    pad_multiple: int = 1              # pad lengths to a multiple (fewer shapes for compile/flex; 128 on GPU)
    seed: int = 0                      # weights init, data order, masks
    # output
    out_dir: str = "runs/tiny"
    checkpoint_every: int = 100        # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 3          # newest checkpoints kept
    tensorboard: bool = True           # write tb/ scalars

    def __post_init__(self):
        choices = {"frame_window": WINDOWS, "mask_mode": MODES, "mask_schedule": SCHEDULES,
                   "lr_schedule": ("cosine", "constant"),
                   "parallel": ("auto",) + PARALLEL, "device": ("auto", "cpu", "cuda"),
                   "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} = {getattr(self, name)!r} is not one of {allowed}")
        for name in ("max_steps", "batch_size", "max_frames", "loss_chunk", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.data and self.synthetic:
            raise ValueError("give either data (record folders) or synthetic, not both")
        if self.warmup_steps < 0 or self.micro_batch_size < 0 or self.lr <= 0:
            raise ValueError("warmup_steps and micro_batch_size must be >= 0 and lr > 0")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Strict: an unknown key or a value of the wrong type is a ValueError naming it."""
        check_keys(cls, d, "train config", ValueError)
        defaults = cls()
        for k, v in d.items():
            want = type(getattr(defaults, k))
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            ok = ok or (want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise ValueError(f"train config key {k!r} must be of type {want.__name__}, got {v!r}")
        return cls(**{k: (float(v) if type(getattr(defaults, k)) is float else v) for k, v in d.items()})

    @classmethod
    def from_toml(cls, path, overrides: list[str] = ()) -> "TrainConfig":
        """A TOML file (top-level keys = fields; [model_overrides] and [synthetic] tables) plus
        `KEY=VALUE` overrides whose VALUE is TOML (`lr=3e-4`, `out_dir="runs/x"`)."""
        path = Path(path)
        try:
            d = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise LumosError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise LumosError(f"{path}: not valid TOML ({e})") from None
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise LumosError(f"--set {item!r}: expected KEY=VALUE")
            try:
                d[key.strip()] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                d[key.strip()] = value  # a bare word: take it as a string
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise LumosError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to `lr` over `warmup_steps`,
    then constant or cosine decay to `min_lr` at `max_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class Runtime:
    rank: int
    world: int
    device: torch.device
    parallel: str           # none | ddp | fsdp (auto resolved)
    dtype: torch.dtype      # compute dtype (bf16 via FSDP mixed precision / autocast, or fp32)
    owns_group: bool        # this process initialised the process group (and destroys it)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Device, process group (under torchrun: WORLD_SIZE is set), data-parallel mode, compute dtype."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise LumosError("device = 'cuda' but no CUDA device is visible")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        # nccl for CUDA tensors, gloo for the few CPU tensors (step metrics) reduced on the same group
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    parallel = cfg.parallel if cfg.parallel != "auto" else ("fsdp" if world > 1 else "none")
    if parallel != "none" and not dist.is_initialized():
        raise LumosError(f"parallel = {parallel!r} needs several processes: run it with torchrun")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda)
    return Runtime(rank, world, device, parallel, torch.bfloat16 if bf16 else torch.float32, owns)


def all_reduce_sum(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


# ---------------------------------------------------------------------------------------------- model
def model_config(cfg: TrainConfig, data_vocab) -> ModelConfig:
    """Preset + overrides; the records' vocabulary replaces the preset's (a preset names shapes, the
    data names the token layout). With `init_from`, the checkpoint's own config."""
    if cfg.init_from:
        from lumos.checkpoint import read_config

        mcfg = read_config(Path(cfg.init_from))
        if data_vocab is not None and mcfg.vocab != data_vocab:
            raise LumosError(f"{cfg.init_from}: its vocabulary ({mcfg.vocab.name}) differs from the records'")
        return mcfg.replace(**cfg.model_overrides) if cfg.model_overrides else mcfg
    overrides = dict(cfg.model_overrides)
    if data_vocab is not None:
        overrides["vocab"] = data_vocab
    try:
        return ModelConfig.from_name(cfg.model, **overrides)
    except ValueError as e:
        raise LumosError(str(e)) from None


def initial_weights(cfg: TrainConfig, mcfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Starting weights (fp32, CPU): `init_from`, or the seeded random init of `LumosModel.init_weights`."""
    from lumos.model import LumosModel

    if cfg.init_from:
        return LumosModel.from_pretrained(cfg.init_from, dtype=torch.float32).state_dict()
    return LumosModel.from_config(mcfg, device="cpu", seed=cfg.seed).state_dict()


def build_model(cfg: TrainConfig, mcfg: ModelConfig, rt: Runtime):
    """-> (module to call, the LumosModel inside it). Weights are fp32 masters.

    FSDP: meta-device model -> parallelize -> to_empty -> rank 0's initial weights broadcast into the
    shards. (Running init_weights on the shards would draw other random numbers than one process
    does; broadcasting makes every world size start from the same model.)"""
    from lumos.model import LumosModel

    kw = dict(ac=cfg.activation_checkpointing, compile=cfg.compile, device=rt.device)
    if rt.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        with torch.device("meta"):
            core = LumosModel(mcfg)
        model = parallelize(core, "fsdp", param_dtype=rt.dtype if rt.dtype != torch.float32 else None, **kw)
        model.to_empty(device=rt.device)
        full = initial_weights(cfg, mcfg) if rt.rank == 0 else {}
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        return model, core
    with torch.device("meta"):
        core = LumosModel(mcfg)
    core.load_state_dict(initial_weights(cfg, mcfg), assign=True)
    core.to(rt.device)
    return parallelize(core, rt.parallel, **kw), core


# ---------------------------------------------------------------------------------------------- checkpoints
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
            state = json.loads((p / STATE).read_text())
            files = state["files"]
        except (ValueError, KeyError, OSError):
            continue
        if all((p / f).is_file() and (p / f).stat().st_size == n for f, n in files.items()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(root: Path, step: int, model, core, optimizer, cfg: TrainConfig, mcfg: ModelConfig,
                    rt: Runtime) -> None:
    """Write checkpoints/step-NNNNNN atomically (every rank writes into rank 0's temporary folder;
    rank 0 writes the manifest last and renames the folder), then prune old ones."""
    from lumos.checkpoint import save_state_dict

    final = root / f"step-{step:06d}"

    def write_parts(tmp: Path):
        if rt.parallel == "fsdp":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_state_dict)

            msd, osd = get_state_dict(model, optimizer)
            dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(tmp / "dcp"))
            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if rt.rank == 0:
                save_state_dict(full, mcfg, tmp / "model", dtype=torch.float32)
        elif rt.rank == 0:  # single process / DDP: every rank holds the same weights and optimizer
            core.save_pretrained(tmp / "model", dtype=torch.float32)
            with atomic_write(tmp / "optimizer.pt") as f:
                torch.save(optimizer.state_dict(), f)
        rng = {"torch": torch.get_rng_state()}
        if rt.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(rt.device)
        with atomic_write(tmp / f"rng-{rt.rank:05d}.pt") as f:
            torch.save(rng, f)

    if rt.rank == 0:
        with atomic_dir(final) as tmp:
            _broadcast_path(tmp, rt)
            write_parts(tmp)
            _barrier(rt)                                               # every rank's files are in
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            state = {"format": "lumos-train-checkpoint", "version": 1, "step": step,
                     "samples_seen": step * cfg.batch_size, "lr_next": get_lr(step, cfg),
                     "world_size": rt.world, "parallel": rt.parallel, "train_config": cfg.to_dict(),
                     "model_config": mcfg.to_dict(), "files": files}
            (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")   # last: marks the folder complete
        for _, old in list_checkpoints(root)[:-cfg.keep_checkpoints]:
            _rmtree(old)
    else:
        write_parts(_broadcast_path(None, rt))
        _barrier(rt)
    _barrier(rt)                                                       # the rename is visible to all


def load_checkpoint(path: Path, model, core, optimizer, rt: Runtime) -> int:
    """Restore weights, optimizer and this rank's RNG state from a complete checkpoint; returns its step."""
    state = json.loads((path / STATE).read_text())
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
        from lumos.checkpoint import check_state_dict, read_weights

        sd = check_state_dict(core.state_dict(), read_weights(path / "model"), path / "model")
        core.load_state_dict(sd)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=rt.device, weights_only=True))
    rng_file = path / f"rng-{rt.rank:05d}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and rt.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], rt.device)
    return int(state["step"])


def _warn_changed(path: Path, cfg: TrainConfig, rt: Runtime) -> None:
    """Resuming with other settings is allowed (e.g. more max_steps) but no longer reproduces the
    original run: say which keys changed."""
    old = json.loads((path / STATE).read_text())["train_config"]
    changed = sorted(k for k, v in cfg.to_dict().items() if old.get(k) != v and k != "out_dir")
    if changed and rt.rank == 0:
        print(f"lumos train: resuming {path.name} with changed settings: {', '.join(changed)}", file=sys.stderr)


def _broadcast_path(p: Path | None, rt: Runtime) -> Path:
    obj = [str(p) if p is not None else None]
    if rt.world > 1:
        dist.broadcast_object_list(obj, src=0)
    return Path(obj[0])


def _barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- logging
class Logger:
    """Rank 0: a tqdm bar (loss, tokens/s, ETA), metrics.jsonl (one line per step, flushed) and
    TensorBoard scalars. Other ranks log nothing."""

    def __init__(self, cfg: TrainConfig, out: Path, start: int, rt: Runtime):
        self.on = rt.rank == 0
        self.file = self.tb = self.bar = None
        if not self.on:
            return
        from tqdm import tqdm

        metrics = out / "metrics.jsonl"
        # A resumed run rewrites the history up to its checkpoint (drops the killed run's later steps).
        kept = [r for r in _read_metrics(metrics) if r["step"] <= start]
        with atomic_write(metrics, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self.file = open(metrics, "a")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start + 1)
        self.bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def log(self, r: dict) -> None:
        if not self.on:
            return
        self.file.write(json.dumps(r) + "\n")
        self.file.flush()
        if self.tb is not None:
            s = r["step"]
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "z_loss"):
                if k in r:
                    self.tb.add_scalar(f"train/{k}", r[k], s)
            for f, v in enumerate(r["frame_loss"]):
                if v is not None:
                    self.tb.add_scalar(f"train/frame_loss/{f}", v, s)
        self.bar.set_postfix(loss=f"{r['loss']:.4f}", tok_s=f"{r['tokens_per_s']:.0f}")
        self.bar.update(1)

    def close(self) -> None:
        if self.on:
            self.bar.close()
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _read_metrics(path: Path) -> list[dict]:
    """Lines of metrics.jsonl; a line cut by a kill is ignored."""
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# ---------------------------------------------------------------------------------------------- train
def open_data(cfg: TrainConfig):
    """-> (source, vocab of the records or None for the synthetic world)."""
    if cfg.data:
        try:
            return open_source(cfg.data)
        except ValueError as e:
            raise LumosError(str(e)) from None
    return None, None


def train(cfg: TrainConfig, resume: bool = False) -> list[dict]:
    """Run (or resume) training; returns the metrics of the steps run by this call."""
    rt = setup_runtime(cfg)
    torch.manual_seed(cfg.seed)  # nothing below draws from the global RNG; this only pins it
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"

    # 1. data and model
    source, data_vocab = open_data(cfg)
    mcfg = model_config(cfg, data_vocab)
    vocab = mcfg.vocab
    if source is None:
        try:
            source = SyntheticVideos(vocab, **cfg.synthetic)
        except TypeError as e:
            raise LumosError(f"synthetic: {e}") from None
    micro_bs = cfg.micro_batch_size or cfg.batch_size // rt.world
    if micro_bs < 1 or cfg.batch_size % (micro_bs * rt.world):
        raise LumosError(f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size {micro_bs} x "
                         f"{rt.world} processes")
    opts = BatchOptions(max_frames=cfg.max_frames, frame_window=cfg.frame_window, mask_mode=cfg.mask_mode,
                        mask_schedule=cfg.mask_schedule, min_mask_rate=cfg.min_mask_rate,
                        cfg_drop_prob=cfg.cfg_drop_prob, pad_multiple=cfg.pad_multiple,
                        max_seq_len=mcfg.max_seq_len)
    batcher = Batcher(source, vocab, opts, seed=cfg.seed)
    model, core = build_model(cfg, mcfg, rt)
    # AdamW on every parameter with one weight decay, as released (no parameter groups).
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)

    # 2. resume: the newest complete checkpoint; the data position is the step itself
    start = 0
    if resume:
        found = list_checkpoints(ckpt_root)
        if found:
            start = load_checkpoint(found[-1][1], model, core, optimizer, rt)
            _warn_changed(found[-1][1], cfg, rt)
        elif rt.rank == 0:
            print(f"lumos train: no complete checkpoint under {ckpt_root}; starting from step 0", file=sys.stderr)
    if rt.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", cfg.to_dict())
    logger = Logger(cfg, out, start, rt)
    history = []

    # 3. the loop
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        lr = get_lr(step, cfg)
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
        sums = torch.zeros(3 + 2 * cfg.max_frames, dtype=torch.float64, device=rt.device)
        for i, b in enumerate(micro):
            with _no_sync(model, rt, last=i == len(micro) - 1):
                with _autocast(rt):
                    mask = core.build_mask(b.inputs, b.valid)                       # frame-causal, no padding keys
                    hidden = model(b.inputs, mask=mask, return_hidden=True)          # (B, L, D)
                # The loss reads lm_head itself (visual rows only), outside autocast: fp32 softmax.
                out_ = masked_visual_loss(hidden, core.lm_head.weight, b.targets, b.frame, vocab,
                                          chunk=cfg.loss_chunk, z_loss_weight=cfg.z_loss_weight,
                                          normaliser=max(n_global, 1.0) / rt.world, num_frames=cfg.max_frames)
                out_.loss.backward()
            sums += _sums(out_, counts[i][1])
        grad_norm = _clip(model, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # 4. log (sums over ranks) and checkpoint
        rec = _record(step + 1, all_reduce_sum(sums, rt).cpu(), n_global, lr, grad_norm, time.perf_counter() - t0, cfg)
        logger.log(rec)
        history.append(rec)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            save_checkpoint(ckpt_root, step + 1, model, core, optimizer, cfg, mcfg, rt)

    logger.close()
    if rt.owns_group:
        dist.destroy_process_group()
    return history


def _sums(out, num_tokens: int) -> torch.Tensor:
    """This micro-batch's additive statistics, float64 [3 + 2F]: summed CE, summed lse^2, tokens,
    then the summed CE per latent frame [F] and the target count per latent frame [F]."""
    head = torch.stack([out.nll_sum.double(), out.z_sum.double(), torch.zeros_like(out.nll_sum, dtype=torch.float64)])
    head[2] += num_tokens    # a kernel with a scalar argument: no host-to-device copy
    return torch.cat([head, out.frame_nll.double(), out.frame_count.double()])


def _record(step: int, sums: torch.Tensor, n_targets: float, lr: float, grad_norm: float, seconds: float,
            cfg: TrainConfig) -> dict:
    """One metrics.jsonl line from the step's global sums (`_sums`, reduced over micro-batches and ranks)."""
    F, n = cfg.max_frames, max(n_targets, 1.0)
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


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (TOML), e.g. configs/tiny.toml")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in out_dir/checkpoints")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key; VALUE is TOML (lr=3e-4, out_dir=\"runs/x\"); repeatable")


def run(args) -> int:
    cfg = TrainConfig.from_toml(args.config, args.overrides)
    train(cfg, resume=args.resume)
    return 0
