"""A training run is a pipeline: `lumos generate --model RUN` (and `RUN/checkpoints/step-N`) works with no
extra flags when the run knows its tokenizers, and names the flags that supply what it cannot know;
`LumosPipeline.save_pretrained` round-trips; `lumos builtin export` never writes into the package unasked."""

import json
import os

import pytest
import torch

from lumos.cli import main
from lumos.pipeline import LumosPipeline
from lumos.train.batches import BatchOptions
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.utils import LumosError
from lumos.world.builtin import ASSET, export, prepare
from _stand_ins import save_vq_stand_in

PROMPT = "a red 3 moving left"


def codes(pipe, seed=0):
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(seed), num_inference_steps=1, progress=False,
               output_type="codes")
    return out.frames[0] if hasattr(out, "frames") else out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Moving Digits records (stand-in VQ tokenizer), 2 training steps: (data folder, run folder)."""
    tmp = tmp_path_factory.mktemp("digits")
    tok = save_vq_stand_in(tmp / "vq")
    data = prepare(tmp / "data", num_records=12, seed=0, tokenizer=tok, progress=False)
    run = tmp / "run"
    train(TrainConfig(model="tiny", data=[str(data / "train")], batch=BatchOptions(max_frames=5), max_steps=2,
                      batch_size=4, warmup_steps=1, tensorboard=False, out_dir=str(run)))
    return data, run


def test_a_run_on_records_generates_with_no_extra_flags(digits_run, tmp_path, capsys):
    data, run = digits_run
    ckpt = run / "checkpoints" / "step-000002"
    assert json.loads((run / "latest.json").read_text())["pipeline"] == "checkpoints/step-000002/model"
    folder = ckpt / "model"
    for name in ("config.json", "model.safetensors", "pipeline.json", "text_tokenizer.json", "tokenizer/vq_config.json",
                 "README.md", "provenance.json"):
        assert (folder / name).is_file(), name
    manifest = json.loads((ckpt / "train_state.json").read_text())["files"]
    assert "model/pipeline.json" in manifest and "model/tokenizer/vq.safetensors" in manifest
    defaults = json.loads((folder / "pipeline.json").read_text())
    # the trained size: 8x8 latent tokens x 8 px, 5 latent frames -> 17 frames, 8 fps; the bare caption
    assert (defaults["height"], defaults["width"], defaults["num_frames"], defaults["fps"]) == (64, 64, 17, 8)
    assert defaults["prompt_template"] == "{caption}"
    assert "Not included" not in (folder / "README.md").read_text()
    for model in (run, ckpt):
        out = tmp_path / f"{model.name}.mp4"
        assert main(["generate", "--model", str(model), "--prompt", PROMPT, "--num-inference-steps", "1",
                     "--seed", "0", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
        assert out.stat().st_size > 0
        manifest = json.loads(out.with_suffix(".json").read_text())
        assert (manifest.get("settings", manifest).get("num_frames"), manifest.get("settings", manifest).get("width")) \
            == (17, 64)


def test_save_pretrained_round_trip(digits_run, tmp_path):
    _, run = digits_run
    pipe = LumosPipeline.from_pretrained(run, device="cpu")
    saved = pipe.save_pretrained(tmp_path / "saved", dtype=None)
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "pipeline.json", "text_tokenizer.json",
                     "tokenizer"]
    again = LumosPipeline.from_pretrained(saved, device="cpu")
    assert again.defaults == pipe.defaults
    assert torch.equal(codes(again), codes(pipe))
    card = (saved / "README.md").read_text()
    assert "## Model" in card and "VQTokenizer" in card and "64x64, 17 frames at 8 fps" in card


def test_export_needs_out_or_into_package(digits_run, tmp_path, capsys):
    data, run = digits_run
    before = {p.name: p.stat().st_mtime_ns for p in ASSET.iterdir()}
    assert main(["builtin", "export", str(run), "--data", str(data)]) == 2
    assert "--into-package" in capsys.readouterr().err
    with pytest.raises(LumosError, match="--into-package"):
        export(run, data)
    assert {p.name: p.stat().st_mtime_ns for p in ASSET.iterdir()} == before
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"seed": 0, "settings": {"steps": 16}, "timing": {},
                                  "aggregates": {"heldout": {"videos": 3, "all_correct": 66.7}}}))
    out = tmp_path / "exported"
    assert main(["builtin", "export", str(run), "--data", str(data), "--out", str(out), "--eval", str(report),
                 "--tokenizer", str(run / "checkpoints" / "step-000002" / "model" / "tokenizer")]) == 0
    card = (out / "README.md").read_text()
    assert "| heldout | 3 |" in card and "66.7" in card and '"step": 2' in card
    assert json.loads((out / "provenance.json").read_text())["step"] == 2
    assert LumosPipeline.from_pretrained(out, device="cpu").defaults.prompt_template == "{caption}"


def test_tiny_config_trains_then_generates_with_no_extra_flags(tmp_path, capsys):
    """`lumos train configs/tiny.toml` (synthetic videos, no data, no tokenizers given) is a pipeline: the
    synthetic videos bring their word-level text tokenizer and colour-tile codes."""
    run = tmp_path / "tiny"
    assert main(["train", "configs/tiny.toml", "--set", "max_steps=2", "--set", f"out_dir={run}",
                 "--set", "tensorboard=false"]) == 0
    said = capsys.readouterr().out
    assert "--text-tokenizer" not in said and f"lumos generate --model {run}" in said
    folder = run / "checkpoints" / "step-000002" / "model"
    assert json.loads((folder / "pipeline.json").read_text()) == {"prompt_template": "{caption}", "fps": 3,
                                                                  "trained_frames": 3, "height": 64, "width": 64,
                                                                  "num_frames": 3}
    card = (folder / "README.md").read_text()
    assert "## Not included" not in card and '"pattern-K video"' in card
    out = tmp_path / "x.mp4"
    assert main(["generate", "--model", str(run), "--prompt", "pattern-3 video", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert out.stat().st_size > 0
    # The prompt is the training caption, id for id: what a sample of class 3 starts with.
    pipe = LumosPipeline.from_pretrained(run, device="cpu")
    from lumos.train.batches import SyntheticVideos
    source = SyntheticVideos(pipe.model.config.vocab, num=64)
    sample = next(source[i] for i in range(64) if source[i][1] == 4 and source[i][2] == 9)   # pattern-3, video
    ids = pipe.model.config.vocab.text_turn(pipe.text_tokenizer.encode("pattern-3 video"))
    assert ids.tolist() == sample[:len(ids)].tolist()
    video = pipe("pattern-3 video", generator=0, num_inference_steps=2).frames[0]
    assert video.shape == (3, 64, 64, 3)
    assert torch.equal(pipe.video_tokenizer.encode(video), pipe("pattern-3 video", generator=0, num_inference_steps=2,
                                                               output_type="codes").frames[0].cpu())


def test_a_run_that_cannot_know_its_tokenizers_names_the_flags(digits_run, tmp_path, capsys):
    """Records whose index names no tokenizer: the card and `lumos generate` name the flags that supply them."""
    import shutil
    data, _ = digits_run
    records = tmp_path / "records"
    shutil.copytree(data / "train", records)
    index = json.loads((records / "index.json").read_text())
    index.pop("tokenizers", None)
    (records / "index.json").write_text(json.dumps(index))
    run = tmp_path / "run"
    train(TrainConfig(model="tiny", data=[str(records)], batch=BatchOptions(max_frames=5), max_steps=2,
                      batch_size=4, warmup_steps=1, tensorboard=False, out_dir=str(run)))
    folder = run / "checkpoints" / "step-000002" / "model"
    card = (folder / "README.md").read_text()
    assert "## Not included" in card and "--text-tokenizer" in card and "--video-tokenizer" in card
    assert "--height" in card and "8x8 latent tokens" in card
    base = ["generate", "--model", str(run), "--prompt", "x", "--out", str(tmp_path / "x.mp4")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "text tokenizer" in err and "--text-tokenizer" in err
    assert main(base + ["--text-tokenizer", str(data / "text_tokenizer.json")]) == 2
    err = capsys.readouterr().err
    assert "video tokenizer" in err and "--video-tokenizer" in err
    assert not (tmp_path / "x.mp4").exists()


def test_a_restart_drops_the_old_pointer(digits_run, tmp_path):
    """A fresh start over an old run removes its latest.json with its checkpoints (no pointer to a deleted one)."""
    data, _ = digits_run
    run = tmp_path / "run"
    cfg = dict(model="tiny", data=[str(data / "train")], batch=BatchOptions(max_frames=5), batch_size=4,
               warmup_steps=1, tensorboard=False, out_dir=str(run))
    train(TrainConfig(max_steps=2, **cfg))
    train(TrainConfig(max_steps=1, **cfg), restart=True)
    assert json.loads((run / "latest.json").read_text())["step"] == 1
    assert not (run / "checkpoints" / "step-000002").exists()
    assert os.listdir(run / "checkpoints") == ["step-000001"]


def test_palette_tokenizer(tmp_path):
    """The synthetic videos' colour tiles: distinct colours, decode then encode gives the codes back exactly
    (a tile's mean is its colour), saved and loaded through load_video_tokenizer; a bad config is one line."""
    from lumos.tokenizers import load_video_tokenizer
    from lumos.tokenizers.palette import PaletteTokenizer, palette

    assert len({tuple(c) for c in palette(64).tolist()}) == 64
    tok = PaletteTokenizer(64, patch=4)
    codes = torch.randint(0, 64, (3, 5, 7), generator=torch.Generator().manual_seed(0))
    video = tok.decode(codes)
    assert video.shape == (3, 20, 28, 3) and video.dtype == torch.uint8
    assert torch.equal(tok.encode(video), codes)
    back = load_video_tokenizer(tok.save_pretrained(tmp_path / "tok"))
    assert isinstance(back, PaletteTokenizer) and (back.codebook_size, back.spatial_compression) == (64, 4)
    (tmp_path / "tok" / "palette.json").write_text('{"codebook_size": 64}')
    with pytest.raises(LumosError, match="exactly the keys"):
        load_video_tokenizer(tmp_path / "tok")
    with pytest.raises(LumosError, match=r"in \[0, 64\)"):
        tok.decode(torch.full((1, 2, 2), 64))
