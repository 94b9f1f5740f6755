"""The parallel step's shortcuts against the step they replace: logits only at the codes still masked,
the inverse-CDF draw, the CFG mix in one temporary, chunked head + draw.

`reference_parallel` is the step as it was: head, CFG mix, probabilities and confidences over all
N codes of the frame, codes known before the step at confidence +inf. Greedy (temperature 0,
remask_temperature 0) it draws nothing and is the old sampler exactly; sampling, it takes its
randomness in the new sampler's layout (one uniform per still-masked code, then one Gumbel per
still-masked code, in positional order) and spreads it over the N codes, so both decide alike.

The new step runs the head on [B, M, D] instead of [B, N, D]: another matmul shape, so a logit may
move by an fp32 ulp. Token equality then needs no exact ties near the top: the `sharp_model` logits
are far from uniform and these seeds give margins far above an ulp (the comparisons are exact)."""

import numpy as np
import pytest
import torch

import lumos.sampling as S
from lumos.masks import frame_causal_mask
from lumos.sampling import (
    SampleConfig, generate, guide, logits_to_probs, mask_schedule, plan_generation, predict_codes,
    random_draw, remask_temperatures, sample,
)
from seqs import sharp_model

MODEL = sharp_model()
VOCAB = MODEL.config.vocab


def prompt(n_text, seed, given=None):
    text = np.random.default_rng(seed).integers(1, 60, n_text)
    return VOCAB.build(text, given, duration=2, fps=8, complete=False)


@torch.inference_mode()
def reference_parallel(model, plan, cfg, generator=None) -> torch.Tensor:
    """The KV-cached parallel decoding with the old step (module docstring) -> codes [n, F, h, w]."""
    vocab, n, N = plan.vocab, plan.n_cond, plan.h * plan.w
    B, L = plan.tokens.shape
    reps = B // n
    rows = slice(vocab.visual_offset, vocab.visual_offset + vocab.codebook_size)
    counts = mask_schedule(N, cfg.num_inference_steps)
    temps = remask_temperatures(cfg.remask_temperature, cfg.num_inference_steps, len(plan.frame_starts),
                                cfg.reference_compat)
    ctx, P = plan.tokens.clone(), plan.prefill_len
    model.setup_cache(B, L)
    model(ctx[:, :P], pos=plan.pos.slice(0, P), mask=frame_causal_mask(plan.fid, plan.valid, q_start=0, q_end=P,
          kv_len=P), cache_pos=torch.arange(P), kv_len=P, return_hidden=True)
    out = []
    for f, s0 in enumerate(plan.frame_starts):
        e0 = s0 + plan.frame_len
        step = dict(pos=plan.pos.slice(s0, e0), mask=plan.valid[:, None, None, :e0], cache_pos=torch.arange(s0, e0),
                    kv_len=e0, return_hidden=True)
        frame = ctx[:n, s0:e0].clone()
        for s in range(cfg.num_inference_steps):
            hidden = model(frame.repeat(reps, 1), **step)
            logits = model.head(hidden[:, plan.code_idx], rows)                          # (B, N, K)
            if reps == 2:
                c, u = logits[:n], logits[n:]
                logits = u + cfg.guidance_scale * (c - u)                                 # the old formula
            probs = (torch.softmax(logits, -1) if cfg.reference_compat else
                     logits_to_probs(logits, cfg.temperature, cfg.top_k, cfg.top_p))
            ids = frame[:, plan.code_idx]
            unknown = ids == vocab.mask
            M = int(unknown[0].sum())
            if cfg.temperature == 0 and not cfg.reference_compat:
                codes = probs.argmax(-1)
            else:                                     # the new draws, spread over the still-masked codes
                u_all = torch.zeros(n, N, dtype=torch.float64)
                u_all[unknown] = random_draw((n, M), generator, dtype=torch.float64).flatten()
                codes = sample(probs, 1.0, None, u_all)
            new = torch.where(unknown, codes + vocab.visual_offset, ids)
            if counts[s]:
                log_p = probs.gather(-1, codes[..., None])[..., 0].clamp_min(1e-20).log()
                log_p = log_p.masked_fill(~unknown, float("inf"))
                if temps[f][s] > 0:
                    noise = torch.zeros(n, N)
                    noise[unknown] = S.gumbel_noise((n, M), generator).flatten()
                    log_p = log_p + temps[f][s] * noise
                order = log_p.argsort(dim=-1, stable=True)
                new = new.scatter(-1, order[:, :counts[s]], vocab.mask)
            frame[:, plan.code_idx] = new
        history = frame.clone()
        history[:, plan.hist_idx] = vocab.mask
        ctx[:, s0:e0] = history.repeat(reps, 1)
        model(ctx[:, s0:e0], **step)
        out.append((frame[:, plan.code_idx] - vocab.visual_offset).view(n, plan.h, plan.w))
    model.clear_cache()
    return torch.stack(out, 1)


def both(prompts, frames=3, h=3, w=4, seed=0, **cfg):
    """(new sampler's codes, reference codes) of the same generation, each from a generator seeded with `seed`."""
    cfg = SampleConfig(**{"num_inference_steps": 4, **cfg})
    plan = plan_generation(MODEL, prompts, frames, h, w, cfg)
    new = generate(MODEL, plan, cfg, torch.Generator().manual_seed(seed)).codes
    return new, reference_parallel(MODEL, plan, cfg, torch.Generator().manual_seed(seed))


GREEDY = dict(temperature=0.0, remask_temperature=0.0)


@pytest.mark.parametrize("cfg", [
    dict(guidance_scale=1.0, history_mask_ratio=0.0),                 # no CFG, no history masking
    dict(guidance_scale=4.0),                                         # CFG, history masking
    dict(guidance_scale=4.0, history_mask_ratio=0.3, num_inference_steps=6),
], ids=["plain", "cfg", "cfg-6steps"])
def test_greedy_tokens_identical_to_the_old_step(cfg):
    new, ref = both([prompt(7, 1), prompt(3, 2)], **GREEDY, **cfg)                # a batch of 2, left padding
    assert torch.equal(new, ref)
    assert len(set(new.flatten().tolist())) >= 3                                 # not one code everywhere


def test_greedy_image_to_video_identical_to_the_old_step():
    given = np.random.default_rng(4).integers(0, VOCAB.codebook_size, (1, 3, 4))
    new, ref = both([prompt(5, 3, given)], frames=2, guidance_scale=3.0, **GREEDY)
    assert torch.equal(new[:, 1:], ref) and torch.equal(new[:, :1], torch.from_numpy(given)[None])


@pytest.mark.parametrize("cfg", [
    dict(guidance_scale=4.0),
    dict(guidance_scale=4.0, top_k=8, temperature=0.7),
    dict(guidance_scale=1.0, top_p=0.8),
    dict(guidance_scale=4.0, reference_compat=True),                  # a plain multinomial, compounding T
], ids=["default", "top-k", "top-p", "compat"])
def test_sampled_tokens_identical_to_the_old_step_with_the_same_draws(cfg):
    """Known codes are never re-masked: leaving them out of the step changes nothing (module docstring)."""
    new, ref = both([prompt(7, 1), prompt(3, 2)], seed=3, **cfg)
    assert torch.equal(new, ref)


def test_chunked_equals_unchunked(monkeypatch):
    """Chunks of one position (and of three) draw the same codes: the uniforms come before the chunking."""
    prompts = [prompt(7, 1), prompt(3, 2)]
    gens = lambda: [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]      # one per video
    cfg = SampleConfig(num_inference_steps=4, guidance_scale=4.0)
    plan = plan_generation(MODEL, prompts, 2, 3, 4, cfg)
    whole = generate(MODEL, plan, cfg, gens()).codes
    K = VOCAB.codebook_size
    for positions in (1, 3):
        monkeypatch.setattr(S, "CHUNK_FLOATS", 2 * 2 * K * positions)          # B = 2 x 2 rows with CFG
        assert torch.equal(generate(MODEL, plan, cfg, gens()).codes, whole), positions


def test_predict_codes_chunking_and_finiteness():
    B, M, D = 4, 7, MODEL.config.dim
    hidden = torch.randn(B, M, D, generator=torch.Generator().manual_seed(0))
    cfg = SampleConfig(guidance_scale=3.0, top_k=20)
    outs = [predict_codes(MODEL, hidden, 2, cfg, torch.Generator().manual_seed(1), chunk_floats=c)
            for c in (None, 1, B * VOCAB.codebook_size * 2)]
    for codes, p, finite in outs[1:]:   # a head over fewer rows may round its last bit differently
        assert torch.equal(codes, outs[0][0]) and torch.allclose(p, outs[0][1], rtol=1e-5, atol=1e-7) and bool(finite)
    hidden[3, 5, 0] = float("nan")                                               # an uncond row's logits
    assert not bool(predict_codes(MODEL, hidden, 2, cfg, torch.Generator(), chunk_floats=1)[2])


def test_guide_matches_the_formula_and_leaves_its_input():
    logits = torch.randn(4, 9, 64, generator=torch.Generator().manual_seed(0)) * 5
    before = logits.clone()
    c, u = logits[:2], logits[2:]
    for g in (15.0, 3.0, 0.5):
        torch.testing.assert_close(guide(logits, 2, g), u + g * (c - u), rtol=1e-6, atol=1e-5)
    assert torch.equal(logits, before)
    assert guide(logits, 4, 15.0) is logits                                      # no uncond rows: untouched


# ============================================================================================ the draw
def chi_square(draws: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic over the codes of positive probability."""
    counts = torch.bincount(draws, minlength=len(probs)).double()
    want = probs.double() * len(draws)
    keep = probs > 0
    return float(((counts[keep] - want[keep]) ** 2 / want[keep]).sum())


@pytest.mark.parametrize("opts", [dict(), dict(temperature=0.6), dict(top_k=5), dict(top_p=0.7)],
                         ids=["plain", "temperature", "top-k", "top-p"])
def test_inverse_cdf_draw_has_the_distribution(opts):
    """200k draws over 16 codes, 4 of probability 0: never drawn, the rest at their frequencies (chi-square
    with at most 15 degrees of freedom: P(X > 60) < 1e-6)."""
    logits = torch.randn(16, generator=torch.Generator().manual_seed(0)) * 1.5
    logits[[2, 7, 8, 15]] = float("-inf")                                        # probability 0
    probs = logits_to_probs(logits[None], opts.get("temperature", 1.0), opts.get("top_k"), opts.get("top_p"))[0]
    draws = sample(probs.expand(200_000, 16), 1.0, torch.Generator().manual_seed(1))
    assert (probs[draws] > 0).all()
    assert chi_square(draws, probs) < 60.0


def test_draw_edges_never_leave_the_codes_of_positive_probability():
    probs = torch.tensor([[0.0, 0.3, 0.7, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    u = torch.tensor([[0.0, 1.0 - 2**-53, 1.0], [0.0, 0.5, 1.0 - 2**-53], [0.0, 0.5, 1.0 - 2**-53]], dtype=torch.float64)
    got = torch.stack([sample(probs, 1.0, None, u[:, j]) for j in range(3)], 1)
    assert got.tolist() == [[1, 2, 2], [0, 0, 0], [4, 4, 4]]                      # u -> 1 (even = 1): the last positive
    unnormalised = torch.tensor([[0.0, 2.0, 6.0]])                                # p / total, like torch.multinomial
    draws = sample(unnormalised.expand(40_000, 3), 1.0, torch.Generator().manual_seed(0))
    assert abs(float((draws == 2).double().mean()) - 0.75) < 0.01 and not (draws == 0).any()


def test_per_row_generators_draw_each_row_alone():
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(0)), -1)
    rows = sample(probs, 1.0, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    alone = [sample(probs[i:i + 1], 1.0, torch.Generator().manual_seed(s)) for i, s in enumerate((7, 8, 9))]
    assert torch.equal(rows, torch.cat(alone))
