"""`lumos bench`: forward passes and wall time of parallel (masked) decoding vs next-token decoding.

    lumos bench                                  # the shipped model's own video: 17 frames = 5 latent frames of
                                                 # 64x64 px -> 8x8 = 64 codes, S=16, guidance 2 (its pipeline.json)
    lumos bench --threads 1                      # steadier numbers on a shared CPU
    lumos bench --model runs/digits/final --frames 5
    lumos bench --preset tiny                    # a random model of a preset (lumos.config) instead
    lumos bench --preset bench-1b --device cuda --dtype bfloat16 --height 384 --width 672 --frames 7 \
        --num-inference-steps 50

One video is decoded per mode, with classifier-free guidance (every pass runs the cond and uncond rows
in one batch), from a random text prompt of --text-len tokens:
- parallel, KV cache:    1 + F S passes = 1 prefill + F S steps (each frame's history-masked cache write
                         rides with the next frame's first step); the same compiled (--modes compiled: the
                         first run compiles), except on CUDA: F (S + 1), one static shape, every write alone
- parallel, no KV cache: F S passes, each over the whole sequence so far (the frame-causal mask)
- next-token, KV cache:  1 + F N passes = 1 prefill + one per code (N = h w codes per frame)
Each mode runs once to warm up, then --repeats times; the table shows the median wall time per video.
The sampling flags are `lumos.sampling.SampleConfig`'s; S is --num-inference-steps (or --steps).
On a CPU a pass's cost grows with its query tokens (a parallel pass carries a whole frame, a
next-token pass one or two tokens), so the wall-time ratio is below the pass-count ratio; on a GPU,
where small passes are latency-bound, the two get close.

On a model with a pipeline.json (the built-in one) the video size (--frames latent frames from its
num_frames, --height, --width) and the sampling settings default to that file's: `lumos bench` times the
built-in model's own 17 frames (5 latent frames) at 64x64 with 6 steps and guidance 2.

    lumos bench --table                          # the fixed grid -> docs/performance.md (Markdown)
    lumos bench --table --table-threads 1 2 --out docs/performance.md
    lumos bench --table --device cuda --dtype bfloat16 --out docs/performance-gpu.md

--table runs each (row, threads, mode) in its own subprocess, so that the peak memory is that run's
alone: on a CPU the child's peak resident set (getrusage ru_maxrss, the whole process: Python, torch,
the weights and the activations), on CUDA torch.cuda.max_memory_allocated. Rows are `NAME` (TABLE_ROWS)
or `SOURCE@FxHxW[:STEPS]` (a preset or model; F latent frames of H x W codes); the rows not run are
listed with the command that fills them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lumos.cli.flags import SettingFlags, add_threads, apply_threads
from lumos.cli.generate import DTYPES
from lumos.sampling import (SampleConfig, check_generation, check_seed, expected_forwards, generate, plan_generation,
                            static_shapes)
from lumos.tokenizers.base import num_latent_frames
from lumos.utils import LumosError, atomic_write

# Fewer steps than a real generation by default: the pass counts and their ratio are what is measured.
# A model's pipeline.json, when it has one, comes before these defaults (flags given come first).
BENCH_DEFAULTS = SampleConfig(num_inference_steps=16)
SAMPLING = SettingFlags(SampleConfig, aliases={"num_inference_steps": ("--steps",)})
TEMPORAL = 4            # pixel frames per latent frame after the first (the built-in and the Cosmos tokenizer)
PATCH = 8               # pixels per code (both tokenizers)
DEFAULT_OUT = "docs/performance.md"

# --table rows: name -> (source: a preset or model, latent frames, h codes, w codes, steps or None = the
# model's pipeline.json / the released 50). Rows on the CPU by default: CPU_ROWS.
TABLE_ROWS = {
    "moving-digits": ("moving-digits", 5, 8, 8, None),       # the built-in model's own video: 17 frames 64x64
    "bench-1b-32px": ("bench-1b", 2, 4, 4, 4),                # the 1B shape on a frame a CPU can afford
    "bench-1b-256p": ("bench-1b", 7, 32, 56, 50),             # 448x256, 2 s at 12 fps, released steps
    "bench-1b-384p": ("bench-1b", 7, 48, 84, 50),             # 672x384 (the paper's 1B timing setting)
    "bench-3b-256p": ("bench-3b", 7, 32, 56, 50),
    "bench-3b-384p": ("bench-3b", 7, 48, 84, 50),
}
CPU_ROWS = ("moving-digits", "bench-1b-32px")

LABELS = {  # mode -> (label, formula)
    "parallel": ("parallel, KV cache", "1+F*S"),
    "parallel-nocache": ("parallel, no KV cache", "F*S"),
    "next-token": ("next-token, KV cache", "1+F*N"),
    "compiled": ("parallel, KV cache, compiled", "1+F*S"),    # torch.compile'd step; its warm-up run compiles
}
DEFAULT_MODES = ("parallel", "parallel-nocache", "next-token")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="moving-digits", help="checkpoint / pipeline folder or built-in model name")
    p.add_argument("--preset", help="time a model of this preset (lumos.config) with random weights instead of --model")
    p.add_argument("--height", type=int, help="pixels (default: the model's pipeline.json, else 64)")
    p.add_argument("--width", type=int, help="pixels (default: the model's pipeline.json, else 64)")
    p.add_argument("--patch", type=int, default=PATCH, help="pixels per latent token (the tokenizer's spatial compression)")
    p.add_argument("--frames", type=int, help="latent frames to generate (default: the model's pipeline.json "
                                              "num_frames in latent frames, else 4)")
    p.add_argument("--text-len", type=int, default=16, help="prompt text tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode (after one warm-up)")
    p.add_argument("--modes", nargs="+", choices=list(LABELS), default=list(DEFAULT_MODES),
                   help="decoding modes to time (compiled: the parallel step through torch.compile)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model weights and compute")
    add_threads(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt, the sampling and a --preset model's weights")
    SAMPLING.add(p.add_argument_group("sampling (default: the model's pipeline.json, else 16 steps, guidance 15)"))
    t = p.add_argument_group("--table: a Markdown table of a fixed grid")
    t.add_argument("--table", action="store_true", help="time the grid of --table-rows and write --out")
    t.add_argument("--out", help=f"the Markdown file of --table (default {DEFAULT_OUT})")
    t.add_argument("--table-rows", nargs="+", metavar="ROW",
                   help=f"rows to run: names ({', '.join(TABLE_ROWS)}) or SOURCE@FxHxW[:STEPS] (a preset or "
                        f"model, F latent frames of HxW codes); default: {' '.join(CPU_ROWS)} on a CPU, "
                        f"every named row on CUDA")
    t.add_argument("--table-threads", nargs="+", type=int, metavar="N",
                   help="CPU thread counts to run each row at (default: --threads, else torch's choice)")


@dataclass
class BenchRow:
    mode: str
    forwards: int          # counted by the sampler
    expected: int          # the formula
    seconds: float         # median wall time per video
    flops: int = 0         # floating-point operations of one video (matmuls and attention; `count_flops`)


def count_flops(fn) -> int:
    """The floating-point operations of `fn()` as torch's FlopCounterMode counts them: the matmuls and the
    attention (2 per multiply-add); elementwise work is not counted. torch has no formula for the CPU's
    flash-attention kernel, so it is given the SDPA one."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa(q, k, v, *args, out_shape=None, **kwargs):       # shapes in (FlopCounterMode passes them)
        return sdpa_flop_count(q, k, v)

    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa}
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_size(device: torch.device) -> int:
    """The matmul side of `matmul_peak`: 1024 on a CPU; 8192 on a GPU, where a smaller one is launch-bound."""
    return 8192 if device.type == "cuda" else 1024


def matmul_peak(device: torch.device, dtype=torch.float32, n: int | None = None, repeats: int = 8) -> float:
    """FLOP/s of an n x n x n matmul (`peak_size`) on `device` in `dtype` at the current thread count:
    about the most a model made of matmuls can reach here (the best of `repeats`, after a warm-up)."""
    n = n or peak_size(device)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for r in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def bench_plan(model, h: int, w: int, frames: int, cfg: SampleConfig, text_len: int, seed: int):
    vocab = model.config.vocab
    rng = np.random.default_rng(seed)
    text = rng.integers(1, vocab.text_vocab_size, text_len)
    prompt = vocab.build(text, None, duration=min(2, vocab.max_size), fps=min(8, vocab.max_size), complete=False)
    return plan_generation(model, [prompt], frames, h, w, cfg)


def run_bench(model, h: int, w: int, frames: int, num_inference_steps: int, *, modes=DEFAULT_MODES,
              text_len: int = 16, repeats: int = 3, seed: int = 0, **settings) -> list[BenchRow]:
    """Time each decoding mode on one video of `frames` latent frames of h x w codes. settings: the
    other fields of `SampleConfig` (its defaults otherwise)."""
    cfg = SampleConfig(num_inference_steps=num_inference_steps, **settings)
    plan = bench_plan(model, h, w, frames, cfg, text_len, seed)
    device = plan.tokens.device
    rows, flops = [], {}
    for mode in modes:
        times, forwards = [], 0
        sampler_mode = "parallel" if mode == "compiled" else mode      # compiled: the parallel step, compiled
        if mode == "compiled" and "parallel" not in flops:             # its arithmetic: one eager video's
            flops["parallel"] = count_flops(lambda: generate(model, plan, cfg, torch.Generator(device=device)
                                                             .manual_seed(seed), mode="parallel").forwards)
        for r in range(repeats + 1):                           # run 0 warms up (allocator, kernels)
            def run():
                generator = torch.Generator(device=device).manual_seed(seed)
                return generate(model, plan, cfg, generator, mode=sampler_mode, compile=mode == "compiled").forwards
            if r == 0 and mode != "compiled":                  # the warm-up also counts the FLOPs (not timed)
                flops[mode] = count_flops(run)
                continue
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            forwards = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t0)
        # compiled: parallel's count (inductor's kernels are not counted by the flop counter); the same
        # arithmetic on a CPU, a little less than the static shapes on CUDA do (`static_shapes`)
        rows.append(BenchRow(mode, forwards, expected_forwards(mode, frames, cfg.num_inference_steps, h * w,
                                                               len(plan.frame_starts), static_shapes(device)),
                             statistics.median(times), flops.get(sampler_mode, 0)))
    return rows


def formula(mode: str, device: torch.device) -> str:
    """The pass-count formula of a mode; compiled at one static shape (CUDA) writes every frame alone."""
    return "F(S+1)" if mode == "compiled" and static_shapes(device) else LABELS[mode][1]


def format_table(rows: list[BenchRow], peak: float | None = None, device=torch.device("cpu")) -> str:
    """The rows; `peak` (FLOP/s, `matmul_peak`): also each mode's share of it and the time it would take
    at it (the floor of this much arithmetic on this machine)."""
    lines = [f"{'mode':<30}{'forwards':>9}  {'formula':<8}{'s/video':>10}{'ms/forward':>12}{'GFLOP':>9}{'GFLOP/s':>9}"]
    for r in rows:
        label, passes = LABELS[r.mode][0], formula(r.mode, device)
        rate = f"{r.flops / r.seconds / 1e9:>9.1f}" if r.flops else f"{'-':>9}"
        lines.append(f"{label:<30}{r.forwards:>9}  {passes:<8}{r.seconds:>10.3f}{1e3 * r.seconds / r.forwards:>12.2f}"
                     f"{r.flops / 1e9:>9.2f}{rate}")
    if peak:
        n = peak_size(device)
        where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
        lines.append(f"matmul peak here ({where}, {n}^3): {peak / 1e9:.1f} GFLOP/s; at it "
                     + ", ".join(f"{LABELS[r.mode][0]} would take {r.flops / peak:.2f} s "
                                 f"({100 * r.flops / peak / r.seconds:.0f}% reached)" for r in rows if r.flops))
    by = {r.mode: r for r in rows}
    if "parallel" in by and "next-token" in by:
        p, n = by["parallel"], by["next-token"]
        lines.append(f"next-token / parallel (KV cache): {n.seconds / p.seconds:.2f}x wall time, "
                     f"{n.forwards / p.forwards:.2f}x forward passes")
    if "parallel" in by and "parallel-nocache" in by:
        slow = by["parallel-nocache"].seconds / by["parallel"].seconds
        lines.append(f"parallel without / with KV cache: {slow:.2f}x wall time")
    return "\n".join(lines)


def model_defaults(model_dir) -> dict:
    """The pipeline.json of a model folder (PipelineDefaults' fields given there), {} without one."""
    from lumos.pipeline import DEFAULTS_FILE, PipelineDefaults
    if model_dir is None or not (Path(model_dir) / DEFAULTS_FILE).exists():
        return {}
    d = PipelineDefaults.from_file(Path(model_dir) / DEFAULTS_FILE)
    given = json.loads((Path(model_dir) / DEFAULTS_FILE).read_text(encoding="utf-8"))
    return {k: getattr(d, k) for k in given}


def sampling_settings(given: dict, defaults: dict) -> dict:
    """The SampleConfig fields: the flags given, then the model's pipeline.json, then BENCH_DEFAULTS."""
    names = [f for f in asdict(BENCH_DEFAULTS)]
    return {n: given.get(n, defaults.get(n, getattr(BENCH_DEFAULTS, n))) for n in names}


def check_shape(config, settings: dict, text_len: int, frames: int, h: int, w: int, what: str = "") -> None:
    g = config.vocab.grid_per_size
    if h % g or w % g:
        raise LumosError(f"{what}a {h}x{w} latent grid is not a multiple of {g} (one size token = {g} latent rows); "
                         f"use sizes in multiples of {g} codes ({g * PATCH} px)")
    check_generation(config, SampleConfig(**settings), text_len + 2 + config.vocab.VIDEO_HEADER, frames, h, w)


def run(args) -> int:
    from lumos import checkpoint
    from lumos.config import ModelConfig
    from lumos.model import LumosModel
    from lumos.pipeline import resolve_device, resolve_model

    given = SAMPLING.read(args)
    for name in ("height", "width", "patch", "frames", "text_len", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    check_seed(args.seed, "--seed")
    if args.table:
        return run_table(args, given)
    for flag in ("out", "table_rows", "table_threads"):
        if getattr(args, flag) is not None:
            raise LumosError(f"--{flag.replace('_', '-')} needs --table")
    # What the video must fit (codebook, size tokens, positions) from the config alone, before a model is built.
    model_dir = None if args.preset else resolve_model(args.model)
    config = checkpoint.read_config(model_dir) if model_dir else ModelConfig.from_name(args.preset)
    defaults = model_defaults(model_dir)
    settings = sampling_settings(given, defaults)
    height = args.height or defaults.get("height", 64)
    width = args.width or defaults.get("width", 64)
    frames = args.frames or (num_latent_frames(defaults["num_frames"], TEMPORAL) if "num_frames" in defaults else 4)
    if height % args.patch or width % args.patch:
        raise LumosError(f"--height/--width {height}x{width} are not multiples of --patch {args.patch}")
    device, dtype = resolve_device(args.device, DTYPES[args.dtype])
    h, w = height // args.patch, width // args.patch
    check_shape(config, settings, args.text_len, frames, h, w)
    apply_threads(args)
    if model_dir:
        model = LumosModel.from_pretrained(model_dir, device=device, dtype=dtype)
        name = str(args.model)
    else:
        model = LumosModel.from_config(config, device=device, dtype=dtype, seed=args.seed)
        name = f"{args.preset} (random weights)"
    model.eval()
    rows = run_bench(model, h, w, frames, modes=args.modes, text_len=args.text_len, repeats=args.repeats,
                     seed=args.seed, **settings)
    cfg_rows = "cond + uncond rows in one batch" if SampleConfig(**settings).use_cfg else "no CFG"
    print(f"lumos bench: {name}, {model.num_params() / 1e6:.2f}M params, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    print(f"one video: F={frames} frames of {h}x{w} = N={h * w} codes, S={settings['num_inference_steps']} steps, "
          f"guidance {settings['guidance_scale']:g}, {args.text_len} text tokens, {cfg_rows}; "
          f"median of {args.repeats} runs")
    print(format_table(rows, matmul_peak(device, dtype), device))
    default_shape = ("num_frames" in defaults and frames == num_latent_frames(defaults["num_frames"], TEMPORAL)
                     and height == defaults.get("height") and width == defaults.get("width"))
    fastest = min((r for r in rows if r.mode in ("parallel", "compiled")), key=lambda r: r.seconds, default=None)
    if default_shape and fastest is not None:
        from lumos.hub import BUILTIN_MODELS
        whose = "the built-in model" if str(args.model) in BUILTIN_MODELS else "the model's default video"
        print(f"{defaults['num_frames']} frames ({frames} latent frames) of {whose}: "
              f"{fastest.seconds:.3f} s/video ({LABELS[fastest.mode][0]})")
    return 0


# ---------------------------------------------------------------------------------------------- --table

@dataclass
class TableRow:
    name: str          # the row's name or spec
    source: str        # preset or model
    frames: int
    h: int
    w: int
    steps: int | None


ROW_SPEC = re.compile(r"^(?P<src>[^@\s]+)@(?P<f>\d+)x(?P<h>\d+)x(?P<w>\d+)(?::(?P<s>\d+))?$")


def parse_row(text: str) -> TableRow:
    if text in TABLE_ROWS:
        return TableRow(text, *TABLE_ROWS[text])
    m = ROW_SPEC.match(text)
    if not m:
        raise LumosError(f"--table-rows {text!r}: not a row name ({', '.join(TABLE_ROWS)}) nor "
                         f"SOURCE@FxHxW[:STEPS] (e.g. tiny@2x4x4:3)")
    f, h, w = int(m["f"]), int(m["h"]), int(m["w"])
    steps = int(m["s"]) if m["s"] is not None else None
    if min(f, h, w) < 1 or (steps is not None and steps < 1):
        raise LumosError(f"--table-rows {text!r}: frames, sizes and steps must be >= 1")
    return TableRow(text, m["src"], f, h, w, steps)


def row_config(row: TableRow):
    """(model config, model folder or None for a preset, pipeline defaults) of a row, nothing built."""
    from lumos import checkpoint
    from lumos.config import CONFIGS, ModelConfig
    from lumos.pipeline import resolve_model
    if row.source in CONFIGS:
        return ModelConfig.from_name(row.source), None, {}
    model_dir = resolve_model(row.source)
    return checkpoint.read_config(model_dir), model_dir, model_defaults(model_dir)


def row_settings(row: TableRow, given: dict, defaults: dict) -> dict:
    released = {} if defaults else {"num_inference_steps": 50}     # presets: the released sampler's steps
    settings = sampling_settings(given, {**released, **defaults})
    if row.steps is not None and "num_inference_steps" not in given:
        settings["num_inference_steps"] = row.steps
    return settings


def machine_lines(device: torch.device, dtype: str, threads: list) -> list[str]:
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    chip = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
        load = f"- load average (1, 5, 15 min) when the table was written: {', '.join(load)} (other processes " \
               f"on a shared machine slow the rows down; compare rows of one file only)"
    except OSError:
        load = None
    return [f"- device: {device} ({chip}), {os.cpu_count()} logical CPUs",
            f"- threads: {', '.join(map(str, threads))} (torch.set_num_threads)",
            f"- torch {torch.__version__}, Python {platform.python_version()}, dtype {dtype}",
            *([load] if load else [])]


def table_command(args, rows: list[str]) -> str:
    """The `lumos bench --table` command line regenerating this file (what was given)."""
    parts = ["lumos", "bench", "--table"]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.dtype != "float32":
        parts += ["--dtype", args.dtype]
    parts += ["--table-rows", *rows]
    if list(args.modes) != list(DEFAULT_MODES):
        parts += ["--modes", *args.modes]
    if args.table_threads:
        parts += ["--table-threads", *map(str, args.table_threads)]
    elif args.threads:
        parts += ["--threads", str(args.threads)]
    for flag, default in (("repeats", 3), ("text_len", 16), ("seed", 0)):
        if getattr(args, flag) != default:
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for name in SAMPLING.names:
        v = getattr(args, name)
        if v is not None:
            flag = SAMPLING.flags[name][0]
            parts += [flag if v is True else f"--no-{flag[2:]}"] if isinstance(v, bool) else [flag, str(v)]
    parts += ["--out", args.out or DEFAULT_OUT]
    return shlex.join(parts)


def fmt_mem(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def run_table(args, given: dict) -> int:
    from lumos.pipeline import resolve_device
    names = args.table_rows
    # Every flag checked and every row resolved before anything is built or timed.
    device, _ = resolve_device(args.device, DTYPES[args.dtype])
    if args.preset:
        raise LumosError("--table runs its own rows; give them with --table-rows (e.g. tiny@2x4x4:3), not --preset")
    for flag in ("height", "width", "frames"):
        if getattr(args, flag) is not None:
            raise LumosError(f"--{flag} does not apply to --table; give the shape in --table-rows SOURCE@FxHxW")
    threads = args.table_threads or [args.threads or torch.get_num_threads()]
    if any(t < 1 for t in threads):
        raise LumosError(f"--table-threads must be >= 1, got {' '.join(map(str, threads))}")
    if args.threads is not None and args.threads < 1:
        raise LumosError(f"--threads must be >= 1, got {args.threads}")
    if device.type == "cuda" and args.table_threads:
        raise LumosError("--table-threads is for CPU rows; on CUDA leave it out")
    default_rows = names is None
    if default_rows:
        names = list(TABLE_ROWS) if device.type == "cuda" else list(CPU_ROWS)
    rows = [parse_row(n) for n in names]
    plans = []
    for row in rows:
        config, _, defaults = row_config(row)
        settings = row_settings(row, given, defaults)
        check_shape(config, settings, args.text_len, row.frames, row.h, row.w, what=f"--table-rows {row.name}: ")
        plans.append((row, settings))
    out = Path(args.out or DEFAULT_OUT)
    if out.is_dir():
        raise LumosError(f"--out {out} is a folder; give a file name (e.g. {out / 'performance.md'})")

    results = []          # (row, settings, threads, mode, result dict)
    for row, settings in plans:
        for t in (threads if device.type == "cpu" else [None]):
            for mode in args.modes:
                print(f"lumos bench --table: {row.name}, {mode}" + (f", {t} threads" if t else "") + " ...",
                      flush=True)
                res = run_child(dict(source=row.source, frames=row.frames, h=row.h, w=row.w, mode=mode,
                                     settings=settings, device=args.device, dtype=args.dtype, threads=t,
                                     text_len=args.text_len, repeats=args.repeats, seed=args.seed))
                print(f"  {res['seconds']:.3f} s/video, {res['forwards']} forwards, "
                      f"peak {fmt_mem(res['peak_bytes'])}", flush=True)
                results.append((row, settings, t, mode, res))
    not_run = [n for n in TABLE_ROWS if n not in names]
    text = format_markdown(args, device, threads, names, results, not_run)
    with atomic_write(out, "w") as f:
        f.write(text)
    print(f"lumos bench --table: wrote {out}")
    return 0


def run_child(job: dict) -> dict:
    """One (row, mode, threads) in a fresh Python process: its peak memory is its own."""
    cmd = [sys.executable, "-c", "import sys; from lumos.cli.bench import table_child; table_child(sys.argv[1])",
           json.dumps(job)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LumosError(f"--table row {job['source']}@{job['frames']}x{job['h']}x{job['w']} {job['mode']} "
                         f"failed in its subprocess (exit {p.returncode}): {err}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def table_child(job_json: str) -> None:
    """The subprocess of run_child: build the model, time one mode, print one JSON line."""
    import resource
    from lumos.config import CONFIGS, ModelConfig
    from lumos.model import LumosModel
    from lumos.pipeline import resolve_device, resolve_model

    job = json.loads(job_json)
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device, dtype = resolve_device(job["device"], DTYPES[job["dtype"]])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if job["source"] in CONFIGS:
        model = LumosModel.from_config(ModelConfig.from_name(job["source"]), device=device, dtype=dtype,
                                       seed=job["seed"])
    else:
        model = LumosModel.from_pretrained(resolve_model(job["source"]), device=device, dtype=dtype)
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    settings = dict(job["settings"])
    steps = settings.pop("num_inference_steps")
    (row,) = run_bench(model, job["h"], job["w"], job["frames"], steps, modes=[job["mode"]],
                       text_len=job["text_len"], repeats=job["repeats"], seed=job["seed"], **settings)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss"
    print(json.dumps(dict(seconds=row.seconds, forwards=row.forwards, expected=row.expected, peak_bytes=peak,
                          peak_kind=kind, base_rss=base_rss, params=model.num_params(), flops=row.flops,
                          matmul_peak=matmul_peak(device, dtype), threads=torch.get_num_threads())))


def format_markdown(args, device, threads, names, results, not_run) -> str:
    from lumos.config import CONFIGS
    cuda = device.type == "cuda"
    lines = ["# Performance", "",
             "Wall time of one video per decoding mode (`lumos bench --table`, `lumos/cli/bench.py`). "
             "Do not edit by hand: regenerate with", "", "```", table_command(args, names), "```", "",
             "## Machine", "", *machine_lines(device, args.dtype, threads if not cuda else [torch.get_num_threads()]),
             "", "## Results", ""]
    mem = ("Peak memory: `torch.cuda.max_memory_allocated` of the run (weights, cache, activations)" if cuda else
           "Peak memory: the peak resident set of the run's own process (`getrusage(RUSAGE_SELF).ru_maxrss`, "
           "read at its end): the Python interpreter and torch (about the *base* figure below), the weights, the "
           "KV cache and the activations; each (row, threads, mode) runs in a fresh subprocess, so no run "
           "inherits another's peak")
    lines += [f"One video from a random prompt of {args.text_len} text tokens; classifier-free guidance as one "
              f"batched pass (cond + uncond rows) when guidance is not 0 or 1; the median wall time of "
              f"{args.repeats} runs after one warm-up run, excluding the model's construction. Frame size: "
              f"latent frames x rows x columns of codes (a code is {PATCH}x{PATCH} px). Forward passes are "
              f"counted by the sampler. The `bench-*` rows are random-weight models of the `lumos.config` presets "
              f"(illustrative shapes, not the released checkpoints). {mem}.", ""]
    head = ("| model | params | frame size (F x h x w) | steps | guidance | threads | mode | s/video | "
            "forward passes | ms/forward | GFLOP/video | GFLOP/s (% of matmul peak) | peak memory | "
            "next-token / parallel |")
    lines += [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    group = {}
    for row, settings, t, mode, res in results:
        group.setdefault((row.name, t), {})[mode] = res
    bases, peaks = [], {}
    for row, settings, t, mode, res in results:
        g = group[(row.name, t)]
        ratio = ""
        if mode == "next-token" and "parallel" in g:
            ratio = f"{res['seconds'] / g['parallel']['seconds']:.2f}x time, " \
                    f"{res['forwards'] / g['parallel']['forwards']:.1f}x passes"
        label = row.name + (" (random weights)" if row.source in CONFIGS else "")
        flops = f"{res['flops'] / 1e9:,.1f}" if res.get("flops") else ""
        rate = (f"{res['flops'] / res['seconds'] / 1e9:,.1f} ({100 * res['flops'] / res['seconds'] / res['matmul_peak']:.0f}%)"
                if res.get("flops") and res.get("matmul_peak") else "")
        peaks.setdefault(res["threads"] if not cuda else "-", []).append(res.get("matmul_peak") or 0)
        lines.append(f"| {label} | {res['params'] / 1e6:,.1f}M | {row.frames} x {row.h} x {row.w} | "
                     f"{settings['num_inference_steps']} | {settings['guidance_scale']:g} | "
                     f"{res['threads'] if not cuda else '-'} | {LABELS[mode][0]} | {res['seconds']:.3f} | "
                     f"{res['forwards']} | {1e3 * res['seconds'] / res['forwards']:.1f} | {flops} | {rate} | "
                     f"{fmt_mem(res['peak_bytes'])} | {ratio} |")
        bases.append(res["base_rss"])
    for n in not_run:
        row = parse_row(n)
        _, _, defaults = row_config(row)
        settings = row_settings(row, {}, defaults)
        if cuda or n in CPU_ROWS:
            why, cmd = "not run this time", table_command(args, [*names, n])
        else:
            why = "not run here (needs a GPU)"
            cmd = f"lumos bench --table --device cuda --dtype bfloat16 --table-rows {n} --out docs/performance-gpu.md"
        label = n + (" (random weights)" if row.source in CONFIGS else "")
        lines.append(f"| {label} | | {row.frames} x {row.h} x {row.w} | {settings['num_inference_steps']} | "
                     f"{settings['guidance_scale']:g} | | {why}: `{cmd}` | | | | | | | |")
    if any(max(v) for v in peaks.values()):
        at = "; ".join(f"{max(v) / 1e9:,.1f} GFLOP/s" + (f" at {t} thread(s)" if t != "-" else "")
                       for t, v in sorted(peaks.items(), key=lambda kv: str(kv[0])) if max(v))
        lines += ["", f"*GFLOP/video*: the matmuls and attention of one video as `torch.utils.flop_counter` counts "
                      f"them (2 per multiply-add; elementwise work not counted; compiled: the same arithmetic as "
                      f"parallel). *Matmul peak*: the best time of an n x n x n {args.dtype} matmul "
                      f"(n = {peak_size(device)}) in each run's process, {at}. A row at a high share of it is bound "
                      f"by its arithmetic: only less arithmetic (fewer steps, rows or parameters) makes it faster "
                      f"on this machine."]
    if bases and not cuda:
        lines += ["", f"*base*: the resident set of a child after importing torch, before building its model: "
                      f"{fmt_mem(min(bases))} to {fmt_mem(max(bases))}."]
    lines += ["", "Forward passes per video (F frames, S steps, N = h w codes): parallel with KV cache 1 + F S "
                  "(the same compiled, except at one static shape on CUDA: F (S + 1)), "
                  "parallel without KV cache F S (each over the whole sequence so far), next-token 1 + F N. "
                  "On a CPU a pass costs about its query tokens, so the wall-time ratio stays below the "
                  "pass-count ratio; on a GPU small passes are latency-bound and the two get closer.", ""]
    return "\n".join(lines)
