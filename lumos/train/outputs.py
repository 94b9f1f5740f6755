"""A training run is a pipeline: what `lumos generate --model RUN` needs, found when the run starts and
written into every checkpoint.

    pipe = RunPipeline.plan(cfg, source, mcfg)   # every rank, before the first step: a bad reference fails here
    pipe.write(folder, step, meta, run)          # rank 0, into a checkpoint's model/ folder, before its manifest
    write_latest(out, ckpt, step)                # rank 0, once the checkpoint is complete
    missing_flags(folder)                        # what `lumos generate --model` still needs for a pipeline folder

Layout. Each checkpoint's model/ folder is a complete pipeline folder: the trainer's config.json +
safetensors, and `LumosPipeline.save_parts`' text_tokenizer.json, tokenizer/, pipeline.json,
provenance.json and README.md (the model card). Tokenizer files are hard links to the originals when
they share a filesystem, copies otherwise, never symlinks: a checkpoint stays whole when the originals
move or change. They are in the checkpoint's manifest like the weights. The run folder's latest.json
(`{"pipeline": "checkpoints/step-000200/model", "step": 200}`) is rewritten atomically after each
complete checkpoint; `LumosPipeline.from_pretrained` follows it, and goes into model/ when given a
checkpoint folder, so `--model runs/NAME` and `--model runs/NAME/checkpoints/step-N` both work. (The
pointer keeps the rule "newest complete checkpoint", which reads manifests, in lumos.train: the core
must not import it.)

Where the pieces come from (the first found wins):
- tokenizers: the train config's `text_tokenizer` / `video_tokenizer`; else the records' index
  ("tokenizers", written by `lumos tokenize` and `lumos builtin prepare`); else the text_tokenizer.json
  of a `prepare` folder (one written before indexes named their tokenizers).
- prompt template: the records' index, else a `prepare` folder's prepared.json, else the released one.
- size: the first video records as trained (capped to batch.max_frames): the latent grid x the video
  tokenizer's spatial compression, 1 + k_t (latent frames - 1) frames, the header's fps.
Synthetic videos (`SyntheticVideos.tokenizers`) bring their own: a word-level text tokenizer of their
captions ("pattern-3 video") and colour-tile codes, with the bare caption as the prompt. A piece not found
is left out; the card says which flag supplies it, and so does `lumos generate`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lumos.utils import LumosError, atomic_write_json

LATEST = "latest.json"
SAMPLES = 64          # records looked at for the trained size


@dataclass
class RunPipeline:
    config: object                       # the ModelConfig trained
    text_tokenizer: object | None        # TextTokenizer, or None: not known
    video_tokenizer: object | None       # a VideoTokenizer (Cosmos: the files only), or None
    defaults: dict                       # the pipeline.json keys known
    missing: list[str] = field(default_factory=list)    # what generate must be given, for the card
    sources: dict = field(default_factory=dict)         # where each piece came from (provenance)
    about_data: str | None = None                       # a sentence for the card on what the prompts are

    @classmethod
    def plan(cls, cfg, source, mcfg) -> "RunPipeline":
        """The pipeline of a run of `cfg` on `source` (its records or synthetic videos) with model config
        `mcfg`. LumosError for a tokenizer that does not load or does not fit the vocabulary."""
        from lumos.tokenizers import load_video_tokenizer
        from lumos.tokenizers.text import TextTokenizer

        refs = data_references(cfg.data)
        text = cfg.text_tokenizer or refs.get("text")
        video = cfg.video_tokenizer or refs.get("video")
        tt = TextTokenizer(text) if text else None
        vt = load_video_tokenizer(video, encoder=False, decoder=False) if video else None
        template, about = refs.get("prompt_template"), None
        if hasattr(source, "tokenizers"):             # synthetic videos: their own words and colour tiles
            own_text, own_video = source.tokenizers()
            tt, vt = tt or own_text, vt or own_video
            template = template or "{caption}"
            text, video = text or "synthetic (word-level)", video or "synthetic (colour tiles)"
            about = (f'Trained on synthetic token videos (lumos.train.batches.SyntheticVideos): prompt '
                     f'"pattern-K video" or, with one frame, "pattern-K image" (K < {source.classes}).')
        if vt is not None and vt.codebook_size != mcfg.vocab.codebook_size:
            raise LumosError(f"video tokenizer {video}: {vt.codebook_size} codes, the vocabulary trained "
                             f"{mcfg.vocab.codebook_size}; set video_tokenizer to the one the data was made with")
        defaults = {"prompt_template": template} if template else {}
        missing = []
        size = trained_size(source, mcfg.vocab, cfg.batch.max_frames)
        if size is not None:
            t, h, w, fps = size
            defaults["fps"] = fps
            if t > 1:            # longer videos need a rolling window (the pipeline says so)
                defaults["trained_frames"] = t
            if vt is not None:
                k = vt.spatial_compression
                defaults.update(height=h * k, width=w * k, num_frames=1 + vt.temporal_compression * (t - 1) if t > 1 else 1)
            else:
                missing.append(f"the size: trained on {h}x{w} latent tokens, {t} latent frames at {fps} fps; pass "
                               f"`--height`/`--width` (tokens x the video tokenizer's spatial compression) and "
                               f"`--num-frames`")
        sources = {"text_tokenizer": str(text) if text else None, "video_tokenizer": str(video) if video else None,
                   **({"data_references": refs} if refs else {})}
        return cls(mcfg, tt, vt, defaults, missing, sources, about)

    def write(self, folder: Path, step: int, meta: dict, run: str) -> None:
        """Everything of the pipeline folder but the weights, into a checkpoint's model/ `folder`."""
        from lumos.pipeline import LumosPipeline

        provenance = {"run": run, "checkpoint": f"checkpoints/step-{step:06d}", "step": step,
                      "samples_seen": meta.get("samples_seen"), "train_config": meta.get("train_config"),
                      "tokenizers": self.sources}
        training = " ".join(x for x in (self.about_data, LumosPipeline.training_summary(provenance)) if x)
        LumosPipeline.save_parts(folder, self.config, self.text_tokenizer, self.video_tokenizer, self.defaults,
                                 provenance=provenance, training=training, missing=self.missing, name=run)

def write_latest(out: Path, ckpt: Path, step: int) -> None:
    """Point the run folder's latest.json at the complete checkpoint `ckpt` (atomically)."""
    rel = ckpt.relative_to(out)
    atomic_write_json(out / LATEST, {"pipeline": str(rel / "model"), "checkpoint": str(rel), "step": step})


def missing_flags(folder: Path) -> list[str]:
    """The flags `lumos generate` needs besides `--model` for the pipeline folder `folder` (none: complete)."""
    from lumos.pipeline import DEFAULTS_FILE, TEXT_TOKENIZER_FILE, VIDEO_TOKENIZER_DIR

    f = folder / DEFAULTS_FILE
    defaults = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    return ((["--text-tokenizer"] if not (folder / TEXT_TOKENIZER_FILE).is_file() else [])
            + (["--video-tokenizer"] if not (folder / VIDEO_TOKENIZER_DIR).is_dir() else [])
            + (["--height", "--width", "--num-frames"] if "height" not in defaults else []))


def data_references(data: list[str]) -> dict:
    """What the first records folder of `data` says it was made with: {"text", "video", "prompt_template"}
    (those known; a recorded path that no longer exists is reported and left out)."""
    if not data:
        return {}
    root = Path(data[0])
    try:
        index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    refs = {k: v for k, v in (index.get("tokenizers") or {}).items() if k in ("text", "video") and v}
    if index.get("prompt_template"):
        refs["prompt_template"] = index["prompt_template"]
    prepared = root.parent / "prepared.json"            # a `lumos builtin prepare` folder: records in train/
    if prepared.is_file():
        try:
            refs.setdefault("prompt_template", json.loads(prepared.read_text(encoding="utf-8"))["prompt_template"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if (root.parent / "text_tokenizer.json").is_file():
            refs.setdefault("text", str((root.parent / "text_tokenizer.json").resolve()))
    for k in ("text", "video"):
        if k in refs and not Path(refs[k]).exists():
            print(f"lumos train: {root} was made with the {k} tokenizer {refs[k]}, which is gone; the "
                  f"checkpoints will not include it (set {k}_tokenizer in the config)", file=sys.stderr)
            del refs[k]
    return refs


def trained_size(source, vocab, max_frames: int) -> tuple[int, int, int, int] | None:
    """(latent frames, latent height, latent width, fps) most common among the first video records as
    trained (capped to `max_frames`); a source of images only gives (1, h, w, 1). None if nothing parses."""
    from lumos.train.batches import fetch

    seen, images = Counter(), Counter()
    for i in range(min(len(source), SAMPLES)):
        try:
            p = vocab.parse_video(fetch(source, i, max_frames, None, vocab))
        except LumosError:
            continue
        t, h, w = p.frames.shape
        (seen if t > 1 else images)[(int(t), int(h), int(w), int(p.fps))] += 1
    found = seen or images
    return found.most_common(1)[0][0] if found else None
