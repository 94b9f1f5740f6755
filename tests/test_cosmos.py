"""CosmosTokenizer adapter against scripted stand-ins of encoder.jit / decoder.jit (no weights needed)."""

import numpy as np
import pytest
import torch

from _stand_ins import save_cosmos_stand_in, save_vq_stand_in
from lumos.tokenizers.cosmos import CosmosTokenizer
from lumos.tokenizers import load_video_tokenizer
from lumos.utils import LumosError


def blocky_video(T, H, W, seed=0):
    """uint8 [T, H, W, 3], constant on 8x8 blocks and on the causal frame groups {0}, {1..4}, {5..8}, ...
    so the stand-in round-trips it up to quantisation."""
    g = torch.Generator().manual_seed(seed)
    t = 1 + (T - 1 + 3) // 4
    lat = torch.randint(0, 256, (t, H // 8, W // 8, 3), generator=g, dtype=torch.uint8)
    v = lat.repeat_interleave(8, 1).repeat_interleave(8, 2)               # [t, H, W, 3]
    v = torch.cat([v[:1], v[1:].repeat_interleave(4, 0)])[:T]             # [T, H, W, 3]
    return v.numpy()


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    return save_cosmos_stand_in(tmp_path_factory.mktemp("cosmos"))


@pytest.mark.parametrize("T", [1, 17])
def test_round_trip_shapes_and_values(cosmos_dir, T):
    tok = CosmosTokenizer(cosmos_dir)
    video = blocky_video(T, 32, 48)
    codes = tok.encode(video)
    t = 1 + (T - 1 + 3) // 4
    assert codes.shape == (t, 4, 6) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 64_000
    out = tok.decode(codes)
    assert out.shape == (1 + 4 * (t - 1), 32, 48, 3) and out.dtype == torch.uint8
    err = (out[:T].int() - torch.from_numpy(video).int()).abs().max().item()
    assert err <= 4, err  # half a quantiser step (3.3 grey levels), rounded


def test_decode_accepts_numpy_and_rejects_bad_codes(cosmos_dir):
    tok = CosmosTokenizer(cosmos_dir)
    codes = np.arange(2 * 2 * 3).reshape(2, 2, 3) * 1000
    assert tok.decode(codes).shape == (5, 16, 24, 3)
    with pytest.raises(LumosError, match="outside"):
        tok.decode(np.full((1, 2, 2), 64_000))
    with pytest.raises(LumosError, match=r"\[t, h, w\]"):
        tok.decode(np.zeros((2, 2)))


def test_bare_tensor_encoder(tmp_path):
    tok = CosmosTokenizer(save_cosmos_stand_in(tmp_path, bare=True))
    assert tok.encode(blocky_video(5, 16, 16)).shape == (2, 2, 2)


def test_missing_file(tmp_path, cosmos_dir):
    (tmp_path / "encoder.jit").write_bytes((cosmos_dir / "encoder.jit").read_bytes())
    with pytest.raises(LumosError, match=r"decoder\.jit: missing.*DV4x8x8"):
        CosmosTokenizer(tmp_path)
    with pytest.raises(LumosError, match="folder not found"):
        CosmosTokenizer(tmp_path / "nope")
    # decode-only use does not need the encoder
    only_dec = tmp_path / "dec"
    only_dec.mkdir()
    (only_dec / "decoder.jit").write_bytes((cosmos_dir / "decoder.jit").read_bytes())
    tok = CosmosTokenizer(only_dec, encoder=False)
    assert tok.decode(np.zeros((1, 1, 1), np.int64)).shape == (1, 8, 8, 3)
    with pytest.raises(LumosError, match="encoder=False"):
        tok.encode(blocky_video(1, 8, 8))


def test_corrupt_file_and_wrong_shapes(tmp_path):
    bad = save_cosmos_stand_in(tmp_path / "bad")
    (bad / "decoder.jit").write_bytes(b"not a zip archive")
    with pytest.raises(LumosError, match=r"decoder\.jit: not a loadable TorchScript"):
        CosmosTokenizer(bad)
    tok = CosmosTokenizer(save_cosmos_stand_in(tmp_path / "dv8", wrong_shape=True))
    with pytest.raises(LumosError, match=r"expected \(1, 2, 2, 2\).*DV4x8x8"):
        tok.encode(blocky_video(5, 16, 16))
    with pytest.raises(LumosError, match="multiple of the tokenizer patch"):
        tok.encode(np.zeros((1, 12, 16, 3), np.uint8))


def test_load_video_tokenizer_dispatch(tmp_path, cosmos_dir):
    tok = load_video_tokenizer(cosmos_dir)
    assert isinstance(tok, CosmosTokenizer) and tok.dtype == torch.float32
    vq = load_video_tokenizer(save_vq_stand_in(tmp_path / "vq"))
    assert type(vq).__name__ == "VQTokenizer" and vq.codebook_size == 16
    with pytest.raises(LumosError, match="not a visual tokenizer folder"):
        load_video_tokenizer(tmp_path)
    with pytest.raises(LumosError, match="not found"):
        load_video_tokenizer(tmp_path / "missing")
