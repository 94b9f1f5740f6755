"""Media I/O: write/read round trips, timestamp resampling, aspect buckets vs brute force, bad files."""

import itertools

import numpy as np
import pytest

from lumos import media
from lumos.utils import LumosError


def counter_video(T, H=32, W=48):
    """Frame i is flat grey 4 i (a lossy codec keeps flat frames within a few levels): the decoded
    grey level tells which source frame was picked."""
    return np.repeat(np.arange(T, dtype=np.uint8)[:, None, None, None] * 4, H * W * 3).reshape(T, H, W, 3)


def frame_ids(frames):
    return np.round(frames.reshape(len(frames), -1).mean(1) / 4).astype(int)


@pytest.mark.parametrize("ext", ["mp4", "webm", "gif"])
def test_video_round_trip(tmp_path, ext):
    video = counter_video(20)
    media.write_video(tmp_path / f"v.{ext}", video, fps=10)
    frames, fps = media.read_media(tmp_path / f"v.{ext}")
    assert frames.shape == video.shape and frames.dtype == np.uint8 and fps == pytest.approx(10)
    assert np.abs(frames.astype(int) - video).max() <= 3
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary file


def test_images_folder_and_strip(tmp_path):
    video = counter_video(5, 16, 24)
    media.write_frames(tmp_path / "frames", video)
    frames, fps = media.read_media(tmp_path / "frames", folder_fps=8)
    assert np.array_equal(frames, video) and fps == 8
    # natural order: 2.png before 10.png
    (tmp_path / "nat").mkdir()
    for i in (10, 2, 1):
        media.write_image(tmp_path / "nat" / f"{i}.png", video[i % 5])
    assert frame_ids(media.read_media(tmp_path / "nat")[0]).tolist() == [1, 2, 0]
    media.write_video(tmp_path / "strip.png", video[:3])
    img, fps = media.read_media(tmp_path / "strip.png")
    assert img.shape == (1, 16, 72, 3) and fps is None
    media.write_image(tmp_path / "one.jpg", video[2])
    assert media.read_clip(tmp_path / "one.jpg", fps=12, duration=2).shape == (1, 16, 24, 3)


def test_rgba_png_is_composited_over_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = media.read_image(tmp_path / "a.png")[0]
    assert img[0, 0].tolist() == [255, 0, 0] and img[-1, -1].tolist() == [255, 255, 255]


def test_odd_size_mp4_is_padded_to_even(tmp_path):
    media.write_video(tmp_path / "odd.mp4", counter_video(3, 15, 21), fps=5)
    frames, _ = media.read_media(tmp_path / "odd.mp4")
    assert frames.shape == (3, 16, 22, 3)


def test_resample_30_to_12_fps_by_timestamps(tmp_path):
    # 60 frames at 30 fps = 2 s. 12 fps x 2 s = 24 frames must span the whole 2 s: picks floor(2.5 k).
    media.write_video(tmp_path / "v.mp4", counter_video(60), fps=30)
    clip = media.read_clip(tmp_path / "v.mp4", fps=12, duration=2)
    assert clip.shape == (24, 32, 48, 3)
    assert frame_ids(clip).tolist() == [int(2.5 * k) for k in range(24)]
    # The reference's int(30 / 12) = 2 step would give 0, 2, ..., 46 (15 fps labelled 12): not us.
    # 1 s from the centre of the 2 s: starts at 0.5 s = frame 15.
    mid = media.read_clip(tmp_path / "v.mp4", fps=12, duration=1)
    assert frame_ids(mid).tolist() == [15 + int(2.5 * k) for k in range(12)]
    assert frame_ids(media.read_clip(tmp_path / "v.mp4", fps=12, duration=1, window="start")).tolist()[0] == 0
    with pytest.raises(media.ClipTooShort, match=r"v\.mp4.*too short"):
        media.read_clip(tmp_path / "v.mp4", fps=12, duration=3)


def test_pick_frames_is_exact():
    t30 = np.arange(90) / 30
    assert media.pick_frames(t30, 3.0, 30, 90).tolist() == list(range(90))         # same rate: every frame
    assert media.pick_frames(t30, 3.0, 60, 10, "start").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # upsampling
    assert media.pick_frames(t30, 3.0, 10, 20).tolist() == [15 + 3 * k for k in range(20)]  # centred 2 s of 3 s
    # variable frame rate (a GIF with one long frame): the frame on screen at each tick
    vfr = np.array([0.0, 0.1, 0.6, 0.7])
    assert media.pick_frames(vfr, 0.8, 10, 8, "start").tolist() == [0, 1, 1, 1, 1, 1, 2, 3]
    with pytest.raises(media.ClipTooShort):
        media.pick_frames(t30, 3.0, 12, 37)
    with pytest.raises(LumosError, match="window"):
        media.pick_frames(t30, 3.0, 12, 12, "end")


def brute_force_crop_sizes(num_patches, patch, max_ratio):
    """The staircase written as a set: for each wp, hp runs from floor(N / (wp + 1)) (or 1) to floor(N / wp)."""
    out = set()
    for wp in range(1, num_patches + 1):
        lo = max(1, num_patches // (wp + 1)) if wp < num_patches else 1
        for hp in range(lo, num_patches // wp + 1):
            if max(wp, hp) / min(wp, hp) <= max_ratio:
                out.add((wp * patch, hp * patch))
    return out


def brute_force_pick(w, h, sizes):
    best = None
    for cw, ch in sizes:
        score = min(cw / w, ch / h) / max(cw / w, ch / h)
        if best is None or (score, cw, ch) > best[0]:
            best = ((score, cw, ch), (cw, ch))
    return best[1]


@pytest.mark.parametrize("target,patch", [(352, 32), (528, 32), (64, 8), (48, 16), (100, 8)])
def test_crop_buckets_against_brute_force(target, patch):
    n = (target // patch) ** 2
    sizes = media.crop_size_list(n, patch, 4.0)
    assert len(sizes) == len(set(sizes)) and set(sizes) == brute_force_crop_sizes(n, patch, 4.0)
    assert all(w * h <= n * patch * patch and max(w, h) / min(w, h) <= 4 for w, h in sizes)
    rng = np.random.default_rng(0)
    for w, h in itertools.chain(rng.integers(16, 2000, (200, 2)).tolist(), [(1920, 1080), (1080, 1920), (640, 640)]):
        assert media.pick_crop_size(w, h, sizes) == brute_force_pick(w, h, sizes), (w, h)


def test_known_buckets():
    s528 = media.crop_size_list(256, 32)
    assert {(672, 384), (576, 416), (608, 416)} <= set(s528)
    assert media.pick_crop_size(1920, 1080, s528) == (672, 384)          # 16:9 -> the released 384p size
    assert media.pick_crop_size(1280, 720, media.crop_size_list(121, 32)) == (448, 256)
    assert media.pick_crop_size(1000, 1000, s528) == (512, 512)


def test_resize_center_crop():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 200  # a centred vertical band, 20 px wide
    out = media.resize_center_crop(frames, (16, 16))  # scale 0.4 -> 32x16, crop columns 8..24
    assert out.shape == (2, 16, 16, 3)
    band = out[0, 8, :, 0]
    assert band[4:12].min() > 150 and band[:2].max() < 50 and band[-2:].max() < 50  # band stays centred
    flat = media.crop_to_bucket(np.full((1, 90, 160, 3), 77, np.uint8), 64, 8)
    assert flat.shape[1] % 8 == 0 and flat.shape[2] % 8 == 0 and (flat == 77).all()


def test_bad_files_raise_lumos_error(tmp_path):
    with pytest.raises(LumosError, match=r"nope\.mp4: no such file"):
        media.read_media(tmp_path / "nope.mp4")
    with pytest.raises(LumosError, match=r"nope\.mp4: no such file"):
        media.read_clip(tmp_path / "nope.mp4", 12, 1)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "empty.webm").write_bytes(b"")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    media.write_video(tmp_path / "good.mp4", counter_video(30), fps=10)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    for name in ("noise.mp4", "empty.webm", "bad.png", "cut.mp4"):
        with pytest.raises(LumosError, match=f"cannot decode .*{name}"):
            media.read_clip(tmp_path / name, 10, 1)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(LumosError, match="no image frames"):
        media.read_media(tmp_path / "empty_dir")
    with pytest.raises(LumosError, match="unsupported output"):
        media.write_video(tmp_path / "x.avi", counter_video(2))


def bilevel_png(path, width, height):
    """A valid all-black 1-bit PNG of any size, a few KB on disk (written without building the image)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_pixel_count_is_checked_before_decoding(tmp_path, monkeypatch):
    ok = bilevel_png(tmp_path / "ok.png", 40, 30)
    assert media.read_image(ok).shape == (1, 30, 40, 3)
    # beyond twice Pillow's own bomb limit, where Pillow refuses while opening: the same message
    with pytest.raises(LumosError, match=r"huge.png: too large to read \(at most 67 megapixels"):
        media.read_image(bilevel_png(tmp_path / "huge.png", 20000, 20000))
    media.write_video(tmp_path / "v.mp4", counter_video(6), fps=6)       # 6 frames of 48x32
    monkeypatch.setattr(media, "MAX_PIXELS", 40 * 30 - 1)
    with pytest.raises(LumosError, match=r"ok.png: 40x30 pixels: too large to read"):
        media.read_image(ok)
    for read in (lambda p: media.read_media(p), lambda p: media.read_clip(p, 6, 1)):
        with pytest.raises(LumosError, match=r"v.mp4: 48x32 pixels: too large to read"):
            read(tmp_path / "v.mp4")


def test_a_whole_video_read_at_once_is_bounded(tmp_path, monkeypatch):
    media.write_video(tmp_path / "v.mp4", counter_video(6), fps=6)
    monkeypatch.setattr(media, "MAX_VIDEO_BYTES", 5 * 48 * 32 * 3)
    with pytest.raises(LumosError, match=r"v.mp4: 6 frames of 48x32 are .* GiB decoded, more than is read at once"):
        media.read_media(tmp_path / "v.mp4")
    assert media.read_clip(tmp_path / "v.mp4", 6, 0.5).shape == (3, 32, 48, 3)   # a clip decodes what it keeps
