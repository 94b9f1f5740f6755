"""The Lumos-1 transformer: a Chameleon/Llama decoder over one vocabulary of text and video tokens.

Architecture (spec `lumos1.md` §2, HF Chameleon parameter names so checkpoints load as they are):
- token embedding -> N x Block -> RMSNorm -> untied lm_head; no weight tying, no biases by default;
- Block: pre-norm RMSNorm (fp32 statistics) around attention and a SwiGLU MLP, or with `swin_norm`
  the norm applied to the attention/MLP *output* before the residual add (Chameleon-30B style);
- attention: grouped-query attention; QK-norm = LayerNorm over head_dim (eps 1e-5, no affine inside)
  followed by a per-head affine of shape [qk_norm_groups, head_dim] repeat-interleaved over the heads;
  applied to q and k before RoPE;
- RoPE: MM-RoPE tables computed once per forward from the token ids (`lumos.positions`), applied in
  fp32 with the rotate-half convention;
- attention mask: frame-causal (`lumos.masks`): causal, bidirectional inside a frame. SDPA with a
  dense bool mask, or FlexAttention with a BlockMask (`attn_backend="flex"`).

One forward serves training and cached inference:
    logits = model(tokens)                                  # whole sequence, mask built from the tokens
    model.setup_cache(batch, max_len)                       # preallocated static KV cache
    logits = model(tokens_chunk, pos=pos_chunk, cache_pos=idx, mask=rows)  # chunk against the cache
The model knows nothing of sampling, the tokenizers or distributed training (`lumos.train.parallelize`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lumos import checkpoint
from lumos.config import ModelConfig
from lumos.masks import frame_causal_block_mask, frame_causal_mask, frame_ids
from lumos.positions import Positions, rope_cos_sin, rope_for
from lumos.utils import LumosError, take


# ---------------------------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x):
        # Statistics in fp32 (bf16 squares overflow/underflow), weight applied in the input dtype as HF does.
        # F.rms_norm is x * rsqrt(mean(x^2) + eps), fused where torch has a kernel for the device.
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class QKNorm(nn.Module):
    """Chameleon QK-norm: LayerNorm statistics over head_dim, then a per-head affine whose parameters
    `[groups, head_dim]` (groups = the checkpoint's model_parallel_size) are shared by consecutive heads."""

    def __init__(self, head_dim: int, groups: int, n_heads: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, head_dim))
        self.bias = nn.Parameter(torch.empty(groups, head_dim))

    def forward(self, x):  # x: (B, L, nh, hd)
        groups, hd = self.weight.shape
        if groups == 1:   # one affine for every head: inside the norm's kernel (one op instead of four)
            return F.layer_norm(x, (hd,), self.weight[0], self.bias[0], eps=1e-5)
        x = F.layer_norm(x, (hd,), eps=1e-5).unflatten(2, (groups, -1))          # (B, L, groups, nh / groups, hd)
        return (x * self.weight[:, None] + self.bias[:, None]).flatten(2, 3)


# ---------------------------------------------------------------------------------------------- rope
def rope_tables(pos: Positions, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and *signed* sin tables (B, L, hd) fp32 for `apply_rope`: the sin table of `rope_cos_sin` with
    its first half negated, once per forward."""
    cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, cfg.rope_type)
    sin[..., :cfg.head_dim // 2].neg_()
    return cos, sin


def apply_rope(x, cos, sin):
    """x: (B, nh, L, hd); cos/sin: (B, L, hd) fp32 from `rope_tables`. Rotation in fp32, result in x's dtype.
    The rotate-half convention, x cos + [-x2, x1] sin: [x2, x1] is x rolled by hd/2, and the minus sign is
    in the first half of the signed sin table (the same products, so the same bits, in two fewer ops)."""
    xf = x.float()
    cos, sin = cos[:, None], sin[:, None]                                    # (B, 1, L, hd)
    return (xf * cos + xf.roll(x.shape[-1] // 2, -1) * sin).to(x.dtype)


# ---------------------------------------------------------------------------------------------- attention
_compiled_flex = None


def flex_attention(q, k, v, block_mask):
    """FlexAttention, compiled once per process. torch has no FlexAttention backward on the CPU: train
    there with attn_backend="sdpa" (the same rule as a dense mask)."""
    from torch.nn.attention.flex_attention import flex_attention as _flex

    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise LumosError('attn_backend="flex" has no backward on the CPU (a torch limit); '
                         'train on the CPU with attn_backend="sdpa"')
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(_flex, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


def attend(q, k, v, mask):
    """q: (B, nh, Lq, hd); k, v: (B, nkv, Lk, hd); mask: dense bool (B, 1, Lq, Lk), a BlockMask, or
    None (every key visible)."""
    if mask is not None and not isinstance(mask, torch.Tensor):
        return flex_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


class KVCache(nn.Module):
    """Static KV cache of one layer: preallocated (B, nkv, max_len, hd) buffers written by position
    index (`index_copy_` with a position *tensor*: no host sync, compile/CUDA-graph friendly)."""

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, pos, k, v):  # pos: (L,), k/v: (B, nkv, L, hd)
        self.k.index_copy_(2, pos, k.to(self.k.dtype))
        self.v.index_copy_(2, pos, v.to(self.v.dtype))
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=cfg.attention_bias)
        self.q_norm = QKNorm(hd, cfg.qk_norm_groups, cfg.n_heads)
        self.k_norm = QKNorm(hd, cfg.qk_norm_groups, cfg.n_kv_heads)
        self.head_dim = hd
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, mask, cache_pos=None, kv_len=None, at=None):
        """at: (B, M) the positions whose outputs are wanted (None: all). Keys and values are computed
        (and cached) at every position, queries only at these. Returns (B, M or L, D)."""
        B, L, _ = x.shape
        hd = self.head_dim
        # -1 for the head counts: tensor parallelism may shard them without a model change.
        k = self.k_norm(self.k_proj(x).view(B, L, -1, hd)).transpose(1, 2)  # (B, nkv, L, hd)
        v = self.v_proj(x).view(B, L, -1, hd).transpose(1, 2)               # (B, nkv, L, hd)
        k = apply_rope(k, cos, sin)
        if cache_pos is not None:
            k, v = self.kv_cache.update(cache_pos, k, v)                    # (B, nkv, max_len, hd)
            if kv_len is not None:                                          # only the live prefix
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]                   # (B, nkv, kv_len, hd)
        if at is not None:
            if at.shape[1] == 0:                                            # a pass that only fills the cache
                return x.new_zeros(B, 0, self.o_proj.out_features)
            x, cos, sin = take(x, at), take(cos, at), take(sin, at)
            if mask is not None and mask.shape[2] > 1:                      # one mask row per query
                mask = take(mask.expand(B, -1, L, -1).transpose(1, 2), at).transpose(1, 2)
        M = x.shape[1]
        q = self.q_norm(self.q_proj(x).view(B, M, -1, hd)).transpose(1, 2)  # (B, nh, M, hd)
        y = attend(apply_rope(q, cos, sin), k, v, mask)                     # (B, nh, M, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, M, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.dim, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.dim, bias=cfg.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.swin_norm = cfg.swin_norm

    def forward(self, x, cos, sin, mask, cache_pos=None, kv_len=None, at=None):
        """at: (B, M) the outputs at these positions only (`Attention.forward`)."""
        res = x if at is None else take(x, at)
        if self.swin_norm:  # norm after the sublayer (the HF names keep their pre-norm meaning)
            x = res + self.input_layernorm(self.self_attn(x, cos, sin, mask, cache_pos, kv_len, at))
            return x + self.post_attention_layernorm(self.mlp(x))
        x = res + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_pos, kv_len, at)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The `model.` prefix of the HF checkpoint: embeddings, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


# ---------------------------------------------------------------------------------------------- model
class LumosModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        # Only declares shapes: this runs under torch.device("meta") for big models; call
        # init_weights() (or load a checkpoint with assign=True) afterwards.
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig, device=None, dtype=None, seed: int | None = None) -> "LumosModel":
        """Random initialisation (on `device`, in `dtype`), optionally seeded for reproducible tests."""
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device=device or "cpu")
        if seed is None:
            model.init_weights()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model.init_weights()
        return model.to(dtype) if dtype is not None else model

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, *, subfolder: str | None = None,
                        revision: str | None = None, local_files_only: bool | None = None) -> "LumosModel":
        """Build the model from a checkpoint folder (`lumos.checkpoint`): on the meta device, then the
        file's tensors are assigned (no second initialisation). dtype None keeps the file's dtype.
        A weight with a NaN or inf is refused (LumosError naming it): it would only generate noise.
        path: a folder, a built-in model name or a Hub repo id (+ subfolder, revision): `lumos.hub.resolve`."""
        from lumos import hub

        path = hub.resolve(path, subfolder, revision, local_files_only, what="checkpoint")
        with torch.device("meta"):
            model = cls(checkpoint.read_config(path))
        sd = checkpoint.check_state_dict(model.state_dict(), checkpoint.read_weights(path), path)
        sd = {k: v.to(device=device or "cpu", dtype=dtype or v.dtype) for k, v in sd.items()}
        checkpoint.check_finite(sd, path)                 # after the cast: an fp16 overflow counts too
        model.load_state_dict(sd, strict=True, assign=True)
        return model

    def save_pretrained(self, path, dtype=torch.bfloat16, max_shard_bytes: int = 5 * 2**30) -> None:
        """`config.json` + safetensors, written atomically (`lumos.checkpoint.save_state_dict`)."""
        checkpoint.save_state_dict(self.state_dict(), self.config, path, dtype=dtype, max_shard_bytes=max_shard_bytes)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Every parameter's initialisation:
        - embed_tokens, q/k/v/gate/up projections, lm_head: N(0, std)
        - o_proj, down_proj (the residual-stream writers): N(0, std / sqrt(2 n_layers)) (GPT-2 scaling)
        - biases: 0; RMSNorm weights: 1; QK-norm weight 1, bias 0."""
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    # ------------------------------------------------------------------------------------------ helpers
    def positions(self, tokens: torch.Tensor, start: torch.Tensor | None = None) -> Positions:
        """Position ids of whole sequences `[B, L]` (left padding: `start` [B] = first real token)."""
        c = self.config
        return rope_for(tokens, c.vocab, c.rope_type, c.rope_scale, start=start)

    def build_mask(self, tokens: torch.Tensor, valid: torch.Tensor | None = None, backend: str | None = None):
        """The frame-causal mask of whole sequences for the configured backend."""
        fid = frame_ids(tokens, self.config.vocab)
        if (backend or self.config.attn_backend) == "flex":
            return frame_causal_block_mask(fid, valid)
        return frame_causal_mask(fid, valid)

    def setup_cache(self, batch: int, max_len: int | None = None, dtype=None, device=None) -> None:
        """Allocate a static KV cache for `batch` rows of up to `max_len` tokens in every layer."""
        c = self.config
        w = self.lm_head.weight
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(batch, c.n_kv_heads, max_len or c.max_seq_len, c.head_dim,
                                               dtype or w.dtype, device or w.device)

    def clear_cache(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None

    @torch.no_grad()
    def move_cache(self, src: torch.Tensor, dst: torch.Tensor, delta: Positions) -> None:
        """Move cache columns `src` (L,) to `dst` (L,) in every layer, re-indexed by the position change
        `delta` (positions [B, L] of the moved tokens: new minus old; `lumos.positions.shift`). A cached key
        is R(p) k; rotating it by R(delta) gives R(p + delta) k, the key computed fresh at the new position
        (RoPE rotations compose), so no forward pass is needed. Values carry no position: copied. Source
        and destination may overlap (the columns are gathered first)."""
        c = self.config
        cos, sin = rope_tables(delta, c)                                          # (B, L, hd)
        for layer in self.model.layers:
            cache = layer.self_attn.kv_cache
            k, v = cache.k.index_select(2, src), cache.v.index_select(2, src)
            cache.update(dst, apply_rope(k, cos, sin), v)

    def head(self, h: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Logits (fp32) from final hidden states; `rows` restricts to a vocabulary slice (e.g. the visual
        codes), so full-vocabulary logits are never built when they are not needed."""
        w = self.lm_head.weight if rows is None else self.lm_head.weight[rows]
        return F.linear(h, w).float()

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.model.embed_tokens.weight.numel()

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, pos: Positions | None = None, mask=None,
                cache_pos: torch.Tensor | None = None, kv_len: int | None = None,
                return_hidden: bool = False, at: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """tokens: (B, L) int64.
        pos: positions of these tokens; default: computed from `tokens` as a whole sequence.
        mask: dense bool (B, 1, L, Lk) / BlockMask / None. Default without a cache: the frame-causal
            mask of `tokens`; with a cache: every key up to the last written position (a frame being
            decoded sees all history and itself).
        cache_pos: (L,) positions to write in the KV cache (cached inference); None = no cache.
        kv_len: attend to the first kv_len cache slots only (a host int known from the layout, e.g. the
            end of the frame being decoded; the mask must then have kv_len columns). None = the whole
            buffer (one static shape for CUDA graphs).
        at: (B, M) int64 positions: return only these (each row its own; M may be 0). The last layer
            then computes its queries, attention output and MLP there only (keys and values everywhere,
            as the cache needs them): the sampler wants a step's still-masked codes, and nothing from a
            pass that only writes the cache. A dense mask or none.
        rope: `rope_tables(pos, config)` when the caller has them already (a sampler's frame has the same
            positions at every step: built once, and a compiled step gets them as inputs instead of
            recomputing the cos and sin inside every layer's kernel); pos is then not read.
        Returns fp32 logits (B, L or M, V), or final hidden states (B, L or M, D) (then `head(hidden, rows)`
        gives the logits of a vocabulary slice only, as the sampler does for the visual codes)."""
        B, L = tokens.shape
        c = self.config
        if at is not None and mask is not None and not isinstance(mask, torch.Tensor):
            raise LumosError("at= needs a dense mask or none (a BlockMask is not cut to positions)")
        if rope is None:
            cos, sin = rope_tables(pos if pos is not None else self.positions(tokens), c)    # (B, L, hd) fp32
        else:
            cos, sin = rope
        if mask is None:
            if cache_pos is None:
                mask = self.build_mask(tokens)
            else:
                max_len = kv_len or self.model.layers[0].self_attn.kv_cache.k.shape[2]
                mask = (torch.arange(max_len, device=tokens.device) <= cache_pos[-1])[None, None, None]
        x = self.model.embed_tokens(tokens)                                       # (B, L, D)
        last = len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, cache_pos, kv_len, at if i == last else None)
        x = self.model.norm(x)
        return x if return_hidden else self.head(x)
