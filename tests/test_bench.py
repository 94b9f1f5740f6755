"""`lumos bench`: the forward passes of each decoding mode follow the stated formulas (counted by the
sampler and, independently, by wrapping the model), and the command prints its table."""

import pytest

from lumos.cli.bench import run_bench
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
    assert by == {"parallel": F * (S + 1), "parallel-nocache": F * S, "next-token": 1 + F * h * w}
    assert all(r.forwards == r.expected and r.seconds > 0 for r in rows)
    assert Counting.calls == 2 * sum(by.values())              # each mode ran twice (warm-up + 1 timed)


def test_bench_command_prints_the_table(capsys):
    assert main(["bench", "--height", "16", "--width", "16", "--frames", "2", "--steps", "3", "--repeats", "1",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "parallel, KV cache" in out and "next-token, KV cache" in out and "parallel, no KV cache" in out
    assert "next-token / parallel (KV cache):" in out
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
