"""Model checkpoints in the format the authors publish (HF Chameleon layout).

A checkpoint directory holds `config.json` (`model_type: chameleon`, `mm_rope: true`, sizes) and the
weights as `model.safetensors`, or as shards `model-0000k-of-0000n.safetensors` listed in
`model.safetensors.index.json` (`{"metadata": {"total_size"}, "weight_map": {key: file}}`). Keys are
HF names (`model.layers.3.self_attn.q_proj.weight`, `lm_head.weight`, ...). `model.vqmodel.*` (the
unused Chameleon VQ-GAN) is ignored. bf16 and fp32 files both load.

File I/O only: `read_config`, `read_weights`, `check_state_dict`, `check_finite`, `save_state_dict`. The model builds
itself from them (`LumosModel.from_pretrained`: meta device, then the file's tensors assigned, so a 3B
model is never initialised twice). Any missing key, unexpected key, or shape mismatch is one
`LumosError` naming the key, and so is a weight holding a NaN or inf (`check_finite`). Pickle files
(`pytorch_model.bin`) are only read with `torch.load(weights_only=True)`, which refuses anything but
tensors.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lumos.config import ModelConfig
from lumos.utils import LumosError, atomic_dir, check_weights, first_line

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "model.bin", "model.pt", "pytorch_model.bin.index.json")
IGNORED_PREFIXES = ("model.vqmodel.",)


def read_config(path: Path) -> ModelConfig:
    f = path / CONFIG
    if not f.is_file():
        raise LumosError(f"{path}: no {CONFIG}; a Lumos checkpoint folder has config.json and *.safetensors")
    try:
        hf = json.loads(f.read_text(encoding="utf-8"))
        return ModelConfig.from_hf_config(hf)
    except OSError as e:
        raise LumosError(f"{f}: cannot read ({e.strerror or first_line(e)})") from None
    except (KeyError, ValueError, TypeError) as e:     # ValueError: not JSON, not UTF-8, a LumosError
        msg = f"missing key {e}" if isinstance(e, KeyError) else first_line(e)
        raise LumosError(f"{f}: not a usable Lumos-1 config ({msg})") from None


def _load_pickle(f: Path) -> dict:
    try:
        with warnings.catch_warnings():         # torch's warnings on odd pickles: the error below says it
            warnings.simplefilter("ignore")
            sd = torch.load(f, map_location="cpu", weights_only=True)
    except Exception:  # UnpicklingError for anything that is not plain tensors; its text is not for users
        raise LumosError(f"{f}: refused: this pickle file holds more than tensors, and lumos runs no code "
                         f"from a checkpoint; convert it to safetensors with a tool you trust") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LumosError(f"{f}: not a state dict of tensors")
    return sd


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (safetensors preferred; pickles only with weights_only)."""
    try:
        if (path / INDEX).is_file():
            index = json.loads((path / INDEX).read_text())
            files = sorted(set(index["weight_map"].values()))
            sd = {}
            for name in files:
                if not (path / name).is_file():
                    raise LumosError(f"{path / name}: shard listed in {INDEX} is missing; re-download the checkpoint")
                sd.update(load_file(path / name))
            return sd
        if (path / SINGLE).is_file():
            return load_file(path / SINGLE)
    except SafetensorError as e:
        raise LumosError(f"{path}: corrupt safetensors file ({e}); re-download or re-save the checkpoint") from None
    except (json.JSONDecodeError, KeyError) as e:
        raise LumosError(f"{path / INDEX}: malformed index ({e})") from None
    for name in PICKLES:
        if (path / name).is_file() and name.endswith((".bin", ".pt")):
            return _load_pickle(path / name)
    raise LumosError(f"{path}: no {SINGLE} or {INDEX} found")


def check_state_dict(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Drop ignored keys (the released files carry the VQ model); then `lumos.utils.check_weights`
    against `expected` (a model's state_dict, possibly of meta tensors)."""
    sd = {k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)}
    return check_weights(expected, sd, where)


def check_finite(sd: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
    """LumosError naming the first floating-point weight holding a NaN or inf (such a model generates
    noise, or NaN logits). Min and max of each tensor: no copy the size of the weight; the flags stay on
    the device and are read once (one sync for the whole model on a GPU). Returns sd."""
    names = [k for k, v in sd.items() if v.is_floating_point() and v.numel()]
    if not names:
        return sd
    ok = torch.stack([torch.isfinite(torch.stack(torch.aminmax(sd[k]))).all() for k in names])
    if not bool(ok.all()):
        k = names[int((~ok).nonzero()[0])]
        raise LumosError(f"{where}: weight {k!r} holds non-finite values (NaN or inf) in "
                         f"{str(sd[k].dtype).replace('torch.', '')}; the checkpoint is broken: "
                         f"re-download it or save it again from a healthy run")
    return sd


def save_state_dict(state_dict: dict, config: ModelConfig, path, dtype=torch.bfloat16,
                    max_shard_bytes: int = 5 * 2**30) -> None:
    """Write `config.json` + safetensors (sharded above `max_shard_bytes`, with the HF index) atomically:
    the folder appears complete or not at all. Takes a state dict and its config, so the same call
    serves `LumosModel.save_pretrained` and a full state dict gathered from FSDP shards on rank 0."""
    path = Path(path)
    sd = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in state_dict.items()}
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if cur and size + n > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += n
    shards.append(cur)
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config.to_hf_config(), indent=2) + "\n")
        if len(shards) == 1:
            save_file(shards[0], tmp / SINGLE, metadata={"format": "pt"})
            return
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, tmp / name, metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        (tmp / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
