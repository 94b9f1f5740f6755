"""The sampler's pure pieces, and the decoding loops driven by a mock model with scripted logits.

The mock stands in for `LumosModel` (same calling convention, no weights): the visual logits of a
token are a fixed table indexed by the token's column relative to VIDEO_START (the same for every
row, padded or not), so every decision of the sampler is predictable. It records every forward."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lumos.model import rope_tables
from lumos.positions import rope_for
from lumos.sampling import (
    SampleConfig, check_generation, check_seed, cosine_schedule, expected_forwards, generate, gumbel_noise,
    history_mask_indices, iter_next_token, iter_parallel, logits_to_probs, mask_by_random_topk, mask_schedule,
    plan_generation, remask_temperatures, sample,
)
from lumos.utils import LumosError
from lumos.vocab import Vocab
from seqs import output_tokens



VOCAB = Vocab.compact(text_vocab_size=64, codebook_size=16, max_size=32)
K = VOCAB.codebook_size


class MockModel(torch.nn.Module):
    """Scripted logits: `table[c]` ([C, K]) for the token in video column c (cond rows) and
    `uncond_table[c]` for the uncond rows (the second half of the batch when `cfg` is on)."""

    def __init__(self, table, uncond_table=None):
        super().__init__()
        # the rope fields: the sampler builds each frame's RoPE tables (`lumos.model.rope_tables`) once
        self.config = SimpleNamespace(vocab=VOCAB, head_dim=32, rope_theta=10000.0, rope_type="mmrope")
        self.table, self.uncond_table = table, uncond_table
        self.calls, self.video_col, self.cache, self.passes = [], None, None, 0

    def positions(self, tokens, start=None):
        return rope_for(tokens, VOCAB, "mmrope", start=start)

    def setup_cache(self, batch, max_len):
        self.cache = (batch, max_len)

    def clear_cache(self):
        self.cache = None

    def move_cache(self, src, dst, delta):        # a rolling window's slide: nothing cached here to move
        pass

    def forward(self, tokens, pos=None, mask=None, cache_pos=None, kv_len=None, return_hidden=False, at=None,
                rope=None):
        if rope is not None:            # the tables the sampler built are those of the positions it passes
            for a, b in zip(rope, rope_tables(pos, self.config)):
                # 1e-6: cos/sin of the same angles, possibly in another vector lane or scalar tail of the kernel
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert return_hidden
        B, Lq = tokens.shape
        cols = torch.arange(Lq) if cache_pos is None else cache_pos
        if int(cols[0]) == 0:            # the prefill (or an uncached pass): find VIDEO_START
            self.video_col = int((tokens[0] == VOCAB.video_start).nonzero()[0])
        self.passes += 1
        if at is not None and cache_pos is not None and int(cols[0]) > 0 and mask.shape[2] > 1:
            # a frame's cache write with the next frame's first step: recorded as the two passes it stands for
            lf = Lq // 2
            for part in (slice(0, lf), slice(lf, Lq)):
                self.calls.append(SimpleNamespace(tokens=tokens[:, part].clone(), cols=cols[part].clone(),
                                                  mask=mask[:, :, part], pos=pos.slice(part.start, part.stop),
                                                  kv_len=kv_len, fused=True))
        else:
            self.calls.append(SimpleNamespace(tokens=tokens.clone(), cols=cols.clone(), mask=mask, pos=pos,
                                              kv_len=kv_len, fused=False))
        c = (cols - self.video_col).clamp(0, len(self.table) - 1)
        out = self.table[c].expand(B, Lq, K).clone()
        if self.uncond_table is not None and B % 2 == 0 and B > 1:
            out[B // 2:] = self.uncond_table[c]
        return out if at is None else out.gather(1, at[..., None].expand(-1, -1, K))    # the positions asked for

    def head(self, h, rows):
        assert rows == slice(VOCAB.visual_offset, VOCAB.visual_offset + K)
        return h


def prompt(n_text=5, seed=0, given=None):
    text = np.random.default_rng(seed).integers(1, 60, n_text)
    return VOCAB.build(text, given, duration=2, fps=8, complete=False)


def random_table(seed=0, scale=3.0, length=400):
    return scale * torch.randn(length, K, generator=torch.Generator().manual_seed(seed))


def run(model, prompts, frames=2, h=2, w=3, mode="parallel", seed=0, **cfg):
    cfg = SampleConfig(**{"num_inference_steps": 4, "guidance_scale": 1.0, **cfg})
    plan = plan_generation(model, prompts, frames, h, w, cfg)
    return plan, generate(model, plan, cfg, torch.Generator().manual_seed(seed), mode=mode)


def frame_calls(model, plan, f):
    """The step passes of generated frame f (cached path): calls whose columns start at the frame."""
    return [c for c in model.calls if int(c.cols[0]) == plan.frame_starts[f]]


# ============================================================================================ pure pieces
def test_mask_schedule_follows_the_spec_formula():
    def spec(n, S):  # written from spec §6: floor(N cos(pi/2 (s+1)/S)) clamped to [1, unknown-1], last fills
        out, unknown = [], n
        for s in range(S):
            if s == S - 1:
                out.append(0)
                continue
            unknown = max(1, min(unknown - 1, math.floor(n * math.cos(math.pi / 2 * (s + 1) / S))))
            out.append(unknown)
        return out

    for n, S in [(16, 5), (64, 16), (4, 8), (1, 3), (4032, 50), (6, 1)]:
        assert mask_schedule(n, S) == spec(n, S), (n, S)
    assert mask_schedule(4, 8) == [3, 2, 1, 1, 1, 1, 1, 0]        # the clamps at work
    assert cosine_schedule(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([1.0, 0.0], abs=1e-7)


def test_remask_temperatures_intended_and_compat():
    S = 4
    t = remask_temperatures(1.0, S, 3)
    assert t[0] == t[1] == t[2] == pytest.approx([0.75, 0.5, 0.25, 0.0])   # T0 (1 - (s+1)/S), reset per frame
    c = remask_temperatures(1.0, S, 3, compat=True)
    assert c[0] == pytest.approx([0.75, 0.375, 0.09375, 0.0])             # compounding product
    assert c[0][-1] == 0.0 and all(x == 0.0 for row in c[1:] for x in row)  # exactly 0 after the first frame


def test_history_mask_indices():
    n = 3 * 5                                                               # h (w + 1)
    idx = history_mask_indices(n, 0.7)
    k = round(0.7 * n)
    assert len(idx) == k and idx.tolist() == sorted({int(np.rint(j * n / k)) for j in range(k)})
    assert history_mask_indices(n, 0.0).size == 0                          # r = 0: nothing masked
    assert history_mask_indices(n, 0.0, compat=True).tolist() == [0]       # the reference's max(1, .)
    assert history_mask_indices(n, 1.0).tolist() == list(range(n))
    # evenly spaced: gaps differ by at most one
    gaps = np.diff(history_mask_indices(1000, 0.3))
    assert gaps.max() - gaps.min() <= 1


def test_gumbel_noise_reproducible_and_gumbel_distributed():
    a = gumbel_noise((200_000,), torch.Generator().manual_seed(3))
    b = gumbel_noise((200_000,), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.mean().item() == pytest.approx(0.5772, abs=0.01)             # Euler-Mascheroni
    assert a.var().item() == pytest.approx(math.pi ** 2 / 6, rel=0.03)


def test_logits_to_probs_temperature_top_k_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.allclose(logits_to_probs(logits, 2.0), torch.softmax(logits / 2, -1))
    assert torch.allclose(logits_to_probs(logits, 0.0), torch.softmax(logits, -1))   # argmax happens in sample
    p = logits_to_probs(logits, 1.0, top_k=2)
    assert (p[0, 2:] == 0).all() and torch.allclose(p[0, :2], torch.softmax(logits[0, :2], -1))
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    p = logits_to_probs(probs.log(), 1.0, top_p=0.7)                      # 0.5 + 0.3 reaches 0.7
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = logits_to_probs(probs.log(), 1.0, top_p=0.1)                      # the most likely is always kept
    assert torch.allclose(p, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_sample_matches_probabilities_and_argmax_at_temperature_0():
    probs = torch.tensor([0.1, 0.6, 0.3]).expand(60_000, 3)
    draws = sample(probs, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, probs[0], atol=0.01)
    assert (sample(probs, 0.0, None) == 1).all()
    again = sample(probs, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_mask_by_random_topk_exact_count_lowest_first_known_never():
    log_p = torch.tensor([[-1.0, -3.0, float("inf"), -2.0, -0.5]])
    m = mask_by_random_topk(log_p, 2, 0.0, None)
    assert m.tolist() == [[False, True, False, True, False]]
    ties = torch.zeros(1, 6)                                              # exact ties: still exactly n masked
    assert mask_by_random_topk(ties, 3, 0.0, None).sum() == 3
    g = torch.Generator().manual_seed(0)
    noisy = mask_by_random_topk(log_p.expand(500, 5), 2, 10.0, g)
    assert (noisy.sum(-1) == 2).all() and not noisy[:, 2].any()          # +inf (known) is never re-masked
    assert len({tuple(r) for r in noisy.tolist()}) > 1                    # the noise changes the choice


def test_sample_config_rejects_bad_values():
    for bad in (dict(num_inference_steps=0), dict(num_inference_steps=-3), dict(guidance_scale=-1),
                dict(temperature=-0.1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(history_mask_ratio=1.2), dict(remask_temperature=-1)):
        with pytest.raises(LumosError):
            SampleConfig(**bad)


# ============================================================================================ with the mock
def test_unmasking_schedule_counts_per_step():
    h, w, S = 4, 4, 5
    model = MockModel(random_table())
    plan, out = run(model, [prompt()], frames=2, h=h, w=w, num_inference_steps=S)
    expected = [h * w] + mask_schedule(h * w, S)[:-1]                    # masked codes fed to each step
    for f in range(2):
        calls = frame_calls(model, plan, f)
        assert len(calls) == S + (f == 0)                                # + the cache write of frame 0
        fed = [int((c.tokens[0, plan.code_idx] == VOCAB.mask).sum()) for c in calls[:S]]
        assert fed == expected
    assert (out.codes >= 0).all() and out.codes.shape == (1, 2, h, w)


def test_confidence_ordering_reveals_most_confident_first():
    h, w, S = 3, 4, 4
    table = torch.zeros(400, K)
    cols = torch.arange(400)
    table[cols, cols % K] = 0.5 + 0.25 * cols.float()                    # later columns: more confident
    model = MockModel(table)
    plan, out = run(model, [prompt()], frames=1, h=h, w=w, num_inference_steps=S, temperature=0.0,
                    remask_temperature=0.0)
    calls = frame_calls(model, plan, 0)
    known_before = torch.zeros(h * w, dtype=torch.bool)
    for s, call in enumerate(calls):
        known = call.tokens[0, plan.code_idx] != VOCAB.mask
        if s:
            new = (known & ~known_before).nonzero().flatten()
            still = (~known).nonzero().flatten()
            assert still.numel() == 0 or new.min() > still.max()          # the revealed ones were the most confident
        known_before = known
    # greedy: every code is the table's argmax at its column
    c = plan.frame_starts[0] + plan.code_idx - model.video_col
    assert out.codes[0, 0].flatten().tolist() == (c % K).tolist()


def test_seed_reproducibility_and_diversity():
    prompts = [prompt()]
    _, a = run(MockModel(random_table(scale=0.5)), prompts, seed=1)
    _, b = run(MockModel(random_table(scale=0.5)), prompts, seed=1)
    _, c = run(MockModel(random_table(scale=0.5)), prompts, seed=2)
    assert torch.equal(a.codes, b.codes) and not torch.equal(a.codes, c.codes)
    # two samples of the same prompt in one batch differ (independent noise per row)
    _, two = run(MockModel(random_table(scale=0.5)), prompts * 2, seed=1)
    assert not torch.equal(two.codes[0], two.codes[1])


def test_sampling_options_change_what_is_drawn():
    table = random_table(scale=1.0)
    ref = run(MockModel(table), [prompt()], temperature=0.0)[1].codes
    for opts in (dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-4)):
        got = run(MockModel(table), [prompt()], seed=5, **opts)[1].codes
        # each collapses to the argmax: exact, the top-2 gaps of the columns used are >= 0.011 (not ulps)
        assert torch.equal(got, ref), opts
    free = run(MockModel(table), [prompt()], seed=5)[1].codes
    assert not torch.equal(free, ref)                                     # ... which plain sampling does not
    hot = run(MockModel(table), [prompt()], seed=5, temperature=3.0)[1].codes
    assert not torch.equal(hot, free)


def test_classifier_free_guidance_wiring():
    cond, uncond = torch.full((400, K), -5.0), torch.full((400, K), -5.0)
    cond[:, 1], cond[:, 2] = 2.0, 1.5                                     # cond prefers code 1
    uncond[:, 1], uncond[:, 2] = 3.0, 0.0                                 # ... but uncond prefers it even more
    for g, want, rows in ((15.0, 2, 2), (1.0, 1, 1), (0.0, 1, 1)):
        model = MockModel(cond, uncond)
        plan, out = run(model, [prompt(n_text=7)], guidance_scale=g, temperature=0.0)
        assert (out.codes == want).all(), g                               # u + g (c - u) picks code 2 at g = 15
        assert all(c.tokens.shape[0] == rows for c in model.calls)        # no uncond rows at g = 0 or 1
    # the uncond row is the cond row from VIDEO_START on, left-padded; padding keys are masked and its
    # positions count from VIDEO_START
    model = MockModel(cond, uncond)
    plan, _ = run(model, [prompt(n_text=7)], guidance_scale=15.0)
    vs = plan.video_col
    assert vs == 9 and torch.equal(plan.tokens[1, vs:], plan.tokens[0, vs:])
    assert not plan.valid[1, :vs].any() and plan.valid[1, vs:].all() and plan.valid[0].all()
    assert plan.pos.text[1, vs] == 0 and plan.pos.text[0, vs] == vs
    prefill = model.calls[0]
    assert not prefill.mask[1, 0, vs:, :vs].any() and prefill.mask[0, 0, vs:, :vs].all()
    step = frame_calls(model, plan, 0)[0]
    assert not step.mask[1, ..., :vs].any() and step.mask[0, ..., :vs].all()


def test_a_cache_write_rides_with_the_next_frames_first_step():
    """One forward writes finished frame f and runs frame f + 1's first step: the written frame's queries
    see the cache up to its own end (not the new frame), the new frame's see both; outputs only at the
    new frame's codes. A rolling window's slide needs the write first: it then runs alone."""
    h, w, S, F = 2, 3, 3, 4
    model = MockModel(random_table())
    plan, out = run(model, [prompt()], frames=F, h=h, w=w, num_inference_steps=S)
    assert out.forwards == model.passes == 1 + F * S == expected_forwards("parallel", F, S, h * w)
    fused = [c for c in model.calls if c.fused]
    assert len(fused) == 2 * (F - 1)
    for write, step in zip(fused[::2], fused[1::2]):
        e = int(step.cols[-1]) + 1
        assert int(write.cols[-1]) + 1 == int(step.cols[0])                 # adjacent slots
        assert write.mask.shape[-1] == step.mask.shape[-1] == e == write.kv_len
        assert not write.mask[..., int(write.cols[-1]) + 1:].any()           # no peeking at the new frame
        assert write.mask[..., plan.video_col:int(write.cols[-1]) + 1].all()
        assert step.mask[..., plan.video_col:e].all()
        assert (step.tokens[:, plan.code_idx] == VOCAB.mask).all()          # a first step: all codes masked
    # a window of 1 frame (2 slots) over 4 frames: frames 2 and 3 slide, so the writes of 1 and 2 run alone
    model = MockModel(random_table())
    plan, out = run(model, [prompt()], frames=F, h=h, w=w, num_inference_steps=S, window_frames=1)
    slots = len(plan.frame_starts)
    assert slots == 2 and out.forwards == model.passes == 1 + F * S + (F - slots)
    assert out.forwards == expected_forwards("parallel", F, S, h * w, slots)
    assert sum(c.fused for c in model.calls) == 2                          # frame 0's write with frame 1


def test_history_masking_of_cache_writes():
    h, w, S = 2, 3, 3
    for ratio in (0.7, 0.0):
        model = MockModel(random_table())
        plan, out = run(model, [prompt()], frames=3, h=h, w=w, num_inference_steps=S, history_mask_ratio=ratio)
        pattern = history_mask_indices(h * (w + 1), ratio)
        assert len(model.calls) == 3 * (S + 1)    # F (S + 1) as recorded (fused passes in two)
        for f in range(2):                                                # frames 0, 1 are written; 2 is not
            write = frame_calls(model, plan, f)[S].tokens[0]
            body = write[3:-1]
            masked = (body == VOCAB.mask).nonzero().flatten().tolist()
            assert masked == pattern.tolist()
            kept = torch.ones(len(body), dtype=torch.bool)
            kept[pattern] = False
            full = torch.from_numpy(VOCAB.frame_tokens(out.codes[0, f].numpy()))
            assert torch.equal(body[kept], full[3:-1][kept])              # the rest is the generated frame
        assert len(frame_calls(model, plan, 2)) == S


@pytest.mark.parametrize("compat", [False, True])
def test_remask_temperature_used_per_step(compat, monkeypatch):
    import lumos.sampling as S
    used = []
    real = S.mask_by_random_topk
    monkeypatch.setattr(S, "mask_by_random_topk", lambda lp, n, t, g: used.append(t) or real(lp, n, t, g))
    run(MockModel(random_table()), [prompt()], frames=3, num_inference_steps=4, remask_temperature=2.0,
        reference_compat=compat)
    per_frame = [used[i:i + 3] for i in range(0, 9, 3)]          # 3 re-masking steps per frame (not the last)
    if compat:
        assert per_frame[0] == pytest.approx([1.5, 0.75, 0.1875]) and per_frame[1:] == [[0.0] * 3] * 2
    else:
        assert per_frame == [pytest.approx([1.5, 1.0, 0.5])] * 3


def test_reference_compat_ignores_temperature_and_top_k():
    table = random_table(scale=1.0)
    plain = run(MockModel(table), [prompt()], seed=3, reference_compat=True)[1].codes
    shaped = run(MockModel(table), [prompt()], seed=3, reference_compat=True, temperature=0.0, top_k=1,
                 top_p=0.1)[1].codes
    assert torch.equal(plain, shaped)
    # the same options do change the default sampler's tokens (so the check above can fail)
    assert not torch.equal(run(MockModel(table), [prompt()], seed=3)[1].codes,
                           run(MockModel(table), [prompt()], seed=3, top_k=1)[1].codes)


@pytest.mark.parametrize("compat", [False, True])
def test_image_to_video_given_frame_cached_masked_by_default_unmasked_in_compat(compat):
    h, w, S = 2, 3, 3
    first = np.random.default_rng(0).integers(0, K, (h, w))
    model = MockModel(random_table())
    plan, out = run(model, [prompt(given=first[None])], frames=2, h=h, w=w, num_inference_steps=S,
                    reference_compat=compat)
    assert torch.equal(out.codes[0, 0], torch.from_numpy(first))          # the given frame leads the output
    assert out.codes.shape == (1, 3, h, w)
    prefill = model.calls[0].tokens[0]
    s0 = plan.video_col + 3
    body = prefill[s0 + 3:s0 + plan.frame_len - 1]
    given = torch.from_numpy(VOCAB.frame_tokens(first))[3:-1]
    if compat:
        assert torch.equal(body, given)
    else:
        pattern = history_mask_indices(h * (w + 1), 0.7)
        assert (body[pattern] == VOCAB.mask).all() and (body == VOCAB.mask).sum() == len(pattern)
    assert len(model.calls) == 1 + 2 * S + 1


def test_continuation_and_text_to_image():
    h, w, S = 2, 2, 3
    given = np.random.default_rng(1).integers(0, K, (2, h, w))
    model = MockModel(random_table())
    plan, out = run(model, [prompt(given=given)], frames=1, h=h, w=w, num_inference_steps=S)
    assert torch.equal(out.codes[0, :2], torch.from_numpy(given)) and out.codes.shape == (1, 3, h, w)
    assert plan.prefill_len == plan.video_col + 3 + 2 * plan.frame_len
    assert len(model.calls) == 1 + S                                      # one frame: no cache write
    t2i = VOCAB.build_t2i(np.arange(1, 6), complete=False)
    model = MockModel(random_table())
    plan, out = run(model, [t2i], frames=1, h=h, w=w, num_inference_steps=S)
    seq = output_tokens(plan, out.codes)[0].numpy()
    parsed = VOCAB.parse_video(seq)
    assert parsed.complete and (parsed.duration, parsed.fps) == (1, 1)
    assert np.array_equal(parsed.frames, out.codes[0].numpy())


def test_next_token_mode_raster_order_and_pass_count():
    h, w, F = 2, 3, 2
    table = random_table()
    model = MockModel(table)
    plan, out = run(model, [prompt()], frames=F, h=h, w=w, mode="next-token", temperature=0.0, guidance_scale=15.0)
    assert out.forwards == len(model.calls) == 1 + F * h * w
    steps = model.calls[1:]
    assert [c.tokens.shape[1] for c in steps[:h * w + 1]] == [4, 2, 2, 3, 2, 2, 7]
    codes_cols = [plan.frame_starts[f] + int(o) for f in range(F) for o in plan.code_idx]
    for j, c in enumerate(steps):
        assert int(c.cols[-1]) == codes_cols[j]                           # raster order
        assert int((c.tokens == VOCAB.mask).sum()) == c.tokens.shape[0]  # one MASK per row: the last token
        assert (c.tokens[:, -1] == VOCAB.mask).all()
        assert (c.mask[..., :, int(c.cols[-1]) + 1:] == 0).all()          # causal: no key after the query
        if j:
            assert (c.tokens[:, 0] - VOCAB.visual_offset == out.codes[0].flatten()[j - 1]).all()  # the last sample
    # greedy with guidance: the argmax of u + 15 (c - u), here c = u, i.e. of the table (exact: u + 15 * 0
    # is u, and softmax keeps the order, the top-2 gaps of the columns used being >= 0.034)
    c = torch.tensor(codes_cols) - model.video_col
    assert out.codes[0].flatten().tolist() == table[c].argmax(-1).tolist()


def test_batch_of_prompts_with_different_text_lengths_equals_each_alone():
    table = random_table()
    prompts = [prompt(n_text=3, seed=1), prompt(n_text=11, seed=2), prompt(n_text=6, seed=3)]
    for mode in ("parallel", "parallel-nocache", "next-token"):
        _, both = run(MockModel(table), prompts, mode=mode, temperature=0.0, remask_temperature=0.0,
                      guidance_scale=3.0)
        for i, p in enumerate(prompts):
            _, alone = run(MockModel(table), [p], mode=mode, temperature=0.0, remask_temperature=0.0,
                           guidance_scale=3.0)
            assert torch.equal(both.codes[i], alone.codes[0]), (mode, i)


def test_streaming_yields_each_frame_as_it_finishes():
    model = MockModel(random_table())
    cfg = SampleConfig(num_inference_steps=3, guidance_scale=1.0)
    plan = plan_generation(model, [prompt()], 3, 2, 2, cfg)
    frames = iter_parallel(model, plan, cfg, torch.Generator().manual_seed(0))
    first = next(frames)
    assert first.shape == (1, 2, 2)
    assert len(model.calls) == 1 + 3      # prefill, 3 steps; the cache write goes with frame 2's first step
    rest = list(frames)
    assert len(rest) == 2 and model.cache is None                         # the cache is released at the end
    again = generate(MockModel(random_table()), plan, cfg, torch.Generator().manual_seed(0)).codes
    assert torch.equal(torch.stack([first] + rest, 1), again)


def test_bad_prompts_are_refused():
    model = MockModel(random_table())
    cfg = SampleConfig(num_inference_steps=2)
    with pytest.raises(LumosError, match="open"):
        plan_generation(model, [VOCAB.build([1, 2], None, duration=1, fps=1, complete=True)], 1, 2, 2, cfg)
    with pytest.raises(LumosError, match="same number of given frames"):
        plan_generation(model, [prompt(), prompt(given=np.zeros((1, 2, 2), np.int64))], 1, 2, 2, cfg)
    with pytest.raises(LumosError, match="nothing to generate"):
        plan_generation(model, [prompt()], 0, 2, 2, cfg)


@pytest.mark.parametrize("mode", ["parallel", "parallel-nocache", "next-token"])
def test_non_finite_logits_stop_at_the_end_of_their_frame(mode):
    # frame 0 (columns 3..14 after VIDEO_START for 2x3 frames) is fine; frame 1 has a NaN logit
    table = random_table()
    lf = VOCAB.frame_length(2, 3)
    table[VOCAB.VIDEO_HEADER + lf + 5, 7] = float("nan")
    model = MockModel(table)
    cfg = SampleConfig(num_inference_steps=3, guidance_scale=1.0)
    plan = plan_generation(model, [prompt()], 3, 2, 3, cfg)
    frames = (iter_next_token(model, plan, cfg, torch.Generator().manual_seed(0)) if mode == "next-token" else
              iter_parallel(model, plan, cfg, torch.Generator().manual_seed(0), use_cache=mode == "parallel"))
    assert next(frames).shape == (1, 2, 3)                               # frame 0 comes out
    with pytest.raises(LumosError, match=r"logits are not finite \(NaN or inf\) in latent frame 2/3"):
        next(frames)
    assert model.cache is None                                           # the cache is released


def test_layout_checked_against_the_model_before_any_work():
    model = MockModel(random_table())
    model.config = SimpleNamespace(**vars(model.config), max_seq_len=40)
    cfg = SampleConfig(num_inference_steps=2)
    p = prompt()                                                         # BOS, 5 text, SEP, 3 header = 10
    lf = VOCAB.frame_length(2, 3)                                        # 12
    assert check_generation(model.config, cfg, len(p), 2, 2, 3) == len(p) + 2 * lf == 34
    plan_generation(model, [p], 2, 2, 3, cfg)
    with pytest.raises(LumosError, match="10 prompt tokens \\+ 3 latent frames of 12 tokens = 46 positions, the "
                                         "model has 40; ask for fewer frames, a smaller size or a shorter prompt"):
        plan_generation(model, [p], 3, 2, 3, cfg)
    with pytest.raises(LumosError, match=r"top_k 17 is larger than the codebook \(16 codes\)"):
        plan_generation(model, [p], 1, 2, 3, SampleConfig(top_k=17))
    with pytest.raises(LumosError, match="does not fit the vocabulary"):
        plan_generation(model, [p], 10**12, 33, 3, cfg)                   # refused before 10**12 frames are laid out
    assert SampleConfig(top_k=16).top_k == 16


def test_finite_numbers_and_seeds():
    for bad in (dict(guidance_scale=math.inf), dict(temperature=math.nan), dict(remask_temperature=math.inf),
                dict(top_p=math.nan), dict(history_mask_ratio=math.nan), dict(num_inference_steps=1001),
                dict(temperature=1e-9)):
        with pytest.raises(LumosError):
            SampleConfig(**bad)
    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1 and check_seed(np.int64(5)) == 5
    for bad in (-1, 2**63, 1.0, True, "3", None):
        with pytest.raises(LumosError, match=r"must be an integer in \[0, 2\*\*63\)"):
            check_seed(bad, "--seed")
