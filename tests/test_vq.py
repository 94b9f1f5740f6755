"""The built-in causal video tokenizer (lumos.tokenizers.vq) and its trainer
(lumos.world.train_tokenizer), on tiny configs: frame-count rule, FSQ, shapes, files, causality, and
exact resume."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lumos.cli import main as cli_main
from lumos.world.digits import sample_clip
from lumos.world.train_tokenizer import TrainTokenizerConfig, train_tokenizer
from lumos.utils import LumosError
from lumos.tokenizers.vq import CONFIGS, FSQ, VQTokenizer, video_psnr

ROOT = Path(__file__).resolve().parents[1]


def tiny(k_s=8, k_t=4, **kw) -> VQTokenizer:
    """Random-weight tiny tokenizer (a few thousand parameters)."""
    p = min(k_s, 4)
    levels = int(math.log2(k_s // p)) + 1
    cfg = replace(CONFIGS["tiny"], temporal_compression=k_t, spatial_compression=k_s, patch_size=p,
                  channels=CONFIGS["tiny"].channels[:levels], **kw)
    torch.manual_seed(0)
    return VQTokenizer(cfg).eval()


def rand_video(T, H=16, W=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8))


@pytest.mark.parametrize("k_s", [8, 4])
@pytest.mark.parametrize("T", [1, 5, 6, 17])
def test_causal_frame_count_shapes_and_dtypes(k_s, T):
    tok = tiny(k_s)
    codes = tok.encode(rand_video(T))
    t = 1 + math.ceil((T - 1) / 4)
    assert codes.shape == (t, 16 // k_s, 16 // k_s) and codes.dtype == torch.int64
    assert tok.num_latent_frames(T) == t
    assert codes.min() >= 0 and codes.max() < tok.codebook_size == 60
    video = tok.decode(codes)
    assert video.shape == (1 + 4 * (t - 1), 16, 16, 3) and video.dtype == torch.uint8
    # Batched internals agree with the single-video path. Not bit-exact by construction: a batch of 2
    # may take another conv kernel (another summation order) than a batch of 1, so a float can move by
    # an ulp; an FSQ code may then flip at a rounding edge (rare: at most 1% of codes), and a decoded
    # pixel by one uint8 level (seen on AMD EPYC). The decoded check uses the same codes on both paths.
    batch = tok.encode_batch(torch.stack([rand_video(T), rand_video(T, seed=1)]))
    assert (batch[0] != codes).float().mean() <= 0.01
    diff = (tok.decode_batch(batch)[0].int() - tok.decode(batch[0]).int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.01


def test_fsq_codes_in_range_and_round_trip():
    fsq = FSQ((8, 5, 5, 5))
    z = torch.randn(4096, 4) * 3
    z_q, codes = fsq(z)
    assert codes.dtype == torch.int64 and codes.min() >= 0 and codes.max() < 1000
    assert z_q.abs().max() <= 1
    assert torch.equal(fsq.from_codes(codes), z_q)                      # code -> vector
    every = torch.arange(1000)
    vecs = fsq.from_codes(every)
    assert torch.equal(fsq.to_codes(vecs), every)                       # vector -> code, a bijection
    assert len({tuple(v.tolist()) for v in vecs}) == 1000
    # each channel takes exactly L_i values, all reachable from continuous inputs
    for i, L in enumerate((8, 5, 5, 5)):
        assert len(torch.unique(z_q[:, i])) == L
    # straight-through: gradients reach the continuous input
    z.requires_grad_(True)
    fsq(z)[0].sum().backward()
    assert z.grad.abs().sum() > 0


def test_save_load_gives_identical_outputs(tmp_path):
    tok = tiny()
    with torch.no_grad():                                               # make it not the default init
        for p in tok.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tok.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vq.safetensors", "vq_config.json"]
    back = VQTokenizer.from_pretrained(tmp_path)
    v = rand_video(9)
    codes = tok.encode(v)
    assert torch.equal(back.encode(v), codes)
    assert torch.equal(back.decode(codes), tok.decode(codes))
    assert back.cfg == tok.cfg


def test_bad_checkpoints_raise_lumos_error_naming_the_problem(tmp_path):
    tiny().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "vq_config.json").read_text())
    # wrong shape: the config now asks for wider convs than the weights have
    (tmp_path / "vq_config.json").write_text(json.dumps({**cfg, "channels": [16, 16]}))
    with pytest.raises(LumosError, match=r"weight 'encoder\.stem\.weight' has shape"):
        VQTokenizer.from_pretrained(tmp_path)
    # an unknown config key
    (tmp_path / "vq_config.json").write_text(json.dumps({**cfg, "chanels": [8, 16]}))
    with pytest.raises(LumosError, match="chanels"):
        VQTokenizer.from_pretrained(tmp_path)
    # a missing weight
    (tmp_path / "vq_config.json").write_text(json.dumps(cfg))
    state = load_file(tmp_path / "vq.safetensors")
    state.pop("decoder.conv_out.bias")
    save_file(state, tmp_path / "vq.safetensors")
    with pytest.raises(LumosError, match=r"decoder\.conv_out\.bias"):
        VQTokenizer.from_pretrained(tmp_path)
    # missing files
    (tmp_path / "vq.safetensors").unlink()
    with pytest.raises(LumosError, match="vq.safetensors"):
        VQTokenizer.from_pretrained(tmp_path)
    with pytest.raises(LumosError, match="vq_config.json"):
        VQTokenizer.from_pretrained(tmp_path / "nowhere")
    # bad inputs to encode/decode
    with pytest.raises(LumosError, match="multiple of"):
        tiny().encode(rand_video(5, 12, 12))
    with pytest.raises(LumosError, match="codes must be in"):
        tiny().decode(torch.full((2, 2, 2), 60))


@pytest.mark.parametrize("k_s", [8, 4])
def test_causality(k_s):
    """Changing pixel frame k leaves every latent frame before k's latent frame unchanged (the
    continuous latents, not just the codes), and changes k's own latent frame; the decoder is causal
    the same way."""
    tok = tiny(k_s)
    v = rand_video(17)
    z0 = tok.encoder(tok.to_patches(v[None].float() / 127.5 - 1))      # [1, 5, d, h, w]
    for k in (0, 1, 4, 5, 8, 9, 16):
        v2 = v.clone()
        v2[k] = 255 - v2[k]
        z = tok.encoder(tok.to_patches(v2[None].float() / 127.5 - 1))
        j = 0 if k == 0 else 1 + (k - 1) // 4                           # the latent frame holding pixel frame k
        torch.testing.assert_close(z[:, :j], z0[:, :j], rtol=0, atol=1e-6)
        assert (z[:, j] - z0[:, j]).abs().max() > 1e-3
    codes = tok.encode(v)
    out0 = tok.decode(codes).float()
    for j in range(codes.shape[0]):
        c2 = codes.clone()
        c2[j] = (c2[j] + 7) % tok.codebook_size
        out = tok.decode(c2).float()
        first = 0 if j == 0 else 1 + 4 * (j - 1)                        # first pixel frame of latent frame j
        assert torch.equal(out[:first], out0[:first])           # same shapes, same kernels: exact
        assert (out[first] - out0[first]).abs().max() > 0
    # An image (T = 1) is latent frame 0 of any video that starts with it. Not bit-exact by
    # construction: 1 latent frame instead of 5 gives the 2D convs another batch (B*t) and the causal
    # 3D conv another depth, so another kernel may sum in another order. The latents agree to float
    # rounding (atol 1e-5, values O(1), 7e-7 measured); a code may differ only where FSQ rounds at a .5 edge.
    with torch.no_grad():
        z_img = tok.encoder(tok.to_patches(v[None, :1].float() / 127.5 - 1))
    torch.testing.assert_close(z_img[:, 0], z0[:, 0], rtol=0, atol=1e-5)
    edge = (tok.fsq.bound(z0[0, 0].movedim(0, -1)).frac().abs() - 0.5).abs().lt(1e-4).any(-1)   # [h, w]
    assert torch.equal(tok.encode(v[:1])[0][~edge], codes[0][~edge])


# ------------------------------------------------------------------------------------------ training
def tiny_train_dict(out_dir, **top):
    return {"steps": 4, "batch_size": 2, "lr": 3e-3, "out_dir": str(out_dir), "warmup_steps": 2, "ckpt_every": 2,
            "image_every": 2, "image_batch_size": 2, "eval_videos": 4, "two_digit_fraction": 0.5, **top,
            "model": {"channels": [8, 16], "enc_blocks": 1, "dec_blocks": 1, "levels": [5, 4, 3], "groups": 4},
            "data": {"height": 32, "width": 32, "num_frames": 5, "digit_size": 12}}


def test_tiny_training_run_writes_tokenizer_and_metrics(tmp_path):
    cfg = TrainTokenizerConfig.from_dict(tiny_train_dict(tmp_path / "run"))
    metrics = train_tokenizer(cfg, progress=False)
    out = tmp_path / "run"
    assert {"vq.safetensors", "vq_config.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()                           # keep_checkpoint = false
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 4 and saved["eval_videos"] == 4 and saved["codebook_size"] == 60
    assert saved["two_digits"]["eval_videos"] == 1                     # the two-digit mode is measured too
    assert 0 < saved["codebook_usage"] <= 1 and math.isfinite(saved["psnr_mean"])
    assert saved["psnr_min"] <= saved["psnr_mean"] == metrics["psnr_mean"]
    tok = VQTokenizer.from_pretrained(out)
    clip = sample_clip("val", np.random.default_rng(0), cfg.data)[0]
    assert tok.encode(clip).shape == (2, 4, 4)


def optimizer_tensors(checkpoint) -> dict:
    """The AdamW state of a checkpoint folder, flat: {"<param>.<name>": tensor}."""
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    straight = TrainTokenizerConfig.from_dict(tiny_train_dict(tmp_path / "a", keep_checkpoint=True))
    train_tokenizer(straight, progress=False)
    killed = replace(straight, out_dir=str(tmp_path / "b"))
    assert train_tokenizer(killed, progress=False, stop_at=2) == {"stopped_at": 2}
    assert not (tmp_path / "b" / "vq.safetensors").exists()
    with pytest.raises(LumosError, match="--resume"):                   # never silently restart over it
        train_tokenizer(killed, progress=False)
    metrics = train_tokenizer(killed, resume=True, progress=False)
    assert metrics["resumed_from_step"] == 2
    a, b = load_file(tmp_path / "a" / "vq.safetensors"), load_file(tmp_path / "b" / "vq.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = (optimizer_tensors(tmp_path / run / "checkpoints" / "step-000004") for run in ("a", "b"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    # and the run did train: weights moved away from the seed's initialisation
    torch.manual_seed(0)
    init = VQTokenizer(straight.model).state_dict()
    assert not torch.equal(init["encoder.stem.weight"], a["encoder.stem.weight"])
    # resuming with a different architecture is refused
    changed = TrainTokenizerConfig.from_dict({**tiny_train_dict(tmp_path / "a"),
                                              "model": {"channels": [16, 16], "groups": 4}})
    with pytest.raises(LumosError, match="model"):
        train_tokenizer(changed, resume=True, progress=False)


def test_config_errors(tmp_path):
    d = tiny_train_dict(tmp_path)
    with pytest.raises(LumosError, match="lrr"):
        TrainTokenizerConfig.from_dict({**d, "lrr": 1e-3})
    with pytest.raises(LumosError, match=r"unknown \[model\] keys \['chanels'\]"):
        TrainTokenizerConfig.from_dict({**d, "model": {"chanels": [8, 16]}})
    with pytest.raises(LumosError, match=r"unknown \[data\] keys \['fsp'\]"):
        TrainTokenizerConfig.from_dict({**d, "data": {"fsp": 8}})
    no_steps = {k: v for k, v in d.items() if k != "steps"}
    with pytest.raises(LumosError, match="missing required config key.*steps"):
        TrainTokenizerConfig.from_dict(no_steps)
    with pytest.raises(LumosError, match="'batch_size' must be of type int"):
        TrainTokenizerConfig.from_dict({**d, "batch_size": "8"})
    with pytest.raises(LumosError, match="channels"):
        TrainTokenizerConfig.from_dict({**d, "model": {"channels": [8, 16, 32]}})  # 3 levels for 8 / 4 = 2 levels
    # through the CLI: one line on stderr, exit code 2
    bad = tmp_path / "bad.toml"
    bad.write_text('steps = 2\nbatch_size = 2\nlr = 1e-3\nwarmup = 10\n')
    assert cli_main(["train-tokenizer", str(bad)]) == 2
    assert cli_main(["train-tokenizer", str(tmp_path / "missing.toml")]) == 2


def test_shipped_config_parses_and_cli_trains(tmp_path):
    cfg = TrainTokenizerConfig.from_toml(ROOT / "configs" / "tokenizer-moving-digits.toml")
    assert cfg.model.codebook_size <= 4096
    assert (cfg.model.temporal_compression, cfg.model.spatial_compression) == (4, 8)
    assert (cfg.data.height, cfg.data.width, cfg.data.num_frames) == (64, 64, 17)
    toml = tmp_path / "tiny.toml"
    d = tiny_train_dict(tmp_path / "ignored", steps=2)
    lines = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section in ("model", "data"):
        lines += [f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in d[section].items()]
    toml.write_text("\n".join(lines) + "\n")
    assert cli_main(["train-tokenizer", str(toml), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "metrics.json").is_file() and not (tmp_path / "ignored").exists()


def test_shipped_tokenizer_reconstructs_validation_clips():
    """The trained Moving Digits tokenizer in the package keeps its quality (issue 3: >= 28 dB)."""
    tok = VQTokenizer.from_pretrained(ROOT / "lumos" / "assets" / "moving-digits" / "tokenizer")
    videos = torch.from_numpy(np.stack([sample_clip("val", np.random.default_rng([99, i]))[0] for i in range(16)]))
    codes = tok.encode_batch(videos)
    assert codes.shape == (16, 5, 8, 8)
    psnr = video_psnr(tok.decode_batch(codes), videos)
    assert psnr.mean() >= 28.0, psnr


# ------------------------------------------------------------------------------------------ circular padding
@pytest.mark.parametrize("k_s", [8, 4])
def test_circular_padding_is_equivariant_to_rolls_of_the_canvas(k_s):
    """With padding_mode="circular" the tokenizer works on a torus: rolling a video by a multiple of the
    spatial compression rolls its latents (and the decoded pixels of rolled codes) by the same amount.
    The same arithmetic at other offsets, so equal to float rounding (atol 1e-5 on O(1) latents, a few
    1e-7 measured). With zero padding the edges break it (checked, so the test can fail)."""
    v = rand_video(9, 16, 16)
    shift = (k_s, 2 * k_s if 2 * k_s < 16 else 0)                   # pixels (rows, cols)
    lat = (shift[0] // k_s, shift[1] // k_s)
    gaps = {}
    for mode in ("circular", "zeros"):
        tok = tiny(k_s, padding_mode=mode)
        with torch.no_grad():
            enc = lambda x: tok.encoder(tok.to_patches(x[None].float() / 127.5 - 1))[0]      # [t, d, h, w]
            z, z_rolled = enc(v), enc(torch.roll(v, shift, dims=(1, 2)))
        gaps[mode] = (torch.roll(z, lat, dims=(2, 3)) - z_rolled).abs().max().item()
        if mode == "circular":
            codes = tok.encode(v)
            torch.testing.assert_close(tok.decode(torch.roll(codes, lat, dims=(1, 2))).float(),
                                       torch.roll(tok.decode(codes), shift, dims=(1, 2)).float(), rtol=0, atol=1.0)
    assert gaps["circular"] < 1e-5, gaps
    assert gaps["zeros"] > 1e-2, gaps


def test_padding_mode_is_checked_and_reaches_every_padded_conv():
    with pytest.raises(LumosError, match="padding_mode must be one of zeros, circular"):
        replace(CONFIGS["tiny"], padding_mode="reflect")
    tok = VQTokenizer.from_pretrained(ROOT / "lumos" / "assets" / "moving-digits" / "tokenizer")
    assert tok.cfg == CONFIGS["moving-digits"] and tok.cfg.padding_mode == "zeros"    # as it was trained
    circ = VQTokenizer(replace(CONFIGS["moving-digits"], padding_mode="circular"))
    padded = [m for m in circ.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and any(m.padding)]
    assert len(padded) > 10 and all(m.padding_mode == "circular" for m in padded)
    circ.load_state_dict(tok.state_dict())                   # the same weights: only the padding differs
