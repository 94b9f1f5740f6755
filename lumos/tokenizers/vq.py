"""The built-in causal video tokenizer: a small convolutional autoencoder with FSQ codes.

Small enough to train on two CPU cores in a quarter of an hour (`lumos train-tokenizer`), and shaped
like the Cosmos-Tokenizer-DV4x8x8 of the released models so the rest of the pipeline cannot tell
them apart: uint8 video `[T, H, W, 3]` -> int64 codes `[t, h, w]` with the causal frame rule
t = 1 + ceil((T - 1) / k_t), h = H / k_s, w = W / k_s, and back.

Architecture (`VQConfig`; defaults are the Moving Digits tokenizer, 4x8x8, 1,000 codes):
- Causal temporal patching, as in Cosmos: frame 0 is repeated k_t - 1 times in front (and the last
  frame repeated at the end when T - 1 is not a multiple of k_t), so latent frame 0 sees frame 0
  alone and latent frame i sees frames 1 + k_t (i - 1) .. k_t i. The k_t frames of a group and a
  `patch_size` x `patch_size` pixel patch are folded into channels (space-to-depth): all later
  convolutions run at 1/patch_size resolution, which is what makes CPU training affordable.
- Per-latent-frame 2D residual blocks (GroupNorm, SiLU, 3x3 convs) with stride-2 downsampling to
  1/k_s, then residual blocks whose first conv is a *causal* 3D conv over latent frames (padding
  on the past side only), so a latent frame can reuse what earlier ones already encoded (where the
  digit was, what it looks like) but never sees the future. GroupNorm normalises each latent frame
  on its own, which keeps the network causal.
- FSQ (finite scalar quantisation, Mentzer et al. 2023): the encoder outputs d = len(levels)
  channels, each bounded by tanh and rounded to one of L_i levels (straight-through gradient). The
  code of a position is the mixed-radix number of its d digits. No codebook to learn, so no
  codebook collapse, no commitment loss and no EMA updates. Levels (8, 5, 5, 5) = 1,000 codes is
  the FSQ paper's choice for a 2^10 codebook; it keeps the transformer's visual vocabulary (and its
  softmax) small while giving ~10 bits per token.
- The decoder mirrors the encoder (causal 3D blocks first, then upsampling by nearest-neighbour x2
  + conv, then a conv to k_t * 3 * patch^2 channels and depth-to-space). It is causal too: decoding
  the first latent frame alone gives the first frame (image-to-video needs nothing more).
- Spatial padding (`padding_mode`): "zeros", or "circular" for a toroidal canvas (the Moving Digits
  world with `edges="wrap"`, for long videos: a digit leaving one edge enters the opposite one, and a
  circular conv reads a digit split across the edges as the one digit it is). The shipped tokenizer
  and the shipped transformer were trained with "zeros". Switched to "circular" without retraining,
  the tokenizer ceiling of wrapped 65-frame clips rises from 75% digit / 44% identity-stable to
  100% / 100% (16 clips), but about 2 codes in 3 change (zero padding is mid-grey next to the black
  canvas, the other edge is black), and the shipped transformer, which speaks the zero-padded codes,
  lost identity stability (validation 92% -> 73%); see configs/experiment-wrap-finetune.toml.

Files: `save_pretrained(dir)` writes `vq_config.json` + `vq.safetensors` (float32 state_dict).

    tok = VQTokenizer.from_pretrained("lumos/assets/moving-digits/tokenizer")
    codes = tok.encode(video)        # uint8 [17, 64, 64, 3] -> int64 [5, 8, 8]
    video2 = tok.decode(codes)       # -> uint8 [17, 64, 64, 3]
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lumos.utils import LumosError, atomic_write, atomic_write_json, check_keys, check_weights
from lumos.tokenizers.base import VideoTokenizer

CONFIG_FILE = "vq_config.json"
WEIGHTS_FILE = "vq.safetensors"
PADDING_MODES = ("zeros", "circular")


@dataclass(frozen=True)
class VQConfig:
    temporal_compression: int = 4            # k_t: pixel frames per latent frame after the first
    spatial_compression: int = 8             # k_s: pixels per token side
    patch_size: int = 4                      # space-to-depth at the input; k_s / patch_size is reached by stride-2 convs
    channels: tuple[int, ...] = (32, 64)     # conv width per resolution level (1/patch_size, then halving)
    enc_blocks: int = 1                      # 2D residual blocks per level in the encoder
    dec_blocks: int = 2                      # 2D residual blocks per level in the decoder (decoding is the harder half)
    time_blocks: int = 1                     # causal-3D residual blocks at the latent resolution, encoder and decoder each
    time_kernel: int = 2                     # latent frames seen by a causal 3D conv (the current one and k-1 earlier)
    levels: tuple[int, ...] = (8, 5, 5, 5)   # FSQ levels per latent channel; codebook = prod(levels)
    groups: int = 8                          # GroupNorm groups
    padding_mode: str = "zeros"              # spatial padding of every conv: "zeros", or "circular" for a toroidal
                                             # canvas (a digit leaving one edge enters the opposite one)

    def __post_init__(self):
        # JSON and TOML give lists; keep tuples so the config stays hashable and comparable
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "levels", tuple(int(l) for l in self.levels))
        k_s, p = self.spatial_compression, self.patch_size
        if self.temporal_compression < 1:
            raise LumosError(f"temporal_compression must be >= 1, got {self.temporal_compression}")
        if p < 1 or k_s % p or (k_s // p) & (k_s // p - 1):
            raise LumosError(f"spatial_compression / patch_size must be a power of two, got {k_s} / {p}")
        if len(self.channels) != self.num_levels:
            raise LumosError(f"channels needs one width per resolution level: {self.num_levels} for "
                             f"spatial_compression={k_s}, patch_size={p}; got {self.channels}")
        if any(c % self.groups for c in self.channels):
            raise LumosError(f"every channel count must be a multiple of groups={self.groups}: {self.channels}")
        if not self.levels or min(self.levels) < 2:
            raise LumosError(f"FSQ levels must all be >= 2, got {self.levels}")
        if self.time_kernel < 1:
            raise LumosError(f"time_kernel must be >= 1, got {self.time_kernel}")
        if self.padding_mode not in PADDING_MODES:
            raise LumosError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {self.padding_mode!r}")

    @property
    def num_levels(self) -> int:
        """Resolution levels: 1/patch_size, 1/(2 patch_size), ..., 1/spatial_compression."""
        return int(math.log2(self.spatial_compression // self.patch_size)) + 1

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @classmethod
    def from_dict(cls, d: dict, where: str = "VQConfig") -> "VQConfig":
        """Strict: an unknown key is an error naming it (a typo must not fall back to a default)."""
        check_keys(cls, d, "VQ config", where=where)
        try:
            return cls(**d)
        except (TypeError, LumosError) as e:   # TypeError: a required key is missing
            raise LumosError(f"{where}: {e}") from None


# Named presets. "moving-digits" is the shipped tokenizer (lumos/assets/moving-digits/tokenizer);
# "tiny" is for tests (a few thousand parameters, 60 codes).
CONFIGS: dict[str, VQConfig] = {
    "moving-digits": VQConfig(),
    "tiny": VQConfig(channels=(8, 16), enc_blocks=1, dec_blocks=1, time_blocks=1, levels=(5, 4, 3), groups=4),
}


# ------------------------------------------------------------------------------------------ FSQ
class FSQ(nn.Module):
    """Finite scalar quantisation. `forward(z [..., d]) -> (z_q [..., d] in [-1, 1], codes [...])`.

    Channel i is squashed into (-L_i/2, L_i/2) and rounded to L_i integer levels; z_q divides by
    L_i // 2 so every channel spans about [-1, 1]. Even L_i are shifted by 1/2 so the L_i levels are
    symmetric around zero in the squashed space (the paper's `bound`)."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        L = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + tuple(levels[:-1]), dtype=torch.int64), 0)
        self.register_buffer("L", L, persistent=False)
        self.register_buffer("half_width", torch.div(L, 2, rounding_mode="floor"), persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = math.prod(levels)

    def bound(self, z: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        half_l = (self.L - 1) * (1 + eps) / 2
        offset = torch.where(self.L % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.bound(z)
        q = b + (torch.round(b) - b).detach()          # straight-through rounding
        z_q = q / self.half_width                       # [..., d] in [-1, 1]
        return z_q, self.to_codes(z_q)

    def to_codes(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised vectors `[..., d]` -> int64 codes `[...]` in [0, prod(levels))."""
        digits = torch.round(z_q * self.half_width + self.half_width).to(torch.int64)   # [..., d] in [0, L_i)
        return (digits * self.basis).sum(-1)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes `[...]` -> quantised vectors `[..., d]` (float32, in [-1, 1])."""
        digits = torch.div(codes[..., None], self.basis, rounding_mode="floor") % self.L.to(torch.int64)
        return (digits.to(torch.float32) - self.half_width) / self.half_width


# ------------------------------------------------------------------------------------ the blocks
class ResBlock2d(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))) on `[N, C, h, w]`, one latent frame per N."""

    def __init__(self, C: int, groups: int, pad: str = "zeros"):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, C), nn.Conv2d(C, C, 3, padding=1, padding_mode=pad)
        self.norm2, self.conv2 = nn.GroupNorm(groups, C), nn.Conv2d(C, C, 3, padding=1, padding_mode=pad)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class CausalResBlock3d(nn.Module):
    """Like ResBlock2d, but the first conv also looks `k - 1` latent frames back (zero padding on
    the past side only, so nothing flows from the future; `pad` is the spatial padding). Input
    `[B, C, t, h, w]`."""

    def __init__(self, C: int, groups: int, k: int, pad: str = "zeros"):
        super().__init__()
        self.k = k
        self.norm1 = nn.GroupNorm(groups, C)
        self.conv1 = nn.Conv3d(C, C, (k, 3, 3), padding=(0, 1, 1), padding_mode=pad)
        self.norm2, self.conv2 = nn.GroupNorm(groups, C), nn.Conv2d(C, C, 3, padding=1, padding_mode=pad)

    def forward(self, x):
        B, C, t, h, w = x.shape
        y = F.silu(_frame_norm(self.norm1, x))
        y = self.conv1(F.pad(y, (0, 0, 0, 0, self.k - 1, 0)))           # [B, C, t, h, w], causal in t
        y = y.transpose(1, 2).reshape(B * t, C, h, w)                    # [B*t, C, h, w]
        y = self.conv2(F.silu(self.norm2(y)))
        return x + y.reshape(B, t, C, h, w).transpose(1, 2)             # [B, C, t, h, w]


def _frame_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm of each latent frame on its own (statistics over C/groups, h, w; never over t)."""
    B, C, t, h, w = x.shape
    y = norm(x.transpose(1, 2).reshape(B * t, C, h, w))
    return y.reshape(B, t, C, h, w).transpose(1, 2)


class Encoder(nn.Module):
    """`[B, t, k_t*3*p*p, H/p, W/p]` patches -> `[B, t, d, H/k_s, W/k_s]` continuous latents."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, g, pad = cfg.channels, cfg.groups, cfg.padding_mode
        self.stem = nn.Conv2d(cfg.temporal_compression * 3 * cfg.patch_size**2, ch[0], 3, padding=1, padding_mode=pad)
        self.levels = nn.ModuleList()
        for i, C in enumerate(ch):
            blocks = [ResBlock2d(C, g, pad) for _ in range(cfg.enc_blocks)]
            if i + 1 < len(ch):
                blocks.append(nn.Conv2d(C, ch[i + 1], 3, stride=2, padding=1, padding_mode=pad))    # halve h, w
            self.levels.append(nn.Sequential(*blocks))
        self.time = nn.ModuleList(CausalResBlock3d(ch[-1], g, cfg.time_kernel, pad) for _ in range(cfg.time_blocks))
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.proj_out = nn.Conv2d(ch[-1], len(cfg.levels), 1)

    def forward(self, x):
        B, t = x.shape[:2]
        h = self.stem(x.flatten(0, 1))                                   # [B*t, C0, H/p, W/p]
        for level in self.levels:
            h = level(h)                                                 # ... -> [B*t, C, h, w]
        h = h.reshape(B, t, *h.shape[1:]).transpose(1, 2)                # [B, C, t, h, w]
        for block in self.time:
            h = block(h)
        h = h.transpose(1, 2).flatten(0, 1)                              # [B*t, C, h, w]
        z = self.proj_out(F.silu(self.norm_out(h)))                      # [B*t, d, h, w]
        return z.reshape(B, t, *z.shape[1:])                             # [B, t, d, h, w]


class Decoder(nn.Module):
    """`[B, t, d, h, w]` quantised latents -> `[B, t, k_t*3*p*p, H/p, W/p]` patches."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, g, pad = cfg.channels[::-1], cfg.groups, cfg.padding_mode    # lowest resolution first
        self.proj_in = nn.Conv2d(len(cfg.levels), ch[0], 3, padding=1, padding_mode=pad)
        self.time = nn.ModuleList(CausalResBlock3d(ch[0], g, cfg.time_kernel, pad) for _ in range(cfg.time_blocks))
        self.levels = nn.ModuleList()
        for i, C in enumerate(ch):
            blocks = [ResBlock2d(C, g, pad) for _ in range(cfg.dec_blocks)]
            if i + 1 < len(ch):
                # nearest x2 then a conv: no checkerboard artefacts (unlike a strided transpose conv)
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(C, ch[i + 1], 3, padding=1, padding_mode=pad)]
            self.levels.append(nn.Sequential(*blocks))
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], cfg.temporal_compression * 3 * cfg.patch_size**2, 3, padding=1,
                                  padding_mode=pad)

    def forward(self, z):
        B, t = z.shape[:2]
        h = self.proj_in(z.flatten(0, 1))                                # [B*t, C, h, w]
        h = h.reshape(B, t, *h.shape[1:]).transpose(1, 2)                # [B, C, t, h, w]
        for block in self.time:
            h = block(h)
        h = h.transpose(1, 2).flatten(0, 1)                              # [B*t, C, h, w]
        for level in self.levels:
            h = level(h)                                                 # ... -> [B*t, C0, H/p, W/p]
        x = self.conv_out(F.silu(self.norm_out(h)))                      # [B*t, k_t*3*p*p, H/p, W/p]
        return x.reshape(B, t, *x.shape[1:])


# ------------------------------------------------------------------------------------ the tokenizer
class VQTokenizer(VideoTokenizer, nn.Module):
    """The built-in tokenizer: `encode` / `decode` for one video (the `VideoTokenizer` contract),
    `encode_batch` / `decode_batch` for `[B, ...]`, and `forward` (the training path, float in and
    out, with straight-through quantisation)."""

    def __init__(self, cfg: VQConfig = VQConfig()):
        nn.Module.__init__(self)
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.fsq = FSQ(cfg.levels)

    @property
    def temporal_compression(self) -> int:
        return self.cfg.temporal_compression

    @property
    def spatial_compression(self) -> int:
        return self.cfg.spatial_compression

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    # -- pixel <-> patch layout -------------------------------------------------------------------
    def to_patches(self, x: torch.Tensor) -> torch.Tensor:
        """float video `[B, T, H, W, 3]` -> causal patches `[B, t, k_t*3*p*p, H/p, W/p]`.
        Frame 0 is repeated k_t - 1 times in front (it forms latent frame 0 alone); the last frame is
        repeated at the end to fill the last group."""
        B, T, H, W, _ = x.shape
        kt, p = self.cfg.temporal_compression, self.cfg.patch_size
        t = self.num_latent_frames(T)
        x = torch.cat([x[:, :1].expand(B, kt - 1, H, W, 3), x,
                       x[:, -1:].expand(B, kt * t - (kt - 1) - T, H, W, 3)], dim=1)   # [B, kt*t, H, W, 3]
        x = x.reshape(B, t, kt, H // p, p, W // p, p, 3)
        x = x.permute(0, 1, 2, 7, 4, 6, 3, 5)                              # [B, t, kt, 3, p, p, H/p, W/p]
        return x.reshape(B, t, kt * 3 * p * p, H // p, W // p)

    def from_patches(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, t, k_t*3*p*p, H/p, W/p]` -> float video `[B, T', H, W, 3]`, T' = 1 + k_t (t - 1):
        the k_t - 1 copies of frame 0 are dropped (the last of the group is kept)."""
        B, t, _, h, w = x.shape
        kt, p = self.cfg.temporal_compression, self.cfg.patch_size
        x = x.reshape(B, t, kt, 3, p, p, h, w).permute(0, 1, 2, 6, 4, 7, 5, 3)   # [B, t, kt, h, p, w, p, 3]
        x = x.reshape(B, t * kt, h * p, w * p, 3)
        return x[:, kt - 1:]

    # -- float paths (training) --------------------------------------------------------------------
    def encode_latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float video `[B, T, H, W, 3]` in [-1, 1] -> (z_q `[B, t, d, h, w]`, codes `[B, t, h, w]`)."""
        z = self.encoder(self.to_patches(x))                              # [B, t, d, h, w]
        z_q, codes = self.fsq(z.movedim(2, -1))                           # [B, t, h, w, d], [B, t, h, w]
        return z_q.movedim(-1, 2), codes

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q `[B, t, d, h, w]` -> float video `[B, T', H, W, 3]` (unclamped)."""
        return self.from_patches(self.decoder(z_q))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct: float `[B, T, H, W, 3]` in [-1, 1] -> (recon `[B, T, H, W, 3]`, codes).
        The end padding frames (when T - 1 is not a multiple of k_t) are cut off."""
        z_q, codes = self.encode_latents(x)
        return self.decode_latents(z_q)[:, : x.shape[1]], codes

    # -- uint8 <-> codes (the VideoTokenizer contract) ---------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.encoder.stem.weight.device

    @torch.no_grad()
    def encode_batch(self, videos) -> torch.Tensor:
        """uint8 `[B, T, H, W, 3]` -> int64 codes `[B, t, h, w]`."""
        videos = torch.as_tensor(videos)
        if videos.ndim != 5:
            raise LumosError(f"encode_batch expects [B, T, H, W, 3], got shape {tuple(videos.shape)}")
        for v in videos[:1]:
            self.check_video(v)
        x = videos.to(self.device, torch.float32) / 127.5 - 1
        return self.encode_latents(x)[1]

    @torch.no_grad()
    def decode_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes `[B, t, h, w]` -> uint8 video `[B, 1 + k_t (t - 1), H, W, 3]`."""
        codes = torch.as_tensor(codes).to(self.device)
        if codes.ndim != 4 or codes.dtype not in (torch.int64, torch.int32):
            raise LumosError(f"decode_batch expects integer codes [B, t, h, w], got {codes.dtype} {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise LumosError(f"codes must be in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")
        z_q = self.fsq.from_codes(codes.long()).movedim(-1, 2)           # [B, t, d, h, w]
        x = self.decode_latents(z_q)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()

    def encode(self, video) -> torch.Tensor:
        """uint8 `[T, H, W, 3]` -> int64 codes `[t, h, w]`."""
        return self.encode_batch(self.check_video(video)[None])[0].cpu()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes `[t, h, w]` -> uint8 video `[1 + k_t (t - 1), H, W, 3]`."""
        codes = torch.as_tensor(codes)
        if codes.ndim != 3:
            raise LumosError(f"decode expects codes [t, h, w], got shape {tuple(codes.shape)}")
        return self.decode_batch(codes[None])[0]

    # -- files -------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write `vq_config.json` and `vq.safetensors` (each atomically) into `out_dir`; returns it."""
        from safetensors.torch import save
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_write(out_dir / WEIGHTS_FILE) as f:
            f.write(save(state, metadata={"format": "lumos-vq"}))
        atomic_write_json(out_dir / CONFIG_FILE, asdict(self.cfg))
        return out_dir

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "VQTokenizer":
        """Load a folder written by `save_pretrained`. Missing files, unknown config keys, missing or
        unexpected weights and wrong shapes raise LumosError naming the file or key."""
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise LumosError(f"{path / name} not found: a VQ tokenizer folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
        try:
            cfg_dict = json.loads((path / CONFIG_FILE).read_text())
        except json.JSONDecodeError as e:
            raise LumosError(f"{path / CONFIG_FILE} is not valid JSON: {e}") from None
        cfg = VQConfig.from_dict(cfg_dict, where=str(path / CONFIG_FILE))
        model = cls(cfg)
        model.load_state_dict(load_weights(path / WEIGHTS_FILE, model.state_dict()))
        return model.to(device).eval()


def load_weights(file: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a safetensors file and check it against `expected` (a state_dict): the same keys, the
    same shapes. Errors name the file and the first offending key."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise LumosError(f"{file}: cannot read safetensors: {e}") from None
    return check_weights(expected, state, file, config="the VQConfig", kind="a tokenizer of this VQConfig",
                         dtype=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def video_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-video PSNR (dB, peak 255) of uint8 `[B, T, H, W, 3]` pairs: MSE over the whole video
    (all frames, pixels and channels), then 10 log10(255^2 / MSE). Returns float64 `[B]`."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
