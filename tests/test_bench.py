"""`lumos bench`: the forward passes of each decoding mode follow the stated formulas (counted by the
sampler and, independently, by wrapping the model), and the command prints its table."""

import pytest

import torch

from lumos.cli.bench import count_flops, formula, run_bench
from lumos.cli import main
from lumos.config import ModelConfig
from lumos.model import LumosModel



class Counting(LumosModel):
    """The tiny model, counting its forward calls."""
    calls = 0

    def forward(self, *args, **kwargs):
        Counting.calls += 1
        return super().forward(*args, **kwargs)


@pytest.mark.parametrize("guidance", [15.0, 1.0])
def test_forward_counts_match_the_formulas(guidance):
    model = Counting.from_config(ModelConfig.from_name("tiny"), seed=0).eval()
    F, S, h, w = 3, 4, 2, 4
    Counting.calls = 0
    rows = run_bench(model, h, w, F, S, guidance_scale=guidance, repeats=1, text_len=5)
    by = {r.mode: r.forwards for r in rows}
    assert by == {"parallel": 1 + F * S, "parallel-nocache": F * S, "next-token": 1 + F * h * w}
    assert all(r.forwards == r.expected and r.seconds > 0 for r in rows)
    assert Counting.calls == 2 * sum(by.values())              # each mode ran twice (warm-up + 1 timed)


def test_the_compiled_mode_counts_the_same_passes():
    """On the CPU the compiled step has eager's passes (a write rides with the next first step); at one
    static shape (CUDA) every write is a pass of its own: F (S + 1) (`tests/test_compile.py` runs both)."""
    from lumos.model import LumosModel
    model = LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).eval()
    (row,) = run_bench(model, 2, 4, 3, 2, modes=["compiled"], guidance_scale=3.0, repeats=1, text_len=5)
    assert row.mode == "compiled" and row.forwards == row.expected == 1 + 3 * 2
    (eager,) = run_bench(model, 2, 4, 3, 2, modes=["parallel"], guidance_scale=3.0, repeats=1, text_len=5)
    assert row.flops == eager.flops > 0               # counted on an eager video when run alone (a table row)
    assert formula("compiled", torch.device("cpu")) == "1+F*S" and formula("compiled", torch.device("cuda")) == "F(S+1)"


def test_flop_count_is_the_models_arithmetic():
    """count_flops of one uncached forward of L tokens is exactly the arithmetic of the shapes: 2 per
    multiply-add of every linear layer and the head, and of attention's two products (L x L, as the
    counter sees a masked SDPA); integers, so exact. The bench rows carry it."""
    cfg = ModelConfig.from_name("tiny")
    model = LumosModel.from_config(cfg, seed=0).eval()
    L = 37
    tokens = torch.randint(0, cfg.vocab.text_vocab_size, (1, L))
    with torch.no_grad():
        got = count_flops(lambda: model(tokens))
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    attention = cfg.n_layers * 2 * (2 * cfg.n_heads * L * L * cfg.head_dim)
    assert got == 2 * L * linear + 2 * L * cfg.dim * cfg.vocab_size + attention
    rows = run_bench(model, 2, 4, 2, 2, guidance_scale=3.0, repeats=1, text_len=5)
    by = {r.mode: r.flops for r in rows}
    assert by["next-token"] < by["parallel"] < by["parallel-nocache"]      # less recomputation, less arithmetic


def test_bench_command_prints_the_table(capsys):
    assert main(["bench", "--height", "16", "--width", "16", "--frames", "2", "--steps", "3", "--repeats", "1",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "parallel, KV cache" in out and "next-token, KV cache" in out and "parallel, no KV cache" in out
    assert "next-token / parallel (KV cache):" in out
    assert "GFLOP/s" in out and "matmul peak here (1 threads, 1024^3):" in out
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_bench_table_writes_the_markdown_file(tmp_path, capsys):
    out = tmp_path / "tmp" / "perf.md"
    assert main(["bench", "--table", "--out", str(out), "--table-rows", "tiny@2x4x4:2", "--repeats", "1",
                 "--text-len", "4", "--threads", "1"]) == 0
    text = out.read_text()
    print(text)
    assert "| model | params | frame size (F x h x w) | steps |" in text and "| peak memory |" in text
    rows = [line for line in text.splitlines() if line.startswith("| tiny@2x4x4:2")]
    assert len(rows) == 3                                         # one per mode
    for label in ("parallel, KV cache", "parallel, no KV cache", "next-token, KV cache"):
        assert sum(f"| {label} |" in r for r in rows) == 1
    assert "| 5 |" in rows[0] and "| 4 |" in rows[1] and "| 33 |" in rows[2]   # 1 + F S, F S, 1 + F N
    assert "x time" in rows[2]                                   # the next-token / parallel ratio
    assert "lumos bench --table --table-rows tiny@2x4x4:2" in text        # the command that regenerates it
    assert "| GFLOP/video | GFLOP/s (% of matmul peak) |" in text and "*Matmul peak*:" in text
    assert "torch " in text and "threads: 1" in text and "ru_maxrss" in text
    assert "not run here (needs a GPU): `lumos bench --table --device cuda --dtype bfloat16" in text
    assert "not run this time" in text                           # the CPU rows that were left out
    assert not list(out.parent.glob(".perf.md.*"))               # written atomically, no temp file left


@pytest.mark.parametrize("flags, message", [
    (["--table-rows", "nonsense"], "not a row name"),
    (["--table-rows", "bench-1b@2x3x4:2"], "not a multiple of 4"),     # the config is read, nothing built
    (["--table-rows", "tiny@50x16x16:2"], "too long for the model"),
    (["--table-rows", "tiny@2x4x4:0"], "must be >= 1"),
    (["--table-threads", "0"], "--table-threads must be >= 1"),
    (["--frames", "3"], "does not apply to --table"),
    (["--preset", "tiny"], "--table-rows"),
    (["--device", "nonsense"], "not a device torch knows"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bench_table_refuses_bad_flags_before_any_work(flags, message, tmp_path, capsys, monkeypatch):
    import lumos.cli.bench as bench

    def no_work(job):
        raise AssertionError("a row ran")
    monkeypatch.setattr(bench, "run_child", no_work)
    out = tmp_path / "perf.md"
    assert main(["bench", "--table", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bench_table_on_cuda_without_a_gpu_is_refused(tmp_path, capsys, monkeypatch):
    import torch
    import lumos.cli.bench as bench
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(bench, "run_child", lambda job: pytest.fail("a row ran"))
    assert main(["bench", "--table", "--device", "cuda", "--dtype", "bfloat16", "--out", str(tmp_path / "p.md")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "--out", str(tmp_path / "p.md")]) == 2           # --out without --table
    assert "--out needs --table" in capsys.readouterr().err


def test_bench_prints_the_built_in_models_own_video_line(capsys, monkeypatch):
    """On the built-in model, `lumos bench` defaults to its pipeline.json video (17 frames = 5 latent frames at
    64x64, 6 steps, guidance 2) and says so; the sampler is stubbed here to keep the test fast."""
    import lumos.cli.bench as bench
    seen = {}

    def fake(model, h, w, frames, num_inference_steps, **kw):
        seen.update(h=h, w=w, frames=frames, steps=num_inference_steps, guidance=kw["guidance_scale"])
        return [bench.BenchRow(m, 10, 10, 0.5) for m in kw["modes"]]
    monkeypatch.setattr(bench, "run_bench", fake)
    assert main(["bench", "--threads", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert seen == {"h": 8, "w": 8, "frames": 5, "steps": 6, "guidance": 2.0}
    assert "17 frames (5 latent frames) of the built-in model: 0.500 s/video" in out
    assert "next-token / parallel (KV cache):" in out
    assert main(["bench", "--threads", "1", "--repeats", "1", "--frames", "3", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert seen["frames"] == 3 and seen["steps"] == 4 and "of the built-in model" not in out


def test_the_table_command_keeps_the_modes():
    """The regenerating command written into the table names the modes when they are not the default."""
    import argparse

    from lumos.cli.bench import add_arguments, table_command
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--table", "--modes", "parallel", "compiled", "--table-threads", "1", "2"])
    assert table_command(args, ["moving-digits"]).startswith(
        "lumos bench --table --table-rows moving-digits --modes parallel compiled --table-threads 1 2")
    assert "--modes" not in table_command(p.parse_args(["--table"]), ["moving-digits"])
