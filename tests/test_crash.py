"""Crashes at the worst moments: SIGKILL of `python -m lumos.train` in the middle of a checkpoint save
and in the middle of pruning an old checkpoint, then `--resume` to the end (no leftover folder, no
partial checkpoint, the losses of an uninterrupted run bit for bit); SIGKILL of the main process of
`lumos tokenize --workers 2`, or SIGTERM to its whole process group (its workers die with it and
write nothing after it); `lumos.utils.process_map`'s results, errors and a killed task.

The moments are found by polling the file system (every millisecond) for the names the code uses
while it works: a save's temporary `.step-NNNNNN.tmp-*` folder, a pruned checkpoint's
`.step-NNNNNN.deleting-*` name. Pruning a checkpoint of the tiny config takes under a millisecond, so
test (b) plants 3,000 small files in the checkpoint that will be pruned, to make it last ~0.1 s."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lumos.train.checkpoints import list_checkpoints, step_folders
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from procs import alive, spawned
from test_pretokenize import dataset  # noqa: F401 - the module-scoped fixture of 20 media rows
from test_train import ROOT, TINY, losses

SETS = {"max_steps": 12, "batch_size": 4, "warmup_steps": 3, "tensorboard": "false"}


def env() -> dict:
    """The subprocesses' environment: this package, and the thread count of this process (bit for bit
    needs the same kernels and thread count as the in-process reference run)."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start_train(out: Path, *extra: str, **sets) -> subprocess.Popen:
    """`python -m lumos.train configs/tiny.toml --set ...` (one process, CPU); stderr to OUT.stderr."""
    args = [a for k, v in {**SETS, **sets, "out_dir": f'"{out}"'}.items() for a in ("--set", f"{k}={v}")]
    with open(out.parent / f"{out.name}.stderr", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "lumos.train", str(TINY), *args, *extra], cwd=ROOT,
                                env=env(), stdout=subprocess.DEVNULL, stderr=log)


def config(out: Path, **sets) -> TrainConfig:
    return TrainConfig.from_toml(TINY, [f"{k}={v}" for k, v in {**SETS, **sets, "out_dir": f'"{out}"'}.items()])


def reference(tmp_path: Path, **sets) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train(config(tmp_path / "ref", **sets))}


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 60) -> None:
    """SIGKILL `proc` as soon as ready() holds (polled every millisecond)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def finish(out: Path, **sets) -> None:
    """`--resume` to the end (in this process: the same thread count and kernels as `reference`)."""
    assert train(config(out, **sets), resume=True)


def dot_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def assert_only_complete_checkpoints(root: Path) -> None:
    assert dot_names(root) == []                                                  # no leftover of a killed job
    assert [s for s, _ in step_folders(root)] == [s for s, _ in list_checkpoints(root)]   # nothing partial


def test_sigkill_during_a_checkpoint_save_then_resume(tmp_path):
    """(a) Killed while a save writes its temporary folder (after step 2's checkpoint is complete)."""
    t0 = time.time()
    want = reference(tmp_path, checkpoint_every=2, keep_checkpoints=2)
    out = tmp_path / "run"
    root = out / "checkpoints"

    def saving():   # a later save has written its weights into the temporary folder, not yet renamed
        return list_checkpoints(root) and any(p.name.startswith(".step-") and (p / "model").exists()
                                              for p in root.iterdir())

    kill_when(start_train(out, checkpoint_every=2, keep_checkpoints=2), saving, "save in progress")
    left = [n for n in dot_names(root) if ".tmp-" in n]
    assert left, dot_names(root)
    finish(out, checkpoint_every=2, keep_checkpoints=2)
    assert_only_complete_checkpoints(root)
    assert [s for s, _ in list_checkpoints(root)] == [10, 12]
    assert losses(out) == want                                   # every step, bit for bit
    print(f"killed during the save of {left}; test took {time.time() - t0:.1f} s")


def test_sigkill_while_pruning_then_resume(tmp_path):
    """(b) Killed while step-000004 is being deleted (pruned when step-000008 is saved, keep = 1)."""
    t0 = time.time()
    want = reference(tmp_path, checkpoint_every=4, keep_checkpoints=1)
    out = tmp_path / "run"
    root = out / "checkpoints"
    kill_when(start_train(out, checkpoint_every=4, keep_checkpoints=1), lambda: (root / "step-000004").is_dir(),
              "step-000004")
    assert [s for s, _ in list_checkpoints(root)] == [4]
    junk = root / "step-000004" / "junk"   # makes the rmtree of step-000004 last long enough to be caught
    junk.mkdir()
    for i in range(3000):
        (junk / f"{i:05d}").touch()
    kill_when(start_train(out, "--resume", checkpoint_every=4, keep_checkpoints=1),
              lambda: any(".deleting-" in n for n in os.listdir(root)), "pruning")
    left = dot_names(root)
    assert left and all(n.startswith(".step-000004.deleting-") for n in left), left
    assert not (root / "step-000004").exists()               # never a half-deleted folder under a listed name
    assert [s for s, _ in list_checkpoints(root)] == [8]
    finish(out, checkpoint_every=4, keep_checkpoints=1)
    assert_only_complete_checkpoints(root)
    assert [s for s, _ in list_checkpoints(root)] == [12]
    assert losses(out) == want
    print(f"killed while deleting {left}; test took {time.time() - t0:.1f} s")


SLOW_TOKENIZE = """
import os, sys, time
from lumos.data.pretokenize import _Context
from lumos.tokenizers.cosmos import CosmosTokenizer

slow, shard = CosmosTokenizer.encode, _Context.shard


def encode(self, video):   # module level: runs in the spawned workers too (they import this file)
    time.sleep(0.25)
    return slow(self, video)


def gated_shard(self, k, rows, *args, **kwargs):   # the last shard waits for a file the test never makes
    if k == 3:
        deadline = time.time() + 120
        while not os.path.exists(os.environ["TOKENIZE_GATE"]) and time.time() < deadline:
            time.sleep(0.05)
    return shard(self, k, rows, *args, **kwargs)


CosmosTokenizer.encode, _Context.shard = encode, gated_shard

if __name__ == "__main__":
    from lumos.cli import main

    d, out = sys.argv[1], sys.argv[2]
    sys.exit(main(["tokenize", "--input", d + "/list.csv", "--out", out, "--tokenizer", d + "/cosmos",
                   "--text-tokenizer", d + "/text.json", "--fps", "4", "--duration", "1", "--size", "64",
                   "--shard-size", "6", "--device", "cpu", "--no-progress", "--workers", "2"]))
"""


@pytest.mark.parametrize("how", ["SIGKILL", "group SIGTERM"])
def test_killed_tokenize_main_process_ends_its_workers(dataset, tmp_path, how):  # noqa: F811 - the fixture
    """(c) The main process is killed (SIGKILL) while both workers are inside a shard, or its whole
    process group is sent SIGTERM (`kill -TERM -PGID`, a batch system's cancel) while the last shard is
    made (held back until the signal) and the other worker has nothing left to do: the main process
    exits (a multiprocessing.Pool hung here for good: its idle worker, killed by the group signal, kept
    the pool's queue lock), 2 s later no worker is alive, no shard appears after the exit (a shard takes
    1.25 s here), and a rerun finishes the job."""
    from lumos.data.pretokenize import pretokenize

    t0 = time.time()
    script = tmp_path / "slow_tokenize.py"
    script.write_text(SLOW_TOKENIZE)
    out = tmp_path / "tok"
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as f:
        main = subprocess.Popen([sys.executable, str(script), str(dataset), str(out)],
                                env={**env(), "TOKENIZE_GATE": str(tmp_path / "never")},
                                stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        # SIGKILL: once the first shard is written (both workers inside one). Group SIGTERM: once shards 0-2
        # are (shard 3 waits at its gate; the other worker has no task: where a Pool's worker waits holding
        # its queue's lock).
        deadline, wanted = time.time() + 60, 1 if how == "SIGKILL" else 3
        while len(list(out.glob("shard-*"))) < wanted:
            assert main.poll() is None, err.read_text()[-3000:]
            assert time.time() < deadline, f"not {wanted} shards within 60 s"
            time.sleep(0.01)
        workers = spawned(main.pid)
        if how == "SIGKILL":
            main.send_signal(signal.SIGKILL)
            assert main.wait(10) == -signal.SIGKILL
        else:
            os.killpg(main.pid, signal.SIGTERM)
            try:
                assert main.wait(30) == 130, err.read_text()[-3000:]      # "lumos: interrupted"
            except subprocess.TimeoutExpired:
                pytest.fail("the main process did not exit within 30 s of SIGTERM to its group")
        shards = sorted(p.name for p in out.glob("shard-*"))
        time.sleep(2)
        assert len(workers) >= (2 if how == "SIGKILL" else 1) and not [w for w in workers if alive(w)], workers
        time.sleep(1)                                              # past the end of the shards in progress
        assert sorted(p.name for p in out.glob("shard-*")) == shards
        assert "Traceback" not in err.read_text(), err.read_text()
    finally:
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGKILL)
            main.wait()
    assert len(shards) < 4
    report = pretokenize(input=str(dataset / "list.csv"), out=str(out), tokenizer=str(dataset / "cosmos"),
                         text_tokenizer=str(dataset / "text.json"), fps=4, duration=1, size=64, shard_size=6,
                         progress=False, device="cpu")
    assert report["records"] == 17 and not dot_names(out)         # the staged leftovers are gone
    print(f"killed with {shards} done; test took {time.time() - t0:.1f} s")


# ---------------------------------------------------------------------- lumos.utils.process_map
def _nap_or_fail(task):
    """A process_map task: sleep `task` seconds and return it doubled; a negative task raises."""
    if task < 0:
        raise ValueError(f"bad task {task}")
    time.sleep(task)
    return 2 * task


_INITS = 0


def _count_init(fail: bool = False) -> None:
    global _INITS
    if fail:
        raise OSError("no tokenizer here")
    _INITS += 1


def _pid_and_inits(task):
    return os.getpid(), _INITS


def test_process_map_reuse_runs_the_initializer_once_per_process():
    """One process per task by default (each initialized once); `reuse=True`: at most `workers`
    processes, each initialized once and given task after task (tasks of 1 MB too); an initializer's
    error is raised."""
    from lumos.utils import process_map
    fresh = [r for _, r in process_map(_pid_and_inits, range(4), 2, initializer=_count_init)]
    assert len({pid for pid, _ in fresh}) == 4 and {n for _, n in fresh} == {1}
    reused = [r for _, r in process_map(_pid_and_inits, range(6), 2, initializer=_count_init, reuse=True)]
    assert len(reused) == 6 and len({pid for pid, _ in reused}) <= 2 and {n for _, n in reused} == {1}
    big = [bytes(1 << 20)] * 3                       # tasks larger than a pipe's buffer
    assert sorted(r for _, r in process_map(len, big, 2, initializer=_count_init, reuse=True)) == [1 << 20] * 3
    with pytest.raises(OSError, match="no tokenizer here"):
        list(process_map(_pid_and_inits, range(3), 2, initializer=_count_init, initargs=(True,), reuse=True))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc (Linux)")
def test_process_map_results_errors_and_a_killed_process():
    """Every task's result comes back (in completion order); an exception of a task is raised as it was;
    a process killed mid-task (SIGKILL: what the OOM killer sends) is a LumosError naming its task, not a
    wait forever, and the other task still running is terminated on the way out."""
    from lumos.utils import LumosError, process_map
    assert sorted(process_map(_nap_or_fail, [0.2, 0, 0.1], 2)) == [(0, 0), (0.1, 0.2), (0.2, 0.4)]
    with pytest.raises(ValueError, match="bad task -1"):
        list(process_map(_nap_or_fail, [0, -1], 1))
    before = set(spawned(os.getpid()))          # spawned by earlier tests of this process, if any
    runs = process_map(_nap_or_fail, [30, 60], 2, describe=lambda t: f"the {t} s nap")
    started = time.monotonic()
    with pytest.raises(LumosError, match=r"the 30 s nap: its process died \(signal 9\)"):
        import threading
        me = os.getpid()

        def kill_the_first():           # the child that runs task 30, once it is up
            while time.monotonic() - started < 20:
                kids = [k for k in spawned(me) if k not in before]
                if len(kids) >= 2:
                    time.sleep(0.5)
                    os.kill(kids[0], signal.SIGKILL)
                    return
                time.sleep(0.05)
        threading.Thread(target=kill_the_first, daemon=True).start()
        list(runs)
    deadline = time.monotonic() + 5
    while set(spawned(os.getpid())) - before:   # the 60 s nap's process is gone too
        assert time.monotonic() < deadline, "process_map left a process running"
        time.sleep(0.05)
