"""save_pretrained / from_pretrained in the authors' HF format, and clear errors for bad checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumos.checkpoint import INDEX
from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos.utils import LumosError
from seqs import t2v


@pytest.fixture
def model():
    return LumosModel.from_config(ModelConfig.from_name("tiny"), seed=0).eval()


def logits(m, seq):
    with torch.no_grad():
        return m(seq)


def assert_same_model(loaded, model, seq, atol):
    """Every weight bit for bit (the round trip is lossless: a copy, or the same cast to bf16), and the
    same logits within `atol`: the loaded tensors keep the file buffer's alignment (16 bytes, not 64),
    and the BLAS (MKL) promises one summation order only for equally aligned inputs."""
    want = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    torch.testing.assert_close(logits(loaded, seq), logits(model, seq), rtol=0, atol=atol)


def test_bf16_sharded_roundtrip_identical_logits(model, tmp_path):
    seq = torch.as_tensor(t2v(model.config.vocab))[None]
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16, max_shard_bytes=20_000)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert INDEX in files and "config.json" in files
    shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "ckpt" / INDEX).read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    loaded = LumosModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    assert_same_model(loaded, model.to(torch.bfloat16), seq, atol=1e-2)   # logits ~0.7: ~2 bf16 ulps


def test_fp32_single_file_and_hf_config(model, tmp_path):
    seq = torch.as_tensor(t2v(model.config.vocab))[None]
    model.save_pretrained(tmp_path / "c", dtype=torch.float32)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["model_type"] == "chameleon" and cfg["mm_rope"] is True
    assert cfg["hidden_size"] == 64 and cfg["num_key_value_heads"] == 1
    assert (tmp_path / "c" / "model.safetensors").is_file()
    loaded = LumosModel.from_pretrained(tmp_path / "c", dtype=torch.float32)
    assert_same_model(loaded, model, seq, atol=1e-5)                    # logits ~0.7: fp32 rounding
    assert loaded.config.to_dict() == model.config.to_dict()


def test_released_layout_loads_and_ignores_vqmodel(model, tmp_path):
    """A folder as the authors publish it: chameleon config without a `lumos` block, HF keys, plus
    model.vqmodel.* tensors that must be ignored."""
    cfg = ModelConfig.from_name("tiny", vocab=ModelConfig().vocab)      # chameleon vocab, tiny sizes
    m = LumosModel.from_config(cfg, seed=1)
    d = tmp_path / "released"
    m.save_pretrained(d, dtype=torch.bfloat16)
    hf = json.loads((d / "config.json").read_text())
    del hf["lumos"]
    hf.update({"vq_config": {"embed_dim": 256}, "vocabulary_map": {"<s>": 0}, "mask_image_logits": True})
    (d / "config.json").write_text(json.dumps(hf))
    sd = load_file(d / "model.safetensors")
    sd["model.vqmodel.encoder.conv_in.weight"] = torch.zeros(2, 2)
    save_file(sd, d / "model.safetensors")
    loaded = LumosModel.from_pretrained(d)
    assert loaded.config.vocab.name == "chameleon" and loaded.config.rope_type == "mmrope"
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight.bfloat16())


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_key_wrong_shape_unexpected_key(model, tmp_path):
    d = tmp_path / "c"
    model.save_pretrained(d)
    sd = load_file(d / "model.safetensors")
    good = dict(sd)
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, d / "model.safetensors")
    with pytest.raises(LumosError) as e:
        LumosModel.from_pretrained(d)
    assert "model.layers.1.mlp.up_proj.weight" in one_line(e) and "missing" in one_line(e)
    sd = dict(good)
    sd["model.norm.weight"] = torch.ones(63)
    save_file(sd, d / "model.safetensors")
    with pytest.raises(LumosError) as e:
        LumosModel.from_pretrained(d)
    assert "model.norm.weight" in one_line(e) and "(63,)" in one_line(e) and "(64,)" in one_line(e)
    sd = dict(good)
    sd["model.layers.9.mlp.up_proj.weight"] = torch.ones(1)
    save_file(sd, d / "model.safetensors")
    with pytest.raises(LumosError, match="unexpected weight 'model.layers.9"):
        LumosModel.from_pretrained(d)


def test_pickles_refused_unless_weights_only(model, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    d = tmp_path / "c"
    model.save_pretrained(d)
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.norm.weight": Evil()}, f)
    with pytest.raises(LumosError) as e:
        LumosModel.from_pretrained(d)
    assert "more than tensors" in one_line(e) and "pytorch_model.bin" in one_line(e)
    assert "weights_only" not in one_line(e)             # never quote torch's advice to unpickle anyway
    # a plain tensor state dict is accepted through torch.load(weights_only=True)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    loaded = LumosModel.from_pretrained(d)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_missing_folder_and_files(tmp_path, model):
    with pytest.raises(LumosError, match="no such checkpoint folder"):
        LumosModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LumosError, match="config.json"):
        LumosModel.from_pretrained(tmp_path / "empty")
    model.save_pretrained(tmp_path / "c", max_shard_bytes=20_000)
    next((tmp_path / "c").glob("model-00002-*")).unlink()
    with pytest.raises(LumosError, match="missing"):
        LumosModel.from_pretrained(tmp_path / "c")
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "config.json").write_text("{not json")
    with pytest.raises(LumosError, match="config"):
        LumosModel.from_pretrained(tmp_path / "c2")


def test_corrupt_safetensors(model, tmp_path):
    d = tmp_path / "c"
    model.save_pretrained(d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LumosError, match="corrupt"):
        LumosModel.from_pretrained(d)


def test_save_is_atomic(model, tmp_path, monkeypatch):
    """A save that dies half way leaves the previous checkpoint intact and no partial folder."""
    d = tmp_path / "c"
    model.save_pretrained(d)
    before = sorted(p.name for p in d.iterdir())
    import lumos.checkpoint as ck

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(RuntimeError):
        model.save_pretrained(d)
    assert sorted(p.name for p in d.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_non_finite_weights_are_refused_by_name(model, tmp_path):
    from lumos.checkpoint import check_finite

    d = tmp_path / "c"
    model.save_pretrained(d, dtype=torch.float32)
    sd = load_file(d / "model.safetensors")
    assert check_finite(sd, d) is sd
    sd["model.layers.1.self_attn.k_proj.weight"][2, 3] = float("-inf")
    save_file(sd, d / "model.safetensors")
    with pytest.raises(LumosError, match=r"weight 'model.layers.1.self_attn.k_proj.weight' holds non-finite values "
                                         r"\(NaN or inf\) in float32; the checkpoint is broken"):
        LumosModel.from_pretrained(d)


def test_config_json_of_the_wrong_shape_or_types(model, tmp_path):
    d = tmp_path / "c"
    model.save_pretrained(d)
    hf = json.loads((d / "config.json").read_text())
    for bad, message in (([hf], "must be a JSON object of keys, got a list"),
                         ({**hf, "hidden_size": "64"}, "hidden_size must be int, got '64'"),
                         ({**hf, "lumos": [1]}, "lumos must be dict"),
                         ({**hf, "lumos": {**hf["lumos"], "rope_scale": [4, "8", 8]}},
                          "lumos.rope_scale must be list of int"),
                         ({**hf, "num_attention_heads": 0}, "n_heads must be >= 1")):
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(LumosError, match=message):
            LumosModel.from_pretrained(d)
    (d / "config.json").write_bytes(b'{"model_type": "cham\xe9leon"}')
    with pytest.raises(LumosError, match="config.json: not a usable Lumos-1 config"):
        LumosModel.from_pretrained(d)
