"""Training batches: records -> capped, CFG-dropped, masked samples -> right-padded tensors.

    batcher = Batcher(source, vocab, BatchOptions(max_frames=7), seed=0, max_seq_len=2048)
    micro = batcher.step_batches(step, global_batch=8, micro_batch=2, rank=0, world=2)   # list of Batch
    # rank r's micro-batches of optimizer step `step`; len(micro) = accumulation steps

A *source* is anything indexable that yields int token arrays of complete video sequences: a
`lumos.data.records.RecordReader`, a list of arrays built with the `Vocab` builders, `SyntheticVideos`
below, or a `ConcatSource` of several (joint image/video training: images are one-frame videos,
so mixed batches need nothing special; different lengths are padded). A source with a
`sample(i, max_frames, rng)` method (RecordReader) caps frames itself (and rewrites the prompt's
frame count); for plain sources the cap is `lumos.data.records.cap_frames`.

Determinism (exact resume, and the same data for any number of ranks):
- the global batch of optimizer step s is samples k = s G .. s G + G - 1 of an endless stream that
  visits every record once per epoch in a seeded permutation (`np.random.default_rng([seed, epoch])`);
- every sample has its own generator, seeded from (seed, step, k): the frame window, the CFG draw
  and the mask depend only on those, never on which rank or micro-batch the sample lands in.
So a checkpoint needs no data-loader state beyond the step, and a 2-rank run sees exactly the
samples of a 1-rank run with the same global batch.

Padding, not packing: each micro-batch is right-padded to its longest sample (rounded up to
`pad_multiple`, so compiled/flex kernels see few distinct shapes) with BOS (= the reference's pad
id) and `valid = False`; padding keys are excluded by the attention mask, and real tokens never
attend to the right anyway (causal + frame-local bidirectional). Packing would need per-document
ids in the masks and positions; at the reference's lengths (one 384p video is ~29k tokens) there is
little to pack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lumos.train.masking import MODES, SCHEDULES, cfg_dropout, corrupt
from lumos.data.records import cap_frames
from lumos.utils import LumosError
from lumos.vocab import Vocab

WINDOWS = ("first", "random")


@dataclass(frozen=True)
class BatchOptions:
    """How records become training samples: the `[batch]` table of a training config."""
    max_frames: int = 7               # latent frames kept per video (reference: the first 7)
    frame_window: str = "first"       # first | random: which max_frames frames of a longer video
    mask_mode: str = "tube"           # tube (AR-DF) | random | per_frame (lumos.train.masking)
    mask_schedule: str = "cosine"     # cosine | linear
    min_mask_rate: float = 0.7        # floor of the mask ratio (released: 0.7)
    cfg_drop_prob: float = 0.1        # P(drop the text before VIDEO_START) per sample (for CFG)
    pad_multiple: int = 1             # round padded lengths up to a multiple (fewer shapes for compile/flex)

    def __post_init__(self):
        for name, allowed in (("frame_window", WINDOWS), ("mask_mode", MODES), ("mask_schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise LumosError(f"{name} = {getattr(self, name)!r} is not one of {allowed}")
        for name in ("max_frames", "pad_multiple"):
            if getattr(self, name) < 1:
                raise LumosError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_mask_rate <= 1.0 or not 0.0 <= self.cfg_drop_prob <= 1.0:
            raise LumosError("min_mask_rate and cfg_drop_prob must be in [0, 1]")


@dataclass
class Batch:
    """One micro-batch. All `[B, L]`."""
    inputs: torch.Tensor    # int64 token ids, masked body tokens replaced by MASK
    targets: torch.Tensor   # int64 visual code at masked visual positions, -100 elsewhere
    valid: torch.Tensor     # bool, False at right padding
    frame: torch.Tensor     # int64 latent frame index of frame-body tokens, -1 elsewhere
    records: list           # record index of each row (for debugging / logging)

    @property
    def num_targets(self) -> int:
        return int((self.targets >= 0).sum())

    @property
    def num_tokens(self) -> int:
        return int(self.valid.sum())

    def to(self, device) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                     self.valid.to(device, non_blocking=True), self.frame.to(device, non_blocking=True),
                     self.records)


# ---------------------------------------------------------------------------------------------- sources
class ConcatSource:
    """Several sources as one (e.g. a video records folder and an image records folder)."""

    def __init__(self, sources):
        self.sources = list(sources)
        self._ends = np.cumsum([len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _locate(self, i: int):
        s = int(np.searchsorted(self._ends, i, side="right"))
        return self.sources[s], i - (int(self._ends[s - 1]) if s else 0)

    def __getitem__(self, i: int) -> np.ndarray:
        src, j = self._locate(int(i))
        return src[j]

    def fetch(self, i: int, max_frames: int | None, rng: np.random.Generator | None, vocab: Vocab) -> np.ndarray:
        """`fetch` on the source that holds record i."""
        src, j = self._locate(int(i))
        return fetch(src, j, max_frames, rng, vocab)


class SyntheticVideos:
    """A procedural text-to-video source for smoke runs, tests and the AR-DF benchmark.

    Sample i (all draws from `np.random.default_rng([seed, i])`): a class c < `classes` (the
    "caption" is two text ids: c and video/image); frame 0 is class c's fixed template of codes with
    a fraction `noise` of its tokens redrawn (`classes=0`: fresh random codes instead, so only the
    frame's own visible tokens say anything about it); every next frame is the previous one with
    `noise` of its tokens redrawn (most of a frame repeats, as in real video). Templates and fresh
    first frames are made of `block` x `block` squares of one code (spatial redundancy: a masked
    token can be inferred from a visible neighbour in its square). With probability
    `image_fraction` the sample is an image (one frame, duration 1, fps 1). `tokenizers()` gives the
    words and colours that let a model trained on them generate from a prompt ("pattern-3 video")."""

    def __init__(self, vocab: Vocab, num: int = 512, frames: int = 3, height: int = 4, width: int = 4,
                 classes: int = 8, noise: float = 0.1, image_fraction: float = 0.25, block: int = 1, seed: int = 0):
        if height % block or width % block:
            raise LumosError(f"synthetic: the {height}x{width} grid is not a multiple of block {block}")
        if classes + 4 > vocab.text_vocab_size:
            raise LumosError(f"synthetic: {classes} classes need {classes + 4} text ids (BOS, a word per class, "
                             f"video, image, unknown), vocab has {vocab.text_vocab_size}")
        self.vocab, self.num, self.frames, self.noise, self.image_fraction = vocab, num, frames, noise, image_fraction
        self.seed, self.classes, self.block, self.grid = seed, classes, block, (height, width)
        self.templates = self._blocks(np.random.default_rng([seed, 2**31]), classes)

    def __len__(self) -> int:
        return self.num

    def tokenizers(self, patch: int = 16):
        """What makes a run on these videos a pipeline that `lumos generate` can use (`lumos.train.outputs`):
        a word-level text tokenizer giving the captions' ids ("pattern-3 video" -> class 3's video, "pattern-3
        image" its image; `[BOS]` 0, "pattern-c" 1 + c, then "video", "image", `[UNK]`), and a video tokenizer
        that paints each code as a `patch` x `patch` tile of its own colour (`lumos.tokenizers.palette`)."""
        from lumos.tokenizers.palette import PaletteTokenizer
        from lumos.tokenizers.text import TextTokenizer

        words = [f"pattern-{c}" for c in range(self.classes)] + ["video", "image"]
        return TextTokenizer.from_words(words), PaletteTokenizer(self.vocab.codebook_size, patch)

    def _blocks(self, rng, n: int) -> np.ndarray:
        """n random frames `[n, h, w]` of block x block squares of one code."""
        (h, w), b = self.grid, self.block
        codes = rng.integers(0, self.vocab.codebook_size, (n, h // b, w // b))
        return codes.repeat(b, axis=1).repeat(b, axis=2)

    def _redraw(self, rng, grid):
        hit = rng.random(grid.shape) < self.noise
        return np.where(hit, rng.integers(0, self.vocab.codebook_size, grid.shape), grid)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.num:
            raise IndexError(f"synthetic sample {i} out of range for {self.num}")
        rng = np.random.default_rng([self.seed, int(i)])
        c = int(rng.integers(self.classes)) if self.classes else 0
        image = bool(rng.random() < self.image_fraction)
        first = self.templates[c] if self.classes else self._blocks(rng, 1)[0]
        frames = [self._redraw(rng, first)]
        for _ in range(0 if image else self.frames - 1):
            frames.append(self._redraw(rng, frames[-1]))
        text = [1 + c, 1 + self.classes + int(image)]  # id 0 is BOS; the words of `tokenizers()`
        if image:
            return self.vocab.build_t2i(text, frames[0])
        return self.vocab.build_t2v(text, np.stack(frames), duration=1, fps=len(frames))


def open_source(paths: list[str]):
    """Record folders -> one source (`RecordReader`, or a `ConcatSource` of several) and its vocab."""
    from lumos.data.records import RecordReader  # lazily: the records module is only needed for real data

    readers = [RecordReader(p) for p in paths]
    for r in readers[1:]:
        if r.vocab != readers[0].vocab:
            raise LumosError(f"{r.root} was tokenized with a different vocabulary than {readers[0].root}")
    return (readers[0] if len(readers) == 1 else ConcatSource(readers)), readers[0].vocab


def fetch(source, i: int, max_frames: int | None, rng: np.random.Generator | None, vocab: Vocab) -> np.ndarray:
    """Record i with at most `max_frames` latent frames (the first ones, or a random window if `rng`)."""
    if isinstance(source, ConcatSource):
        return source.fetch(i, max_frames, rng, vocab)
    if hasattr(source, "sample"):
        return np.asarray(source.sample(i, max_frames, rng), np.int64)
    tokens = np.asarray(source[i], np.int64)
    n = int((tokens == vocab.frame_start).sum())
    if max_frames is None or n <= max_frames:
        return tokens
    start = int(rng.integers(0, n - max_frames + 1)) if rng is not None else 0
    return cap_frames(tokens, vocab, max_frames, start)


# ---------------------------------------------------------------------------------------------- batches
def sample_seed(seed: int, step: int, k: int) -> int:
    """A 63-bit seed for sample k of optimizer step `step` (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([seed, step, k]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def collate(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], records: list, pad_id: int,
            pad_multiple: int = 1) -> Batch:
    """Right-pad per-sample (inputs, targets, frame) `[L_i]` tensors into a `Batch`."""
    L = max(r[0].numel() for r in rows)
    L = -(-L // pad_multiple) * pad_multiple
    B = len(rows)
    inputs = torch.full((B, L), pad_id, dtype=torch.long)
    targets = torch.full((B, L), -100, dtype=torch.long)
    frame = torch.full((B, L), -1, dtype=torch.long)
    valid = torch.zeros((B, L), dtype=torch.bool)
    for b, (x, t, f) in enumerate(rows):
        n = x.numel()
        inputs[b, :n], targets[b, :n], frame[b, :n], valid[b, :n] = x, t, f, True
    return Batch(inputs, targets, valid, frame, records)


class Batcher:
    """Deterministic micro-batches for (step, rank): see the module docstring. A sample longer than
    `max_seq_len` tokens (the model's limit; 0: no check) is an error."""

    def __init__(self, source, vocab: Vocab, options: BatchOptions, seed: int = 0, max_seq_len: int = 0):
        if len(source) == 0:
            raise LumosError("the training source has no records")
        self.source, self.vocab, self.opt, self.seed, self.max_seq_len = source, vocab, options, seed, max_seq_len
        self._perm_epoch, self._perm = -1, None

    def record_index(self, k: int) -> int:
        """Record of sample k of the endless stream (a fresh seeded permutation every epoch)."""
        n = len(self.source)
        epoch, j = divmod(k, n)
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = np.random.default_rng([self.seed, epoch]).permutation(n), epoch
        return int(self._perm[j])

    def step_batches(self, step: int, global_batch: int, micro_batch: int, rank: int = 0,
                     world: int = 1) -> list[Batch]:
        """This rank's micro-batches of optimizer step `step`. The global batch is split into
        `global_batch / (micro_batch world)` accumulation steps; in each, rank r takes rows
        r micro_batch .. (r + 1) micro_batch - 1."""
        per_micro = micro_batch * world
        if global_batch % per_micro:
            raise LumosError(f"global batch {global_batch} is not a multiple of micro_batch {micro_batch} x "
                             f"{world} ranks")
        out = []
        for a in range(global_batch // per_micro):
            ks = [a * per_micro + rank * micro_batch + j for j in range(micro_batch)]
            out.append(self.micro(step, global_batch, ks))
        return out

    def micro(self, step: int, global_batch: int, ks: list[int]) -> Batch:
        """The samples at positions `ks` of step `step`'s global batch, collated."""
        o = self.opt
        rows, records = [], []
        for k in ks:
            rec = self.record_index(step * global_batch + k)
            s = sample_seed(self.seed, step, k)
            gen = torch.Generator().manual_seed(s)
            rng = np.random.default_rng(s) if o.frame_window == "random" else None
            tokens = fetch(self.source, rec, o.max_frames, rng, self.vocab)
            (tokens,), _ = cfg_dropout([tokens], self.vocab, o.cfg_drop_prob, gen)
            if self.max_seq_len and len(tokens) > self.max_seq_len:
                raise LumosError(f"record {rec} has {len(tokens)} tokens after capping to {o.max_frames} frames, "
                                 f"more than the model's max_seq_len {self.max_seq_len}; lower max_frames")
            x = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))[None]
            inputs, targets, frame, _ = corrupt(x, self.vocab, gen, o.mask_mode, o.mask_schedule, o.min_mask_rate)
            rows.append((inputs[0], targets[0], frame[0]))
            records.append(rec)
        return collate(rows, records, self.vocab.bos, o.pad_multiple)
