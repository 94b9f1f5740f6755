"""NVIDIA Cosmos-Tokenizer-DV4x8x8, the visual tokenizer of the released Lumos-1 checkpoints.

Loaded from a local folder holding the TorchScript files `encoder.jit` and `decoder.jit` (the HF repo
`nvidia/Cosmos-Tokenizer-DV4x8x8`; the Lumos README links DV8x8x8 by mistake, notes §4). Nothing is
downloaded. Contract of the two files (notes §1.1, §4):

    encoder: float [B, 3, T, H, W] in [-1, 1]  ->  (indices [B, t, H/8, W/8], codes [B, 6, t, H/8, W/8])
    decoder: int   [B, t, h, w] in [0, 64000)   ->  float [B, 3, 1 + 4 (t - 1), 8 h, 8 w] in [-1, 1]

with t = 1 + ceil((T - 1) / 4) (causal: the first latent frame encodes the first frame alone; FSQ
levels (8,8,8,5,5,5) give 64,000 codes). The encoder may also return the indices alone; both forms
are accepted. The clip is passed to the encoder whole and unpadded, as the reference does (84 frames
-> 22 latent frames).

Usage:
    tok = CosmosTokenizer("ckpts/Cosmos-Tokenizer-DV4x8x8", device="cuda")
    codes = tok.encode(video)      # uint8 [T, H, W, 3] -> int64 [t, H/8, W/8] (on the CPU)
    video = tok.decode(codes)      # -> uint8 [1 + 4 (t - 1), H, W, 3]
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from lumos.utils import LumosError, first_line
from lumos.tokenizers.base import VideoTokenizer, copy_file

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"


def _load_jit(path: Path, device: torch.device, dtype: torch.dtype):
    if not path.is_file():
        raise LumosError(f"{path}: missing. A Cosmos tokenizer folder needs {ENCODER_FILE} and {DECODER_FILE}; "
                         f"download nvidia/Cosmos-Tokenizer-DV4x8x8 (not DV8x8x8) into {path.parent}")
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates TorchScript, but NVIDIA ships Cosmos only as .jit files.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise LumosError(f"{path}: not a loadable TorchScript file ({first_line(e)}); re-download it from "
                         f"nvidia/Cosmos-Tokenizer-DV4x8x8") from None
    return module.to(dtype).eval()


class CosmosTokenizer(VideoTokenizer):
    temporal_compression = 4
    spatial_compression = 8
    codebook_size = 64_000

    def __init__(self, path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 encoder: bool = True, decoder: bool = True):
        """path: folder with encoder.jit / decoder.jit. dtype: defaults to bf16 on GPU (what the
        reference runs) and fp32 on CPU (bf16 convolutions are slow there). `encoder=False` or
        `decoder=False` skips loading a half that is not needed (e.g. sampling only decodes)."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise LumosError(f"{self.path}: Cosmos tokenizer folder not found (expected {ENCODER_FILE} and "
                             f"{DECODER_FILE} from nvidia/Cosmos-Tokenizer-DV4x8x8)")
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self._encoder = _load_jit(self.path / ENCODER_FILE, self.device, self.dtype) if encoder else None
        self._decoder = _load_jit(self.path / DECODER_FILE, self.device, self.dtype) if decoder else None

    def __repr__(self):
        return f"CosmosTokenizer({str(self.path)!r}, device={str(self.device)!r}, dtype={self.dtype})"

    def save_pretrained(self, folder) -> Path:
        """Copy the TorchScript files of this tokenizer's folder (those it has) into `folder`."""
        folder = Path(folder)
        for name in (ENCODER_FILE, DECODER_FILE):
            if (self.path / name).is_file():
                copy_file(self.path / name, folder / name)
        return folder

    @torch.no_grad()
    def encode(self, video) -> torch.Tensor:
        """uint8 `[T, H, W, 3]` (numpy or torch) -> int64 codes `[t, H/8, W/8]` on the CPU."""
        if self._encoder is None:
            raise LumosError(f"{self!r} was created with encoder=False")
        video = self.check_video(video)
        T, H, W, _ = video.shape
        x = video.to(self.device).permute(3, 0, 1, 2)[None]          # [1, 3, T, H, W] uint8
        x = (x.to(torch.float32) / 127.5 - 1.0).to(self.dtype)        # [-1, 1], as x / 255 * 2 - 1
        out = self._encoder(x)
        # The real encoder.jit returns (indices, codes); a re-exported one may return indices only.
        indices = out[0] if isinstance(out, (tuple, list)) else out
        t = self.num_latent_frames(T)
        expected = (1, t, H // self.spatial_compression, W // self.spatial_compression)
        if not isinstance(indices, torch.Tensor) or tuple(indices.shape) != expected:
            got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise LumosError(f"{self.path / ENCODER_FILE} returned indices of shape {got} for a video of "
                             f"{T} frames of {W}x{H}; expected {expected} (4x temporal, 8x spatial). Is this "
                             f"Cosmos-Tokenizer-DV4x8x8 (not DV8x8x8 or a continuous CV tokenizer)?")
        codes = indices[0].to(torch.int64).cpu()
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise LumosError(f"{self.path / ENCODER_FILE} returned codes outside [0, {self.codebook_size}): "
                             f"min {int(codes.min())}, max {int(codes.max())}")
        return codes

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """int codes `[t, h, w]` (numpy or torch) -> uint8 video `[1 + 4 (t - 1), 8 h, 8 w, 3]` on the CPU.

        clamp to [-1, 1], (x + 1) / 2 * 255, rounded (the reference truncates; rounding is unbiased)."""
        if self._decoder is None:
            raise LumosError(f"{self!r} was created with decoder=False")
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        if codes.ndim != 3 or codes.is_floating_point():
            raise LumosError(f"expected integer codes [t, h, w], got {codes.dtype} of shape {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise LumosError(f"codes outside [0, {self.codebook_size}): min {int(codes.min())}, max {int(codes.max())}")
        t, h, w = codes.shape
        y = self._decoder(codes.to(self.device, torch.int64)[None])
        y = y[0] if isinstance(y, (tuple, list)) else y
        s = self.spatial_compression
        expected = (1, 3, self.num_pixel_frames(t), h * s, w * s)
        if tuple(y.shape) != expected:
            raise LumosError(f"{self.path / DECODER_FILE} returned shape {tuple(y.shape)} for codes "
                             f"{(t, h, w)}; expected {expected}. Is this Cosmos-Tokenizer-DV4x8x8?")
        y = (y[0].float().clamp(-1, 1) + 1) * 127.5                   # [3, T', H, W] in [0, 255]
        return y.round().to(torch.uint8).permute(1, 2, 3, 0).cpu()     # [T', H, W, 3]
