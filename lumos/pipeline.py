"""`LumosPipeline`: prompt (+ an image or a video) -> frames, in the diffusers style.

    pipe = LumosPipeline.from_pretrained("lumos/assets/moving-digits")
    video = pipe("a red 3 moving left", generator=0).frames[0]                        # uint8 [T, H, W, 3]
    image = pipe("a red 3", num_frames=1).frames[0]                                   # uint8 [1, H, W, 3]
    video = pipe("the digit moves up", image="first.png").frames[0]                   # image-to-video
    out = pipe(["a red 3", "a blue 7"], num_videos_per_prompt=2, negative_prompt="red",
               generator=[torch.Generator().manual_seed(i) for i in range(4)], output_type="pil")
    for frames in pipe.stream("a red 3 moving left"):                                 # uint8 [t, H, W, 3]
        ...                                                   # the pixel frames of each latent frame, when done

diffusers conventions: a call returns `LumosPipelineOutput(frames=[...])` (one entry per video, also for a
single one; `return_dict=False`: `(frames,)`), `output_type` "np" / "pil" / "pt" / "codes", `negative_prompt`,
`generator` (int seed, torch.Generator or one per video), `callback_on_step_end` (stops via
`pipe._interrupt`), `pipe.to(device, dtype)`, `set_progress_bar_config(disable=...)`; progress bars are
off by default when stderr is not a terminal. See `LumosPipeline.__call__`.

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from lumos import hub
from lumos.sampling import SampleConfig, check_generation, check_seed, generate, iter_parallel, plan_generation
from lumos.utils import LumosError, check_keys, first_line
from lumos.vocab import VIDEO_PROMPT, check_prompt_template, duration_seconds, video_prompt

TEXT_TOKENIZER_FILE = "text_tokenizer.json"
VIDEO_TOKENIZER_DIR = "tokenizer"
DEFAULTS_FILE = "pipeline.json"
OUTPUT_TYPES = ("np", "pil", "pt", "codes")
# The built-in models' home is lumos.hub; the names stay here for old imports (tests patch ASSETS here).
ASSETS, BUILTIN_MODELS = hub.ASSETS, hub.BUILTIN_MODELS
# What a video tokenizer folder on the Hub needs: Cosmos's two halves (not its autoencoder.jit, which
# repeats them), or the built-in VQ tokenizer's config and weights.
VIDEO_TOKENIZER_FILES = ("encoder.jit", "decoder.jit", "*.json", "*.safetensors")


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
    trained_frames: int | None = None    # latent frames of the clips the model was trained on (longer: needs window_frames)

    RANGES: ClassVar[dict] = {**SampleConfig.RANGES, "height": (1, None, False), "width": (1, None, False),
                              "num_frames": (1, None, False), "fps": (1, None, False),
                              "image_guidance_scale": (0, None, False), "trained_frames": (1, None, False)}

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


@dataclass
class LumosPipelineOutput:
    """What a call returns (diffusers' `...PipelineOutput`; `return_dict=False` gives the tuple `(frames,)`).

    frames: a list with one entry per video, prompt-major (prompt 0 sample 0, prompt 0 sample 1, prompt 1
    sample 0, ...), also for a single prompt and video (`pipe(prompt).frames[0]`). Each entry by
    `output_type`: "np" uint8 numpy [T, H, W, 3]; "pil" a list of T PIL images; "pt" float32 torch
    [T, 3, H, W] in [0, 1] (diffusers' convention for "pt"); "codes" int64 torch latent codes [t, h, w]
    (given frames first)."""
    frames: list


def resolve_model(name_or_path, subfolder=None, revision=None, local_files_only=None) -> Path:
    """A pipeline folder: a path, a built-in model name ("moving-digits") or a Hub repo id
    (`lumos.hub.resolve`, with this module's ASSETS)."""
    return hub.resolve(name_or_path, subfolder, revision, local_files_only, assets=ASSETS)


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
        raise LumosError(f"{path}: text tokenizer not found; released checkpoints keep it elsewhere: pass "
                         f"text_tokenizer= / --text-tokenizer Alibaba-DAMO-Academy/Lumos-1/tokenizer/text_tokenizer.json")
    from lumos.tokenizers.text import TextTokenizer   # lazy: only needed when loading from a folder
    return TextTokenizer(path)


def _load_video_tokenizer(path: Path, device):
    if not path.is_dir():
        raise LumosError(f"{path}: video tokenizer folder not found; pass video_tokenizer= / --video-tokenizer "
                         f"(nvidia/Cosmos-Tokenizer-DV4x8x8, a folder of it, or one written by `lumos train-tokenizer`)")
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
                        dtype=None, weights: bool = True, *, subfolder: str | None = None,
                        revision: str | None = None, local_files_only: bool | None = None) -> "LumosPipeline":
        """Load a pipeline folder, a built-in model by name ("moving-digits"), or a Hub repo id
        ("Alibaba-DAMO-Academy/Lumos-1", subfolder="1B/stage-2-joint-384p"; `lumos.hub.resolve`:
        revision, local_files_only and HF_HUB_OFFLINE / HF_HOME apply). text_tokenizer / video_tokenizer:
        an object, or a path or Hub spec replacing the folder's own: a file
        ("Alibaba-DAMO-Academy/Lumos-1/tokenizer/text_tokenizer.json") and a folder
        ("nvidia/Cosmos-Tokenizer-DV4x8x8"); revision is the model's only. device: default cuda when
        available; dtype: default bf16 on cuda, fp32 on cpu. weights=False reads only config.json (the
        model is a skeleton on the meta device): enough for `check`, so bad input is refused before a
        multi-GB checkpoint is read; `load_weights()` (or the first call) reads them."""
        from lumos import checkpoint
        from lumos.model import LumosModel

        path = resolve_model(path, subfolder, revision, local_files_only)
        # A `lumos train` run: its latest.json names the pipeline folder of its newest complete checkpoint
        # (written once that checkpoint is complete); a checkpoint step-N/ holds its pipeline folder in model/.
        if (path / "latest.json").is_file():
            try:
                path = path / json.loads((path / "latest.json").read_text(encoding="utf-8"))["pipeline"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise LumosError(f"{path / 'latest.json'}: unreadable ({first_line(e)}); pass --model "
                                 f"RUN/checkpoints/step-N") from None
        if not (path / checkpoint.CONFIG).exists() and (path / "model" / checkpoint.CONFIG).is_file():
            path = path / "model"
        device, dtype = resolve_device(device, dtype)
        defaults = PipelineDefaults.from_file(path / DEFAULTS_FILE) if (path / DEFAULTS_FILE).exists() else None
        config = checkpoint.read_config(path)
        # Tokenizers first: a missing file should fail before a multi-GB model is read.
        if text_tokenizer is None or isinstance(text_tokenizer, (str, Path)):
            text_tokenizer = _load_text_tokenizer(path / TEXT_TOKENIZER_FILE if text_tokenizer is None else hub.resolve_file(
                text_tokenizer, local_files_only=local_files_only, what="text tokenizer"))
        if video_tokenizer is None or isinstance(video_tokenizer, (str, Path)):
            video_tokenizer = _load_video_tokenizer(path / VIDEO_TOKENIZER_DIR if video_tokenizer is None else hub.resolve(
                video_tokenizer, local_files_only=local_files_only, what="video tokenizer", builtin=False,
                patterns=VIDEO_TOKENIZER_FILES), device)
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

    def _inputs(self, prompt, image, video, num_videos_per_prompt, settings: dict, negative_prompt=None):
        """Check a call's arguments and tokenize its prompts -> (Settings, prompts, images, videos, the text
        ids of each prompt, those of each negative prompt or None). The layout must fit the model:
        `check_generation` (top_k, frame size, length)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise LumosError("prompt must be a non-empty string or a list of non-empty strings")
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        if negatives is not None and (not isinstance(negatives, (list, tuple)) or len(negatives) != len(prompts)
                                      or not all(isinstance(x, str) for x in negatives)):
            raise LumosError(f"negative_prompt must be a string or a list of {len(prompts)} strings (one per prompt)")
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
        texts, neg_texts = ([self.text_tokenizer.encode(video_prompt(caption, s.width, s.height, n_frames, s.fps,
                                                                     self.defaults.prompt_template)) for caption in xs]
                            if xs is not None else None for xs in (prompts, negatives))
        vt = self.video_tokenizer
        latent = 1 if s.task == "t2i" else vt.num_latent_frames(s.num_frames)
        k = vt.spatial_compression
        window, trained = s.sample.window_frames, self.defaults.trained_frames
        if window is None and trained is not None and latent > trained:
            raise LumosError(f"{s.num_frames} frames are {latent} latent frames, longer than the {trained} this model "
                             f"was trained on; generate longer videos with a rolling window: window_frames="
                             f"{trained - 1} (--window-frames {trained - 1})")
        # BOS text SEP + the video header, then every latent frame (given and generated) the layout holds:
        # with a rolling window, the sinks, the window and the frame being decoded (`plan_generation`)
        prefix = max(len(t) for t in texts + (neg_texts or [])) + 2 + self.model.config.vocab.VIDEO_HEADER
        held = latent if window is None else min(latent, s.sample.sink_frames + window + 1)
        check_generation(self.model.config, s.sample, prefix, held, s.height // k, s.width // k)
        return s, prompts, images, videos, texts, neg_texts

    def check(self, prompt, image=None, video=None, *, num_videos_per_prompt: int = 1, negative_prompt=None,
              **settings) -> Settings:
        """Every check of a call (arguments, sizes, settings, the prompt's layout against the model's
        positions) without decoding an input or running the model -> its Settings. LumosError names
        the problem. Works on a pipeline opened with `from_pretrained(weights=False)`."""
        return self._inputs(prompt, image, video, num_videos_per_prompt, settings, negative_prompt)[0]

    def prepare(self, prompt, image, video, num_videos_per_prompt, settings: dict, negative_prompt=None):
        """Validate, tokenize, encode the given frames and lay out the batch (host-side work). Returns
        (settings, `lumos.sampling.Plan`, whether the call is a single video), for callers that drive
        `lumos.sampling` themselves (e.g. to time the sampler alone)."""
        s, prompts, images, videos, texts, neg_texts = self._inputs(prompt, image, video, num_videos_per_prompt,
                                                                    settings, negative_prompt)
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
        negative = None if neg_texts is None else [vocab.text_turn(ids) for ids in neg_texts
                                                   for _ in range(num_videos_per_prompt)]
        plan = plan_generation(self.model, prefixes, latent - given_n, s.height // k, s.width // k, s.sample,
                               device=self.device, negative=negative)
        single = isinstance(prompt, str) and num_videos_per_prompt == 1
        return s, plan, single

    def device_generator(self, generator, n: int | None = None):
        """The generator(s) of a call on the model's device. generator: None (a fresh seed), an int seed (the
        same as `torch.Generator().manual_seed(seed)`), a `torch.Generator`, or a list of them, one per video
        (n videos, when given: each video then comes out as it would alone with its generator). A CPU
        generator drives a GPU run through a seed drawn from it."""
        if isinstance(generator, (list, tuple)):
            if n is not None and len(generator) != n:
                raise LumosError(f"{len(generator)} generators for {n} videos; give one per video, or a single one")
            return [self.device_generator(g) for g in generator]
        if generator is not None and not isinstance(generator, torch.Generator):
            if isinstance(generator, bool) or not isinstance(generator, (int, np.integer)):
                raise LumosError(f"generator must be an int seed, a torch.Generator or a list of them, "
                                 f"got {type(generator).__name__}")
            generator = torch.Generator().manual_seed(check_seed(generator, "generator"))
        if generator is None or generator.device.type == self.device.type:
            return generator
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return torch.Generator(device=self.device).manual_seed(seed)

    def decode(self, codes: torch.Tensor, num_frames: int) -> np.ndarray:
        """codes [t, h, w] -> uint8 [min(T', num_frames), H, W, 3] (no frames for t = 0)."""
        if codes.shape[0] == 0:
            k = self.video_tokenizer.spatial_compression
            return np.zeros((0, codes.shape[1] * k, codes.shape[2] * k, 3), np.uint8)
        frames = self.video_tokenizer.decode(codes.cpu())
        return np.asarray(frames)[:num_frames]

    # ------------------------------------------------------------------------------------------ diffusers
    _interrupt: bool = False           # set by a step callback to stop the call (`__call__`)
    _progress_bar_config: dict = {}    # set_progress_bar_config
    _compile: bool = False             # enable_compile

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def to(self, *args, device=None, dtype=None) -> "LumosPipeline":
        """Move the model (and a video tokenizer that is a torch module: the built-in one; a Cosmos tokenizer
        stays where it was loaded) to a device and/or dtype, as diffusers: `to("cuda")`, `to(torch.float16)`,
        `to("cuda", torch.bfloat16)`. Returns self. LumosError for a device or dtype this machine cannot use."""
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = a
        current = self._weights[1:] if self._weights is not None else (self.device, next(self.model.parameters()).dtype)
        dev, dt = resolve_device(device if device is not None else current[0], dtype or current[1])
        if self._weights is not None:              # a skeleton: the weights are read onto dev, dt
            self._weights = (self._weights[0], dev, dt)
        else:
            self.model.to(device=dev, dtype=dt)
        if isinstance(self.video_tokenizer, torch.nn.Module):
            self.video_tokenizer.to(dev)
        return self

    def enable_compile(self, enabled: bool = True) -> "LumosPipeline":
        """Run the decoding steps through `torch.compile` (`lumos.sampling.compiled_step`; the first call
        pays the compilation): on a CPU with dynamic shapes, two graphs for every layout; on a GPU one static
        shape per layout, for CUDA graphs (`lumos.sampling.static_shapes`). The same tokens as eager up to
        float rounding. Returns self."""
        self._compile = bool(enabled)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        """diffusers' name: `disable=True` turns the progress bars off, False on (default: on only when
        stderr is a terminal, so library calls in scripts and tests print nothing)."""
        unknown = sorted(set(kwargs) - {"disable"})
        if unknown:
            raise LumosError(f"set_progress_bar_config: unknown options {unknown}; known: disable")
        self._progress_bar_config = dict(kwargs)

    def _progress(self, progress: bool | None) -> bool:
        """Whether a call shows progress bars: its own `progress`, else the config's, else stderr is a terminal."""
        if progress is not None:
            return bool(progress)
        if "disable" in self._progress_bar_config:
            return not self._progress_bar_config["disable"]
        return sys.stderr.isatty()

    # ------------------------------------------------------------------------------------------ calls
    def __call__(self, prompt, image=None, video=None, *, negative_prompt=None, generator=None,
                 num_videos_per_prompt: int = 1, progress: bool | None = None, mode: str = "parallel",
                 output_type: str = "np", return_dict: bool = True, callback_on_step_end=None, **settings):
        """Generate -> `LumosPipelineOutput(frames=[one entry per video])`, or `(frames,)` with
        return_dict=False. frames is a list for every call, prompt-major (prompt 0 sample 0, prompt 0
        sample 1, ...): `pipe("a red 3").frames[0]` is the video of a single call. (Before 0.2 a single
        call returned the array itself and a batch the list: callers read `.frames` now.) All videos of
        a call run in one batched sampler call.

        prompt: a str or a list; `image` / `video` one input for all prompts or a list, one per prompt.
        negative_prompt: a str or a list (one per prompt): the unconditional branch of guidance reads
            `BOS negative-text SEP VIDEO_START ...` (in the model's prompt template) instead of no text;
            no effect with guidance off.
        generator: an int seed (= `torch.Generator().manual_seed(seed)`), a `torch.Generator`, or a list
            of them, one per video (each video as it would come out alone with its generator).
        settings: any of `CALL_SETTINGS` (`num_frames=1, guidance_scale=2.0`); those left out or None
            take `self.defaults`.
        mode: "parallel" (masked frame decoding, the model's own) or "next-token" (the baseline).
        output_type: "np" (uint8 [T, H, W, 3]), "pil" (list of PIL images), "pt" (float [T, 3, H, W] in
            [0, 1], diffusers' convention) or "codes" (latent codes [t, h, w], given frames first).
        progress: progress bars; None (default): `set_progress_bar_config`, else on only when stderr is a terminal.
        callback_on_step_end(pipe, frame, step, state): called after each refinement step (frame: the
            generated latent frame, step: the step in it, both from 0; state: {"codes": the frame's
            codes [n, h, w], -1 where still masked, "frame", "step"}); its return value is ignored. To
            stop, it sets `pipe._interrupt = True` (as in diffusers): the call then returns the latent
            frames finished so far (given ones included; a frame stopped before its last step is
            dropped), decoded: fewer frames than num_frames."""
        if mode not in ("parallel", "next-token"):
            raise LumosError(f"mode must be 'parallel' or 'next-token', got {mode!r}")
        if output_type not in OUTPUT_TYPES:
            raise LumosError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        s, plan, _ = self.prepare(prompt, image, video, num_videos_per_prompt, settings, negative_prompt)
        self._interrupt = False
        out = generate(self.model, plan, s.sample, self.device_generator(generator, plan.n_cond), mode=mode,
                       progress=self._progress(progress), callback=self._step_callback(callback_on_step_end),
                       compile=self._compile and mode == "parallel")
        frames = [self._convert(c, s.num_frames, output_type) for c in out.codes]
        return LumosPipelineOutput(frames=frames) if return_dict else (frames,)

    def _convert(self, codes: torch.Tensor, num_frames: int, output_type: str):
        """One video's codes -> its entry of `LumosPipelineOutput.frames` by output_type."""
        if output_type == "codes":
            return codes.cpu()
        return self._as(self.decode(codes, num_frames), output_type)

    @staticmethod
    def _as(frames: np.ndarray, output_type: str):
        """uint8 frames [T, H, W, 3] in the pixel output_type "np", "pt" or "pil"."""
        if output_type == "pt":
            return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        if output_type == "pil":
            from PIL import Image
            return [Image.fromarray(f) for f in frames]
        return frames

    def _step_callback(self, callback):
        """A `callback_on_step_end` as the sampler's step callback (which stops on a true return)."""
        if callback is None:
            return None

        def on_step(frame: int, step: int, codes: torch.Tensor) -> bool:
            callback(self, frame, step, {"codes": codes, "frame": frame, "step": step})
            return self._interrupt
        return on_step

    def stream(self, prompt, image=None, video=None, *, negative_prompt=None, generator=None,
               num_videos_per_prompt: int = 1, progress: bool | None = None, output_type: str = "np",
               callback_on_step_end=None, **settings) -> Iterator:
        """Like `__call__`, but yields the new frames as soon as each latent frame is done (a list of them
        for a batch), first for the given frames (if any), then for each generated latent frame:
        output_type "np" uint8 [t, H, W, 3], "pt", "pil" as in `__call__`, or "codes" (the new latent
        codes [k, h, w]). Concatenated, they hold `__call__`'s codes for the same generator; the
        pixels agree up to float rounding (a pixel may differ by one level: see below).
        `callback_on_step_end` as in `__call__`: setting `pipe._interrupt` ends the stream after the
        last finished latent frame.

        A causal tokenizer decodes the frames of a prefix of latent frames as it decodes them in the
        whole video (up to the summation order of convolutions of another length), so each yield
        decodes the latent frames so far and keeps the frames not yet yielded (quadratic in frames; a streaming
        decoder with its own cache would make it linear)."""
        if output_type not in OUTPUT_TYPES:
            raise LumosError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        s, plan, single = self.prepare(prompt, image, video, num_videos_per_prompt, settings, negative_prompt)
        self._interrupt = False
        codes = plan.given.cpu()                                             # (n, G, h, w)
        emitted = 0

        def new_frames(new: torch.Tensor):                                   # new: (n, k, h, w), just added
            nonlocal emitted
            if output_type == "codes":
                videos = list(new)
            else:
                videos = [self.decode(c, s.num_frames)[emitted:] for c in codes]
                emitted += len(videos[0])
                videos = [self._as(v, output_type) for v in videos]
            return videos[0] if single else videos

        if codes.shape[1]:
            yield new_frames(codes)
        for frame in iter_parallel(self.model, plan, s.sample, self.device_generator(generator, plan.n_cond),
                                   progress=self._progress(progress), compile=self._compile,
                                   callback=self._step_callback(callback_on_step_end)):
            new = frame.cpu()[:, None]
            codes = torch.cat([codes, new], dim=1)
            yield new_frames(new)

    # ------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, path, dtype: torch.dtype | None = torch.bfloat16, *, provenance: dict | None = None,
                        training: str | None = None, eval_table: str | None = None) -> Path:
        """Write a complete, self-describing pipeline folder at `path` (atomically; one there is replaced):
        the model (config.json + safetensors in `dtype`, default bf16; None: the model's own), the text
        tokenizer (text_tokenizer.json), the video tokenizer (tokenizer/), every default (pipeline.json),
        `provenance` (provenance.json) and a model card (README.md, `model_card`: `training` is a sentence
        on how it was trained, `eval_table` a Markdown table of its evaluation). `from_pretrained(path)`
        loads it back."""
        from lumos.utils import atomic_dir

        path = Path(path)
        self.load_weights()
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp, dtype=dtype or next(self.model.parameters()).dtype)
            self.save_parts(tmp, self.model.config, self.text_tokenizer, self.video_tokenizer,
                            dataclasses.asdict(self.defaults), provenance=provenance, training=training,
                            eval_table=eval_table, name=path.name)
        return path

    @staticmethod
    def save_parts(folder, config, text_tokenizer, video_tokenizer, defaults: dict, *, provenance: dict | None = None,
                   training: str | None = None, eval_table: str | None = None, missing=(), name=None) -> None:
        """Everything of a pipeline folder but the weights, into `folder`: the one writer of these files,
        for `save_pretrained` and for the checkpoints of `lumos train` (whose weights are written apart).
        A tokenizer is an object with `save_pretrained`, or None when it is not known (the card and
        `from_pretrained`'s error say which flag supplies it); `defaults`: the pipeline.json keys known
        (checked); `missing`: more lines for the card's "Not included" section."""
        from lumos.utils import atomic_write, atomic_write_json

        folder = Path(folder)
        if text_tokenizer is not None:
            text_tokenizer.save_pretrained(folder / TEXT_TOKENIZER_FILE)
        if video_tokenizer is not None:
            video_tokenizer.save_pretrained(folder / VIDEO_TOKENIZER_DIR)
        defaults = PipelineDefaults.check(defaults)
        atomic_write_json(folder / DEFAULTS_FILE, defaults)
        if provenance is not None:
            atomic_write_json(folder / "provenance.json", provenance)
        card = LumosPipeline.model_card(name or folder.name, config, defaults, text_tokenizer, video_tokenizer,
                                        provenance=provenance, training=training, eval_table=eval_table,
                                        missing=missing)
        with atomic_write(folder / "README.md", "w") as f:
            f.write(card)

    @staticmethod
    def model_card(name: str, config, defaults: dict, text_tokenizer=None, video_tokenizer=None, *,
                   provenance: dict | None = None, training: str | None = None, eval_table: str | None = None,
                   missing=()) -> str:
        """A pipeline folder's README.md: what it is, how to use it, its model and tokenizers, its
        generation defaults, how it was trained, its evaluation and its provenance (Markdown)."""
        from lumos.model import LumosModel

        with torch.device("meta"):
            n = sum(p.numel() for p in LumosModel(config).parameters())
        v, vt, tt = config.vocab, video_tokenizer, text_tokenizer
        d = {**dataclasses.asdict(PipelineDefaults()), **defaults}
        lack = ([] if tt is not None else [f"the text tokenizer ({TEXT_TOKENIZER_FILE}): pass `--text-tokenizer "
                                            f"FILE` (Python: `text_tokenizer=`)"]) + \
               ([] if vt is not None else [f"the video tokenizer ({VIDEO_TOKENIZER_DIR}/): pass `--video-tokenizer "
                                           f"FOLDER` (Python: `video_tokenizer=`)"]) + list(missing)
        lines = [f"# {name}", "",
                 "A Lumos-1 pipeline folder (autoregressive text-to-video and text-to-image generation with "
                 "MM-RoPE and AR-DF), complete and self-describing:", "",
                 "```", f'lumos generate --model {name} --prompt "..." --out video.mp4', "```", "",
                 "```python", "from lumos import LumosPipeline",
                 f'pipe = LumosPipeline.from_pretrained("{name}")', 'video = pipe("...")   # uint8 [T, H, W, 3]',
                 "```", "", "## Model", "",
                 f"- transformer: {n / 1e6:.2f} M parameters, {config.n_layers} layers, dim {config.dim}, "
                 f"{config.n_heads} heads, RoPE {config.rope_type}, up to {config.max_seq_len} positions",
                 f"- vocabulary: {v.name}, {v.text_vocab_size} text ids, {v.codebook_size} visual codes"]
        if vt is not None:
            k = f"{vt.temporal_compression}x{vt.spatial_compression}x{vt.spatial_compression}"
            lines.append(f"- video tokenizer ({VIDEO_TOKENIZER_DIR}/): {type(vt).__name__}, {k} compression, "
                         f"{vt.codebook_size} codes")
        if tt is not None:
            lines.append(f"- text tokenizer ({TEXT_TOKENIZER_FILE}): {tt.vocab_size} ids")
        size = (f"{d['width']}x{d['height']}, {d['num_frames']} frames at {d['fps']} fps" if "height" in defaults
                else "size not recorded (see below)")
        lines += ["", f"## Generation defaults ({DEFAULTS_FILE})", "",
                  f"{size}; prompt template `{d['prompt_template']!r}`. The settings a call leaves out:", "",
                  "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {d[k]} |" for k in d if k != "prompt_template" and (k in defaults or k not in SIZES)]
        if lack:
            lines += ["", "## Not included", "", "Give these when generating:", ""] + [f"- {x}" for x in lack]
        lines += ["", "## Training", "", training or LumosPipeline.training_summary(provenance)]
        lines += ["", "## Evaluation", "", eval_table.strip() if eval_table else "No evaluation recorded."]
        if provenance:
            lines += ["", "## Provenance (provenance.json)", "", "```json", json.dumps(provenance, indent=2), "```"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def training_summary(provenance: dict | None) -> str:
        """One paragraph on how a model was trained, from the provenance a checkpoint or an export recorded."""
        p = provenance or {}
        cfg = p.get("train_config") or {}
        if not p.get("step") and not cfg:
            return "Not recorded."
        batch = cfg.get("batch") or {}
        parts = [f"{p.get('step', '?')} optimizer steps" + (f" of {cfg['batch_size']} samples" if "batch_size" in cfg else "")]
        if cfg.get("lr"):
            parts.append(f"peak learning rate {cfg['lr']:g} ({cfg.get('lr_schedule', '?')})")
        if batch.get("max_frames"):
            parts.append(f"up to {batch['max_frames']} latent frames per sample")
        data = cfg.get("data") or (["synthetic videos"] if cfg else [])
        if data:
            parts.append("on " + ", ".join(map(str, data)))
        if p.get("init_from") or cfg.get("init_from"):
            parts.append(f"starting from {p.get('init_from') or cfg.get('init_from')}")
        return "`lumos train`: " + "; ".join(parts) + "."
