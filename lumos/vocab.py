"""The one vocabulary: special ids, where visual codes live, and the token layout of a sequence.

A Lumos sequence is a conversation turn of text followed by a video (spec `lumos1.md` §1):

    [BOS] text... [SEP] [VIDEO_START] [size(duration)] [size(fps)]
        frame_0 ... frame_{F-1} [VIDEO_END] [SEP]

and one latent frame of h x w codes is

    [FRAME_START] [size(h/g)] [size(w/g)]  (code x w, NEWLINE) x h  [FRAME_END]

where g = `grid_per_size` latent rows per size unit (4 for the released models: a size token counts
32 px, a token covers 8 px). An image is a one-frame video with duration 1 and fps 1.

Two layouts:
- `Vocab.chameleon()`: the released Lumos-1 checkpoints (129,536 ids, visual id = 65,536 + Cosmos code).
- `Vocab.compact(text_vocab_size, codebook_size)`: for small models trained here; text ids first,
  then the specials and size tokens, then the codebook. Size tokens count latent rows (g = 1).

`Vocab` is the one owner of this layout: header lengths (`VIDEO_HEADER`, `FRAME_HEADER`), frame
lengths and code offsets, the all-MASK frame being generated, where the video starts, and where every
token sits relative to the frames (`frame_ids`, `frame_segments`); every other module asks it.

Builders turn (text ids, code grids) into token lists; `parse_video` goes back from tokens to code
grids `[F, h, w]`. They are plain numpy/python: they run in data workers, not on the GPU. The two
segmentation methods take torch token tensors `[B, L]` and stay vectorised (no Python loop over
tokens, no host sync): they run on the GPU in every training step and in the sampler's plan.
"""

from __future__ import annotations

import functools
import string
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Sequence

import numpy as np

from lumos.utils import LumosError, check_keys

if TYPE_CHECKING:
    import torch

VIDEO_PROMPT = (
    "Generate a video with a resolution of {width}x{height}, consisting of {num_frames} frames at "
    "{fps} frames per second, according to the following prompt:\n {caption}"
)


PROMPT_FIELDS = ("caption", "width", "height", "num_frames", "fps")


def check_prompt_template(template: str) -> str:
    """A prompt template must be a str.format pattern naming {caption} and only PROMPT_FIELDS."""
    if not isinstance(template, str):
        raise LumosError(f"prompt template {template!r} must be a string with a {{caption}} field")
    return _check_template(template)


@functools.lru_cache(maxsize=16)
def _check_template(template: str) -> str:
    # Cached: `video_prompt` checks its template on every call (20k calls per `lumos builtin prepare`).
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        ok = "caption" in names and names <= set(PROMPT_FIELDS)
        template.format(caption="a", width=1, height=1, num_frames=1, fps=1)       # nested fields, bad specs
    except (KeyError, IndexError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise LumosError(f"prompt template {template!r} must contain {{caption}} and only the fields "
                         f"{{{'}, {'.join(PROMPT_FIELDS)}}}")
    return template


def video_prompt(caption: str, width: int, height: int, num_frames: int, fps: int,
                 template: str = VIDEO_PROMPT) -> str:
    """The text of a generation prompt. Default: the released models' template (numbers written as
    text; spec §1). A model trained with another template (the built-in one reads the bare caption:
    `lumos.world.builtin`) names it in its pipeline.json (`prompt_template`)."""
    return check_prompt_template(template).format(width=width, height=height, num_frames=num_frames, fps=fps,
                                                  caption=caption)


def duration_seconds(num_frames: int, fps: int) -> int:
    """The duration token's value for a clip of `num_frames` at `fps` (whole seconds, at least 1). One
    definition for the records (training) and the prompts (generation), so the two cannot drift."""
    return max(1, round(num_frames / fps))


class FrameSegments(NamedTuple):
    """Where every token of `[B, L]` token ids sits relative to the latent frames (`Vocab.frame_segments`).
    All `[B, L]` int64. "The latest frame" is the one whose FRAME_START is the last at or before the token."""
    frame: torch.Tensor    # k inside the k-th FRAME_START..FRAME_END segment (both markers included), -1 outside
    latest: torch.Tensor   # number of the latest frame (0, 1, ...), -1 before the first FRAME_START
    start: torch.Tensor    # column of the latest frame's FRAME_START, -1 before the first
    offset: torch.Tensor   # column - start - FRAME_HEADER: position in the latest frame's body (< 0 in its header)
    rows: torch.Tensor     # latent grid of the latest frame, read from its two size tokens; both 0 where there
    cols: torch.Tensor     #   is no such frame or its header is cut off or not sizes 1..max_size


@dataclass(frozen=True)
class Vocab:
    # Header lengths of the layout (module docstring). Class constants, not fields: no layout has others.
    VIDEO_HEADER: ClassVar[int] = 3   # VIDEO_START size(duration) size(fps)
    FRAME_HEADER: ClassVar[int] = 3   # FRAME_START size(h / g) size(w / g)

    name: str                # "chameleon" or "compact"
    vocab_size: int          # rows of the embedding and lm_head
    text_vocab_size: int     # ids < this are text tokens (BPE)
    bos: int                 # prepended to every sequence (also what the reference pads with)
    sep: int                 # end of a conversation turn
    frame_start: int         # opens a latent frame
    frame_end: int           # closes a latent frame
    newline: int             # after every latent row
    size_base: int           # size / duration / fps value n is the id size_base + n
    max_size: int            # largest n a size token can express
    mask: int                # the [MASK] of discrete diffusion
    video_start: int
    video_end: int
    visual_offset: int       # visual code c is the id visual_offset + c
    codebook_size: int       # number of visual codes
    grid_per_size: int       # latent rows (or columns) per unit of a size token

    def __post_init__(self):
        specials = self.special_ids()
        if len(set(specials)) != len(specials):
            raise LumosError(f"vocab {self.name!r}: special ids collide: {specials}")
        if self.visual_offset + self.codebook_size > self.vocab_size:
            raise LumosError(f"vocab {self.name!r}: visual ids end at {self.visual_offset + self.codebook_size} "
                             f"> vocab_size {self.vocab_size}")
        for s in specials + [self.size_base + self.max_size]:
            if self.visual_offset <= s < self.visual_offset + self.codebook_size or not 0 <= s < self.vocab_size:
                raise LumosError(f"vocab {self.name!r}: special id {s} overlaps the visual range or is out of range")

    # ---------------------------------------------------------------------------------- layouts
    @classmethod
    def chameleon(cls) -> "Vocab":
        """The layout of the released Lumos-1 checkpoints (spec §1)."""
        return cls(name="chameleon", vocab_size=129_536, text_vocab_size=65_536, bos=0, sep=8710,
                   frame_start=8197, frame_end=8196, newline=8803, size_base=8804, max_size=198,
                   mask=9003, video_start=9004, video_end=9005, visual_offset=65_536,
                   codebook_size=64_000, grid_per_size=4)

    @classmethod
    def compact(cls, text_vocab_size: int, codebook_size: int, max_size: int = 64) -> "Vocab":
        """Small models: [text | sep, frame_start, frame_end, newline, mask, video_start, video_end |
        size 0..max_size | visual codes]. Size tokens count latent rows directly (grid_per_size 1)."""
        t = text_vocab_size
        visual_offset = t + 7 + max_size + 1
        return cls(name="compact", vocab_size=visual_offset + codebook_size, text_vocab_size=t, bos=0,
                   sep=t, frame_start=t + 1, frame_end=t + 2, newline=t + 3, mask=t + 4, video_start=t + 5,
                   video_end=t + 6, size_base=t + 7, max_size=max_size, visual_offset=visual_offset,
                   codebook_size=codebook_size, grid_per_size=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        check_keys(cls, d, "vocab")
        return cls(**d)

    def special_ids(self) -> list[int]:
        return [self.sep, self.frame_start, self.frame_end, self.newline, self.mask, self.video_start,
                self.video_end]

    # ---------------------------------------------------------------------------------- tokens
    def size_token(self, n: int) -> int:
        if not 0 <= n <= self.max_size:
            raise LumosError(f"size/duration/fps value {n} is outside 0..{self.max_size} for vocab {self.name!r}")
        return self.size_base + int(n)

    def size_value(self, token: int) -> int:
        n = int(token) - self.size_base
        if not 0 <= n <= self.max_size:
            raise LumosError(f"token {token} is not a size token of vocab {self.name!r}")
        return n

    def visual_ids(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise LumosError(f"visual code out of range [0, {self.codebook_size}): "
                             f"min {codes.min()}, max {codes.max()}")
        return codes.astype(np.int64) + self.visual_offset

    # ---------------------------------------------------------------------------------- frame layout
    def body_length(self, h: int, w: int) -> int:
        """Tokens in the body of an h x w latent frame (what lies between its header and FRAME_END):
        h rows of w codes and a NEWLINE."""
        return h * (w + 1)

    def frame_length(self, h: int, w: int) -> int:
        """Tokens in one wrapped latent frame of h x w codes: header, body, FRAME_END."""
        return self.FRAME_HEADER + self.body_length(h, w) + 1

    def code_offsets(self, h: int, w: int) -> np.ndarray:
        """int64 `[h w]`: offset inside a wrapped h x w frame of each code, in raster order
        (the header, then row r's codes at r (w + 1) .. r (w + 1) + w - 1 of the body)."""
        return (self.FRAME_HEADER + np.arange(h)[:, None] * (w + 1) + np.arange(w)[None, :]).reshape(-1)

    def frame_tokens(self, codes: np.ndarray) -> np.ndarray:
        """One latent frame `[h, w]` of codes -> its wrapped token ids (int64)."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise LumosError(f"a latent frame must be [h, w], got shape {codes.shape}")
        self._check_grid(*codes.shape)
        return self._wrap_frame(self.visual_ids(codes))

    def masked_frame(self, h: int, w: int) -> np.ndarray:
        """The wrapped h x w frame with every code MASK (int64): a frame about to be generated."""
        self._check_grid(h, w)
        return self._wrap_frame(np.full((h, w), self.mask, np.int64))

    def _check_grid(self, h: int, w: int) -> None:
        g = self.grid_per_size
        if h % g or w % g:
            raise LumosError(f"latent grid {h}x{w} is not a multiple of {g} (vocab {self.name!r}: one size "
                             f"token unit is {g} latent rows); resize the video to a multiple of the patch")

    def _wrap_frame(self, ids: np.ndarray) -> np.ndarray:
        """`[h, w]` token ids -> FRAME_START size(h/g) size(w/g) (ids of a row, NEWLINE) x h FRAME_END."""
        h, w = ids.shape
        g = self.grid_per_size
        body = np.concatenate([ids, np.full((h, 1), self.newline, np.int64)], axis=1)
        head = [self.frame_start, self.size_token(h // g), self.size_token(w // g)]
        return np.concatenate([np.array(head, np.int64), body.reshape(-1), np.array([self.frame_end], np.int64)])

    def video_tokens(self, frames: np.ndarray | None, duration: int, fps: int, complete: bool = True) -> np.ndarray:
        """`[F, h, w]` codes -> `VIDEO_START dur fps frames... [VIDEO_END SEP]`.

        `complete=False` leaves the video open (a generation prompt: no frames, or the given frames of
        image-to-video / continuation)."""
        parts = [np.array([self.video_start, self.size_token(duration), self.size_token(fps)], np.int64)]
        if frames is not None:
            frames = np.asarray(frames)
            if frames.ndim != 3:
                raise LumosError(f"video codes must be [F, h, w], got shape {frames.shape}")
            parts += [self.frame_tokens(f) for f in frames]
        if complete:
            parts.append(np.array([self.video_end, self.sep], np.int64))
        return np.concatenate(parts)

    def text_turn(self, text_ids: Sequence[int]) -> np.ndarray:
        """`BOS text... SEP` (the prompt turn). `text_ids` come from the text tokenizer without BOS."""
        text_ids = np.asarray(text_ids, np.int64).reshape(-1)
        if text_ids.size and (text_ids.min() < 0 or text_ids.max() >= self.text_vocab_size):
            bad = text_ids[(text_ids < 0) | (text_ids >= self.text_vocab_size)][0]
            raise LumosError(f"text token {bad} is outside the text range [0, {self.text_vocab_size}) of "
                             f"vocab {self.name!r}; was the prompt tokenized with the model's text tokenizer?")
        return np.concatenate([[self.bos], text_ids, [self.sep]]).astype(np.int64)

    # ---------------------------------------------------------------------------------- builders
    def build(self, text_ids: Sequence[int] | None, frames: np.ndarray | None, *, duration: int, fps: int,
              complete: bool = True) -> np.ndarray:
        """The general builder. `text_ids=None` gives the unconditional sequence (it starts at
        VIDEO_START, as CFG dropout and the released sampler do)."""
        video = self.video_tokens(frames, duration, fps, complete)
        if text_ids is None:
            return video
        return np.concatenate([self.text_turn(text_ids), video])

    def build_t2i(self, text_ids, image=None, complete=True) -> np.ndarray:
        """Text-to-image: a one-frame video with duration 1, fps 1. `image` is `[h, w]` codes or None."""
        frames = None if image is None else np.asarray(image)[None]
        return self.build(text_ids, frames, duration=1, fps=1, complete=complete)

    def build_t2v(self, text_ids, frames=None, *, duration: int, fps: int, complete=True) -> np.ndarray:
        """Text-to-video: the training sequence (frames given) or the generation prompt (frames None)."""
        return self.build(text_ids, frames, duration=duration, fps=fps, complete=complete and frames is not None)

    def build_i2v(self, text_ids, first_frame, *, duration: int, fps: int) -> np.ndarray:
        """Image-to-video prompt: ends with the encoded first latent frame `[h, w]`, video left open."""
        return self.build(text_ids, np.asarray(first_frame)[None], duration=duration, fps=fps, complete=False)

    def build_continuation(self, text_ids, prefix, *, duration: int, fps: int) -> np.ndarray:
        """Video continuation prompt: ends with the given latent frames `[k, h, w]`, video left open."""
        return self.build(text_ids, prefix, duration=duration, fps=fps, complete=False)

    # ---------------------------------------------------------------------------------- reading
    def find_video_start(self, tokens: Sequence[int]) -> int:
        """Index of the first VIDEO_START in `tokens` (1-D), -1 if there is none (like `str.find`).
        The first one: the released records keep placeholder ids in the text that collide with
        visual ids, never with VIDEO_START."""
        starts = np.flatnonzero(np.asarray(tokens).reshape(-1) == self.video_start)
        return int(starts[0]) if starts.size else -1

    def video_header(self, tokens: Sequence[int], at: int) -> tuple[int, int]:
        """(duration, fps) from the video header whose VIDEO_START is at index `at` of `tokens`."""
        if at + self.VIDEO_HEADER > len(tokens):
            raise LumosError(f"sequence ends inside the video header at position {at}")
        return self.size_value(tokens[at + 1]), self.size_value(tokens[at + 2])

    def frame_grid(self, tokens: Sequence[int], at: int) -> tuple[int, int]:
        """Latent grid (h, w) from the frame header whose FRAME_START is at index `at` of `tokens`."""
        if at + self.FRAME_HEADER > len(tokens):
            raise LumosError(f"sequence ends inside the frame header at position {at}")
        g = self.grid_per_size
        return self.size_value(tokens[at + 1]) * g, self.size_value(tokens[at + 2]) * g

    def frame_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frame segment of every token: k for the tokens of the k-th FRAME_START..FRAME_END segment
        (both markers included), -1 outside frames. tokens: [B, L] -> [B, L] int64.
        Marker counts only (two cumsums): the attention masks need nothing more."""
        return self._segment_of((tokens == self.frame_start).long().cumsum(dim=1) - 1, tokens)

    def _segment_of(self, latest: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`frame_ids` from `latest` (index of the latest FRAME_START so far, -1 before the first)."""
        import torch  # here, not at the top: the numpy half of this module serves data code that needs no torch

        is_end = (tokens == self.frame_end).long()
        closed_before = is_end.cumsum(dim=1) - is_end                            # frames closed strictly before
        return torch.where(latest + 1 > closed_before, latest, torch.full_like(latest, -1))

    def frame_segments(self, tokens: torch.Tensor) -> FrameSegments:
        """Where every token sits relative to the frames (`FrameSegments`). tokens: [B, L] int64."""
        import torch

        B, L = tokens.shape
        is_start = tokens == self.frame_start
        latest = is_start.long().cumsum(dim=1) - 1                               # (B, L)
        col = torch.arange(L, device=tokens.device).expand(B, L)
        start = torch.where(is_start, col, torch.full_like(col, -1)).cummax(dim=1).values
        # The latest frame's two size tokens (a clamped gather: a cut-off header is flagged below).
        at = start.clamp(min=0)
        sizes = [tokens.gather(1, (at + k).clamp(max=L - 1)) - self.size_base for k in (1, 2)]  # (B, L) each
        ok = (start >= 0) & (at + self.FRAME_HEADER <= L)
        for n in sizes:
            ok &= (n > 0) & (n <= self.max_size)
        rows, cols = (torch.where(ok, n * self.grid_per_size, torch.zeros_like(n)) for n in sizes)
        return FrameSegments(frame=self._segment_of(latest, tokens), latest=latest, start=start,
                             offset=col - start - self.FRAME_HEADER, rows=rows, cols=cols)

    # ---------------------------------------------------------------------------------- parser
    def parse_video(self, tokens: Sequence[int]) -> "ParsedVideo":
        """Token sequence -> the video in it: code grids `[F, h, w]`, duration, fps, and the text part.

        Only what follows the first VIDEO_START is read as video (the released records keep
        placeholder ids in the text that collide with visual ids). Raises LumosError naming the
        position of the first token that breaks the layout."""
        toks = np.asarray(tokens, np.int64).reshape(-1)
        vs = self.find_video_start(toks)
        if vs < 0:
            raise LumosError("no VIDEO_START token in the sequence: not a Lumos video/image sequence")
        duration, fps = self.video_header(toks, vs)
        frames, pos, grid = [], vs + self.VIDEO_HEADER, None
        while pos < toks.size and toks[pos] == self.frame_start:
            h, w = self.frame_grid(toks, pos)
            end = pos + self.frame_length(h, w) - 1
            if end >= toks.size:
                raise LumosError(f"frame {len(frames)} at position {pos} is cut off: needs {h}x{w} codes, "
                                 f"the sequence ends at {toks.size}")
            if toks[end] != self.frame_end:
                raise LumosError(f"frame {len(frames)}: expected FRAME_END at position {end}, got {toks[end]}")
            body = toks[pos + self.FRAME_HEADER:end].reshape(h, w + 1)
            if not (body[:, -1] == self.newline).all():
                row = int(np.flatnonzero(body[:, -1] != self.newline)[0])
                raise LumosError(f"frame {len(frames)}: row {row} does not end with NEWLINE "
                                 f"(position {pos + self.FRAME_HEADER + row * (w + 1) + w})")
            codes = body[:, :-1] - self.visual_offset
            if codes.min() < 0 or codes.max() >= self.codebook_size:
                bad = int(np.flatnonzero((codes.reshape(-1) < 0) | (codes.reshape(-1) >= self.codebook_size))[0])
                raise LumosError(f"frame {len(frames)}: token {int(body[:, :-1].reshape(-1)[bad])} is not a "
                                 f"visual id (row {bad // w}, column {bad % w})")
            if grid is not None and (h, w) != grid:
                raise LumosError(f"frame {len(frames)} is {h}x{w} but frame 0 is {grid[0]}x{grid[1]}")
            grid = (h, w)
            frames.append(codes)
            pos = end + 1
        complete = pos < toks.size and toks[pos] == self.video_end
        if pos < toks.size and not complete:
            raise LumosError(f"unexpected token {int(toks[pos])} at position {pos} inside the video "
                             f"(expected FRAME_START or VIDEO_END)")
        video = np.stack(frames) if frames else np.zeros((0, 0, 0), np.int64)
        return ParsedVideo(frames=video, duration=duration, fps=fps, text=toks[:vs], video_start=vs,
                           complete=bool(complete))


@dataclass
class ParsedVideo:
    frames: np.ndarray     # [F, h, w] visual codes (int64)
    duration: int          # the duration token's value (seconds)
    fps: int               # the fps token's value
    text: np.ndarray       # everything before VIDEO_START (BOS, prompt, SEP)
    video_start: int       # position of VIDEO_START
    complete: bool         # True when VIDEO_END follows the last frame
