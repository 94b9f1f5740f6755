"""Data parallelism on CPU: 2 processes under torchrun (gloo) against one process with the same
global batch (4 samples a step, so 2 per rank).

- FSDP2 via the real entry point, `torchrun --nproc-per-node 2 -m lumos.train configs/tiny.toml`:
  10 steps whose losses match the single process within 1e-4 each, and whose checkpoint holds the
  sharded DCP state plus HF-format weights that load with `LumosModel.from_pretrained`.
- This file run as a torchrun worker (`__main__` below), in one process group:
  resuming the FSDP run from its step-5 DCP checkpoint reproduces its steps 6-10 bit for bit,
  DDP with gradient accumulation (1 sample per micro-step, 2 micro-steps per rank) matches too, and
  FSDP with bf16 mixed precision runs close to the fp32 losses.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
SETS = {"max_steps": 10, "batch_size": 4, "warmup_steps": 3, "checkpoint_every": 5, "tensorboard": False}


def sets(**kw) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in {**SETS, **kw}.items()]


def config(**kw):
    from lumos.train.config import TrainConfig

    return TrainConfig.from_toml(TINY, sets(**kw))


def losses(out_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def torchrun(args, tmp) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lumos.train.loop import train

    tmp = tmp_path_factory.mktemp("dist")
    train(config(out_dir=str(tmp / "single")))   # one thread (conftest), as the OMP_NUM_THREADS=1 workers
    torchrun(["-m", "lumos.train", str(TINY), *sum((["--set", s] for s in sets(out_dir=str(tmp / "fsdp"))), [])], tmp)
    torchrun([str(Path(__file__)), "--worker", str(tmp)], tmp)
    return tmp


def test_fsdp_matches_single_process(runs):
    a, b = losses(runs / "single"), losses(runs / "fsdp")
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"FSDP (2 ranks) vs single process: max |loss diff| over 10 steps = {diff:.2e}")
    assert len(a) == len(b) == 10 and diff < 1e-4
    state = json.loads((runs / "fsdp" / "checkpoints" / "step-000010" / "train_state.json").read_text())
    assert state["parallel"] == "fsdp" and state["world_size"] == 2


def test_fsdp_checkpoint_has_dcp_and_hf_weights(runs):
    from lumos.model import LumosModel

    ckpt = runs / "fsdp" / "checkpoints" / "step-000010"
    assert (ckpt / "dcp" / ".metadata").is_file() and len(list((ckpt / "dcp").glob("*.distcp"))) == 2
    fsdp = LumosModel.from_pretrained(ckpt / "model").state_dict()
    single = LumosModel.from_pretrained(runs / "single" / "checkpoints" / "step-000010" / "model").state_dict()
    diff = max((fsdp[k] - single[k]).abs().max().item() for k in single)
    print(f"FSDP vs single process: max |weight diff| after 10 steps = {diff:.2e}")
    assert diff < 1e-4


def test_fsdp_resume_from_dcp_is_exact(runs):
    # exact: both torchrun runs have the same layout (2 ranks x 1 thread, gloo), kernels and shapes
    assert losses(runs / "fsdp_resume") == losses(runs / "fsdp")


def test_fsdp_bf16_mixed_precision(runs):
    """MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): close to the fp32 run, not equal."""
    a, b = losses(runs / "single")[:3], losses(runs / "fsdp_bf16")
    diff = max(abs(x - y) for x, y in zip(a, b))
    assert len(b) == 3 and 0 < diff < 1e-2


def test_fsdp_checkpoint_needs_fsdp_to_resume(runs, tmp_path):
    from lumos.train.loop import train
    from lumos.utils import LumosError

    shutil.copytree(runs / "fsdp", tmp_path / "run")
    with pytest.raises(LumosError, match="written with parallel='fsdp', resuming with 'none'"):
        train(config(out_dir=str(tmp_path / "run"), max_steps=12), resume=True)


def test_ddp_with_accumulation_matches_single_process(runs):
    a, b = losses(runs / "single"), losses(runs / "ddp")
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"DDP (2 ranks x 2 micro-steps) vs single process: max |loss diff| = {diff:.2e}")
    assert len(b) == 10 and diff < 1e-4


def _worker(root: Path) -> None:
    """Runs on each of 2 ranks (see the module docstring)."""
    import torch.distributed as dist

    from lumos.train.loop import train

    dist.init_process_group("gloo")  # train() reuses it and leaves it open between the runs
    src, dst = root / "fsdp", root / "fsdp_resume"
    if dist.get_rank() == 0:
        shutil.copytree(src, dst)
        shutil.rmtree(dst / "checkpoints" / "step-000010")
    dist.barrier()
    train(config(out_dir=str(dst)), resume=True)
    train(config(out_dir=str(root / "ddp"), parallel="ddp", micro_batch_size=1))
    train(config(out_dir=str(root / "fsdp_bf16"), precision="bf16", max_steps=3))
    dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]))
