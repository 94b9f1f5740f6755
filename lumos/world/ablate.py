"""Ablation suites on the Moving Digits world (`lumos ablate`, `lumos.cli.ablate`): train the variants of
a suite on the same data, with the same budget, data order and seeds, score each, and write a report.

    lumos ablate rope --budget tiny --seeds 1 --out ablate-rope-tiny     # the test's budget, < 1 minute
    lumos ablate rope --budget quick --seeds 2 --out ablate-rope          # a smoke check on 2 CPU cores
    lumos ablate steps --budget quick --out ablate-steps                  # no training: the built-in model
    lumos ablate train-mask --budget tiny --out ablate-mask-tiny          # tube vs random vs per_frame masks
    lumos ablate history-mask --budget quick --out ablate-history         # no training: history_mask_ratio
    lumos ablate steps --budget full --seeds 2 --out ablate-steps-full    # what docs/ablations.md reports

Suites (`SUITES`); two kinds: trained suites (`TRAINED`: each variant is a change of the training
config, trained the same way) and sampled suites (`SAMPLED`: each variant is a sampling setting of
one trained model):
- "rope": the position encoding (`ROPE`): `ModelConfig.rope_type` = "1d", "mrope", "3d", "mmrope", and
  "mmrope-noscale" (MM-RoPE's frequency layout, positions not scaled: rope_scale 1, 1, 1) (the paper's
  MM-RoPE ablation). Every variant trains from scratch (`lumos.train.loop.train`) on the same Moving
  Digits records, prepared once into OUT/data with the shipped video tokenizer, with the same seed per
  run (weights init, data order and AR-DF masks come from `TrainConfig.seed`), then generates a few
  prompts of `lumos.world.evaluate` from its run folder (a training run is a pipeline).
- "train-mask": the AR-DF training masks, `BatchOptions.mask_mode` = "tube" (AR-DF), "random",
  "per_frame" (diffusion-forcing-like; `lumos.train.masking`), trained like the rope variants.
- "steps": no training; one trained model (default the built-in "moving-digits") generates the same
  prompts with `num_inference_steps` from `Budget.steps`: task scores against seconds per video.
- "history-mask": no training; the same model and prompts at the inference-time `history_mask_ratio`
  of `Budget.history_mask_ratios` (quick: 0, 0.3, 0.5, 0.7, 0.9; tiny: 0 and 0.9) and
  `Budget.num_inference_steps`: task scores (identity: `stable`) and `frame_change`, the mean absolute
  difference of consecutive frames of the generated videos (pixel values in [0, 255], mean over frames,
  pixels and videos): a temporal-consistency measure (in every result's scores, reported for this suite).

Losses per trained run: the training loss curve (metrics.jsonl), `final_loss` (the mean training loss of
the last `LOSS_TAIL` steps) and `val_loss`, the training objective (AR-DF tube masks of a fixed seed, so
the same masks for every variant, whatever its training mask mode) on held-out records: other clips
(seed 1) of the world's "train" handwriting split, prepared once into OUT/data-val with the training
records' text tokenizer. Per latent frame index (the paper's frame-wise loss imbalance, as
`benchmarks/frame_loss_imbalance.py` measures it during training): `val_frame_loss`, the same validation
loss split by latent frame, and `train_frame_loss`, the training log's per-frame loss (each run's own
masks) over the last `LOSS_TAIL` steps.

Outputs in OUT:
    ablate.json                    the suite, budget and model of this folder (a rerun must match it)
    data/, data-val/               the training and the validation records (trained suites)
    runs/VARIANT-seedS/            each training run (a pipeline folder with checkpoints)
    results/VARIANT-seedS.json     one finished (variant, seed), written atomically
    report.json, report.md         every variant, mean and spread over seeds
    loss_curves.png                training loss per variant, the mean over seeds with a min-max band (trained)
    frame_loss.png                 validation and training loss per latent frame, bars per variant (trained)
    metrics.png                    task scores per variant (bars: mean over seeds, whiskers: min-max)
    scores_vs_time.png             task score against seconds per video (steps)
    history_mask.png               task scores and frame-to-frame change against history_mask_ratio (history-mask)

Resumable: a (variant, seed) whose result file exists is skipped; a run killed mid-training resumes
from its newest checkpoint (`train(..., resume=True)`), one killed after training is only evaluated.
One ablation at a time per folder: a second `lumos ablate` on the same OUT is refused while the first runs.

Side by side (`jobs` > 1, trained suites): the unfinished (variant, seed) runs go to up to `jobs` processes
at once, one per run (`lumos.utils.process_map`: spawned, `threads` torch threads each; default: this
process's threads split between them), each writing its output to OUT/logs/VARIANT-seedS.log; at one thread
count the results do not depend on `jobs` (each run has its own seed, data order and folder; only the
seconds per video, timed on a shared CPU, do). Another thread count or CPU rounds floats differently, and
600 steps of training can carry that into a visibly different run (docs/ablations.md, rope: up to 0.07 nats
of validation loss). ^C, SIGTERM (to this process or to its whole group), a failed run or a killed worker
end every worker (a rerun resumes their runs from their checkpoints), and a worker never outlives a killed
parent. The sampled suites run one variant at a time: they time their videos.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumos.utils import (LumosError, atomic_write, atomic_write_json, check_output, process_map,
                         sigterm_interrupts)
from lumos.world.evaluate import RATES, pct

# The rope suite's variants: ModelConfig overrides. "mmrope-noscale": MM-RoPE's frequency layout with the
# (t, h, w) positions unscaled (rope_scale 1, 1, 1): the paper's "distribution is primary, scaling complementary".
ROPE = {"1d": {"rope_type": "1d"}, "mrope": {"rope_type": "mrope"}, "3d": {"rope_type": "3d"},
        "mmrope-noscale": {"rope_type": "mmrope", "rope_scale": [1, 1, 1]}, "mmrope": {"rope_type": "mmrope"}}
ROPE_VARIANTS = tuple(ROPE)
MASK_VARIANTS = ("tube", "random", "per_frame")     # lumos.train.masking.MODES
# trained suites: suite -> {variant: its settings (ModelConfig overrides or BatchOptions fields)};
# sampled suites: suite -> (the sampling keyword, the Budget field of its values, variant name prefix)
TRAINED = {"rope": ROPE, "train-mask": {m: {"mask_mode": m} for m in MASK_VARIANTS}}
SAMPLED = {"steps": ("num_inference_steps", "steps", "steps"),
           "history-mask": ("history_mask_ratio", "history_mask_ratios", "history")}
SUITES = (*TRAINED, *SAMPLED)
VAL_FRAMES = 5              # latent frames per validation record (BatchOptions.max_frames of the runs)
LOSS_TAIL = 5               # final_loss: the mean training loss of the last LOSS_TAIL steps
STAMP = "ablate.json"


@dataclass(frozen=True)
class Budget:
    """How much each variant gets. Training keys go to `TrainConfig`, eval keys to `lumos.world.evaluate`."""
    model: str                  # model preset (lumos.config.CONFIGS) of the trained variants
    num_records: int            # Moving Digits records prepared once (1 in 5 a still image)
    val_records: int            # held-out records of the validation loss (a multiple of 8, or fewer than 8)
    max_steps: int              # optimizer steps per run
    batch_size: int             # samples per step
    warmup_steps: int           # linear LR warmup
    lr: float                   # peak learning rate (cosine to lr / 10)
    num_prompts: int            # validation-caption prompts per evaluation
    heldout: bool               # also every held-out combination (30 prompts)
    num_inference_steps: int    # parallel decoding steps per latent frame when evaluating a trained variant
    steps: tuple                # the "steps" suite's num_inference_steps values
    eval_batch: int = 8         # prompts per pipeline call
    history_mask_ratios: tuple = (0.0, 0.3, 0.5, 0.7, 0.9)   # the "history-mask" suite's values


BUDGETS = {
    # The test's budget: a few steps of the tiny preset, 2 prompts at 2 decoding steps; under 2 minutes
    # (history-mask: only the two ends of the ratios, ~30 s).
    "tiny": Budget(model="tiny", num_records=16, val_records=8, max_steps=3, batch_size=2, warmup_steps=1, lr=1e-3,
                   num_prompts=2, heldout=False, num_inference_steps=2, steps=(1, 2), history_mask_ratios=(0.0, 0.9)),
    # A smoke check for 4 variants x 1 seed on 2 CPU cores (the "small" preset of the built-in model, 150
    # steps of 8, far from a converged model). Not yet timed whole: at the README's ~15 sequences/s a
    # variant trains in ~1.5 min (~10 min for the suite); on one core shared with other work a step
    # took 3 s (~8 min a variant).
    "quick": Budget(model="small", num_records=512, val_records=64, max_steps=150, batch_size=8, warmup_steps=20, lr=2e-3,
                    num_prompts=8, heldout=True, num_inference_steps=8, steps=(4, 8, 16, 32)),
    # What docs/ablations.md reports. Sampled suites: the built-in model, 16 validation prompts and the 30
    # held-out combinations, 16 steps (its default until this suite's steps chose 6), steps 4-64. Trained
    # suites: 600 steps of 16 from scratch per variant (at ~3.2 s a step on 2 cores, ~35 min a variant with
    # its evaluation: the rope suite with 2 seeds is ~6 hours; a GPU does it in minutes).
    "full": Budget(model="small", num_records=2000, val_records=128, max_steps=600, batch_size=16, warmup_steps=50,
                   lr=2e-3, num_prompts=16, heldout=True, num_inference_steps=16, steps=(4, 5, 6, 8, 16, 32, 64)),
}


def variants(suite: str, budget: Budget) -> list[tuple[str, dict]]:
    """(name, settings) of each variant of `suite`: training-config changes (`TRAINED`) or sampling
    settings (`SAMPLED`)."""
    if suite in TRAINED:
        return list(TRAINED[suite].items())
    if suite in SAMPLED:
        key, field, prefix = SAMPLED[suite]
        return [(f"{prefix}-{v:g}", {key: v}) for v in getattr(budget, field)]
    raise LumosError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


def check_args(suite: str, budget: str, seeds: int, out, model: str = "moving-digits", jobs: int = 1) -> Path:
    """The checks that need no work: refused before anything is written. Returns the out folder.
    A folder that holds another ablation (suite, budget, or a sampled suite's model) is refused."""
    if suite not in SUITES:
        raise LumosError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if budget not in BUDGETS:
        raise LumosError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise LumosError(f"--seeds must be >= 1, got {seeds}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise LumosError(f"--jobs must be >= 1, got {jobs}")
    if jobs > 1 and suite in SAMPLED:
        raise LumosError(f"--jobs {jobs}: the {suite} suite times its videos, so it runs one variant at a time; "
                         "drop --jobs (it is for the trained suites: " + ", ".join(TRAINED) + ")")
    out = check_output(out, "--out", folder=True)
    stamp_path = out / STAMP
    if stamp_path.is_file():
        try:
            found = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            found = None
        want = _stamp(suite, budget, model)
        if not isinstance(found, dict) or {k: found.get(k) for k in ("suite", "budget", "model")} != \
                {k: want[k] for k in ("suite", "budget", "model")}:
            what = ({k: found.get(k) for k in ("suite", "budget", "model")} if isinstance(found, dict)
                    else "an unreadable stamp")
            raise LumosError(f"--out {out} holds another ablation ({what}); use a new --out")
    return out


def _stamp(suite: str, budget: str, model: str) -> dict:
    return {"suite": suite, "budget": budget, "budget_settings": dataclasses.asdict(BUDGETS[budget]),
            "model": model if suite in SAMPLED else BUDGETS[budget].model}


# ------------------------------------------------------------------------------------------ one run
def _items(budget: Budget):
    from lumos.world.evaluate import build_items
    return build_items(budget.num_prompts, 0, ("val", "heldout") if budget.heldout else ("val",))


def _scores(report: dict) -> dict:
    """The rates (%) over every video of an evaluation report, all sets pooled, and its timing."""
    rows = report["videos"]
    out = {k: pct([r[k] for r in rows]) for k in RATES}
    out["videos"] = len(rows)
    out["s_per_video"] = report["timing"]["median_s_per_video"]
    out["per_set"] = report["aggregates"]
    return out


def frame_change(video) -> float:
    """The mean absolute difference of consecutive frames of a uint8 video [T, H, W, C], in [0, 255]
    (0 for a single frame): the temporal-consistency measure of the history-mask suite."""
    v = np.asarray(video, dtype=np.int16)
    return float(np.abs(np.diff(v, axis=0)).mean()) if len(v) > 1 else 0.0


class _Recorder:
    """A pipeline that also keeps `frame_change` of every video it generates (anything else: the pipeline's)."""

    def __init__(self, pipe):
        self.pipe, self.changes = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        out = self.pipe(*args, **kwargs)
        self.changes += [frame_change(v) for v in out.frames]
        return out


def _evaluate(pipe, budget: Budget, seed: int, **settings) -> dict:
    """The scores of `pipe` on the budget's prompts, and `frame_change`: its mean over the videos."""
    from lumos.world.evaluate import evaluate
    rec = _Recorder(pipe)
    report = evaluate(rec, _items(budget), seed, batch_size=budget.eval_batch, next_token_prompts=0,
                      ceiling_clips=0, progress=False, **settings)
    return {**_scores(report), "frame_change": round(float(np.mean(rec.changes)), 4)}


def _read_metrics(run: Path) -> list[dict]:
    """The metrics.jsonl records of a run, one per step in step order."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    by_step = {}
    for line in lines:
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec                  # a resumed run may repeat steps: the last one wins
    return [by_step[s] for s in sorted(by_step)]


def frame_means(rows: list[list]) -> list[float | None]:
    """The mean over `rows` (lists of per-frame losses, None for a frame not reached) of each frame index;
    None where no row has that frame (4 decimals). Also `benchmarks/frame_loss_imbalance.py`'s windows."""
    out = []
    for f in range(max((len(x) for x in rows), default=0)):
        xs = [x[f] for x in rows if f < len(x) and x[f] is not None]
        out.append(round(float(np.mean(xs)), 4) if xs else None)
    return out


def _tail_frame_loss(records: list[dict]) -> list[float | None]:
    """The training loss per latent frame (metrics' `frame_loss`, each step's own masks), the mean over
    the last LOSS_TAIL steps that reached that frame (None: none did)."""
    return frame_means([r["frame_loss"] for r in records[-LOSS_TAIL:] if r.get("frame_loss")])


def prepare_val(out: Path, data: Path, num_records: int) -> Path:
    """Held-out records for the validation loss: other clips (seed 1) of the world's "train" handwriting
    split (`prepare` writes no other split), with the text tokenizer of `data` (so the token ids match
    the training records)."""
    from lumos.world.builtin import prepare
    return prepare(out / "data-val", num_records=num_records, seed=1, progress=False,
                   text_tokenizer=data / "text_tokenizer.json")


def validation_loss(model, val: Path, micro: int = 8) -> tuple[float, list[float | None]]:
    """The masked visual loss (nats/code) of `model` on every record of `val` once, with the training
    objective's AR-DF masks drawn from a fixed seed (the same masks for every variant), and the same
    loss per latent frame index (VAL_FRAMES entries; None for a frame no record reaches)."""
    import torch
    from lumos.train.batches import Batcher, BatchOptions, open_source
    from lumos.train.loss import masked_visual_loss

    source, vocab = open_source([str(val / "train")])
    n = len(source)
    micro = min(micro, n)
    batcher = Batcher(source, vocab, BatchOptions(max_frames=VAL_FRAMES, cfg_drop_prob=0.0), seed=0)
    nll, count = 0.0, 0
    frame_nll, frame_count = np.zeros(VAL_FRAMES), np.zeros(VAL_FRAMES)
    with torch.no_grad():
        for start in range(0, n - n % micro, micro):
            b = batcher.micro(0, n, list(range(start, start + micro)))
            hidden = model(b.inputs, mask=model.build_mask(b.inputs, b.valid), return_hidden=True)
            out = masked_visual_loss(hidden, model.lm_head.weight, b.targets, b.frame, vocab, normaliser=1.0,
                                     num_frames=VAL_FRAMES)
            nll, count = nll + float(out.nll_sum), count + int(out.count)
            frame_nll += out.frame_nll.double().numpy()
            frame_count += out.frame_count.double().numpy()
    per_frame = [float(s / c) if c > 0 else None for s, c in zip(frame_nll, frame_count)]
    return nll / max(count, 1), per_frame


def _finished(run: Path, max_steps: int) -> bool:
    try:
        return json.loads((run / "latest.json").read_text()).get("step") == max_steps
    except (OSError, ValueError):
        return False


def train_variant(out: Path, data: Path, val: Path, budget: Budget, settings: dict, seed: int, run: Path) -> dict:
    """Train one variant of a trained suite (resuming a killed run) and evaluate it; returns its result.
    settings: `BatchOptions` fields (e.g. mask_mode) replace the batch options, any other key is a
    model override (e.g. rope_type)."""
    from lumos.pipeline import LumosPipeline
    from lumos.train.batches import BatchOptions
    from lumos.train.config import TrainConfig
    from lumos.train.loop import train

    batch_keys = {f.name for f in dataclasses.fields(BatchOptions)}
    batch = BatchOptions(max_frames=VAL_FRAMES, mask_mode="tube", min_mask_rate=0.7, cfg_drop_prob=0.1)
    batch = dataclasses.replace(batch, **{k: v for k, v in settings.items() if k in batch_keys})
    overrides = {k: v for k, v in settings.items() if k not in batch_keys}
    cfg = TrainConfig(model=budget.model, model_overrides=overrides, data=[str(data / "train")], batch=batch,
                      max_steps=budget.max_steps, batch_size=budget.batch_size, warmup_steps=budget.warmup_steps,
                      lr=budget.lr, min_lr=budget.lr / 10, grad_clip=1.0, checkpoint_every=max(budget.max_steps // 3, 1),
                      keep_checkpoints=1, tensorboard=False, out_dir=str(run), seed=seed, device="cpu")
    if not _finished(run, budget.max_steps):         # continue a killed run; start over if nothing loads
        train(cfg, resume=(run / "checkpoints").is_dir(), restart=run.exists())
    records = _read_metrics(run)
    # the steps' own seconds over the whole run, resumes included (the wall time of this call would be
    # 0 for a run that had finished training before a kill)
    train_s = sum(r["tokens"] / r["tokens_per_s"] for r in records if r.get("tokens_per_s"))
    losses = [r["loss"] for r in records]
    pipe = LumosPipeline.from_pretrained(run, device="cpu")
    val_loss, val_frame_loss = validation_loss(pipe.model, val)
    scores = _evaluate(pipe, budget, seed, num_inference_steps=budget.num_inference_steps)
    return {"losses": losses, "final_loss": float(np.mean(losses[-LOSS_TAIL:])), "val_loss": val_loss,
            "val_frame_loss": val_frame_loss, "train_frame_loss": _tail_frame_loss(records),
            "train_s": round(train_s, 2), "scores": scores}


# ------------------------------------------------------------------------------------------ side by side
def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _train_job(job: tuple) -> tuple:
    """One (variant, seed) in a worker process: `train_variant`, its output (progress bars, warnings,
    a traceback) into the run's log. Returns (item, result, seconds)."""
    item, log_path, args = job
    _, name, _, seed = item
    t0 = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            res = train_variant(*args)
        except LumosError as e:
            raise LumosError(f"{name} seed {seed}: {e}") from None
        except BaseException:
            traceback.print_exc()
            raise
    return item, res, time.perf_counter() - t0


def _run_side_by_side(jobs: int, threads: int | None, pending: list, train_args, save) -> None:
    """Train and score `pending` [(k, name, settings, seed)] in up to `jobs` processes at once, one per
    run (`lumos.utils.process_map`; `train_args`: `train_variant`'s out, data, val, budget); `save(item,
    result, seconds)` each as it finishes. ^C, SIGTERM (to this process or its whole group), a failed
    or killed run end the others (a rerun resumes them from their checkpoints); a killed parent takes
    its workers with it (`process_map`)."""
    import torch
    out = train_args[0]
    workers = min(jobs, len(pending))
    threads = threads or max(1, torch.get_num_threads() // workers)
    tasks = [(item, out / "logs" / f"{item[1]}-seed{item[3]}.log",
              (*train_args, item[2], item[3], out / "runs" / f"{item[1]}-seed{item[3]}")) for item in pending]

    def describe(task):
        item, log_path, _ = task
        return f"{item[1]} seed {item[3]} (its log: {log_path}; a rerun resumes from its last checkpoint)"

    with sigterm_interrupts():
        for _, (item, res, seconds) in process_map(_train_job, tasks, workers, initializer=_worker_init,
                                                   initargs=(threads,), describe=describe):
            save(item, res, seconds)


# ------------------------------------------------------------------------------------------ a suite
def result_path(out: Path, name: str, seed: int) -> Path:
    return out / "results" / f"{name}-seed{seed}.json"


def _lock(out: Path) -> int:
    """Hold `out` for this process (released when it exits, however); a second ablation on it is refused."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LumosError(f"another `lumos ablate` is running on {out}; wait for it to finish or use another --out")
    except OSError:                 # a file system without flock on folders (NFS): run unguarded
        pass
    return fd


def run_suite(suite: str, budget_name: str = "tiny", seeds: int = 1, out="ablate", model: str = "moving-digits",
              log=print, jobs: int = 1, threads: int | None = None) -> dict:
    """Run (or continue) every (variant, seed) of `suite` not finished in `out`, then write the report
    and plots. `model`: the trained model of a sampled suite (steps, history-mask). `jobs` > 1: a
    trained suite's runs go to that many worker processes of `threads` torch threads each (module
    docstring). Returns the report dict."""
    out = check_args(suite, budget_name, seeds, out, model, jobs)
    budget = BUDGETS[budget_name]
    todo = variants(suite, budget)
    stamp = _stamp(suite, budget_name, model)
    if suite in SAMPLED:
        from lumos.pipeline import resolve_model
        model_dir = resolve_model(model)               # a missing model fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        atomic_write_json(out / STAMP, stamp)
        data = val = pipe = None
        if suite in TRAINED:
            from lumos.world.builtin import prepare
            data = prepare(out / "data", num_records=budget.num_records, seed=0, progress=False)
            val = prepare_val(out, data, budget.val_records)
        n = len(todo) * seeds
        items = [(k + 1, name, settings, seed) for k, (seed, (name, settings))
                 in enumerate((s, v) for s in range(seeds) for v in todo)]

        def save(item, res, seconds):
            k, name, settings, seed = item
            res = {"variant": name, "seed": seed, "settings": settings, **res}
            atomic_write_json(result_path(out, name, seed), res)
            s = res["scores"]
            loss = f"val loss {res['val_loss']:.3f}, " if "val_loss" in res else ""
            change = f", frame change {s['frame_change']}" if suite == "history-mask" else ""
            log(f"ablate {suite}: [{k}/{n}] {name} seed {seed}: {loss}all correct {s['all_correct']}%{change}, "
                f"{s['s_per_video']} s/video ({seconds:.1f} s)")

        pending = []
        for item in items:
            k, name, settings, seed = item
            if result_path(out, name, seed).is_file():
                log(f"ablate {suite}: [{k}/{n}] {name} seed {seed}: skipped (done: {result_path(out, name, seed)})")
            else:
                pending.append(item)
        if suite in TRAINED and jobs > 1 and len(pending) > 1:
            log(f"ablate {suite}: {len(pending)} runs, {min(jobs, len(pending))} at a time; "
                f"their output: {out / 'logs'}")
            _run_side_by_side(jobs, threads, pending, (out, data, val, budget), save)
            pending = []
        for item in pending:
            k, name, settings, seed = item
            t0 = time.perf_counter()
            if suite in TRAINED:
                res = train_variant(out, data, val, budget, settings, seed, out / "runs" / f"{name}-seed{seed}")
            else:                                      # SAMPLED: the same model, other sampling settings
                if pipe is None:
                    from lumos.pipeline import LumosPipeline
                    from lumos.world.scoring import digit_classifier
                    pipe = LumosPipeline.from_pretrained(model_dir, device="cpu")
                    digit_classifier()                 # fitted now, not inside the first timed batch
                # the budget's decoding steps unless the variant sets its own (steps)
                res = {"scores": _evaluate(pipe, budget, seed, **{"num_inference_steps": budget.num_inference_steps,
                                                                  **settings})}
            save(item, res, time.perf_counter() - t0)
        report = build_report(out, suite, budget_name, seeds, stamp["model"], todo)
        write_report(out, report)
    finally:
        os.close(lock)
    return report


def _spread(xs: list[float]) -> dict:
    return {"mean": round(float(np.mean(xs)), 4), "min": round(float(min(xs)), 4), "max": round(float(max(xs)), 4),
            "std": round(statistics.pstdev(xs), 4)}


def build_report(out: Path, suite: str, budget: str, seeds: int, model: str, todo) -> dict:
    rows = []
    for name, settings in todo:
        results = [json.loads(result_path(out, name, s).read_text()) for s in range(seeds)]
        row = {"variant": name, "settings": settings, "seeds": list(range(seeds)),
               "scores": {k: _spread([r["scores"][k] for r in results])
                          for k in (*RATES, "s_per_video", "frame_change") if all(k in r["scores"] for r in results)},
               "videos": results[0]["scores"]["videos"]}
        if "losses" in results[0]:
            row["final_loss"] = _spread([r["final_loss"] for r in results])
            row["val_loss"] = _spread([r["val_loss"] for r in results])
            row["losses"] = [r["losses"] for r in results]
            for key in ("val_frame_loss", "train_frame_loss"):      # absent from results of an older version
                if all(key in r for r in results):
                    row[key] = frame_means([r[key] for r in results])
        rows.append(row)
    b = BUDGETS[budget]
    if suite in TRAINED:
        note = (f"val loss: the training objective (AR-DF tube masks of a fixed seed, the same for every variant) on "
                f"{b.val_records} held-out records (other clips of the train handwriting split); train loss: the mean "
                f"of the last {LOSS_TAIL} steps")
    elif suite == "steps":
        note = f"no training: the model {model} decoded with each num_inference_steps"
    else:
        note = (f"no training: the model {model} decoded with each history_mask_ratio at {b.num_inference_steps} "
                "steps; frame change: the mean absolute difference of consecutive frames (pixel values 0-255)")
    return {"suite": suite, "budget": budget, "budget_settings": dataclasses.asdict(b), "seeds": seeds,
            "model": model, "note": note, "variants": rows}


def format_markdown(report: dict) -> str:
    rope = report["suite"] in TRAINED                  # the loss columns
    change = report["suite"] == "history-mask"         # the frame change column
    keys = (*RATES, "s_per_video", *(("frame_change",) if change else ()))
    lines = [f"# Ablation: {report['suite']} ({report['budget']} budget, {report['seeds']} seed(s))", "",
             f"Model: {report['model']}. {report['note']}. Scores: % of {report['variants'][0]['videos']} videos, "
             "all prompt sets pooled; mean over seeds (min-max).", "",
             "| variant |" + (" val loss | train loss |" if rope else "") + " digit % | colour % | direction % | stable % | "
             "all correct % | s/video |" + (" frame change |" if change else ""),
             "|---|" + ("---:|---:|" if rope else "") + "---:|---:|---:|---:|---:|---:|" + ("---:|" if change else "")]

    def cell(s):
        return f"{s['mean']:.4g}" if s["min"] == s["max"] else f"{s['mean']:.4g} ({s['min']:.4g}-{s['max']:.4g})"

    for row in report["variants"]:
        sc = row["scores"]
        lines.append(f"| {row['variant']} |" + (f" {cell(row['val_loss'])} | {cell(row['final_loss'])} |" if rope else "")
                     + "".join(f" {cell(sc[k])} |" for k in keys))
    frames = [row for row in report["variants"] if row.get("val_frame_loss")]
    if rope and frames:
        n = max(len(row["val_frame_loss"]) for row in frames)

        def loss(x):
            return "-" if x is None else f"{x:.4g}"

        lines += ["", "Loss per latent frame (nats/code, mean over seeds): validation (the shared tube masks) / "
                  f"training (each variant's own masks, last {LOSS_TAIL} steps).", "",
                  "| variant |" + "".join(f" frame {f} |" for f in range(n)), "|---|" + "---:|" * n]
        for row in frames:
            tr = row.get("train_frame_loss") or []
            lines.append(f"| {row['variant']} |" + "".join(
                f" {loss(row['val_frame_loss'][f])} / {loss(tr[f] if f < len(tr) else None)} |" for f in range(n)))
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plot_names(report["suite"])), ""]
    return "\n".join(lines)


def plot_names(suite: str) -> list[str]:
    if suite in TRAINED:
        return ["loss_curves.png", "frame_loss.png", "metrics.png"]
    return ["metrics.png", "scores_vs_time.png" if suite == "steps" else "history_mask.png"]


def write_report(out: Path, report: dict) -> None:
    atomic_write_json(out / "report.json", report)
    with atomic_write(out / "report.md", "w") as f:
        f.write(format_markdown(report))
    plot(out, report)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot(out: Path, report: dict) -> None:
    """The PNG plots of a report (matplotlib, Agg: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    title = f"{report['suite']} ({report['budget']}, {report['seeds']} seed(s))"
    if report["suite"] in TRAINED:
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in rows:
            n = min(len(c) for c in row["losses"])
            curves = np.array([c[:n] for c in row["losses"]])            # (seeds, steps)
            x = np.arange(1, n + 1)
            ax.plot(x, curves.mean(0), label=row["variant"])
            ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.2)
        ax.set(xlabel="step", ylabel="training loss (nats/code)", title=f"loss: {title}")
        ax.legend()
        _save(fig, out / "loss_curves.png")
        _plot_frame_loss(out, rows, title)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(rows)
    x = np.arange(len(RATES))
    for i, row in enumerate(rows):
        m = np.array([row["scores"][k]["mean"] for k in RATES])
        err = np.array([[m[j] - row["scores"][k]["min"], row["scores"][k]["max"] - m[j]] for j, k in enumerate(RATES)]).T
        ax.bar(x + i * width - 0.4 + width / 2, m, width, yerr=err, label=row["variant"], capsize=2)
    ax.set_xticks(x, [k.replace("_correct", "").replace("_", " ") for k in RATES])
    ax.set(ylabel="% of videos", ylim=(0, 105), title=f"scores: {title}")
    ax.legend(fontsize="small")
    _save(fig, out / "metrics.png")
    if report["suite"] == "steps":
        fig, ax = plt.subplots(figsize=(6, 4))
        secs = [row["scores"]["s_per_video"]["mean"] for row in rows]
        for key in ("all_correct", "digit_correct", "stable"):
            ax.plot(secs, [row["scores"][key]["mean"] for row in rows], marker="o", label=key.replace("_", " "))
        for row, s in zip(rows, secs):
            ax.annotate(str(row["settings"]["num_inference_steps"]), (s, row["scores"]["all_correct"]["mean"]))
        ax.set(xlabel="seconds per video", ylabel="% of videos", ylim=(0, 105), title=f"steps: {report['model']}")
        ax.legend()
        _save(fig, out / "scores_vs_time.png")
    if report["suite"] == "history-mask":
        fig, ax = plt.subplots(figsize=(6, 4))
        ratios = [row["settings"]["history_mask_ratio"] for row in rows]
        for key in ("all_correct", "digit_correct", "stable"):
            ax.plot(ratios, [row["scores"][key]["mean"] for row in rows], marker="o", label=key.replace("_", " "))
        ax.set(xlabel="history_mask_ratio", ylabel="% of videos", ylim=(0, 105),
               title=f"history mask: {report['model']}")
        ax.legend(loc="upper left", fontsize="small")
        ax2 = ax.twinx()
        ax2.plot(ratios, [row["scores"]["frame_change"]["mean"] for row in rows], marker="s", color="black",
                 linestyle="--", label="frame change")
        ax2.set_ylabel("mean |frame t+1 - frame t| (0-255)")
        ax2.legend(loc="upper right", fontsize="small")
        _save(fig, out / "history_mask.png")


def _plot_frame_loss(out: Path, rows: list[dict], title: str) -> None:
    """frame_loss.png: bars of the loss per latent frame per variant, validation (shared masks) and training
    (each variant's own masks, the last LOSS_TAIL steps); a missing frame is left out."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(rows)
    ys_all = [y for row in rows for key in ("val_frame_loss", "train_frame_loss") for y in (row.get(key) or [])
              if y is not None]
    for ax, key, what in zip(axes, ("val_frame_loss", "train_frame_loss"),
                             ("validation (the shared tube masks)", f"training (own masks, last {LOSS_TAIL} steps)")):
        n = max((len(row.get(key) or []) for row in rows), default=0)
        x = np.arange(n)
        for i, row in enumerate(rows):
            ys = row.get(key) or []
            ys = [np.nan if (f >= len(ys) or ys[f] is None) else ys[f] for f in range(n)]
            ax.bar(x + i * width - 0.4 + width / 2, ys, width, label=row["variant"])
        ax.set_xticks(x, [str(f) for f in x])
        ax.set(xlabel="latent frame", title=what)
    axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if ys_all:                      # the frame-wise differences are small next to the loss: zoom in on them
        lo, hi = min(ys_all), max(ys_all)
        pad = max(0.15 * (hi - lo), 1e-3)
        axes[0].set_ylim(lo - pad, hi + pad)
    axes[0].set_ylabel("loss per latent frame (nats/code)")
    fig.suptitle(f"loss per latent frame: {title}")
    _save(fig, out / "frame_loss.png")
