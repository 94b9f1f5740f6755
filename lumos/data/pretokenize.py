"""`lumos tokenize`: media files + captions -> sharded token records (format: `lumos.data.records`).

Runbook:

    # one machine, 4 worker processes sharing the GPU
    lumos tokenize --input clips.csv --out data/tok --tokenizer ckpts/Cosmos-Tokenizer-DV4x8x8 \\
        --text-tokenizer ckpts/tokenizer/text_tokenizer.json --fps 12 --duration 2 --size 528 --workers 4
    # several GPUs / machines: shard k goes to rank k % world_size (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)
    torchrun --nproc-per-node 8 --no-python lumos tokenize --input clips.csv --out data/tok ...
    # after a crash or a kill: run the same command again; finished shards are kept, the rest is redone

The input is a CSV with columns `path` and `caption` (`text` is accepted too, as in the reference's
CSVs) and optional `fps`, `duration`, `id` per row, or a JSONL file with the same keys. Relative
paths are resolved against `--root` (default: the folder of the input file).

Per row: read + resample the clip (`lumos.media.read_clip`: round(fps * duration) frames picked by
timestamp from the centre of the source) -> resize + centre-crop to the nearest aspect bucket
(`--size`, `--patch`) -> visual tokenizer -> the released prompt `video_prompt(caption, W, H,
fps * duration, fps)` -> text tokenizer -> `Vocab.build_t2v` (a still image, or fps = duration = 1:
`build_t2i`, prompt "1 frames at 1 frames per second", as the reference writes images).
Defaults fps 12 x 2 s = 24 frames -> 7 latent frames are what the released models train on; the
reference pre-tokenizes 7 s (`--duration 7`, 22 latent frames) and drops 15 of them at train time.

Rows are cut into fixed shards (shard k = rows [k K, (k + 1) K)), so the shard of a row never
depends on which rows failed or which machine ran it. Each shard is written whole and atomically;
a rerun skips finished shards (after checking they were made with the same settings and input) and
redoes the others, so nothing is lost or duplicated. Worker processes (`--workers`) end with the
main process (killed or not) and only stage their shards, which the main process renames into
place: no shard is written once it is gone; SIGTERM and ^C end the workers. Missing, undecodable and
too-short files are skipped, recorded in their shard's meta, and listed in `report.json`.
`index.json` is rebuilt from the finished shards at the end of every run (`--index-only` /
`reindex` does just that).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lumos import media
from lumos.data.records import build_index, list_shards, read_shard_meta, shard_name, write_shard
from lumos.utils import (LumosError, atomic_write_json, check_output, file_sha256, process_map,
                         sigterm_interrupts)
from lumos.vocab import VIDEO_PROMPT, Vocab, video_prompt


@dataclass
class TokenizeConfig:
    input: str                      # CSV (path, caption|text[, fps, duration, id]) or JSONL with those keys
    out: str                        # records folder (created; a rerun resumes it)
    tokenizer: str                  # visual tokenizer folder: Cosmos encoder.jit/decoder.jit, or vq_config.json
    text_tokenizer: str             # `tokenizers` JSON file (released: tokenizer/text_tokenizer.json)
    fps: int = 12                   # target frames per second (a row's `fps` column overrides it)
    duration: int = 2               # target seconds (a row's `duration` overrides it); fps * duration frames
    size: int = 528                 # size class: buckets of <= (size // patch)^2 patches; 352 ~ 256p, 528 ~ 384p
    patch: int | None = None        # bucket step in px; None: one size-token unit (32 px for Cosmos + chameleon)
    max_ratio: float = 4.0          # most elongated bucket allowed (the reference's max_ratio)
    vocab: str | None = None        # "chameleon" | "compact"; None: chameleon for Cosmos, compact otherwise
    window: str = "center"          # where the clip is taken from the source: "center" (reference) or "start"
    folder_fps: float | None = None  # fps of a folder-of-frames input; None: the target fps (frames used 1:1)
    root: str | None = None         # base of relative media paths; None: the input file's folder
    shard_size: int = 1000          # rows per shard (K)
    workers: int = 1                # processes on this machine; 1 runs in-process
    rank: int | None = None         # this machine's rank; None: $RANK or 0
    world_size: int | None = None   # number of ranks; None: $WORLD_SIZE or 1
    device: str | None = None       # visual tokenizer device; None: cuda:$LOCAL_RANK if available, else cpu
    progress: bool = True           # tqdm progress bar on stderr

    def __post_init__(self):
        if self.rank is None:
            self.rank = int(os.environ.get("RANK", 0))
        if self.world_size is None:
            self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        if self.device is None:
            self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        if not 0 <= self.rank < self.world_size:
            raise LumosError(f"--rank {self.rank} must be in [0, --world-size {self.world_size})")
        for name in ("fps", "duration", "size", "shard_size", "workers"):
            if int(getattr(self, name)) < 1:
                raise LumosError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.vocab not in (None, "chameleon", "compact"):
            raise LumosError(f"--vocab must be 'chameleon' or 'compact', got {self.vocab!r}")
        if self.window not in ("center", "start"):
            raise LumosError(f"--window must be 'center' or 'start', got {self.window!r}")


# ------------------------------------------------------------------------------------------ inputs
def read_rows(path) -> list[dict]:
    """The input list -> [{"path", "caption", optional "fps", "duration", "id"}] in file order."""
    path = Path(path)
    if not path.is_file():
        raise LumosError(f"{path}: input list not found")
    rows = []
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as e:
                            raise LumosError(f"{path}:{n}: not a JSON object ({e})") from None
        else:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
    except UnicodeDecodeError as e:
        raise LumosError(f"{path}: not UTF-8 text ({e})") from None
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "path" not in row or not ({"caption", "text"} & set(row)):
            raise LumosError(f"{path}: row {i} needs a 'path' and a 'caption' (or 'text') field; got "
                             f"{sorted(row) if isinstance(row, dict) else type(row).__name__}")
        r = {"path": str(row["path"]), "caption": str(row.get("caption", row.get("text")) or "")}
        for key in ("fps", "duration", "id"):
            if row.get(key) not in (None, ""):
                r[key] = row[key]
        out.append(r)
    return out


def _describe_video_tokenizer(path) -> dict:
    """Class and geometry of the visual tokenizer, without loading Cosmos weights."""
    from lumos.tokenizers.cosmos import DECODER_FILE, ENCODER_FILE, CosmosTokenizer
    from lumos.tokenizers import load_video_tokenizer

    path = Path(path)
    if (path / ENCODER_FILE).exists() or (path / DECODER_FILE).exists():
        if not (path / ENCODER_FILE).is_file():
            raise LumosError(f"{path / ENCODER_FILE}: missing; tokenizing needs the Cosmos encoder")
        tok = CosmosTokenizer   # class attributes: no need to load the TorchScript files here
    else:
        tok = load_video_tokenizer(path, device="cpu")   # e.g. VQTokenizer: geometry is per instance
    name = tok.__name__ if isinstance(tok, type) else type(tok).__name__
    return {"class": name, "codebook_size": int(tok.codebook_size),
            "temporal_compression": int(tok.temporal_compression),
            "spatial_compression": int(tok.spatial_compression)}


# ------------------------------------------------------------------------------------------ rows
class _Skip(Exception):
    """A row that cannot become a record: kind in missing | undecodable | too_short | invalid."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _whole(x) -> int:
    """"12", "12.0", 12 -> 12; fps and duration are size tokens, so they must be whole numbers."""
    f = float(x)
    if f != int(f) or f < 1:
        raise LumosError(f"{x!r} is not a whole number >= 1")
    return int(f)


class _Context:
    """Everything one process needs to tokenize rows (built once per worker)."""

    def __init__(self, cfg: TokenizeConfig, plan: dict, video_tokenizer=None):
        from lumos.tokenizers.text import TextTokenizer
        from lumos.tokenizers import load_video_tokenizer

        self.cfg, self.plan = cfg, plan
        self.vocab = Vocab.from_dict(plan["vocab"])
        self.root = Path(plan["root"])
        self.text = TextTokenizer(cfg.text_tokenizer)
        self.video = video_tokenizer or load_video_tokenizer(cfg.tokenizer, device=cfg.device)

    def number_span(self, offsets, start: int, end: int, ids) -> list[int] | None:
        """Sequence positions [a, b) of the tokens spelling text[start:end] (BOS is position 0), if
        they are exactly the number's digits; else None (then the count cannot be rewritten)."""
        digits = self.plan["digit_ids"]
        idx = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]
        # one token per digit, all of them: a tokenizer that glues a space or another digit on fails this
        if (not digits or len(idx) != end - start or idx != list(range(idx[0], idx[-1] + 1))
                or not all(ids[i] in digits for i in idx)):
            return None
        return [1 + idx[0], 2 + idx[-1]]

    def row(self, i: int, row: dict) -> tuple[np.ndarray, dict]:
        cfg, vocab = self.cfg, self.vocab
        path = Path(row["path"])
        path = path if path.is_absolute() else self.root / path
        if not path.exists():
            raise _Skip("missing", f"{path}: no such file")
        try:
            fps, duration = _whole(row.get("fps", cfg.fps)), _whole(row.get("duration", cfg.duration))
            vocab.size_token(fps), vocab.size_token(duration)
        except LumosError as e:
            raise _Skip("invalid", f"bad fps/duration ({e})") from None
        # 1. frames: round(fps * duration) pictures at fps (a still image: one)
        try:
            frames = media.read_clip(path, fps, duration, cfg.window, cfg.folder_fps)
        except media.ClipTooShort as e:
            raise _Skip("too_short", str(e)) from None
        except LumosError as e:
            raise _Skip("undecodable", str(e)) from None
        image = frames.shape[0] == 1
        if image:
            fps = duration = 1
        # 2. aspect bucket, 3. visual codes [t, h, w]
        frames = media.crop_to_bucket(frames, cfg.size, self.plan["patch"], cfg.max_ratio)
        codes = np.asarray(self.video.encode(frames))
        _, H, W, _ = frames.shape
        # 4. prompt (numbers as text, like the released records after placeholder substitution)
        n_pictures = fps * duration
        text = video_prompt(row["caption"], W, H, n_pictures, fps)
        ids, offsets = self.text.encode_with_offsets(text)
        prefix = VIDEO_PROMPT.split("{num_frames}")[0].format(width=W, height=H)
        span = self.number_span(offsets, len(prefix), len(prefix) + len(str(n_pictures)), ids)
        # 5. the sequence
        try:
            if image:
                tokens = vocab.build_t2i(ids, codes[0])
            else:
                tokens = vocab.build_t2v(ids, codes, duration=duration, fps=fps)
        except LumosError as e:
            raise _Skip("invalid", str(e)) from None
        meta = {"id": row.get("id", i), "row": i, "path": row["path"], "caption": row["caption"],
                "frames": int(codes.shape[0]), "grid": [int(codes.shape[1]), int(codes.shape[2])],
                "size": [int(W), int(H)], "fps": fps, "duration": duration, "num_frames_span": span}
        return tokens, meta

    def shard(self, k: int, rows: list[tuple[int, dict]], bar=None, staged: bool = False) -> dict:
        """Tokenize rows [(index, row)] and write shard k; returns its summary. `staged` (a pool
        worker): write it under a temporary name, returned as "folder", which the main process
        renames into place (so no shard appears once the main process is gone)."""
        tokens, records, skipped = [], [], []
        for i, row in rows:
            try:
                t, m = self.row(i, row)
                tokens.append(t)
                records.append(m)
            except _Skip as s:
                skipped.append({"row": i, "path": row["path"], "kind": s.kind, "reason": s.reason})
            if bar is not None:
                bar.update(1)
        meta = {"shard": k, "num_shards": self.plan["num_shards"], "rows": [rows[0][0], rows[-1][0] + 1],
                "vocab": self.plan["vocab"], "digit_ids": self.plan["digit_ids"],
                "temporal_compression": self.plan["temporal_compression"], "settings": self.plan["settings"],
                "tokenizers": self.plan["tokenizers"], "prompt_template": VIDEO_PROMPT,
                "records": records, "skipped": skipped}
        name = f".{shard_name(k)}.staged-{os.getpid()}" if staged else shard_name(k)
        write_shard(Path(self.cfg.out) / name, tokens, meta)
        return {"shard": k, "records": len(records), "skipped": len(skipped), "folder": name}


# Worker processes (`lumos.utils.process_map`, reused task after task): one _Context each, built once.
_WORKER: _Context | None = None


def _init_worker(cfg: TokenizeConfig, plan: dict, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = _Context(cfg, plan)                  # an error here is raised by the main process


def _work(task: tuple[int, list]) -> dict:
    k, rows = task
    return _WORKER.shard(k, rows, staged=True)


# ------------------------------------------------------------------------------------------ driver
def _plan(cfg: TokenizeConfig, rows: list[dict]) -> dict:
    """Decisions shared by every process, and the settings fingerprint stored in each shard."""
    from lumos.tokenizers.text import TextTokenizer

    text = TextTokenizer(cfg.text_tokenizer)
    vt = _describe_video_tokenizer(cfg.tokenizer)
    name = cfg.vocab or ("chameleon" if vt["class"] == "CosmosTokenizer" else "compact")
    vocab = Vocab.chameleon() if name == "chameleon" else Vocab.compact(text.vocab_size, vt["codebook_size"])
    if vocab.codebook_size != vt["codebook_size"]:
        raise LumosError(f"--vocab {name} holds {vocab.codebook_size} visual codes but the tokenizer has "
                         f"{vt['codebook_size']}; use --vocab compact")
    unit = vocab.grid_per_size * vt["spatial_compression"]   # pixels per size-token unit
    patch = cfg.patch or unit
    if patch % unit:
        raise LumosError(f"--patch {patch} must be a multiple of {unit} px (one size token of vocab {name!r})")
    for what in ("fps", "duration"):
        try:
            vocab.size_token(getattr(cfg, what))
        except LumosError as e:
            raise LumosError(f"--{what}: {e}") from None
    longest = max(w for w, _ in media.crop_size_list((cfg.size // patch) ** 2, patch, cfg.max_ratio))
    if longest // (vt["spatial_compression"] * vocab.grid_per_size) > vocab.max_size:
        raise LumosError(f"--size {cfg.size}: the widest bucket ({longest} px) needs a size token above "
                         f"{vocab.max_size}, the largest of vocab {name!r}; lower --size or --max-ratio")
    settings = {"input_sha256": file_sha256(cfg.input), "num_rows": len(rows), "shard_size": cfg.shard_size,
                "fps": cfg.fps, "duration": cfg.duration, "size": cfg.size, "patch": patch,
                "max_ratio": cfg.max_ratio, "window": cfg.window, "folder_fps": cfg.folder_fps,
                "video_tokenizer": vt, "text_tokenizer_sha256": file_sha256(cfg.text_tokenizer),
                "vocab": vocab.to_dict(), "digit_ids": text.digit_ids}
    return {"vocab": vocab.to_dict(), "patch": patch, "digit_ids": text.digit_ids,
            "temporal_compression": vt["temporal_compression"], "settings": settings,
            "num_shards": math.ceil(len(rows) / cfg.shard_size),
            # where the tokenizers are (not part of the settings: moving them is no reason to redo shards)
            "tokenizers": {"text": str(Path(cfg.text_tokenizer).resolve()), "video": str(Path(cfg.tokenizer).resolve())},
            "root": str(Path(cfg.root) if cfg.root else Path(cfg.input).resolve().parent)}


def write_report(out) -> dict:
    """`report.json` from the finished shards: every skipped row with its reason, and counts."""
    out = Path(out)
    skipped, records, rows, expected = [], 0, 0, 0
    for folder in list_shards(out):
        meta = read_shard_meta(folder)
        skipped += meta["skipped"]
        records += len(meta["records"])
        rows += meta["rows"][1] - meta["rows"][0]
        expected = meta["num_shards"]
    skipped.sort(key=lambda s: s["row"])
    report = {"rows_done": rows, "records": records, "skipped": skipped,
              "counts": dict(Counter(s["kind"] for s in skipped)),
              "complete": len(list_shards(out)) == expected}
    atomic_write_json(out / "report.json", report)
    return report


def _summarise(out: Path, report: dict, index: dict) -> None:
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(report["counts"].items())) or "none"
    print(f"lumos tokenize: {report['records']} records from {report['rows_done']} rows in {out} "
          f"({len(index['shards'])}/{index['num_shards']} shards); skipped {len(report['skipped'])}: {counts}"
          + (f" -- see {out / 'report.json'}" if report["skipped"] else ""))
    if not index["complete"]:
        print(f"lumos tokenize: {len(index['missing_shards'])} shard(s) not finished yet (other ranks, or rerun "
              f"this command); the index is rebuilt at the end of every run, or with --index-only")


def reindex(out) -> dict:
    """Rebuild `index.json` and `report.json` from the finished shards in `out`; returns the report."""
    out = check_output(out, "--out", folder=True)
    index = build_index(out)
    report = write_report(out)
    _summarise(out, report, index)
    return report


def pretokenize(cfg: TokenizeConfig | None = None, /, *, video_tokenizer=None, **kwargs) -> dict:
    """Tokenize the rows of `cfg.input` owned by this rank into `cfg.out`; returns the report dict.

    Pass a `TokenizeConfig` or its fields as keywords. `video_tokenizer` (a loaded `VideoTokenizer`)
    replaces loading `cfg.tokenizer` in the in-process path (workers = 1)."""
    cfg = cfg or TokenizeConfig(**kwargs)
    out = check_output(cfg.out, "--out", folder=True)
    rows = read_rows(cfg.input)
    if not rows:
        raise LumosError(f"{cfg.input}: no rows")
    plan = _plan(cfg, rows)
    out.mkdir(parents=True, exist_ok=True)

    # Resume: finished shards must come from the same input and settings, else their rows would be stale.
    done = set()
    for folder in list_shards(out):
        theirs = read_shard_meta(folder).get("settings", {})
        diff = sorted(k for k in set(theirs) | set(plan["settings"]) if theirs.get(k) != plan["settings"].get(k))
        if diff:
            raise LumosError(f"{out} holds shards made with different settings ({', '.join(diff)}); "
                             f"use a new --out, or delete {out} to start over")
        done.add(int(folder.name.split("-")[1]))
    mine = [k for k in range(plan["num_shards"]) if k % cfg.world_size == cfg.rank and k not in done]
    for k in mine:  # leftovers of a killed run of this rank (only this rank writes these shards)
        for tmp in out.glob(f".*{shard_name(k)}.*"):
            shutil.rmtree(tmp, ignore_errors=True)

    K = cfg.shard_size
    indexed = list(enumerate(rows))
    tasks = [(k, indexed[k * K:(k + 1) * K]) for k in mine]
    n_rows = sum(len(r) for _, r in tasks)
    with tqdm(total=n_rows, unit="row", desc="tokenize", disable=not cfg.progress, dynamic_ncols=True) as bar:
        if cfg.workers == 1 or len(tasks) <= 1:
            ctx = _Context(cfg, plan, video_tokenizer) if tasks else None
            for k, shard_rows in tasks:
                ctx.shard(k, shard_rows, bar)
        else:
            workers = min(cfg.workers, len(tasks))
            threads = max(1, (os.cpu_count() or 1) // workers)
            # Spawned workers, each with its own pipe (`lumos.utils.process_map`: a multiprocessing.Pool hangs
            # when SIGTERM reaches the whole process group). They end with this process and only stage their
            # shards: this process renames each into place, so no shard appears after it is gone.
            with sigterm_interrupts():
                for _, res in process_map(_work, tasks, workers, initializer=_init_worker,
                                          initargs=(cfg, plan, threads), reuse=True,
                                          describe=lambda t: f"shard {t[0]}"):
                    os.replace(out / res["folder"], out / shard_name(res["shard"]))
                    bar.update(res["records"] + res["skipped"])
    return reindex(out)
