"""Scripted stand-ins for the Cosmos-Tokenizer-DV4x8x8 TorchScript files, for tests without the weights.

Same file names and call signatures as the real ones:
    encoder.jit: float [B, 3, T, H, W] in [-1, 1] -> (indices [B, 1 + ceil((T-1)/4), H/8, W/8], codes)
    decoder.jit: int64 [B, t, h, w]               -> float [B, 3, 1 + 4 (t-1), 8h, 8w] in [-1, 1]
The encoder is a causal 4x8x8 average pool (the first frame alone, then groups of 4, the last group
padded by repeating its last frame) followed by a 40-level quantiser per RGB channel:
index = 1600 q_r + 40 q_g + q_b in [0, 64000). The decoder inverts the quantiser and upsamples with
nearest neighbours (the first latent frame -> 1 frame, the others -> 4), so a piecewise-constant
video round-trips to within half a quantiser step (255 / 39 / 2 ~ 3.3 grey levels).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Tuple

import torch
import torch.nn.functional as F

LEVELS = 40  # 40 ** 3 = 64,000 = the Cosmos codebook size


def _causal_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, 3, 1 + ceil((T-1)/4), H/8, W/8]."""
    first = F.avg_pool3d(x[:, :, :1], kernel_size=(1, 8, 8))
    rest = x[:, :, 1:]
    T = rest.shape[2]
    if T == 0:
        return first
    pad = (4 - T % 4) % 4
    if pad > 0:
        rest = torch.cat([rest, rest[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
    return torch.cat([first, F.avg_pool3d(rest, kernel_size=(4, 8, 8))], dim=2)


def _quantise(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    L = 40  # = LEVELS (TorchScript cannot read module globals)
    q = ((x.float().clamp(-1, 1) + 1) / 2 * (L - 1)).round().to(torch.int64)   # [B, 3, t, h, w]
    indices = q[:, 0] * L * L + q[:, 1] * L + q[:, 2]                           # [B, t, h, w]
    return indices, q


class StandInEncoder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        indices, q = _quantise(_causal_pool(x))
        return indices, q


class StandInEncoderBare(torch.nn.Module):
    """Returns the indices alone (a re-exported encoder)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, q = _quantise(_causal_pool(x))
        return indices


class StandInDecoder(torch.nn.Module):
    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        L = 40
        q = torch.stack([indices // (L * L), (indices // L) % L, indices % L], dim=1)
        x = q.float() / (L - 1) * 2 - 1                                       # [B, 3, t, h, w]
        x = x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)         # [B, 3, t, 8h, 8w]
        return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)


class WrongShapeEncoder(torch.nn.Module):
    """An 8x8x8 tokenizer (the DV8x8x8 the Lumos README links by mistake)."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        indices, q = _quantise(F.avg_pool3d(x, kernel_size=(1, 16, 16)))
        return indices, q


def save_cosmos_stand_in(folder, bare: bool = False, wrong_shape: bool = False) -> Path:
    """Script the stand-ins and save them as `folder/encoder.jit`, `folder/decoder.jit`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    enc = WrongShapeEncoder() if wrong_shape else StandInEncoderBare() if bare else StandInEncoder()
    with warnings.catch_warnings():  # torch >= 2.10 deprecates jit.script; the real files are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(enc).save(str(folder / "encoder.jit"))
        torch.jit.script(StandInDecoder()).save(str(folder / "decoder.jit"))
    return folder


def save_vq_stand_in(folder, **config) -> Path:
    """A tiny built-in VQ tokenizer (random weights, 16 codes, 4x8x8) saved with `save_pretrained`;
    `config`: other VQConfig fields."""
    from lumos.tokenizers.vq import VQConfig, VQTokenizer

    torch.manual_seed(0)
    cfg = VQConfig(patch_size=8, channels=(8,), enc_blocks=0, dec_blocks=0, time_blocks=0, levels=(4, 4), **config)
    VQTokenizer(cfg).save_pretrained(folder)
    return Path(folder)
