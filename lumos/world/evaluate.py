"""`lumos eval`: generate the built-in Moving Digits world and score every video automatically.

    lumos eval                                            # the built-in model, default prompt sets, seed 0
    lumos eval --model runs/digits/final --out eval-digits --num-prompts 120 --batch-size 16
    lumos eval --sets heldout --num-inference-steps 8 --guidance-scale 3 --no-next-token

Every caption of the world says three checkable things ("a red 3 moving left"), so a generated video
can be graded without a person: the scorers below read the digit, its colour and its direction off
the pixels, check that the digit keeps its identity over the clip and, for image-to-video, that it is
the digit of the given image. They are pure functions of a uint8 video `[T, H, W, 3]` and were
checked on ground-truth clips of `lumos.digits` (and on corrupted ones, which must fail) in
`tests/test_evaluate.py`.

How a frame is read (`analyse_video`):
- brightness = max over RGB / 255 (the palette's colours are saturated corners of the RGB cube, so
  this is the glyph's coverage whatever its colour); digit pixels = brightness > BRIGHT, minus
  specks (connected components smaller than a tenth of the largest), so a few stray pixels of a
  generated video neither move the bounding box nor the centroid;
- the digit's crop (bounding box, padded to a square so a "1" stays thin) is area-averaged to 8x8
  and scaled to 0..16, like scikit-learn's digits; the classifier (an RBF SVM fitted at start-up in
  1-2 s, never saved) is trained on the *same* canonical crops of the scikit-learn scans rendered the
  way `lumos.digits` renders them (sharp and blurred), so training and test features match. It is fitted on the
  "train" handwriting only: on the val / heldout clips (validation handwriting) its accuracy is an
  honest estimate for handwriting it has never seen, which is what a generated digit is;
- colour = the palette colour nearest to the median chromaticity (RGB / max channel) of the bright
  pixels, so anti-aliased edges (dim copies of the colour) vote for the right colour;
- position = the brightness-weighted centroid of the digit pixels.

Per video (`score_video`), against the caption's (digit, colour, direction):
- digit: majority class over the frames where a digit is visible; per-frame agreement reported;
- colour: majority colour over frames;
- direction: least-squares slope of the centroid track times (T - 1) = the net displacement; the
  dominant axis and its sign name the direction, "static" below MIN_DISPLACEMENT px;
- identity stable: a digit in every frame, >= 80% of frames of the majority class, >= 90% of the
  majority colour, and every frame's area within [1/2, 2] of the median area;
- I2V similarity: IoU of the binarised 16x16 canonical crops of the given image and of each of the
  first generated latent frame's pixel frames (frames 1..4), plus the same predicted class.

Measured on ground truth (tests/test_evaluate.py; 500 val + 500 heldout clips): digit 98.2%, colour
100%, direction 100%, identity stable 99.4-99.6%, I2V pass 99.6-99.8%. Corrupted clips fail: a
repainted digit 0% colour, a time-reversed clip 0% direction, a digit swapped mid-clip 0% stable, a
blank video fails everything.

`evaluate(pipe, items, seed, ...)` runs a pipeline over the prompt sets (val captions, every held-out
combination, a small image-to-video set), scores and aggregates them, times the generation and
compares it with next-token decoding of the same model, and scores ground-truth clips after a round
trip through the pipeline's video tokenizer (the "tokenizer ceiling": a model cannot draw sharper
than its tokenizer decodes, and a blurry 8 reads as a 3 in some frames); `write_report` writes
report.json and report.md. The CLI (`run`) is a thin layer over these.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lumos.world import digits as D
from lumos.utils import LumosError, atomic_write, atomic_write_json

# --------------------------------------------------------------------------------------- thresholds
BRIGHT = 0.3             # brightness (max channel / 255) above which a pixel belongs to the digit
COLOUR_BRIGHT = 0.5      # only the brighter digit pixels vote for the colour (edges are dim and blurry)
MIN_AREA = 12            # px: fewer digit pixels than this and the frame shows no digit (a "1" has ~60)
SPECK_FRACTION = 0.1     # components smaller than this fraction of the largest one are noise
MIN_DISPLACEMENT = 8.0   # px over the clip; the world's slowest digit travels 16 px in 17 frames
DIGIT_AGREEMENT = 0.8    # identity: fraction of frames that must show the majority digit
COLOUR_AGREEMENT = 0.9   # identity: fraction of frames that must show the majority colour
AREA_RANGE = (0.5, 2.0)  # identity: every frame's digit area within this factor of the median area
I2V_FRAMES = 4           # image-to-video: compare the given image with frames 1..4 (the first generated latent frame)
I2V_MIN_IOU = 0.5        # image-to-video: mean IoU of the canonical masks needed to pass
CANON = 8                # the classifier's input: CANON x CANON, scaled 0..16 like sklearn's digits
CANON_FINE = 16          # the I2V comparison's canonical crop side (finer than 8x8: shapes, not classes)

_PALETTE_NAMES = tuple(D.COLOURS)
_PALETTE = np.array([D.COLOURS[c] for c in _PALETTE_NAMES], np.float32) / 255.0      # (6, 3) in [0, 1]

SETS = ("val", "heldout", "i2v")
PROMPT_SEED = 20_250_801  # the prompt sets are fixed (independent of --seed) so runs stay comparable
WORLD = D.DigitsConfig()  # the geometry the scorers assume: 64x64, 17 frames, 8 fps, 24 px digits


# ------------------------------------------------------------------------------------ reading frames
def _area_matrix(src: int, dst: int) -> np.ndarray:
    """float32 `[dst, src]`: row i averages the source pixels under output bin i (exact area
    resampling: pixel j covers [j, j+1), bin i covers [i src/dst, (i+1) src/dst))."""
    edges = np.arange(dst + 1) * (src / dst)
    j = np.arange(src)
    overlap = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0, None)
    return (overlap / (src / dst)).astype(np.float32)


def canonical_crop(brightness: np.ndarray, mask: np.ndarray, size: int = CANON) -> np.ndarray | None:
    """The digit of one frame as a `[size, size]` float32 image scaled 0..16 (sklearn's scale), or
    None when `mask` has fewer than MIN_AREA pixels.

    brightness: float `[H, W]` in [0, 1]; mask: bool `[H, W]`, the digit's pixels. The bounding box of
    the mask is padded to a square (centred, so the aspect ratio survives), area-averaged to
    size x size and normalised by the 95th percentile of the digit's brightness (a dim generated
    digit reads like a bright one)."""
    if mask.sum() < MIN_AREA:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.where(mask, brightness, 0.0)[y0:y1, x0:x1]
    h, w = crop.shape
    s = max(h, w)
    square = np.zeros((s, s), np.float32)
    square[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = crop
    R = _area_matrix(s, size)
    small = R @ square @ R.T                                                   # [size, size]
    peak = max(float(np.percentile(brightness[mask], 95)), 1e-6)
    return np.clip(small / peak, 0.0, 1.0) * 16.0


def digit_mask(brightness: np.ndarray) -> np.ndarray:
    """bool `[H, W]`: pixels brighter than BRIGHT, without specks (components < SPECK_FRACTION of the largest)."""
    from scipy import ndimage    # scikit-learn's own dependency

    mask = brightness > BRIGHT
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]                                   # component areas, label 1..n
    keep = np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max()) + 1
    return np.isin(labels, keep)


@dataclass
class VideoAnalysis:
    """What the scorers read from a video, per frame t (None / nan where frame t shows no digit)."""
    area: np.ndarray                  # int64 [T]: digit pixels
    centroid: np.ndarray              # float64 [T, 2]: (x, y) px, brightness-weighted; nan without a digit
    canon: list                       # T x (float32 [8, 8] 0..16 or None): the classifier's input
    canon_fine: list                  # T x (float32 [16, 16] 0..16 or None): the I2V comparison's input
    colour: list                      # T x (palette name or None)
    digit: list                       # T x (int 0..9 or None)

    @property
    def present(self) -> np.ndarray:
        """bool [T]: frames that show a digit."""
        return self.area >= MIN_AREA


def analyse_video(video: np.ndarray) -> VideoAnalysis:
    """Segment, locate, colour and classify the digit in every frame of a uint8 video `[T, H, W, 3]`
    (a single image `[H, W, 3]` is one frame)."""
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[None]
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise LumosError(f"expected a uint8 video [T, H, W, 3], got {video.dtype} {tuple(video.shape)}")
    rgb = video.astype(np.float32) / 255.0                                    # [T, H, W, 3]
    bright = rgb.max(axis=-1)                                                 # [T, H, W]
    T, H, W = bright.shape
    yy, xx = np.mgrid[0:H, 0:W]
    area = np.zeros(T, np.int64)
    centroid = np.full((T, 2), np.nan)
    canon, canon_fine, colour = [None] * T, [None] * T, [None] * T
    for t in range(T):
        m = digit_mask(bright[t])
        area[t] = m.sum()
        if area[t] < MIN_AREA:
            continue
        wgt = bright[t] * m
        centroid[t] = ((wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum())
        canon[t] = canonical_crop(bright[t], m, CANON)
        canon_fine[t] = canonical_crop(bright[t], m, CANON_FINE)
        colour[t] = _frame_colour(rgb[t], bright[t], m)
    digit: list = [None] * T
    frames = [t for t in range(T) if canon[t] is not None]
    if frames:
        pred = digit_classifier().predict(np.stack([canon[t].ravel() for t in frames]) / 16.0)
        for t, p in zip(frames, pred):
            digit[t] = int(p)
    return VideoAnalysis(area, centroid, canon, canon_fine, colour, digit)


def _frame_colour(rgb: np.ndarray, bright: np.ndarray, mask: np.ndarray) -> str:
    """Palette name nearest to the median chromaticity (rgb / max channel) of the frame's bright digit pixels."""
    sel = mask & (bright > COLOUR_BRIGHT)
    if sel.sum() < 3:
        sel = mask                                   # a faint digit: let all its pixels vote
    chroma = rgb[sel] / np.maximum(bright[sel], 1e-6)[:, None]               # [n, 3], max channel = 1
    c = np.median(chroma, axis=0)
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE - c) ** 2).sum(axis=1)))]


# ------------------------------------------------------------------------------------ the classifier
# Training glyphs are rendered at these sub-pixel offsets of the 24 px box (the bicubic resampling of
# a moving digit changes its anti-aliased edges from frame to frame) and blurred by these Gaussian
# sigmas (px): a generated frame comes out of a video tokenizer, whose reconstructions are softer
# than the renders (~29 dB). On reconstructions by a tokenizer of the Moving Digits world, the blurred
# copies raised per-frame accuracy from 87% to 90% and per-clip accuracy from 90% to 95%, and cost
# nothing on clean renders.
_TRAIN_OFFSETS = ((4.0, 4.0), (4.5, 4.25))
_TRAIN_BLUR = (0.0, 1.0, 1.5)


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """An RBF SVM on canonical 8x8 crops (`canonical_crop` / 16) of the scikit-learn scans of the
    "train" handwriting, each rendered as `lumos.digits` renders it (24 px box, bicubic) at a few
    sub-pixel offsets, sharp and blurred. Fitted once per process (~1-2 s with the data loading);
    never persisted."""
    from scipy import ndimage
    from sklearn.svm import SVC

    images, labels = D.load_digit_images()
    S = WORLD.digit_size
    boxes = np.array(_TRAIN_OFFSETS, np.float64)
    X, y = [], []
    for i in D.split_samples("train"):
        for alpha in D.glyph_alpha(images[i], boxes, S, S + 8, S + 8):        # [S+8, S+8] per offset
            for sigma in _TRAIN_BLUR:
                a = ndimage.gaussian_filter(alpha, sigma) if sigma else alpha
                a = a * (alpha.max() / max(a.max(), 1e-6))                     # blur spreads, not dims
                c = canonical_crop(a, digit_mask(a), CANON)
                if c is not None:
                    X.append(c.ravel() / 16.0)
                    y.append(int(labels[i]))
    return SVC(C=10.0, gamma="scale").fit(np.stack(X), np.array(y))


# ------------------------------------------------------------------------------------------ scorers
@dataclass
class Score:
    """One scorer's verdict: `value` is what was measured (a digit, a colour name, a direction, a
    similarity), `passed` whether it matches the expectation (None when none was given), `info`
    JSON-able details (per-frame agreement, displacement, ...)."""
    value: object
    passed: bool | None
    info: dict


def _analysis(x) -> VideoAnalysis:
    return x if isinstance(x, VideoAnalysis) else analyse_video(x)


def _majority(values: list) -> tuple[object, float]:
    """(most common non-None value or None, its share of ALL frames): a frame without a digit counts
    against the agreement."""
    seen = [v for v in values if v is not None]
    if not seen:
        return None, 0.0
    value, n = Counter(seen).most_common(1)[0]
    return value, n / len(values)


def score_digit(video, expected: int | None = None) -> Score:
    """The majority digit class over frames. info: agreement (share of frames showing it), per_frame."""
    a = _analysis(video)
    value, agreement = _majority(a.digit)
    passed = None if expected is None else value == expected
    return Score(value, passed, {"agreement": round(agreement, 4), "per_frame": a.digit})


def score_colour(video, expected: str | None = None) -> Score:
    """The majority palette colour over frames. info: agreement, per_frame."""
    a = _analysis(video)
    value, agreement = _majority(a.colour)
    passed = None if expected is None else value == expected
    return Score(value, passed, {"agreement": round(agreement, 4), "per_frame": a.colour})


def score_direction(video, expected: str | None = None) -> Score:
    """"left" | "right" | "up" | "down" | "static" from the centroid track: the least-squares
    slope (px/frame) over the frames with a digit, times T - 1, is the net displacement; its larger
    axis and sign name the direction, unless it is shorter than MIN_DISPLACEMENT px ("static").
    info: displacement [dx, dy] px (x right, y down)."""
    a = _analysis(video)
    T = len(a.area)
    t = np.flatnonzero(a.present)
    if len(t) < 2:
        value, disp = "static", [0.0, 0.0]
    else:
        xy = a.centroid[t]                                                   # [n, 2]
        slope = np.polyfit(t.astype(np.float64), xy, 1)[0]                   # [2]: px per frame, x and y
        dx, dy = slope * (T - 1)
        disp = [round(float(dx), 3), round(float(dy), 3)]
        if max(abs(dx), abs(dy)) < MIN_DISPLACEMENT:
            value = "static"
        elif abs(dx) >= abs(dy):
            value = "right" if dx > 0 else "left"
        else:
            value = "down" if dy > 0 else "up"
    passed = None if expected is None else value == expected
    return Score(value, passed, {"displacement": disp})


def score_identity(video) -> Score:
    """Whether the digit stays itself: a digit in every frame, >= DIGIT_AGREEMENT of the frames show
    the majority class, >= COLOUR_AGREEMENT the majority colour, and every frame's area lies within
    AREA_RANGE of the median area (no vanishing, no blowing up). value = passed = that verdict."""
    a = _analysis(video)
    _, digit_agree = _majority(a.digit)
    _, colour_agree = _majority(a.colour)
    present = bool(a.present.all())
    med = float(np.median(a.area)) if len(a.area) else 0.0
    ratio = a.area / med if med > 0 else np.zeros(len(a.area))
    area_ok = bool(med > 0 and ratio.min() >= AREA_RANGE[0] and ratio.max() <= AREA_RANGE[1])
    ok = present and digit_agree >= DIGIT_AGREEMENT and colour_agree >= COLOUR_AGREEMENT and area_ok
    return Score(ok, ok, {"all_frames_present": present, "digit_agreement": round(digit_agree, 4),
                          "colour_agreement": round(colour_agree, 4),
                          "area_ratio": [round(float(ratio.min()), 3), round(float(ratio.max()), 3)]})


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two canonical crops binarised at half scale (8 of 16)."""
    ma, mb = a > 8.0, b > 8.0
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 0.0


def score_i2v(video, image: np.ndarray) -> Score:
    """Image-to-video: is the digit of the first generated frames the digit of `image` (uint8
    `[H, W, 3]`)? value = mean IoU over frames 1..I2V_FRAMES of the binarised 16x16 canonical crops
    (a frame without a digit scores 0); passed = IoU >= I2V_MIN_IOU and the same predicted class
    (image vs the majority of those frames). Position is not compared: the crops are centred."""
    img = analyse_video(image)
    a = _analysis(video)
    frames = range(1, min(1 + I2V_FRAMES, len(a.area)))
    ref = img.canon_fine[0]
    ious = [0.0 if ref is None or a.canon_fine[t] is None else _iou(ref, a.canon_fine[t]) for t in frames]
    iou = float(np.mean(ious)) if ious else 0.0
    video_class, _ = _majority([a.digit[t] for t in frames])
    same_class = img.digit[0] is not None and video_class == img.digit[0]
    return Score(round(iou, 4), bool(iou >= I2V_MIN_IOU and same_class),
                 {"per_frame_iou": [round(x, 4) for x in ious], "image_class": img.digit[0],
                  "video_class": video_class, "same_class": bool(same_class)})


def score_video(video, digit: int, colour: str, direction: str, image: np.ndarray | None = None) -> dict:
    """Every scorer on one video against its caption's (digit, colour, direction): a flat JSON-able row."""
    a = _analysis(video)
    d, c, r, s = score_digit(a, digit), score_colour(a, colour), score_direction(a, direction), score_identity(a)
    row = {
        "digit_pred": d.value, "digit_agreement": d.info["agreement"], "digit_correct": d.passed,
        "colour_pred": c.value, "colour_agreement": c.info["agreement"], "colour_correct": c.passed,
        "direction_pred": r.value, "displacement": r.info["displacement"], "direction_correct": r.passed,
        "stable": s.passed, "stability": s.info,
        "per_frame_digit": d.info["per_frame"],
    }
    row["all_correct"] = bool(d.passed and c.passed and r.passed and s.passed)
    if image is not None:
        i = score_i2v(a, image)
        row.update(i2v_iou=i.value, i2v_same_class=i.info["same_class"], i2v_pass=i.passed)
    return row


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
    - "heldout": every combination of `lumos.digits.HELD_OUT` once (never in training);
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


def _pipe_kwargs(steps, guidance, history_mask_ratio) -> dict:
    return dict(num_frames=WORLD.num_frames, height=WORLD.height, width=WORLD.width, fps=WORLD.fps,
                num_inference_steps=steps, guidance_scale=guidance, history_mask_ratio=history_mask_ratio)


def _check_video(v, caption: str) -> np.ndarray:
    v = np.asarray(v)
    want = (WORLD.num_frames, WORLD.height, WORLD.width, 3)
    if v.dtype != np.uint8 or v.shape != want:
        raise LumosError(f"the pipeline returned {v.dtype} {tuple(v.shape)} for {caption!r}; expected uint8 {want}")
    return v


def evaluate(pipe, items: list[Item], seed: int = 0, *, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, history_mask_ratio: float | None = None,
             batch_size: int = 8, next_token_prompts: int = 2, ceiling_clips: int = 32,
             progress: bool = True) -> dict:
    """Generate every item with `pipe` (a `LumosPipeline`, or anything with its call signature), score
    it and aggregate per set. Sampling arguments left None take the pipeline's defaults; the
    geometry is the world's (64x64, 17 frames, 8 fps). Prompts are batched `batch_size` at a time
    (i2v and text-only prompts in separate batches: a batch gives images for all prompts or none).
    next_token_prompts > 0 also decodes that many prompts with next-token decoding and reports the
    speed ratio (`compare_decoding`; needs a real `LumosPipeline`). ceiling_clips > 0 also scores that
    many ground-truth clips passed through the pipeline's video tokenizer (`tokenizer_ceiling`).

    Returns the report dict (see `write_report`): settings, timing, per-set aggregates, one row per video."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise LumosError(f"batch size must be >= 1, got {batch_size}")
    kwargs = _pipe_kwargs(num_inference_steps, guidance_scale, history_mask_ratio)
    settings = (pipe.settings(**kwargs).to_dict() if hasattr(pipe, "settings") else
                {k: v for k, v in kwargs.items() if v is not None})
    rows, per_video_s = [], []
    bar = tqdm(total=len(items), desc="eval", unit="video", disable=not progress)
    for set_index, set_ in enumerate(SETS):
        group = [it for it in items if it.set == set_]
        for b, start in enumerate(range(0, len(group), batch_size)):
            batch = group[start:start + batch_size]
            images = [it.image for it in batch] if set_ == "i2v" else None
            t0 = time.perf_counter()
            videos = pipe([it.caption for it in batch], image=images, generator=_generator(seed, set_index, b),
                          progress=False, **kwargs)
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
        "seed": seed, "settings": settings, "batch_size": batch_size, "prompt_seed": PROMPT_SEED,
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


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="moving-digits", help="pipeline folder or built-in model name")
    p.add_argument("--out", default="lumos-eval", help="folder for report.json and report.md")
    p.add_argument("--seed", type=int, default=0, help="generation seed (the prompt sets are fixed)")
    p.add_argument("--num-prompts", type=int, default=60, help="validation-split prompts")
    p.add_argument("--num-i2v", type=int, default=8, help="image-to-video prompts")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    p.add_argument("--num-inference-steps", type=int, help="refinement steps per latent frame (default: the model's)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the model's)")
    p.add_argument("--history-mask-ratio", type=float, help="AR-DF history masking (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per pipeline call")
    p.add_argument("--no-next-token", action="store_true", help="skip the next-token speed comparison")
    p.add_argument("--next-token-prompts", type=int, default=2, help="prompts decoded next-token for the speed ratio")
    p.add_argument("--ceiling-clips", type=int, default=32,
                   help="ground-truth clips scored after a round trip through the video tokenizer (0: skip)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")


def check_args(args) -> list[str]:
    """Range checks that need no model; returns the sets."""
    for name in ("num_prompts", "num_i2v", "next_token_prompts", "ceiling_clips"):
        if getattr(args, name) < 0:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("batch_size", "num_inference_steps", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.guidance_scale is not None and not args.guidance_scale >= 0:
        raise LumosError(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    if args.history_mask_ratio is not None and not 0 <= args.history_mask_ratio <= 1:
        raise LumosError(f"--history-mask-ratio must be in [0, 1], got {args.history_mask_ratio}")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not sets or set(sets) - set(SETS):
        raise LumosError(f"--sets {args.sets!r}: choose a comma-separated subset of {','.join(SETS)}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise LumosError(f"--out {args.out}: exists and is not a folder")
    return sets


def run(args) -> int:
    from lumos.pipeline import LumosPipeline, resolve_model

    sets = check_args(args)
    model_dir = resolve_model(args.model)            # a missing model fails before the classifier is fitted
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    items = build_items(args.num_prompts, args.num_i2v, sets)
    if not items:
        raise LumosError("no prompts to evaluate (--num-prompts 0 and no other set)")
    digit_classifier()                               # fit now, not inside the first timed batch
    pipe = LumosPipeline.from_pretrained(model_dir, device=args.device)
    report = evaluate(pipe, items, args.seed, num_inference_steps=args.num_inference_steps,
                      guidance_scale=args.guidance_scale, history_mask_ratio=args.history_mask_ratio,
                      batch_size=args.batch_size,
                      next_token_prompts=0 if args.no_next_token else args.next_token_prompts,
                      ceiling_clips=args.ceiling_clips,
                      progress=not args.no_progress)
    report = {"model": str(args.model), "model_path": str(model_dir), **report}
    json_path, md_path = write_report(report, args.out)
    print(format_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0
