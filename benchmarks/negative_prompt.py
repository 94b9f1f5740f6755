"""What does a negative prompt do on a Moving Digits model? How often "a red 3" still comes out red.

For each negative prompt (none, then the given ones) and guidance scale, one batched text-to-image
call makes --n images of the prompt from one seed; the colour of each is read off its pixels
(`lumos.world.scoring`). A negative prompt replaces the empty text of the unconditional branch of
classifier-free guidance (`LumosPipeline.__call__(negative_prompt=...)`), so guidance pushes away
from it.

    python benchmarks/negative_prompt.py [--model moving-digits] [--n 16] [--guidance 3 6]

Not a test: ~80 s per row on CPU for 16 images.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="moving-digits")
    p.add_argument("--prompt", default="a red 3")
    p.add_argument("--colour", default="red", help="the colour counted")
    p.add_argument("--negative", nargs="*", default=["red", "a red 3"])
    p.add_argument("--guidance", nargs="*", type=float, default=[None], help="default: the model's")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from lumos import LumosPipeline
    from lumos.world import scoring

    pipe = LumosPipeline.from_pretrained(a.model, device="cpu")
    for g in a.guidance:
        for negative in [None, *a.negative]:
            t = time.perf_counter()
            images = pipe(a.prompt, num_frames=1, num_videos_per_prompt=a.n, negative_prompt=negative,
                          generator=a.seed, guidance_scale=g).frames
            colours = [scoring.score_video(im, 0, a.colour, "left")["colour_pred"] for im in images]
            hits = sum(c == a.colour for c in colours)
            print(f"guidance {g if g is not None else 'default'} negative {negative!r}: {a.colour} {hits}/{a.n} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
