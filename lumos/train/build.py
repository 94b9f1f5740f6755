"""What `lumos train` trains on and what it trains: the data source, the model config, the starting
weights, the model placed on the device(s), and how its weights go into and out of a checkpoint.

    source, mcfg = open_data(cfg)                 # records (their vocabulary) or synthetic videos
    model, core = build_model(cfg, mcfg, rt)      # the module to call (DDP/FSDP/compiled) and the LumosModel
    save_weights(folder, model, core, rt)         # HF format, fp32: LumosModel.from_pretrained(folder)
    load_weights(folder, core)
"""

from __future__ import annotations

from pathlib import Path

import torch

from lumos.checkpoint import check_state_dict, read_config, read_weights, save_state_dict
from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos.train.batches import SyntheticVideos, open_source
from lumos.train.config import TrainConfig
from lumos.train.parallelize import parallelize
from lumos.train.runtime import Runtime
from lumos.utils import LumosError


def open_data(cfg: TrainConfig):
    """-> (source, model config): the record folders of `data`, or `SyntheticVideos` in the model's
    vocabulary when `data` is empty."""
    source, data_vocab = open_source(cfg.data) if cfg.data else (None, None)
    mcfg = model_config(cfg, data_vocab)
    return (source if source is not None else SyntheticVideos(mcfg.vocab, **cfg.synthetic)), mcfg


def model_config(cfg: TrainConfig, data_vocab) -> ModelConfig:
    """Preset + overrides; the records' vocabulary replaces the preset's (a preset names shapes, the
    data names the token layout). With `init_from`, the checkpoint's own config."""
    if cfg.init_from:
        mcfg = read_config(Path(cfg.init_from))
        if data_vocab is not None and mcfg.vocab != data_vocab:
            raise LumosError(f"{cfg.init_from}: its vocabulary ({mcfg.vocab.name}) differs from the records'")
        return mcfg.replace(**cfg.model_overrides) if cfg.model_overrides else mcfg
    overrides = dict(cfg.model_overrides)
    if data_vocab is not None:
        overrides["vocab"] = data_vocab
    return ModelConfig.from_name(cfg.model, **overrides)


def initial_weights(cfg: TrainConfig, mcfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Starting weights (fp32, CPU): `init_from`, or the seeded random init of `LumosModel.init_weights`."""
    if cfg.init_from:
        return LumosModel.from_pretrained(cfg.init_from, dtype=torch.float32).state_dict()
    return LumosModel.from_config(mcfg, device="cpu", seed=cfg.seed).state_dict()


def build_model(cfg: TrainConfig, mcfg: ModelConfig, rt: Runtime):
    """-> (module to call, the LumosModel inside it). Weights are fp32 masters.

    FSDP: meta-device model -> parallelize -> to_empty -> rank 0's initial weights broadcast into the
    shards. (Running init_weights on the shards would draw other random numbers than one process
    does; broadcasting makes every world size start from the same model.)"""
    kw = dict(ac=cfg.activation_checkpointing, compile=cfg.compile, device=rt.device)
    with torch.device("meta"):
        core = LumosModel(mcfg)
    if rt.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        model = parallelize(core, "fsdp", param_dtype=rt.dtype if rt.dtype != torch.float32 else None, **kw)
        model.to_empty(device=rt.device)
        full = initial_weights(cfg, mcfg) if rt.rank == 0 else {}
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        return model, core
    core.load_state_dict(initial_weights(cfg, mcfg), assign=True)
    core.to(rt.device)
    return parallelize(core, rt.parallel, **kw), core


def save_weights(folder: Path, model, core: LumosModel, rt: Runtime) -> None:
    """The full fp32 weights in the HF format into `folder`. Every rank calls it (under FSDP the
    shards are gathered, to CPU); rank 0 writes."""
    if rt.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rt.rank == 0:
            save_state_dict(full, core.config, folder, dtype=torch.float32)
    elif rt.rank == 0:  # one process / DDP: every rank holds the same weights
        core.save_pretrained(folder, dtype=torch.float32)


def load_weights(folder: Path, core: LumosModel) -> None:
    """Weights written by `save_weights` into the (unsharded) model, checked key by key."""
    core.load_state_dict(check_state_dict(core.state_dict(), read_weights(folder), folder))
