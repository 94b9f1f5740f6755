"""Models and tokenizers by Hub repo id (`lumos.hub`), against a Hub cache built here in a temporary
HF_HOME with the documented layout (models--ORG--NAME/{refs,snapshots,blobs}), offline: nothing may
touch the network (`no_network` makes any socket use fail and records it)."""

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch

import lumos.pipeline as P
from lumos import hub
from lumos.cli import main
from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos.pipeline import LumosPipeline
from lumos.utils import LumosError
from test_pipeline_cli import TINY_DEFAULTS, FakeTextTokenizer, FakeVideoTokenizer
from _stand_ins import save_cosmos_stand_in

REPO, SUB = "lumos-test/Tiny-Lumos", "1B/stage-2-joint-384p"
MAIN, V2 = "a" * 40, "b" * 40                      # commit hashes of main and of the tag v2
TEXT = hub.ASSETS / "moving-digits" / "text_tokenizer.json"


def model_files(seed: int, tmp: Path) -> dict:
    """The files of a tiny pipeline folder (model seed `seed`): {path in the folder: bytes}."""
    d = tmp / f"model-{seed}"
    LumosModel.from_config(ModelConfig.from_name("tiny"), seed=seed).save_pretrained(d, dtype=torch.float32)
    (d / "pipeline.json").write_text(json.dumps(TINY_DEFAULTS))
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def cache_repo(home: Path, repo: str, commits: dict, refs: dict) -> Path:
    """Write `repo` into the Hub cache of HF_HOME `home`: commits {hash: {path: bytes}} as snapshots of
    symlinks into blobs/ (named by content hash), refs {name: hash}. Returns the repo's cache folder."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    for commit, files in commits.items():
        for rel, data in files.items():
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = root / "snapshots" / commit / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for name, commit in refs.items():
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / name).write_text(commit)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or name lookup fails, and is recorded: tests assert the list stays empty."""
    tries = []

    def refuse(*args, **kwargs):
        tries.append(args)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tries


@pytest.fixture
def cache(tmp_path, monkeypatch, no_network):
    """HF_HOME with REPO (main: model seed 0 in SUB + the text tokenizer; tag v2: model seed 1) and a
    Cosmos-like tokenizer repo; HF_HUB_OFFLINE=1. Tokenizer loading is redirected to stand-ins that
    remember the path they were given."""
    home = tmp_path / "hf"
    main_files = {f"{SUB}/{k}": v for k, v in model_files(0, tmp_path).items()}
    main_files.update({"tokenizer/text_tokenizer.json": TEXT.read_bytes(), "README.md": b"tiny"})
    v2_files = {f"{SUB}/{k}": v for k, v in model_files(1, tmp_path).items()}
    cache_repo(home, REPO, {MAIN: main_files, V2: v2_files}, {"main": MAIN, "v2": V2})
    cosmos = save_cosmos_stand_in(tmp_path / "cosmos")
    cache_repo(home, "nv-test/Cosmos-Tokenizer-DV4x8x8",
               {"c" * 40: {p.name: p.read_bytes() for p in cosmos.iterdir()}}, {"main": "c" * 40})
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = {}
    monkeypatch.setattr(P, "_load_text_tokenizer", lambda path: loaded.setdefault("text", path) and FakeTextTokenizer())
    monkeypatch.setattr(P, "_load_video_tokenizer",
                        lambda path, device: loaded.setdefault("video", path) and FakeVideoTokenizer())
    return home / "hub" / f"models--{REPO.replace('/', '--')}", loaded


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def refused(call, *words) -> str:
    """call() raises one LumosError, quickly, whose one-line message holds every word."""
    t = time.perf_counter()
    with pytest.raises(LumosError) as e:
        call()
    msg = str(e.value)
    assert time.perf_counter() - t < 5 and "\n" not in msg and all(w in msg for w in words), msg
    return msg


# ============================================================================================ resolving
def test_repo_id_subfolder_and_revision(cache, no_network):
    root, _ = cache
    folder = hub.resolve(REPO, subfolder=SUB)
    assert folder == root / "snapshots" / MAIN / SUB and (folder / "config.json").is_file()
    assert hub.resolve(f"{REPO}/{SUB}") == folder                                   # one string
    assert hub.resolve(REPO, subfolder=SUB, revision="v2") == root / "snapshots" / V2 / SUB
    assert hub.resolve(REPO, subfolder=SUB, revision=V2) == root / "snapshots" / V2 / SUB
    assert hub.resolve(REPO) == root / "snapshots" / MAIN
    text = root / "snapshots" / MAIN / "tokenizer" / "text_tokenizer.json"
    assert hub.resolve_file(f"{REPO}/tokenizer/text_tokenizer.json") == text
    assert hub.resolve_file(REPO, "tokenizer/text_tokenizer.json") == text
    from lumos.tokenizers.text import TextTokenizer
    assert TextTokenizer(text).encode("a red 3")                                    # a real file, through blobs
    assert not no_network


def test_model_and_pipeline_load_by_repo_id(cache, no_network):
    root, loaded = cache
    local = LumosModel.from_pretrained(root / "snapshots" / MAIN / SUB)
    assert same_weights(LumosModel.from_pretrained(REPO, subfolder=SUB), local)
    v2 = LumosModel.from_pretrained(REPO, subfolder=SUB, revision="v2")
    assert not same_weights(v2, local) and same_weights(v2, LumosModel.from_pretrained(f"{REPO}/{SUB}", revision=V2))
    pipe = LumosPipeline.from_pretrained(REPO, subfolder=SUB, device="cpu",
                                         text_tokenizer=f"{REPO}/tokenizer/text_tokenizer.json",
                                         video_tokenizer="nv-test/Cosmos-Tokenizer-DV4x8x8")
    assert same_weights(pipe.model, local) and pipe.defaults.height == TINY_DEFAULTS["height"]
    assert loaded["text"] == root / "snapshots" / MAIN / "tokenizer" / "text_tokenizer.json"
    assert loaded["video"].parent.parent.name == "models--nv-test--Cosmos-Tokenizer-DV4x8x8"
    from lumos.tokenizers import load_video_tokenizer
    assert load_video_tokenizer(loaded["video"]).codebook_size == 64000             # the stand-in's TorchScript
    assert pipe.check("a red 3 moving left").num_frames == TINY_DEFAULTS["num_frames"]   # generating: the CLI test
    assert not no_network


def test_local_files_only_without_offline_env(cache, monkeypatch, no_network):
    root, _ = cache
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert hub.resolve(REPO, subfolder=SUB, local_files_only=True) == root / "snapshots" / MAIN / SUB
    assert LumosModel.from_pretrained(REPO, subfolder=SUB, local_files_only=True) is not None
    refused(lambda: hub.resolve("lumos-test/absent", local_files_only=True),
            "'lumos-test/absent'", "not in the Hub cache", "local_files_only=True", "HF_HOME")
    assert not no_network


def test_offline_and_not_cached_is_one_clear_error(cache, no_network, capsys, tmp_path):
    msg = refused(lambda: LumosPipeline.from_pretrained("lumos-test/absent", subfolder=SUB),
                  "'lumos-test/absent'", SUB, "not in the Hub cache", "HF_HUB_OFFLINE=1",
                  "run once with network", "hf download lumos-test/absent", "HF_HOME")
    assert str(tmp_path / "hf" / "hub") in msg                                      # the cache it looked in
    refused(lambda: hub.resolve(REPO, subfolder=SUB, revision="v3"), "revision v3", "not in the Hub cache")
    refused(lambda: hub.resolve(REPO, subfolder="3B/stage-1-image"), "'3B/stage-1-image'",
            "not in the cached snapshot", "hf download")
    refused(lambda: hub.resolve_file(f"{REPO}/tokenizer/other.json"), "tokenizer/other.json", "not in the Hub cache")
    refused(lambda: LumosPipeline.from_pretrained(REPO, subfolder=SUB, text_tokenizer="lumos-test/absent/t.json"),
            "text tokenizer 'lumos-test/absent'", "not in the Hub cache")
    assert not no_network


def test_no_network_falls_back_to_the_cache(cache, monkeypatch, no_network):
    """Online mode, but the Hub cannot be reached: what is cached loads; what is not is one clear error."""
    root, _ = cache
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    assert hub.resolve(REPO, subfolder=SUB) == root / "snapshots" / MAIN / SUB
    refused(lambda: hub.resolve("lumos-test/absent"), "'lumos-test/absent'", "not in the Hub cache",
            "cannot be reached")


def test_local_paths_and_builtin_names_come_first(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    LumosModel.from_config(ModelConfig.from_name("tiny"), seed=2).save_pretrained(Path(REPO), dtype=torch.float32)
    assert hub.resolve(REPO) == Path(REPO)                                          # the folder here wins
    assert not same_weights(LumosModel.from_pretrained(REPO), LumosModel.from_pretrained(f"{REPO}/{SUB}"))
    refused(lambda: hub.resolve(REPO, subfolder=SUB), f"{REPO}/{SUB}: not a model folder")
    assert hub.resolve("moving-digits") == hub.ASSETS / "moving-digits"
    refused(lambda: hub.resolve(REPO, revision="v2"), "has no revision")
    refused(lambda: hub.resolve(tmp_path / "nope"), "no such folder and not a built-in model")
    refused(lambda: hub.resolve("./nope"), "no such folder")
    assert hub.split_hub_spec("org/name/a/b.json") == ("org/name", "a/b.json")
    assert hub.split_hub_spec("org/name") == ("org/name", None)
    assert all(hub.split_hub_spec(s) is None for s in ("/abs/x", "./a/b", "../a/b", "a/../b", "name", "a//b", "a/b/"))


# ============================================================================================ the CLI
def test_cli_generates_from_a_repo_id(cache, tmp_path, capsys, no_network):
    root, loaded = cache
    out = tmp_path / "out" / "v.mp4"
    args = ["generate", "--model", REPO, "--subfolder", SUB, "--prompt", "a red 3 moving left", "--seed", "1",
            "--num-inference-steps", "1", "--no-progress", "--out", str(out),
            "--text-tokenizer", f"{REPO}/tokenizer/text_tokenizer.json"]
    assert main(args) == 0, capsys.readouterr().err
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["model"] == REPO and m["model_path"] == str(root / "snapshots" / MAIN / SUB) and m["frames"] == 9
    assert (m["subfolder"], m["revision"]) == (SUB, None)
    assert loaded["text"] == root / "snapshots" / MAIN / "tokenizer" / "text_tokenizer.json"
    assert main(args[:-4] + ["--out", str(out.with_name("v2.mp4")), "--revision", "v2"]) == 0
    m = json.loads(out.with_name("v2.json").read_text())
    assert m["model_path"] == str(root / "snapshots" / V2 / SUB) and (m["subfolder"], m["revision"]) == (SUB, "v2")
    capsys.readouterr()
    assert main(["generate", "--model", "lumos-test/absent", "--prompt", "x", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'lumos-test/absent'" in err[0] and "not in the Hub cache" in err[0], err
    assert not no_network
