"""Benchmark prompt suites: the prompt files of GenEval and VBench, read the way the Lumos-1 authors
read them, and laid out the way each scorer reads the results. `lumos generate --suite` turns the
items into jobs; this module knows the file formats, the prompt field, the samples per prompt and the
layout, nothing about models.

The suite files are the authors' (`eval/prompts/` of github.com/alibaba-damo-academy/Lumos); pass one
with `--suite-file`:

| suite        | file                                        | prompt given to the model | samples | layout under --out                           |
|--------------|---------------------------------------------|---------------------------|---------|----------------------------------------------|
| `geneval`    | `geneval_evaluation_metadata.jsonl`         | `prompt_rewrite_qwen32b`  | 4       | `<i:05d>/metadata.jsonl`, `<i:05d>/samples/<k:05d>.png` |
| `vbench-t2v` | `vbench_t2v_all_dimension_longer.json`      | the value (longer prompt) | 5       | `videos/<key without .mp4>-<k>.mp4`          |
| `vbench-i2v` | `vbench2_i2v_full_info_qwen32b_vl.json`     | `prompt_en_qwen32b_vl`    | 5       | `videos/<prompt_en>-<k>.mp4`                 |

- GenEval (`evaluation/evaluate_images.py <out>`) reads every numbered folder's `metadata.jsonl` (the
  suite line without the rewritten prompt, as the authors write it) and every `samples/<digits>.png`;
  the manifests `samples/<k:05d>.json` beside them do not match its pattern.
- VBench (`--videos_path <out>/videos`) finds `<prompt_en>-<k>.mp4` and takes the file type from the
  first name in the folder, so the folder holds the videos only: the manifests go to `<out>/manifests/`.
- VBench-I2V needs the first frames: `--suite-images` is VBench's crop folder (the authors used
  `vbench2_beta_i2v/data/crop/7-4/`), holding each entry's `image_name`.

Seeds: prompt i has seed `--seed + i` (0 + i by default), its sample k draws from
`lumos.cli.generate.sample_seed(seed, k)`, whatever the rank or batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lumos.utils import LumosError

SUITES = {  # name -> (samples per prompt, output type, what the file is)
    "geneval": (4, ".png", "geneval_evaluation_metadata.jsonl"),
    "vbench-t2v": (5, ".mp4", "vbench_t2v_all_dimension_longer.json"),
    "vbench-i2v": (5, ".mp4", "vbench2_i2v_full_info_qwen32b_vl.json"),
}
SOURCE = "eval/prompts/ of https://github.com/alibaba-damo-academy/Lumos"


@dataclass
class SuiteItem:
    index: int                    # the prompt's index in the suite file
    prompt: str                   # what the model is given (the rewritten prompt where the authors use one)
    name: str                     # the benchmark's own prompt (VBench's prompt_en, GenEval's prompt)
    image: str | None             # first frame (vbench-i2v)
    outputs: list[Path]           # one per sample
    manifests: list[Path]         # one per output
    files: dict[Path, str] = field(default_factory=dict)   # side files the scorer reads (GenEval metadata.jsonl)


def samples_per_prompt(suite: str) -> int:
    return SUITES[suite][0]


def _read(path: Path, suite: str):
    if not path.is_file():
        raise LumosError(f"--suite-file {path}: no such file (the {suite} prompts are "
                         f"{SUITES[suite][2]} in {SOURCE})")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LumosError(f"--suite-file {path}: not a {suite} prompt file "
                         f"({getattr(e, 'msg', None) or type(e).__name__})") from None


def _entries(suite: str, data, path: Path) -> list[tuple[str, str, dict]]:
    """(prompt for the model, the benchmark's prompt, the entry) per prompt, in file order."""
    bad = LumosError(f"--suite-file {path}: not the {suite} file ({SUITES[suite][2]} from {SOURCE})")
    if suite == "geneval":
        if not isinstance(data, list) or not all(isinstance(d, dict) and "prompt_rewrite_qwen32b" in d
                                                 and "prompt" in d for d in data):
            raise bad
        return [(d["prompt_rewrite_qwen32b"], d["prompt"], d) for d in data]
    if suite == "vbench-t2v":
        if not isinstance(data, dict) or not all(isinstance(k, str) and k.endswith(".mp4") and isinstance(v, str)
                                                 for k, v in data.items()):
            raise bad
        return [(v, k[:-len(".mp4")], {}) for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(d, dict) and {"prompt_en", "prompt_en_qwen32b_vl",
                                                                      "image_name"} <= set(d) for d in data):
        raise bad
    return [(d["prompt_en_qwen32b_vl"], d["prompt_en"], d) for d in data]


def read_suite(suite: str, path, out, limit: int | None = None, images=None,
               samples: int | None = None) -> list[SuiteItem]:
    """The items of `suite` read from its prompt file `path` (the first `limit` prompts), with their
    output files under the folder `out` (module docstring). images: the first-frame folder (vbench-i2v);
    samples: per prompt (default: the authors' count)."""
    if suite not in SUITES:
        raise LumosError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    path, out = Path(path), Path(out)
    if suite == "vbench-i2v" and not images:
        raise LumosError("--suite vbench-i2v needs --suite-images, VBench's folder of first frames "
                         "(vbench2_beta_i2v/data/crop/7-4/, as the authors used)")
    entries = _entries(suite, _read(path, suite), path)[:limit]
    _, ext, _ = SUITES[suite]
    n = samples or samples_per_prompt(suite)
    items = []
    for i, (prompt, name, entry) in enumerate(entries):
        if not prompt.strip():
            raise LumosError(f"--suite-file {path}: prompt {i} is empty")
        if suite == "geneval":
            folder = out / f"{i:05d}"
            outputs = [folder / "samples" / f"{k:05d}{ext}" for k in range(n)]
            manifests = [o.with_suffix(".json") for o in outputs]
            meta = {k: v for k, v in entry.items() if k != "prompt_rewrite_qwen32b"}
            files = {folder / "metadata.jsonl": json.dumps(meta)}
        else:
            if "/" in name or name.startswith("."):
                raise LumosError(f"--suite-file {path}: prompt {i} {name!r} cannot be a file name")
            outputs = [out / "videos" / f"{name}-{k}{ext}" for k in range(n)]
            manifests = [out / "manifests" / f"{name}-{k}.json" for k in range(n)]
            files = {}
        image = None
        if suite == "vbench-i2v":
            image = Path(images) / entry["image_name"]
            if not image.is_file():
                raise LumosError(f"--suite-images {images}: no {entry['image_name']} (prompt {i}); give "
                                 f"VBench's crop folder")
            image = str(image)
        items.append(SuiteItem(i, prompt, name, image, outputs, manifests, files))
    if not items:
        raise LumosError(f"--suite-file {path}: no prompts")
    return items
