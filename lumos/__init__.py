"""lumos: Lumos-1 (ICLR 2026) in plain PyTorch."""

from lumos.vocab import Vocab

__version__ = "0.1.0"
__all__ = ["Vocab"]
