"""The runs and reports of `lumos eval` (`lumos.cli.eval`): generate the built-in Moving Digits world
and score every video automatically (the scorers: `lumos.world.scoring`).

`evaluate(pipe, items, seed, ...)` runs a pipeline over the prompt sets (val captions, every held-out
combination, a small image-to-video set), scores and aggregates them, times the generation and
compares it with next-token decoding of the same model, and scores ground-truth clips after a round
trip through the pipeline's video tokenizer (the "tokenizer ceiling": a model cannot draw sharper
than its tokenizer decodes, and a blurry 8 reads as a 3 in some frames); `write_report` writes
report.json and report.md. The command (`lumos.cli.eval`) is a thin layer over these.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lumos.sampling import SampleConfig, check_seed
from lumos.utils import LumosError, atomic_write, atomic_write_json
from lumos.world import digits as D
from lumos.world.scoring import WORLD, score_video

SETS = ("val", "heldout", "i2v")
PROMPT_SEED = 20_250_801  # the prompt sets are fixed (independent of --seed) so runs stay comparable


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class Item:
    """One video to generate and what it must show."""
    set: str                        # "val" | "heldout" | "i2v"
    caption: str
    digit: int
    colour: str
    direction: str
    image: np.ndarray | None = None  # i2v only: uint8 [H, W, 3], the first frame of a val clip


def build_items(num_prompts: int = 60, num_i2v: int = 8, sets=SETS) -> list[Item]:
    """The default prompt sets, fixed by PROMPT_SEED (not by the generation seed):
    - "val": the captions of `num_prompts` validation clips (seen combinations);
    - "heldout": every combination of `lumos.world.digits.HELD_OUT` once (never in training);
    - "i2v": `num_i2v` validation clips, their first frame as the image and their caption as the prompt."""
    unknown = set(sets) - set(SETS)
    if unknown:
        raise LumosError(f"unknown sets {sorted(unknown)}; choose from {', '.join(SETS)}")
    items = []
    if "val" in sets:
        rng = np.random.default_rng([PROMPT_SEED, 0])
        for _ in range(num_prompts):
            _, caption, meta = D.sample_clip("val", rng, WORLD)
            items.append(_item("val", caption))
    if "heldout" in sets:
        for d, c, r in D.HELD_OUT:
            items.append(_item("heldout", D.caption_of([D.DigitObject(d, c, r, 0, 0.0, 0.0, 0.0)])))
    if "i2v" in sets:
        rng = np.random.default_rng([PROMPT_SEED, 1])
        for _ in range(num_i2v):
            video, caption, _ = D.sample_clip("val", rng, WORLD)
            items.append(dataclasses.replace(_item("i2v", caption), image=video[0]))
    return items


def _item(set_: str, caption: str) -> Item:
    (digit, colour, direction), = D.parse_caption(caption)
    return Item(set_, caption, digit, colour, direction)


# ------------------------------------------------------------------------------------------ evaluation
def _generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for one batch, from (seed, set, batch): reruns reproduce each batch alone.
    The pipeline turns a CPU generator into one on its device."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *key]).generate_state(1)[0]))


# Every video of an evaluation has the world's geometry: the scorers assume it.
GEOMETRY = dict(num_frames=WORLD.num_frames, height=WORLD.height, width=WORLD.width, fps=WORLD.fps)


def _check_video(v, caption: str) -> np.ndarray:
    v = np.asarray(v)
    want = (WORLD.num_frames, WORLD.height, WORLD.width, 3)
    if v.dtype != np.uint8 or v.shape != want:
        raise LumosError(f"the pipeline returned {v.dtype} {tuple(v.shape)} for {caption!r}; expected uint8 {want}")
    return v


def _batches(items: list[Item], batch_size: int):
    """(set index, batch index, first item's index in its set, the batch): i2v and text-only prompts in
    separate batches (a batch gives images for all prompts or none)."""
    for set_index, set_ in enumerate(SETS):
        group = [it for it in items if it.set == set_]
        for b, start in enumerate(range(0, len(group), batch_size)):
            yield set_index, b, start, group[start:start + batch_size]


def check_run(pipe, items: list[Item], batch_size: int = 8, **settings) -> dict:
    """The checks of an evaluation that run no model: the batch size, the settings (the fields of
    `SampleConfig`) and, for a `LumosPipeline` (even one opened with weights=False), every batch's call
    (`LumosPipeline.check`: top_k, length...). Returns the keywords of every pipeline call."""
    if batch_size < 1:
        raise LumosError(f"batch size must be >= 1, got {batch_size}")
    kwargs = {**GEOMETRY, **SampleConfig.check({k: v for k, v in settings.items() if v is not None})}
    if hasattr(pipe, "check"):
        for set_index, _, _, batch in _batches(items, batch_size):
            images = [it.image for it in batch] if SETS[set_index] == "i2v" else None
            pipe.check([it.caption for it in batch], image=images, **kwargs)
    return kwargs


def evaluate(pipe, items: list[Item], seed: int = 0, *, batch_size: int = 8, next_token_prompts: int = 2,
             ceiling_clips: int = 32, progress: bool = True, **settings) -> dict:
    """Generate every item with `pipe` (a `LumosPipeline`, or anything with its call signature), score
    it and aggregate per set. settings: sampling keywords of the pipeline (the fields of
    `lumos.sampling.SampleConfig`; left out or None: the pipeline's defaults); the geometry is the
    world's (64x64, 17 frames, 8 fps). Prompts are batched `batch_size` at a time (i2v and text-only
    prompts in separate batches: a batch gives images for all prompts or none).
    next_token_prompts > 0 also decodes that many prompts with next-token decoding and reports the
    speed ratio (`compare_decoding`; needs a real `LumosPipeline`). ceiling_clips > 0 also scores that
    many ground-truth clips passed through the pipeline's video tokenizer (`tokenizer_ceiling`).

    Returns the report dict (see `write_report`): settings, timing, per-set aggregates, one row per video."""
    from tqdm.auto import tqdm

    check_seed(seed)
    kwargs = check_run(pipe, items, batch_size, **settings)     # every batch, before any is generated
    filled = pipe.settings(**kwargs).to_dict() if hasattr(pipe, "settings") else kwargs
    rows, per_video_s = [], []
    bar = tqdm(total=len(items), desc="eval", unit="video", disable=not progress)
    for set_index, b, start, batch in _batches(items, batch_size):
        images = [it.image for it in batch] if SETS[set_index] == "i2v" else None
        t0 = time.perf_counter()
        videos = pipe([it.caption for it in batch], image=images, generator=_generator(seed, set_index, b),
                      progress=False, **kwargs).frames
        seconds = (time.perf_counter() - t0) / len(batch)
        per_video_s += [seconds] * len(batch)
        for k, (it, v) in enumerate(zip(batch, videos)):
            v = _check_video(v, it.caption)
            row = {"set": it.set, "index": start + k, "caption": it.caption,
                   "expected": {"digit": it.digit, "colour": it.colour, "direction": it.direction},
                   **score_video(v, it.digit, it.colour, it.direction, it.image), "seconds": round(seconds, 4)}
            rows.append(row)
        bar.update(len(batch))
    bar.close()
    report = {
        "seed": seed, "settings": filled, "batch_size": batch_size, "prompt_seed": PROMPT_SEED,
        "torch_threads": torch.get_num_threads(), "device": str(getattr(pipe, "device", "cpu")),
        "timing": {"median_s_per_video": round(statistics.median(per_video_s), 4) if per_video_s else None,
                   "frames_per_video": WORLD.num_frames, "batch_size": batch_size,
                   "note": f"wall time of a batch / its videos, {torch.get_num_threads()} torch threads"},
        "aggregates": aggregate(rows),
        "next_token": None,
        "ceiling": None,
        "videos": rows,
    }
    if ceiling_clips > 0:
        report["ceiling"] = tokenizer_ceiling(pipe, ceiling_clips)
    if next_token_prompts > 0:
        text_items = [it for it in items if it.set != "i2v"][:next_token_prompts]
        if text_items:
            report["next_token"] = compare_decoding(pipe, text_items, seed, **kwargs)
    return report


def aggregate(rows: list[dict]) -> dict:
    """Per set: videos, and the share (%) of videos whose digit / colour / direction is right, that
    are stable, that pass all four; for i2v also the mean IoU and the I2V pass share."""
    pct = lambda xs: round(100.0 * sum(bool(x) for x in xs) / len(xs), 2)          # noqa: E731
    out = {}
    for set_ in SETS:
        rs = [r for r in rows if r["set"] == set_]
        if not rs:
            continue
        agg = {"videos": len(rs)}
        for key in ("digit_correct", "colour_correct", "direction_correct", "stable", "all_correct"):
            agg[key] = pct([r[key] for r in rs])
        if set_ == "i2v":
            agg["i2v_iou"] = round(float(np.mean([r["i2v_iou"] for r in rs])), 4)
            agg["i2v_pass"] = pct([r["i2v_pass"] for r in rs])
        out[set_] = agg
    return out


def tokenizer_ceiling(pipe, n: int = 32) -> dict | None:
    """The scores of a perfect model: `n` ground-truth validation clips (fixed by PROMPT_SEED) encoded
    and decoded by the pipeline's video tokenizer, then scored like generated videos. A model can at
    best reproduce its tokenizer's reconstructions, so this row says how much of a shortfall is the
    tokenizer's (a blurry reconstruction of an 8 reads as a 3 in some frames). None when the pipeline
    has no `video_tokenizer`."""
    vt = getattr(pipe, "video_tokenizer", None)
    if vt is None:
        return None
    rng = np.random.default_rng([PROMPT_SEED, 2])
    rows, psnrs = [], []
    for _ in range(n):
        video, caption, _ = D.sample_clip("val", rng, WORLD)
        with torch.inference_mode():
            recon = _check_video(np.asarray(vt.decode(vt.encode(video)))[:WORLD.num_frames], caption)
        psnrs.append(D.psnr(video, recon))
        it = _item("val", caption)
        rows.append({"set": "val", **score_video(recon, it.digit, it.colour, it.direction)})
    return {**aggregate(rows)["val"], "psnr_db": round(float(np.mean(psnrs)), 2)}


def compare_decoding(pipe, items: list[Item], seed: int, **kwargs) -> dict:
    """Decode each item once in parallel (MaskGIT) mode and once next-token, batch 1, same plan and
    seed, timing only the sampler (`lumos.sampling.generate`, as `lumos bench` does). Returns the
    median seconds per video of each mode, their ratio (next-token / parallel), the forward passes,
    and how the next-token videos score (a model trained with AR-DF is not a next-token model: the
    speed is the point, not the quality)."""
    from lumos.sampling import generate

    if not all(hasattr(pipe, a) for a in ("prepare", "decode", "model")):
        return {"skipped": "the pipeline is not a LumosPipeline (no model to decode next-token with)"}
    times = {"parallel": [], "next-token": []}
    forwards, rows = {}, []
    for i, it in enumerate(items):
        # The same prompt layout the pipeline builds for a call (host-side; not timed).
        s, plan, _ = pipe.prepare(it.caption, None, None, 1, kwargs)
        for mode in times:
            g = pipe.device_generator(_generator(seed, 99, i))
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = generate(pipe.model, plan, s.sample, g, mode=mode)
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - t0)
            forwards[mode] = out.forwards
            if mode == "next-token":
                v = _check_video(pipe.decode(out.codes[0], s.num_frames), it.caption)
                rows.append({"caption": it.caption, **score_video(v, it.digit, it.colour, it.direction)})
    par, nxt = statistics.median(times["parallel"]), statistics.median(times["next-token"])
    return {"prompts": len(items), "parallel_s": round(par, 4), "next_token_s": round(nxt, 4),
            "ratio": round(nxt / par, 2), "forwards": forwards, "torch_threads": torch.get_num_threads(),
            "next_token_scores": aggregate([{**r, "set": "val"} for r in rows]).get("val"), "videos": rows}


# ------------------------------------------------------------------------------------------ report
_COLUMNS = (("videos", "videos"), ("digit_correct", "digit %"), ("colour_correct", "colour %"),
            ("direction_correct", "direction %"), ("stable", "identity stable %"), ("all_correct", "all four %"),
            ("i2v_iou", "I2V IoU"), ("i2v_pass", "I2V pass %"))


def format_markdown(report: dict) -> str:
    """The aggregates as a Markdown table (held-out row first: it is the number that matters), then
    the timing and the next-token comparison."""
    aggs = report["aggregates"]
    lines = ["| set | " + " | ".join(label for _, label in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for set_ in ("heldout", "val", "i2v"):
        if set_ in aggs:
            cells = [_cell(aggs[set_].get(key)) for key, _ in _COLUMNS]
            lines.append(f"| {set_} | " + " | ".join(cells) + " |")
    ceiling = report.get("ceiling")
    if ceiling:
        cells = [_cell(ceiling.get(key)) for key, _ in _COLUMNS]
        lines.append("| tokenizer ceiling | " + " | ".join(cells) + " |")
    t = report["timing"]
    if t.get("median_s_per_video") is not None:
        lines.append("")
        lines.append(f"Generation: {t['median_s_per_video']:.3f} s per {t['frames_per_video']}-frame video (median; "
                     f"batch {t['batch_size']}, {report['torch_threads']} torch threads, {report['device']}).")
    if ceiling:
        lines.append(f"Tokenizer ceiling: ground-truth val clips encoded and decoded by the video tokenizer "
                     f"({ceiling['psnr_db']:.1f} dB PSNR), scored the same way: about the best a model can score.")
    nt = report.get("next_token")
    if nt and "ratio" in nt:
        lines.append(f"Next-token decoding: {nt['next_token_s']:.3f} s vs parallel {nt['parallel_s']:.3f} s per video "
                     f"({nt['prompts']} prompts, batch 1): {nt['ratio']:.2f}x slower "
                     f"({nt['forwards'].get('next-token')} vs {nt['forwards'].get('parallel')} forward passes).")
    elif nt:
        lines.append(f"Next-token decoding: skipped ({nt.get('skipped')}).")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "–"
    return str(v) if isinstance(v, int) else f"{v:.1f}" if v > 1 or v == 0 else f"{v:.3f}"


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    """report.json (everything) and report.md (the table and a header) in out_dir, atomically."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LumosError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    with atomic_write(out / "report.md", "w") as f:
        f.write(f"# lumos eval: {report.get('model', 'pipeline')}\n\n")
        f.write(f"seed {report['seed']}; settings: "
                + ", ".join(f"{k}={v}" for k, v in report["settings"].items()) + "\n\n")
        f.write(format_markdown(report) + "\n")
    return out / "report.json", out / "report.md"
