"""The Moving Digits world: determinism, caption grammar, splits, held-out combinations, and that
the pixels show what the caption says (colour, direction)."""

import csv
import itertools

import numpy as np
import pytest

from lumos.world import digits as D
from lumos.world.digits import (ALL_COMBOS, CAPTION_RE, COLOURS, DIRECTIONS, HELD_OUT, IMAGE_CAPTION_RE, SEEN_COMBOS,
                          DigitsConfig, parse_caption, psnr, sample_clip, sample_image, sample_splits,
                          write_dataset)
from lumos.media import read_media
from lumos.utils import LumosError

TWO = DigitsConfig(num_digits=2)


def _objects(meta):
    return [(o["digit"], o["colour"], o["direction"]) for o in meta["objects"]]


def test_deterministic_given_seed():
    a = sample_clip("train", np.random.default_rng(7))
    b = sample_clip("train", np.random.default_rng(7))
    c = sample_clip("train", np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    # the generator is the only source of randomness: global numpy seeding changes nothing
    np.random.seed(123)
    d = sample_clip("train", np.random.default_rng(7))
    assert np.array_equal(a[0], d[0])
    v, cap, meta = a
    assert v.dtype == np.uint8 and v.shape == (17, 64, 64, 3) and meta["fps"] == 8


def test_captions_follow_grammar_and_parser_inverts_them():
    rng = np.random.default_rng(0)
    for split, cfg in itertools.product(D.SPLITS, (DigitsConfig(), TWO)):
        for _ in range(50):
            _, caption, meta = sample_clip(split, rng, cfg)
            assert CAPTION_RE.match(caption), caption
            assert parse_caption(caption) == _objects(meta)
            assert len(meta["objects"]) == cfg.num_digits
    for cfg in (DigitsConfig(), TWO):
        image, caption, meta = sample_image("val", rng, cfg)
        assert image.shape == (64, 64, 3) and IMAGE_CAPTION_RE.match(caption) and not CAPTION_RE.match(caption)
        assert parse_caption(caption) == _objects(meta) and all(d is None for _, _, d in parse_caption(caption))
    assert parse_caption("a red 3 moving left and a blue 7 moving up") == [(3, "red", "left"), (7, "blue", "up")]
    for bad in ("a pink 3 moving left", "a red 3 moving sideways", "red 3 moving left", "a red 12 moving up",
                "a red 3 moving left and", "a red 3 moving left and a blue 7", "A red 3 moving left", ""):
        with pytest.raises(LumosError):
            parse_caption(bad)


def test_held_out_list_keeps_every_part_in_training():
    assert len(set(HELD_OUT)) == len(HELD_OUT) == 30 and set(HELD_OUT) <= set(ALL_COMBOS)
    assert len(SEEN_COMBOS) + len(HELD_OUT) == len(ALL_COMBOS) == 240
    seen = set(SEEN_COMBOS)
    # every digit, colour, direction, and every pair of them, still appears among the seen combinations
    for i, j in itertools.combinations(range(3), 2):
        all_pairs = {(c[i], c[j]) for c in ALL_COMBOS}
        assert {(c[i], c[j]) for c in seen} == all_pairs
    # balanced: 3 per digit, 5 per colour, 7-8 per direction
    assert {d: sum(h[0] == d for h in HELD_OUT) for d in range(10)} == {d: 3 for d in range(10)}
    assert all(sum(h[1] == c for h in HELD_OUT) == 5 for c in COLOURS)
    assert all(sum(h[2] == r for h in HELD_OUT) in (7, 8) for r in DIRECTIONS)


def test_train_never_shows_held_out_combinations_and_heldout_only_them():
    rng = np.random.default_rng(1)
    train, heldout = set(), set()
    for cfg in (DigitsConfig(), TWO):
        for _ in range(1500):
            train.update(_objects(sample_clip("train", rng, cfg)[2]))
        for _ in range(300):
            heldout.update(_objects(sample_clip("heldout", rng, cfg)[2]))
    assert not train & set(HELD_OUT)
    assert train == set(SEEN_COMBOS)          # and the sampler does reach every seen combination
    assert heldout == set(HELD_OUT)


def test_split_by_handwriting_sample():
    splits = sample_splits()
    images, labels = D.load_digit_images()
    train = np.concatenate(list(splits["train"].values()))
    val = np.concatenate(list(splits["val"].values()))
    assert not set(train) & set(val) and len(train) + len(val) == len(labels) == 1797
    for d in range(10):
        assert (labels[splits["val"][d]] == d).all() and (labels[splits["train"][d]] == d).all()
        assert 0.13 < len(splits["val"][d]) / (labels == d).sum() < 0.17
    val_set, train_set = set(val.tolist()), set(train.tolist())
    rng = np.random.default_rng(2)
    for split, allowed in (("val", val_set), ("heldout", val_set), ("train", train_set)):
        for _ in range(300):
            for o in sample_clip(split, rng, TWO)[2]["objects"]:
                assert o["sample_index"] in allowed and labels[o["sample_index"]] == o["digit"]
        for _ in range(50):
            if split != "heldout":
                assert sample_image(split, rng)[2]["objects"][0]["sample_index"] in allowed


def _dominant_colour(pixels):
    """Nearest palette colour to the mean chromaticity of `pixels` [N, 3]."""
    mean = pixels.astype(np.float64).mean(0)
    mean /= mean.max()
    return min(COLOURS, key=lambda c: np.sum((np.asarray(COLOURS[c]) / 255 - mean) ** 2))


def test_digit_pixels_have_the_named_colour():
    rng = np.random.default_rng(3)
    for i in range(60):
        video, caption, meta = sample_clip("train" if i % 2 else "val", rng)
        colour = np.asarray(COLOURS[meta["objects"][0]["colour"]])
        lit = video.max(-1) > 0
        assert 150 < lit.sum(axis=(1, 2)).min(), "the digit should be visible in every frame"
        px = video[lit]                                                  # [N, 3]
        # on black, a pixel is alpha * colour: the channels that are 0 in the colour stay 0 ...
        assert (px[:, colour == 0] == 0).all(), caption
        # ... and the bright pixels are the colour itself
        bright = px[px.max(-1) > 200]
        assert len(bright) > 20 and (np.abs(bright.astype(int) - colour).max(-1) <= 55).all()
        assert _dominant_colour(px) == meta["objects"][0]["colour"]
    for _ in range(20):
        image, caption, meta = sample_image("train", rng)
        assert _dominant_colour(image[image.max(-1) > 0]) == parse_caption(caption)[0][1]


def _centroids(video):
    """Intensity-weighted centre of each frame, `[T, 2]` as (x, y)."""
    a = video.max(-1).astype(np.float64)                                 # [T, H, W]
    ys, xs = np.mgrid[: a.shape[1], : a.shape[2]]
    m = a.sum(axis=(1, 2))
    return np.stack([(a * xs).sum(axis=(1, 2)) / m, (a * ys).sum(axis=(1, 2)) / m], axis=1)


def test_centroid_moves_in_the_named_direction_at_the_named_speed():
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(80):
        video, caption, meta = sample_clip("train", rng)
        o = meta["objects"][0]
        direction = np.asarray(DIRECTIONS[parse_caption(caption)[0][2]], np.float64)
        seen.add(o["direction"])
        c = _centroids(video)
        steps = np.diff(c, axis=0)                                       # [T-1, 2]
        along = steps @ direction
        across = steps @ direction[::-1]
        assert (along > 0.4).all(), (caption, along)                    # moves the named way every frame
        assert abs(along.mean() - o["speed"]) < 0.1                     # at the recorded speed
        assert np.abs(c - c[0])[:, direction == 0].max() < 0.6          # and not sideways
        assert abs(across.sum()) < 0.6
        # the recorded trajectory is the box centre: it moves the same way as the pixels
        traj = np.asarray(o["trajectory"])
        assert np.allclose(np.diff(traj, axis=0) @ direction, o["speed"], atol=1e-2)
        # the whole digit box stays inside the canvas
        half = DigitsConfig().digit_size / 2
        assert traj.min() >= half - 1e-6 and traj.max() <= 64 - half + 1e-6
    assert seen == set(DIRECTIONS)


def test_config_validation_and_bad_split():
    with pytest.raises(ValueError):
        DigitsConfig(num_digits=3)
    with pytest.raises(ValueError, match="speed_min"):
        DigitsConfig(num_frames=65, speed_min=1.0)                      # 64 px of travel cannot fit
    with pytest.raises(LumosError):
        sample_clip("test", np.random.default_rng(0))
    with pytest.raises(LumosError):
        sample_image("heldout", np.random.default_rng(0))
    # a longer, larger world still fits the digit in the canvas
    cfg = DigitsConfig(height=96, width=128, num_frames=33, digit_size=20)
    v, _, meta = sample_clip("train", np.random.default_rng(0), cfg)
    assert v.shape == (33, 96, 128, 3) and meta["objects"][0]["speed"] <= cfg.max_speed


def test_two_digit_clips_have_distinct_colours_and_show_both():
    rng = np.random.default_rng(5)
    for _ in range(50):
        video, caption, meta = sample_clip("train", rng, TWO)
        (_, c1, _), (_, c2, _) = parse_caption(caption)
        assert c1 != c2
        for colour in (c1, c2):                                         # each named colour is on screen
            ref = np.asarray(COLOURS[colour])
            assert ((np.abs(video.astype(int) - ref).max(-1) < 60).sum(axis=(1, 2)) > 10).all(), caption


def test_write_dataset_mp4_png_and_images(tmp_path):
    cfg = DigitsConfig(num_frames=9)
    out = write_dataset(tmp_path / "vids", n=3, split="val", seed=11, cfg=cfg)
    rows = list(csv.DictReader(open(out / "captions.csv")))
    assert [list(r) for r in rows] == [["path", "caption"]] * 3
    for i, row in enumerate(rows):
        assert CAPTION_RE.match(row["caption"])
        decoded, fps = read_media(out / row["path"])
        assert fps == cfg.fps
        ref, caption, _ = sample_clip("val", np.random.default_rng([11, i]), cfg)    # regenerable alone
        assert caption == row["caption"] and decoded.shape == ref.shape == (9, 64, 64, 3)
        assert psnr(decoded, ref) > 32                                  # h264 4:2:0 costs a little, not much
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 3
    png = write_dataset(tmp_path / "png", n=2, split="train", seed=11, cfg=cfg, fmt="png")
    row = next(csv.DictReader(open(png / "captions.csv")))
    frames, _ = read_media(png / row["path"])                       # a folder of png frames
    assert np.array_equal(frames, sample_clip("train", np.random.default_rng([11, 0]), cfg)[0])   # lossless
    img = write_dataset(tmp_path / "img", n=2, split="train", seed=3, kind="image")
    row = next(csv.DictReader(open(img / "captions.csv")))
    assert IMAGE_CAPTION_RE.match(row["caption"]) and read_media(img / row["path"])[0].shape == (1, 64, 64, 3)


# ============================================================================ edges: "inside" vs "wrap"
WRAP = DigitsConfig(num_frames=65, edges="wrap")

# sha256 over clips, captions and images of three configs, computed with the code BEFORE `edges`
# existed: the default world ("inside") must stay bit-identical (the shipped model's records, every test).
INSIDE_CHECKSUM = "0176b48509cf142e79a6b746d59d78652589184e56619d2e05f043404cf5dffc"


def test_inside_clips_are_bit_identical_to_before_wrap_existed():
    import hashlib
    cfgs = [DigitsConfig(), DigitsConfig(num_digits=2), DigitsConfig(height=96, width=128, num_frames=33, digit_size=20)]
    assert DigitsConfig().edges == "inside"
    h = hashlib.sha256()
    for ci, cfg in enumerate(cfgs):
        for split in D.SPLITS:
            for i in range(4):
                v, cap, meta = sample_clip(split, np.random.default_rng([ci, i]), cfg)
                h.update(v.tobytes())
                h.update(cap.encode())
                assert "edges" not in meta                           # the metadata of "inside" clips is unchanged too
        img, cap, _ = sample_image("val", np.random.default_rng([ci, 99]), cfg)
        h.update(img.tobytes())
        h.update(cap.encode())
    assert h.hexdigest() == INSIDE_CHECKSUM


def test_wrap_config_validation():
    assert WRAP.max_speed == WRAP.speed_max == 2.5                     # no cap: the digit may leave the canvas
    with pytest.raises(LumosError, match="edges"):
        DigitsConfig(edges="bounce")
    with pytest.raises(LumosError, match="one digit"):
        DigitsConfig(num_digits=2, edges="wrap")
    with pytest.raises(LumosError, match="1.5 x digit_size"):
        DigitsConfig(height=32, width=64, edges="wrap")
    DigitsConfig(num_frames=257, edges="wrap")                          # any length


def test_wrap_renders_a_digit_crossing_an_edge_on_both_sides():
    """On the torus a glyph at x is the glyph at x - k px rolled by k: exact for whole-pixel shifts
    (the offsets differ by an integer, so the resampling weights are the same numbers)."""
    o = D.DigitObject(3, "red", "right", 5, 20.25, 10.5, 0.0)
    inside = D.render([o], WRAP, num_frames=1)[0]
    for shift in ((0, 40), (45, 0), (50, 38)):                          # right edge, bottom edge, the corner
        moved = o._replace(x0=o.x0 + shift[1], y0=o.y0 + shift[0])
        crossing = D.render([moved], WRAP, num_frames=1)[0]
        assert np.array_equal(crossing, np.roll(inside, shift, axis=(0, 1))), shift
    right = D.render([o._replace(x0=o.x0 + 40)], WRAP, num_frames=1)[0]  # box 60.25..84.25: mostly past the right edge
    lit = right.max(-1).max(0) > 0                                      # lit columns
    assert lit[:10].any() and lit[-4:].any() and not lit[25:56].any()   # the digit appears on the left, split
    # "inside" would have drawn only the sliver left of the edge
    assert (D.render([o._replace(x0=o.x0 + 40)], DigitsConfig(), num_frames=1)[0] > 0).sum() < (right > 0).sum() / 4


def test_wrap_clips_conserve_brightness_move_anywhere_and_keep_their_caption():
    rng = np.random.default_rng(6)
    crossing_frames, xs = 0, []
    for i in range(12):
        video, caption, meta = sample_clip("val", rng, WRAP)
        o = meta["objects"][0]
        assert video.shape == (65, 64, 64, 3) and meta["edges"] == "wrap" and CAPTION_RE.match(caption)
        traj = np.asarray(o["trajectory"])                              # the box centre modulo the canvas
        assert traj.min() >= 0 and traj.max() < 64
        xs.append(traj[0])
        mass = video.max(-1).astype(np.float64).sum(axis=(1, 2))       # total brightness per frame
        # a speed of >= 1 px/frame over 64 frames crosses an edge at least once
        lit = video.max(-1) > 0
        crossing = (lit[:, :, 0].any(1) & lit[:, :, -1].any(1)) | (lit[:, 0, :].any(1) & lit[:, -1, :].any(1))
        assert crossing.any(), caption
        crossing_frames += crossing.sum()
        # a crossing digit keeps all of its brightness (only sub-pixel resampling changes it a little)
        assert np.abs(mass / np.median(mass) - 1).max() < 0.03, (caption, mass.min(), mass.max())
        # every step moves the named way at the recorded speed, modulo the canvas
        dx, dy = DIRECTIONS[o["direction"]]
        steps = np.mod(np.diff(traj, axis=0) + 32, 64) - 32
        assert np.allclose(steps, np.array([dx, dy]) * o["speed"], atol=2e-3)
    assert crossing_frames > 50
    xs = np.asarray(xs)
    assert xs.max() > 64 - 12 or xs.min() < 12                          # starts anywhere, not only inside
