"""Token records on disk, their reader, and the loader of the authors' released records.

A records folder (written by `lumos tokenize`, read by `RecordReader`):

    index.json                 {"format": "lumos-records", "version": 1,
                                "vocab": Vocab.to_dict(), "digit_ids": [10 ids] | null,
                                "temporal_compression": 4, "shards": [{"name", "records", "tokens"}],
                                "num_records", "num_tokens", "num_shards", "complete", "missing_shards",
                                "tokenizers": {"text": path, "video": path}, "prompt_template"}
                               (the last two: what the records were made with, from the first shard's
                               meta, when its writer recorded them; `lumos train` copies those tokenizers
                               into its checkpoints)
    shard-00000/tokens.npy     uint32 [N]: the shard's records back to back (memory-mapped when read)
    shard-00000/offsets.npy    int64 [n + 1]: record j is tokens[offsets[j]:offsets[j + 1]]
    shard-00000/meta.json      {"shard", "num_shards", "vocab", "digit_ids", "temporal_compression",
                                "settings", "tokenizers", "prompt_template", "records": [per-record meta],
                                "skipped": [{"row", "path", "kind", "reason"}]}

Per-record meta: id, row (in the input list), path, caption, frames (latent), grid [h, w] (latent),
size [W, H] (pixels), fps, duration, num_frames_span ([a, b): the positions of the prompt's
frame-count digits, or null).

A shard folder is written whole (`atomic_dir`), so it either exists complete or not at all; the index
is a summary that `build_index` can always regenerate from the shard folders.

Frame cap (`cap_frames`, used by `RecordReader.sample`): keep `max_frames` latent frames, the first
ones by default (the reference trains on the first 7 of its 22 stored frames; with a causal tokenizer
the first latent frame is the one that encodes a single picture, so the prefix is a valid shorter
video). Given a `rng`, a random window of frames is kept instead: more data per record, but a window
starting after frame 0 opens with a latent frame that summarises 4 pictures, which the model never
sees first at inference; use it knowingly. When frames are dropped, the header duration and the
prompt's frame count are rewritten as the reference trainer does: duration = the whole seconds the
kept frames cover (1 + 4 (F - 1) pictures at fps, at least 1 s), frame count = fps * duration
(7 latent frames at 12 fps -> "24 frames", duration 2, as in the released training).
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import numpy as np

from lumos.utils import LumosError, atomic_dir, atomic_write_json, first_line
from lumos.vocab import Vocab

FORMAT = "lumos-records"
VERSION = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})$")

# The authors' records (notes §1.1): placeholders for the prompt's frame count and fps, and the
# Chameleon digit tokens "0".."9" that replace them at load time.
OFFICIAL_FRAMES_PLACEHOLDER = 65539
OFFICIAL_FPS_PLACEHOLDER = 65540
CHAMELEON_DIGITS = list(range(16399, 16409))


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


# ------------------------------------------------------------------------------------------ writing
def write_shard(folder, tokens: list[np.ndarray], meta: dict) -> None:
    """Write one shard atomically. tokens: one int array per record; meta: the shard meta, whose
    "records" list must have one entry per record."""
    if len(meta.get("records", [])) != len(tokens):
        raise LumosError(f"shard meta lists {len(meta.get('records', []))} records, got {len(tokens)} token arrays")
    lengths = np.array([len(t) for t in tokens], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([np.asarray(t).reshape(-1) for t in tokens]) if tokens else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(np.uint32).max):
        raise LumosError("token ids must fit in uint32")
    with atomic_dir(folder) as tmp:
        np.save(tmp / "tokens.npy", flat.astype(np.uint32))
        np.save(tmp / "offsets.npy", offsets)
        atomic_write_json(tmp / "meta.json", meta)


def read_shard_meta(folder) -> dict:
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LumosError(f"{path}: unreadable shard meta ({first_line(e)}); delete {Path(folder).name} and re-run "
                         f"to redo it") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("vocab"), dict) and isinstance(meta.get("records"), list)):
        raise LumosError(f"{path}: not a shard meta of a records folder (no vocab or records); delete "
                         f"{Path(folder).name} and re-run to redo it")
    return meta


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A shard's tokens.npy / offsets.npy: a 1-D integer array (never unpickled); LumosError saying
    the file is not a records file otherwise (numpy's own message would suggest allow_pickle)."""
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise LumosError(f"{path}: missing; delete {path.parent.name} and re-run `lumos tokenize` to redo it") from None
    except (OSError, ValueError, EOFError):
        a = None
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iu":
        raise LumosError(f"{path}: not a records file (a 1-D integer .npy array written by `lumos tokenize`); "
                         f"delete {path.parent.name} and re-run to redo it")
    return a


def list_shards(root) -> list[Path]:
    """Finished shard folders under `root`, in shard order (temporary `.shard-*` folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and SHARD_RE.match(p.name)), key=lambda p: p.name)


def build_index(root, write: bool = True) -> dict:
    """(Re)build `index.json` from the finished shards under `root`; returns the index dict."""
    root = Path(root)
    shards, vocab, digit_ids, tc, expected, made_with = [], None, None, None, None, {}
    for folder in list_shards(root):
        meta = read_shard_meta(folder)
        if vocab is None:
            vocab, digit_ids, tc = meta["vocab"], meta.get("digit_ids"), meta.get("temporal_compression", 4)
            made_with = {k: meta[k] for k in ("tokenizers", "prompt_template") if meta.get(k)}
        elif meta["vocab"] != vocab:
            raise LumosError(f"{folder}: written with a different vocabulary than the other shards in {root}")
        expected = meta.get("num_shards", expected)
        offsets = load_array(folder / "offsets.npy")
        if len(offsets) != len(meta["records"]) + 1:
            raise LumosError(f"{folder / 'offsets.npy'}: {len(offsets) - 1} records, its meta.json lists "
                             f"{len(meta['records'])}; delete {folder.name} and re-run to redo it")
        shards.append({"name": folder.name, "records": int(len(offsets) - 1), "tokens": int(offsets[-1])})
    if vocab is None:
        raise LumosError(f"{root}: no finished shards (shard-NNNNN folders) to index")
    names = {s["name"] for s in shards}
    missing = [shard_name(k) for k in range(expected or 0) if shard_name(k) not in names]
    index = {"format": FORMAT, "version": VERSION, "vocab": vocab, "digit_ids": digit_ids,
             "temporal_compression": tc, "shards": shards,
             "num_records": sum(s["records"] for s in shards), "num_tokens": sum(s["tokens"] for s in shards),
             "num_shards": expected if expected is not None else len(shards),
             "complete": not missing, "missing_shards": missing, **made_with}
    if write:
        atomic_write_json(root / "index.json", index)
    return index


# ------------------------------------------------------------------------------------------ frame cap
def _rewrite_number(tokens: np.ndarray, span, value: int, digit_ids) -> np.ndarray:
    a, b = span
    old = tokens[a:b]
    if b <= a or not np.isin(old, digit_ids).all():
        raise LumosError(f"tokens {old.tolist()} at the recorded frame-count span {span} are not digits")
    new = np.array([digit_ids[int(c)] for c in str(int(value))], np.int64)
    return np.concatenate([tokens[:a], new, tokens[b:]])


def cap_frames(tokens, vocab: Vocab, max_frames: int | None, start: int = 0, *, temporal_compression: int = 4,
               num_frames_span=None, digit_ids=None, duration: int | None = None) -> np.ndarray:
    """Keep latent frames [start, start + max_frames) of a complete video sequence; int64 `[L']`.

    Re-closes the video with VIDEO_END SEP. When frames are dropped, rewrites the duration token
    (`duration`, or the whole seconds the kept frames cover) and, if `num_frames_span` and
    `digit_ids` are given, the prompt's frame count (= fps * duration). See the module docstring."""
    toks = np.asarray(tokens, np.int64).reshape(-1)
    vs = vocab.find_video_start(toks)
    first = vs + vocab.VIDEO_HEADER                                     # FRAME_START of frame 0
    if vs < 0 or first + vocab.FRAME_HEADER > toks.size or toks[first] != vocab.frame_start:
        raise LumosError("not a video sequence with frames (VIDEO_START dur fps FRAME_START ...)")
    _, fps = vocab.video_header(toks, vs)
    flen = vocab.frame_length(*vocab.frame_grid(toks, first))
    n = 0  # count frames by their FRAME_START markers at the fixed stride (all frames share one grid)
    while first + n * flen < toks.size and toks[first + n * flen] == vocab.frame_start:
        n += 1
    keep = n if max_frames is None else min(max_frames, n)
    if keep < 1 or not 0 <= start <= n - keep:
        raise LumosError(f"cannot keep {max_frames} frames from frame {start} of a {n}-frame video")
    frames = toks[first + start * flen: first + (start + keep) * flen]
    head = toks[:first]
    if keep < n or duration is not None:
        pictures = 1 + temporal_compression * (keep - 1)
        d = duration if duration is not None else max(1, pictures // fps)
        head = np.concatenate([toks[:vs], vocab.video_tokens(None, d, fps, complete=False)])
        if num_frames_span is not None and digit_ids is not None:
            head = _rewrite_number(head, num_frames_span, fps * d, digit_ids)
    return np.concatenate([head, frames, [vocab.video_end, vocab.sep]]).astype(np.int64)


# ------------------------------------------------------------------------------------------ reader
class RecordReader:
    """Random access to the records of a folder written by `lumos tokenize`.

        reader = RecordReader("data/tokens")
        len(reader); reader[i]              # int64 [L] tokens of record i
        reader.sample(i, max_frames=7)      # capped, re-closed, parseable by reader.vocab.parse_video
        reader.meta(i)

    Token files are memory-mapped on first use; the reader pickles without them, so it can be
    handed to DataLoader workers."""

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / "index.json"
        if not path.is_file():
            raise LumosError(f"{path}: not found; is {self.root} a records folder written by `lumos tokenize`? "
                             f"(If its shards exist, re-running the same command rebuilds the index.)")
        try:
            index = json.loads(path.read_text())
        except ValueError as e:
            raise LumosError(f"{path}: not valid JSON ({first_line(e)})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            got = {k: index.get(k) for k in ("format", "version")} if isinstance(index, dict) else type(index).__name__
            raise LumosError(f"{path}: not a {FORMAT} v{VERSION} index ({got!r})")
        self.vocab = _index_vocab(index, path)
        if not index.get("complete", True):
            # Another rank may have finished since this index was written: look again.
            index = build_index(self.root, write=False)
            if not index["complete"]:
                warnings.warn(f"{self.root}: {len(index['missing_shards'])} shard(s) are not finished yet "
                              f"(first: {index['missing_shards'][0]}); reading the {len(index['shards'])} that are")
        self.index = index
        self.digit_ids = index.get("digit_ids")
        self.temporal_compression = int(index.get("temporal_compression", 4))
        self.shards = [s["name"] for s in index["shards"]]
        self._ends = np.cumsum([s["records"] for s in index["shards"]]).astype(np.int64)
        self._tokens: dict[int, np.ndarray] = {}
        self._offsets: dict[int, np.ndarray] = {}
        self._meta: dict[int, list] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tokens"], state["_offsets"], state["_meta"] = {}, {}, {}
        return state

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        i %= n
        s = int(np.searchsorted(self._ends, i, side="right"))
        return s, i - (int(self._ends[s - 1]) if s else 0)

    def _shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._tokens:
            folder = self.root / self.shards[s]
            self._offsets[s] = load_array(folder / "offsets.npy")
            self._tokens[s] = load_array(folder / "tokens.npy", mmap=True)
        return self._tokens[s], self._offsets[s]

    def __getitem__(self, i: int) -> np.ndarray:
        """int64 `[L]` tokens of record i."""
        s, j = self._locate(int(i))
        tokens, offsets = self._shard(s)
        return np.asarray(tokens[offsets[j]:offsets[j + 1]], dtype=np.int64)

    def meta(self, i: int) -> dict:
        s, j = self._locate(int(i))
        if s not in self._meta:
            self._meta[s] = read_shard_meta(self.root / self.shards[s])["records"]
        return self._meta[s][j]

    def sample(self, i: int, max_frames: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """Record i with at most `max_frames` latent frames: the first ones, or (with `rng`) a random
        window; int64 `[L']`, re-closed with VIDEO_END SEP. See the module docstring."""
        tokens = self[i]
        if max_frames is None:
            return tokens
        m = self.meta(i)
        n = int(m["frames"])
        start = int(rng.integers(0, n - max_frames + 1)) if rng is not None and n > max_frames else 0
        return cap_frames(tokens, self.vocab, max_frames, start, temporal_compression=self.temporal_compression,
                          num_frames_span=m.get("num_frames_span"), digit_ids=self.digit_ids)


def _index_vocab(index: dict, path: Path) -> Vocab:
    """The vocabulary of a records index, after checking the index holds one and a shard list."""
    shards = index.get("shards")
    listed = isinstance(shards, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                              and isinstance(s.get("records"), int) for s in shards)
    if not isinstance(index.get("vocab"), dict) or not listed:
        raise LumosError(f"{path}: the index has no vocabulary or shard list; rebuild it with "
                         f"`lumos tokenize --out {path.parent} --index-only`")
    try:
        return Vocab.from_dict(index["vocab"])
    except (LumosError, TypeError) as e:
        raise LumosError(f"{path}: the index's vocabulary is not valid ({first_line(e)})") from None


# ------------------------------------------------------------------------------------------ official
def load_official_record(path, duration: int | None = None) -> np.ndarray:
    """A record written by the authors' pipeline (`{"token", "label", "id"}` as `.json` or
    `.json.gz`) -> int64 `[L]` tokens in the released (chameleon) layout.

    The prompt's placeholders are replaced as the reference trainer does (notes §1.2): 65539 -> the
    digits of fps * duration, 65540 -> the digits of fps, both searched only before VIDEO_START
    (visual ids can equal them). fps comes from the record's header. `duration=None` keeps the
    whole record and the header's duration (a stored video: 22 latent frames, duration 7 ->
    "84 frames at 12 frames per second"); `duration=2` keeps the first 1 + ceil((12 * 2 - 1) / 4) = 7
    latent frames and writes duration 2 and "24 frames", i.e. the reference's training sample."""
    path = Path(path)
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
            record = json.load(f)
        toks = np.asarray(record["token"], np.int64)
    except FileNotFoundError:
        raise LumosError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LumosError(f"{path}: not an official Lumos record ({type(e).__name__}: {e})") from None
    vocab = Vocab.chameleon()
    vs = vocab.find_video_start(toks)
    if vs < 0:
        raise LumosError(f"{path}: no VIDEO_START ({vocab.video_start}) token")
    try:
        file_duration, fps = vocab.video_header(toks, vs)
    except LumosError as e:
        raise LumosError(f"{path}: not an official Lumos record ({e})") from None
    d = file_duration if duration is None else int(duration)
    text = toks[:vs]
    for placeholder, value in ((OFFICIAL_FRAMES_PLACEHOLDER, fps * d), (OFFICIAL_FPS_PLACEHOLDER, fps)):
        at = np.flatnonzero(text == placeholder)
        if not at.size:
            raise LumosError(f"{path}: placeholder {placeholder} not found before VIDEO_START")
        digits = np.array([CHAMELEON_DIGITS[int(c)] for c in str(value)], np.int64)
        text = np.concatenate([text[:at[0]], digits, text[at[0] + 1:]])
    toks = np.concatenate([text, toks[vs:]])
    if duration is None:
        return toks
    # The reference's latent frame count for (fps, duration): the causal rule on fps * duration pictures.
    keep = 1 + -(-(fps * d - 1) // 4)
    return cap_frames(toks, vocab, keep, temporal_compression=4, duration=d)
