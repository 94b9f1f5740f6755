"""Media I/O: video / image files <-> uint8 frames `[T, H, W, 3]`, fps resampling, aspect-ratio buckets.

Reading (every failure is a one-line `LumosError` naming the file, never a raw traceback). The size
is checked from the file's header before anything is decoded: an image or video frame may have at
most `MAX_PIXELS` pixels, and a whole video read at once (`read_media`) at most `MAX_VIDEO_BYTES`
of decoded frames:
- videos (mp4, webm, gif, mov, mkv, avi, ...) through PyAV; frames come back in presentation order
  with their timestamps, so variable-frame-rate files (GIFs, phone videos) are handled correctly;
- a folder of image frames (png/jpg, natural sort order: 2.png before 10.png) at a given fps;
- single images (png, jpg, webp, bmp) through Pillow, EXIF rotation applied, transparency
  composited over white (what the reference tokenizer does before encoding).

Resampling (`pick_frames`, used by `read_clip`): a clip of N = fps * duration frames is laid on the
source timeline at t_k = s + k / fps, and each t_k takes the source frame being displayed at that
moment (the last frame whose timestamp is <= t_k). The window start s centres the clip in the source
(as the reference does), snapped to a source frame. This gives the true target rate for any source
rate: a 30 fps source sampled at 12 fps picks frames 0, 2, 5, 7, 10, ... The reference instead keeps
every int(30 / 12) = 2nd frame, i.e. 15 fps labelled 12 (notes §6.7); we do not reproduce that.
A source slower than the target repeats frames; a source shorter than the clip raises `ClipTooShort`.

Cropping (`crop_size_list`, `pick_crop_size`, `resize_center_crop`): the reference's aspect-ratio
buckets: all (w, h) = patch * (wp, hp) on the staircase wp * hp <= num_patches with aspect <= max_ratio,
the bucket closest in aspect ratio to the source, resize (antialiased bicubic) so the bucket is
covered, centre crop. `patch` is 32 px for the released models (one size token = 32 px) and e.g.
8 or 16 for the built-in world's tokenizer.

Writing: mp4 (H.264, yuv420p, odd sizes padded to even by edge replication), webm (VP9), gif
(Pillow, adaptive palette; GIF timing is in 1/100 s so the fps is rounded), png (one image, or the
frames side by side as a strip), and a folder of png frames. Every write is atomic.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lumos.utils import LumosError, atomic_write, first_line

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
MAX_PIXELS = 8192 * 8192          # per image / video frame (67 MP; Pillow's own bomb warning starts at 89 MP)
MAX_VIDEO_BYTES = 4 * 2**30       # decoded uint8 RGB frames of one `read_media` call
VIDEO_EXTS = {".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"}


class ClipTooShort(LumosError):
    """The source has fewer seconds than the requested clip (a skip reason, not a broken file)."""


def is_image_path(path) -> bool:
    """True for a still image file (decided by extension; a GIF counts as a video)."""
    return Path(path).suffix.lower() in IMAGE_EXTS


# ------------------------------------------------------------------------------------------ reading
def _check_exists(path: Path) -> None:
    if not path.exists():
        raise LumosError(f"{path}: no such file or folder")


def _decode_error(path: Path, e: BaseException) -> LumosError:
    # One line: the exception type tells "invalid data" from "permission denied" etc.
    return LumosError(f"cannot decode {path}: {type(e).__name__}: {first_line(e)}")


def _check_pixels(path: Path, width: int | None, height: int | None) -> None:
    """LumosError for a frame of more than MAX_PIXELS (None, None: one known to be larger)."""
    if width is None or width * height > MAX_PIXELS:
        size = "" if width is None else f"{width}x{height} pixels: "
        raise LumosError(f"{path}: {size}too large to read (at most {MAX_PIXELS / 1e6:.0f} megapixels, "
                         f"e.g. 8192x8192); scale it down first")


def read_image(path) -> np.ndarray:
    """A still image -> uint8 `[1, H, W, 3]` (RGB; alpha composited over white; EXIF rotation applied)."""
    import warnings

    from PIL import Image, ImageOps  # lazy: only image reads/writes need Pillow

    path = Path(path)
    _check_exists(path)
    try:
        with warnings.catch_warnings():        # the size is checked here, not by Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)             # reads the header only
    except Image.DecompressionBombError:       # beyond twice Pillow's own limit, refused while opening
        _check_pixels(path, None, None)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise _decode_error(path, e) from None
    try:
        with img:
            _check_pixels(path, *img.size)
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            arr = np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy
    except LumosError:
        raise
    except Exception as e:
        raise _decode_error(path, e) from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise LumosError(f"cannot decode {path}: empty image of shape {arr.shape}")
    return arr[None]


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: _natural_key(p.name))
    if not files:
        raise LumosError(f"{folder}: folder has no image frames ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def _read_frame_files(files: list[Path]) -> np.ndarray:
    frames = [read_image(f)[0] for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise LumosError(f"{files[0].parent}: frames have different sizes {sorted(shapes)}")
    return np.stack(frames)


def _probe_video(path: Path, max_bytes: int | None = None) -> tuple[np.ndarray, float, float]:
    """Demux (no decoding) the first video stream: sorted frame times in seconds, the clip end time,
    and the nominal fps. Packets carry the presentation timestamps, so this is cheap. The frame size
    is checked first (`MAX_PIXELS`); with `max_bytes`, so is the size of all frames decoded."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise LumosError(f"cannot decode {path}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(path, width, height)
        tb = stream.time_base
        pts, durs = [], []
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:   # flush packets carry no frame
                continue
            pts.append(packet.pts)
            durs.append(packet.duration or 0)
        rate = stream.average_rate or stream.guessed_rate
    decoded = len(pts) * width * height * 3
    if max_bytes is not None and decoded > max_bytes:
        raise LumosError(f"{path}: {len(pts)} frames of {width}x{height} are {decoded / 2**30:.1f} GiB decoded, more "
                         f"than is read at once ({max_bytes / 2**30:.0f} GiB); cut a shorter clip")
    if not pts:
        raise LumosError(f"cannot decode {path}: the video stream has no frames with timestamps")
    order = np.argsort(pts, kind="stable")  # B-frames: demux order is not presentation order
    pts_s = np.asarray(pts, np.float64)[order] * float(tb)
    last_dur = float(durs[order[-1]]) * float(tb)
    nominal = float(rate) if rate else 0.0
    if len(pts_s) > 1:
        step = float(np.median(np.diff(pts_s)))
        nominal = nominal or (1.0 / step if step > 0 else 0.0)
    if last_dur <= 0:
        last_dur = 1.0 / nominal if nominal > 0 else 0.0
    return pts_s, float(pts_s[-1] + last_dur), nominal or 1.0


def _decode_video_frames(path: Path, times: np.ndarray, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode the frames whose index (into the sorted `times`) is in `wanted`; stops after the last."""
    import av

    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        count = 0
        for frame in container.decode(stream):
            # Match by timestamp when there is one (robust to dropped/duplicated packets); else by order.
            if frame.pts is not None:
                idx = int(np.searchsorted(times, frame.pts * tb - 1e-9))
                if idx >= len(times) or abs(times[idx] - frame.pts * tb) > 1e-6:
                    idx = count
            else:
                idx = count
            count += 1
            if idx in wanted and idx not in out:
                out[idx] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):  # everything after the last kept frame is never decoded
                break
    missing = wanted - set(out)
    if missing:
        raise LumosError(f"cannot decode {path}: {len(missing)} frame(s) listed in the container could not be "
                         f"decoded (first: #{min(missing)}); the file is probably truncated")
    shapes = {f.shape for f in out.values()}
    if len(shapes) > 1:
        raise LumosError(f"cannot decode {path}: frames change size mid-stream {sorted(shapes)}")
    return out


def read_media(path, folder_fps: float = 24.0) -> tuple[np.ndarray, float | None]:
    """Read a whole file: uint8 `[T, H, W, 3]` and the source fps (None for a still image).

    A folder of frames is read at `folder_fps`. For long videos prefer `read_clip`, which decodes only
    the frames it keeps."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_frame_files(_frame_files(path)), float(folder_fps)
    if is_image_path(path):
        return read_image(path), None
    try:
        times, _, fps = _probe_video(path, MAX_VIDEO_BYTES)
        frames = _decode_video_frames(path, times, set(range(len(times))))
    except LumosError:
        raise
    except Exception as e:  # av.error.*, OSError, ...
        raise _decode_error(path, e) from None
    return np.stack([frames[i] for i in range(len(times))]), fps


def pick_frames(times: np.ndarray, end: float, fps: float, num_frames: int, window: str = "center") -> np.ndarray:
    """Which source frames make a clip of `num_frames` frames at `fps` (pure; see the module docstring).

    times: float `[S]` sorted presentation times (s) of the source frames; end: when the last source
        frame stops being shown; window: "center" (the reference's choice) or "start".
    Returns int64 `[num_frames]` indices into `times`. Raises `ClipTooShort` when the source lasts
    less than num_frames / fps seconds (half a source frame of slack for rounding in containers)."""
    times = np.asarray(times, np.float64)
    if num_frames < 1 or fps <= 0:
        raise LumosError(f"need num_frames >= 1 and fps > 0, got {num_frames} frames at {fps} fps")
    if times.size == 0:
        raise LumosError("the source has no frames")
    need = num_frames / fps
    have = end - times[0]
    slack = 0.5 * float(np.median(np.diff(times))) if times.size > 1 else 0.0
    if have + slack + 1e-9 < need:
        raise ClipTooShort(f"too short: {have:.3f} s < the {need:.3f} s needed for {num_frames} frames at {fps:g} fps")
    if window == "center":
        s = times[0] + max(0.0, have - need) / 2
        s = times[max(0, int(np.searchsorted(times, s + 1e-6, side="right")) - 1)]  # snap to a frame start
    elif window == "start":
        s = times[0]
    else:
        raise LumosError(f"window must be 'center' or 'start', got {window!r}")
    # t_k = s + k / fps; the 1e-6 s guard makes equal rates pick every frame despite float timestamps.
    t = s + np.arange(num_frames, dtype=np.float64) / fps
    idx = np.searchsorted(times, t + 1e-6, side="right") - 1
    return np.clip(idx, 0, times.size - 1).astype(np.int64)


def read_clip(path, fps: float, duration: float, window: str = "center", folder_fps: float | None = None) -> np.ndarray:
    """A clip of round(fps * duration) frames at `fps` -> uint8 `[N, H, W, 3]`; a still image -> `[1, H, W, 3]`.

    Only the kept frames are converted to RGB. A folder of frames is taken to run at `folder_fps`
    (None: at `fps`, i.e. its frames are used one for one). Raises `LumosError` (`ClipTooShort` for
    a source shorter than `duration`)."""
    path = Path(path)
    _check_exists(path)
    num_frames = int(round(fps * duration))
    if path.is_dir():
        files = _frame_files(path)
        src_fps = float(folder_fps or fps)
        times = np.arange(len(files), dtype=np.float64) / src_fps
        idx = pick_frames(times, len(files) / src_fps, fps, num_frames, window)
        uniq = sorted(set(idx.tolist()))
        loaded = dict(zip(uniq, _read_frame_files([files[i] for i in uniq])))
        return np.stack([loaded[i] for i in idx.tolist()])
    if is_image_path(path):
        return read_image(path)
    try:
        times, end, _ = _probe_video(path)
        idx = pick_frames(times, end, fps, num_frames, window)
        frames = _decode_video_frames(path, times, set(idx.tolist()))
    except LumosError as e:
        if isinstance(e, ClipTooShort):
            raise ClipTooShort(f"{path}: {e}") from None
        raise
    except Exception as e:
        raise _decode_error(path, e) from None
    return np.stack([frames[i] for i in idx.tolist()])


# ------------------------------------------------------------------------------------------ buckets
def crop_size_list(num_patches: int, patch: int, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """The reference's `generate_crop_size_list`: (w, h) in pixels along the staircase of patch grids.

    Walk wp from num_patches down to 1; for each wp visit hp from where the previous column ended
    up to floor(num_patches / wp), keeping grids with aspect <= max_ratio. E.g. 352 px target with
    patch 32 -> num_patches 11**2 = 121, buckets include 448x256; 528 -> 256 patches, 672x384."""
    if max_ratio < 1:
        raise LumosError(f"max_ratio must be >= 1, got {max_ratio}")
    if num_patches < 1 or patch < 1:
        raise LumosError(f"need at least one patch: num_patches={num_patches}, patch={patch}")
    sizes, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def pick_crop_size(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket (w, h) whose aspect ratio is closest to width x height: maximise
    min(cw/w, ch/h) / max(cw/w, ch/h); ties go to the larger (cw, ch), as the reference's
    descending sort does."""
    if not sizes:
        raise LumosError("empty crop size list")
    return max(sizes, key=lambda s: (min(s[0] / width, s[1] / height) / max(s[0] / width, s[1] / height), s))


def resize_center_crop(frames: np.ndarray, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> uint8 `[T, ch, cw, 3]`: scale so (cw, ch) is covered (antialiased
    bicubic, done in float32 on chunks of frames to bound memory), then centre crop."""
    cw, ch = size
    T, H, W, _ = frames.shape
    scale = max(cw / W, ch / H)
    nw, nh = max(cw, round(W * scale)), max(ch, round(H * scale))
    left, top = (nw - cw) // 2, (nh - ch) // 2
    out = np.empty((T, ch, cw, 3), np.uint8)
    for i in range(0, T, chunk):
        x = torch.from_numpy(np.array(frames[i:i + chunk])).permute(0, 3, 1, 2).float()  # [t, 3, H, W]
        if (nh, nw) != (H, W):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        x = x[:, :, top:top + ch, left:left + cw]                                                # [t, 3, ch, cw]
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def crop_to_bucket(frames: np.ndarray, target_size: int, patch: int, max_ratio: float = 4.0) -> np.ndarray:
    """Resize + centre-crop to the bucket of `crop_size_list((target_size // patch) ** 2, patch)`
    nearest the source aspect ratio. uint8 `[T, H, W, 3]` -> uint8 `[T, ch, cw, 3]`."""
    if target_size < patch:
        raise LumosError(f"--size {target_size} is smaller than one patch of {patch} px")
    sizes = crop_size_list((target_size // patch) ** 2, patch, max_ratio)
    _, H, W, _ = frames.shape
    return resize_center_crop(frames, pick_crop_size(W, H, sizes))


# ------------------------------------------------------------------------------------------ writing
def _as_video(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise LumosError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} of shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _write_av(path: Path, frames: np.ndarray, fps: float, fmt: str, codec: str, options: dict) -> None:
    import av

    T, H, W, _ = frames.shape
    # yuv420p subsamples chroma by 2: H.264/VP9 need even sizes. Pad by edge replication (no content lost).
    ph, pw = H % 2, W % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_write(path, "wb") as f:
        with av.open(f, "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = W + pw, H + ph, "yuv420p"
            stream.options = options
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():  # flush the encoder
                container.mux(packet)


def write_image(path, frames) -> None:
    """png/jpg: one frame `[H, W, 3]` / `[1, H, W, 3]`, or `[T, H, W, 3]` written as a strip of T frames side by side."""
    from PIL import Image

    frames = _as_video(frames)
    strip = np.concatenate(list(frames), axis=1) if frames.shape[0] > 1 else frames[0]  # [H, T*W, 3]
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise LumosError(f"{path}: unsupported image extension (use .png or .jpg)")
    with atomic_write(path, "wb") as f:
        Image.fromarray(strip).save(f, format=fmt)


def write_frames(folder, frames) -> None:
    """A folder of png frames `000000.png, 000001.png, ...` (readable back with `read_media`)."""
    frames = _as_video(frames)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_image(folder / f"{i:06d}.png", frame)


def write_video(path, frames, fps: float = 12, crf: int = 17) -> None:
    """Write uint8 `[T, H, W, 3]` by extension: .mp4 (H.264 yuv420p, `crf` like the reference's
    ffmpeg call), .webm (VP9), .gif, or .png/.jpg (a single frame, or a strip of all frames)."""
    path = Path(path)
    frames = _as_video(frames)
    if fps <= 0:
        raise LumosError(f"fps must be > 0, got {fps}")
    ext = path.suffix.lower()
    if ext == ".mp4":
        _write_av(path, frames, fps, "mp4", "libx264", {"crf": str(crf), "preset": "medium"})
    elif ext == ".webm":
        _write_av(path, frames, fps, "webm", "libvpx-vp9", {"crf": str(max(crf, 4) + 15), "b:v": "0",
                                                             "deadline": "good", "cpu-used": "4"})
    elif ext == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        # GIF delays are whole centiseconds: 12 fps -> 8 cs -> plays at 12.5 fps.
        delay_ms = 10 * max(2, round(100 / fps))
        with atomic_write(path, "wb") as f:
            images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=delay_ms, loop=0)
    elif ext in IMAGE_EXTS:
        write_image(path, frames)
    else:
        raise LumosError(f"{path}: unsupported output extension {ext!r} (use .mp4, .webm, .gif or .png)")

