"""The built-in model of the Moving Digits world: data preparation and export into the package.

The whole recipe, on 2 CPU cores (times in the README):

    lumos train-tokenizer configs/tokenizer-moving-digits.toml       # 1. the video tokenizer (4x8x8, FSQ)
    lumos builtin prepare --out data/moving-digits                   # 2. text tokenizer + token records
    lumos train configs/moving-digits.toml                           # 3. the transformer (AR-DF)
    lumos train configs/moving-digits-stage2.toml                    # 4. 1,200 more steps, lower LR
    lumos train configs/moving-digits-stage3.toml                    # 5. 3,600 more steps, LR 1e-3 again
    lumos builtin export runs/moving-digits-stage3 --into-package \\
        --eval docs/eval-moving-digits.json                          # 6. into lumos/assets/moving-digits

Step 2 renders clips of the "train" split in memory (`lumos.world.digits`), encodes them with the built-in
video tokenizer in batches, and writes records in the format of `lumos.data.records` (what `lumos tokenize`
writes for media files), with the exact prompt text the pipeline uses at generation time. Videos and
still images are mixed (joint text-to-video / text-to-image training). Shards are written atomically
and a rerun skips finished ones, so a killed run resumes; `prepared.json` records the template, seed
and size, so a rerun never mixes in records of another preparation.

The prompt is the bare caption (`PROMPT_TEMPLATE`, written into the exported pipeline.json), not the
released template "Generate a video with a resolution of 64x64, consisting of 17 frames at 8 frames per
second, ...". The template spells its numbers digit by digit, so the caption's digit ("a red 3") is
one of eight digit tokens in the text, and a 3M-parameter model trained with it for 2,300 steps ignored
it (benchmarks/caption_sensitivity.py: a wrong digit changed the loss by +0.002 nats/code, a wrong
colour by +0.57). Its ~55 constant tokens were also 15% of every sequence; resolution, length and fps
are in the video header anyway.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lumos.pipeline import PipelineDefaults
from lumos.utils import LumosError, atomic_write, atomic_write_json, check_output, file_sha256, first_line

ASSET = Path(__file__).resolve().parents[1] / "assets" / "moving-digits"
PROMPT_TEMPLATE = "{caption}"   # the built-in model reads the bare caption (module docstring)
PREPARED_FILE = "prepared.json"  # in a `prepare` folder: the template, seed and size it was written with
SHARD = 1000            # records per shard
IMAGE_EVERY = 5         # one still image per this many records (joint T2V / T2I)

# The generation defaults written into the exported pipeline.json, checked on import by the validator
# that checks every pipeline.json (`PipelineDefaults.check`). Guidance 2 and temperature 0.6 were
# picked on the validation captions only (`lumos eval --sets val`); the held-out combinations were
# scored once, afterwards (docs/eval-moving-digits.md). 6 refinement steps: `lumos ablate steps` (2 seeds,
# 46 prompts) scores 6 steps at least as well as 8, 16 and 32 (all correct 85.9% against 80.4% at 16) in
# 0.4x the time of 16 (docs/ablations.md). Trained on 5 latent frames: longer videos roll a window of 4
# frames and the one being decoded, the span it was trained on (README "Long videos").
SAMPLING = PipelineDefaults.check({"height": 64, "width": 64, "num_frames": 17, "fps": 8, "num_inference_steps": 6,
                                   "guidance_scale": 2.0, "image_guidance_scale": 3.0, "history_mask_ratio": 0.7,
                                   "temperature": 0.6, "trained_frames": 5, "window_frames": 4, "sink_frames": 0})


def prepared_with(data: str | Path) -> dict | None:
    """The settings a `prepare` folder was written with (None if it has no PREPARED_FILE)."""
    f = Path(data) / PREPARED_FILE
    if not f.is_file():
        return None
    try:
        stamp = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LumosError(f"{f}: unreadable ({first_line(e)}); is this a `lumos builtin prepare` folder?") from None
    if not isinstance(stamp, dict) or not isinstance(stamp.get("prompt_template"), str):
        raise LumosError(f"{f}: not what `lumos builtin prepare` writes (no prompt_template)")
    return stamp


def caption_corpus(rng: np.random.Generator, n_two: int = 2000) -> list[str]:
    """Prompts the text tokenizer is trained on: every one-digit video and image caption of the world's
    grammar (held-out combinations included: a tokenizer only needs the words), and a sample of
    two-digit captions, each as the pipeline writes it (`PROMPT_TEMPLATE`)."""
    from lumos.world.digits import COLOURS, DIRECTIONS
    from lumos.vocab import video_prompt

    colours, dirs = list(COLOURS), list(DIRECTIONS)
    prompt = lambda caption, frames, fps: video_prompt(caption, 64, 64, frames, fps, PROMPT_TEMPLATE)  # noqa: E731
    out = []
    for d in range(10):
        for c in colours:
            out.append(prompt(f"a {c} {d}", 1, 1))
            out += [prompt(f"a {c} {d} moving {m}", 17, 8) for m in dirs]
    for _ in range(n_two):
        a, b = rng.integers(0, 10, 2)
        ca, cb = rng.choice(colours, 2, replace=False)
        ma, mb = rng.choice(dirs, 2)
        out.append(prompt(f"a {ca} {a} moving {ma} and a {cb} {b} moving {mb}", 17, 8))
    return out


def prepare(out: str | Path, num_records: int = 20_000, seed: int = 0, tokenizer: str | Path = ASSET / "tokenizer",
            text_vocab_size: int = 320, batch: int = 64, progress: bool = True, num_frames: int | None = None,
            edges: str | None = None, text_tokenizer: str | Path | None = None) -> Path:
    """Write `out/text_tokenizer.json` and token records `out/train/` (`num_records`, 1 in IMAGE_EVERY a
    still image). Deterministic in `seed`; resumable shard by shard. num_frames / edges: the clips'
    length and canvas (`DigitsConfig`; e.g. 65 frames on a wrapping canvas for long videos); left out:
    the built-in model's 17 frames inside the canvas. text_tokenizer: an existing text_tokenizer.json
    to use (copied in; e.g. the built-in model's, to fine-tune it: its token ids must not change) instead
    of training one. The stamp (PREPARED_FILE) holds the settings and the sha256 of both tokenizers, so a
    rerun never mixes records of another tokenizer in."""
    from lumos.world.digits import DigitsConfig, sample_clip, sample_image
    from lumos.data.records import build_index, list_shards, shard_name, write_shard
    from lumos.tokenizers.text import TextTokenizer, train_text_tokenizer
    from lumos.tokenizers import load_video_tokenizer
    from lumos.vocab import Vocab, duration_seconds, video_prompt

    if num_records < 1 or batch < 1:
        raise LumosError(f"--num-records must be >= 1, got {num_records}" if num_records < 1 else
                         f"batch must be >= 1, got {batch}")
    world = {k: v for k, v in (("num_frames", num_frames), ("edges", edges)) if v is not None}
    cfg = DigitsConfig(**world)                            # checks them
    out = check_output(out, "--out", folder=True)
    vt = load_video_tokenizer(tokenizer)                   # before anything is written
    if text_tokenizer is not None:
        TextTokenizer(text_tokenizer)                        # a bad file fails here, before anything is written
    text_path = out / "text_tokenizer.json"
    # What the records were written with. A rerun resumes only the same preparation: records of another
    # prompt template, seed, world or tokenizer must not be mixed in, nor exported under this template.
    stamp = {"prompt_template": PROMPT_TEMPLATE, "seed": seed, "num_records": num_records, **world,
             "video_tokenizer_sha256": file_sha256(tokenizer)}
    if text_tokenizer is not None:
        stamp["text_tokenizer_sha256"] = file_sha256(text_tokenizer)
    if out.exists() and any(out.iterdir()):
        found = prepared_with(out)
        if found != stamp:
            what = f"was prepared with {found}" if found else f"is not empty and has no {PREPARED_FILE}"
            raise LumosError(f"{out} {what}, not {stamp}; use a new --out (or delete this folder)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / PREPARED_FILE, stamp)
    if not text_path.is_file() and text_tokenizer is not None:
        with atomic_write(text_path) as f:
            f.write(Path(text_tokenizer).read_bytes())
    elif not text_path.is_file():
        train_text_tokenizer(caption_corpus(np.random.default_rng(seed)), text_vocab_size, text_path,
                             wrap_in_prompt=False)
    text = TextTokenizer(text_path)
    vocab = Vocab.compact(text.vocab_size, vt.codebook_size)
    done = {p.name for p in list_shards(out / "train")}
    n_shards = -(-num_records // SHARD)
    for k in tqdm(range(n_shards), desc="shards", disable=not progress):
        if shard_name(k) in done:
            continue
        rng = np.random.default_rng([seed, k])              # each shard on its own stream: resumable
        lo, hi = k * SHARD, min(num_records, (k + 1) * SHARD)
        items = []                                           # (media [T,H,W,3], caption, is_image, meta)
        for i in range(lo, hi):
            if i % IMAGE_EVERY == IMAGE_EVERY - 1:
                img, cap, meta = sample_image("train", rng)
                items.append((img[None], cap, True, meta))
            else:
                vid, cap, meta = sample_clip("train", rng, cfg)
                items.append((vid, cap, False, meta))
        tokens, records = [], []
        for j in range(0, len(items), batch):
            chunk = items[j:j + batch]
            codes = {}
            for is_image in (False, True):                  # one batched encode per shape
                idx = [t for t, it in enumerate(chunk) if it[2] == is_image]
                if idx:
                    with torch.no_grad():
                        codes.update(zip(idx, vt.encode_batch(np.stack([chunk[t][0] for t in idx])).numpy()))
            for t, (media, cap, is_image, meta) in enumerate(chunk):
                T, H, W, _ = media.shape
                prompt = video_prompt(cap, W, H, 1 if is_image else T, 1 if is_image else meta["fps"],
                                      PROMPT_TEMPLATE)
                ids = text.encode(prompt)
                if is_image:
                    seq = vocab.build_t2i(ids, codes[t][0])
                else:
                    seq = vocab.build_t2v(ids, codes[t], duration=duration_seconds(T, meta["fps"]),
                                         fps=meta["fps"])
                tokens.append(seq)
                records.append({"id": lo + j + t, "caption": cap, "image": is_image,
                                "frames": int(codes[t].shape[0]), "grid": [int(codes[t].shape[1]),
                                                                            int(codes[t].shape[2])]})
        write_shard(out / "train" / shard_name(k), tokens, {
            "vocab": vocab.to_dict(), "digit_ids": text.digit_ids, "temporal_compression": vt.temporal_compression,
            "num_shards": n_shards, "prompt_template": PROMPT_TEMPLATE, "records": records,
            "tokenizers": {"text": str(text_path.resolve()), "video": str(Path(tokenizer).resolve())}})
    build_index(out / "train")
    return out


def export(run: str | Path, data: str | Path = "data/moving-digits", out: str | Path | None = None,
           tokenizer: str | Path = ASSET / "tokenizer", eval_report: str | Path | None = None) -> Path:
    """A training run's newest checkpoint (bf16 weights) with the text tokenizer, the video tokenizer and
    the generation defaults -> the pipeline folder `out` (`LumosPipeline.save_pretrained`: with
    provenance.json and a model card, holding the table of the `lumos eval` report.json `eval_report`).
    `out` must be given: the package's own folder (ASSET) is replaced only when named."""
    from lumos.model import LumosModel
    from lumos.pipeline import LumosPipeline
    from lumos.tokenizers import load_video_tokenizer
    from lumos.tokenizers.text import TextTokenizer
    from lumos.train.checkpoints import list_checkpoints, read_state

    if out is None:
        raise LumosError(f"export: give --out FOLDER, or --into-package to replace the built-in model in {ASSET}")
    found = list_checkpoints(Path(run) / "checkpoints")
    if not found:
        raise LumosError(f"{run}: no finished checkpoint to export")
    stamp = prepared_with(data)
    if stamp is None:
        raise LumosError(f"{data}: no {PREPARED_FILE}; was it written by `lumos builtin prepare`?")
    text = Path(data) / "text_tokenizer.json"
    if not text.is_file():
        raise LumosError(f"{text}: missing; was {data} written by `lumos builtin prepare`?")
    out = check_output(out, "--out", folder=True)
    table = eval_table(eval_report) if eval_report else None
    vt = load_video_tokenizer(tokenizer)                   # a tokenizer folder that loads, checked up front
    ckpt = found[-1][1]
    state = read_state(ckpt)                               # list_checkpoints read it: a dict with the run's config
    init_from = (state.get("train_config") or {}).get("init_from", "")
    provenance = {"checkpoint": str(ckpt), "step": state.get("step"), "init_from": init_from or None,
                  "kept_tokenizer": Path(tokenizer).resolve() == (out / "tokenizer").resolve()}
    defaults = PipelineDefaults(**{**SAMPLING, "prompt_template": stamp["prompt_template"]})
    pipe = LumosPipeline(LumosModel.from_pretrained(ckpt / "model"), TextTokenizer(text), vt, defaults)
    return pipe.save_pretrained(out, dtype=torch.bfloat16, provenance=provenance, eval_table=table,
                                training=training_text(provenance))


def training_text(provenance: dict) -> str:
    """How the built-in model was trained: the recipe (module docstring) and what its provenance says."""
    from lumos.pipeline import LumosPipeline

    return ("The recipe of `lumos.world.builtin` on CPU: a 4x8x8 FSQ video tokenizer "
            "(configs/tokenizer-moving-digits.toml), 20,000 rendered clips and still images of the Moving Digits "
            "train split tokenized with it (`lumos builtin prepare`), then the transformer in three stages "
            "(configs/moving-digits.toml, -stage2.toml, -stage3.toml; AR-DF, joint text-to-video / text-to-image). "
            "The prompt is the bare caption. Last stage: " + LumosPipeline.training_summary(provenance))


def eval_table(report: str | Path) -> str:
    """The Markdown table of a `lumos eval` report.json (its settings line, then `format_markdown`)."""
    from lumos.world.evaluate import format_markdown

    try:
        r = json.loads(Path(report).read_text(encoding="utf-8"))
        head = f"seed {r['seed']}; settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        return head + "\n\n" + format_markdown(r)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LumosError(f"{report}: not a `lumos eval` report.json ({first_line(e)})") from None


def write_card(folder: str | Path = ASSET, eval_report: str | Path | None = None) -> Path:
    """(Re)write only the model card (README.md) of the exported pipeline folder `folder` from its own
    files (config.json, pipeline.json, tokenizers, provenance.json) and the `lumos eval` report.json
    `eval_report`; weights, tokenizers and pipeline.json are left as they are."""
    from lumos.checkpoint import read_config
    from lumos.pipeline import LumosPipeline
    from lumos.tokenizers import load_video_tokenizer
    from lumos.tokenizers.text import TextTokenizer
    from lumos.utils import atomic_write

    folder = Path(folder)
    provenance = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").is_file() else None
    defaults = PipelineDefaults.from_file(folder / "pipeline.json")
    card = LumosPipeline.model_card(folder.name, read_config(folder), dataclasses.asdict(defaults),
                                    TextTokenizer(folder / "text_tokenizer.json"),
                                    load_video_tokenizer(folder / "tokenizer"), provenance=provenance,
                                    training=training_text(provenance or {}),
                                    eval_table=eval_table(eval_report) if eval_report else None)
    with atomic_write(folder / "README.md", "w") as f:
        f.write(card)
    return folder / "README.md"
