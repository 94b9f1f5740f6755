"""Train the built-in causal video tokenizer (`lumos.tokenizers.vq`) on the Moving Digits world, on CPU.

    lumos train-tokenizer configs/tokenizer-moving-digits.toml                # writes out_dir from the config
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --out runs/tok # another folder
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --resume       # continue after a kill
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --restart      # start over, replacing the run
    lumos train-tokenizer configs/tokenizer-moving-digits.toml --set steps=200 --set model.groups=4

Python: `train_tokenizer(TrainTokenizerConfig.from_toml("....toml"))`.

The config is TOML: training keys at the top level, the tokenizer architecture under `[model]`
(`lumos.tokenizers.vq.VQConfig`) and the world under `[data]` (`lumos.world.digits.DigitsConfig`).
Keys are strict (`lumos.train.config`, the loader of `lumos train` too): an unknown key, a missing
required key (`steps`, `batch_size`, `lr`) or a wrong type is an error.

The loop, in order: clips of the "train" split are rendered on the fly (batch i is a pure function of
(seed, i), so the data never repeats and needs no state to resume); every `image_every`-th step is a
batch of still images instead (the one-latent-frame path used by text-to-image and the first frame
of image-to-video); a `two_digit_fraction` of the samples show two digits; loss = MSE on pixels in
[-1, 1] (+ optional `l1_weight` * L1: MSE is what PSNR measures, and on this data adding L1 cost
~1 dB); AdamW with linear warmup then cosine decay (`lumos.train.lr`); gradient clipping. Every
`ckpt_every` steps a checkpoint `out_dir/checkpoints/step-NNNNNN/` is written atomically in the
format of `lumos train` (`lumos.train.checkpoints`: the weights in model/, AdamW state, torch RNG
state, the config in the manifest) and the previous one removed; `--resume` continues from it and
gives the same weights, bit for bit on CPU, as a run that was never interrupted. A damaged newest
checkpoint is reported and the one before it used; leftovers of a killed save are removed at start.

At the end: `vq_config.json` + `vq.safetensors` (the tokenizer, `VQTokenizer.from_pretrained`) and
`metrics.json`: reconstruction PSNR on `eval_videos` clips of the "val" split (unseen handwriting;
PSNR of each video over all its frames, pixels and channels in [0, 255]; mean and min), codebook
usage (fraction of the codes used at least once over those clips), wall time, steps.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lumos.tokenizers.vq import WEIGHTS_FILE, VQConfig, VQTokenizer, count_parameters, load_weights, video_psnr
from lumos.train.checkpoints import (changed_settings, read_state, reset_checkpoints, resume_checkpoint,
                                    save_checkpoint, step_folders)
from lumos.train.config import TomlConfig
from lumos.train.lr import get_lr
from lumos.train.runtime import single_process
from lumos.utils import LumosError, atomic_write_json, check_output
from lumos.world.digits import DigitsConfig, sample_clip, sample_image

CHECKPOINTS = "checkpoints"
# what a resumed run must share with the checkpoint (steps, the LR schedule and evaluation may change)
SAME_ON_RESUME = ("model", "data", "seed", "batch_size", "image_every", "image_batch_size", "two_digit_fraction")


@dataclass
class TrainTokenizerConfig(TomlConfig):
    what = "tokenizer config"
    steps: int                               # optimizer steps in the whole run (required)
    batch_size: int                          # clips per step (required)
    lr: float                                # peak AdamW learning rate (required)
    out_dir: str = "runs/tokenizer"          # weights, metrics.json and checkpoints/ go here (--out overrides)
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
    keep_checkpoint: bool = False            # keep checkpoints/ after the run (it is 3x the weights)
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

    def lr_at(self, step: int) -> float:
        """Learning rate of 0-based `step`: linear warmup, then cosine from lr to lr * min_lr_ratio."""
        return get_lr(step, peak=self.lr, warmup_steps=self.warmup_steps, total_steps=self.steps,
                      min_lr_ratio=self.min_lr_ratio)


# ------------------------------------------------------------------------------------------ data
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
def _save(out_dir: Path, model: VQTokenizer, opt: torch.optim.Optimizer, step: int,
          cfg: TrainTokenizerConfig) -> None:
    """`out_dir/checkpoints/step-NNNNNN/` (`lumos.train.checkpoints`), replacing the previous one."""
    meta = {"lr_next": cfg.lr_at(step), "train_config": cfg.to_dict()}
    save_checkpoint(out_dir / CHECKPOINTS, step, model, opt, single_process(), save_weights=model.save_pretrained,
                    meta=meta, keep=1)


def _resume(out_dir: Path, model: VQTokenizer, opt: torch.optim.Optimizer, cfg: TrainTokenizerConfig,
            resume: bool, restart: bool) -> int:
    """The step to start at: with `resume`, that of the newest checkpoint that loads (model, optimizer
    and torch RNG restored from it), else 0. Never starts over silently on checkpoints: that needs
    `restart`."""
    root = out_dir / CHECKPOINTS
    if not resume:
        if step_folders(root) and not restart:
            raise LumosError(f"{out_dir} already holds a training checkpoint; pass --resume to continue it, "
                             f"--restart to start over, or choose another --out")
        return 0

    def load(folder: Path) -> None:
        model.load_state_dict(load_weights(folder / WEIGHTS_FILE, model.state_dict()))

    start, path, problem = resume_checkpoint(root, model, opt, single_process(), load_weights=load,
                                             who="lumos train-tokenizer")
    if path is None:
        if restart:
            return 0
        why = f"the newest does not load: {problem}" if problem else "it is written every ckpt_every steps"
        raise LumosError(f"--resume: no checkpoint in {root} to continue from ({why}); pass --restart to start over")
    saved, now = read_state(path)["train_config"], cfg.to_dict()
    for key in changed_settings(saved, now):
        if key in SAME_ON_RESUME:
            raise LumosError(f"--resume: the checkpoint in {path} was trained with {key} = {saved[key]}, the config "
                             f"says {now[key]}; use the same config (only steps, lr schedule and evaluation keys "
                             f"may change)")
    return start


# ------------------------------------------------------------------------------------------ train
def train_tokenizer(cfg: TrainTokenizerConfig, resume: bool = False, progress: bool = True,
                    stop_at: int | None = None, restart: bool = False) -> dict:
    """Train, save the tokenizer and its metrics into `cfg.out_dir`; return the metrics dict.

    `resume`: continue from the newest checkpoint in `out_dir/checkpoints/` that loads (a damaged
    newer one is reported and skipped). `restart`: start over although out_dir holds checkpoints
    (they are deleted); with `resume`, only if none loads. `stop_at`: end right after the checkpoint
    of that step without the final save/evaluation, exactly as if the job had been killed there
    (tests use it to check that resuming is exact)."""
    out_dir = check_output(cfg.out_dir, "out_dir", folder=True)
    torch.manual_seed(cfg.seed)                      # weight init only: the data has its own generators
    model = VQTokenizer(cfg.model)
    # no weight decay on norms and biases (standard), the conv kernels get cfg.weight_decay
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    start = _resume(out_dir, model, opt, cfg, resume, restart)
    n_params = count_parameters(model)
    reset_checkpoints(out_dir / CHECKPOINTS, fresh=start == 0)   # leftovers; on --restart the old checkpoints

    t0 = time.time()
    model.train()
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train-tokenizer", unit="step",
               dynamic_ncols=True)
    for step in range(start, cfg.steps):
        # 1. data and learning rate
        x = get_batch(step, cfg)                                         # [B, T, H, W, 3] in [-1, 1]
        lr = cfg.lr_at(step)
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
            _save(out_dir, model, opt, done, cfg)
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
        "config": cfg.to_dict(),
    })
    atomic_write_json(out_dir / "metrics.json", metrics)
    if not cfg.keep_checkpoint:
        reset_checkpoints(out_dir / CHECKPOINTS, fresh=True)   # each out of the listed names first
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    return metrics

