"""The bad-input corpus of the training side: `lumos train`, `lumos train-tokenizer`, `lumos tokenize`,
`lumos builtin prepare | export` and their Python APIs. Each bad input must be refused by the contract
of tests/badinput.py (exit 2, one `lumos: error:` line naming the problem, no traceback, no file
created, changed or deleted under the run / output folders), before any work; a pickle is never
unpickled. Where an input turns out to be valid (an older checkpoint to fall back on, --restart),
the test checks that it works instead."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _stand_ins import save_vq_stand_in
from badinput import pickle_bomb, refuse, refuse_api
from lumos.cli import main
from lumos.config import ModelConfig
from lumos.data.pretokenize import pretokenize
from lumos.data.records import RecordReader, build_index, shard_name, write_shard
from lumos.tokenizers.text import train_text_tokenizer
from lumos.train.batches import SyntheticVideos
from lumos.train.checkpoints import list_checkpoints
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.world.builtin import export, prepare
from lumos.world.train_tokenizer import TrainTokenizerConfig, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
FAST = {"max_steps": 2, "batch_size": 2, "warmup_steps": 1, "tensorboard": False}


def toml(path: Path, d: dict) -> Path:
    """A TOML file of `d` (top-level keys, then one table per dict value)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for table, sub in ((k, v) for k, v in d.items() if isinstance(v, dict)):
        lines += [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in sub.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_config(tmp_path, out="run", **kw) -> Path:
    """configs/tiny.toml with FAST settings and out_dir = tmp_path/out, plus `kw`."""
    import tomllib

    d = {**tomllib.loads(TINY.read_text()), **FAST, "out_dir": str(tmp_path / out), **kw}
    return toml(tmp_path / f"{out}.toml", d)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny config with checkpoints at steps 1 and 2 (and its config file)."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = TrainConfig.from_toml(train_config(tmp, checkpoint_every=1))
    train(cfg)
    return tmp


def copy_run(finished: Path, tmp_path: Path, keep: tuple = (1, 2)) -> tuple[Path, Path]:
    """A copy of the finished run in tmp_path/run with only the checkpoints of the steps `keep`; ->
    (its config file, the run folder)."""
    shutil.copytree(finished / "run", tmp_path / "run")
    for step, folder in list_checkpoints(tmp_path / "run" / "checkpoints"):
        if step not in keep:
            shutil.rmtree(folder)
    cfg = train_config(tmp_path, checkpoint_every=1)
    return cfg, tmp_path / "run"


def metrics_losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """A valid records folder: 8 synthetic videos in the tiny preset's vocabulary, one shard."""
    root = tmp_path_factory.mktemp("records") / "rec"
    vocab = ModelConfig.from_name("tiny").vocab
    src = SyntheticVideos(vocab, num=8, image_fraction=0.0)
    meta = {"shard": 0, "num_shards": 1, "vocab": vocab.to_dict(), "digit_ids": None, "temporal_compression": 4,
            "records": [{"id": i, "frames": 3} for i in range(8)], "skipped": []}
    write_shard(root / shard_name(0), [src[i] for i in range(8)], meta)
    build_index(root)
    return root


def copy_records(records: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(records, tmp_path / "rec"))


# ------------------------------------------------------------------------------------------ lumos train: config
def test_non_utf8_toml(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(b'model = "tiny"\n# caf\xe9\n')
    refuse(["train", cfg], tmp_path, match="not UTF-8")
    refuse_api(lambda: TrainConfig.from_toml(cfg), tmp_path, match="not UTF-8")


def test_config_that_is_a_folder(tmp_path):
    refuse(["train", tmp_path], tmp_path, match="cannot read the config")


def test_unknown_key_in_batch_table(tmp_path):
    cfg = train_config(tmp_path, batch={"max_frames": 3, "max_frame": 2})
    refuse(["train", cfg], tmp_path, match=r"unknown \[batch\] keys \['max_frame'\]")


def test_wrong_type_inside_model_overrides(tmp_path):
    cfg = train_config(tmp_path, model_overrides={"n_layers": "x"})
    refuse(["train", cfg], tmp_path, match="model config key 'n_layers' must be of type int")
    refuse(["train", TINY, "--set", 'model_overrides.rope_scale=["a"]', "--set", f'out_dir="{tmp_path / "r"}"'],
           tmp_path, match="'rope_scale' must be of type list of int")


def test_wrong_type_inside_synthetic(tmp_path):
    refuse(["train", train_config(tmp_path), "--set", 'synthetic.num="many"'], tmp_path,
           match="synthetic key 'num' must be of type int")


def test_data_that_is_not_a_list_of_folders(tmp_path):
    cfg = train_config(tmp_path, synthetic={}, data=[3])
    refuse(["train", cfg], tmp_path, match="data must be a list of record folders")


def test_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file")
    refuse(["train", train_config(tmp_path, out="taken")], tmp_path, match="out_dir .*taken: is a file")


def test_sample_too_long_for_the_model_found_at_the_first_step(tmp_path):
    """Found while building the first batch: nothing may be left in out_dir (it is not even created)."""
    cfg = train_config(tmp_path, model_overrides={"max_seq_len": 16})
    refuse(["train", cfg], tmp_path, match="more than the model's max_seq_len 16")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ lumos train: data
def test_records_folder_without_index(tmp_path, records):
    rec = copy_records(records, tmp_path)
    (rec / "index.json").unlink()
    refuse(["train", train_config(tmp_path, synthetic={}, data=[str(rec)])], tmp_path,
           match="index.json: not found; is .* a records folder")


def test_records_index_without_its_vocabulary(tmp_path, records):
    rec = copy_records(records, tmp_path)
    index = json.loads((rec / "index.json").read_text())
    del index["vocab"]
    (rec / "index.json").write_text(json.dumps(index))
    refuse(["train", train_config(tmp_path, synthetic={}, data=[str(rec)])], tmp_path,
           match="the index has no vocabulary")
    (rec / "index.json").write_text("[1, 2]")
    refuse_api(lambda: RecordReader(rec), tmp_path, match="not a lumos-records v1 index")


def test_records_tokens_that_are_a_pickle(tmp_path, records):
    """numpy would suggest allow_pickle; the message says what the file is not, and nothing is written."""
    rec = copy_records(records, tmp_path)
    np.save(rec / "shard-00000" / "tokens.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    msg = refuse(["train", train_config(tmp_path, synthetic={}, data=[str(rec)])], tmp_path,
                 match="tokens.npy: not a records file")
    assert "allow_pickle" not in msg and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ lumos train: resume
def test_corrupt_optimizer_as_the_only_checkpoint(tmp_path, finished):
    cfg, run = copy_run(finished, tmp_path, keep=(2,))
    opt = ckpt(run, 2) / "optimizer.pt"
    opt.write_bytes(b"\0" * opt.stat().st_size)       # same size: the manifest still matches
    refuse(["train", cfg, "--resume"], tmp_path, match=r"step-000002/optimizer\.pt: cannot load the optimizer state")


def test_pickle_bomb_as_optimizer(tmp_path, finished):
    cfg, run = copy_run(finished, tmp_path, keep=(2,))
    marker = tmp_path / "marker"
    manifest = json.loads((ckpt(run, 2) / "train_state.json").read_text())
    manifest["files"]["optimizer.pt"] = pickle_bomb(ckpt(run, 2) / "optimizer.pt", marker).stat().st_size
    (ckpt(run, 2) / "train_state.json").write_text(json.dumps(manifest))
    refuse(["train", cfg, "--resume"], tmp_path, match=r"optimizer\.pt: .*refused without unpickling")
    assert not marker.exists()


def test_corrupt_rng_file_as_the_only_checkpoint(tmp_path, finished):
    cfg, run = copy_run(finished, tmp_path, keep=(2,))
    rng = ckpt(run, 2) / "rng-00000.pt"
    rng.write_bytes(rng.read_bytes()[::-1])
    refuse(["train", cfg, "--resume"], tmp_path, match=r"rng-00000\.pt: cannot load the RNG state")


def test_corrupt_train_state_with_history_refuses_to_start_over(tmp_path, finished):
    cfg, run = copy_run(finished, tmp_path, keep=(2,))
    (ckpt(run, 2) / "train_state.json").write_text('{"step": 2, "fi')
    refuse(["train", cfg, "--resume"], tmp_path, match="train_state.json: unreadable.*pass --restart")
    config = TrainConfig.from_toml(cfg)
    refuse_api(lambda: train(config, resume=True), tmp_path, match="pass --restart")


def test_metrics_without_checkpoint_refuse_to_start_over(tmp_path, finished):
    """Killed before its first checkpoint: the history (metrics.jsonl) is not overwritten silently."""
    cfg, run = copy_run(finished, tmp_path, keep=())
    refuse(["train", cfg, "--resume"], tmp_path, match=r"no checkpoint under .*\(there is none\).*--restart")


def test_existing_run_without_resume(tmp_path, finished):
    cfg, run = copy_run(finished, tmp_path)
    refuse(["train", cfg], tmp_path, match="already holds a run .*pass --resume .* or --restart")


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, finished, capsys):
    """Valid: the newest checkpoint's optimizer is damaged, the one before it loads."""
    cfg, run = copy_run(finished, tmp_path)
    (ckpt(run, 2) / "optimizer.pt").write_bytes(b"\0" * (ckpt(run, 2) / "optimizer.pt").stat().st_size)
    assert main(["train", str(cfg), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step-000002 is damaged" in err and "resuming from step-000001" in err
    assert metrics_losses(run) == metrics_losses(finished / "run")      # step 2 redone from step 1, bit for bit
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]


def test_restart_starts_over(tmp_path, finished):
    """Valid with --restart: --resume --restart on a damaged only checkpoint starts over at step 0."""
    cfg, run = copy_run(finished, tmp_path, keep=(2,))
    (ckpt(run, 2) / "train_state.json").write_text("{}")
    assert main(["train", str(cfg), "--resume", "--restart"]) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]
    assert metrics_losses(run) == metrics_losses(finished / "run")      # the same run again, from step 0


# ------------------------------------------------------------------------------------------ lumos train-tokenizer
def tokenizer_dict(out: Path, **top) -> dict:
    return {"steps": 4, "batch_size": 2, "lr": 3e-3, "out_dir": str(out), "warmup_steps": 2, "ckpt_every": 2,
            "image_every": 2, "image_batch_size": 2, "eval_videos": 2, **top,
            "model": {"channels": [8, 16], "enc_blocks": 1, "dec_blocks": 1, "levels": [5, 4, 3], "groups": 4},
            "data": {"height": 32, "width": 32, "num_frames": 5, "digit_size": 12}}


def test_tokenizer_config_wrong_nested_type(tmp_path):
    d = tokenizer_dict(tmp_path / "tok")
    d["model"]["channels"] = ["a", "b"]
    refuse(["train-tokenizer", toml(tmp_path / "t.toml", d)], tmp_path, match="'channels' must be of type list of int")


def test_tokenizer_out_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file")
    cfg = toml(tmp_path / "t.toml", tokenizer_dict(tmp_path / "tok"))
    refuse(["train-tokenizer", cfg, "--out", tmp_path / "taken"], tmp_path, match="is a file")


def test_tokenizer_resume_with_a_corrupt_optimizer(tmp_path):
    cfg = TrainTokenizerConfig.from_dict(tokenizer_dict(tmp_path / "tok"))
    train_tokenizer(cfg, progress=False, stop_at=2)
    opt = tmp_path / "tok" / "checkpoints" / "step-000002" / "optimizer.pt"
    opt.write_bytes(b"\0" * opt.stat().st_size)
    file = toml(tmp_path / "t.toml", tokenizer_dict(tmp_path / "tok"))
    refuse(["train-tokenizer", file, "--resume"], tmp_path, match=r"step-000002/optimizer\.pt: cannot load.*--restart")
    refuse(["train-tokenizer", file], tmp_path, match="already holds a training checkpoint")
    refuse_api(lambda: train_tokenizer(cfg, resume=True, progress=False), tmp_path, match="optimizer.pt")
    # --restart: starts over (and finishes)
    assert main(["train-tokenizer", str(file), "--resume", "--restart"]) == 0
    assert (tmp_path / "tok" / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------ lumos tokenize
@pytest.fixture(scope="module")
def tokenize_inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tokin")
    (d / "list.csv").write_text("path,caption\nmissing.mp4,a red square\n")
    train_text_tokenizer(["a red square"], 300, d / "text.json")
    save_vq_stand_in(d / "vq")
    return d


def tokenize_argv(d: Path, out: Path, **kw) -> list:
    args = {"--input": d / "list.csv", "--out": out, "--tokenizer": d / "vq", "--text-tokenizer": d / "text.json",
            "--size": "64", "--device": "cpu", **kw}
    return ["tokenize", "--no-progress", *[x for kv in args.items() for x in kv]]


def test_tokenize_out_that_is_a_file(tmp_path, tokenize_inputs):
    (tmp_path / "taken").write_text("a file")
    refuse(tokenize_argv(tokenize_inputs, tmp_path / "taken"), tmp_path, tokenize_inputs,
           match="--out .*taken: is a file; give a folder")
    d = tokenize_inputs
    refuse_api(lambda: pretokenize(input=str(d / "list.csv"), out=str(tmp_path / "taken"), tokenizer=str(d / "vq"),
                                   text_tokenizer=str(d / "text.json"), progress=False), tmp_path, match="is a file")


def test_tokenize_out_that_cannot_be_written(tmp_path, tokenize_inputs):
    refuse(tokenize_argv(tokenize_inputs, "/proc/lumos-records"), tokenize_inputs,
           match="--out .*cannot write in /proc")


def test_tokenize_non_utf8_input_list(tmp_path, tokenize_inputs):
    bad = tmp_path / "list.csv"
    bad.write_bytes(b"path,caption\nclip.mp4,caf\xe9\n")
    refuse(tokenize_argv(tokenize_inputs, tmp_path / "out", **{"--input": bad}), tmp_path, match="not UTF-8")


def test_tokenize_jsonl_line_that_is_not_an_object(tmp_path, tokenize_inputs):
    bad = tmp_path / "list.jsonl"
    bad.write_text('{"path": "a.mp4", "caption": "x"}\n[1, 2\n')
    refuse(tokenize_argv(tokenize_inputs, tmp_path / "out", **{"--input": bad}), tmp_path,
           match=r"list.jsonl:2: not a JSON object")


def test_tokenize_text_tokenizer_that_is_not_json(tmp_path, tokenize_inputs):
    bad = tmp_path / "text.json"
    bad.write_bytes(b"\xff\xfe not json")
    refuse(tokenize_argv(tokenize_inputs, tmp_path / "out", **{"--text-tokenizer": bad}), tmp_path,
           match="not a `tokenizers` JSON file")


def test_tokenize_index_only_on_shards_that_are_pickles(tmp_path, records):
    rec = copy_records(records, tmp_path)
    np.save(rec / "shard-00000" / "offsets.npy", np.array([None], dtype=object), allow_pickle=True)
    msg = refuse(["tokenize", "--out", rec, "--index-only"], tmp_path, match="offsets.npy: not a records file")
    assert "allow_pickle" not in msg


# ------------------------------------------------------------------------------------------ lumos builtin
@pytest.fixture(scope="module")
def vq(tmp_path_factory) -> Path:
    return save_vq_stand_in(tmp_path_factory.mktemp("vq") / "tok")


def test_prepare_out_that_is_a_file(tmp_path, vq):
    (tmp_path / "taken").write_text("a file")
    refuse(["builtin", "prepare", "--out", tmp_path / "taken", "--tokenizer", vq, "--num-records", "2"], tmp_path,
           match="--out .*taken: is a file")


def test_prepare_zero_records(tmp_path, vq):
    refuse(["builtin", "prepare", "--out", tmp_path / "d", "--tokenizer", vq, "--num-records", "0"], tmp_path,
           match="--num-records must be >= 1")


def test_prepare_missing_tokenizer(tmp_path):
    refuse(["builtin", "prepare", "--out", tmp_path / "d", "--tokenizer", tmp_path / "nope", "--num-records", "2"],
           tmp_path, match="visual tokenizer folder not found")
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, vq) -> Path:
    return prepare(tmp_path_factory.mktemp("prep") / "data", num_records=2, seed=0, tokenizer=vq, progress=False)


def test_export_run_without_checkpoints(tmp_path, prepared, vq):
    (tmp_path / "run").mkdir()
    refuse(["builtin", "export", tmp_path / "run", "--data", prepared, "--out", tmp_path / "o", "--tokenizer", vq],
           tmp_path, prepared, match="no finished checkpoint to export")


def test_export_data_without_prepared_json(tmp_path, finished, vq):
    _, run = copy_run(finished, tmp_path)
    (tmp_path / "data").mkdir()
    refuse(["builtin", "export", run, "--data", tmp_path / "data", "--out", tmp_path / "o", "--tokenizer", vq],
           tmp_path, match="no prepared.json")


def test_export_data_without_text_tokenizer(tmp_path, finished, prepared, vq):
    _, run = copy_run(finished, tmp_path)
    data = Path(shutil.copytree(prepared, tmp_path / "data"))
    (data / "text_tokenizer.json").unlink()
    refuse(["builtin", "export", run, "--data", data, "--out", tmp_path / "o", "--tokenizer", vq], tmp_path,
           match="text_tokenizer.json: missing")


def test_export_out_that_is_a_file(tmp_path, finished, prepared, vq):
    _, run = copy_run(finished, tmp_path)
    (tmp_path / "taken").write_text("a file")
    refuse(["builtin", "export", run, "--data", prepared, "--out", tmp_path / "taken", "--tokenizer", vq],
           tmp_path, prepared, match="--out .*taken: is a file")
    refuse_api(lambda: export(run, prepared, tmp_path / "taken", vq), tmp_path, match="is a file")


def test_export_missing_tokenizer(tmp_path, finished, prepared):
    _, run = copy_run(finished, tmp_path)
    refuse(["builtin", "export", run, "--data", prepared, "--out", tmp_path / "o", "--tokenizer", tmp_path / "nope"],
           tmp_path, prepared, match="visual tokenizer folder not found")
