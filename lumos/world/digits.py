"""The Moving Digits world: a procedural text-to-video (and text-to-image) dataset small enough to
train a whole Lumos pipeline on a laptop, with captions whose every word can be checked.

A clip shows one (or two) real handwritten digits, the 8x8 scans that ship with scikit-learn
(`sklearn.datasets.load_digits`, 1,797 images from 43 writers, values 0..16), upscaled smoothly
(bicubic) to a `digit_size` px box, painted in one of six colours, moving in a straight line at a
constant speed on a black canvas. The caption says what moves where:

    video, one digit:   "a red 3 moving left"
    video, two digits:  "a red 3 moving left and a blue 7 moving up"
    image:              "a red 3"            (images: a still digit, same palette)

Grammar (`CAPTION_RE` checks a whole caption, `parse_caption` inverts it):

    caption := object (" and " object)*
    object  := "a " COLOUR " " DIGIT [" moving " DIRECTION]     (videos always have the direction,
                                                                 images never do)
    COLOUR  := red | green | blue | yellow | cyan | magenta
    DIGIT   := 0 | 1 | ... | 9
    DIRECTION := left | right | up | down

Design choices, and why:
- Colours are the six saturated corners of the RGB cube (no black, which is the background, and no
  white, which would be a weaker signal for the colour classifier of the evaluation): any two differ
  by 255 in at least one channel, so "which colour is this digit" is never ambiguous.
- Four directions, not eight: 10 digits x 6 colours x 4 directions = 240 combinations is already
  more than a small model sees often; diagonals would only dilute it.
- Speed is uniform in [speed_min, speed_max] px/frame (default 1.0..2.5, capped so that the digit
  stays fully inside the canvas for the whole clip: at 64 px, a 24 px digit and 17 frames it can
  travel at most 40 px). Positions are sub-pixel: the glyph is resampled at every frame, so motion
  is smooth, not in whole-pixel jumps.
- Long clips (`edges="wrap"`): a digit that stays inside a 64 px canvas cannot travel for 65 or 129
  frames, so the canvas can be a torus instead: a digit leaving one edge re-enters from the opposite
  edge (drawn split over both edges while it crosses), keeps its speed and direction, and the
  caption stays true in every frame. Wrap-around, not bouncing: a bounce reverses the motion, and a
  digit "moving left" that moves right half of the time contradicts its caption. With "wrap" the
  speed cap does not apply (any speed in [speed_min, speed_max]) and the start position is anywhere
  on the canvas; the trajectory in the metadata is the box centre modulo the canvas. The default
  `edges="inside"` is the original world, bit for bit. Two-digit clips are not offered with "wrap"
  (on a torus two digits moving different ways meet sooner or later, so "never hide each other"
  cannot hold for long clips); still images stay inside the canvas either way.
- The split is by handwriting sample (`sample_splits`): within each digit class a fixed permutation
  puts 85% of the scans in "train" and 15% in "val". Validation clips therefore show handwriting
  the model has never seen.
- `HELD_OUT` lists 30 (digit, colour, direction) combinations (12.5% of 240) that never appear in
  the "train" split. They are chosen by a rule (digit d holds out colour (d + 2j) mod 6 moving in
  direction (d + j) mod 4, j = 0, 1, 2) so that every digit, colour and direction, every
  (digit, colour) and (digit, direction) pair, and every (colour, direction) pair still appears in
  training: generating a held-out combination means composing things seen separately.
- Splits: "train" = train handwriting, seen combinations; "val" = validation handwriting, seen
  combinations; "heldout" = validation handwriting, held-out combinations only. In a two-digit clip
  every digit follows its split's rule, the two colours differ (so each phrase names one object) and
  the digits never hide each other (box centres at least 3/4 of a box apart in every frame).

Everything is deterministic given an explicit `np.random.Generator`; nothing seeds global state.

    import numpy as np
    from lumos.world.digits import DigitsConfig, sample_clip, write_dataset
    video, caption, meta = sample_clip("train", np.random.default_rng(0))   # uint8 [17, 64, 64, 3]
    long = DigitsConfig(num_frames=65, edges="wrap")                       # a toroidal canvas, any length
    video, caption, meta = sample_clip("val", np.random.default_rng(0), long)  # uint8 [65, 64, 64, 3]
    write_dataset("data/digits-train", n=10_000, split="train", seed=0)     # mp4 files + captions.csv
"""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lumos.utils import LumosError, atomic_dir

# ------------------------------------------------------------------------------------ vocabulary
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
# (dx, dy) unit steps; x grows to the right, y grows downwards (image convention).
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
DIGITS = tuple(range(10))
SPLITS = ("train", "val", "heldout")
EDGES = ("inside", "wrap")   # DigitsConfig.edges: what happens at the canvas edges (module docstring)

_COLOUR_NAMES = tuple(COLOURS)
_DIRECTION_NAMES = tuple(DIRECTIONS)

# (digit, colour, direction) combinations never shown in the "train" split; see the module docstring
# for the rule. Written out so that it can be read (and cited) without running anything.
HELD_OUT: tuple[tuple[int, str, str], ...] = tuple(
    (d, _COLOUR_NAMES[(d + 2 * j) % 6], _DIRECTION_NAMES[(d + j) % 4]) for d in DIGITS for j in range(3)
)
_HELD_OUT_SET = frozenset(HELD_OUT)
ALL_COMBOS: tuple[tuple[int, str, str], ...] = tuple(
    (d, c, r) for d in DIGITS for c in _COLOUR_NAMES for r in _DIRECTION_NAMES
)
SEEN_COMBOS: tuple[tuple[int, str, str], ...] = tuple(x for x in ALL_COMBOS if x not in _HELD_OUT_SET)

# The handwriting split: a fixed permutation (this seed) inside each digit class, first 85% -> train.
SPLIT_SEED = 20_250_711
VAL_FRACTION = 0.15

_OBJ = r"a (red|green|blue|yellow|cyan|magenta) ([0-9])"
_DIR = r" moving (left|right|up|down)"
CAPTION_RE = re.compile(rf"^{_OBJ}{_DIR}(?: and {_OBJ}{_DIR})*$")      # a video caption
IMAGE_CAPTION_RE = re.compile(rf"^{_OBJ}(?: and {_OBJ})*$")           # an image caption
_PHRASE_RE = re.compile(rf"^{_OBJ}(?:{_DIR})?$")


@dataclass(frozen=True)
class DigitsConfig:
    height: int = 64          # canvas height, px
    width: int = 64           # canvas width, px
    num_frames: int = 17      # frames per clip (17 = 1 + 4*4: five latent frames at k_t = 4)
    fps: int = 8              # frames per second written to mp4 (and said in the video prompt)
    num_digits: int = 1       # digits per clip (1 or 2)
    digit_size: int = 24      # side of the upscaled 8x8 glyph box, px (3x)
    speed_min: float = 1.0    # px per frame
    speed_max: float = 2.5    # px per frame; with edges="inside" capped further so the digit never leaves the canvas
    edges: str = "inside"     # "inside": the whole trajectory stays on the canvas; "wrap": toroidal canvas (long clips)

    def __post_init__(self):
        if self.num_digits not in (1, 2):
            raise LumosError(f"num_digits must be 1 or 2, got {self.num_digits}")
        if self.edges not in EDGES:
            raise LumosError(f"edges must be one of {', '.join(EDGES)}, got {self.edges!r}")
        if self.edges == "wrap" and self.num_digits != 1:
            raise LumosError("edges='wrap' supports one digit per clip (on a torus two digits would meet)")
        if self.edges == "wrap" and min(self.height, self.width) < 1.5 * self.digit_size:
            # the bicubic glyph reaches 1.5 source px beyond its box: its two wrapped halves must not meet
            raise LumosError(f"edges='wrap' needs a canvas of at least 1.5 x digit_size = {1.5 * self.digit_size:g} px "
                             f"per side, got {self.width}x{self.height}")
        if self.num_frames < 1 or self.fps < 1:
            raise LumosError("num_frames and fps must be >= 1")
        if not 8 <= self.digit_size <= min(self.height, self.width):
            raise LumosError(f"digit_size {self.digit_size} must be in [8, min(height, width)]")
        if not 0 < self.speed_min <= self.speed_max:
            raise LumosError(f"need 0 < speed_min <= speed_max, got {self.speed_min}, {self.speed_max}")
        if self.speed_min > self.max_speed + 1e-9:
            raise LumosError(f"a digit of {self.digit_size} px moving at speed_min={self.speed_min} px/frame "
                             f"leaves a {self.width}x{self.height} canvas within {self.num_frames} frames "
                             f"(at most {self.max_speed:.3f} px/frame fits)")

    @property
    def max_speed(self) -> float:
        """The fastest speed (px/frame) a clip may have: with edges="inside" the fastest at which the whole
        trajectory stays inside the canvas; with "wrap" simply speed_max."""
        if self.edges == "wrap":
            return self.speed_max
        room = min(self.height, self.width) - self.digit_size
        return min(self.speed_max, room / max(self.num_frames - 1, 1))


class DigitObject(NamedTuple):
    """One digit in a clip. Positions are the top-left corner of its `digit_size` box, px."""
    digit: int               # 0..9, the class of the handwriting sample
    colour: str              # a key of COLOURS
    direction: str | None    # a key of DIRECTIONS, or None for a still digit (images)
    sample_index: int        # index into sklearn's load_digits() images
    x0: float                # box left edge at frame 0
    y0: float                # box top edge at frame 0
    speed: float             # px per frame (0 for a still digit)

    def boxes(self, num_frames: int) -> np.ndarray:
        """float64 `[T, 2]`: (x, y) of the box's top-left corner at every frame."""
        dx, dy = DIRECTIONS[self.direction] if self.direction else (0, 0)
        t = np.arange(num_frames, dtype=np.float64)
        return np.stack([self.x0 + dx * self.speed * t, self.y0 + dy * self.speed * t], axis=1)


# -------------------------------------------------------------------------------------- the data
@functools.lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits: (images float32 `[N, 8, 8]` in [0, 1], labels int64 `[N]`).
    Read once per process from the copy that ships inside scikit-learn (no download)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def sample_splits() -> dict[str, dict[int, np.ndarray]]:
    """{"train"|"val": {digit: sorted sample indices}}: a fixed per-class 85/15 split of the scans."""
    _, labels = load_digit_images()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    out = {"train": {}, "val": {}}
    for d in DIGITS:
        idx = perm[labels[perm] == d]              # this class, in permutation order
        n_val = int(round(VAL_FRACTION * len(idx)))
        out["val"][d] = np.sort(idx[:n_val])
        out["train"][d] = np.sort(idx[n_val:])
    return out


def split_samples(split: str) -> np.ndarray:
    """All handwriting sample indices a split may use (sorted)."""
    which = "train" if split == "train" else "val"      # "heldout" draws validation handwriting
    return np.sort(np.concatenate(list(sample_splits()[which].values())))


# ------------------------------------------------------------------------------------- rendering
def _cubic_weights(u: np.ndarray, n: int) -> np.ndarray:
    """Bicubic (Catmull-Rom, a = -0.5) interpolation weights: `[..., n]` for sample positions `u`
    (in source pixel units, pixel i centred at i) over n source pixels; zero outside the glyph."""
    s = np.abs(u[..., None] - np.arange(n, dtype=np.float64))
    a = -0.5
    return np.where(s <= 1, (a + 2) * s**3 - (a + 3) * s**2 + 1,
                    np.where(s < 2, a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a, 0.0))


def glyph_alpha(glyph: np.ndarray, boxes: np.ndarray, size: int, height: int, width: int,
                wrap: bool = False) -> np.ndarray:
    """Coverage in [0, 1], float32 `[T, height, width]`, of an 8x8 `glyph` scaled to a `size` px box
    whose top-left corner is at `boxes[t]` = (x, y) (sub-pixel). The glyph is sampled at every canvas
    pixel centre with separable bicubic weights, so a fractional move shifts the digit smoothly.

    wrap=True: the canvas is a torus. Each pixel's offset from the box corner is taken modulo the
    canvas, in [-margin, side - margin), which is the sum of the glyph drawn at its shifted copies
    (x + kW, y + lH) and clipped to the canvas (the copies never overlap: the glyph's support, its
    box plus 1.5 source px each side, is narrower than the canvas, `DigitsConfig` checks it)."""
    n = glyph.shape[0]
    scale = size / n
    # offset of each canvas pixel centre from the box corner: pixel c has centre c + 0.5
    du = np.arange(width) + 0.5 - boxes[:, :1]                     # [T, W] px
    dv = np.arange(height) + 0.5 - boxes[:, 1:]                    # [T, H] px
    if wrap:
        margin = 2.0 * scale                                       # the glyph reaches 1.5 source px left/above its box
        du = np.mod(du + margin, width) - margin
        dv = np.mod(dv + margin, height) - margin
    # source coordinate (glyph pixel i centred at i) of each canvas pixel centre
    u = du / scale - 0.5                                           # [T, W]
    v = dv / scale - 0.5                                           # [T, H]
    wu, wv = _cubic_weights(u, n), _cubic_weights(v, n)              # [T, W, 8], [T, H, 8]
    alpha = (wv @ glyph.astype(np.float64)) @ wu.transpose(0, 2, 1)   # [T, H, 8] @ [T, 8, W] -> [T, H, W]
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)


def render(objects: list[DigitObject], cfg: DigitsConfig = DigitsConfig(), num_frames: int | None = None) -> np.ndarray:
    """Paint `objects` (later ones on top) on a black canvas: uint8 `[T, H, W, 3]`, T = num_frames
    (default cfg.num_frames). Pixel = alpha * colour, composited with alpha ("over"). With
    cfg.edges == "wrap" a digit is drawn at its position modulo the canvas (split over two edges
    while it crosses one)."""
    T = cfg.num_frames if num_frames is None else num_frames
    images, _ = load_digit_images()
    canvas = np.zeros((T, cfg.height, cfg.width, 3), np.float32)
    for obj in objects:
        a = glyph_alpha(images[obj.sample_index], obj.boxes(T), cfg.digit_size, cfg.height, cfg.width,
                        wrap=cfg.edges == "wrap")[..., None]
        canvas = canvas * (1 - a) + a * np.asarray(COLOURS[obj.colour], np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------- captions
def caption_of(objects: list[DigitObject]) -> str:
    """"a red 3 moving left and a blue 7 moving up" (still digits: "a red 3")."""
    return " and ".join(f"a {o.colour} {o.digit}" + (f" moving {o.direction}" if o.direction else "")
                        for o in objects)


def parse_caption(caption: str) -> list[tuple[int, str, str | None]]:
    """Invert `caption_of`: [(digit, colour, direction or None), ...] in caption order.
    A caption outside the grammar (module docstring) raises LumosError."""
    caption = caption.strip()
    if not (CAPTION_RE.match(caption) or IMAGE_CAPTION_RE.match(caption)):
        raise LumosError(f"not a Moving Digits caption: {caption!r} (expected e.g. 'a red 3 moving left' "
                         f"or 'a red 3 moving left and a blue 7 moving up')")
    out = []
    for phrase in caption.split(" and "):
        colour, digit, direction = _PHRASE_RE.match(phrase).groups()
        out.append((int(digit), colour, direction))
    return out


def is_held_out(digit: int, colour: str, direction: str | None) -> bool:
    return (digit, colour, direction) in _HELD_OUT_SET


# -------------------------------------------------------------------------------------- sampling
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise LumosError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _sample_objects(split: str, rng: np.random.Generator, cfg: DigitsConfig, still: bool) -> list[DigitObject]:
    """Draw cfg.num_digits objects for `split` with distinct colours (see the module docstring)."""
    combos = {"train": SEEN_COMBOS, "val": SEEN_COMBOS, "heldout": HELD_OUT}[split]
    pool = sample_splits()["train" if split == "train" else "val"]
    S = cfg.digit_size
    objects: list[DigitObject] = []
    tries = 0
    while len(objects) < cfg.num_digits:
        tries += 1
        if tries % 100 == 0:
            objects = []                              # a first digit that leaves no room: start over
        digit, colour, direction = combos[rng.integers(len(combos))]
        if any(o.colour == colour for o in objects):
            continue                                  # two digits of one colour: caption ambiguous
        sample = int(pool[digit][rng.integers(len(pool[digit]))])
        if still:
            direction, speed = None, 0.0
            x0, y0 = rng.uniform(0, cfg.width - S), rng.uniform(0, cfg.height - S)
        elif cfg.edges == "wrap":
            # a torus: any speed, any start; the digit re-enters from the opposite edge
            speed = float(rng.uniform(cfg.speed_min, cfg.speed_max))
            x0, y0 = rng.uniform(0, cfg.width), rng.uniform(0, cfg.height)
        else:
            speed = float(rng.uniform(cfg.speed_min, cfg.max_speed))
            travel = speed * (cfg.num_frames - 1)
            dx, dy = DIRECTIONS[direction]
            # the start range along the motion axis keeps the whole trajectory inside the canvas
            lo_x, hi_x = (travel, cfg.width - S) if dx < 0 else (0, cfg.width - S - travel * abs(dx))
            lo_y, hi_y = (travel, cfg.height - S) if dy < 0 else (0, cfg.height - S - travel * abs(dy))
            x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        obj = DigitObject(int(digit), colour, direction, sample, float(x0), float(y0), speed)
        if any(_too_close(obj, o, cfg) for o in objects):
            continue                                  # one digit would hide the other: draw again
        objects.append(obj)
    return objects


def _too_close(a: DigitObject, b: DigitObject, cfg: DigitsConfig) -> bool:
    """Two digits may touch but not hide each other: in every frame their box centres must be at
    least 3/4 of a box apart along x or y (the strokes fill roughly the middle 3/4 of the box)."""
    T = 1 if a.direction is None else cfg.num_frames
    gap = np.abs(a.boxes(T) - b.boxes(T)).max(axis=1)                  # Chebyshev distance per frame
    return bool((gap < 0.75 * cfg.digit_size).any())


def _metadata(objects: list[DigitObject], cfg: DigitsConfig, split: str, num_frames: int) -> dict:
    half = cfg.digit_size / 2
    wrap = cfg.edges == "wrap"
    size = np.array([cfg.width, cfg.height], np.float64)

    def centres(o: DigitObject) -> np.ndarray:
        c = o.boxes(num_frames) + half                           # [T, 2]
        return np.mod(c, size) if wrap else c                    # a torus: the centre modulo the canvas

    meta = {
        "split": split, "height": cfg.height, "width": cfg.width, "num_frames": num_frames, "fps": cfg.fps,
        "objects": [{
            "digit": o.digit, "colour": o.colour, "direction": o.direction, "sample_index": o.sample_index,
            "speed": o.speed,
            # centre of the digit box per frame, px (x right, y down); modulo the canvas with edges="wrap"
            "trajectory": centres(o).round(3).tolist(),
        } for o in objects],
    }
    if wrap:
        meta["edges"] = "wrap"                 # only then, so that "inside" metadata stays as it always was
    return meta


def sample_clip(split: str, rng: np.random.Generator, cfg: DigitsConfig = DigitsConfig()):
    """One clip of `split` ("train" | "val" | "heldout").

    Returns (video uint8 `[T, H, W, 3]`, caption str, metadata dict with per-object digit, colour,
    direction, sample_index, speed and trajectory (box centre per frame)). Deterministic in `rng`."""
    _check_split(split)
    objects = _sample_objects(split, rng, cfg, still=False)
    return render(objects, cfg), caption_of(objects), _metadata(objects, cfg, split, cfg.num_frames)


def sample_image(split: str, rng: np.random.Generator, cfg: DigitsConfig = DigitsConfig()):
    """One still image for text-to-image: (uint8 `[H, W, 3]`, caption "a red 3", metadata).
    Directions do not exist here, so every (digit, colour) pair is allowed in both "train" and "val"
    (each is seen in training videos anyway); "heldout" is a video-only split."""
    _check_split(split)
    if split == "heldout":
        raise LumosError("the 'heldout' split holds out (digit, colour, direction) combinations; images have "
                         "no direction, use 'train' or 'val'")
    objects = _sample_objects(split, rng, cfg, still=True)
    return render(objects, cfg, num_frames=1)[0], caption_of(objects), _metadata(objects, cfg, split, 1)


# -------------------------------------------------------------------------------------- writing
# h264 yuv420p quality of the mp4 clips. Saturated colours on black lose a little at the digit edges to
# 4:2:0 chroma subsampling: decoded clips are ~36.5 dB PSNR from the rendered ones at any crf (0..18
# measured; the subsampling, not the crf, sets it), well above what the built-in tokenizer
# reconstructs (~32.5 dB). fmt="png" writes lossless frames.
MP4_CRF = 10


def write_dataset(out_dir: str | Path, n: int, split: str, seed: int, cfg: DigitsConfig = DigitsConfig(),
                  kind: str = "video", fmt: str = "mp4") -> Path:
    """Write `n` samples of `split` to `out_dir` (atomically: the folder appears when complete).

    Layout: `media/000000.mp4` (kind "video", fmt "mp4": h264 yuv420p at cfg.fps), or
    `media/000000.png` (kind "image", or fmt "png" for a video, which then becomes a folder of
    lossless `media/000000/000000.png` frames); `captions.csv` with columns `path,caption` (path
    relative to the CSV's folder) for the pre-tokenization tool; `metadata.jsonl` (one metadata dict
    per row, for evaluation); `world.json` (cfg, split, seed, n). Sample i uses the generator
    `np.random.default_rng([seed, i])`, so any sample can be regenerated alone.
    """
    from lumos.media import write_frames, write_image, write_video

    _check_split(split)
    if kind not in ("video", "image") or fmt not in ("mp4", "png"):
        raise LumosError(f"kind must be video|image and fmt mp4|png, got {kind!r}, {fmt!r}")
    out_dir = Path(out_dir)
    rows, metas = [], []
    with atomic_dir(out_dir) as tmp:
        (tmp / "media").mkdir()
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            if kind == "image":
                image, caption, meta = sample_image(split, rng, cfg)
                rel = f"media/{i:06d}.png"
                write_image(tmp / rel, image)
            elif fmt == "mp4":
                video, caption, meta = sample_clip(split, rng, cfg)
                rel = f"media/{i:06d}.mp4"
                write_video(tmp / rel, video, fps=cfg.fps, crf=MP4_CRF)
            else:
                video, caption, meta = sample_clip(split, rng, cfg)
                rel = f"media/{i:06d}"
                write_frames(tmp / rel, video)
            rows.append((rel, caption))
            metas.append({"path": rel, "caption": caption, **meta})
        with open(tmp / "captions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "caption"])
            w.writerows(rows)
        with open(tmp / "metadata.jsonl", "w") as f:
            for m in metas:
                f.write(json.dumps(m) + "\n")
        with open(tmp / "world.json", "w") as f:
            json.dump({"config": asdict(cfg), "split": split, "seed": seed, "n": n, "kind": kind, "fmt": fmt}, f,
                      indent=2)
    return out_dir


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 videos (or images) over all their values (peak 255): the scalar
    form of `lumos.tokenizers.vq.video_psnr`, the one definition the tokenizer metrics use too."""
    import torch

    from lumos.tokenizers.vq import video_psnr

    return float(video_psnr(torch.as_tensor(np.asarray(a))[None], torch.as_tensor(np.asarray(b))[None])[0])
