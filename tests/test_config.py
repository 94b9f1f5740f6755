"""Model config: presets, strict overrides, shape validation, HF config mapping."""

import pytest

from lumos.config import CONFIGS, ModelConfig


def test_presets_build():
    for name in CONFIGS:
        cfg = ModelConfig.from_name(name)
        assert cfg.head_dim % 32 == 0


def test_unknown_key_and_preset():
    with pytest.raises(ValueError, match="unknown model config keys.*n_layer"):
        ModelConfig.from_name("tiny", n_layer=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_name("huge")


@pytest.mark.parametrize("kw, msg", [
    ({"dim": 96, "n_heads": 2}, "multiple of 32"),        # head_dim 48
    ({"dim": 64, "n_heads": 3}, "divisible"),
    ({"n_kv_heads": 3, "n_heads": 2}, "divisible"),
    ({"rope_type": "4d"}, "rope_type"),
    ({"attn_backend": "xformers"}, "attn_backend"),
    ({"qk_norm_groups": 3}, "qk_norm_groups"),
])
def test_impossible_shapes(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig.from_name("tiny", **kw)


def test_1d_rope_allows_any_even_head_dim():
    assert ModelConfig.from_name("tiny", dim=96, n_heads=2, rope_type="1d").head_dim == 48


def test_hf_roundtrip_and_strictness():
    cfg = ModelConfig.from_name("small")
    hf = cfg.to_hf_config()
    assert ModelConfig.from_hf_config(hf).to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="model_type"):
        ModelConfig.from_hf_config({**hf, "model_type": "llama"})
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelConfig.from_hf_config({**hf, "rope_scaling": {"type": "linear", "factor": 2}})
    with pytest.warns(UserWarning, match="some_new_field"):
        ModelConfig.from_hf_config({**hf, "some_new_field": 1})
    released = {k: v for k, v in ModelConfig(dim=256, n_heads=4, n_layers=2).to_hf_config().items() if k != "lumos"}
    cfg = ModelConfig.from_hf_config(released)
    assert cfg.vocab.name == "chameleon" and cfg.rope_type == "mmrope" and cfg.rope_scale == (4, 8, 8)
    assert ModelConfig.from_hf_config({**released, "mm_rope": False}).rope_type == "1d"
