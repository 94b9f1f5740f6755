"""`lumos generate` at scale: a prompts file batched into pipeline calls (`--batch-size`), shared by
processes (torchrun's RANK / WORLD_SIZE, or --rank / --world-size: output i goes to rank i % world
size) with each output written exactly once, and a rerun that skips the finished outputs (a killed
run resumes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lumos.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--num-frames", "5", "--num-inference-steps", "1", "--no-progress"]
PROMPTS = ["a red 3 moving left", "a blue 7 moving up", "a green 1", "a white 5 moving right", "a red 0"]


def prompts_file(tmp_path, lines) -> Path:
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return f


def manifest(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_torchrun_two_ranks_write_each_output_once(tmp_path):
    f = prompts_file(tmp_path, [{"prompt": p} for p in PROMPTS])
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lumos.cli", "generate", "--prompts-file", str(f), "--out", str(out), "--seed", "0",
           "--batch-size", "2", *FAST]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wrote = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(wrote) == sorted(str(out / f"{i:04d}.mp4") for i in range(5))       # each exactly once
    assert "rank 0 of 2: 3 of 3 outputs" in r.stdout and "rank 1 of 2: 2 of 2 outputs" in r.stdout
    for i in range(5):
        m = manifest(out / f"{i:04d}.mp4")
        assert (m["rank"], m["world_size"], m["seed"], m["prompt"]) == (i % 2, 2, i, PROMPTS[i])


def test_rerun_skips_finished_outputs_and_redoes_unfinished(tmp_path, capsys):
    f = prompts_file(tmp_path, [{"prompt": p} for p in PROMPTS[:4]])
    out = tmp_path / "out"
    args = ["generate", "--prompts-file", str(f), "--out", str(out), "--seed", "3", *FAST]
    assert main(args + ["--limit", "2"]) == 0                        # a run that stopped after 2 outputs
    first = {i: (out / f"{i:04d}.mp4").stat().st_mtime_ns for i in range(2)}
    capsys.readouterr()
    assert main(args + ["--rank", "1", "--world-size", "2"]) == 0    # rank 1: outputs 1 and 3; 1 is done
    text = capsys.readouterr().out
    assert "rank 1 of 2: 1 of 2 outputs to generate (1 already done)" in text
    assert not (out / "0002.mp4").exists() and (out / "0003.mp4").exists()
    assert manifest(out / "0003.mp4")["seed"] == 6
    # a killed run: an output without its manifest, a manifest cut short -> both generated again
    (out / "0000.json").unlink()
    (out / "0003.json").write_text('{"output": ')
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 of 4 outputs to generate (1 already done)" in text
    assert [line.split()[1] for line in text.splitlines() if line.startswith("wrote ")] == [
        str(out / f"{i:04d}.mp4") for i in (0, 2, 3)]
    assert (out / "0001.mp4").stat().st_mtime_ns == first[1]          # finished: not touched
    assert (out / "0000.mp4").stat().st_mtime_ns != first[0]
    assert all(manifest(out / f"{i:04d}.mp4")["world_size"] == 1 for i in (0, 2, 3))
    assert main(args) == 0 and "0 of 4 outputs to generate (4 already done)" in capsys.readouterr().out


def test_batches_group_inputs_and_match_single_calls(tmp_path):
    """Jobs with and without an image in one file, batched by kind; each video comes from its own seed,
    so a batch of 3 gives the pixels of 3 single calls (images: lossless PNG)."""
    img = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(img)
    lines = [{"prompt": "a red 3"}, {"prompt": "a blue 7", "image": "first.png"}, {"prompt": "a green 1"},
             {"prompt": "a white 5"}, {"prompt": "a red 0 moving up", "image": "first.png"}]
    f = prompts_file(tmp_path, lines)
    common = ["generate", "--prompts-file", str(f), "--seed", "0", *FAST]
    assert main(common + ["--out", str(tmp_path / "b3"), "--batch-size", "3"]) == 0
    m = [manifest(tmp_path / "b3" / f"{i:04d}.mp4") for i in range(5)]
    assert [x["batch_videos"] for x in m] == [3, 2, 3, 3, 2]         # t2v: 0, 2, 3; i2v: 1, 4
    assert [x["settings"]["task"] for x in m] == ["t2v", "i2v", "t2v", "t2v", "i2v"]
    t2i = prompts_file(tmp_path, [{"prompt": p} for p in PROMPTS[:3]])
    still = ["generate", "--prompts-file", str(t2i), "--seed", "0", "--num-frames", "1",
             "--num-inference-steps", "2", "--no-progress"]
    assert main(still + ["--out", str(tmp_path / "s3"), "--batch-size", "3"]) == 0
    assert main(still + ["--out", str(tmp_path / "s1")]) == 0
    for i in range(3):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{i:04d}.png")) for d in ("s3", "s1"))
        assert np.array_equal(a, b)


def test_bad_scale_flags_are_refused(tmp_path, capsys):
    f = prompts_file(tmp_path, [{"prompt": "a red 3"}])
    base = ["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o")]
    for extra, message in [(["--rank", "2", "--world-size", "2"], "need 0 <= rank < world size"),
                           (["--batch-size", "0"], "--batch-size must be >= 1"),
                           (["--limit", "0"], "--limit must be >= 1"),
                           (["--threads", "0"], "--threads must be >= 1")]:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
