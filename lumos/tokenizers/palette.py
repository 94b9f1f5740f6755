"""The synthetic videos' tokenizer: a code is a flat tile of one colour. It has no weights.

`lumos train configs/tiny.toml` trains on procedural token videos (`lumos.train.batches.SyntheticVideos`)
that no camera ever saw; this tokenizer is what makes such a run a pipeline you can look at: decoding
paints each code as a `patch` x `patch` tile of its palette colour, encoding takes the palette colour
nearest to each tile's mean. One pixel frame per latent frame (`temporal_compression` 1).

    tok = PaletteTokenizer(codebook_size=64, patch=16)
    video = tok.decode(torch.randint(0, 64, (3, 4, 4)))   # uint8 [3, 64, 64, 3]
    tok.save_pretrained("folder")                         # folder/palette.json; load_video_tokenizer reads it
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lumos.tokenizers.base import VideoTokenizer
from lumos.utils import LumosError, atomic_write_json

CONFIG_FILE = "palette.json"


def palette(n: int) -> np.ndarray:
    """`n` distinct colours, uint8 [n, 3]: hues around the wheel by the golden angle (neighbouring codes get
    far-apart colours), three brightness levels."""
    hue = (np.arange(n) * 0.6180339887) % 1.0
    value = np.array([1.0, 0.75, 0.5])[np.arange(n) % 3]
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6) % 6            # HSV -> RGB, saturation 0.8
    rgb = value[:, None] * (1 - 0.8 * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.round(rgb * 255).astype(np.uint8)


class PaletteTokenizer(VideoTokenizer):
    temporal_compression = 1

    def __init__(self, codebook_size: int, patch: int = 16):
        if not (isinstance(codebook_size, int) and codebook_size >= 1 and isinstance(patch, int) and patch >= 1):
            raise LumosError(f"palette tokenizer: codebook_size and patch must be positive integers, got "
                             f"{codebook_size!r}, {patch!r}")
        self.codebook_size, self.spatial_compression = codebook_size, patch
        self.colours = torch.from_numpy(palette(codebook_size))

    def __repr__(self):
        return f"PaletteTokenizer(codebook_size={self.codebook_size}, patch={self.spatial_compression})"

    def encode(self, video) -> torch.Tensor:
        """uint8 `[T, H, W, 3]` -> int64 codes `[T, H/patch, W/patch]`: the palette colour nearest each tile's mean."""
        video = self.check_video(video)
        T, H, W, _ = video.shape
        k = self.spatial_compression
        tiles = video.float().view(T, H // k, k, W // k, k, 3).mean((2, 4))            # [T, h, w, 3]
        return torch.cdist(tiles.view(-1, 3), self.colours.float()).argmin(-1).view(T, H // k, W // k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes `[t, h, w]` -> uint8 `[t, h * patch, w * patch, 3]`."""
        codes = torch.as_tensor(codes).cpu()
        if codes.ndim != 3 or codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise LumosError(f"palette tokenizer: expected codes [t, h, w] in [0, {self.codebook_size}), got shape "
                             f"{tuple(codes.shape)}")
        k = self.spatial_compression
        return self.colours[codes].repeat_interleave(k, 1).repeat_interleave(k, 2)

    def save_pretrained(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / CONFIG_FILE, {"codebook_size": self.codebook_size, "patch": self.spatial_compression})
        return folder

    @classmethod
    def from_pretrained(cls, folder) -> "PaletteTokenizer":
        path = Path(folder) / CONFIG_FILE
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LumosError(f"{path}: not a readable palette tokenizer config ({type(e).__name__})") from None
        if not isinstance(cfg, dict) or set(cfg) != {"codebook_size", "patch"}:
            raise LumosError(f"{path}: expected a JSON object with exactly the keys codebook_size and patch")
        return cls(cfg["codebook_size"], cfg["patch"])
