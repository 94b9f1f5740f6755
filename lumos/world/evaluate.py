"""The runs and reports of `lumos eval` (`lumos.cli.eval`): generate the built-in Moving Digits world
and score every video automatically (the scorers: `lumos.world.scoring`).

`evaluate(pipe, items, seed, ...)` runs a pipeline over the prompt sets (val captions, every held-out
combination, a small image-to-video set), scores and aggregates them, times the generation and
compares it with next-token decoding of the same model, and scores ground-truth clips after a round
trip through the pipeline's video tokenizer (the "tokenizer ceiling": a model cannot draw sharper
than its tokenizer decodes, and a blurry 8 reads as a 3 in some frames); `write_report` writes
report.json and report.md. The command (`lumos.cli.eval`) is a thin layer over these.

`evaluate_long(pipe, items, lengths, ...)` is the long-video set (`lumos eval --long 65,129`): the
same prompts, batches and seeds, generated at each length (1 + 16k frames, far beyond the 17 frames of
training; `window_frames` / `sink_frames` go to the pipeline's rolling KV-cache window when given)
and scored on the world's toroidal canvas (`edges="wrap"`: a digit leaving one edge re-enters from
the other, so the caption holds for any length). Each clip is scored whole and per segment
(`segments`: the first 17 frames, the length the model was trained on, then every 16 frames = 4
latent frames), and the per-segment rates across clips show the drift over time. Its tokenizer
ceiling scores the world's own wrapped clips of each length after a round trip through the tokenizer.
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
from lumos.world.scoring import WORLD, analyse_video, score_video

SETS = ("val", "heldout", "i2v")
PROMPT_SEED = 20_250_801  # the prompt sets are fixed (independent of --seed) so runs stay comparable
SEGMENT = 16              # pixel frames per segment of a long video after the first (4 latent frames at k_t = 4)
LONG_KEYS = ("window_frames", "sink_frames")   # the pipeline's rolling-window keywords, passed only when given


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


def _check_video(v, caption: str, num_frames: int = WORLD.num_frames) -> np.ndarray:
    v = np.asarray(v)
    want = (num_frames, WORLD.height, WORLD.width, 3)
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


def check_run(pipe, items: list[Item], batch_size: int = 8, *, num_frames: int | None = None,
              window_frames: int | None = None, sink_frames: int | None = None, **settings) -> dict:
    """The checks of an evaluation that run no model: the batch size, the settings (the fields of
    `SampleConfig`) and, for a `LumosPipeline` (even one opened with weights=False), every batch's call
    (`LumosPipeline.check`: top_k, length...). num_frames: the videos' length (default the world's 17);
    window_frames / sink_frames: the rolling KV-cache window of a long video, passed to the pipeline
    only when given. Returns the keywords of every pipeline call."""
    if batch_size < 1:
        raise LumosError(f"batch size must be >= 1, got {batch_size}")
    window = {k: v for k, v in zip(LONG_KEYS, (window_frames, sink_frames)) if v is not None}
    kwargs = {**GEOMETRY, **SampleConfig.check({k: v for k, v in settings.items() if v is not None}), **window}
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
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
    for it, index, v, seconds in _generate(pipe, items, seed, batch_size, kwargs, bar):
        per_video_s.append(seconds)
        rows.append({"set": it.set, "index": index, "caption": it.caption,
                     "expected": {"digit": it.digit, "colour": it.colour, "direction": it.direction},
                     **score_video(v, it.digit, it.colour, it.direction, it.image), "seconds": round(seconds, 4)})
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


def _generate(pipe, items: list[Item], seed: int, batch_size: int, kwargs: dict, bar, key: tuple = ()):
    """Generate `items` batch by batch with the call keywords `kwargs`; yields (item, its index in its
    set, uint8 video [num_frames, H, W, 3], wall seconds per video of its batch). Batch b of set s
    draws from `_generator(seed, s, b, *key)`, so any batch can be rerun alone."""
    for set_index, b, start, batch in _batches(items, batch_size):
        images = [it.image for it in batch] if SETS[set_index] == "i2v" else None
        t0 = time.perf_counter()
        videos = pipe([it.caption for it in batch], image=images, generator=_generator(seed, set_index, b, *key),
                      progress=False, **kwargs).frames
        seconds = (time.perf_counter() - t0) / len(batch)
        for k, (it, v) in enumerate(zip(batch, videos)):
            yield it, start + k, _check_video(v, it.caption, kwargs["num_frames"]), seconds
        bar.update(len(batch))


RATES = ("digit_correct", "colour_correct", "direction_correct", "stable", "all_correct")


def pct(xs) -> float:
    """The share (%) of true values."""
    return round(100.0 * sum(bool(x) for x in xs) / len(xs), 2)


def by_set(rows: list[dict]):
    """(set, its rows) for each set of SETS that has rows, in that order."""
    for set_ in SETS:
        rs = [r for r in rows if r["set"] == set_]
        if rs:
            yield set_, rs


def aggregate(rows: list[dict]) -> dict:
    """Per set: videos, and the share (%) of videos whose digit / colour / direction is right, that
    are stable, that pass all four; for i2v also the mean IoU and the I2V pass share."""
    out = {}
    for set_, rs in by_set(rows):
        agg = {"videos": len(rs), **{key: pct([r[key] for r in rs]) for key in RATES}}
        if set_ == "i2v":
            agg["i2v_iou"] = round(float(np.mean([r["i2v_iou"] for r in rs])), 4)
            agg["i2v_pass"] = pct([r["i2v_pass"] for r in rs])
        out[set_] = agg
    return out


def tokenizer_ceiling(pipe, n: int = 32, num_frames: int | None = None) -> dict | None:
    """The scores of a perfect model: `n` ground-truth validation clips (fixed by PROMPT_SEED) encoded
    and decoded by the pipeline's video tokenizer, then scored like generated videos. A model can at
    best reproduce its tokenizer's reconstructions, so this row says how much of a shortfall is the
    tokenizer's (a blurry reconstruction of an 8 reads as a 3 in some frames). None when the pipeline
    has no `video_tokenizer`. num_frames (the long set): clips of that length on the world's toroidal
    canvas (`edges="wrap"`), scored like the long set (`score_long`), with per-segment rates too."""
    vt = getattr(pipe, "video_tokenizer", None)
    if vt is None:
        return None
    cfg = WORLD if num_frames is None else dataclasses.replace(WORLD, num_frames=num_frames, edges="wrap")
    rng = np.random.default_rng([PROMPT_SEED, 2])
    rows, psnrs = [], []
    for _ in range(n):
        video, caption, _ = D.sample_clip("val", rng, cfg)
        with torch.inference_mode():
            recon = _check_video(np.asarray(vt.decode(vt.encode(video)))[:cfg.num_frames], caption, cfg.num_frames)
        psnrs.append(D.psnr(video, recon))
        it = _item("val", caption)
        score = score_video if num_frames is None else score_long
        rows.append({"set": "val", **score(recon, it.digit, it.colour, it.direction)})
    out = {**aggregate(rows)["val"], "psnr_db": round(float(np.mean(psnrs)), 2)}
    if num_frames is not None:
        out["per_segment"] = aggregate_segments(rows)["val"]
    return out


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


# ------------------------------------------------------------------------------------------ long videos
def check_lengths(lengths) -> list[int]:
    """The lengths of the long set, checked: each 1 + 16k frames (k >= 1: 17, 33, 65, 129, ...), so that
    every clip splits into whole segments (`segments`). Sorted, without repeats."""
    out = sorted({int(n) for n in lengths})
    bad = [n for n in out if n < WORLD.num_frames or (n - 1) % SEGMENT]
    if not out or bad:
        raise LumosError(f"long-video lengths must be 1 + {SEGMENT}k frames (17, 33, 65, 129, ...), got "
                         f"{', '.join(map(str, bad)) or 'none'}")
    return out


def segments(num_frames: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] pixel frames of each segment of a long video: the first 17 frames (the
    clip length of training: the first latent frame and 4 more), then every SEGMENT = 16 frames (4
    latent frames). 65 frames -> (0, 17), (17, 33), (33, 49), (49, 65)."""
    first = WORLD.num_frames
    return [(0, first)] + [(a, a + SEGMENT) for a in range(first, num_frames - SEGMENT + 1, SEGMENT)]


_SEGMENT_KEYS = ("digit_pred", "digit_correct", "colour_pred", "colour_correct", "direction_pred", "displacement",
                 "direction_correct", "stable", "all_correct")


def score_long(video, digit: int, colour: str, direction: str, image: np.ndarray | None = None) -> dict:
    """A long video (uint8 [T, H, W, 3], T = 1 + 16k) against its caption, read on a toroidal canvas
    (`analyse_video(wrap=True)`, each frame read once): the scores of the whole clip (`score_video`)
    plus "segments", one compact row per segment (`segments`): digit, colour, direction, stable."""
    a = analyse_video(video, wrap=True)
    row = score_video(a, digit, colour, direction, image)
    row["segments"] = []
    for lo, hi in segments(len(a.area)):
        seg = score_video(a.frames(lo, hi), digit, colour, direction)
        row["segments"].append({"frames": [lo, hi], **{k: seg[k] for k in _SEGMENT_KEYS}})
    return row


def aggregate_segments(rows: list[dict]) -> dict:
    """Per set: one entry per segment index across the set's clips (`segment`, its `frames`, videos,
    and the share (%) right of digit / colour / direction / stable / all four): the drift over time."""
    out = {}
    for set_, rs in by_set(rows):
        per = []
        for i, first in enumerate(rs[0]["segments"]):                   # the clips of a set share one length
            segs = [r["segments"][i] for r in rs]
            per.append({"segment": i, "frames": first["frames"], "videos": len(segs),
                        **{k: pct([s[k] for s in segs]) for k in RATES}})
        out[set_] = per
    return out


def evaluate_long(pipe, items: list[Item], lengths, seed: int = 0, *, batch_size: int = 8,
                  window_frames: int | None = None, sink_frames: int | None = None, ceiling_clips: int = 8,
                  progress: bool = True, **settings) -> dict:
    """The long-video set: every item generated at each of `lengths` (pixel frames, 1 + 16k, see
    `check_lengths`) with `pipe`, the same batches and seeds as `evaluate` (batch b of set s of length L
    draws from `_generator(seed, s, b, L)`), scored whole and per segment on the toroidal canvas
    (`score_long`). window_frames / sink_frames: the pipeline's rolling KV-cache window (latent frames
    kept besides the sinks / from the start), passed only when given. ceiling_clips > 0 also scores that
    many of the world's own wrapped clips of each length through the video tokenizer.

    Returns a report for `write_report`: settings (of the longest length), timing, "long" = {window_frames,
    sink_frames, lengths: {str(L): {num_frames, segments, aggregates (whole clips, per set),
    per_segment (per set), median_s_per_video, ceiling}}}, and one row per video (with its segments)."""
    from tqdm.auto import tqdm

    check_seed(seed)
    lengths = check_lengths(lengths)
    # every batch of every length checked before any is generated
    calls = {n: check_run(pipe, items, batch_size, num_frames=n, window_frames=window_frames,
                          sink_frames=sink_frames, **settings) for n in lengths}
    # the settings line names the window used (the one given, else the model's default)
    call = calls[lengths[-1]]
    filled = pipe.settings(**call).to_dict() if hasattr(pipe, "settings") else call
    rows, per_length, all_s = [], {}, []
    bar = tqdm(total=len(items) * len(lengths), desc="eval --long", unit="video", disable=not progress)
    for n in lengths:
        length_rows, per_video_s = [], []
        for it, index, v, seconds in _generate(pipe, items, seed, batch_size, calls[n], bar, key=(n,)):
            per_video_s.append(seconds)
            length_rows.append({"set": it.set, "index": index, "caption": it.caption, "num_frames": n,
                                "expected": {"digit": it.digit, "colour": it.colour, "direction": it.direction},
                                **score_long(v, it.digit, it.colour, it.direction, it.image),
                                "seconds": round(seconds, 4)})
        per_length[str(n)] = {
            "num_frames": n, "segments": [list(x) for x in segments(n)],
            "aggregates": aggregate(length_rows), "per_segment": aggregate_segments(length_rows),
            "median_s_per_video": round(statistics.median(per_video_s), 4) if per_video_s else None,
            "ceiling": tokenizer_ceiling(pipe, ceiling_clips, n) if ceiling_clips > 0 else None,
        }
        rows += length_rows
        all_s += per_video_s
    bar.close()
    return {
        "seed": seed, "settings": filled, "batch_size": batch_size, "prompt_seed": PROMPT_SEED,
        "torch_threads": torch.get_num_threads(), "device": str(getattr(pipe, "device", "cpu")),
        "timing": {"median_s_per_video": None, "frames_per_video": lengths[-1], "batch_size": batch_size,
                   "note": f"per length in long.lengths[L].median_s_per_video, {torch.get_num_threads()} torch threads"},
        "aggregates": {},
        "next_token": None,
        "ceiling": None,
        # the window given, else the pipeline's default one (its pipeline.json)
        "long": {"window_frames": filled.get("window_frames"), "sink_frames": filled.get("sink_frames"),
                 "segment_frames": SEGMENT, "lengths": per_length},
        "videos": rows,
    }


# ------------------------------------------------------------------------------------------ report
_COLUMNS = (("videos", "videos"), ("digit_correct", "digit %"), ("colour_correct", "colour %"),
            ("direction_correct", "direction %"), ("stable", "identity stable %"), ("all_correct", "all four %"),
            ("i2v_iou", "I2V IoU"), ("i2v_pass", "I2V pass %"))


def format_markdown(report: dict) -> str:
    """The aggregates as a Markdown table (held-out row first: it is the number that matters), then
    the timing and the next-token comparison."""
    if report.get("long"):
        return format_long_markdown(report)
    aggs = report["aggregates"]
    lines = _set_table(aggs, report.get("ceiling"))
    ceiling = report.get("ceiling")
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


def _set_table(aggs: dict, ceiling: dict | None) -> list[str]:
    """The rows of the per-set table (held-out first), and the tokenizer ceiling's."""
    lines = ["| set | " + " | ".join(label for _, label in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for set_ in ("heldout", "val", "i2v"):
        if set_ in aggs:
            cells = [_cell(aggs[set_].get(key)) for key, _ in _COLUMNS]
            lines.append(f"| {set_} | " + " | ".join(cells) + " |")
    if ceiling:
        cells = [_cell(ceiling.get(key)) for key, _ in _COLUMNS]
        lines.append("| tokenizer ceiling | " + " | ".join(cells) + " |")
    return lines


_SEGMENT_COLUMNS = (("videos", "videos"), ("digit_correct", "digit %"), ("colour_correct", "colour %"),
                    ("direction_correct", "direction %"), ("stable", "identity stable %"),
                    ("all_correct", "all four %"))


def format_long_markdown(report: dict) -> str:
    """The long-video set: per length, the whole-clip table (as `format_markdown`'s) and a per-segment
    table (one row per set and segment, then the tokenizer ceiling's segments): the drift over time."""
    long = report["long"]
    window = ("all latent frames in the cache" if long.get("window_frames") is None
              else f"window {long['window_frames']} latent frames")
    lines = [f"Long videos: {window}, {long.get('sink_frames') or 0} sink frames; scored on the toroidal canvas, "
             f"whole clips and per segment (the first 17 frames, then every {long['segment_frames']})."]
    for key, L in long["lengths"].items():
        lines += ["", f"### {L['num_frames']} frames", "", "Whole clips:", ""]
        lines += _set_table(L["aggregates"], L.get("ceiling"))
        lines += ["", "Per segment:", "",
                  "| set | segment | frames | " + " | ".join(label for _, label in _SEGMENT_COLUMNS) + " |",
                  "|---|---:|---|" + "---:|" * len(_SEGMENT_COLUMNS)]
        per = dict(L["per_segment"])
        if L.get("ceiling") and L["ceiling"].get("per_segment"):
            per["tokenizer ceiling"] = L["ceiling"]["per_segment"]
        for set_ in ("heldout", "val", "i2v", "tokenizer ceiling"):
            for seg in per.get(set_, ()):
                lo, hi = seg["frames"]
                cells = [_cell(seg.get(k)) for k, _ in _SEGMENT_COLUMNS]
                lines.append(f"| {set_} | {seg['segment']} | {lo}-{hi - 1} | " + " | ".join(cells) + " |")
        if L.get("median_s_per_video") is not None:
            lines += ["", f"Generation: {L['median_s_per_video']:.3f} s per {L['num_frames']}-frame video (median; "
                          f"batch {report['batch_size']}, {report['torch_threads']} torch threads, {report['device']})."]
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
