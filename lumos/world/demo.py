"""A few videos from the built-in Moving Digits model: what `lumos demo` (`lumos.cli.demo`) and `make demo` run.

Writes, into `out` (default `demo/`), a GIF and an MP4 for each of:
- text-to-video of a combination seen in training ("a red 3 moving down"),
- text-to-video of a HELD-OUT combination, never seen in training ("a cyan 4 moving left"),
- image-to-video from the first frame of a VALIDATION clip (handwriting never seen in training),
plus a text-to-image PNG ("a yellow 7"), and a JSON manifest per video (task, prompt, seed, model, frames, time).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from lumos.sampling import check_seed
from lumos.utils import LumosError, atomic_write_json, check_output

PROMPTS = [("t2v", "a red 3 moving down"), ("heldout", "a cyan 4 moving left")]
FILES = ("t2v.gif", "t2v.mp4", "t2v.json", "heldout.gif", "heldout.mp4", "heldout.json", "i2v.gif", "i2v.mp4",
         "i2v-given.png", "i2v.json", "t2i.png")          # everything a demo writes into `out`


def demo(out="demo", model="moving-digits", seed: int = 0, progress: bool = True) -> list[Path]:
    from lumos.world.digits import is_held_out, parse_caption, sample_clip
    from lumos.media import write_image, write_video
    from lumos.pipeline import LumosPipeline

    out = Path(out)
    check_seed(seed, "--seed")
    check_output(out, "--out", folder=True)
    for name in FILES:
        check_output(out / name, "--out")
    pipe = LumosPipeline.from_pretrained(model)
    written = []
    clip, caption, _ = sample_clip("val", np.random.default_rng(seed))
    jobs = [(name, prompt, None) for name, prompt in PROMPTS] + [("i2v", caption, clip[0])]
    for name, prompt, image in jobs:
        if name == "heldout":
            (d, c, m), = parse_caption(prompt)
            if not is_held_out(d, c, m):
                raise LumosError(f"the demo's held-out prompt {prompt!r} is not a held-out combination")
        t = time.perf_counter()
        video = pipe(prompt, image=image, generator=torch.Generator().manual_seed(seed), progress=progress).frames[0]
        seconds = time.perf_counter() - t
        fps = pipe.defaults.fps
        for ext in ("gif", "mp4"):
            write_video(out / f"{name}.{ext}", video, fps=fps)
            written.append(out / f"{name}.{ext}")
        if image is not None:
            write_image(out / f"{name}-given.png", image)
        atomic_write_json(out / f"{name}.json", {"task": name, "prompt": prompt, "seed": seed, "model": str(model),
                                                 "frames": int(video.shape[0]), "seconds": round(seconds, 3)})
        print(f"{name:8s} {prompt!r}: {video.shape[0]} frames in {seconds:.2f} s -> {out / name}.gif/.mp4")
    t = time.perf_counter()
    image = pipe("a yellow 7", num_frames=1, generator=torch.Generator().manual_seed(seed), progress=progress).frames[0]
    write_image(out / "t2i.png", image)
    print(f"t2i      'a yellow 7': 1 image in {time.perf_counter() - t:.2f} s -> {out / 't2i.png'}")
    written.append(out / "t2i.png")
    return written
