"""`lumos generate`: images and videos from prompts; a thin command line over `lumos.pipeline.LumosPipeline`.

    lumos generate --prompt "a red 3 moving left" --out red3.mp4 --seed 0
    lumos generate --prompt "a red 3" --num-frames 1 --out red3.png                  # text-to-image
    lumos generate --prompt "the digit moves up" --image first.png --out up.mp4      # image-to-video
    lumos generate --prompt "..." --video start.mp4 --num-frames 33 --out more.mp4   # continuation
    lumos generate --prompts-file prompts.jsonl --out outputs/                       # one output per line
    torchrun --nproc-per-node 8 -m lumos.cli generate --prompts-file big.jsonl --out outs/ --batch-size 8
    lumos generate --suite geneval --suite-file eval/prompts/geneval_evaluation_metadata.jsonl --out geneval/
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

At scale: `--batch-size N` runs N videos per pipeline call (each from its own seed, so a video does not
depend on its batch); under torchrun (or --rank / --world-size) output i goes to rank i % world size;
a prompts file or suite run skips the outputs that already have a complete manifest, so a killed run
resumes where it stopped. `--suite` generates a benchmark's prompts (`lumos.data.suites`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lumos.cli.flags import SettingFlags, add_threads, apply_threads
from lumos.data.suites import SUITES, read_suite, samples_per_prompt
from lumos.pipeline import CALL_SETTINGS, LumosPipeline, PipelineDefaults, resolve_device, resolve_model
from lumos.sampling import check_seed
from lumos.utils import LumosError, atomic_write, atomic_write_json, check_output, first_line

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
    src.add_argument("--suite", choices=list(SUITES), help="a benchmark's prompt suite, generated into --out in the "
                     "layout its scorer reads, with the authors' prompts and samples per prompt (lumos.data.suites)")
    src.add_argument("--suite-file", help="the --suite prompt file, from eval/prompts/ of "
                                          "https://github.com/alibaba-damo-academy/Lumos")
    src.add_argument("--suite-images", help="--suite vbench-i2v: VBench's first frames (vbench2_beta_i2v/data/crop/7-4/)")
    src.add_argument("--limit", type=int, help="only the first N prompts of --prompts-file / --suite-file")
    src.add_argument("--seed", type=int, help="random seed; line i of a prompts file (prompt i of a suite) has seed + "
                                              "i (default: a random one, 0 with --suite; written to the manifest)")
    src.add_argument("--num-videos-per-prompt", type=int,
                     help="videos per prompt (default: 1; with --suite the suite's: 4 GenEval, 5 VBench)")
    scale = p.add_argument_group("at scale (a rerun skips the outputs that have a complete manifest: a killed run "
                                 "resumes)")
    scale.add_argument("--batch-size", type=int, default=1,
                       help="videos per pipeline call (a batch holds jobs alike: all with an image, a video or none)")
    scale.add_argument("--rank", type=int, help="this process's share of the outputs: output i goes to rank "
                                                "i %% world size (default: $RANK, else 0)")
    scale.add_argument("--world-size", type=int, help="processes sharing the outputs (default: $WORLD_SIZE, else 1)")
    scale.add_argument("--overwrite", action="store_true", help="generate every output again, finished or not")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="moving-digits",
                   help="pipeline folder, built-in model name or Hub repo id (Alibaba-DAMO-Academy/Lumos-1)")
    m.add_argument("--subfolder", help="the model's folder inside --model (1B/stage-2-joint-384p)")
    m.add_argument("--revision", help="branch, tag or commit of the Hub repo --model (default: main)")
    m.add_argument("--text-tokenizer", help="text_tokenizer.json, a path or a Hub file "
                                            "(Alibaba-DAMO-Academy/Lumos-1/tokenizer/text_tokenizer.json; "
                                            "default: the one in the model folder)")
    m.add_argument("--video-tokenizer", help="video tokenizer folder, a path or a Hub repo id "
                                             "(nvidia/Cosmos-Tokenizer-DV4x8x8; default: tokenizer/ in the model folder)")
    m.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    m.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on cuda, float32 on cpu")
    m.add_argument("--compile", action="store_true", help="compile the decoding step with torch.compile (pays "
                                                          "off over many videos: the first one compiles it)")
    SETTINGS.add(p.add_argument_group("size and sampling (default: the model's pipeline.json)"))
    add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class Output:
    """One file to write (`path`) and its manifest: sample k of a job, drawn from its own generator seed."""
    job: "Job"
    k: int
    path: Path
    manifest: Path
    seed: int

    def finished(self) -> bool:
        """Written by an earlier run: the file and a complete manifest (manifests are written last, atomically)."""
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return self.path.is_file() and isinstance(manifest, dict) and "time_s" in manifest


@dataclass
class Job:
    prompt: str
    image: str | None
    video: str | None
    seed: int                  # video k draws from sample_seed(seed, k)
    out: Path
    where: str = ""            # where the job comes from, for messages: the prompts file's line
    paths: list[Path] | None = None        # its outputs when not named after `out` (a suite's layout)
    manifests: list[Path] | None = None    # their manifests when not beside them
    files: dict = field(default_factory=dict)   # {path: text} written with its first output (GenEval's metadata.jsonl)
    info: dict = field(default_factory=dict)    # recorded in each manifest (the suite, the prompt's index)

    def outputs(self, n: int) -> list[Output]:
        """Its n videos: `out`, or `stem-k.ext` for k < n (or `paths`); each has a manifest `.json`."""
        paths = self.paths or ([self.out] if n == 1 else
                               [self.out.with_name(f"{self.out.stem}-{k}{self.out.suffix}") for k in range(n)])
        manifests = self.manifests or [p.with_suffix(".json") for p in paths]
        return [Output(self, k, p, m, sample_seed(self.seed, k)) for k, (p, m) in enumerate(zip(paths, manifests))]


def sample_seed(seed: int, k: int) -> int:
    """The generator seed of video k of a job: the job's seed for k = 0 (one video is exactly `--seed`'s),
    else a golden-ratio stride away, so that no two videos of a run share one (the next line has seed + 1)."""
    return (seed + k * 0x9E3779B97F4A7C15) % 2**63


def check_flags(args) -> dict:
    """The checks that need no model; returns the size and sampling settings given (checked by
    `PipelineDefaults.check`; the pipeline checks what only the model knows, e.g. the patch size)."""
    settings = SETTINGS.read(args)
    for name in ("num_videos_per_prompt", "batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LumosError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    if sum(x is not None for x in (args.prompt, args.prompts_file, args.suite)) != 1:
        raise LumosError("give exactly one of --prompt, --prompts-file and --suite")
    if args.suite:
        check_suite_flags(args, settings)
    elif args.suite_file or args.suite_images:
        raise LumosError("--suite-file / --suite-images go with --suite")
    if args.prompt is not None and not args.prompt.strip():
        raise LumosError("--prompt is empty")
    if args.image and args.video:
        raise LumosError("give --image (image-to-video) or --video (continuation), not both")
    return settings


def check_suite_flags(args, settings: dict) -> None:
    """--suite: its file and folder given; GenEval scores images (num_frames 1), VBench videos."""
    if not args.suite_file:
        raise LumosError(f"--suite {args.suite} needs --suite-file, its prompt file {SUITES[args.suite][2]} "
                         f"(in eval/prompts/ of https://github.com/alibaba-damo-academy/Lumos)")
    if not args.out:
        raise LumosError(f"--suite {args.suite} needs --out, the folder its scorer reads")
    if args.image or args.video:
        raise LumosError("--suite brings its own inputs; drop --image / --video")
    image = args.suite == "geneval"
    if args.num_frames is not None and (args.num_frames == 1) != image:
        raise LumosError(f"--suite {args.suite} scores {'images: --num-frames 1' if image else 'videos: --num-frames > 1'}")
    if image:
        settings["num_frames"] = 1


def read_rank(args) -> tuple[int, int]:
    """(rank, world size) from --rank / --world-size, else torchrun's $RANK / $WORLD_SIZE, else (0, 1)."""
    def given(flag, env, default):
        v = getattr(args, flag)
        if v is not None:
            return v
        try:
            return int(os.environ.get(env, default))
        except ValueError:
            raise LumosError(f"${env}={os.environ[env]!r} is not an integer") from None

    rank, world = given("rank", "RANK", 0), given("world_size", "WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:
        raise LumosError(f"rank {rank} of world size {world}: need 0 <= rank < world size (--rank / --world-size)")
    return rank, world


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
    if args.suite:
        return _read_suite(args, seed if args.seed is not None else 0)
    if args.prompt is not None:
        out = _out_path(Path(args.out or f"lumos-out{ext}"))
        image = _existing(args.image, None, "--image") if args.image else None
        video = _existing(args.video, None, "--video") if args.video else None
        jobs = [Job(args.prompt, image, video, seed, out)]
    else:
        jobs = _read_prompts_file(args, seed, ext)[:args.limit]
    check_outputs(jobs, args)
    return jobs


def _read_suite(args, seed: int) -> list[Job]:
    n = args.num_videos_per_prompt or samples_per_prompt(args.suite)
    check_output(args.out, "--out", folder=True)
    items = read_suite(args.suite, args.suite_file, args.out, args.limit, args.suite_images, samples=n)
    jobs = [Job(it.prompt, it.image, None, seed + it.index, it.outputs[0], f"{args.suite_file}: prompt {it.index}",
                paths=it.outputs, manifests=it.manifests, files=it.files,
                info={"suite": args.suite, "suite_index": it.index, "suite_prompt": it.name}) for it in items]
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
    given = [args.prompts_file, args.suite_file] + [x for j in jobs for x in (j.image, j.video)]
    inputs = {Path(p).resolve(): p for p in given if p}
    seen: dict[Path, str] = {}
    for job in jobs:
        at = f"{job.where}: " if job.where else ""
        for out in job.outputs(args.num_videos_per_prompt or 1):
            for path, what in ((out.path, "output"), (out.manifest, "manifest")):
                key = path.resolve()
                if key in seen:
                    raise LumosError(f"{at}{what} {path} is written by {seen[key]} too; give each job its own "
                                     f"\"out\" (a manifest is the output's name with .json)")
                if key in inputs:
                    raise LumosError(f"{at}{what} {path} would overwrite the input {inputs[key]}")
                seen[key] = job.where
                check_output(path, f"{at}{what}")
        for path in job.files:
            check_output(path, f"{at}file")


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
    apply_threads(args)
    kwargs = check_flags(args)
    rank, world = read_rank(args)
    device, dtype = resolve_device(args.device, DTYPES.get(args.dtype))
    jobs = read_jobs(args)
    outputs = [o for job in jobs for o in job.outputs(args.num_videos_per_prompt or 1)]
    mine = outputs[rank::world]                                          # output i goes to rank i % world
    resume = not (args.overwrite or args.prompt is not None)
    todo = [o for o in mine if not (resume and o.finished())]
    if len(outputs) > 1 or world > 1:
        print(f"lumos generate: rank {rank} of {world}: {len(todo)} of {len(mine)} outputs to generate "
              f"({len(mine) - len(todo)} already done)")
    if not todo:
        return 0
    todo_jobs = list({id(o.job): o.job for o in todo}.values())
    # Decode every input before loading the model: a bad file fails in a second, not after minutes.
    for job in todo_jobs:
        read_inputs(job)
    model_dir = resolve_model(args.model, args.subfolder, args.revision)
    pipe = LumosPipeline.from_pretrained(model_dir, text_tokenizer=args.text_tokenizer,
                                         video_tokenizer=args.video_tokenizer, device=device, dtype=dtype,
                                         weights=False)
    # Every job is checked against the model's config (a resolution that is not a multiple of the patch,
    # top_k beyond the codebook, a layout longer than the model's positions) before the weights are read.
    settings = {id(job): pipe.check(job.prompt, image=job.image, video=job.video, **kwargs) for job in todo_jobs}
    pipe.load_weights()
    pipe.enable_compile(args.compile)
    for batch in batches(todo, args.batch_size):
        write_batch(pipe, batch, settings[id(batch[0].job)], kwargs, args, model_dir, rank, world)
    return 0


def batches(todo: list[Output], size: int):
    """Runs of at most `size` outputs whose jobs are alike (all with an image, all with a video, or
    neither: one pipeline call takes one kind), in the order of the work list within each kind."""
    kinds: dict[tuple, list[Output]] = {}
    for o in todo:
        kinds.setdefault((o.job.image is None, o.job.video is None), []).append(o)
    for outs in kinds.values():
        for i in range(0, len(outs), size):
            yield outs[i:i + size]


def write_batch(pipe, batch: list[Output], s, kwargs: dict, args, model_dir, rank: int, world: int) -> None:
    """Generate a batch in one pipeline call (each video from its own seed, so a video does not depend
    on its batch) and write each output, then its manifest (last: it marks the output finished)."""
    from lumos import media

    decoded = {id(o.job): read_inputs(o.job) for o in batch}
    images = [decoded[id(o.job)][0] for o in batch] if batch[0].job.image else None
    videos = [decoded[id(o.job)][1] for o in batch] if batch[0].job.video else None
    generators = [torch.Generator(device=pipe.device).manual_seed(o.seed) for o in batch]
    t0 = time.perf_counter()
    frames_of = pipe([o.job.prompt for o in batch], image=images, video=videos, generator=generators,
                     progress=not args.no_progress, return_dict=True, **kwargs).frames
    seconds = time.perf_counter() - t0
    for o, frames in zip(batch, frames_of):
        job = o.job
        for path, text in job.files.items():
            if not (path.is_file() and path.read_text(encoding="utf-8") == text):
                with atomic_write(path, "w") as f:
                    f.write(text)
        media.write_video(o.path, frames, fps=s.fps)
        atomic_write_json(o.manifest, {
            "output": str(o.path), "prompt": job.prompt, "image": job.image, "video": job.video,
            "seed": job.seed, "sample_index": o.k, "generator_seed": o.seed, **job.info,
            "model": args.model, "subfolder": args.subfolder, "revision": args.revision, "model_path": str(model_dir),
            "settings": s.to_dict(),
            "frames": int(frames.shape[0]), "device": str(pipe.device),
            "dtype": str(next(pipe.model.parameters()).dtype).replace("torch.", ""),
            "rank": rank, "world_size": world, "batch_videos": len(batch),
            "time_s": round(seconds, 3)})
        T, H, W, _ = frames.shape
        print(f"wrote {o.path} ({T} frame{'s' if T != 1 else ''} of {W}x{H}, {seconds:.1f} s)")
