"""Long videos: the rolling KV-cache window of `lumos.sampling` (`window_frames`, `sink_frames`,
`reindex_window`) and what the pipeline does with it.

What is exact and what is not:
- a window at least as long as the video is today's generation, token for token (the same code path);
- re-indexed cached keys equal keys computed fresh at the new positions up to the fp32 rounding of the
  RoPE angles (a fresh key at position p is itself off by ~p * 2**-24 rad): printed, bounded at 1e-5 of
  the keys' size; a key kept at its position (no re-indexing) is copied bit for bit;
- the eviction and sink bookkeeping against a brute-force reference that rebuilds the window from
  scratch for every frame: with ONE layer a cached key/value depends on its token and position only (not
  on what it attended to), so rolling and rebuilding must agree; greedy tokens compared (a 1e-6 logit
  difference could only flip an exact tie, and this model's logits are far from ties).
"""

import dataclasses

import numpy as np
import pytest
import torch

from lumos.config import ModelConfig
from lumos.model import LumosModel, apply_rope, rope_tables
from lumos.positions import Positions, add, shift
from lumos.sampling import SampleConfig, _frame_shift, generate, plan_generation
from lumos.utils import LumosError
from test_pipeline_cli import gen, tiny_pipe

H = W = 4
TEXT = [1, 2, 3, 4, 5]


def model(layers=2, seed=0):
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=layers)
    m = LumosModel.from_config(cfg, seed=seed).eval()
    with torch.no_grad():               # sharper logits than the 0.02-std init: no near-ties for greedy checks
        m.lm_head.weight.mul_(20)
    return m


def run(m, frames, prompt=None, generators=(1, 2), **settings):
    vocab = m.config.vocab
    prompt = vocab.build_t2v(TEXT, duration=2, fps=8, complete=False) if prompt is None else prompt
    s = SampleConfig(num_inference_steps=3, guidance_scale=3.0, **settings)
    plan = plan_generation(m, [prompt] * len(generators), frames, H, W, s)
    return generate(m, plan, s, [gen(g) for g in generators]).codes, plan


# ============================================================================================ exactness
@pytest.mark.parametrize("window,sinks", [(5, 0), (4, 1), (9, 3)])
def test_a_window_as_long_as_the_video_changes_nothing(window, sinks):
    m = model()
    today, plan = run(m, 6)
    rolled, rplan = run(m, 6, window_frames=window, sink_frames=sinks)
    assert not rplan.rolling and torch.equal(rolled, today)
    # image-to-video: the given frame counts as a frame of the window
    vocab = m.config.vocab
    first = np.random.default_rng(0).integers(0, vocab.codebook_size, (H, W))
    i2v = vocab.build_i2v(TEXT, first, duration=2, fps=8)
    assert torch.equal(run(m, 5, i2v, window_frames=5)[0], run(m, 5, i2v)[0])


def test_moved_keys_equal_keys_computed_at_the_new_positions():
    m = model()
    cfg, vocab = m.config, m.config.vocab
    frames = np.random.default_rng(0).integers(0, vocab.codebook_size, (6, H, W))
    seq = torch.as_tensor(vocab.build_t2v(TEXT, frames, duration=2, fps=8))[None]
    pos, lf, L = m.positions(seq), vocab.frame_length(H, W), seq.shape[1]
    f0 = L - 1 - 6 * lf                                                  # the first frame (before VIDEO_END)
    m.setup_cache(1, L)
    with torch.no_grad():
        m(seq, pos=pos, mask=m.build_mask(seq), cache_pos=torch.arange(L), kv_len=L)
    src = torch.arange(f0 + 3 * lf, f0 + 6 * lf)                         # frames 3..5 -> slots 1..3
    dst = src - 2 * lf
    back = shift(pos.slice(f0 + 3 * lf, f0 + 6 * lf), pos.slice(f0 + lf, f0 + 4 * lf))
    assert torch.equal(add(Positions(pos.text[:, src], pos.thw[:, src], pos.visual[:, src]), back).text,
                       pos.text[:, dst])
    before = [layer.self_attn.kv_cache.k.clone() for layer in m.model.layers]
    m.move_cache(src, dst, back)
    # fresh: the first layer's keys of those tokens, projected again and rotated at the new positions
    layer = m.model.layers[0]
    att = layer.self_attn
    with torch.no_grad():
        x = layer.input_layernorm(m.model.embed_tokens(seq[:, src]))
        k = att.k_norm(att.k_proj(x).view(1, len(src), -1, att.head_dim)).transpose(1, 2)
        cos, sin = rope_tables(Positions(pos.text[:, dst], pos.thw[:, dst], pos.visual[:, src]), cfg)
        fresh = apply_rope(k, cos, sin)
    moved = att.kv_cache.k[:, :, dst]
    diff, size = (moved - fresh).abs().max().item(), fresh.abs().max().item()
    print(f"re-indexed keys vs fresh: max abs diff {diff:.2e} (keys up to {size:.2f}, positions up to {L})")
    assert diff <= 1e-5 * max(1.0, size)
    # the values and every other column as they were; a move without re-indexing copies bit for bit
    assert torch.equal(att.kv_cache.k[:, :, :f0 + lf], before[0][:, :, :f0 + lf])
    zero = Positions(torch.zeros_like(back.text), torch.zeros_like(back.thw), back.visual)
    m.move_cache(dst, src, zero)
    assert torch.equal(att.kv_cache.k[:, :, src], moved)
    m.clear_cache()


@pytest.mark.parametrize("window,sinks", [(3, 0), (2, 1), (2, 2)])
def test_rolling_equals_rebuilding_the_window_from_scratch(window, sinks):
    m = model(layers=1)
    vocab = m.config.vocab
    F = 9
    rolled, plan = run(m, F, generators=(5,), temperature=0, remask_temperature=0, window_frames=window,
                       sink_frames=sinks)
    assert plan.rolling and len(plan.frame_starts) == sinks + window + 1
    done = []                                                           # [h, w] codes of the frames so far
    for f in range(F):
        kept = list(range(min(sinks, f))) + list(range(max(sinks, f - window), f))
        prompt = vocab.build(TEXT, np.stack([done[j] for j in kept]) if kept else None, duration=2, fps=8,
                             complete=False)
        new, _ = run(m, 1, prompt, generators=(5,), temperature=0, remask_temperature=0)
        done.append(new[0, -1].numpy())
        assert np.array_equal(rolled[0, f].numpy(), done[-1]), f"frame {f} differs from the rebuilt window"


def test_without_reindexing_positions_keep_growing():
    m = model()
    s = SampleConfig(window_frames=2, reindex_window=False)
    prompt = m.config.vocab.build_t2v(TEXT, duration=2, fps=8, complete=False)
    rolled = plan_generation(m, [prompt], 10, H, W, s)
    full = plan_generation(m, [prompt], 10, H, W, SampleConfig())
    lf, last = rolled.frame_len, rolled.frame_starts[-1]
    for f in (2, 5, 9):                    # slot 2 (the last), then f - 2 frames further on
        grown = add(rolled.pos.slice(last, last + lf), _frame_shift(rolled, f - 2))
        s0 = full.frame_starts[f]
        want = full.pos.slice(s0, s0 + lf)
        assert torch.equal(grown.text, want.text) and torch.equal(grown.thw, want.thw)
    codes, _ = run(m, 10, window_frames=2, reindex_window=False)
    assert codes.shape == (2, 10, H, W)


# ============================================================================================ bounded cost
def test_the_cache_holds_the_window_whatever_the_length():
    m = model()
    lens = []
    for frames in (8, 16, 32):
        _, plan = run(m, frames, generators=(1,), window_frames=3, sink_frames=1)
        lens.append(plan.tokens.shape[1])
    assert lens[0] == lens[1] == lens[2]                                # the layout (and cache) does not grow
    _, plan = run(m, 8, generators=(1,))
    assert plan.tokens.shape[1] > lens[0]


def test_a_long_given_video_keeps_the_sinks_and_the_window():
    m = model()
    vocab = m.config.vocab
    given = np.random.default_rng(1).integers(0, vocab.codebook_size, (7, H, W))
    prompt = vocab.build(TEXT, given, duration=2, fps=8, complete=False)
    codes, plan = run(m, 4, prompt, window_frames=2, sink_frames=1)
    assert codes.shape == (2, 11, H, W) and torch.equal(codes[0, :7], torch.as_tensor(given))
    # the layout holds given frames 0 (the sink), 5 and 6 (the window), then one slot to decode in
    assert int((plan.tokens[0] == vocab.frame_start).sum()) == 3 + len(plan.frame_starts)
    lf, c = plan.frame_len, plan.frame0
    for slot, j in enumerate((0, 5, 6)):                                # unmasked codes = the given ones
        layout = plan.tokens[0, c + slot * lf:c + (slot + 1) * lf][plan.code_idx]
        known = layout != vocab.mask
        assert known.any() and torch.equal(layout[known] - vocab.visual_offset,
                                           torch.as_tensor(given[j]).reshape(-1)[known])
    with pytest.raises(LumosError, match="rolling window"):
        generate(m, plan, SampleConfig(), mode="next-token")


# ============================================================================================ the pipeline
def test_pipeline_refuses_beyond_the_trained_length_without_a_window():
    pipe = tiny_pipe(trained_frames=3)
    with pytest.raises(LumosError, match=r"longer than the 3 this model was trained on.*window_frames=2"):
        pipe.check("a red 3", num_frames=21)
    pipe.check("a red 3", num_frames=9)                                 # 3 latent frames: fine
    out = pipe("a red 3", num_frames=21, window_frames=2, sink_frames=1, generator=gen(0), progress=False,
               output_type="codes").frames[0]
    assert out.shape == (6, 2, 3)
    streamed = list(pipe.stream("a red 3", num_frames=21, window_frames=2, sink_frames=1, generator=gen(0),
                                progress=False, output_type="codes"))
    assert torch.equal(torch.cat(streamed), out)
    with pytest.raises(LumosError, match="window_frames must be >= 1"):
        pipe.check("a red 3", window_frames=0)


def test_the_shipped_model_rolls_past_its_trained_length():
    from lumos.pipeline import LumosPipeline

    pipe = LumosPipeline.from_pretrained("moving-digits", device="cpu")
    assert (pipe.defaults.trained_frames, pipe.defaults.window_frames) == (5, 4)
    short = pipe("a red 3 moving left", generator=0, num_inference_steps=2, output_type="codes").frames[0]
    s, plan, _ = pipe.prepare("a red 3 moving left", None, None, 1, {"num_frames": 33})
    assert plan.rolling and plan.num_frames == 9 and len(plan.frame_starts) == 5
    # within the trained length the default window changes nothing
    with_none = pipe("a red 3 moving left", generator=0, num_inference_steps=2, output_type="codes",
                     window_frames=100).frames[0]
    assert torch.equal(short, with_none)
