"""Model configuration: one dataclass, named presets, and the mapping to/from HF `config.json`.

A run is "preset + a few overrides": `ModelConfig.from_name("tiny", n_layers=4)`. An unknown key or an
impossible shape is a `LumosError` naming it. The released 1B/3B checkpoints are not presets: their
shapes are read from the checkpoint's own `config.json` (`ModelConfig.from_hf_config`), so nothing
here guesses them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass, field

from lumos.utils import LumosError, check_keys, fits
from lumos.vocab import Vocab

ROPE_TYPES = ("mmrope", "mrope", "3d", "1d")
ATTN_BACKENDS = ("sdpa", "flex")


@dataclass
class ModelConfig:
    vocab: Vocab = field(default_factory=Vocab.chameleon)  # token layout; vocab_size comes from it
    dim: int = 2048                   # hidden size D
    n_layers: int = 16                # transformer blocks
    n_heads: int = 16                 # query heads; head_dim = dim / n_heads
    n_kv_heads: int = 0               # key/value heads (GQA); 0 means n_heads
    intermediate_size: int = 5632     # SwiGLU hidden width
    norm_eps: float = 1e-5            # RMSNorm epsilon (HF rms_norm_eps)
    rope_theta: float = 10000.0       # RoPE base
    rope_type: str = "mmrope"         # mmrope (paper) | mrope (contiguous t/h/w chunks) | 3d (naive) | 1d
    rope_scale: tuple = (4, 8, 8)     # (t, h, w) position strides = the tokenizer's compression (Cosmos 4x8x8)
    qk_norm_groups: int = 1           # HF model_parallel_size: q/k-norm affine params are [groups, head_dim]
    swin_norm: bool = False           # Chameleon-30B style: norm the attention/MLP output before the residual
    attention_bias: bool = False      # biases on q/k/v/o
    mlp_bias: bool = False            # biases on gate/up/down
    max_seq_len: int = 32768          # longest sequence (sizes the KV cache by default)
    attn_backend: str = "sdpa"        # sdpa (dense bool mask; CPU/short) | flex (BlockMask; GPU/long)

    def __post_init__(self):
        if isinstance(self.vocab, dict):
            self.vocab = Vocab.from_dict(self.vocab)
        hints = typing.get_type_hints(ModelConfig)
        check_types(vars(self), {f.name: hints[f.name] for f in dataclasses.fields(self) if f.name != "rope_scale"},
                    "model config: ")
        check_types(vars(self), {"rope_scale": tuple[int, ...]}, "model config: ")
        self.rope_scale = tuple(int(s) for s in self.rope_scale)
        for name in ("dim", "n_layers", "n_heads", "intermediate_size", "max_seq_len", "qk_norm_groups"):
            if getattr(self, name) < 1:
                raise LumosError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_kv_heads < 0:
            raise LumosError(f"n_kv_heads must be >= 0 (0: n_heads), got {self.n_kv_heads}")
        for name in ("norm_eps", "rope_theta"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise LumosError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise LumosError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise LumosError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads} (GQA)")
        if self.rope_type not in ROPE_TYPES:
            raise LumosError(f"rope_type {self.rope_type!r} is not one of {ROPE_TYPES}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise LumosError(f"attn_backend {self.attn_backend!r} is not one of {ATTN_BACKENDS}")
        if self.rope_type == "mmrope" and self.head_dim % 32:
            raise LumosError(f"head_dim {self.head_dim} must be a multiple of 32 for MM-RoPE (its frequencies come "
                             f"in meta-groups of 16 rotary pairs); change dim or n_heads")
        if self.rope_type in ("mrope", "3d") and self.head_dim % 16:
            raise LumosError(f"head_dim {self.head_dim} must be a multiple of 16 for rope_type {self.rope_type!r}")
        if self.head_dim % 2:
            raise LumosError(f"head_dim {self.head_dim} must be even for RoPE")
        for groups, heads in ((self.qk_norm_groups, self.n_heads), (self.qk_norm_groups, self.n_kv_heads)):
            if heads % groups:
                raise LumosError(f"qk_norm_groups (model_parallel_size) {groups} does not divide {heads} heads")
        if len(self.rope_scale) != 3 or min(self.rope_scale) < 1:
            raise LumosError(f"rope_scale must be three positive ints (t, h, w), got {self.rope_scale}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    # ------------------------------------------------------------------------------ presets
    @classmethod
    def from_name(cls, name: str, **overrides) -> "ModelConfig":
        if name not in CONFIGS:
            raise LumosError(f"unknown model preset {name!r}; known: {sorted(CONFIGS)}")
        return CONFIGS[name]().replace(**overrides)

    def replace(self, **overrides) -> "ModelConfig":
        check_keys(type(self), overrides, "model config")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["vocab"] = self.vocab.to_dict()
        d["rope_scale"] = list(self.rope_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        check_keys(cls, d, "model config")
        return cls(**d)

    # ------------------------------------------------------------------------------ HF config.json
    def to_hf_config(self) -> dict:
        """The HF Chameleon `config.json` the authors' code reads (`model_type: chameleon`,
        `mm_rope: true`), plus a `lumos` block for what HF has no key for (vocab layout, rope variant)."""
        v = self.vocab
        return {
            "architectures": ["ChameleonXLLMXForConditionalGeneration"],
            "model_type": "chameleon",
            "mm_rope": self.rope_type == "mmrope",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "mlp_bias": self.mlp_bias,
            "model_parallel_size": self.qk_norm_groups,
            "swin_norm": self.swin_norm,
            "dropout": 0.0,
            "tie_word_embeddings": False,
            "bos_token_id": v.bos,
            "pad_token_id": None,
            "lumos": {"vocab": v.to_dict(), "rope_type": self.rope_type, "rope_scale": list(self.rope_scale)},
        }

    @classmethod
    def from_hf_config(cls, hf: dict, **overrides) -> "ModelConfig":
        """Read a released (or lumos-written) HF `config.json`. Keys that change the network and that
        lumos does not implement are an error; known HF bookkeeping keys are ignored; other keys
        give one warning (the released configs may carry fields we have not seen). A value of the wrong
        type is a LumosError naming its key."""
        if not isinstance(hf, dict):
            raise LumosError(f"config.json must be a JSON object of keys, got a {type(hf).__name__}")
        check_types(hf, _HF_TYPES)
        if hf.get("model_type") != "chameleon":
            raise LumosError(f"config.json has model_type {hf.get('model_type')!r}; a Lumos-1 checkpoint has "
                             f"'chameleon'")
        if hf.get("hidden_act", "silu") != "silu":
            raise LumosError(f"hidden_act {hf['hidden_act']!r} is not supported (Lumos-1 uses silu)")
        if hf.get("rope_scaling") not in (None, {}):
            raise LumosError(f"rope_scaling {hf['rope_scaling']!r} is not supported with MM-RoPE")
        if hf.get("tie_word_embeddings", False):
            raise LumosError("tie_word_embeddings=true is not supported: Lumos-1 has an untied lm_head")
        extra = dict(hf.get("lumos") or {})
        check_types(extra, {"vocab": dict, "rope_type": str, "rope_scale": tuple[int, ...]}, "lumos.")
        if "vocab" in extra:
            hints = typing.get_type_hints(Vocab)
            check_types(extra["vocab"], {f.name: hints[f.name] for f in dataclasses.fields(Vocab)}, "lumos.vocab.")
        vocab = Vocab.from_dict(extra["vocab"]) if "vocab" in extra else Vocab.chameleon()
        if hf["vocab_size"] != vocab.vocab_size:
            raise LumosError(f"config.json vocab_size {hf['vocab_size']} does not match the {vocab.name} layout "
                             f"({vocab.vocab_size})")
        rope_type = extra.get("rope_type", "mmrope" if hf.get("mm_rope") else "1d")
        unused = set(hf) - _HF_USED - _HF_IGNORED
        if unused:
            warnings.warn(f"config.json: ignoring keys {sorted(unused)}", stacklevel=2)
        kw = dict(
            vocab=vocab, dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
            n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-5),
            rope_theta=hf.get("rope_theta", 10000.0), rope_type=rope_type,
            rope_scale=tuple(extra.get("rope_scale", (4, 8, 8))), qk_norm_groups=hf.get("model_parallel_size", 1),
            swin_norm=hf.get("swin_norm", False), attention_bias=hf.get("attention_bias", False),
            mlp_bias=hf.get("mlp_bias", False), max_seq_len=hf.get("max_position_embeddings", 32768),
        )
        kw.update(overrides)
        return cls.from_dict(kw)


def check_types(d: dict, types: dict, where: str = "") -> None:
    """LumosError naming the first key of `d` whose value (when given and not null) does not have its
    type in `types` (`lumos.utils.fits`: a bool is not an int, an int is a float)."""
    for key, want in types.items():
        v = d.get(key)
        ok, kind = fits(want, v)
        if v is not None and not (ok and (kind != "float" or math.isfinite(v))):
            raise LumosError(f"{where}{key} must be {'a finite float' if kind == 'float' else kind}, got {v!r}")


# The types of the HF keys lumos reads (a wrong one is named, not a TypeError deep inside).
_HF_TYPES = {
    "model_type": str, "hidden_act": str, "mm_rope": bool, "vocab_size": int, "hidden_size": int,
    "intermediate_size": int, "num_hidden_layers": int, "num_attention_heads": int, "num_key_value_heads": int,
    "max_position_embeddings": int, "rms_norm_eps": float, "rope_theta": float, "attention_bias": bool,
    "mlp_bias": bool, "model_parallel_size": int, "swin_norm": bool, "tie_word_embeddings": bool, "lumos": dict,
}
_HF_USED = {
    "model_type", "mm_rope", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    "rope_theta", "rope_scaling", "attention_bias", "mlp_bias", "model_parallel_size", "swin_norm",
    "tie_word_embeddings", "lumos",
}
# HF/Chameleon bookkeeping that does not change the network (or concerns pieces lumos replaces:
# the unused Chameleon VQ-GAN, the vocabulary map of its image tokens, training-only losses).
_HF_IGNORED = {
    "architectures", "attention_dropout", "dropout", "bos_token_id", "eos_token_id", "pad_token_id",
    "torch_dtype", "transformers_version", "vq_config", "vocabulary_map", "mask_image_logits", "z_loss_weight",
    "initializer_range", "use_cache", "_name_or_path", "image_token_id", "auto_map", "qk_layernorm",
    "cfg_drop_rate", "output_attentions", "output_hidden_states", "return_dict", "is_encoder_decoder",
    "tie_encoder_decoder", "pretraining_tp", "head_dim",
}


# -------------------------------------------------------------------------------------- presets
def _tiny() -> ModelConfig:
    # Tests: 2 layers, 2 heads of 32 (MM-RoPE needs head_dim % 32 == 0), a compact vocab of ~200 ids.
    return ModelConfig(vocab=Vocab.compact(text_vocab_size=64, codebook_size=64, max_size=32), dim=64,
                       n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=128, max_seq_len=2048)


def _small() -> ModelConfig:
    # The built-in Moving Digits model: ~3M parameters, ~15 sequences of 410 tokens per second of
    # training on 2 CPU cores. (The vocabulary is replaced by the records' one when training.)
    return ModelConfig(vocab=Vocab.compact(text_vocab_size=320, codebook_size=1000), dim=192, n_layers=6,
                       n_heads=6, n_kv_heads=6, intermediate_size=512, max_seq_len=2048)


def _bench_1b() -> ModelConfig:
    # An illustrative ~1B shape with the Chameleon vocabulary for GPU benchmarks with random weights.
    # NOT the released 1B shape (unknown here): load a real checkpoint with from_pretrained for that.
    return ModelConfig(dim=2048, n_layers=22, n_heads=16, n_kv_heads=16, intermediate_size=5632)


def _bench_3b() -> ModelConfig:
    # An illustrative ~3B shape (see bench-1b).
    return ModelConfig(dim=3072, n_layers=26, n_heads=24, n_kv_heads=24, intermediate_size=8192)


CONFIGS = {"tiny": _tiny, "small": _small, "bench-1b": _bench_1b, "bench-3b": _bench_3b}
