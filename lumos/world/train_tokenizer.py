"""Train the built-in causal video tokenizer (`lumos.vq`) on the Moving Digits world, on CPU.

    lumos train-tokenizer configs/tokenizer-moving-digits.toml                # writes out_dir from the config
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --out runs/tok # another folder
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --resume       # continue after a kill

Python: `train_tokenizer(load_config("....toml"))`.

The config is TOML: training keys at the top level, the tokenizer architecture under `[model]`
(`lumos.vq.VQConfig`) and the world under `[data]` (`lumos.digits.DigitsConfig`). Keys are strict:
an unknown key, a missing required key (`steps`, `batch_size`, `lr`) or a wrong type is an error.

The loop, in order: clips of the "train" split are rendered on the fly (batch i is a pure function of
(seed, i), so the data never repeats and needs no state to resume); every `image_every`-th step is a
batch of still images instead (the one-latent-frame path used by text-to-image and the first frame
of image-to-video); a `two_digit_fraction` of the samples show two digits; loss = MSE on pixels in
[-1, 1] (+ optional `l1_weight` * L1: MSE is what PSNR measures, and on this data adding L1 cost
~1 dB); AdamW with linear warmup then cosine decay; gradient clipping. Every `ckpt_every` steps
`out_dir/checkpoint/` is replaced atomically (weights, AdamW state, step, torch RNG state, the
config); `--resume` continues from it and gives the same weights, bit for bit on CPU, as a run that
was never interrupted.

At the end: `vq_config.json` + `vq.safetensors` (the tokenizer, `VQTokenizer.from_pretrained`) and
`metrics.json`: reconstruction PSNR on `eval_videos` clips of the "val" split (unseen handwriting;
PSNR of each video over all its frames, pixels and channels in [0, 255]; mean and min), codebook
usage (fraction of the codes used at least once over those clips), wall time, steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lumos.world.digits import DigitsConfig, sample_clip, sample_image
from lumos.utils import LumosError, atomic_dir, atomic_write_json, check_keys
from lumos.tokenizers.vq import VQConfig, VQTokenizer, count_parameters, load_weights, video_psnr

CHECKPOINT_DIR = "checkpoint"
REQUIRED = ("steps", "batch_size", "lr")


@dataclass
class TrainTokenizerConfig:
    steps: int                               # optimizer steps in the whole run
    batch_size: int                          # clips per step
    lr: float                                # peak AdamW learning rate
    out_dir: str = "runs/tokenizer"          # weights, metrics.json and checkpoint/ go here (--out overrides)
    seed: int = 0                            # weight init and the data stream (batch i comes from rng([seed, i]))
    warmup_steps: int = 100                  # linear warmup from 0
    min_lr_ratio: float = 0.1                # cosine decays to lr * this at the last step
    weight_decay: float = 0.0                # AdamW; the convs are small and the data is unlimited
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0                   # max global grad norm (0 = off)
    l1_weight: float = 0.0                   # loss = MSE + l1_weight * L1 (MSE alone gave +1 dB PSNR)
    image_every: int = 4                     # every N-th step trains on still images (0 = never)
    image_batch_size: int = 32               # images per image step (one latent frame each: cheap)
    two_digit_fraction: float = 0.0          # share of training samples with two digits (the world's other mode)
    ckpt_every: int = 500                    # checkpoint every N steps (and at the end)
    eval_videos: int = 256                   # validation clips for the final PSNR / codebook usage
    eval_seed: int = 1_000_003               # validation clip i comes from rng([eval_seed, i])
    keep_checkpoint: bool = False            # keep checkpoint/ after the run (it is 3x the weights)
    model: VQConfig = field(default_factory=VQConfig)
    data: DigitsConfig = field(default_factory=DigitsConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "ckpt_every", "eval_videos"):
            if getattr(self, name) < 1:
                raise LumosError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise LumosError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.two_digit_fraction <= 1:
            raise LumosError(f"two_digit_fraction must be in [0, 1], got {self.two_digit_fraction}")


# ------------------------------------------------------------------------------------ config file
def _check_types(cls, d: dict, where: str) -> None:
    """Type-check scalar TOML values against the dataclass annotations (int for float is fine)."""
    hints = {f.name: f.type for f in fields(cls)}
    for k, v in d.items():
        want = hints[k] if isinstance(hints[k], str) else getattr(hints[k], "__name__", "")
        ok = {"int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": isinstance(v, str), "bool": isinstance(v, bool)}.get(want, True)
        if want.startswith("tuple"):
            ok = isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            want = "list of int"
        if not ok:
            raise LumosError(f"{where}{k} must be {want}, got {v!r}")


def _section(cls, d: Any, where: str) -> dict:
    check_keys(cls, d, f"[{where.rstrip('.')}]" if where else "tokenizer config")
    _check_types(cls, d, where)
    return d


def config_from_dict(d: dict) -> TrainTokenizerConfig:
    """Build a config from a parsed TOML document, strictly (see the module docstring)."""
    d = dict(d)
    model = _section(VQConfig, d.pop("model", {}), "model.")
    data = _section(DigitsConfig, d.pop("data", {}), "data.")
    top = _section(TrainTokenizerConfig, d, "")
    missing = [k for k in REQUIRED if k not in top]
    if missing:
        raise LumosError(f"missing required config key(s): {', '.join(missing)}")
    try:
        return TrainTokenizerConfig(**top, model=VQConfig(**model), data=DigitsConfig(**data))
    except ValueError as e:
        raise LumosError(f"invalid config: {e}") from None


def load_config(path: str | Path) -> TrainTokenizerConfig:
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"config file {path} not found")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise LumosError(f"{path}: invalid TOML: {e}") from None
    try:
        return config_from_dict(doc)
    except LumosError as e:
        raise LumosError(f"{path}: {e}") from None


def config_to_dict(cfg: TrainTokenizerConfig) -> dict:
    d = asdict(cfg)
    d["model"], d["data"] = asdict(cfg.model), asdict(cfg.data)
    return d


# ------------------------------------------------------------------------------------------ data
def get_lr(step: int, cfg: TrainTokenizerConfig) -> float:
    """Learning rate for 0-based `step`: linear warmup, then cosine from lr to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * ratio


def get_batch(step: int, cfg: TrainTokenizerConfig) -> torch.Tensor:
    """The batch of `step`: float `[B, T, H, W, 3]` in [-1, 1]. Clips of the "train" split, or on
    image steps still images as one-frame videos `[B_img, 1, H, W, 3]`. A pure function of
    (seed, step): resuming needs no data state, and no two steps see the same clips."""
    rng = np.random.default_rng([cfg.seed, step])
    two_digit_world = dataclasses.replace(cfg.data, num_digits=2)
    if cfg.image_every and step % cfg.image_every == cfg.image_every - 1:
        sample, n = (lambda w: sample_image("train", rng, w)[0][None]), cfg.image_batch_size
    else:
        sample, n = (lambda w: sample_clip("train", rng, w)[0]), cfg.batch_size
    # each sample has two digits with probability two_digit_fraction, else cfg.data's own count (no draw
    # at all when the fraction is 0, so one-digit runs keep the data stream the shipped tokenizer saw)
    two = [cfg.two_digit_fraction > 0 and rng.random() < cfg.two_digit_fraction for _ in range(n)]
    x = np.stack([sample(two_digit_world if t else cfg.data) for t in two])
    return torch.from_numpy(x).float() / 127.5 - 1


def eval_videos(cfg: TrainTokenizerConfig, n: int | None = None, num_digits: int | None = None) -> np.ndarray:
    """The fixed validation set: uint8 `[n, T, H, W, 3]` clips of the "val" split (handwriting never
    seen in training), with cfg.data's digit count unless `num_digits` says otherwise."""
    n = cfg.eval_videos if n is None else n
    world = cfg.data if num_digits is None else dataclasses.replace(cfg.data, num_digits=num_digits)
    return np.stack([sample_clip("val", np.random.default_rng([cfg.eval_seed, i]), world)[0] for i in range(n)])


@torch.no_grad()
def evaluate(model: VQTokenizer, videos: np.ndarray, batch_size: int = 16) -> dict:
    """Reconstruction quality and codebook usage of `model` on uint8 `videos` `[N, T, H, W, 3]`.
    Reconstruction goes through the integer codes (encode_batch -> decode_batch), exactly as the
    generator's output will."""
    model.eval()
    psnrs, frame_psnrs, used = [], [], torch.zeros(model.codebook_size, dtype=torch.bool)
    for i in range(0, len(videos), batch_size):
        v = torch.from_numpy(videos[i:i + batch_size])
        codes = model.encode_batch(v)                                    # [b, t, h, w]
        used[codes.flatten()] = True
        rec = model.decode_batch(codes)[:, : v.shape[1]]                 # [b, T, H, W, 3] uint8
        psnrs.append(video_psnr(rec, v))
        # per-frame PSNR averaged over the frames of each video (the other common convention)
        frame_psnrs.append(video_psnr(rec.flatten(0, 1)[:, None], v.flatten(0, 1)[:, None]).view(len(v), -1).mean(1))
    psnr, frame_psnr = torch.cat(psnrs), torch.cat(frame_psnrs)
    return {
        "psnr_mean": round(psnr.mean().item(), 3),
        "psnr_min": round(psnr.min().item(), 3),
        "psnr_frame_avg_mean": round(frame_psnr.mean().item(), 3),
        "codebook_usage": round(used.float().mean().item(), 4),
        "codes_used": int(used.sum()),
        "codebook_size": model.codebook_size,
        "eval_videos": len(videos),
    }


# ------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(out_dir: Path, model: VQTokenizer, opt: torch.optim.Optimizer, step: int,
                    cfg: TrainTokenizerConfig) -> None:
    """Replace `out_dir/checkpoint/` atomically: model.safetensors, optimizer.safetensors (AdamW
    moments), state.json (step, config, optimizer hyper-parameters, torch RNG state). No pickles."""
    from safetensors.torch import save_file
    osd = opt.state_dict()
    opt_tensors, opt_scalars = {}, {}
    for idx, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                opt_tensors[f"state.{idx}.{k}"] = v.contiguous()
            else:
                opt_scalars[f"state.{idx}.{k}"] = v
    opt_tensors["torch_rng_state"] = torch.get_rng_state()
    state = {"step": step, "config": config_to_dict(cfg), "param_groups": osd["param_groups"],
             "optimizer_scalars": opt_scalars}
    with atomic_dir(out_dir / CHECKPOINT_DIR) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def load_checkpoint(out_dir: Path, model: VQTokenizer, opt: torch.optim.Optimizer,
                    cfg: TrainTokenizerConfig) -> int:
    """Restore model, optimizer and torch RNG from `out_dir/checkpoint/`; return the step to start at."""
    from safetensors.torch import load_file
    ck = out_dir / CHECKPOINT_DIR
    if not (ck / "state.json").is_file():
        raise LumosError(f"--resume: no checkpoint in {ck} (it is written every ckpt_every steps)")
    state = json.loads((ck / "state.json").read_text())
    saved, now = state["config"], json.loads(json.dumps(config_to_dict(cfg)))   # tuples -> lists, as saved
    for key in ("model", "data", "seed", "batch_size", "image_every", "image_batch_size", "two_digit_fraction"):
        if saved[key] != now[key]:
            raise LumosError(f"--resume: the checkpoint in {ck} was trained with {key} = {saved[key]}, the config "
                             f"says {now[key]}; use the same config (only steps, lr schedule and evaluation keys "
                             f"may change)")
    model.load_state_dict(load_weights(ck / "model.safetensors", model.state_dict()))
    tensors = load_file(str(ck / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("torch_rng_state"))
    opt_state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(state["optimizer_scalars"].items()):
        _, idx, k = name.split(".", 2)
        opt_state.setdefault(int(idx), {})[k] = value
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return int(state["step"])


# ------------------------------------------------------------------------------------------ train
def train_tokenizer(cfg: TrainTokenizerConfig, resume: bool = False, progress: bool = True,
                    stop_at: int | None = None) -> dict:
    """Train, save the tokenizer and its metrics into `cfg.out_dir`; return the metrics dict.

    `resume`: continue from `out_dir/checkpoint/`. `stop_at`: end right after the checkpoint of
    that step without the final save/evaluation, exactly as if the job had been killed there (tests
    use it to check that resuming is exact)."""
    out_dir = Path(cfg.out_dir)
    if not resume and (out_dir / CHECKPOINT_DIR / "state.json").is_file():
        raise LumosError(f"{out_dir} already holds a training checkpoint; pass --resume to continue it, or "
                         f"choose another --out")
    torch.manual_seed(cfg.seed)                      # weight init only: the data has its own generators
    model = VQTokenizer(cfg.model)
    # no weight decay on norms and biases (standard), the conv kernels get cfg.weight_decay
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    start = load_checkpoint(out_dir, model, opt, cfg) if resume else 0
    n_params = count_parameters(model)

    t0 = time.time()
    model.train()
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train-tokenizer", unit="step",
               dynamic_ncols=True)
    for step in range(start, cfg.steps):
        # 1. data and learning rate
        x = get_batch(step, cfg)                                         # [B, T, H, W, 3] in [-1, 1]
        lr = get_lr(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        # 2. forward / backward / step
        recon, _ = model(x)
        loss = F.mse_loss(recon, x) + cfg.l1_weight * F.l1_loss(recon, x)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # 3. bookkeeping (the loss value is read once per step: CPU, so no sync to worry about)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            save_checkpoint(out_dir, model, opt, done, cfg)
        if stop_at is not None and done >= stop_at:
            bar.close()
            return {"stopped_at": done}
    bar.close()
    train_s = time.time() - t0

    # 4. the tokenizer, then its metrics on validation clips
    model.save_pretrained(out_dir)
    t1 = time.time()
    metrics = evaluate(model, eval_videos(cfg))
    if cfg.two_digit_fraction > 0 and cfg.data.num_digits == 1:
        # the world's other mode, on a quarter as many clips
        metrics["two_digits"] = evaluate(model, eval_videos(cfg, max(1, cfg.eval_videos // 4), num_digits=2))
    metrics.update({
        "split": "val",
        "steps": cfg.steps,
        "resumed_from_step": start,
        "train_wall_s": round(train_s, 1),      # this process only (a resumed run counts its own part)
        "eval_wall_s": round(time.time() - t1, 1),
        "final_train_loss": round(float(np.mean(losses[-50:])), 5) if losses else None,
        "parameters": n_params,
        "weights_bytes": (out_dir / "vq.safetensors").stat().st_size,
        "torch_threads": torch.get_num_threads(),
        "config": config_to_dict(cfg),
    })
    atomic_write_json(out_dir / "metrics.json", metrics)
    if not cfg.keep_checkpoint:
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return metrics


# -------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML config (see configs/tokenizer-moving-digits.toml)")
    parser.add_argument("--out", help="output folder (overrides out_dir in the config)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint/")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.out:
        cfg = dataclasses.replace(cfg, out_dir=args.out)
    metrics = train_tokenizer(cfg, resume=args.resume)
    print(f"saved {cfg.out_dir}/vq.safetensors ({metrics['parameters']:,} parameters); validation PSNR "
          f"{metrics['psnr_mean']:.2f} dB (min {metrics['psnr_min']:.2f}) over {metrics['eval_videos']} clips, "
          f"codebook usage {100 * metrics['codebook_usage']:.1f}%")
    return 0
