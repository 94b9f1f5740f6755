"""The transformer against an independent float64 reference written from the spec, FlexAttention
against SDPA (forward and backward), and cached against uncached forwards."""

import numpy as np
import pytest
import torch

from lumos.masks import frame_causal_mask, frame_ids
from lumos.utils import LumosError
from seqs import allow_cpu_flex_backward, ref_mask, ref_positions, ref_rope_angles, sharp_model, t2v


make_model = sharp_model


def reference_logits(model, tokens):
    """Plain float64 math: loops for the mask and the per-token rotation, explicit per-head attention."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    V, hd, nh, nkv, G = cfg.vocab, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.qk_norm_groups
    L = len(tokens)
    ang = ref_rope_angles(ref_positions(tokens, V, scale=cfg.rope_scale), hd, cfg.rope_theta)
    cos, sin = torch.from_numpy(np.cos(ang)), torch.from_numpy(np.sin(ang))            # (L, hd)
    allowed = torch.from_numpy(ref_mask(tokens, V))

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps)

    def qknorm(x, w, b, n):  # x (L, n, hd); head j uses affine row j // (n / G)
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + 1e-5)
        out = torch.empty_like(x)
        for j in range(n):
            out[:, j] = x[:, j] * w[j // (n // G)] + b[j // (n // G)]
        return out

    def rope(x):  # x (L, n, hd): channel j rotates with its partner j +- hd/2
        out = torch.empty_like(x)
        for j in range(hd):
            partner = -x[..., j + hd // 2] if j < hd // 2 else x[..., j - hd // 2]
            out[..., j] = x[..., j] * cos[:, None, j] + partner * sin[:, None, j]
        return out

    x = sd["model.embed_tokens.weight"][torch.as_tensor(tokens)]
    for i in range(cfg.n_layers):
        p = lambda n: sd[f"model.layers.{i}.{n}"]                                       # noqa: E731
        h = x if cfg.swin_norm else rms(x, p("input_layernorm.weight"))
        q = qknorm((h @ p("self_attn.q_proj.weight").T).view(L, nh, hd), p("self_attn.q_norm.weight"),
                   p("self_attn.q_norm.bias"), nh)
        k = qknorm((h @ p("self_attn.k_proj.weight").T).view(L, nkv, hd), p("self_attn.k_norm.weight"),
                   p("self_attn.k_norm.bias"), nkv)
        v = (h @ p("self_attn.v_proj.weight").T).view(L, nkv, hd)
        q, k = rope(q), rope(k)
        heads = []
        for j in range(nh):
            kv = j // (nh // nkv)
            s = q[:, j] @ k[:, kv].T / hd ** 0.5
            s = s.masked_fill(~allowed, float("-inf"))
            heads.append(torch.softmax(s, -1) @ v[:, kv])
        a = torch.cat(heads, -1) @ p("self_attn.o_proj.weight").T
        x = x + (rms(a, p("input_layernorm.weight")) if cfg.swin_norm else a)
        h = x if cfg.swin_norm else rms(x, p("post_attention_layernorm.weight"))
        m = (torch.nn.functional.silu(h @ p("mlp.gate_proj.weight").T) * (h @ p("mlp.up_proj.weight").T))
        m = m @ p("mlp.down_proj.weight").T
        x = x + (rms(m, p("post_attention_layernorm.weight")) if cfg.swin_norm else m)
    return rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


VARIANTS = {
    "tiny": {},
    "swin-norm": {"swin_norm": True},
    "gqa-groups2": {"dim": 128, "n_heads": 4, "n_kv_heads": 2, "qk_norm_groups": 2},
    "3-layers-64hd": {"dim": 128, "n_heads": 2, "n_kv_heads": 2, "n_layers": 3},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_independent_reference(variant):
    model = make_model(**VARIANTS[variant])
    seq = t2v(model.config.vocab, n_text=6, frames=3, h=3, w=4)
    with torch.no_grad():
        got = model(torch.as_tensor(seq)[None])[0]
    want = reference_logits(model, seq)
    diff = (got.double() - want).abs().max().item()
    print(f"{variant}: max |logits - reference| = {diff:.2e} (logit scale {want.abs().max():.1f})")
    assert diff < 1e-5
    assert want.abs().max() > 1.0   # the comparison is not between near-zero numbers


def padded_batch(vocab):
    a = t2v(vocab, n_text=9, frames=3, h=4, w=5, seed=1)
    b = t2v(vocab, n_text=4, frames=2, h=4, w=5, seed=2)
    toks = torch.zeros(2, len(a), dtype=torch.long)
    toks[0], toks[1, : len(b)] = torch.as_tensor(a), torch.as_tensor(b)
    valid = torch.arange(len(a))[None] < torch.tensor([[len(a)], [len(b)]])
    return toks, valid


def test_flex_equals_sdpa_forward_and_backward(monkeypatch):
    allow_cpu_flex_backward(monkeypatch)
    model = make_model()
    toks, valid = padded_batch(model.config.vocab)
    results = {}
    for backend in ("sdpa", "flex"):
        model.zero_grad()
        mask = model.build_mask(toks, valid, backend=backend)
        logits = model(toks, mask=mask)
        # every logit matters; a mean so that gradients are O(1) and 1e-5 is a tight bound
        loss = (logits[valid] * torch.linspace(-1, 1, logits.shape[-1])).mean()
        loss.backward()
        results[backend] = (logits.detach()[valid], {n: p.grad.clone() for n, p in model.named_parameters()})
    (l_s, g_s), (l_f, g_f) = results["sdpa"], results["flex"]
    fwd = (l_s - l_f).abs().max().item()
    bwd = max((g_s[n] - g_f[n]).abs().max().item() for n in g_s)
    scale = max(g.abs().max().item() for g in g_s.values())
    print(f"flex vs sdpa: max logit diff {fwd:.2e}, max grad diff {bwd:.2e} (max grad {scale:.2e})")
    assert fwd < 1e-5 and bwd < 1e-5
    assert all(g.abs().sum() > 0 for g in g_s.values())


def test_compiled_flex_kernel_forward_equals_sdpa():
    """The compiled (fused) FlexAttention kernel, as used for long sequences / the GPU."""
    model = make_model()
    toks, valid = padded_batch(model.config.vocab)
    with torch.no_grad():
        ref = model(toks, mask=model.build_mask(toks, valid, backend="sdpa"))
        got = model(toks, mask=model.build_mask(toks, valid, backend="flex"))
    assert (ref[valid] - got[valid]).abs().max().item() < 1e-5


def test_kv_cache_equals_full_forward():
    """Prefill the prompt (text + first frame), then each later frame as one chunk against the cache:
    the logits equal the rows of one whole-sequence forward."""
    model = make_model()
    V = model.config.vocab
    seq = torch.as_tensor(t2v(V, n_text=5, frames=3, h=3, w=4))[None]
    L = seq.shape[1]
    starts = (seq[0] == V.frame_start).nonzero().flatten().tolist()
    with torch.no_grad():
        full = model(seq)
        pos = model.positions(seq)
        model.setup_cache(1, max_len=L + 8)
        from lumos.masks import frame_causal_mask, frame_ids
        fid = frame_ids(seq, V)
        bounds = [0, starts[1], starts[2], L]
        for s, e in zip(bounds[:-1], bounds[1:]):
            mask = frame_causal_mask(fid, q_start=s, q_end=e, kv_len=L + 8)
            out = model(seq[:, s:e], pos=pos.slice(s, e), mask=mask, cache_pos=torch.arange(s, e))
            torch.testing.assert_close(out, full[:, s:e], atol=1e-5, rtol=0)
        # a frame chunk with the default cached mask (all keys up to the chunk's end) = same rows
        s, e = starts[2], (seq[0] == V.frame_end).nonzero().flatten()[-1].item() + 1
        out = model(seq[:, s:e], pos=pos.slice(s, e), cache_pos=torch.arange(s, e))
        torch.testing.assert_close(out, full[:, s:e], atol=1e-5, rtol=0)
        # attention bounded to the live prefix of the cache (kv_len = the frame's end): same rows
        out = model(seq[:, s:e], pos=pos.slice(s, e), cache_pos=torch.arange(s, e), kv_len=e)
        torch.testing.assert_close(out, full[:, s:e], atol=1e-5, rtol=0)
        model.clear_cache()


@pytest.mark.parametrize("variant", ["tiny", "swin-norm", "gqa-groups2"])
def test_outputs_at_positions_equal_the_full_forward(variant):
    """`at=` (the sampler's still-masked codes): the last layer works at those positions only; the
    outputs there equal the full forward's (each row its own positions, uncached under the dense
    frame-causal mask and cached), and a pass with no positions writes the same cache as a full one.
    atol 1e-5 (logits ~4): the last layer's GEMMs have fewer rows, so the BLAS may sum in another order."""
    model = make_model(**VARIANTS[variant])
    V = model.config.vocab
    seq = torch.as_tensor(t2v(V, n_text=5, frames=3, h=3, w=4))[None].repeat(2, 1)
    L = seq.shape[1]
    s = int((seq[0] == V.frame_start).nonzero()[-1])                                     # the last frame
    e = int((seq[0] == V.frame_end).nonzero()[-1]) + 1
    at = torch.stack([torch.arange(e - 9, e - 2), torch.arange(s, e, 2)[:7].flip(0)])     # (2, 7)
    with torch.no_grad():
        full = model(seq)                                                                  # (2, L, V)
        want = full.gather(1, at[..., None].expand(-1, -1, full.shape[-1]))
        torch.testing.assert_close(model(seq, at=at), want, atol=1e-5, rtol=0)
        # cached: all before the last frame, then the last frame as one chunk, only `at` of it wanted
        pos = model.positions(seq)
        caches = []
        for chunk_at in (at - s, at[:, :0], None):
            model.setup_cache(2, max_len=L)
            model(seq[:, :s], pos=pos.slice(0, s), cache_pos=torch.arange(s),
                  mask=frame_causal_mask(frame_ids(seq, V), q_start=0, q_end=s, kv_len=L))
            out = model(seq[:, s:e], pos=pos.slice(s, e), cache_pos=torch.arange(s, e), at=chunk_at)
            caches.append([(a.self_attn.kv_cache.k.clone(), a.self_attn.kv_cache.v.clone()) for a in model.model.layers])
            if chunk_at is not None and chunk_at.shape[1]:
                torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
            elif chunk_at is not None:
                assert out.shape == (2, 0, V.vocab_size)                    # nothing asked: the cache only
        model.clear_cache()
    for a, b in zip(caches[1], caches[2]):                                  # the same keys and values
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with pytest.raises(LumosError, match="dense mask"):
        model(seq, mask=model.build_mask(seq, backend="flex"), at=at)


def test_vocab_rows_and_hidden():
    model = make_model()
    V = model.config.vocab
    seq = torch.as_tensor(t2v(V))[None]
    with torch.no_grad():
        full = model(seq)
        vis = model.head(model(seq, return_hidden=True), slice(V.visual_offset, V.visual_offset + V.codebook_size))
        hid = model(seq, return_hidden=True)
    # atol 1e-5 (logits ~4): a 64-row slice of lm_head vs all 168 rows is a GEMM of another width,
    # which the BLAS may block and sum in another order (bit-identical on the AMD EPYC measured)
    torch.testing.assert_close(vis, full[..., V.visual_offset:V.visual_offset + V.codebook_size], rtol=0, atol=1e-5)
    assert hid.shape == (1, seq.shape[1], model.config.dim)


def test_bf16_forward_close_to_fp32():
    model = make_model()
    seq = torch.as_tensor(t2v(model.config.vocab))[None]
    with torch.no_grad():
        ref = model(seq)
        got = model.to(torch.bfloat16)(seq)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - ref).abs().max() / ref.abs().max() < 0.05
