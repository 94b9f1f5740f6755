"""`lumos generate`: images and videos from prompts; a thin command line over `lumos.pipeline.LumosPipeline`.

    lumos generate --prompt "a red 3 moving left" --out red3.mp4 --seed 0
    lumos generate --prompt "a red 3" --num-frames 1 --out red3.png                  # text-to-image
    lumos generate --prompt "the digit moves up" --image first.png --out up.mp4      # image-to-video
    lumos generate --prompt "..." --video start.mp4 --num-frames 33 --out more.mp4   # continuation
    lumos generate --prompts-file prompts.jsonl --out outputs/                       # one output per line
    lumos generate --model ckpts/1B/stage-2-joint-384p --text-tokenizer ckpts/tokenizer/text_tokenizer.json \\
        --video-tokenizer ckpts/Cosmos-Tokenizer-DV4x8x8 --prompt "..." --reference-compat

`--model` is a pipeline folder or the name of a built-in model (default "moving-digits", shipped in
lumos/assets/). A prompts file has one JSON object per line: {"prompt": ..., and optionally "image",
"video" (paths relative to the file), "seed", "out" (relative to --out, and inside it)}; the flags apply
to every line. Next to each output (mp4, webm, gif, png, jpg) a JSON manifest with the same name records
the prompt, seed, every setting, the model and the time taken. Bad input is one line on stderr and exit
code 2, checked before the model's weights are read: the flags, every output location (writable, not a
folder, not written twice, not one of the inputs), every input file, every job's settings and length
against the model's config. Outputs are written atomically (never a partial file).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lumos.cli.flags import SettingFlags
from lumos.pipeline import CALL_SETTINGS, LumosPipeline, PipelineDefaults, resolve_device, resolve_model
from lumos.sampling import check_seed
from lumos.utils import LumosError, atomic_write_json, check_output, first_line

# The size and sampling flags: one per keyword of a pipeline call (left out: the model's pipeline.json).
SETTINGS = SettingFlags(PipelineDefaults, CALL_SETTINGS)
OUT_EXTS = (".mp4", ".webm", ".gif", ".png", ".jpg", ".jpeg")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("what to generate")
    src.add_argument("--prompt", help="the caption")
    src.add_argument("--prompts-file", help="JSONL file: one {\"prompt\": ..., \"image\"?, \"video\"?, \"seed\"?, "
                                            "\"out\"?} per line")
    src.add_argument("--image", help="image-to-video: the first frame")
    src.add_argument("--video", help="continuation: the beginning of the video")
    src.add_argument("--out", help="output file (.mp4 .webm .gif .png .jpg); with --prompts-file, a folder "
                                   "(default lumos-out.mp4 / lumos-out.png / lumos-out/)")
    src.add_argument("--seed", type=int, help="random seed (default: a random one, written to the manifest)")
    src.add_argument("--num-videos-per-prompt", type=int, default=1)
    m = p.add_argument_group("model")
    m.add_argument("--model", default="moving-digits", help="pipeline folder or built-in model name")
    m.add_argument("--text-tokenizer", help="text_tokenizer.json (default: the one in the model folder)")
    m.add_argument("--video-tokenizer", help="video tokenizer folder (default: tokenizer/ in the model folder)")
    m.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    m.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on cuda, float32 on cpu")
    SETTINGS.add(p.add_argument_group("size and sampling (default: the model's pipeline.json)"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class Job:
    prompt: str
    image: str | None
    video: str | None
    seed: int
    out: Path
    where: str = ""            # where the job comes from, for messages: the prompts file's line

    def outputs(self, n: int) -> list[Path]:
        """The files of its n videos (`out`, or `stem-k.ext` for k < n); each has a manifest `.json`."""
        if n == 1:
            return [self.out]
        return [self.out.with_name(f"{self.out.stem}-{k}{self.out.suffix}") for k in range(n)]


def check_flags(args) -> dict:
    """The checks that need no model; returns the size and sampling settings given (checked by
    `PipelineDefaults.check`; the pipeline checks what only the model knows, e.g. the patch size)."""
    settings = SETTINGS.read(args)
    if args.num_videos_per_prompt < 1:
        raise LumosError(f"--num-videos-per-prompt must be >= 1, got {args.num_videos_per_prompt}")
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    if (args.prompt is None) == (args.prompts_file is None):
        raise LumosError("give exactly one of --prompt and --prompts-file")
    if args.prompt is not None and not args.prompt.strip():
        raise LumosError("--prompt is empty")
    if args.image and args.video:
        raise LumosError("give --image (image-to-video) or --video (continuation), not both")
    return settings


def _out_path(path: Path) -> Path:
    if path.suffix.lower() not in OUT_EXTS:
        raise LumosError(f"{path}: unsupported output type {path.suffix or '(none)'!r}; "
                         f"use one of {', '.join(OUT_EXTS)}")
    return path


def _existing(path, base: Path | None, flag: str) -> str:
    p = Path(path)
    if base is not None and not p.is_absolute():
        p = base / p
    if not p.exists():
        raise LumosError(f"{flag} {p}: no such file")
    return str(p)


def _inside(folder: Path, out: str, where: str) -> Path:
    """A prompts file's "out": relative to --out and inside it, also once resolved (no absolute path,
    no `..` or symlink leading out of it)."""
    path = folder / out
    if Path(out).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise LumosError(f"{where}: \"out\" {out!r} leads outside --out {folder}; give a path inside it")
    return _out_path(path)


def read_jobs(args) -> list[Job]:
    """The work list: one job for --prompt, one per line of --prompts-file (all validated up front,
    their output locations included: `check_outputs`)."""
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    ext = ".png" if args.num_frames == 1 else ".mp4"
    if args.prompt is not None:
        out = _out_path(Path(args.out or f"lumos-out{ext}"))
        image = _existing(args.image, None, "--image") if args.image else None
        video = _existing(args.video, None, "--video") if args.video else None
        jobs = [Job(args.prompt, image, video, seed, out)]
    else:
        jobs = _read_prompts_file(args, seed, ext)
    check_outputs(jobs, args)
    return jobs


def _read_prompts_file(args, seed: int, ext: str) -> list[Job]:
    f = Path(args.prompts_file)
    if not f.is_file():
        raise LumosError(f"--prompts-file {f}: no such file")
    folder = Path(args.out or "lumos-out")
    if folder.suffix.lower() in OUT_EXTS:
        raise LumosError(f"--out {folder}: with --prompts-file, --out is a folder")
    check_output(folder, "--out", folder=True)
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LumosError(f"--prompts-file {f}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         f"save it as UTF-8") from None
    except OSError as e:
        raise LumosError(f"--prompts-file {f}: cannot read ({e.strerror or first_line(e)})") from None
    jobs = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise LumosError(f"{f}:{i}: not JSON ({e.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not d["prompt"].strip():
            raise LumosError(f"{f}:{i}: expected an object with a non-empty \"prompt\"")
        unknown = set(d) - {"prompt", "image", "video", "seed", "out"}
        if unknown:
            raise LumosError(f"{f}:{i}: unknown keys {sorted(unknown)} (known: prompt, image, video, seed, out)")
        for key in ("image", "video", "out"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise LumosError(f"{f}:{i}: \"{key}\" must be a string, got {d[key]!r}")
        job_seed = check_seed(d["seed"] if "seed" in d else seed + len(jobs),
                              f"{f}:{i}: \"seed\"" if "seed" in d else f"--seed + line index ({f}:{i})")
        if d.get("image") and d.get("video"):
            raise LumosError(f"{f}:{i}: give \"image\" or \"video\", not both")
        image = d.get("image") or args.image
        video = d.get("video") or args.video
        jobs.append(Job(
            prompt=d["prompt"],
            image=_existing(image, f.parent if d.get("image") else None, f"{f}:{i}: image") if image else None,
            video=_existing(video, f.parent if d.get("video") else None, f"{f}:{i}: video") if video else None,
            seed=job_seed,
            out=_inside(folder, d["out"], f"{f}:{i}") if d.get("out") else folder / f"{len(jobs):04d}{ext}",
            where=f"{f}:{i}"))
    if not jobs:
        raise LumosError(f"{f}: no prompts (expected one JSON object with a \"prompt\" per line)")
    return jobs


def check_outputs(jobs: list[Job], args) -> None:
    """Every file the run will write, each output and its manifest, checked before any work: a
    location that can be written (`lumos.utils.check_output`), written by one job only, and not one of
    the inputs (the prompts file, an image, a video)."""
    inputs = {Path(p).resolve(): p for p in [args.prompts_file] + [x for j in jobs for x in (j.image, j.video)] if p}
    seen: dict[Path, str] = {}
    for job in jobs:
        at = f"{job.where}: " if job.where else ""
        for out in job.outputs(args.num_videos_per_prompt):
            for path, what in ((out, "output"), (out.with_suffix(".json"), "manifest")):
                key = path.resolve()
                if key in seen:
                    raise LumosError(f"{at}{what} {path} is written by {seen[key]} too; give each job its own "
                                     f"\"out\" (a manifest is the output's name with .json)")
                if key in inputs:
                    raise LumosError(f"{at}{what} {path} would overwrite the input {inputs[key]}")
                seen[key] = job.where
                check_output(path, f"{at}{what}")


def read_inputs(job: Job):
    """The job's image / video decoded to uint8 frames (LumosError for a file that is not one)."""
    from lumos import media

    image = media.read_image(job.image) if job.image else None
    video = None
    if job.video:
        video, fps = media.read_media(job.video)
        if fps is None:
            raise LumosError(f"--video {job.video} is a still image; use --image for image-to-video")
    return image, video


def run(args) -> int:
    from lumos import media

    kwargs = check_flags(args)
    device, dtype = resolve_device(args.device, DTYPES.get(args.dtype))
    jobs = read_jobs(args)
    # Decode every input before loading the model: a bad file fails in a second, not after minutes.
    inputs = [read_inputs(j) for j in jobs]
    model_dir = resolve_model(args.model)
    pipe = LumosPipeline.from_pretrained(model_dir, text_tokenizer=args.text_tokenizer,
                                         video_tokenizer=args.video_tokenizer, device=device, dtype=dtype,
                                         weights=False)
    # Every job is checked against the model's config (a resolution that is not a multiple of the patch,
    # top_k beyond the codebook, a layout longer than the model's positions) before the weights are read.
    settings = [pipe.check(job.prompt, image=image, video=video, num_videos_per_prompt=args.num_videos_per_prompt,
                           **kwargs) for job, (image, video) in zip(jobs, inputs)]
    pipe.load_weights()
    for job, (image, video), s in zip(jobs, inputs, settings):
        generator = torch.Generator(device=pipe.device).manual_seed(job.seed)
        t0 = time.perf_counter()
        videos = pipe(job.prompt, image=image, video=video, generator=generator,
                      num_videos_per_prompt=args.num_videos_per_prompt, progress=not args.no_progress, **kwargs)
        seconds = time.perf_counter() - t0
        videos = [videos] if args.num_videos_per_prompt == 1 else videos
        for k, (out, frames) in enumerate(zip(job.outputs(len(videos)), videos)):
            media.write_video(out, frames, fps=s.fps)
            atomic_write_json(out.with_suffix(".json"), {
                "output": str(out), "prompt": job.prompt, "image": job.image, "video": job.video,
                "seed": job.seed, "sample_index": k, "model": args.model, "model_path": str(model_dir),
                "settings": s.to_dict(),
                "frames": int(frames.shape[0]), "device": str(pipe.device),
                "dtype": str(next(pipe.model.parameters()).dtype).replace("torch.", ""),
                "time_s": round(seconds, 3)})
            T, H, W, _ = frames.shape
            print(f"wrote {out} ({T} frame{'s' if T != 1 else ''} of {W}x{H}, {seconds:.1f} s)")
    return 0
