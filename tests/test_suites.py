"""`lumos generate --suite`: the authors' benchmark prompt files (GenEval, VBench T2V / I2V) read with
the prompt field they used, generated with their samples per prompt into the layout each scorer reads
(`lumos.data.suites`). The official files are read from shared/data/prompts (skipped when absent;
never copied into the repo); the format checks use small files written here."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumos.cli import main
from lumos.data.suites import read_suite
from lumos.utils import LumosError

PROMPTS = Path(os.environ.get("LUMOS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "prompts"
FILES = {"geneval": "geneval_evaluation_metadata.jsonl", "vbench-t2v": "vbench_t2v_all_dimension_longer.json",
         "vbench-i2v": "vbench2_i2v_full_info_qwen32b_vl.json"}
FAST = ["--num-inference-steps", "1", "--guidance-scale", "1", "--batch-size", "5", "--no-progress"]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def first_frames(folder: Path, suite_file: Path, n: int) -> Path:
    """Stand-ins for VBench's crop folder: the first n entries' image_name."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for entry in json.loads(suite_file.read_text())[:n]:
        Image.fromarray(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)).save(folder / entry["image_name"])
    return folder


def test_suite_formats_prompts_and_layout(tmp_path):
    g = tmp_path / "g.jsonl"
    g.write_text(json.dumps({"tag": "single_object", "include": [{"class": "cow", "count": 1}],
                             "prompt": "a photo of a cow", "prompt_rewrite_qwen32b": "A Holstein cow grazing."}) + "\n")
    (item,) = read_suite("geneval", g, tmp_path / "out")
    assert item.prompt == "A Holstein cow grazing." and item.name == "a photo of a cow"
    assert [str(p.relative_to(tmp_path)) for p in item.outputs] == [f"out/00000/samples/{k:05d}.png" for k in range(4)]
    assert json.loads(item.files[tmp_path / "out/00000/metadata.jsonl"]) == {
        "tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"a cat, frozen in time.mp4": "A long cat.", "a dog.mp4": "A long dog."}))
    items = read_suite("vbench-t2v", t, tmp_path / "v", limit=1, samples=2)
    assert len(items) == 1 and items[0].prompt == "A long cat."
    assert [p.name for p in items[0].outputs] == ["a cat, frozen in time-0.mp4", "a cat, frozen in time-1.mp4"]
    assert items[0].outputs[0].parent.name == "videos" and items[0].manifests[0].parent.name == "manifests"
    i = tmp_path / "i.json"
    i.write_text(json.dumps([{"prompt_en": "a bus", "prompt_en_qwen32b_vl": "A red bus.", "image_name": "bus.jpg"}]))
    with pytest.raises(LumosError, match="needs --suite-images"):
        read_suite("vbench-i2v", i, tmp_path / "v")
    with pytest.raises(LumosError, match="no bus.jpg"):
        read_suite("vbench-i2v", i, tmp_path / "v", images=tmp_path)
    with pytest.raises(LumosError, match="not the vbench-t2v file"):
        read_suite("vbench-t2v", i, tmp_path / "v")
    with pytest.raises(LumosError, match="no such file.*eval/prompts/"):
        read_suite("geneval", tmp_path / "missing.jsonl", tmp_path / "v")


def test_suite_flags_are_checked(tmp_path, capsys):
    g = tmp_path / "g.jsonl"
    g.write_text("{}\n")
    for args, message in [(["--suite", "geneval", "--out", str(tmp_path / "o")], "needs --suite-file"),
                          (["--suite", "geneval", "--suite-file", str(g)], "needs --out"),
                          (["--suite", "vbench-t2v", "--suite-file", str(g), "--out", str(tmp_path / "o"),
                            "--num-frames", "1"], "scores videos"),
                          (["--suite", "geneval", "--suite-file", str(g), "--out", str(tmp_path / "o")],
                           "not the geneval file"),
                          (["--prompt", "x", "--suite-file", str(g)], "go with --suite")]:
        assert main(["generate", *args]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("suite", list(FILES))
def test_suite_generates_the_scorer_layout(suite, tmp_path, capsys):
    suite_file = PROMPTS / FILES[suite]
    if not suite_file.is_file():
        pytest.skip(f"{suite_file} not present")
    out = tmp_path / suite
    args = ["generate", "--suite", suite, "--suite-file", str(suite_file), "--out", str(out), "--limit", "3", *FAST]
    if suite != "geneval":
        args += ["--num-frames", "5"]
    if suite == "vbench-i2v":
        args += ["--suite-images", str(first_frames(tmp_path / "crop", suite_file, 3))]
    assert main(args) == 0
    files = tree(out)
    print(f"{out.name}/\n  " + "\n  ".join(files))
    if suite == "geneval":
        entries = [json.loads(line) for line in suite_file.read_text().splitlines()[:3]]
        assert files == sorted([f"{i:05d}/metadata.jsonl" for i in range(3)] +
                               [f"{i:05d}/samples/{k:05d}.{x}" for i in range(3) for k in range(4) for x in ("png", "json")])
        for i, e in enumerate(entries):
            assert json.loads((out / f"{i:05d}/metadata.jsonl").read_text()) == {
                k: v for k, v in e.items() if k != "prompt_rewrite_qwen32b"}
            m = json.loads((out / f"{i:05d}/samples/00003.json").read_text())
            assert m["prompt"] == e["prompt_rewrite_qwen32b"] and (m["seed"], m["sample_index"]) == (i, 3)
            assert np.asarray(Image.open(out / f"{i:05d}/samples/00000.png")).shape == (64, 64, 3)
    else:
        data = json.loads(suite_file.read_text())
        if suite == "vbench-t2v":
            pairs = [(k[:-4], v) for k, v in list(data.items())[:3]]
        else:
            pairs = [(d["prompt_en"], d["prompt_en_qwen32b_vl"]) for d in data[:3]]
        assert files == sorted([f"videos/{name}-{k}.mp4" for name, _ in pairs for k in range(5)] +
                               [f"manifests/{name}-{k}.json" for name, _ in pairs for k in range(5)])
        for name, prompt in pairs:
            m = json.loads((out / "manifests" / f"{name}-4.json").read_text())
            assert (m["prompt"], m["suite_prompt"], m["sample_index"]) == (prompt, name, 4)
            assert (m["image"] is not None) == (suite == "vbench-i2v")
    capsys.readouterr()
    assert main(args) == 0                                          # finished: a rerun has nothing to do
    assert "0 of " in capsys.readouterr().out and tree(out) == files
