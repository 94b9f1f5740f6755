"""`lumos ablate`: every variant of a suite trained on the same data and seeds, scored, reported and plotted;
a rerun skips the finished (variant, seed) results and redoes only a missing one; bad flags are refused
up front (one line, exit code 2, nothing written)."""

import contextlib
import fcntl
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lumos.cli import main
from lumos.world.ablate import BUDGETS, MASK_VARIANTS, ROPE, ROPE_VARIANTS, VAL_FRAMES, frame_change
from procs import alive, spawned

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rope_run(tmp_path_factory):
    """`lumos ablate rope --budget tiny --seeds 1`: (out folder, what it printed)."""
    out = tmp_path_factory.mktemp("ablate") / "rope"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["ablate", "rope", "--budget", "tiny", "--seeds", "1", "--out", str(out)]) == 0
    return out, buf.getvalue()


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}


def test_rope_writes_report_and_plots_with_every_variant(rope_run):
    out, said = rope_run
    report = json.loads((out / "report.json").read_text())
    assert [v["variant"] for v in report["variants"]] == list(ROPE_VARIANTS)
    md = (out / "report.md").read_text()
    for name in ROPE_VARIANTS:
        assert f"| {name} |" in md
        assert f"{name} seed 0: val loss" in said                 # one progress line per (variant, seed)
    for row in report["variants"]:
        assert len(row["losses"][0]) == BUDGETS["tiny"].max_steps
        assert math.isfinite(row["val_loss"]["mean"]) and row["val_loss"]["mean"] > 0
        assert 0 <= row["scores"]["all_correct"]["mean"] <= 100
        # the variant really trained with its position encoding
        config = json.loads(next((out / "runs" / f"{row['variant']}-seed0" / "checkpoints").glob("*/model/config.json"))
                            .read_text())
        want = ROPE[row["variant"]]
        assert config["lumos"]["rope_type"] == want["rope_type"]
        assert config["lumos"]["rope_scale"] == want.get("rope_scale", [4, 8, 8])     # noscale: positions unscaled
    for png in ("loss_curves.png", "frame_loss.png", "metrics.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_rerun_skips_finished_and_redoes_only_a_missing_result(rope_run, capsys):
    out, _ = rope_run
    before = _mtimes(out)
    first = {n: json.loads((out / "results" / n).read_text()) for n in before}
    assert main(["ablate", "rope", "--budget", "tiny", "--seeds", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped") == len(ROPE_VARIANTS)
    assert _mtimes(out) == before
    # A killed ablation: one result never written (its run finished), another run killed before it
    # saved anything. Only those two are redone; the retrained run repeats its losses (same seed, data order).
    (out / "results" / "3d-seed0.json").unlink()
    (out / "results" / "mrope-seed0.json").unlink()
    shutil.rmtree(out / "runs" / "mrope-seed0")
    assert main(["ablate", "rope", "--budget", "tiny", "--seeds", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.count("skipped") == len(ROPE_VARIANTS) - 2
    assert "3d seed 0: val loss" in said and "mrope seed 0: val loss" in said
    after = _mtimes(out)
    for name in ("1d-seed0.json", "mmrope-seed0.json"):
        assert after[name] == before[name]
    again = json.loads((out / "results" / "mrope-seed0.json").read_text())
    assert again["losses"] == first["mrope-seed0.json"]["losses"]
    redone = json.loads((out / "results" / "3d-seed0.json").read_text())
    assert redone["losses"] == first["3d-seed0.json"]["losses"]
    # its training had finished before the "kill": its seconds are still those of its steps, not 0
    assert redone["train_s"] == first["3d-seed0.json"]["train_s"] > 0


def run_suite(suite, tmp_path, capsys):
    """`lumos ablate SUITE --budget tiny` -> (its folder, what it printed, its report.json)."""
    out = tmp_path / suite
    assert main(["ablate", suite, "--budget", "tiny", "--out", str(out)]) == 0
    return out, capsys.readouterr().out, json.loads((out / "report.json").read_text())


def test_steps_suite(tmp_path, capsys):
    out, said, report = run_suite("steps", tmp_path, capsys)
    steps = BUDGETS["tiny"].steps
    assert [v["settings"]["num_inference_steps"] for v in report["variants"]] == list(steps)
    assert all(f"steps-{n} seed 0:" in said for n in steps)
    assert all(v["scores"]["s_per_video"]["mean"] > 0 for v in report["variants"])
    for png in ("metrics.png", "scores_vs_time.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert "| steps-1 |" in (out / "report.md").read_text()


def test_train_mask_suite(tmp_path, capsys):
    """tube / random / per_frame trained alike; the validation and training loss per latent frame."""
    out, said, report = run_suite("train-mask", tmp_path, capsys)
    assert [v["variant"] for v in report["variants"]] == list(MASK_VARIANTS)
    md = (out / "report.md").read_text()
    assert "Loss per latent frame" in md
    for row in report["variants"]:
        assert f"{row['variant']} seed 0: val loss" in said and f"| {row['variant']} |" in md
        assert len(row["losses"][0]) == BUDGETS["tiny"].max_steps
        assert len(row["val_frame_loss"]) == VAL_FRAMES                     # one entry per latent frame
        assert all(x is not None and math.isfinite(x) and x > 0 for x in row["val_frame_loss"])
        assert len(row["train_frame_loss"]) == VAL_FRAMES
        # the variant really trained with its mask mode
        config = json.loads((out / "runs" / f"{row['variant']}-seed0" / "train_config.json").read_text())
        assert config["batch"]["mask_mode"] == row["variant"]
    for png in ("loss_curves.png", "frame_loss.png", "metrics.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_frame_change():
    still = np.zeros((3, 2, 2, 3), np.uint8)
    assert frame_change(still) == 0.0 and frame_change(still[:1]) == 0.0
    flash = still.copy()
    flash[1] = 255                                      # 0 -> 255 -> 0: every pixel changes by 255 twice
    assert frame_change(flash) == 255.0


def test_history_mask_suite(tmp_path, capsys):
    out, said, report = run_suite("history-mask", tmp_path, capsys)
    ratios = BUDGETS["tiny"].history_mask_ratios
    assert [v["settings"]["history_mask_ratio"] for v in report["variants"]] == list(ratios)
    assert BUDGETS["quick"].history_mask_ratios == (0.0, 0.3, 0.5, 0.7, 0.9)
    md = (out / "report.md").read_text()
    assert "frame change" in md
    for row in report["variants"]:
        assert f"{row['variant']} seed 0:" in said and f"| {row['variant']} |" in md
        assert 0 <= row["scores"]["stable"]["mean"] <= 100
        assert 0 <= row["scores"]["frame_change"]["mean"] <= 255
    for png in ("metrics.png", "history_mask.png"):
        assert (out / png).read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv, says", [
    (["nope"], "unknown suite 'nope'"),
    (["rope", "--seeds", "0"], "--seeds must be >= 1"),
    (["rope", "--budget", "huge"], "unknown budget 'huge'"),
    (["rope", "--out", "{file}"], "is a file"),
    (["steps", "--model", "{tmp}/no-such-model"], "no-such-model"),
    (["rope", "--jobs", "0"], "--jobs must be >= 1"),
    (["steps", "--jobs", "2"], "runs one variant at a time"),
])
def test_bad_flags_are_refused_up_front(argv, says, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    argv = [a.format(file=tmp_path / "a-file", tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(["ablate", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_ablation_is_refused(rope_run, capsys):
    out, _ = rope_run
    assert main(["ablate", "steps", "--budget", "tiny", "--out", str(out)]) == 2
    assert "holds another ablation" in capsys.readouterr().err


def test_jobs_train_side_by_side_and_give_what_one_process_gives(tmp_path, capsys):
    """--jobs 2: the runs go to two worker processes (output in OUT/logs); a run redone in this
    process afterwards gives the same losses (same seed and data order; float sums in another thread
    count: rtol 1e-4)."""
    out = tmp_path / "mask"
    assert main(["ablate", "train-mask", "--budget", "tiny", "--jobs", "2", "--threads", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "3 runs, 2 at a time" in said
    assert all(f"{m} seed 0: val loss" in said for m in MASK_VARIANTS)
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f"{m}-seed0.log" for m in MASK_VARIANTS)
    assert "train" in (out / "logs" / "random-seed0.log").read_text()       # the worker's progress bar
    first = json.loads((out / "results" / "random-seed0.json").read_text())
    (out / "results" / "random-seed0.json").unlink()
    shutil.rmtree(out / "runs" / "random-seed0")
    assert main(["ablate", "train-mask", "--budget", "tiny", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.count("skipped") == 2 and "random seed 0: val loss" in said
    again = json.loads((out / "results" / "random-seed0.json").read_text())
    np.testing.assert_allclose(again["losses"], first["losses"], rtol=1e-4)
    np.testing.assert_allclose(again["val_loss"], first["val_loss"], rtol=1e-4)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, "group SIGTERM"])
def test_killed_parent_leaves_no_worker_and_the_rerun_finishes(tmp_path, sig):
    """SIGKILL (or ^C) to `lumos ablate --jobs 2` mid-run, or SIGTERM to its whole process group (what
    `kill -TERM -PGID` or a batch system's cancel does): its workers stop (no orphan keeps training into
    the folder; ^C ends the others), the parent exits (it used to hang when a worker died in the group
    signal), the folder's lock is free again, and the rerun finishes every run."""
    out = tmp_path / "mask"
    argv = [sys.executable, "-m", "lumos.cli", "ablate", "train-mask", "--budget", "tiny", "--jobs", "2",
            "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240

    def started():                      # a worker has started a run
        return (out / "logs").is_dir() and any((out / "logs").iterdir())

    def two_done():                     # one run left: a worker of a pool would now sit idle
        return (out / "results").is_dir() and len(list((out / "results").iterdir())) >= 2

    while not (two_done() if sig == "group SIGTERM" else started()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = spawned(proc.pid)
    assert workers
    if sig == "group SIGTERM":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(sig)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the parent did not exit within 60 s of the signal") from None
    # 5 s: a worker left to finish its run would take ~10-25 s more (training, evaluation)
    deadline = time.monotonic() + 5
    while any(alive(w) for w in workers):
        assert time.monotonic() < deadline, "a worker outlived its parent by 5 s"
        time.sleep(0.1)
    assert not (out / "results").is_dir() or len(list((out / "results").iterdir())) < len(MASK_VARIANTS)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(f"{m}-seed0.json" for m in MASK_VARIANTS)


def test_a_folder_in_use_is_refused(tmp_path, capsys):
    """A second `lumos ablate` on a folder another one holds: one line, exit 2, nothing written."""
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                      # what a running ablation holds
        assert main(["ablate", "train-mask", "--budget", "tiny", "--out", str(out)]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert "another `lumos ablate` is running on" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []
