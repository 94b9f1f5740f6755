"""The web UI of `lumos serve`: a thin layer over `LumosPipeline`.

    studio = Studio(LumosPipeline.from_pretrained("moving-digits"), "moving-digits", Limits())
    for update in studio.generate(Request("a red 3 moving down", seed=0, settings={"num_inference_steps": 4})):
        update.status, update.frames, update.result      # "frame 5 of 17 ...", uint8 [t, H, W, 3], Result at the end
    launch(studio, host="127.0.0.1", port=7860)         # the gradio page (build_ui) on that Studio

`Studio` holds what the server owns and every rule, without gradio, so tests drive it directly:
- limits (`Limits`): frames, steps, resolution, upload size and the queue, each with a message naming
  the `lumos serve` flag that raises it; everything else is the pipeline's own check (`pipe.check`).
- uploads are files gradio received: at most `max_upload_mb`, decoded by `lumos.media`; a bad one is
  one line naming the file (its upload name, not a server path).
- one generation at a time (a lock); at most `max_queue` wait for it, beyond that "busy" at once.
- a generation runs `pipe.stream(output_type="codes")` in a worker thread; each latent frame's codes
  are decoded with `pipe.decode` on everything so far (what `stream` does for "np"), so the page gets
  the new pixel frames as each latent frame is done, and the last decode is exactly the frames
  `pipe(...)` returns for the same seed (the same codes through the same `decode`).
- a result is written into the server's own temporary folder only: mp4 (to play), gif, a lossless png
  strip of the frames, and a JSON manifest (prompt, seed, settings, model, time); a one-frame result
  (text-to-image) is a png. The page never names a path to read or write.

`build_ui` lays the page out and `launch` serves it (gradio imported there only).
"""

from __future__ import annotations

import os
import queue
import random
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lumos import media
from lumos.utils import LumosError, atomic_write_json

# What the page sets (the model's pipeline.json gives their defaults); the rest of a call's settings
# (top_k, top_p, remask_temperature, fps, ...) stay the model's own.
PAGE_SETTINGS = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale", "history_mask_ratio",
                 "temperature")
MAX_SEED = 2**31 - 1


@dataclass
class Limits:
    """Upper bounds of what one request may ask for (the `lumos serve` flags of the same names)."""
    max_frames: int = 33          # frames of one video (the built-in model makes 17)
    max_steps: int = 32           # refinement steps per latent frame
    max_resolution: int = 256     # pixels per side (height and width)
    max_upload_mb: float = 16.0   # megabytes per uploaded file (first image, video)
    max_queue: int = 4            # generations waiting behind the running one; beyond: "busy"

    def __post_init__(self):
        for name in ("max_frames", "max_steps", "max_resolution", "max_queue"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "max_queue" else 1):
                raise LumosError(f"--{name.replace('_', '-')} must be an integer >= "
                                 f"{0 if name == 'max_queue' else 1}, got {v!r}")
        if not isinstance(self.max_upload_mb, (int, float)) or not 0 < self.max_upload_mb < float("inf"):
            raise LumosError(f"--max-upload-mb must be a number > 0, got {self.max_upload_mb!r}")


@dataclass
class Request:
    """One generation as the page asks for it. image / video: uploaded files (gradio's copies)."""
    prompt: str
    seed: int
    image: str | None = None
    video: str | None = None
    settings: dict = field(default_factory=dict)     # any of PAGE_SETTINGS; None or missing: the model's


@dataclass
class Result:
    """A finished generation: its frames, its files (kind -> path) and manifest, in the gallery at `index`."""
    index: int
    request: Request
    frames: np.ndarray                               # uint8 [T, H, W, 3], exactly pipe(...)'s
    files: dict[str, Path]                           # "mp4", "gif", "png" (lossless strip / the image), "json"
    manifest: dict

    @property
    def is_image(self) -> bool:
        return self.frames.shape[0] == 1

    @property
    def thumbnail(self) -> Path:
        return self.files["png" if self.is_image else "gif"]


@dataclass
class Update:
    """What a generation tells the page: a status line, the frames just decoded, the result at the end."""
    status: str
    frames: np.ndarray | None = None
    result: Result | None = None


def _upload_name(path) -> str:
    return Path(path).name


class Studio:
    """The server's state (model, limits, queue, results) and its rules; see the module docstring."""

    def __init__(self, pipe, model: str, limits: Limits | None = None, out_dir=None):
        self.pipe = pipe
        self.model = model
        self.limits = limits or Limits()
        pipe.set_progress_bar_config(disable=True)
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="lumos-serve-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results: list[Result] = []
        self._running = threading.Lock()             # one generation at a time
        self._admit = threading.Lock()               # guards _pending and results
        self._pending = 0                            # admitted requests: the running one + those waiting

    # ---------------------------------------------------------------------------------- what the page offers
    def defaults(self) -> dict:
        """The model's own settings (pipeline.json) for the page's inputs, within the limits."""
        d, lim = self.pipe.defaults, self.limits
        return {"num_frames": min(d.num_frames, lim.max_frames), "height": min(d.height, self.max_side),
                "width": min(d.width, self.max_side), "num_inference_steps": min(d.num_inference_steps, lim.max_steps),
                "guidance_scale": d.guidance_scale, "history_mask_ratio": d.history_mask_ratio,
                "temperature": d.temperature}

    @property
    def max_side(self) -> int:
        """The largest height / width offered: the limit, a multiple of the pipeline's patch, within its size tokens."""
        p = self.pipe.patch
        return max(p, min(self.limits.max_resolution, self.pipe.model.config.vocab.max_size * p) // p * p)

    @property
    def waiting(self) -> int:
        """Requests waiting for the running generation."""
        return max(0, self._pending - 1)

    # ---------------------------------------------------------------------------------- checks and uploads
    def read_upload(self, path, kind: str) -> np.ndarray:
        """An uploaded first image (kind "image") or video ("video") -> uint8 [T, H, W, 3], decoded by
        `lumos.media`. LumosError (one line, naming the upload) for a file too large or not a readable one."""
        what = "first image" if kind == "image" else "video"
        name = _upload_name(path)
        p = Path(path)
        if not p.is_file():
            raise LumosError(f"{what} {name}: not an uploaded file")
        mb = p.stat().st_size / 1e6
        if mb > self.limits.max_upload_mb:
            raise LumosError(f"{what} {name} is {mb:.1f} MB; uploads may be at most {self.limits.max_upload_mb:g} MB "
                             f"(lumos serve --max-upload-mb)")
        try:
            if kind == "image":
                if not media.is_image_path(p) and p.suffix.lower() in media.VIDEO_EXTS:
                    raise LumosError("a video; give it as the video to continue, or upload a still image")
                return media.read_image(p)
            frames, fps = media.read_media(p)
            if fps is None:
                raise LumosError("a still image; give it as the first image (image-to-video)")
            return frames
        except LumosError as e:
            message = str(e).replace(str(p), name)
            if message.startswith(name):
                message = message[len(name):].lstrip(": ")
            raise LumosError(f"{what} {name}: {message}") from None

    def check(self, req: Request):
        """Every check of a request before it queues -> (pipeline Settings, image, video): the limits, the
        uploads (decoded) and the pipeline's own check (sizes, settings, the layout against the model)."""
        if not isinstance(req.prompt, str) or not req.prompt.strip():
            raise LumosError("the prompt is empty; describe what to generate")
        if isinstance(req.seed, bool) or not isinstance(req.seed, (int, np.integer)) or not 0 <= req.seed <= MAX_SEED:
            raise LumosError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {req.seed!r}")
        unknown = sorted(set(req.settings) - set(PAGE_SETTINGS))
        if unknown:
            raise LumosError(f"unknown settings {unknown}; known: {', '.join(PAGE_SETTINGS)}")
        if req.image and req.video:
            raise LumosError("give a first image (image-to-video) or a video (continuation), not both")
        settings = {k: v for k, v in req.settings.items() if v is not None}
        lim, d = self.limits, self.defaults()
        frames = settings.get("num_frames", self.pipe.defaults.num_frames)
        steps = settings.get("num_inference_steps", self.pipe.defaults.num_inference_steps)
        if isinstance(frames, (int, float)) and frames > lim.max_frames:
            raise LumosError(f"{frames:g} frames is more than this server allows ({lim.max_frames}; "
                             f"lumos serve --max-frames)")
        if isinstance(steps, (int, float)) and steps > lim.max_steps:
            raise LumosError(f"{steps:g} steps is more than this server allows ({lim.max_steps}; "
                             f"lumos serve --max-steps)")
        for side in ("height", "width"):
            v = settings.get(side, d[side])
            if isinstance(v, (int, float)) and v > self.max_side:
                raise LumosError(f"{side} {v:g} px is more than this server allows ({self.max_side} px; "
                                 f"lumos serve --max-resolution)")
        # The page's numbers arrive as floats (gradio sliders); a whole number is an int setting.
        for k in ("num_frames", "height", "width", "num_inference_steps"):
            if isinstance(settings.get(k), float) and settings[k].is_integer():
                settings[k] = int(settings[k])
        image = self.read_upload(req.image, "image") if req.image else None
        video = self.read_upload(req.video, "video") if req.video else None
        s = self.pipe.check(req.prompt, image=image, video=video, **settings)
        return s, settings, image, video

    # ---------------------------------------------------------------------------------- the queue
    @contextmanager
    def _admitted(self):
        """A place in the queue, or LumosError "busy" at once when `max_queue` already wait."""
        with self._admit:
            if self._pending > self.limits.max_queue:
                raise LumosError(f"busy: one generation running and {self._pending - 1} waiting (at most "
                                 f"{self.limits.max_queue}); try again in a moment")
            self._pending += 1
        try:
            yield
        finally:
            with self._admit:
                self._pending -= 1

    # ---------------------------------------------------------------------------------- a generation
    def generate(self, req: Request) -> Iterator[Update]:
        """Check, queue and run one request: `Update`s while it waits and as each latent frame is decoded,
        the last one with the `Result`. LumosError (before anything is queued) for a request refused."""
        s, settings, image, video = self.check(req)
        with self._admitted():
            while not self._running.acquire(timeout=0.2):
                yield Update(f"waiting: another generation is running ({self.waiting} waiting)")
            try:
                yield from self._run(req, s, settings, image, video)
            finally:
                self._running.release()

    def _run(self, req: Request, s, settings: dict, image, video) -> Iterator[Update]:
        pipe = self.pipe
        n_latent = 1 if s.task == "t2i" else pipe.video_tokenizer.num_latent_frames(s.num_frames)
        steps = s.sample.num_inference_steps
        events: queue.Queue = queue.Queue()
        stop = threading.Event()

        def on_step(p, frame, step, state):
            events.put(("step", frame, step))
            if stop.is_set():                        # the page went away: end the stream
                p._interrupt = True

        def work():
            try:
                for codes in pipe.stream(req.prompt, image=image, video=video, generator=int(req.seed),
                                         output_type="codes", callback_on_step_end=on_step, **settings):
                    events.put(("codes", codes))
                events.put(("done",))
            except BaseException as e:               # reported by the consumer, in its thread
                events.put(("error", e))

        t0 = time.perf_counter()
        worker = threading.Thread(target=work, name="lumos-serve-generate", daemon=True)
        worker.start()
        codes, frames, shown, given = None, None, 0, 0
        try:
            yield Update(f"starting: {s.num_frames} frame{'s' if s.num_frames != 1 else ''} of {s.width}x{s.height}, "
                         f"{n_latent} latent frame{'s' if n_latent != 1 else ''} x {steps} steps")
            while True:
                event = events.get()
                if event[0] == "error":
                    raise event[1]
                if event[0] == "done":
                    break
                if event[0] == "step":
                    _, frame, step = event
                    yield Update(f"latent frame {given + frame + 1} of {n_latent}, step {step + 1} of {steps} "
                                 f"(frames {shown} of {s.num_frames} done)")
                    continue
                new = event[1]
                if codes is None and s.task in ("i2v", "continuation"):
                    given = len(new)                 # the first yield holds the given frames
                codes = new if codes is None else torch.cat([codes, new])
                frames = pipe.decode(codes, s.num_frames)
                fresh, shown = frames[shown:], len(frames)
                yield Update(f"frame {shown} of {s.num_frames} decoded (latent frame {len(codes)} of {n_latent}, "
                             f"{steps} steps each)", frames=fresh)
        finally:
            stop.set()
            worker.join()
        seconds = time.perf_counter() - t0
        if frames is None or not len(frames):
            raise LumosError("the generation stopped before its first frame")
        result = self._save(req, s, frames, seconds)
        yield Update(f"done: {shown} frame{'s' if shown != 1 else ''} in {seconds:.1f} s (seed {req.seed})",
                     result=result)

    def _save(self, req: Request, s, frames: np.ndarray, seconds: float) -> Result:
        """Write a result's files into the server's folder; add it to the gallery."""
        with self._admit:
            index = len(self.results)
            folder = self.out_dir / f"{index:04d}"
            folder.mkdir()
        files: dict[str, Path] = {}
        if frames.shape[0] == 1:
            files["png"] = folder / "lumos.png"
            media.write_image(files["png"], frames)
        else:
            files["mp4"] = folder / "lumos.mp4"
            files["gif"] = folder / "lumos.gif"
            files["png"] = folder / "lumos-frames.png"   # the frames side by side, lossless
            media.write_video(files["mp4"], frames, fps=s.fps)
            media.write_video(files["gif"], frames, fps=s.fps)
            media.write_image(files["png"], frames)
        files["json"] = folder / "lumos.json"
        manifest = {
            "prompt": req.prompt, "seed": int(req.seed),
            "image": _upload_name(req.image) if req.image else None,
            "video": _upload_name(req.video) if req.video else None,
            "settings": s.to_dict(), "model": self.model,
            "frames": int(frames.shape[0]), "device": str(self.pipe.device),
            "time_s": round(seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {k: p.name for k, p in files.items() if k != "json"},
        }
        atomic_write_json(files["json"], manifest)
        result = Result(index, req, frames, files, manifest)
        with self._admit:
            self.results.append(result)
        return result

    def restore(self, index: int) -> dict:
        """The prompt, seed and page settings of gallery entry `index` (what a click on it puts back)."""
        r = self.results[index]
        s = r.manifest["settings"]
        return {"prompt": r.request.prompt, "seed": r.request.seed, **{k: s[k] for k in PAGE_SETTINGS}}


def random_seed() -> int:
    return random.SystemRandom().randrange(MAX_SEED + 1)


# ====================================================================================== the page (gradio)
CSS = """
#preview img, #still img, #result-video video, #gallery img, #upload-preview img { image-rendering: pixelated; }
footer { display: none !important; }
"""


def build_ui(studio: Studio):
    """The gradio page on `studio` -> (gr.Blocks, the launch keywords it needs: theme, css)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # read by gradio when it is imported
    import gradio as gr

    d, lim, patch = studio.defaults(), studio.limits, studio.pipe.patch
    # System fonts only: the default theme loads Google Fonts, which an offline machine cannot reach.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="lumos", analytics_enabled=False) as page:
        gr.Markdown(f"## lumos &middot; `{studio.model}`\nText-to-video (1 frame: an image); add a first image for "
                    f"image-to-video or a video to continue it. Frames appear as each latent frame is decoded.")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="prompt", placeholder="a red 3 moving down", elem_id="prompt")
                with gr.Row():
                    seed = gr.Number(label="seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    dice = gr.Button("random", elem_id="random-seed", scale=0)
                with gr.Row():
                    image_file = gr.File(label="first image (optional)", type="filepath", elem_id="image-upload",
                                         height=150)
                    video_file = gr.File(label="video to continue (optional)", type="filepath", elem_id="video-upload",
                                         height=150)
                upload_preview = gr.Image(label="first image", visible=False, interactive=False,
                                          elem_id="upload-preview", height=128)
                num_frames = gr.Slider(1, lim.max_frames, value=d["num_frames"], step=1, label="frames (1: an image)",
                                       elem_id="num-frames")
                with gr.Row():
                    height = gr.Slider(patch, studio.max_side, value=d["height"], step=patch, label="height (px)",
                                       elem_id="height")
                    width = gr.Slider(patch, studio.max_side, value=d["width"], step=patch, label="width (px)",
                                      elem_id="width")
                steps = gr.Slider(1, lim.max_steps, value=d["num_inference_steps"], step=1,
                                  label="steps per latent frame", elem_id="steps")
                guidance = gr.Slider(0, 20, value=d["guidance_scale"], step=0.1, label="guidance", elem_id="guidance")
                history = gr.Slider(0, 1, value=d["history_mask_ratio"], step=0.05, label="history mask ratio",
                                    elem_id="history")
                temperature = gr.Slider(0, 2, value=d["temperature"], step=0.05, label="temperature",
                                        elem_id="temperature")
                go = gr.Button("generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                status = gr.Markdown("ready", elem_id="status")
                preview = gr.Image(label="frames as they are decoded", interactive=False, elem_id="preview",
                                   format="png", height=140)
                video_out = gr.Video(label="video", interactive=False, visible=False, elem_id="result-video",
                                     height=256, autoplay=True, loop=True)
                still_out = gr.Image(label="image", interactive=False, visible=False, elem_id="still", format="png",
                                     height=256)
                files_out = gr.File(label="downloads (mp4, gif, png frames, manifest)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
                with gr.Accordion("manifest", open=False):
                    manifest_out = gr.JSON(label="manifest", elem_id="manifest")
        gallery = gr.Gallery(label="made since the server started (click: restore its settings)", columns=10,
                             height=170, elem_id="gallery", allow_preview=False, object_fit="contain",
                             fit_columns=False)

        page_inputs = [num_frames, height, width, steps, guidance, history, temperature]

        def error(e: LumosError) -> str:
            return f"**error:** {e}"

        def on_upload(path, kind):
            if not path:
                return {status: "ready", upload_preview: gr.update(visible=False, value=None)}
            try:
                frames = studio.read_upload(path, kind)
            except LumosError as e:
                return {status: error(e), upload_preview: gr.update(visible=False, value=None)}
            T, H, W, _ = frames.shape
            note = (f"first image {_upload_name(path)}: {W}x{H}" if kind == "image" else
                    f"video {_upload_name(path)}: {T} frames of {W}x{H}")
            return {status: note, upload_preview: gr.update(visible=True, value=frames[0])}

        image_file.change(lambda p: on_upload(p, "image"), image_file, [status, upload_preview], queue=False)
        video_file.change(lambda p: on_upload(p, "video"), video_file, [status, upload_preview], queue=False)
        dice.click(random_seed, None, seed, queue=False)

        def on_frames(n, g):
            """One frame is text-to-image: the model's image guidance, unless the user changed it (and back)."""
            video_g, image_g = studio.pipe.defaults.guidance_scale, studio.pipe.defaults.image_guidance_scale
            return image_g if n == 1 and g == video_g else video_g if n != 1 and g == image_g else g

        num_frames.input(on_frames, [num_frames, guidance], guidance, queue=False)

        def on_generate(prompt_v, seed_v, image_v, video_v, *values):
            settings = dict(zip(PAGE_SETTINGS, values))
            try:
                seed_i = int(seed_v) if seed_v is not None and float(seed_v).is_integer() else seed_v
                req = Request(prompt_v, seed_i, image=image_v, video=video_v, settings=settings)
                for u in studio.generate(req):
                    out = {status: u.status}
                    if u.frames is not None and len(u.frames):
                        out[preview] = np.concatenate(list(u.frames), axis=1)   # the new frames side by side
                    if u.result is not None:
                        r = u.result
                        out[video_out] = gr.update(visible=not r.is_image,
                                                   value=None if r.is_image else str(r.files["mp4"]))
                        out[still_out] = gr.update(visible=r.is_image, value=r.frames[0] if r.is_image else None)
                        out[files_out] = [str(p) for p in r.files.values()]
                        out[manifest_out] = r.manifest
                        out[gallery] = [(str(x.thumbnail), f"{x.index}: {x.request.prompt}")
                                        for x in studio.results]
                    yield out
            except LumosError as e:
                yield {status: error(e)}

        go.click(on_generate, [prompt, seed, image_file, video_file, *page_inputs],
                 [status, preview, video_out, still_out, files_out, manifest_out, gallery],
                 concurrency_limit=lim.max_queue + 2, api_name="generate")

        def on_select(evt):
            v = studio.restore(evt.index)
            return [v["prompt"], v["seed"], *(v[k] for k in PAGE_SETTINGS),
                    f"restored the settings of result {evt.index}"]
        on_select.__annotations__ = {"evt": gr.SelectData}    # the class, not a string (future annotations)

        gallery.select(on_select, None, [prompt, seed, *page_inputs, status], queue=False)
    return page, {"theme": theme, "css": CSS}


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page on `host` only (localhost unless told otherwise), with no share link, no telemetry,
    no server-side rendering (no Node), uploads capped at `max_upload_mb` by gradio too, and files served
    from the results folder only. block=False serves in a thread and returns the gr.Blocks (`.local_url`,
    `.close()`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    page, style = build_ui(studio)
    page.queue(max_size=studio.limits.max_queue + 2, default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                mcp_server=False, show_error=False, quiet=False, prevent_thread_lock=not block,
                max_file_size=int(studio.limits.max_upload_mb * 1e6), allowed_paths=[str(studio.out_dir)],
                footer_links=[], **style)
    return page
