"""Decoding a tiny random `LumosModel`: the KV-cached sampler against full recomputation, batched
classifier-free guidance against two separate passes, and the history masking they share.

Two ways of computing the logits (KV cache or not, one batched CFG pass or two) run matmuls and
attention of other shapes, so their logits agree to a few fp32 ulps, not bit for bit, and a sampled
token downstream of them could flip on another CPU. So each comparison replays: the second run
records its own logits but hands the sampler the first run's, step for step. Both runs then take the
same decisions and see the same context at every step: their logits are compared with a tolerance,
and their tokens (the same float ops on the same inputs from there on) exactly."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lumos.positions import Positions
from lumos.sampling import SampleConfig, generate, plan_generation
from lumos.utils import take
from seqs import sharp_model


MODEL = sharp_model()
VOCAB = MODEL.config.vocab


def prompt(n_text, seed, given=None):
    text = np.random.default_rng(seed).integers(1, 60, n_text)
    return VOCAB.build(text, given, duration=2, fps=8, complete=False)


def decode(model, prompts, mode="parallel", frames=3, h=3, w=4, seed=0, **cfg):
    cfg = SampleConfig(**{"num_inference_steps": 4, **cfg})
    plan = plan_generation(model, prompts, frames, h, w, cfg)
    return plan, generate(model, plan, cfg, torch.Generator().manual_seed(seed), mode=mode)


def cached_and_uncached(prompts, **cfg):
    """The KV-cached run, then the uncached run replaying its logits (module docstring)."""
    a = Recorder(MODEL)
    _, cached = decode(a, prompts, "parallel", **cfg)
    b = Recorder(MODEL, replay=a.logits)
    _, full = decode(b, prompts, "parallel-nocache", **cfg)
    # 5e-6 of the logits' scale: the cached pass runs a frame's queries against the cache, the uncached
    # one the whole sequence (other matmul/attention shapes, another summation order); measured up to 1e-6
    # (the logits are the guided ones: their scale grows with the guidance, and so do the differences)
    assert max_logit_diff(a, b, "cached vs uncached") < 5e-6
    return cached, full


@pytest.mark.parametrize("ratio", [0.7, 0.0])
def test_cached_equals_uncached_text_to_video(ratio):
    """Step for step, two prompts of different text lengths (left padding) with CFG rows."""
    prompts = [prompt(7, 1), prompt(3, 2)]
    cached, full = cached_and_uncached(prompts, history_mask_ratio=ratio)
    assert torch.equal(cached.codes, full.codes)          # same logits (replayed), same sampler: exact
    assert cached.forwards == 1 + 3 * 4 and full.forwards == 3 * 4     # prefill + steps (writes ride along)


def test_history_masking_changes_the_video_and_cached_equals_uncached_for_image_to_video():
    prompts = [prompt(5, 3)]
    masked = decode(MODEL, prompts, history_mask_ratio=0.7)[1].codes
    clean = decode(MODEL, prompts, history_mask_ratio=0.0)[1].codes
    # frame 0 sees no history: the same passes on the same inputs (same shapes) in both runs, exact
    assert torch.equal(masked[:, 0], clean[:, 0])
    assert not torch.equal(masked[:, 1:], clean[:, 1:])    # later frames see the masked copies
    first = np.random.default_rng(0).integers(0, VOCAB.codebook_size, (1, 3, 4))
    for compat in (False, True):
        a, b = (g.codes for g in cached_and_uncached([prompt(5, 4, given=first)], frames=2, reference_compat=compat))
        assert torch.equal(a, b) and torch.equal(a[0, 0], torch.from_numpy(first[0]))


class Recorder(torch.nn.Module):
    """Passes everything to `inner` and keeps every logits tensor the sampler computes. With `replay`
    (another run's recorded logits), the sampler gets those instead of its own, step for step."""

    def __init__(self, inner, replay=None):
        super().__init__()
        self.inner, self.config, self.logits, self.replay = inner, inner.config, [], replay

    def positions(self, tokens, start=None):
        return self.inner.positions(tokens, start=start)

    def setup_cache(self, batch, max_len):
        self.inner.setup_cache(batch, max_len)

    def clear_cache(self):
        self.inner.clear_cache()

    def forward(self, tokens, **kw):
        return self.inner(tokens, **kw)

    def head(self, h, rows):
        out = self.inner.head(h, rows)
        self.logits.append(out)
        return out if self.replay is None else self.replay[len(self.logits) - 1]


def max_logit_diff(a: Recorder, b: Recorder, what: str) -> float:
    """Largest |logit difference| over every step of two runs (b replaying a), relative to the largest
    |logit| (the sampler records guided logits, whose scale grows with the guidance), and a check that
    the comparison is between logits far from zero."""
    assert len(a.logits) == len(b.logits) > 0
    diff = max((x - y).abs().max().item() for x, y in zip(a.logits, b.logits))
    scale = max(x.abs().max().item() for x in a.logits)
    print(f"{what}: max |logit diff| = {diff:.2e} (logit scale {scale:.1f}, relative {diff / scale:.1e})")
    assert scale > 1.0
    return diff / scale


class TwoPassCFG(Recorder):
    """The reference's CFG: the cond row and the uncond row (without its left padding, with its own
    cache of its own length) in two separate forward passes; the results are stacked back so the
    sampler cannot tell the difference."""

    def __init__(self, inner, pad, replay=None):
        super().__init__(inner, replay)
        self.uncond, self.pad = copy.deepcopy(inner), pad

    def setup_cache(self, batch, max_len):
        self.inner.setup_cache(batch // 2, max_len)
        self.uncond.setup_cache(batch // 2, max_len - self.pad)

    def clear_cache(self):
        self.inner.clear_cache()
        self.uncond.clear_cache()

    def forward(self, tokens, pos, mask, cache_pos=None, kv_len=None, return_hidden=True, at=None, rope=None):
        # rope (the sampler's tables of pos) is left out: each half builds its own from its positions
        n, p = tokens.shape[0] // 2, self.pad
        cond = self.inner(tokens[:n], pos=Positions(*(t[:n] for t in pos)), mask=mask[:n], cache_pos=cache_pos,
                          kv_len=kv_len, return_hidden=True)
        first = 0 if cache_pos is None else int(cache_pos[0])
        keep = max(0, p - first)                                  # query columns that are uncond padding
        m = mask[n:, :, keep:] if mask.shape[2] > 1 else mask[n:]
        unc = self.uncond(tokens[n:, keep:], pos=Positions(*(t[n:, keep:] for t in pos)), mask=m[..., p:],
                          cache_pos=None if cache_pos is None else cache_pos[keep:] - p,
                          kv_len=None if kv_len is None else kv_len - p, return_hidden=True)
        out = torch.cat([cond, F.pad(unc, (0, 0, keep, 0))])      # zeros stand for the padding queries
        return out if at is None else take(out, at)               # the positions the sampler asked for


@pytest.mark.parametrize("mode", ["parallel", "next-token"])
def test_batched_cfg_equals_two_separate_passes(mode):
    p = [prompt(9, 5)]
    cfg = SampleConfig(num_inference_steps=4, guidance_scale=15.0)
    plan = plan_generation(MODEL, p, 2, 3, 4, cfg)
    vs = plan.video_col
    # the padded uncond row's positions are those of the unpadded uncond sequence
    alone = MODEL.positions(plan.tokens[1:, vs:])
    assert all(torch.equal(a, b[1:, vs:]) for a, b in zip(alone, plan.pos))
    batched = Recorder(MODEL)
    a = generate(batched, plan, cfg, torch.Generator().manual_seed(0), mode=mode)
    separate = TwoPassCFG(MODEL, pad=vs, replay=batched.logits)            # replays (module docstring)
    b = generate(separate, plan, cfg, torch.Generator().manual_seed(0), mode=mode)
    # 5e-6 of the logits' scale: batch 2 vs two batches of 1, padded vs unpadded uncond row (other
    # shapes, another summation order); measured ~8e-7
    assert max_logit_diff(batched, separate, f"{mode}: batched vs two-pass CFG") < 5e-6
    assert torch.equal(a.codes, b.codes)                  # same logits (replayed), same sampler: exact
