"""The compiled decoding step (`lumos.sampling.compiled_step`, `iter_parallel(compile=True)`) gives eager's
tokens and compiles only for the first video of a layout (the same frame size and number of frames; with
a rolling window, any number of frames). At one static shape (`static_shapes`: CUDA, run here on the CPU)
one graph serves every step and frame; with dynamic shapes (the CPU's way) two do: a step, and a cache
write riding with the next frame's first step.

Tokens are compared with greedy settings: compiled kernels may sum in another order (a logit moves in
its last bits), which could only flip an exact tie; the sharpened head keeps the logits far from ties.
Inductor compiles C++ on the CPU: this test needs the machine's C compiler (CI has gcc) and takes
~1 minute, most of it the one compilation."""

import numpy as np
import pytest
import torch
import torch._dynamo

from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos import sampling
from lumos.sampling import SampleConfig, expected_forwards, generate, plan_generation
from test_pipeline_cli import gen, tiny_pipe

# dynamo traces through the lru_cache of lumos.positions._freq_tables (its key is static: head_dim, theta,
# rope type, device) and says so once
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")


@pytest.mark.parametrize("static, graphs", [(True, 1), (False, 2)])
def test_compiled_step_compiles_once_and_matches_eager(static, graphs, monkeypatch):
    monkeypatch.setattr(sampling, "static_shapes", lambda device: static)
    m = LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20)
    vocab = m.config.vocab
    s = SampleConfig(num_inference_steps=3, guidance_scale=3.0, temperature=0, remask_temperature=0)

    def run(text, frames, compile, **kw):
        prompt = vocab.build_t2v(text, duration=2, fps=8, complete=False)
        plan = plan_generation(m, [prompt, prompt], frames, 4, 4, SampleConfig(**{**vars(s), **kw}))
        out = generate(m, plan, plan_cfg(s, kw), [gen(1), gen(2)], compile=compile)
        static_passes = expected_forwards("compiled", frames, s.num_inference_steps, 16, len(plan.frame_starts),
                                          static=True)
        assert (out.forwards == static_passes) == (compile and static)    # static: every write a pass of its own
        return out.codes

    def plan_cfg(cfg, kw):
        return SampleConfig(**{**vars(cfg), **kw})

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = run([1, 2, 3], 4, False)
    compiled = run([1, 2, 3], 4, True)
    assert torch.equal(compiled, eager)
    found = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert found == graphs, f"{found} graphs for one frame shape, want {graphs}"
    # another prompt of the same layout: no recompilation at all
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = run([4, 5, 6], 4, True)
    assert torch.equal(again, run([4, 5, 6], 4, False))
    # a rolling window fixes the layout whatever the video's length: one graph for all lengths
    rolled = run([4, 5, 6], 9, True, window_frames=2, sink_frames=1)
    assert torch.equal(rolled, run([4, 5, 6], 9, False, window_frames=2, sink_frames=1))
    with torch._dynamo.config.patch(error_on_recompile=True):
        longer = run([7, 8, 9], 14, True, window_frames=2, sink_frames=1)
    assert torch.equal(longer, run([7, 8, 9], 14, False, window_frames=2, sink_frames=1))


def test_pipeline_enable_compile():
    pipe = tiny_pipe()
    eager = pipe("a red 3", generator=gen(0), progress=False, temperature=0, remask_temperature=0,
                 output_type="codes").frames[0]
    pipe.enable_compile()
    compiled = pipe("a red 3", generator=gen(0), progress=False, temperature=0, remask_temperature=0,
                    output_type="codes").frames[0]
    assert np.array_equal(compiled.numpy(), eager.numpy())


def test_decoding_runs_without_autograd():
    """Every decoding step runs under inference mode: with autograd on, each pass would keep its graph
    alive through the in-place KV cache, and memory would grow frame after frame."""
    m = LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).eval()
    prompt = m.config.vocab.build_t2v([1, 2], duration=2, fps=8, complete=False)
    s = SampleConfig(num_inference_steps=2)
    seen = []
    for mode in ("parallel", "next-token"):
        plan = plan_generation(m, [prompt], 2, 4, 4, s)
        generate(m, plan, s, gen(0), mode=mode, callback=lambda f, st, c: seen.append(torch.is_inference_mode_enabled()))
    assert seen and all(seen)
