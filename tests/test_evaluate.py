"""`lumos eval`: the scorers on ground-truth Moving Digits clips (they must pass) and on corrupted
ones (they must fail), the evaluation end to end with fake pipelines (ground-truth renders -> ~100%,
wrong videos -> ~0%) and with a tiny random `LumosPipeline` (the real call signature and the
next-token comparison), and the CLI's refusals (one line on stderr, exit code 2)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lumos.world.evaluate as E
import lumos.world.scoring as scoring
import lumos.pipeline as P
from lumos.world import digits as D
from lumos.cli import main

N_CLIPS = 150        # per split: 300 ground-truth clips in all
N_CORRUPT = 40       # clips per corruption


def _clips(split, n, seed):
    rng = np.random.default_rng([seed, 7])
    out = []
    for _ in range(n):
        video, caption, meta = D.sample_clip(split, rng)
        o = meta["objects"][0]
        out.append((video, caption, o))
    return out


@pytest.fixture(scope="module")
def val_clips():
    return _clips("val", N_CORRUPT, 1)


def _rate(rows, key):
    return float(np.mean([bool(r[key]) for r in rows]))


# ============================================================================================ scorers
@pytest.mark.parametrize("split", ["val", "heldout"])
def test_scorers_pass_on_ground_truth_clips(split):
    """Validation handwriting (never seen by the classifier), every combination of the split."""
    rows = []
    for video, _, o in _clips(split, N_CLIPS, 0):
        rows.append(scoring.score_video(video, o["digit"], o["colour"], o["direction"], image=video[0]))
    rates = {k: _rate(rows, k) for k in ("digit_correct", "colour_correct", "direction_correct", "stable", "i2v_pass")}
    print(split, N_CLIPS, "clips", rates)
    assert rates["digit_correct"] >= 0.95
    assert rates["colour_correct"] >= 0.99
    assert rates["direction_correct"] >= 0.98
    assert rates["stable"] >= 0.98
    assert rates["i2v_pass"] >= 0.95


def _repaint(video, colour):
    """Every pixel keeps its brightness but takes `colour` (the digit painted another colour)."""
    bright = video.max(axis=-1, keepdims=True).astype(np.float32) / 255
    return np.rint(bright * np.asarray(D.COLOURS[colour], np.float32)).astype(np.uint8)


def _swapped(video, o, at=8):
    """Frames from `at` on show another digit class (validation handwriting) on the same path."""
    other = (o["digit"] + 5) % 10
    sample = int(D.sample_splits()["val"][other][0])
    x0, y0 = np.asarray(o["trajectory"][0]) - D.DigitsConfig().digit_size / 2
    obj = D.DigitObject(other, o["colour"], o["direction"], sample, float(x0), float(y0), o["speed"])
    out = video.copy()
    out[at:] = D.render([obj])[at:]
    return out


def test_scorers_fail_on_corrupted_clips(val_clips):
    names = list(D.COLOURS)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    repaint, reverse, swap, blank = [], [], [], []
    for video, _, o in val_clips:
        exp = (o["digit"], o["colour"], o["direction"])
        wrong = names[(names.index(o["colour"]) + 1) % len(names)]
        repaint.append(scoring.score_video(_repaint(video, wrong), *exp))
        reverse.append(scoring.score_video(video[::-1].copy(), *exp))
        swap.append(scoring.score_video(_swapped(video, o), *exp))
        blank.append(scoring.score_video(np.zeros_like(video), *exp, image=video[0]))
        # the reversed clip is read as moving the opposite way, not merely "not right"
        assert reverse[-1]["direction_pred"] == opposite[o["direction"]]
    rates = {"repaint colour": _rate(repaint, "colour_correct"), "repaint digit": _rate(repaint, "digit_correct"),
             "reverse direction": _rate(reverse, "direction_correct"), "swap stable": _rate(swap, "stable"),
             "swap all": _rate(swap, "all_correct"), "blank all": _rate(blank, "all_correct")}
    print(N_CORRUPT, "clips per corruption", rates)
    assert rates["repaint colour"] == 0 and rates["repaint digit"] >= 0.95    # only the colour is wrong
    assert rates["reverse direction"] == 0
    assert rates["swap stable"] <= 0.05 and rates["swap all"] <= 0.05
    for r in blank:
        assert r["digit_pred"] is None and r["colour_pred"] is None and r["direction_pred"] == "static"
        assert not (r["digit_correct"] or r["colour_correct"] or r["direction_correct"] or r["stable"] or r["i2v_pass"])


def test_static_vanishing_and_foreign_i2v_fail(val_clips):
    video, _, o = val_clips[0]
    still = np.repeat(video[:1], len(video), axis=0)
    assert scoring.score_direction(still).value == "static"
    assert scoring.score_direction(still, o["direction"]).passed is False
    vanishing = video.copy()
    vanishing[10:] = 0                                   # the digit disappears two thirds of the way through
    s = scoring.score_identity(vanishing)
    assert s.passed is False and s.info["all_frames_present"] is False
    shrinking = video.copy()
    shrinking[12:] = np.where(shrinking[12:].max(-1, keepdims=True) > 200, shrinking[12:], 0)  # strokes thin out
    assert scoring.score_identity(shrinking).info["area_ratio"][0] < 1
    # image-to-video against the first frame of clips showing other digits: fails
    foreign = [(v, oo) for v, _, oo in val_clips if oo["digit"] != o["digit"]][:10]
    results = [scoring.score_i2v(v, video[0]) for v, _ in foreign]
    assert sum(r.passed for r in results) == 0
    assert scoring.score_i2v(video, video[0]).passed and scoring.score_i2v(video, video[0]).value > 0.8


# ============================================================================================ evaluation
class GroundTruthPipe:
    """Renders what the caption says (validation handwriting); for image-to-video, slides the given
    image 1 px per frame in the caption's direction (the clips it comes from leave room for that).
    `wrong=True` renders another digit, another colour and the opposite direction instead."""

    def __init__(self, wrong=False):
        self.wrong = wrong
        self.calls = []

    def __call__(self, prompt, image=None, *, generator, progress, **kwargs):
        self.calls.append({"n": len(prompt), "image": image is not None, **kwargs})
        assert isinstance(generator, torch.Generator) and kwargs["num_frames"] == 17
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        images = image if image is not None else [None] * len(prompt)
        return P.LumosPipelineOutput(frames=[self._one(caption, img, rng) for caption, img in zip(prompt, images)])

    def _one(self, caption, image, rng):
        (digit, colour, direction), = D.parse_caption(caption)
        if self.wrong:
            names = list(D.COLOURS)
            digit, colour = (digit + 3) % 10, names[(names.index(colour) + 1) % 6]
            direction = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
        dx, dy = D.DIRECTIONS[direction]
        if image is not None and not self.wrong:
            return np.stack([np.roll(image, (dy * t, dx * t), axis=(0, 1)) for t in range(17)])
        pool = D.sample_splits()["val"][digit]
        speed = 1.5
        x0 = 4 + (24 if dx < 0 else 0) + (12 if dx == 0 else 0)
        y0 = 4 + (24 if dy < 0 else 0) + (12 if dy == 0 else 0)
        obj = D.DigitObject(digit, colour, direction, int(pool[rng.integers(len(pool))]), x0, y0, speed)
        return D.render([obj])


def test_evaluate_ground_truth_pipe_scores_high_and_writes_reports(tmp_path):
    items = E.build_items(num_prompts=10, num_i2v=4)
    assert [sum(it.set == s for it in items) for s in E.SETS] == [10, len(D.HELD_OUT), 4]
    assert {(it.digit, it.colour, it.direction) for it in items if it.set == "heldout"} == set(D.HELD_OUT)
    assert all(it.image is not None and it.image.shape == (64, 64, 3) for it in items if it.set == "i2v")
    pipe = GroundTruthPipe()
    report = E.evaluate(pipe, items, seed=3, num_inference_steps=4, batch_size=8, next_token_prompts=0,
                        progress=False)
    assert max(c["n"] for c in pipe.calls) == 8 and pipe.calls[0]["num_inference_steps"] == 4
    assert [c["image"] for c in pipe.calls] == [False] * (len(pipe.calls) - 1) + [True]   # i2v batched alone
    aggs = report["aggregates"]
    for set_ in E.SETS:
        a = aggs[set_]
        assert a["digit_correct"] >= 90 and a["colour_correct"] == 100 and a["direction_correct"] == 100
        assert a["stable"] >= 90
    assert aggs["i2v"]["i2v_pass"] == 100 and aggs["i2v"]["i2v_iou"] > 0.8
    assert len(report["videos"]) == len(items) and report["seed"] == 3
    assert report["timing"]["median_s_per_video"] >= 0 and report["torch_threads"] == torch.get_num_threads()
    assert report["next_token"] is None and report["ceiling"] is None        # a fake has neither model nor tokenizer

    report = {"model": "fake", "model_path": "none", **report}
    json_path, md_path = E.write_report(report, tmp_path / "out")
    back = json.loads(json_path.read_text())
    assert back["aggregates"] == aggs and back["videos"][0]["caption"] == items[0].caption
    md = md_path.read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| set | videos | digit %") and table[1].startswith("| heldout | 30 |")
    assert [line.split(" | ")[0] for line in table[1:]] == ["| heldout", "| val", "| i2v"]


def test_evaluate_wrong_pipe_scores_low():
    items = E.build_items(num_prompts=10, num_i2v=2, sets=("val", "i2v"))
    report = E.evaluate(GroundTruthPipe(wrong=True), items, seed=0, batch_size=5, next_token_prompts=0,
                        progress=False)
    for a in report["aggregates"].values():
        assert a["digit_correct"] <= 20 and a["colour_correct"] == 0 and a["direction_correct"] == 0
        assert a["all_correct"] == 0
    assert report["aggregates"]["i2v"]["i2v_pass"] == 0


def test_evaluate_refuses_a_pipe_returning_the_wrong_shape():
    class Small(GroundTruthPipe):
        def __call__(self, prompt, **kwargs):
            return P.LumosPipelineOutput(frames=[v[:, :32] for v in super().__call__(prompt, **kwargs).frames])
    with pytest.raises(E.LumosError, match="expected uint8"):
        E.evaluate(Small(), E.build_items(2, 0, ("val",)), next_token_prompts=0, progress=False)


# ------------------------------------------------------------------------------ a tiny real pipeline
def _tiny_pipe():
    """A random 2-layer model with a causal 4x8x8 grey tokenizer: checks the wiring, not the quality."""
    from lumos.config import ModelConfig
    from lumos.model import LumosModel
    from lumos.tokenizers.base import VideoTokenizer

    class TextTok:
        def encode(self, text):
            return [1 + ord(c) % 63 for c in text]

    class Grey(VideoTokenizer):
        temporal_compression, spatial_compression, codebook_size = 4, 8, 64

        def encode(self, video):
            v = self.check_video(video).float().mean(-1)                                # [T, H, W]
            t = self.num_latent_frames(v.shape[0])
            v = torch.cat([v, v[-1:].expand(self.num_pixel_frames(t) - v.shape[0], -1, -1)])
            groups = torch.stack([v[0]] + [v[1 + 4 * i:5 + 4 * i].mean(0) for i in range(t - 1)])
            return (F.avg_pool2d(groups[:, None], 8)[:, 0] / 255 * 63).round().long()   # [t, h, w]

        def decode(self, codes):
            x = (torch.as_tensor(codes).float() / 63 * 255).round().to(torch.uint8)      # [t, h, w]
            x = x.repeat_interleave(8, 1).repeat_interleave(8, 2)
            x = torch.cat([x[:1], x[1:].repeat_interleave(4, 0)])
            return x[..., None].expand(-1, -1, -1, 3).contiguous()

    model = LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).eval()
    return model, TextTok(), Grey()


def test_evaluate_drives_a_real_pipeline_and_times_next_token():
    model, text_tok, video_tok = _tiny_pipe()
    pipe = P.LumosPipeline(model, text_tok, video_tok, P.PipelineDefaults(num_inference_steps=2))
    items = E.build_items(num_prompts=2, num_i2v=1, sets=("val", "i2v"))
    report = E.evaluate(pipe, items, seed=0, batch_size=2, guidance_scale=2.0, next_token_prompts=1, ceiling_clips=2,
                        progress=False)
    assert report["settings"]["num_inference_steps"] == 2 and report["settings"]["guidance_scale"] == 2.0
    assert report["settings"]["height"] == 64 and report["settings"]["num_frames"] == 17
    nt = report["next_token"]
    # 5 latent frames of 8x8 codes: parallel 1 + F S = 11 passes, next-token 1 + F N = 321
    assert nt["forwards"] == {"parallel": 11, "next-token": 321}
    assert nt["ratio"] > 1 and len(nt["videos"]) == 1
    # the grey tokenizer loses the colour: the ceiling row says so
    assert report["ceiling"]["videos"] == 2 and report["ceiling"]["colour_correct"] == 0
    md = E.format_markdown(report)
    assert "Next-token decoding" in md and "| tokenizer ceiling | 2 |" in md


# ============================================================================================ CLI
def _refuse(capsys, argv, message):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lumos: error:") and "\n" not in err and message in err, err


def test_cli_refuses_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(P, "ASSETS", tmp_path / "no-assets")          # the built-in model is not installed
    _refuse(capsys, ["--out", str(tmp_path / "o")], "is not installed")
    _refuse(capsys, ["--model", str(tmp_path / "missing")], "no such folder")
    (tmp_path / "file").write_text("x")
    _refuse(capsys, ["--model", str(tmp_path / "file")], "not a model folder")
    _refuse(capsys, ["--sets", "val,test"], "--sets")
    _refuse(capsys, ["--batch-size", "0"], "--batch-size")
    _refuse(capsys, ["--num-prompts", "-1"], "--num-prompts")
    _refuse(capsys, ["--history-mask-ratio", "1.5"], "--history-mask-ratio")
    _refuse(capsys, ["--out", str(tmp_path / "file")], "not a folder")
    assert not (tmp_path / "o").exists()


def test_cli_writes_reports(tmp_path, capsys, monkeypatch):
    model, text_tok, video_tok = _tiny_pipe()
    d = tmp_path / "model"
    model.save_pretrained(d, dtype=torch.float32)
    (d / "pipeline.json").write_text(json.dumps({"num_inference_steps": 2, "guidance_scale": 1.0}))
    (d / "text_tokenizer.json").write_text("{}")
    (d / "tokenizer").mkdir()
    monkeypatch.setattr(P, "_load_text_tokenizer", lambda path: text_tok)
    monkeypatch.setattr(P, "_load_video_tokenizer", lambda path, device: video_tok)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(d), "--out", str(out), "--sets", "i2v", "--num-i2v", "2",
                 "--no-next-token", "--ceiling-clips", "0", "--no-progress", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "| i2v | 2 |" in printed and "report.json" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["model_path"] == str(d) and report["seed"] == 5 and report["next_token"] is None
    assert report["settings"]["num_inference_steps"] == 2 and len(report["videos"]) == 2
    assert "| i2v | 2 |" in (out / "report.md").read_text()
