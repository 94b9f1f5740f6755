"""The visual tokenizer interface: video (uint8 `[T, H, W, 3]`) <-> discrete codes `[t, h, w]`.

A causal video tokenizer encodes the first frame alone and then `temporal_compression` frames per
latent frame: t = 1 + ceil((T - 1) / k_t), h = H / k_s, w = W / k_s. Decoding gives back
T' = 1 + k_t (t - 1) frames. Implementations: `lumos.tokenizers.cosmos.CosmosTokenizer` (the released models'
Cosmos-Tokenizer-DV4x8x8, TorchScript files) and the built-in `lumos.tokenizers.vq` tokenizer.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from lumos.utils import LumosError


def num_latent_frames(num_frames: int, temporal_compression: int) -> int:
    """Causal rule: the first frame alone, then k_t frames per latent frame."""
    if num_frames < 1:
        raise LumosError(f"a video needs at least one frame, got {num_frames}")
    return 1 + math.ceil((num_frames - 1) / temporal_compression)


class VideoTokenizer:
    temporal_compression: int   # k_t: pixel frames per latent frame after the first
    spatial_compression: int    # k_s: pixels per token side
    codebook_size: int          # codes are in [0, codebook_size)

    def num_latent_frames(self, num_frames: int) -> int:
        return num_latent_frames(num_frames, self.temporal_compression)

    def num_pixel_frames(self, latent_frames: int) -> int:
        return 1 + self.temporal_compression * (latent_frames - 1)

    def check_video(self, video) -> torch.Tensor:
        """Validate a uint8 `[T, H, W, 3]` video (numpy or torch) and return it as a torch tensor."""
        if isinstance(video, np.ndarray):
            video = torch.from_numpy(np.ascontiguousarray(video))
        if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            shape = tuple(getattr(video, "shape", ()))
            raise LumosError(f"expected a uint8 video [T, H, W, 3], got {getattr(video, 'dtype', type(video))} "
                             f"of shape {shape}")
        T, H, W, _ = video.shape
        k = self.spatial_compression
        if H % k or W % k:
            raise LumosError(f"video size {W}x{H} is not a multiple of the tokenizer patch {k}; resize or crop it "
                             f"(lumos.media does this for you)")
        return video

    def encode(self, video) -> torch.Tensor:
        """uint8 `[T, H, W, 3]` -> int64 codes `[t, h, w]`."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes `[t, h, w]` -> uint8 video `[T', H, W, 3]`."""
        raise NotImplementedError

    def save_pretrained(self, folder) -> Path:
        """Write the tokenizer into `folder` so that `lumos.tokenizers.load_video_tokenizer(folder)` loads it."""
        raise LumosError(f"{type(self).__name__} cannot save itself; give a tokenizer folder instead")


def copy_file(src, dst) -> Path:
    """`src` -> `dst` without a symlink: a hard link when both are on one filesystem (no bytes copied; a
    later atomic rewrite of `src` leaves `dst` as it was), else a copy. `dst` is replaced."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst
