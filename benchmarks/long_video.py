"""Cost of long videos: seconds per latent frame and peak memory, with and without the rolling window.

    python benchmarks/long_video.py                       # 17, 65, 129, 257 frames; ~10 minutes on 2 CPU cores
    python benchmarks/long_video.py --frames 17 65 --threads 1

The model has the built-in model's shape (6 layers, dim 192, 8x8 latent frames of 76 tokens) with random
weights and room for 20,000 positions, so that the runs without a window can go as long as the ones
with it (the shipped model stops at 2,048 positions: 26 latent frames). What is timed does not depend
on the weights. Each run is its own process, so its peak resident memory (ru_maxrss) is its own; the
KV cache is reported too (the part that grows with the video). Printed, not asserted: the point is the
shape of the curves (flat past the window with one, growing without).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(spec: dict) -> dict:
    import dataclasses

    import torch

    from lumos.config import CONFIGS
    from lumos.model import LumosModel
    from lumos.sampling import SampleConfig, iter_parallel, plan_generation

    torch.set_num_threads(spec["threads"])
    cfg = dataclasses.replace(CONFIGS["small"](), max_seq_len=20_000)
    model = LumosModel.from_config(cfg, seed=0).eval()
    vocab = cfg.vocab
    latent = 1 + (spec["frames"] - 1) // 4
    s = SampleConfig(num_inference_steps=spec["steps"], guidance_scale=2.0, temperature=0.6,
                     window_frames=spec["window"], sink_frames=spec["sinks"])
    prompt = vocab.build_t2v(list(range(1, 9)), duration=2, fps=8, complete=False)
    plan = plan_generation(model, [prompt], latent, 8, 8, s)
    times, t = [], time.perf_counter()
    for _ in iter_parallel(model, plan, s, torch.Generator().manual_seed(0)):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    cache = plan.tokens.shape[1] * plan.tokens.shape[0] * 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
    tail = times[len(times) // 2:]                                   # the second half: past any window
    return {"latent_frames": latent, "first_s": times[0], "last_half_s_per_frame": sum(tail) / len(tail),
            "total_s": sum(times), "cache_mb": cache / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[17, 65, 129, 257], help="pixel frames (1 + 4k)")
    ap.add_argument("--window", type=int, default=4, help="latent frames in the window (the built-in default)")
    ap.add_argument("--sinks", type=int, default=1, help="sink frames of the 'window + sink' rows")
    ap.add_argument("--steps", type=int, default=8, help="refinement steps per latent frame")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    variants = [("no window", None, 0), (f"window {a.window}", a.window, 0), (f"window {a.window} + {a.sinks} sink", a.window, a.sinks)]
    print(f"| frames | variant | latent frames | s / latent frame (2nd half) | total s | KV cache MB | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for frames in a.frames:
        for name, window, sinks in variants:
            spec = {"frames": frames, "window": window, "sinks": sinks, "steps": a.steps, "threads": a.threads}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
            if out.returncode:
                print(f"| {frames} | {name} | failed: {out.stderr.strip().splitlines()[-1]} |||||")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {frames} | {name} | {r['latent_frames']} | {r['last_half_s_per_frame']:.3f} | {r['total_s']:.1f} "
                  f"| {r['cache_mb']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
