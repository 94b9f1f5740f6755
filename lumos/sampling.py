"""Decoding a Lumos model: frame-by-frame masked (MaskGIT-style) prediction, and a next-token baseline.

The sampler holds no weights. It drives any model with the `LumosModel` calling convention
(`positions`, `setup_cache`, `clear_cache`, `forward(tokens, pos, mask, cache_pos, return_hidden=True)`,
`head(hidden, rows)`), so the tests can swap in a scripted mock. Spec: `lumos1.md` §6; the released
sampler is described in `official-code-notes.md` §3 and its quirks in §6.

Parallel decoding of one video (`iter_parallel`), per latent frame f = 0 .. F-1:
    1. the frame is laid out fully masked: FRAME_START, size(h), size(w), (MASK x w, NEWLINE) x h, FRAME_END;
    2. S steps: predict and sample the codes still masked, score each fresh sample by
       confidence = log p(sample) + T_s * Gumbel, and re-mask the least confident so that
       m_s = clamp(floor(N cos(pi/2 (s+1)/S)), 1, unknown - 1) stay masked (N = h*w codes);
       the last step keeps everything;
    3. the finished frame goes into the KV cache once (in the same forward as the next frame's first
       step: the two frames side by side, frame-causal between them), with a fraction r of its content tokens
       (codes and newlines) replaced by MASK at n = round(r h(w+1)) evenly spaced positions
       round(k h(w+1) / n), the same pattern for every frame (AR-DF inference-time history masking:
       the model was trained with masked context frames; without it videos flicker, says the paper).

KV cache: the prompt (text, video header and, for image-to-video / continuation, the given frames)
is prefilled once; each step runs only the current frame's tokens against the static cache; all
positions and masks are precomputed on the host in a `Plan` before the loop (the layout of every
frame is known in advance), so a step has no `.item()`, `.tolist()` or data-dependent branching.
Non-finite logits (a broken checkpoint, an overflow) stop the generation with a LumosError: whether
they are finite is accumulated on the device and read once per frame, before its codes are yielded
(every logit of a frame is checked: all its codes are predicted at its first step).

Long videos (`window_frames`, `sink_frames`): the layout, and so the cache, has slots for the prompt,
the sinks (the video's first frames), the window and the frame being decoded, however many frames are
asked for. Once the last slot has been used, each new frame first slides the window (`_slide`): the
oldest frame after the sinks leaves, the later ones move one slot back, their cached keys rotated back
by one frame (`LumosModel.move_cache`: RoPE rotations compose, so this equals computing them fresh at
the new positions; with `reindex_window=False` they keep their positions and the new frame's grow).
Memory and time per frame are constant past the window; a window as long as the video changes nothing.

Classifier-free guidance runs in ONE batched forward: rows [cond_0 .. cond_{n-1}, uncond_0 ..
uncond_{n-1}], where uncond_i is cond_i from VIDEO_START on (no BOS/text/SEP, as released and as the
training-time CFG dropout), or `BOS negative-text SEP` + cond_i from VIDEO_START on with a negative
prompt (`plan_generation(negative=...)`). Rows are left-padded so their video parts share the same cache
columns; padded keys are masked and positions count from each row's real start. logits = u + g (c - u).
guidance_scale 0 or 1 means no guidance: the uncond rows are not run at all (1 gives the conditional
logits exactly; 0 is taken to mean "off" too, as in diffusers, not "unconditional").

Logits are only computed where they are used: for the visual rows of lm_head (`model.head(hidden, rows)`;
non-visual ids cannot be sampled by construction), at the codes still masked at this step. A known code
keeps its id and is never re-masked, so its logits would be thrown away. Step s of a frame predicts
N, m_0, m_1, ... codes, counts known on the host; which codes those are is found on the device (a stable
sort of the mask: positional order, so confidence ties still go by position). Head, softmax and draw run
in chunks of at most CHUNK_FLOATS logits, so the memory they take does not grow with the frame.

The categorical draw is by inverse CDF (`sample`): one uniform u per code to sample, and the first
code whose cumulative probability exceeds u times the total. It picks code k with probability p_k
(never one of probability 0), like torch.multinomial, for a fraction of the cost of a race of K
exponentials. The uniforms are drawn before the chunks, so the chunking does not change the sample.

Defaults (intended behaviour) vs `reference_compat=True` (the released code, notes §6.1-6.3):
- remasking temperature: T_s = T0 (1 - (s+1)/S), reset every frame | compounding T <- T (1 - (s+1)/S)
  every step, never reset: exactly 0 from the end of the first generated frame on;
- `temperature`, `top_k`, `top_p` shape the sampling distribution | ignored: plain multinomial on
  the CFG-mixed softmax;
- given frames (image-to-video, continuation) enter the cache history-masked like any other
  context frame (the model only ever saw masked context frames in training, and the reference
  code plainly tries to mask it) | cached unmasked (the reference masks a copy it never uses);
- history_mask_ratio 0 masks nothing | masks one token (the reference's max(1, round(r n))).
Ties in confidence are broken by position in both modes (the reference's `< cut_off` test masks
fewer tokens on exact ties; continuous confidences practically never tie).

Forward passes per video of F generated frames, S steps, N codes per frame (each pass is batched
over all rows, cond + uncond): parallel with KV cache 1 + F S (prefill, steps; a frame's cache write
rides with the next frame's first step), + 1 for each frame that slides a rolling window (the write
then runs alone, before the slide), the same compiled on a CPU, or F (S + 1) compiled at one static
shape on CUDA (`static_shapes`: every write alone); parallel
without KV cache F S (each recomputes the whole sequence so far, with the same masked history);
next-token 1 + F N (prefill, one pass per code).
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass, fields
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lumos.masks import frame_causal_mask, frame_ids
from lumos.model import rope_tables
from lumos.positions import Positions, add, shift
from lumos.utils import LumosError, check_keys, fits, take
from lumos.vocab import Vocab

MODES = ("parallel", "parallel-nocache", "next-token")
MAX_STEPS = 1000                # num_inference_steps: more only builds host lists (the released setting is 50)
MIN_TEMPERATURE = 1e-6          # positive temperatures: tinier ones overflow the fp32 logits they divide (use 0)
SEED_LIMIT = 2**63              # seeds are integers in [0, SEED_LIMIT): what every torch generator takes
CHUNK_FLOATS = 2**24            # logits (rows x codes x K) per chunk of a step (64 MiB of fp32): bounds its memory


@dataclass
class SampleConfig:
    """The sampling settings, declared once: `LumosPipeline` takes them as keywords, a model's
    pipeline.json as keys (`lumos.pipeline.PipelineDefaults` extends this class) and the `lumos`
    commands as flags (`lumos.cli.flags`: `--num-inference-steps`, typed by the field, with the
    field's trailing comment as its help). `check` is their one validator."""
    num_inference_steps: int = 50      # refinement steps per latent frame (S, at most 1000; released: 50)
    guidance_scale: float = 15.0       # classifier-free guidance g, logits = u + g (c - u); 0 or 1: off (released: 15)
    temperature: float = 1.0           # code sampling temperature (0: argmax)
    top_k: int | None = None           # sample among the k most likely codes only (default: all)
    top_p: float | None = None         # nucleus sampling: the fewest codes holding this much probability (default: all)
    remask_temperature: float = 1.0    # T0: Gumbel noise on the confidences that choose the codes to re-mask
    history_mask_ratio: float = 0.7    # r: fraction of each finished frame masked in the KV cache (released: 0.7)
    reference_compat: bool = False     # reproduce the released sampler's quirks exactly (lumos.sampling)
    window_frames: int | None = None   # long videos: latent frames kept in the KV cache besides the sinks (default: all)
    sink_frames: int = 0               # with a window: the first latent frames, always kept in the cache
    reindex_window: bool = True        # with a window: move the kept frames' positions back as it slides (false: they grow)

    # The allowed values of each number: (lowest, highest or None, whether the lowest itself is excluded).
    # Every float must also be finite (NaN and inf are refused).
    RANGES: ClassVar[dict] = {
        "num_inference_steps": (1, MAX_STEPS, False), "guidance_scale": (0, None, False),
        "temperature": (0, None, False), "top_k": (1, None, False), "top_p": (0, 1, True), "remask_temperature": (0, None, False),
        "history_mask_ratio": (0, 1, False), "window_frames": (1, None, False), "sink_frames": (0, None, False),
    }

    def __post_init__(self):
        for key, value in self.check({f.name: getattr(self, f.name) for f in fields(self)}).items():
            setattr(self, key, value)

    @classmethod
    def check(cls, values: dict, name=str) -> dict:
        """The validator of the settings, for this dataclass and for callers holding only some of them (a
        call's keywords, command-line flags, a pipeline.json): `values` maps field names to values ->
        the same values, numbers as their field's type (an int guidance_scale becomes a float, so a
        setting prints the same whichever way it came). LumosError names the first unknown or bad one,
        spelt `name(field)` (the commands pass their flags' spelling)."""
        check_keys(cls, values, "settings")
        out = {}
        for key, v in values.items():
            kind, optional = setting_types(cls)[key]
            if v is None and optional:
                out[key] = None
                continue
            if not fits(kind, v)[0] or (kind is float and not math.isfinite(v)):
                raise LumosError(f"{name(key)} must be {_KINDS[kind]}, got {v!r}")
            if key in cls.RANGES:
                low, high, open_low = cls.RANGES[key]
                # written so that NaN fails every bound
                if not ((v > low if open_low else v >= low) and (high is None or v <= high)):
                    bound = f"{'>' if open_low else '>='} {low}" + ("" if high is None else f" and <= {high}")
                    raise LumosError(f"{name(key)} must be {bound}, got {v!r}")
            if key == "temperature" and 0 < v < MIN_TEMPERATURE:
                raise LumosError(f"{name(key)} must be 0 (argmax) or >= {MIN_TEMPERATURE:g}, got {v!r}")
            out[key] = kind(v)
        return out

    @property
    def use_cfg(self) -> bool:
        return self.guidance_scale not in (0.0, 1.0)


_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def check_seed(seed, name: str = "seed") -> int:
    """The one check of a seed (the commands' --seed, a prompts file's "seed", the API's seed
    arguments): an integer in [0, 2**63), what every torch generator takes. LumosError otherwise."""
    if not fits(int, seed)[0] or not 0 <= seed < SEED_LIMIT:
        raise LumosError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def check_generation(config, cfg: SampleConfig, prefix: int, frames: int, h: int, w: int) -> int:
    """What a generation must fit in the model, checked from its config alone (before any weights are
    read or any work starts): top_k at most the codebook, an h x w latent frame the size tokens can
    express, and the whole layout (`prefix` tokens before the first latent frame, then `frames`
    latent frames, given and generated) within the model's positions (`max_seq_len`, when the config
    has one). Returns the layout length; LumosError says what to change."""
    vocab = config.vocab
    if cfg.top_k is not None and cfg.top_k > vocab.codebook_size:
        raise LumosError(f"top_k {cfg.top_k} is larger than the codebook ({vocab.codebook_size} codes); "
                         f"give at most {vocab.codebook_size}, or leave it out to sample among all")
    g = vocab.grid_per_size
    if min(h, w) < 1 or h % g or w % g or max(h, w) > g * vocab.max_size:
        raise LumosError(f"a {h}x{w} latent frame does not fit the vocabulary: its sides must be multiples of {g}, "
                         f"at most {g * vocab.max_size} latent rows; change the size")
    total = prefix + frames * vocab.frame_length(h, w)
    limit = getattr(config, "max_seq_len", None)
    if limit is not None and total > limit:
        raise LumosError(f"too long for the model: {prefix} prompt tokens + {frames} latent frames of "
                         f"{vocab.frame_length(h, w)} tokens = {total} positions, the model has {limit}; "
                         f"ask for fewer frames, a smaller size or a shorter prompt")
    return total


@functools.cache
def setting_types(cls) -> dict[str, tuple[type, bool]]:
    """Field name -> (its type: int, float, bool or str; whether None is allowed) of a settings dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        kinds = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]      # `int | None` -> [int]
        out[f.name] = (kinds[0], True) if kinds else (hints[f.name], False)
    return out


# ============================================================================================ schedules
def cosine_schedule(t: torch.Tensor) -> torch.Tensor:
    """Fraction of a frame still masked at progress t in [0, 1] (MaskGIT): cos(pi/2 t)."""
    return torch.cos(t * math.pi * 0.5)


def mask_schedule(n: int, steps: int, schedule=cosine_schedule) -> list[int]:
    """Number of codes left masked after each step, for a frame of `n` codes.

    m_s = max(1, min(unknown_s - 1, floor(n * schedule((s+1)/S)))), unknown_{s+1} = m_s, and 0 after the
    last step. A step reveals at least one code unless only one is left, which waits for the last step.
    The ratio is evaluated in float32 as the reference does, so floor() agrees with it at the edges.
    Known on the host before decoding: the count is the same for every row and every frame."""
    t = torch.tensor([(s + 1) / steps for s in range(steps)], dtype=torch.float32)
    target = (n * schedule(t)).floor().long().tolist()
    out, unknown = [], n
    for s in range(steps - 1):
        unknown = max(1, min(unknown - 1, target[s]))
        out.append(unknown)
    return out + [0]


def remask_temperatures(t0: float, steps: int, frames: int, compat: bool = False) -> list[list[float]]:
    """Gumbel scale T for every (frame, step).

    Intended (MaskGIT): T_s = T0 (1 - (s+1)/S), the same in every frame.
    compat: the reference overwrites its argument, T <- T (1 - (s+1)/S), before each step and never
    resets it, so T is a product over all steps so far: 0.0 exactly from the first frame's last step on."""
    if not compat:
        return [[t0 * (1.0 - (s + 1) / steps) for s in range(steps)] for _ in range(frames)]
    out, t = [], t0
    for _ in range(frames):
        row = []
        for s in range(steps):
            t = t * (1.0 - 1.0 * (s + 1) / steps)
            row.append(t)
        out.append(row)
    return out


def history_mask_indices(n: int, ratio: float, compat: bool = False) -> np.ndarray:
    """Positions (in [0, n)) of a finished frame's content that are masked in the cache.

    n = h (w + 1) content tokens (codes and newlines). k = round(r n) indices round(j n / k), evenly
    spaced, no random offset, the same for every frame. Computed in float32 with round-half-even,
    as the reference does. compat: k = max(1, round(r n)) (the reference masks a token even at r = 0)."""
    k = int(round(ratio * n))
    if compat:
        k = max(1, k)
    if k == 0:
        return np.zeros(0, np.int64)
    idx = torch.round(torch.arange(k) * (n / k)).long().clamp_(0, n - 1).unique()
    return idx.numpy()


# ============================================================================================ sampling
def random_draw(shape, generator, device=None, dtype=torch.float32) -> torch.Tensor:
    """U[0, 1) samples of `shape`. generator: one `torch.Generator` for the whole tensor, or a list of
    them, one per row (shape[0]): row i is then drawn from generator i alone, exactly as it is drawn
    in a batch of one video."""
    if isinstance(generator, (list, tuple)):                # one per row: counted by `_generator`
        return torch.cat([random_draw((1, *shape[1:]), g, device, dtype) for g in generator])
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def gumbel_noise(shape, generator, device=None) -> torch.Tensor:
    """Standard Gumbel samples -log(-log u), u ~ U[0, 1) drawn from `generator` (both logs clamped at 1e-20);
    a list of generators draws each row from its own (`random_draw`)."""
    u = random_draw(shape, generator, device)
    return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> torch.Tensor:
    """fp32 logits [..., K] -> probabilities [..., K].

    temperature > 0 divides the logits; 0 leaves them as they are (`sample` then takes the argmax,
    and the confidences use the untempered distribution). top_k keeps the k largest logits; top_p
    keeps the smallest set of most likely codes whose mass reaches top_p (the most likely is always kept)."""
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p       # mass of the more likely codes already enough
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, temperature: float, generator, u: torch.Tensor | None = None) -> torch.Tensor:
    """One code per row of probs [..., K] -> int64 [...]. temperature 0: argmax. Otherwise an exact
    categorical draw without a host sync, by inverse CDF: the first code whose cumulative probability
    exceeds u * total, which picks code k with probability p_k / total (like torch.multinomial) and
    never a code of probability 0. u [...]: the row's U[0, 1) draws, if drawn beforehand (float64),
    else drawn here from `generator` (one per row, `random_draw`).

    One uniform and a cumsum per row: much cheaper than a race over K exponentials. Both are float64
    so that the interval of each code is exact to ~1e-16, not to the 2**-24 steps of float32."""
    if temperature == 0:
        return probs.argmax(-1)
    if u is None:
        u = random_draw(probs.shape[:-1], generator, probs.device, torch.float64)
    cdf = probs.double().cumsum(-1)                                      # [..., K], non-decreasing
    total = cdf[..., -1:].contiguous()
    k = torch.searchsorted(cdf, u[..., None] * total, right=True)      # first code with cdf > u * total
    last = torch.searchsorted(cdf, total)                               # the last code of probability > 0:
    return torch.minimum(k, last)[..., 0].clamp_(max=probs.shape[-1] - 1)   # u * total may round up to total


def mask_by_random_topk(log_p: torch.Tensor, n_mask: int, temperature: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Which codes to re-mask: the `n_mask` lowest confidences log p + T * Gumbel of each row.

    log_p: [B, N] log-probability of each fresh sample (+inf at a code that must never be re-masked).
    Returns bool [B, N] with exactly n_mask True per row (ties broken by position)."""
    confidence = log_p
    if temperature > 0:
        confidence = log_p + temperature * gumbel_noise(log_p.shape, generator, log_p.device)
    order = confidence.argsort(dim=-1, stable=True)                      # ascending confidence
    remask = torch.zeros_like(log_p, dtype=torch.bool)
    return remask.scatter_(-1, order[:, :n_mask], True)


def sample_codes(logits: torch.Tensor, cfg: SampleConfig, generator, u: torch.Tensor | None = None):
    """Guided visual logits [..., K] -> (sampled codes [...], the probabilities they were drawn from).
    compat: a plain multinomial on softmax(logits); temperature/top-k/top-p are not applied.
    u: the draws of `sample`, if drawn beforehand."""
    if cfg.reference_compat:
        probs = torch.softmax(logits, dim=-1)
        return sample(probs, 1.0, generator, u), probs
    probs = logits_to_probs(logits, cfg.temperature, cfg.top_k, cfg.top_p)
    return sample(probs, cfg.temperature, generator, u), probs


def masked_positions(unknown: torch.Tensor, count: int) -> torch.Tensor:
    """Positions [n, count] of the True entries of each row of unknown [n, N], in increasing order.
    Every row holds exactly `count` of them (a host int: the schedule's), so no host sync is needed:
    a stable sort puts them first, in their order."""
    return unknown.to(torch.uint8).argsort(dim=-1, descending=True, stable=True)[:, :count]


def predict_codes(model, hidden: torch.Tensor, n_cond: int, cfg: SampleConfig, generator,
                  chunk_floats: int | None = None):
    """Sample a code at each position of hidden [B, M, D] (n_cond cond rows, then their uncond twins
    with CFG) -> (codes [n, M], the probability of each sample under the distribution it was drawn
    from [n, M], whether every logit was finite: 0-d bool tensor).

    Head, CFG mix, softmax and draw run over chunks of positions of at most `chunk_floats` logits
    (default CHUNK_FLOATS), so peak memory stays bounded whatever the frame size. The uniforms of the
    draw are taken for all M positions before the first chunk: the chunking does not change the sample."""
    if hidden.shape[0] > n_cond and not cfg.reference_compat:
        # Guidance is linear and so is the head (`model.head`: a matmul after the final norm), so
        # u + g (c - u) of the logits is the head of u + g (c - u) of the hidden states: mix first (fp32),
        # then one head over n rows instead of 2n, half the largest matmul of a step. (reference_compat
        # keeps the released order, head then mix, so that its rounding, and its greedy tokens, stay theirs.)
        h = hidden.float()
        hidden = torch.lerp(h[n_cond:], h[:n_cond], cfg.guidance_scale).to(hidden.dtype)
    B, M, _ = hidden.shape
    rows = _visual_rows(model.config.vocab)
    greedy = cfg.temperature == 0 and not cfg.reference_compat          # compat always samples
    u = None if greedy else random_draw((n_cond, M), generator, hidden.device, torch.float64)   # (n, M)
    step = max(1, (chunk_floats or CHUNK_FLOATS) // (B * (rows.stop - rows.start)))
    codes, p = [], []
    finite = torch.ones((), dtype=torch.bool, device=hidden.device)
    for a in range(0, M, step):
        logits = guide(model.head(hidden[:, a:a + step], rows), n_cond, cfg.guidance_scale)   # (n, m, K)
        # One reduction instead of an isfinite table: a NaN or inf anywhere makes the sum non-finite
        # (finite logits of |x| > 1e30, whose sum overflows, are as broken).
        finite &= logits.sum().isfinite()
        c, probs = sample_codes(logits, cfg, generator, None if u is None else u[:, a:a + step])
        codes.append(c)
        p.append(probs.gather(-1, c[..., None])[..., 0])
    return torch.cat(codes, 1), torch.cat(p, 1), finite


def maskgit_step(codes: torch.Tensor, p: torch.Tensor, n_mask: int, remask_temperature: float,
                 generator, vocab: Vocab) -> torch.Tensor:
    """The re-masking of one refinement step, over the codes that were still masked before it.

    codes: [n, M] fresh samples at those positions (positional order), p: [n, M] the probability of
    each; n_mask: codes left masked after this step (0 on the last step: keep everything). Returns
    their new token ids [n, M]: the samples, MASK at the n_mask least confident of each row. The codes
    known before the step are not here: they keep their ids and are never re-masked."""
    new = codes + vocab.visual_offset
    if n_mask == 0:
        return new
    log_p = p.clamp_min(1e-20).log()
    return new.masked_fill(mask_by_random_topk(log_p, n_mask, remask_temperature, generator), vocab.mask)


def guide(logits: torch.Tensor, n_cond: int, scale: float) -> torch.Tensor:
    """CFG mix of a batched forward: rows [cond x n, uncond x n] -> u + g (c - u), [n, ...].
    Without uncond rows (guidance off) the logits are returned as they are.

    One [n, ...] temporary, updated in place (not one per operation of the formula), and `logits`
    left as it was; the same float operations as the formula in its order, so the same bits."""
    if logits.shape[0] == n_cond:
        return logits
    cond, uncond = logits[:n_cond], logits[n_cond:]
    return (cond - uncond).mul_(scale).add_(uncond)


# ============================================================================================ the plan
@dataclass
class Plan:
    """Everything about a batch of videos that is known before decoding starts (host-side work).

    Rows: `n_cond` conditional rows, then (with CFG) their unconditional twins in the same order.
    Columns: every row is left-padded so that VIDEO_START sits in the same column for all rows:
        [pad | BOS text SEP] VIDEO_START dur fps | given frames | generated frames (all MASK here)
    """
    vocab: Vocab
    tokens: torch.Tensor       # [B, L] int64: the layout; given frames already history-masked (unless compat)
    valid: torch.Tensor        # [B, L] bool: False at left padding
    pos: Positions             # [B, L]: positions of the whole layout, computed once (padding-aware)
    fid: torch.Tensor          # [B, L] frame ids (lumos.masks.frame_ids) for the frame-causal masks
    n_cond: int                # conditional rows (= output videos)
    video_col: int             # column of VIDEO_START in every row
    h: int                     # latent rows per frame
    w: int                     # latent columns per frame
    prefill_len: int           # columns [0, prefill_len) are the prompt: prefilled once
    frame_starts: list[int]    # first column of each generated frame's slot in the layout
    code_idx: torch.Tensor     # [N] offsets of the h*w codes inside a frame (Vocab.code_offsets)
    hist_idx: torch.Tensor     # offsets inside a frame of the content tokens masked in the cache
    given: torch.Tensor        # [n_cond, G, h, w] codes of the given frames (unmasked), G may be 0 (all of them)
    frame0: int = 0            # column of the first frame (given or generated) of the layout
    num_frames: int = 0        # latent frames to generate: len(frame_starts), or more with a rolling window
    sinks: int = 0             # rolling window: the first `sinks` frames of the video never leave the cache
    reindex: bool = True       # rolling window: positions move back with the window (False: keep growing)

    @property
    def frame_len(self) -> int:
        return self.vocab.frame_length(self.h, self.w)

    @property
    def rolling(self) -> bool:
        """More frames to generate than the layout has slots: the window slides (`iter_parallel`)."""
        return self.num_frames > len(self.frame_starts)


def plan_generation(model, prompts: Sequence, num_frames: int, h: int, w: int, cfg: SampleConfig,
                    device=None, negative: Sequence | None = None) -> Plan:
    """Lay out a batch of generations.

    prompts: one token prefix per output video, `vocab.build(text_ids, given_frames, duration=..,
        fps=.., complete=False)`: BOS text SEP VIDEO_START dur fps [given frames]. Every prefix must
        hold the same number of given frames (the video parts must line up in the cache).
    num_frames: latent frames to generate after the given ones; h, w: latent grid. With
        `cfg.window_frames` the layout has slots for the sinks, the window and the frame being decoded
        only (`iter_parallel` slides it), and given frames beyond the sinks + window are left out.
    negative: None (the uncond rows start at VIDEO_START), or one text prefix per video, `vocab.text_turn(ids)`
        = BOS negative-text SEP, put before the uncond row's VIDEO_START (left-padded like the cond rows);
        no effect with guidance off."""
    vocab: Vocab = model.config.vocab
    if num_frames < 1:
        raise LumosError(f"nothing to generate: {num_frames} new latent frames requested")
    if not prompts:
        raise LumosError("no prompts")
    prefixes, starts, given = [], [], []
    for p in prompts:
        p = np.asarray(p, np.int64).reshape(-1)
        try:
            parsed = vocab.parse_video(p)
        except LumosError as e:
            raise LumosError(f"malformed generation prompt: {e}") from None
        if parsed.complete:
            raise LumosError("a generation prompt must leave the video open (no VIDEO_END)")
        if len(parsed.frames) and parsed.frames.shape[1:] != (h, w):
            raise LumosError(f"given frames are {parsed.frames.shape[1]}x{parsed.frames.shape[2]} latent, "
                             f"the generated ones {h}x{w}")
        prefixes.append(p)
        starts.append(parsed.video_start)
        given.append(parsed.frames if len(parsed.frames) else np.zeros((0, h, w), np.int64))
    if len({len(p) - s for p, s in zip(prefixes, starts)}) > 1 or len({len(g) for g in given}) > 1:
        raise LumosError("all videos of a batch need the same number of given frames")
    if negative is not None and len(negative) != len(prefixes):
        raise LumosError(f"{len(negative)} negative prompts for {len(prefixes)} videos")
    negative = [np.asarray(x, np.int64).reshape(-1) for x in negative] if negative is not None and cfg.use_cfg else None
    starts_all = starts + ([len(x) for x in negative] if negative else [])
    lf = vocab.frame_length(h, w)
    # A rolling window (long videos): the cache holds the sinks and the last `window_frames` frames, so
    # the layout has room for those and the frame being decoded; given frames beyond that are dropped.
    G = len(given[0])                                          # given frames in the layout
    slots = num_frames
    if cfg.window_frames is not None:
        keep = cfg.sink_frames + cfg.window_frames
        if G > keep:
            kept = list(range(cfg.sink_frames)) + list(range(G - cfg.window_frames, G))
            for i, (p, s0) in enumerate(zip(prefixes, starts)):
                f0 = s0 + vocab.VIDEO_HEADER
                prefixes[i] = np.concatenate([p[:f0]] + [p[f0 + j * lf:f0 + (j + 1) * lf] for j in kept])
            G = keep
        slots = min(num_frames, keep + 1 - G)
    # Before anything the size of the layout: the frames to generate, the model's positions.
    check_generation(model.config, cfg, max(starts_all) + vocab.VIDEO_HEADER, G + slots, h, w)
    new_frames = np.tile(vocab.masked_frame(h, w), slots)
    rows = [np.concatenate([p, new_frames]) for p in prefixes]

    n = len(rows)
    lp = max(starts_all)                                       # VIDEO_START column of every row
    L = lp + len(rows[0]) - starts[0]
    B = 2 * n if cfg.use_cfg else n
    tokens = np.full((B, L), vocab.bos, np.int64)
    pad = np.zeros(B, np.int64)
    for i, (r, s) in enumerate(zip(rows, starts)):
        pad[i] = lp - s
        tokens[i, pad[i]:] = r
        if cfg.use_cfg:                      # uncond twin: from VIDEO_START on (after the negative text, if any)
            neg = negative[i] if negative is not None else r[:0]
            pad[n + i] = lp - len(neg)
            tokens[n + i, pad[n + i]:] = np.concatenate([neg, r[s:]])

    frame0 = lp + vocab.VIDEO_HEADER                           # column of the first frame (given or generated)
    first = frame0 + G * lf                                    # column of the first generated frame
    content = history_mask_indices(vocab.body_length(h, w), cfg.history_mask_ratio, cfg.reference_compat)
    hist_idx = vocab.FRAME_HEADER + content
    if not cfg.reference_compat:                               # given frames cached like history frames
        for g in range(G):
            tokens[:, frame0 + g * lf + hist_idx] = vocab.mask

    device = torch.device(device) if device is not None else _model_device(model)
    tokens_t = torch.from_numpy(tokens).to(device)
    pad_t = torch.from_numpy(pad).to(device)
    code_idx = vocab.code_offsets(h, w)
    return Plan(
        vocab=vocab, tokens=tokens_t, valid=torch.arange(L, device=device)[None] >= pad_t[:, None],
        pos=model.positions(tokens_t, start=pad_t), fid=frame_ids(tokens_t, vocab), n_cond=n, video_col=lp, h=h, w=w,
        prefill_len=first, frame_starts=[first + f * lf for f in range(slots)],
        code_idx=torch.from_numpy(code_idx).to(device), hist_idx=torch.from_numpy(hist_idx).to(device),
        given=torch.from_numpy(np.stack(given)).to(device), num_frames=num_frames, sinks=cfg.sink_frames,
        reindex=cfg.reindex_window, frame0=frame0,
    )


def _model_device(model) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


# ============================================================================================ decoding
@dataclass
class Stats:
    forwards: int = 0          # model forward passes (each batched over all rows)


def _forward(model, stats: Stats | None, tokens, pos, mask, cache_pos=None, kv_len=None, at=None, rope=None):
    """One counted forward. With the cache, `kv_len` (a host int from the layout) bounds attention to
    the live prefix of the cache; `mask` then has kv_len columns. at: (B, M) the positions whose
    hidden states are wanted (the model's last layer works there only), None = all. rope: the RoPE
    tables of `pos` when built already (`LumosModel.forward`)."""
    if stats is not None:
        stats.forwards += 1
    return model(tokens, pos=pos, mask=mask, cache_pos=cache_pos, kv_len=kv_len, return_hidden=True, at=at,
                 rope=rope)                                                                 # (B, Lq or M, D)


def _visual_rows(vocab: Vocab) -> slice:
    return slice(vocab.visual_offset, vocab.visual_offset + vocab.codebook_size)


def _prefill(model, plan: Plan, ctx: torch.Tensor, stats: Stats | None, spare: int = 0) -> None:
    """Allocate the static cache (`spare` slots more than the layout) and write the prompt into it (one
    batched forward)."""
    B, L = ctx.shape
    P = plan.prefill_len
    model.setup_cache(B, L + spare)
    mask = frame_causal_mask(plan.fid, plan.valid, q_start=0, q_end=P, kv_len=P)     # (B, 1, P, P)
    _forward(model, stats, ctx[:, :P], plan.pos.slice(0, P), mask, torch.arange(P, device=ctx.device), P)


def _frame_shift(plan: Plan, k: int = 1) -> Positions:
    """The position change of a frame's tokens k frames later in the layout (`lumos.positions.shift`)."""
    lf, c = plan.frame_len, plan.frame0
    return shift(plan.pos.slice(c, c + lf), plan.pos.slice(c + lf, c + 2 * lf), k)


def _slide(model, plan: Plan) -> None:
    """The rolling window moves one frame on: the oldest frame after the sinks leaves the cache, the
    later ones move one slot back (their keys re-indexed by one frame back, `LumosModel.move_cache`, or
    kept at their positions without `plan.reindex`), and the last slot is free for the next frame."""
    lf = plan.frame_len
    c = plan.frame0 + plan.sinks * lf                                                  # first window slot
    end = plan.frame_starts[-1] + lf
    src = torch.arange(c + lf, end, device=plan.tokens.device)
    back = shift(plan.pos.slice(c + lf, end), plan.pos.slice(c, end - lf))            # one frame back
    if not plan.reindex:
        back = Positions(torch.zeros_like(back.text), torch.zeros_like(back.thw), back.visual)
    model.move_cache(src, src - lf, back)


def _check_finite(finite: torch.Tensor, f: int, frames: int, cfg: SampleConfig) -> None:
    """Stop when a frame's logits were not all finite. `finite` is a 0-d bool accumulated on the
    device over the frame's passes (`finite &= isfinite(logits).all()`, no host sync per pass); this
    reads it once, when the frame is done and before its codes are yielded."""
    if not bool(finite):
        raise LumosError(f"generation stopped: the model's logits are not finite (NaN or inf) in latent frame "
                         f"{f + 1}/{frames}; the checkpoint's weights are broken or overflow in this dtype, or "
                         f"guidance_scale {cfg.guidance_scale:g} is too large")


def _generator(generator, device: torch.device, n: int):
    """The generator(s) of a decoding: one `torch.Generator` (None: freshly seeded) or a list of `n`, one per video."""
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    if isinstance(generator, (list, tuple)) and len(gens) != n:
        raise LumosError(f"{len(gens)} generators for {n} videos; give one per video (or a single one)")
    for g in gens:
        if not isinstance(g, torch.Generator):
            raise LumosError(f"a generator must be a torch.Generator, got {type(g).__name__}")
        if g.device.type != device.type:
            raise LumosError(f"the generator is on {g.device} but decoding runs on {device}")
    return gens if isinstance(generator, (list, tuple)) else generator


def _stop_requested(callback, f: int, s: int, ids: torch.Tensor, plan: "Plan") -> bool:
    """Call a step callback with the frame's codes so far ([n, h, w], -1 where still masked) -> whether it
    asks to stop."""
    if callback is None:
        return False
    codes = torch.where(ids == plan.vocab.mask, -1, ids - plan.vocab.visual_offset).view(plan.n_cond, plan.h, plan.w)
    return bool(callback(f, s, codes))


def _fused_first_pass(model, plan: Plan, stats: Stats | None, write: tuple, x: torch.Tensor, e0: int,
                      rows: torch.Tensor, cols: torch.Tensor, rope: tuple) -> torch.Tensor:
    """The previous frame's cache write and this frame's first step in one forward: the two frames'
    tokens side by side (adjacent slots), frame-causal between them (the finished frame's queries see
    the cache up to its own end, the new frame's see that frame too), outputs at `rows` of the new frame
    only. The same keys, values and outputs as the two passes (one fixed cost fewer). cols: the layout's
    column indices (at least e0); write: `iter_parallel`'s pending write; rope: the new frame's tables."""
    (tokens, *_), h0, write_rope = write                 # h0: the finished frame's first column
    B, lf = x.shape
    cols = cols[:e0]
    ends = torch.full((2 * lf,), e0, device=x.device)
    ends[:lf] = h0 + lf                                   # the finished frame: keys up to its own end
    mask = plan.valid[:, None, None, :e0] & (cols < ends[:, None])                        # (B, 1, 2 lf, e0)
    both = tuple(torch.cat([a, b], 1) for a, b in zip(write_rope, rope))   # the two frames' RoPE tables
    return _forward(model, stats, torch.cat([tokens, x], 1), plan.pos.slice(h0, e0), mask, cols[h0:e0].clone(),
                    e0, at=rows + lf, rope=both)


def static_shapes(device: torch.device) -> bool:
    """Whether the compiled decoding step runs at one static shape (on CUDA, for CUDA graphs): every step
    and frame of a layout then attends over the whole static cache under a mask (not its live prefix),
    computes every position of the frame (not only the still-masked codes) and writes each finished frame
    to the cache in a pass of its own: one graph, replayed. Elsewhere (the CPU) the compiled step keeps
    eager's shapes and passes (the live prefix, the masked codes, a write riding with the next frame's
    first step), which inductor takes as symbols: two graphs (a step, a write + step; one more where a
    size is 0 or 1, which torch always specialises: a single masked code left, a single row), none after
    the first video, and on a CPU less arithmetic beats one shape."""
    return device.type == "cuda"


def compiled_step(model):
    """The model's forward for decoding steps and cache writes, compiled (`torch.compile`, inductor: C++ on
    the CPU, Triton + CUDA graphs with mode "reduce-overhead" on CUDA), kept on the model. Static shapes
    where `static_shapes` says so (one graph per frame shape), else dynamic (a graph per kind of pass)."""
    step = getattr(model, "_compiled_step", None)
    if step is None:
        static = static_shapes(_model_device(model))
        mode = "reduce-overhead" if _model_device(model).type == "cuda" else None
        compiled = torch.compile(model.forward, mode=mode, dynamic=not static, fullgraph=True)
        if static:
            step = compiled
        else:
            from torch.fx.experimental import _config as fx_config

            def step(*args, **kwargs):
                # Without "duck shapes": two sizes that happen to be equal (a cache prefix as long as the
                # head dim) are not taken for one symbol, which would specialise the graph to that size.
                with fx_config.patch(use_duck_shape=False):
                    return compiled(*args, **kwargs)
        model._compiled_step = step
    return step


@torch.inference_mode()
def iter_parallel(model, plan: Plan, cfg: SampleConfig, generator=None, *,
                  use_cache: bool = True, stats: Stats | None = None,
                  progress: bool = False, callback=None, compile: bool = False) -> Iterator[torch.Tensor]:
    """Masked parallel decoding; yields the codes [n_cond, h, w] of each generated frame when it is done.

    generator: a `torch.Generator`, or a list of n_cond (one per video: each row's randomness is drawn
    from its own, so a video comes out as it would alone). callback(frame, step, codes [n, h, w] with -1
    where still masked) runs after each refinement step; a true return stops the decoding there: the
    frame is yielded if that was its last step, else dropped.

    use_cache=False recomputes the whole sequence at every step under the dense frame-causal mask,
    with the same history-masked copies of earlier frames in context (the reference's "V1" path; for
    checking the cache and for the speed comparison). compile=True runs the steps and cache writes
    through `compiled_step` (the same tokens as eager, up to float rounding; `static_shapes` says how)."""
    vocab = plan.vocab
    device = plan.tokens.device
    generator = _generator(generator, device, plan.n_cond)
    B, L = plan.tokens.shape
    n, lf, N = plan.n_cond, plan.frame_len, plan.h * plan.w
    reps = B // n                                                # 2 with CFG (cond + uncond), else 1
    F, slots = plan.num_frames, len(plan.frame_starts)
    if plan.rolling and not use_cache:
        raise LumosError("a rolling window needs the KV cache (use_cache=True)")
    if compile and not use_cache:
        raise LumosError("compile=True compiles the cached step: it needs use_cache=True")
    forward = compiled_step(model) if compile else model
    static = compile and static_shapes(device)                  # one shape for every pass (CUDA graphs)
    counts = mask_schedule(N, cfg.num_inference_steps)
    unknown = [N] + counts[:-1]                                  # codes still masked before each step
    temps = remask_temperatures(cfg.remask_temperature, cfg.num_inference_steps, F, cfg.reference_compat)
    cols = torch.arange(L, device=device)
    nothing = cols.new_empty(B, 0)                               # `at` of a pass that only writes the cache
    # The context as the model sees it: history frames as cached (masked copies), current frame as is.
    ctx = plan.tokens.clone()
    if use_cache:
        # compiled with dynamic shapes: one spare cache slot, so the live prefix is never the whole buffer
        # (a prefix as long as the buffer is contiguous, and inductor would compile that case apart)
        _prefill(model, plan, ctx, stats, spare=int(compile and not static))
    # A finished frame's cache write: (the arguments of its forward, its first column), run as part of the
    # next frame's first pass (`_fused_first_pass`) when that frame sits in the next slot, else alone (eager).
    pending = None
    try:
        for f in tqdm(range(F), desc="frames", unit="frame", disable=not progress, leave=False):
            slot = min(f, slots - 1)                              # past the last slot: the window slides
            s0, e0 = plan.frame_starts[slot], plan.frame_starts[slot] + lf
            if pending is not None and (f >= slots or pending[1] + lf != s0):
                _forward(model, stats, *pending[0], at=nothing, rope=pending[2])   # keys, values only; then a slide
                pending = None
            if f >= slots:
                _slide(model, plan)
            if use_cache:
                # The frame's queries see every real key up to the frame's end: all history and the frame
                # itself (= the frame-causal rows of this frame), one row broadcast over the queries.
                # Static: the whole cache under that mask (kv_len None), one shape for every frame. A
                # fresh contiguous mask, so that a compiled step sees the same kind of tensor every frame.
                kv_len = None if static else e0
                mask = plan.valid[:, None, None, :e0].clone() if not static else \
                    (plan.valid & (cols < e0))[:, None, None, :]                    # (B, 1, 1, e0 or L)
                # cache_pos: a copy, not a view of `cols` (a compiled step would specialise on its offset)
                pos, cache_pos = plan.pos.slice(s0, e0), cols[s0:e0].clone()
                if not plan.reindex and f > slot:                 # positions keep growing: f - slot frames on
                    pos = add(pos, _frame_shift(plan, f - slot))
                rope = rope_tables(pos, model.config)            # the frame's RoPE tables, once for its steps
            else:
                mask = frame_causal_mask(plan.fid[:, :e0], plan.valid[:, :e0])     # (B, 1, e0, e0)
                pos = plan.pos.slice(0, e0)
            frame = ctx[:n, s0:e0].clone()                                          # (n, Lf)
            stop = False
            finite = torch.ones((), dtype=torch.bool, device=device)
            for s in tqdm(range(cfg.num_inference_steps), desc=f"frame {f + 1}/{F}", unit="step",
                          disable=not progress, leave=False):
                x = frame.repeat(reps, 1)                                            # (B, Lf)
                # Predict only the codes still masked: the known ones are kept whatever their logits say,
                # so the model's last layer works at these positions only (static: everywhere, one shape).
                todo = masked_positions(frame[:, plan.code_idx] == vocab.mask, unknown[s])      # (n, M)
                at = plan.code_idx[todo]                                                        # (n, M) columns
                rows = at.repeat(reps, 1)                                                       # (B, M)
                if static:
                    hidden = _forward(forward, stats, x, pos, mask, cache_pos, kv_len, rope=rope)
                    h = take(hidden, rows)                                                      # (B, M, D)
                elif pending is not None:                          # + the previous frame's cache write
                    h = _fused_first_pass(forward, plan, stats, pending, x, e0, rows, cols, rope)   # (B, M, D)
                    pending = None
                elif use_cache:
                    h = _forward(forward, stats, x, pos, mask, cache_pos, kv_len, at=rows, rope=rope)  # (B, M, D)
                else:
                    ctx[:, s0:e0] = x
                    h = _forward(model, stats, ctx[:, :e0], pos, mask, at=rows + s0)
                codes, p, ok = predict_codes(model, h, n, cfg, generator)                      # (n, M) x 2
                finite &= ok
                frame.scatter_(1, at, maskgit_step(codes, p, counts[s], temps[f][s], generator, vocab))
                if callback is not None and (                       # no gather per step without one
                        stop := _stop_requested(callback, f, s, frame[:, plan.code_idx], plan)):
                    break
            _check_finite(finite, f, F, cfg)
            if stop:
                if s == cfg.num_inference_steps - 1:                # the frame was finished
                    yield (frame[:, plan.code_idx] - vocab.visual_offset).view(n, plan.h, plan.w)
                return
            history = frame.clone()
            history[:, plan.hist_idx] = vocab.mask
            ctx[:, s0:e0] = history.repeat(reps, 1)
            if use_cache and f < F - 1:                           # the last frame is never attended to
                write = (ctx[:, s0:e0].contiguous(), pos, mask, cache_pos, kv_len)         # a step's strides
                if static:                                        # one shape: a pass of its own
                    _forward(forward, stats, *write, rope=rope)
                else:
                    pending = (write, s0, rope)
            yield (frame[:, plan.code_idx] - vocab.visual_offset).view(n, plan.h, plan.w)
    finally:
        if use_cache:
            model.clear_cache()


@torch.inference_mode()
def iter_next_token(model, plan: Plan, cfg: SampleConfig, generator=None, *,
                    stats: Stats | None = None, progress: bool = False, callback=None) -> Iterator[torch.Tensor]:
    """The next-token baseline on the same model: one code at a time in raster order, KV cache, CFG
    batched. Yields the codes [n_cond, h, w] of each frame.

    The pass for code j feeds the tokens from the previous code (now sampled, written to the cache
    here) up to code j (a MASK whose logits predict it), e.g. [code, MASK], [code, NEWLINE, MASK] or,
    across frames, [code, NEWLINE, FRAME_END, FRAME_START, size, size, MASK], under a plain causal
    mask. A speed baseline: a model trained with AR-DF is not a next-token model, so expect poor
    samples. No history masking (the cache holds the generated tokens). generator and callback as in
    `iter_parallel`; a step is one code (h*w steps per frame)."""
    if plan.rolling:
        raise LumosError("a rolling window (window_frames) needs parallel decoding, not next-token")
    vocab = plan.vocab
    device = plan.tokens.device
    generator = _generator(generator, device, plan.n_cond)
    B, L = plan.tokens.shape
    n = plan.n_cond
    reps = B // n
    rows = _visual_rows(vocab)
    cols = torch.arange(L, device=device)
    offsets = plan.code_idx.tolist()                       # host-side, once
    ctx = plan.tokens.clone()
    _prefill(model, plan, ctx, stats)
    written = plan.prefill_len                             # first column not yet in the cache
    F = len(plan.frame_starts)
    try:
        for f in tqdm(range(F), desc="frames", unit="frame", disable=not progress, leave=False):
            s0 = plan.frame_starts[f]
            finite = torch.ones((), dtype=torch.bool, device=device)
            stop = False
            for j, off in enumerate(offsets):
                c = s0 + off
                q = cols[written:c + 1]
                k = cols[: c + 1]
                mask = (k[None, :] <= q[:, None])[None, None] & plan.valid[:, None, None, : c + 1]  # (B,1,Lq,c+1)
                hidden = _forward(model, stats, ctx[:, written:c + 1], plan.pos.slice(written, c + 1), mask, q,
                                  c + 1)
                logits = guide(model.head(hidden[:, -1], rows), n, cfg.guidance_scale)           # (n, K)
                finite &= torch.isfinite(logits).all()
                codes, _ = sample_codes(logits, cfg, generator)
                ctx[:, c] = (codes + vocab.visual_offset).repeat(reps)
                written = c
                if callback is not None and (                       # no gather per code without one
                        stop := _stop_requested(callback, f, j, ctx[:n, s0 + plan.code_idx], plan)):
                    break
            _check_finite(finite, f, F, cfg)
            if not stop or j == len(offsets) - 1:
                yield (ctx[:n, s0 + plan.code_idx] - vocab.visual_offset).view(n, plan.h, plan.w)
            if stop:
                return
    finally:
        model.clear_cache()


@dataclass
class Generation:
    codes: torch.Tensor        # [n_cond, G + F, h, w] int64: the given frames, then the generated ones
    forwards: int              # model forward passes used


def generate(model, plan: Plan, cfg: SampleConfig, generator=None, *,
             mode: str = "parallel", progress: bool = False, callback=None, compile: bool = False) -> Generation:
    """Decode every frame of `plan`. mode: "parallel" (KV cache), "parallel-nocache", "next-token".
    generator, callback, compile: as in `iter_parallel` (a callback's stop leaves fewer frames in the codes)."""
    stats = Stats()
    if plan.rolling and mode != "parallel":
        raise LumosError(f"a rolling window (window_frames) needs mode 'parallel', not {mode!r}")
    if mode == "next-token":
        frames = iter_next_token(model, plan, cfg, generator, stats=stats, progress=progress, callback=callback)
    elif mode in ("parallel", "parallel-nocache"):
        frames = iter_parallel(model, plan, cfg, generator, use_cache=mode == "parallel", stats=stats,
                               progress=progress, callback=callback, compile=compile)
    else:
        raise LumosError(f"unknown decoding mode {mode!r}; expected one of {MODES}")
    frames = list(frames)
    new = (torch.stack(frames, dim=1) if frames else                         # (n, F, h, w)
           torch.zeros((plan.n_cond, 0, plan.h, plan.w), dtype=torch.int64, device=plan.tokens.device))
    return Generation(codes=torch.cat([plan.given.to(new.device), new], dim=1), forwards=stats.forwards)


def expected_forwards(mode: str, frames: int, steps: int, codes_per_frame: int, slots: int | None = None,
                      static: bool = False) -> int:
    """The forward-pass count of each mode (module docstring); "compiled" is parallel through `compiled_step`,
    at one static shape if `static` (`static_shapes` of the device). slots: the generated-frame slots of the
    layout (`len(plan.frame_starts)`; None: one per frame, no window)."""
    if mode == "parallel" or (mode == "compiled" and not static):
        return 1 + frames * steps + max(0, frames - (slots or frames))
    if mode == "compiled":
        return 1 + frames * steps + (frames - 1)
    if mode == "parallel-nocache":
        return frames * steps
    if mode == "next-token":
        return 1 + frames * codes_per_frame
    raise LumosError(f"unknown decoding mode {mode!r}; expected one of {MODES}")
