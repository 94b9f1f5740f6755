"""lumos: Lumos-1 (ICLR 2026) in plain PyTorch.

    from lumos import LumosPipeline, LumosModel, ModelConfig, Vocab

The core is the flat modules of this package (vocab, config, positions, masks, model, checkpoint,
sampling, pipeline, media, utils); the jobs live in sub-packages that stand on it: `lumos.train`,
`lumos.data`, `lumos.tokenizers`, `lumos.world` (Moving Digits) and `lumos.cli` (the `lumos` command).
The names below are imported on first use, so `import lumos` (and `lumos --help`) stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["LumosError", "LumosModel", "LumosPipeline", "ModelConfig", "SampleConfig", "Vocab"]


def __getattr__(name: str):
    if name == "LumosPipeline":
        from lumos.pipeline import LumosPipeline
        return LumosPipeline
    if name == "LumosModel":
        from lumos.model import LumosModel
        return LumosModel
    if name == "ModelConfig":
        from lumos.config import ModelConfig
        return ModelConfig
    if name == "SampleConfig":
        from lumos.sampling import SampleConfig
        return SampleConfig
    if name == "Vocab":
        from lumos.vocab import Vocab
        return Vocab
    if name == "LumosError":
        from lumos.utils import LumosError
        return LumosError
    raise AttributeError(f"module 'lumos' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
