"""`lumos bench`: forward passes and wall time of parallel (masked) decoding vs next-token decoding.

    lumos bench                                  # the shipped model, 64x64 px -> 8x8 = 64 codes/frame, 4 frames, S=16
    lumos bench --threads 1                      # steadier numbers on a shared CPU
    lumos bench --model runs/digits/final --frames 5
    lumos bench --preset tiny                    # a random model of a preset (lumos.config) instead
    lumos bench --preset bench-1b --device cuda --dtype bfloat16 --height 384 --width 672 --frames 7 \
        --num-inference-steps 50

One video is decoded per mode, with classifier-free guidance (every pass runs the cond and uncond rows
in one batch), from a random text prompt of --text-len tokens:
- parallel, KV cache:    F (S + 1) passes = 1 prefill + F S steps + (F - 1) history-masked cache writes
- parallel, no KV cache: F S passes, each over the whole sequence so far (the frame-causal mask)
- next-token, KV cache:  1 + F N passes = 1 prefill + one per code (N = h w codes per frame)
Each mode runs once to warm up, then --repeats times; the table shows the median wall time per video.
The sampling flags are `lumos.sampling.SampleConfig`'s; S is --num-inference-steps (or --steps).
On a CPU a pass's cost grows with its query tokens (a parallel pass carries a whole frame, a
next-token pass one or two tokens), so the wall-time ratio is below the pass-count ratio; on a GPU,
where small passes are latency-bound, the two get close.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from lumos.cli.flags import SettingFlags, add_threads, apply_threads
from lumos.cli.generate import DTYPES
from lumos.sampling import SampleConfig, check_generation, check_seed, expected_forwards, generate, plan_generation
from lumos.utils import LumosError

# Fewer steps than a real generation by default: the pass counts and their ratio are what is measured.
SAMPLING = SettingFlags(SampleConfig, defaults=SampleConfig(num_inference_steps=16),
                        aliases={"num_inference_steps": ("--steps",)})

LABELS = {  # mode -> (label, formula)
    "parallel": ("parallel, KV cache", "F(S+1)"),
    "parallel-nocache": ("parallel, no KV cache", "F*S"),
    "next-token": ("next-token, KV cache", "1+F*N"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="moving-digits", help="checkpoint / pipeline folder or built-in model name")
    p.add_argument("--preset", help="time a model of this preset (lumos.config) with random weights instead of --model")
    p.add_argument("--height", type=int, default=64, help="pixels")
    p.add_argument("--width", type=int, default=64, help="pixels")
    p.add_argument("--patch", type=int, default=8, help="pixels per latent token (the tokenizer's spatial compression)")
    p.add_argument("--frames", type=int, default=4, help="latent frames to generate")
    p.add_argument("--text-len", type=int, default=16, help="prompt text tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode (after one warm-up)")
    p.add_argument("--modes", nargs="+", choices=list(LABELS), default=list(LABELS), help="decoding modes to time")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model weights and compute")
    add_threads(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt, the sampling and a --preset model's weights")
    SAMPLING.add(p.add_argument_group("sampling"))


@dataclass
class BenchRow:
    mode: str
    forwards: int          # counted by the sampler
    expected: int          # the formula
    seconds: float         # median wall time per video


def bench_plan(model, h: int, w: int, frames: int, cfg: SampleConfig, text_len: int, seed: int):
    vocab = model.config.vocab
    rng = np.random.default_rng(seed)
    text = rng.integers(1, vocab.text_vocab_size, text_len)
    prompt = vocab.build(text, None, duration=min(2, vocab.max_size), fps=min(8, vocab.max_size), complete=False)
    return plan_generation(model, [prompt], frames, h, w, cfg)


def run_bench(model, h: int, w: int, frames: int, num_inference_steps: int, *, modes=tuple(LABELS),
              text_len: int = 16, repeats: int = 3, seed: int = 0, **settings) -> list[BenchRow]:
    """Time each decoding mode on one video of `frames` latent frames of h x w codes. settings: the
    other fields of `SampleConfig` (its defaults otherwise)."""
    cfg = SampleConfig(num_inference_steps=num_inference_steps, **settings)
    plan = bench_plan(model, h, w, frames, cfg, text_len, seed)
    device = plan.tokens.device
    rows = []
    for mode in modes:
        times, forwards = [], 0
        for r in range(repeats + 1):                           # run 0 warms up (allocator, kernels)
            generator = torch.Generator(device=device).manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            forwards = generate(model, plan, cfg, generator, mode=mode).forwards
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t0)
        rows.append(BenchRow(mode, forwards, expected_forwards(mode, frames, cfg.num_inference_steps, h * w),
                             statistics.median(times)))
    return rows


def format_table(rows: list[BenchRow]) -> str:
    lines = [f"{'mode':<24}{'forwards':>9}  {'formula':<8}{'s/video':>10}{'ms/forward':>12}"]
    for r in rows:
        label, formula = LABELS[r.mode]
        lines.append(f"{label:<24}{r.forwards:>9}  {formula:<8}{r.seconds:>10.3f}{1e3 * r.seconds / r.forwards:>12.2f}")
    by = {r.mode: r for r in rows}
    if "parallel" in by and "next-token" in by:
        p, n = by["parallel"], by["next-token"]
        lines.append(f"next-token / parallel (KV cache): {n.seconds / p.seconds:.2f}x wall time, "
                     f"{n.forwards / p.forwards:.2f}x forward passes")
    if "parallel" in by and "parallel-nocache" in by:
        slow = by["parallel-nocache"].seconds / by["parallel"].seconds
        lines.append(f"parallel without / with KV cache: {slow:.2f}x wall time")
    return "\n".join(lines)


def run(args) -> int:
    from lumos import checkpoint
    from lumos.config import ModelConfig
    from lumos.model import LumosModel
    from lumos.pipeline import resolve_device, resolve_model

    settings = SAMPLING.read(args)
    for name in ("height", "width", "patch", "frames", "text_len", "repeats"):
        if getattr(args, name) < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    check_seed(args.seed, "--seed")
    if args.height % args.patch or args.width % args.patch:
        raise LumosError(f"--height/--width {args.height}x{args.width} are not multiples of --patch {args.patch}")
    device, dtype = resolve_device(args.device, DTYPES[args.dtype])
    # What the video must fit (codebook, size tokens, positions) from the config alone, before a model is built.
    model_dir = None if args.preset else resolve_model(args.model)
    config = checkpoint.read_config(model_dir) if model_dir else ModelConfig.from_name(args.preset)
    h, w = args.height // args.patch, args.width // args.patch
    g = config.vocab.grid_per_size
    if h % g or w % g:
        raise LumosError(f"a {h}x{w} latent grid is not a multiple of {g} (one size token = {g} latent rows); "
                         f"use --height/--width multiples of {g * args.patch}")
    check_generation(config, SampleConfig(**settings), args.text_len + 2 + config.vocab.VIDEO_HEADER, args.frames,
                     h, w)
    apply_threads(args)
    if model_dir:
        model = LumosModel.from_pretrained(model_dir, device=device, dtype=dtype)
        name = str(args.model)
    else:
        model = LumosModel.from_config(config, device=device, dtype=dtype, seed=args.seed)
        name = f"{args.preset} (random weights)"
    model.eval()
    rows = run_bench(model, h, w, args.frames, modes=args.modes, text_len=args.text_len, repeats=args.repeats,
                     seed=args.seed, **settings)
    cfg_rows = "cond + uncond rows in one batch" if SampleConfig(**settings).use_cfg else "no CFG"
    print(f"lumos bench: {name}, {model.num_params() / 1e6:.2f}M params, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    print(f"one video: F={args.frames} frames of {h}x{w} = N={h * w} codes, S={settings['num_inference_steps']} steps, "
          f"{args.text_len} text tokens, {cfg_rows}; median of {args.repeats} runs")
    print(format_table(rows))
    return 0
