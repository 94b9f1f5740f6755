"""lumos: Lumos-1 (ICLR 2026) in plain PyTorch.

    from lumos import LumosPipeline, LumosModel, ModelConfig, Vocab

The core is the flat modules of this package (vocab, config, positions, masks, model, checkpoint,
sampling, pipeline, media, utils); the jobs live in sub-packages that stand on it: `lumos.train`,
`lumos.data`, `lumos.tokenizers`, `lumos.world` (Moving Digits) and `lumos.cli` (the `lumos` command).
The names below are imported on first use, so `import lumos` (and `lumos --help`) stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_FACE = {  # name -> the module that defines it
    "LumosError": "lumos.utils",
    "LumosModel": "lumos.model",
    "LumosPipeline": "lumos.pipeline",
    "LumosPipelineOutput": "lumos.pipeline",
    "ModelConfig": "lumos.config",
    "SampleConfig": "lumos.sampling",
    "Vocab": "lumos.vocab",
}
__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name in _FACE:
        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module 'lumos' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
