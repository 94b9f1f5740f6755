"""Pick the visual tokenizer from what a folder holds.

    load_video_tokenizer("ckpts/Cosmos-Tokenizer-DV4x8x8")   # encoder.jit + decoder.jit -> CosmosTokenizer
    load_video_tokenizer("runs/vq-tiny")                     # vq_config.json -> lumos.tokenizers.vq.VQTokenizer
    load_video_tokenizer("runs/tiny/tokenizer")              # palette.json -> lumos.tokenizers.palette.PaletteTokenizer
"""

from __future__ import annotations

import inspect
from pathlib import Path

from lumos.utils import LumosError
from lumos.tokenizers.base import VideoTokenizer


def load_video_tokenizer(path, device="cpu", **kwargs) -> VideoTokenizer:
    """A `VideoTokenizer` for the folder `path`: Cosmos when it has encoder.jit or decoder.jit, the
    built-in VQ tokenizer when it has vq_config.json, the synthetic videos' colour tiles when it has
    palette.json. `kwargs` go to the Cosmos constructor (dtype, encoder=False, ...)."""
    from lumos.tokenizers.cosmos import DECODER_FILE, ENCODER_FILE, CosmosTokenizer

    path = Path(path)
    if not path.is_dir():
        raise LumosError(f"{path}: visual tokenizer folder not found")
    if (path / ENCODER_FILE).exists() or (path / DECODER_FILE).exists():
        return CosmosTokenizer(path, device=device, **kwargs)   # names the missing half, if any
    if (path / "vq_config.json").exists():
        from lumos.tokenizers.vq import VQTokenizer  # lazy: the built-in tokenizer's module is only needed here

        load = VQTokenizer.from_pretrained
        if "device" in inspect.signature(load).parameters:
            return load(path, device=device)
        return load(path)
    if (path / "palette.json").exists():
        from lumos.tokenizers.palette import PaletteTokenizer   # the synthetic videos' colour tiles

        return PaletteTokenizer.from_pretrained(path)
    raise LumosError(f"{path}: not a visual tokenizer folder: expected {ENCODER_FILE} + {DECODER_FILE} "
                     f"(Cosmos-Tokenizer-DV4x8x8) or vq_config.json (a tokenizer trained with "
                     f"`lumos train-tokenizer`) or palette.json (a run on synthetic videos)")
