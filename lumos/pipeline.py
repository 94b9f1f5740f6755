"""`LumosPipeline`: prompt (+ an image or a video) -> uint8 frames, in the diffusers style.

    pipe = LumosPipeline.from_pretrained("lumos/assets/moving-digits")
    video = pipe("a red 3 moving left", generator=torch.Generator().manual_seed(0))   # uint8 [T, H, W, 3]
    image = pipe("a red 3", num_frames=1)                                             # uint8 [1, H, W, 3]
    video = pipe("the digit moves up", image="first.png")                             # image-to-video
    for frames in pipe.stream("a red 3 moving left"):                                 # uint8 [t, H, W, 3]
        ...                                                   # the pixel frames of each latent frame, when done

A pipeline folder holds the model checkpoint (`config.json` + safetensors, `lumos.checkpoint`),
`text_tokenizer.json` (`lumos.tokenizers.text`), the video tokenizer in `tokenizer/`
(`lumos.tokenizers.load_video_tokenizer`: Cosmos TorchScript files or the built-in VQ tokenizer) and
optionally `pipeline.json` with defaults (`PipelineDefaults`). The released checkpoints keep the
tokenizers elsewhere: pass `text_tokenizer=` / `video_tokenizer=` (paths or objects).

A call takes the size of the video and the sampling settings (`lumos.sampling.SampleConfig`) as
keywords, `CALL_SETTINGS`; one left out (or None) takes the pipeline's default. Every argument is
checked before any work (`check`): the sizes against the tokenizer and the size tokens, top_k against
the codebook, and the whole layout (prompt tokens + every latent frame) against the model's positions
(`max_seq_len`). `from_pretrained(..., weights=False)` reads only config.json and the tokenizers, so a
command can refuse bad input before a multi-GB checkpoint is read (`load_weights`, or the first call,
reads it).

The task follows from the arguments:
- text-to-image: num_frames == 1. The prompt says "1 frames at 1 fps" (released template) and the
  video header has duration 1, fps 1, as the released text-to-image evaluation does; guidance
  `image_guidance_scale` (16).
- text-to-video: prompt `lumos.vocab.video_prompt(caption, width, height, num_frames, fps)` (the
  released template, or the model's own `prompt_template` from its pipeline.json), duration token
  round(num_frames / fps) (>= 1), fps token fps; latent frames by the tokenizer's causal rule.
- image-to-video (`image=`): the image, resized and centre-cropped to width x height, encoded as the
  first latent frame, part of the prompt. num_frames counts it.
- continuation (`video=`): the given frames, cut to 1 + k_t j frames (whole latent frames of the causal
  tokenizer), resized, encoded and put in the prompt; num_frames is the total length.
Given frames enter the KV cache history-masked like generated ones (unmasked with reference_compat;
see `lumos.sampling`). The output has exactly num_frames frames: the tokenizer decodes
1 + k_t (t - 1) >= num_frames frames (24 requested at k_t = 4 -> 7 latent frames -> 25 decoded) and
the tail is cut. Given frames come back as decoded from their codes (as the reference does), not as
the input pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from lumos.sampling import SampleConfig, check_generation, generate, iter_parallel, plan_generation
from lumos.utils import LumosError, check_keys, first_line
from lumos.vocab import VIDEO_PROMPT, check_prompt_template, duration_seconds, video_prompt

TEXT_TOKENIZER_FILE = "text_tokenizer.json"
VIDEO_TOKENIZER_DIR = "tokenizer"
DEFAULTS_FILE = "pipeline.json"
ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_MODELS = ("moving-digits",)


@dataclass
class PipelineDefaults(SampleConfig):
    """What a call uses for the settings it is not given (a model's `pipeline.json` overrides these):
    the sampling settings with their defaults (inherited from `SampleConfig`, checked by its validator),
    the size of the video, and two that only a model's defaults set."""
    height: int = 384                    # pixels, a multiple of the tokenizer patch (released 384p: 672x384)
    width: int = 672                     # pixels, a multiple of the tokenizer patch
    num_frames: int = 24                 # frames of the video, 1 = an image (released: 24 frames at 12 fps)
    fps: int = 12                        # frames per second (the prompt's and the video header's)
    image_guidance_scale: float = 16.0   # guidance_scale of text-to-image (released: 16)
    prompt_template: str = VIDEO_PROMPT  # the text the model was trained on (lumos.vocab.video_prompt)

    RANGES: ClassVar[dict] = {**SampleConfig.RANGES, "height": (1, None, False), "width": (1, None, False),
                              "num_frames": (1, None, False), "fps": (1, None, False),
                              "image_guidance_scale": (0, None, False)}

    @classmethod
    def check(cls, values: dict, name=str) -> dict:
        """`SampleConfig.check`, and a prompt template must name only the fields `video_prompt` fills."""
        out = super().check(values, name)
        if "prompt_template" in out:
            try:
                check_prompt_template(out["prompt_template"])
            except LumosError as e:
                raise LumosError(f"pipeline defaults: {e}") from None
        return out

    @classmethod
    def from_file(cls, path) -> "PipelineDefaults":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:            # ValueError: not JSON, not UTF-8
            raise LumosError(f"{path}: cannot read pipeline defaults ({first_line(e)})") from None
        check_keys(cls, d, "pipeline defaults", where=path)
        try:
            return cls(**d)
        except LumosError as e:
            raise LumosError(f"{path}: {e}") from None


# The keywords of a call (`settings`, `__call__`, `stream`): the size of the video, then the sampling settings.
# image_guidance_scale and prompt_template are the model's own, set in its pipeline.json.
SIZES = ("num_frames", "height", "width", "fps")
CALL_SETTINGS = SIZES + tuple(f.name for f in dataclasses.fields(SampleConfig))


@dataclass
class Settings:
    """The arguments of one call with every default filled in (what the CLI writes to its manifest)."""
    task: str                  # t2i | t2v | i2v | continuation
    height: int
    width: int
    num_frames: int
    fps: int
    duration: int              # the duration token's value (s)
    sample: SampleConfig

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(d.pop("sample"))
        return d


def resolve_model(name_or_path) -> Path:
    """A built-in model name ("moving-digits" -> lumos/assets/moving-digits/) or a folder path."""
    p = Path(name_or_path)
    if p.exists():
        if not p.is_dir():
            raise LumosError(f"{p}: not a model folder (expected config.json, *.safetensors, tokenizers)")
        return p
    if str(name_or_path) in BUILTIN_MODELS:
        folder = ASSETS / str(name_or_path)
        if folder.is_dir():
            return folder
        raise LumosError(f"built-in model {str(name_or_path)!r} is not installed ({folder} is missing); "
                         f"pass --model PATH to a pipeline folder")
    raise LumosError(f"model {str(name_or_path)!r}: no such folder and not a built-in model "
                     f"(built-in: {', '.join(BUILTIN_MODELS)})")


def resolve_device(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run in: device default cuda when available, else cpu; dtype default bf16
    on cuda, fp32 elsewhere. LumosError (one line) for a device torch does not know, one this machine
    does not have, or a dtype the device cannot compute in (tried on a 4x4 matmul)."""
    try:
        dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError, ValueError):
        raise LumosError(f"device {device!r}: not a device torch knows; use cpu, cuda, cuda:1, mps, ...") from None
    if dev.type == "meta":
        raise LumosError("device meta holds no data; use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LumosError(f"device {dev} requested but no CUDA GPU is available (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LumosError(f"device {dev}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0")
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    try:
        x = torch.ones(4, 4, device=dev, dtype=dtype)
        bool(torch.isfinite(x @ x).all())
    except Exception as e:            # no such backend, no kernel for the dtype, driver errors, ...
        raise LumosError(f"device {dev} cannot compute in {str(dtype).replace('torch.', '')} "
                         f"({first_line(e)}); choose another --device or --dtype") from None
    return dev, dtype


def _load_text_tokenizer(path: Path):
    if not path.is_file():
        raise LumosError(f"{path}: text tokenizer not found; released checkpoints keep it elsewhere "
                         f"(tokenizer/text_tokenizer.json on the hub): pass text_tokenizer= / --text-tokenizer")
    from lumos.tokenizers.text import TextTokenizer   # lazy: only needed when loading from a folder
    return TextTokenizer(path)


def _load_video_tokenizer(path: Path, device):
    if not path.is_dir():
        raise LumosError(f"{path}: video tokenizer folder not found; pass video_tokenizer= / --video-tokenizer "
                         f"(a Cosmos-Tokenizer-DV4x8x8 folder or one written by `lumos train-tokenizer`)")
    from lumos.tokenizers import load_video_tokenizer
    return load_video_tokenizer(path, device=device)


class LumosPipeline:
    def __init__(self, model, text_tokenizer, video_tokenizer, defaults: PipelineDefaults | None = None):
        """model: a `LumosModel` (eval mode); text_tokenizer: `encode(str) -> ids` without BOS;
        video_tokenizer: a `lumos.tokenizers.base.VideoTokenizer`."""
        vocab = model.config.vocab
        if video_tokenizer.codebook_size != vocab.codebook_size:
            raise LumosError(f"the video tokenizer has {video_tokenizer.codebook_size} codes, the model's vocabulary "
                             f"{vocab.codebook_size}: they were not trained together")
        self.model = model.eval()
        self.text_tokenizer = text_tokenizer
        self.video_tokenizer = video_tokenizer
        self.defaults = defaults or PipelineDefaults()
        self._weights = None           # (folder, device, dtype) while the model is a meta-device skeleton

    @classmethod
    def from_pretrained(cls, path, text_tokenizer=None, video_tokenizer=None, device=None,
                        dtype=None, weights: bool = True) -> "LumosPipeline":
        """Load a pipeline folder, or a built-in model by name ("moving-digits"). text_tokenizer /
        video_tokenizer: a path or an object replacing the folder's own. device: default cuda when
        available; dtype: default bf16 on cuda, fp32 on cpu. weights=False reads only config.json (the
        model is a skeleton on the meta device): enough for `check`, so bad input is refused before a
        multi-GB checkpoint is read; `load_weights()` (or the first call) reads them."""
        from lumos import checkpoint
        from lumos.model import LumosModel

        path = resolve_model(path)
        device, dtype = resolve_device(device, dtype)
        defaults = PipelineDefaults.from_file(path / DEFAULTS_FILE) if (path / DEFAULTS_FILE).exists() else None
        config = checkpoint.read_config(path)
        # Tokenizers first: a missing file should fail before a multi-GB model is read.
        if text_tokenizer is None or isinstance(text_tokenizer, (str, Path)):
            text_tokenizer = _load_text_tokenizer(Path(text_tokenizer or path / TEXT_TOKENIZER_FILE))
        if video_tokenizer is None or isinstance(video_tokenizer, (str, Path)):
            video_tokenizer = _load_video_tokenizer(Path(video_tokenizer or path / VIDEO_TOKENIZER_DIR), device)
        if not weights:
            with torch.device("meta"):
                skeleton = LumosModel(config)
            pipe = cls(skeleton, text_tokenizer, video_tokenizer, defaults)
            pipe._weights = (path, device, dtype)
            return pipe
        model = LumosModel.from_pretrained(path, device=device, dtype=dtype)
        return cls(model, text_tokenizer, video_tokenizer, defaults)

    def load_weights(self) -> None:
        """Read the checkpoint of a pipeline opened with `from_pretrained(weights=False)` (else nothing)."""
        from lumos.model import LumosModel

        if self._weights is not None:
            self.model = LumosModel.from_pretrained(*self._weights).eval()
            self._weights = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def patch(self) -> int:
        """Pixels per size-token unit: height and width must be multiples of it."""
        return self.video_tokenizer.spatial_compression * self.model.config.vocab.grid_per_size

    # ------------------------------------------------------------------------------------------ settings
    def settings(self, *, image=None, video=None, **settings) -> Settings:
        """Fill in the defaults and check every argument (LumosError naming the bad one). settings: any of
        `CALL_SETTINGS` (None: the default). Of `image` and `video` only whether they are given matters
        here (it picks the task)."""
        unknown = sorted(set(settings) - set(CALL_SETTINGS))
        if unknown:
            raise LumosError(f"unknown settings {unknown}; known: {', '.join(CALL_SETTINGS)}")
        given = {k: v for k, v in settings.items() if v is not None}
        d = dataclasses.replace(self.defaults, **given)                  # checks every value given
        num_frames, height, width = d.num_frames, d.height, d.width
        task = "continuation" if video is not None else "i2v" if image is not None else (
            "t2i" if num_frames == 1 else "t2v")
        if image is not None and video is not None:
            raise LumosError("give an image (image-to-video) or a video (continuation), not both")
        if task == "i2v" and num_frames < 2:
            raise LumosError("image-to-video needs num_frames > 1 (the image is the first frame)")
        p = self.patch
        if height % p or width % p:
            raise LumosError(f"resolution {width}x{height} is not a multiple of {p} px (tokenizer patch "
                             f"{self.video_tokenizer.spatial_compression} x {self.model.config.vocab.grid_per_size} "
                             f"latent rows per size token); try {max(p, round(width / p) * p)}x"
                             f"{max(p, round(height / p) * p)}")
        vocab = self.model.config.vocab
        for name, v in (("height", height // p), ("width", width // p)):
            if v > vocab.max_size:
                raise LumosError(f"{name} is too large: {v} size units > {vocab.max_size} for this vocabulary")
        duration, fps_token = (1, 1) if task == "t2i" else (duration_seconds(num_frames, d.fps), d.fps)
        if max(duration, fps_token) > vocab.max_size:
            raise LumosError(f"fps {fps_token} / duration {duration} s exceed the largest size token "
                             f"({vocab.max_size})")
        sample = {f.name: getattr(d, f.name) for f in dataclasses.fields(SampleConfig)}
        if task == "t2i" and "guidance_scale" not in given:
            sample["guidance_scale"] = d.image_guidance_scale
        return Settings(task=task, height=height, width=width, num_frames=num_frames, fps=fps_token,
                        duration=int(duration), sample=SampleConfig(**sample))

    # ------------------------------------------------------------------------------------------ inputs
    def _frames(self, media, what: str, s: Settings) -> np.ndarray:
        """An image / video (path or uint8 array) -> uint8 [T, height, width, 3] (resized, centre-cropped)."""
        from lumos import media as M

        if isinstance(media, (str, Path)):
            if what == "image":
                frames = M.read_image(media)
            else:
                frames, src_fps = M.read_media(media)
                if src_fps is None:
                    raise LumosError(f"{media}: a still image was given as video=; use image= (image-to-video)")
        else:
            frames = media.detach().cpu().numpy() if isinstance(media, torch.Tensor) else np.asarray(media)
            if what == "image" and frames.ndim == 3:
                frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise LumosError(f"{what} must be uint8 {'[H, W, 3]' if what == 'image' else '[T, H, W, 3]'}, got "
                             f"{frames.dtype} of shape {tuple(frames.shape)}")
        if frames.shape[1:3] != (s.height, s.width):
            frames = M.resize_center_crop(frames, (s.width, s.height))
        return frames

    def _given_codes(self, s: Settings, image, video) -> np.ndarray | None:
        """Codes [G, h, w] of the frames given in the prompt (None for text-only tasks)."""
        vt = self.video_tokenizer
        if s.task == "i2v":
            return np.asarray(vt.encode(self._frames(image, "image", s)[:1]))
        if s.task == "continuation":
            frames = self._frames(video, "video", s)
            kt = vt.temporal_compression
            keep = 1 + kt * ((len(frames) - 1) // kt)            # whole latent frames only
            if vt.num_latent_frames(keep) >= vt.num_latent_frames(s.num_frames):
                raise LumosError(f"the given video already covers {keep} frames; ask for more "
                                 f"(num_frames={s.num_frames} is the total length)")
            return np.asarray(vt.encode(frames[:keep]))
        return None

    def _inputs(self, prompt, image, video, num_videos_per_prompt, settings: dict):
        """Check a call's arguments and tokenize its prompts -> (Settings, prompts, images, videos, the text
        ids of each prompt). The layout must fit the model: `check_generation` (top_k, frame size, length)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise LumosError("prompt must be a non-empty string or a list of non-empty strings")
        if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
            raise LumosError(f"num_videos_per_prompt must be a positive integer, got {num_videos_per_prompt!r}")
        images = list(image) if isinstance(image, (list, tuple)) else [image] * len(prompts)
        videos = list(video) if isinstance(video, (list, tuple)) else [video] * len(prompts)
        if len(images) != len(prompts) or len(videos) != len(prompts):
            raise LumosError(f"{len(prompts)} prompts but {len(images)} images / {len(videos)} videos")
        if len({x is None for x in images}) > 1 or len({x is None for x in videos}) > 1:
            raise LumosError("give an image (or a video) for every prompt of a batch or for none")
        s = self.settings(image=images[0], video=videos[0], **settings)
        n_frames = 1 if s.task == "t2i" else s.num_frames
        texts = [self.text_tokenizer.encode(video_prompt(caption, s.width, s.height, n_frames, s.fps,
                                                         self.defaults.prompt_template)) for caption in prompts]
        vt = self.video_tokenizer
        latent = 1 if s.task == "t2i" else vt.num_latent_frames(s.num_frames)
        k = vt.spatial_compression
        # BOS text SEP + the video header, then every latent frame (given and generated)
        prefix = max(len(t) for t in texts) + 2 + self.model.config.vocab.VIDEO_HEADER
        check_generation(self.model.config, s.sample, prefix, latent, s.height // k, s.width // k)
        return s, prompts, images, videos, texts

    def check(self, prompt, image=None, video=None, *, num_videos_per_prompt: int = 1, **settings) -> Settings:
        """Every check of a call (arguments, sizes, settings, the prompt's layout against the model's
        positions) without decoding an input or running the model -> its Settings. LumosError names
        the problem. Works on a pipeline opened with `from_pretrained(weights=False)`."""
        return self._inputs(prompt, image, video, num_videos_per_prompt, settings)[0]

    def prepare(self, prompt, image, video, num_videos_per_prompt, settings: dict):
        """Validate, tokenize, encode the given frames and lay out the batch (host-side work). Returns
        (settings, `lumos.sampling.Plan`, whether the call is a single video), for callers that drive
        `lumos.sampling` themselves (e.g. to time the sampler alone)."""
        s, prompts, images, videos, texts = self._inputs(prompt, image, video, num_videos_per_prompt, settings)
        self.load_weights()
        vocab = self.model.config.vocab
        prefixes, given_n = [], 0
        for ids, img, vid in zip(texts, images, videos):
            given = self._given_codes(s, img, vid)
            prefix = vocab.build(ids, given, duration=s.duration, fps=s.fps, complete=False)
            prefixes += [prefix] * num_videos_per_prompt
            given_n = 0 if given is None else len(given)
        vt = self.video_tokenizer
        latent = 1 if s.task == "t2i" else vt.num_latent_frames(s.num_frames)
        k = vt.spatial_compression
        plan = plan_generation(self.model, prefixes, latent - given_n, s.height // k, s.width // k, s.sample,
                               device=self.device)
        single = isinstance(prompt, str) and num_videos_per_prompt == 1
        return s, plan, single

    def device_generator(self, generator):
        """A generator on the model's device. A CPU generator drives a GPU run through a seed drawn from it."""
        if generator is None or generator.device.type == self.device.type:
            return generator
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return torch.Generator(device=self.device).manual_seed(seed)

    def decode(self, codes: torch.Tensor, num_frames: int) -> np.ndarray:
        """codes [t, h, w] -> uint8 [min(T', num_frames), H, W, 3]."""
        frames = self.video_tokenizer.decode(codes.cpu())
        return np.asarray(frames)[:num_frames]

    # ------------------------------------------------------------------------------------------ calls
    def __call__(self, prompt, image=None, video=None, *, generator: torch.Generator | None = None,
                 num_videos_per_prompt: int = 1, progress: bool = True, mode: str = "parallel",
                 output_type: str = "pixels", **settings):
        """Generate. Returns uint8 frames [T, H, W, 3] for one prompt (a str) and one video, else a list
        of them (prompt-major: prompt 0 sample 0, prompt 0 sample 1, ...). `image` / `video` may be one
        input for all prompts or a list, one per prompt. settings: any of `CALL_SETTINGS`
        (`num_frames=1, guidance_scale=2.0`); those left out or None take `self.defaults`.
        mode: "parallel" (masked frame decoding, the model's own) or "next-token" (the baseline).
        output_type: "pixels", or "codes" for the latent codes [t, h, w] (given frames first)."""
        if mode not in ("parallel", "next-token"):
            raise LumosError(f"mode must be 'parallel' or 'next-token', got {mode!r}")
        if output_type not in ("pixels", "codes"):
            raise LumosError(f"output_type must be 'pixels' or 'codes', got {output_type!r}")
        s, plan, single = self.prepare(prompt, image, video, num_videos_per_prompt, settings)
        out = generate(self.model, plan, s.sample, self.device_generator(generator), mode=mode, progress=progress)
        videos = list(out.codes.cpu()) if output_type == "codes" else [self.decode(c, s.num_frames) for c in out.codes]
        return videos[0] if single else videos

    def stream(self, prompt, image=None, video=None, *, generator: torch.Generator | None = None,
               num_videos_per_prompt: int = 1, progress: bool = True, **settings) -> Iterator:
        """Like `__call__`, but yields the new pixel frames as soon as each latent frame is done: uint8
        [t, H, W, 3] (a list of them for a batch), first for the given frames (if any), then for each
        generated latent frame. Concatenated, they hold `__call__`'s codes for the same generator; the
        pixels agree up to float rounding (a pixel may differ by one level: see below).

        A causal tokenizer decodes the frames of a prefix of latent frames as it decodes them in the
        whole video (up to the summation order of convolutions of another length), so each yield
        decodes the latent frames so far and keeps the frames not yet yielded (quadratic in frames; a streaming
        decoder with its own cache would make it linear)."""
        s, plan, single = self.prepare(prompt, image, video, num_videos_per_prompt, settings)
        codes = plan.given.cpu()                                             # (n, G, h, w)
        emitted = 0

        def new_frames():
            nonlocal emitted
            videos = [self.decode(c, s.num_frames)[emitted:] for c in codes]
            emitted += len(videos[0])
            return videos[0] if single else videos

        if codes.shape[1]:
            yield new_frames()
        for frame in iter_parallel(self.model, plan, s.sample, self.device_generator(generator), progress=progress):
            codes = torch.cat([codes, frame.cpu()[:, None]], dim=1)
            yield new_frames()
