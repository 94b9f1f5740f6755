"""Training configs and the strict TOML loader both trainers use.

    cfg = TrainConfig.from_toml("configs/tiny.toml", ["lr=3e-4", "batch.max_frames=3", 'out_dir="runs/x"'])
    cfg = TrainConfig.from_dict(json.loads(".../train_state.json")["train_config"])   # what a checkpoint saved
    cfg.to_dict()                                                                    # plain JSON-able dict

A config is a dataclass that inherits `TomlConfig`. Its TOML file holds the dataclass's fields as
top-level keys; a field whose type is itself a dataclass is a table (`[batch]` of `TrainConfig`,
`[model]` and `[data]` of the tokenizer trainer's config). Loading is strict, because a typo must not
silently fall back to a default: an unknown key, a value of the wrong type or a missing required key
(a field without a default) is a `LumosError` naming it. An int is accepted for a float (and stored as
a float), a list of ints for a `tuple[int, ...]`.

Overrides (`--set KEY=VALUE`, repeatable): KEY is dotted for a table (`batch.max_frames`,
`model_overrides.n_layers`), VALUE is TOML (`lr=3e-4`, `out_dir="runs/x"`); a VALUE that is not
valid TOML is taken as a string (`out_dir=runs/x`).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lumos.config import ModelConfig
from lumos.train.batches import BatchOptions, SyntheticVideos
from lumos.train.lr import LR_SCHEDULES, get_lr
from lumos.train.parallelize import PARALLEL
from lumos.utils import LumosError, check_keys, first_line, fits


# ---------------------------------------------------------------------------------------------- loader
class TomlConfig:
    """Mixin of a config dataclass: strict `from_toml` / `from_dict`, and `to_dict`. `what` names the
    config in error messages ("unknown train config keys [...]")."""

    what = "config"

    @classmethod
    def from_toml(cls, path, overrides: list[str] = ()):
        """The TOML file at `path` with `KEY=VALUE` overrides applied (see the module docstring)."""
        path = Path(path)
        try:
            d = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LumosError(f"{path}: no such config file") from None
        except UnicodeDecodeError as e:
            raise LumosError(f"{path}: not UTF-8 text (byte {e.start}); a config is a TOML text file") from None
        except OSError as e:
            raise LumosError(f"{path}: cannot read the config ({e.strerror or first_line(e)})") from None
        except tomllib.TOMLDecodeError as e:
            raise LumosError(f"{path}: not valid TOML ({e})") from None
        for item in overrides:
            apply_override(d, item)
        return cls.from_dict(d, where=str(path))

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None):
        """Build the config from a parsed document, strictly. `where` (a file) prefixes the errors."""
        return _build(cls, d, cls.what, "", where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def apply_override(d: dict, item: str) -> None:
    """Apply one `KEY=VALUE` override to the parsed document `d` (in place)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise LumosError(f"--set {item!r}: expected KEY=VALUE")
    *tables, name = key.strip().split(".")
    for t in tables:
        d = d.setdefault(t, {})
        if not isinstance(d, dict):
            raise LumosError(f"--set {item!r}: {t} is not a table")
    try:
        d[name] = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        d[name] = value  # a bare word: take it as a string


def _build(cls, d, what: str, prefix: str, where: str | None):
    """`cls(**d)` after checking keys and types; tables (fields typed as a dataclass) recursively.
    `prefix` is the dotted path of this table ("" at the top, "batch." inside [batch])."""
    check_keys(cls, d, what, where=where)
    at = f"{where}: " if where else ""
    hints = typing.get_type_hints(cls)
    missing = [prefix + f.name for f in dataclasses.fields(cls) if f.name not in d
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise LumosError(f"{at}missing required config key(s): {', '.join(missing)}")
    kwargs = {}
    for k, v in d.items():
        want = hints[k]
        if dataclasses.is_dataclass(want):
            kwargs[k] = _build(want, v, f"[{prefix}{k}]", f"{prefix}{k}.", where)
            continue
        ok, name = fits(want, v)
        if not ok:
            raise LumosError(f"{at}{what} key {k!r} must be of type {name}, got {v!r}")
        kwargs[k] = float(v) if want is float else v
    try:
        return cls(**kwargs)
    except LumosError as e:                  # a value the config's own validator refuses: say where
        raise LumosError(f"{at}{what}: {e}") from None


# ---------------------------------------------------------------------------------------------- TrainConfig
@dataclass
class TrainConfig(TomlConfig):
    what = "train config"
    # model
    model: str = "tiny"                # preset in lumos.config.CONFIGS (shapes)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields to change, e.g. {n_layers = 4}
    init_from: str = ""                # a save_pretrained folder to start from (fine-tuning); "" = random init
    # data
    data: list = field(default_factory=list)       # record folders (`lumos tokenize`); several = mixed (joint)
    synthetic: dict = field(default_factory=dict)  # SyntheticVideos arguments, used when `data` is empty
    batch: BatchOptions = field(default_factory=BatchOptions)  # [batch]: frames, AR-DF masks, CFG dropout, padding
    # the tokenizers the data was made with, copied into every checkpoint (each is a pipeline folder,
    # lumos.train.outputs); "" = the ones the records' index names (none for synthetic data)
    text_tokenizer: str = ""           # text_tokenizer.json
    video_tokenizer: str = ""          # video tokenizer folder (Cosmos .jit files or vq_config.json)
    # objective (lumos.train.loss)
    z_loss_weight: float = 0.0         # weight of mean(logsumexp^2) (released: 0)
    loss_chunk: int = 1024             # target positions per logits chunk of the loss
    # optimisation
    max_steps: int = 1000              # optimizer steps
    batch_size: int = 8                # GLOBAL samples per optimizer step (all ranks, all micro-steps)
    micro_batch_size: int = 0          # samples per rank per forward; 0 = batch_size / world (no accumulation)
    lr: float = 1e-3                   # peak learning rate (released fine-tuning: 2.5e-5)
    min_lr: float = 1e-4               # end of the cosine decay
    lr_schedule: str = "cosine"        # cosine | constant (after warmup)
    warmup_steps: int = 100            # linear warmup from lr / warmup_steps
    weight_decay: float = 0.1          # AdamW, on every parameter (the reference has no param groups)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 4.0             # max global grad norm (released: 4); 0 = no clipping
    # system
    parallel: str = "auto"             # auto (fsdp under torchrun, else none) | none | ddp | fsdp
    device: str = "auto"               # auto (cuda if available) | cpu | cuda
    precision: str = "auto"            # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    activation_checkpointing: bool = False  # recompute each block in the backward
    compile: bool = False              # torch.compile each block
    seed: int = 0                      # weights init, data order, masks
    # output
    out_dir: str = "runs/tiny"
    checkpoint_every: int = 100        # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 3          # newest checkpoints kept
    tensorboard: bool = True           # write tb/ scalars

    def __post_init__(self):
        """The one validator of the training keys; `BatchOptions` checks its own."""
        choices = {"lr_schedule": LR_SCHEDULES, "parallel": ("auto",) + PARALLEL,
                   "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise LumosError(f"{name} = {getattr(self, name)!r} is not one of {allowed}")
        for name in ("max_steps", "batch_size", "loss_chunk", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise LumosError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.micro_batch_size < 0 or self.lr <= 0:
            raise LumosError("warmup_steps and micro_batch_size must be >= 0 and lr > 0")
        if self.data and self.synthetic:
            raise LumosError("give either data (record folders) or synthetic, not both")
        if not all(isinstance(p, str) for p in self.data):
            raise LumosError(f"data must be a list of record folders (strings), got {self.data!r}")
        _check_table(self.synthetic, typing.get_type_hints(SyntheticVideos.__init__), "synthetic", skip=("vocab",))
        hints = typing.get_type_hints(ModelConfig)
        hints["rope_scale"] = tuple[int, ...]
        _check_table(self.model_overrides, hints, "model config", skip=("vocab",))  # [model_overrides]

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): `lumos.train.lr.get_lr` with these keys."""
        return get_lr(step, peak=self.lr, warmup_steps=self.warmup_steps, total_steps=self.max_steps,
                      schedule=self.lr_schedule, min_lr=self.min_lr)


def _check_table(d: dict, hints: dict, what: str, skip=()) -> None:
    """Keys and value types of a free-form table (`[synthetic]`, `[model_overrides]`) against the
    type hints of what it is passed to."""
    known = sorted(set(hints) - {"return", *skip})
    unknown = sorted(set(d) - set(known) - set(skip))
    if unknown:
        raise LumosError(f"unknown {what} keys {unknown}; known: {known}")
    for k, v in d.items():
        if k in hints and k not in skip:
            ok, name = fits(hints[k], v)
            if not ok:
                raise LumosError(f"{what} key {k!r} must be of type {name}, got {v!r}")
