"""How much does a Moving Digits model read each word of its caption?

For validation clips (handwriting never seen in training), the masked-token loss of the model (AR-DF
tube masking with the training ratios, the same mask for every variant of a clip) is measured with
the true caption and with one word swapped: the digit, the colour or the direction, and with no text
at all (the CFG-unconditional sequence). A word the model relies on raises the loss when it is wrong;
a word it ignores leaves it unchanged. Printed in nats per masked code, overall and per latent frame.

    python benchmarks/caption_sensitivity.py [--model moving-digits] [--clips 64] [--threads 2]
    python benchmarks/caption_sensitivity.py --model runs/moving-digits-stage2/checkpoints/step-000500/model

A training checkpoint's model folder has no tokenizers or pipeline.json: the built-in model's are
used for it (--text-tokenizer and --template override them, e.g. for a run on newly prepared data).

Not a test: it reads a trained model and takes ~15 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from lumos.world import digits as D
from lumos.train.loss import masked_visual_loss
from lumos.train.masking import corrupt, drop_text
from lumos.masks import frame_causal_mask, frame_ids
from lumos.pipeline import (DEFAULTS_FILE, TEXT_TOKENIZER_FILE, VIDEO_TOKENIZER_DIR, LumosPipeline, PipelineDefaults,
                            resolve_model)
from lumos.vocab import duration_seconds, video_prompt

VARIANTS = ("true caption", "wrong digit", "wrong colour", "wrong direction", "no text")


def swap(caption: str, variant: str, rng: np.random.Generator) -> str | None:
    (d, c, m), = D.parse_caption(caption)
    if variant == "wrong digit":
        d = int(rng.choice([x for x in D.DIGITS if x != d]))
    elif variant == "wrong colour":
        c = str(rng.choice([x for x in D.COLOURS if x != c]))
    elif variant == "wrong direction":
        m = str(rng.choice([x for x in D.DIRECTIONS if x != m]))
    return f"a {c} {d} moving {m}"


@torch.inference_mode()
def frame_nll(model, tokens: np.ndarray, seed: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and target count per latent frame of one sequence, under a tube mask drawn from `seed`."""
    vocab = model.config.vocab
    x = torch.from_numpy(np.asarray(tokens, np.int64))[None]
    inputs, targets, frame, _ = corrupt(x, vocab, torch.Generator().manual_seed(seed))
    mask = frame_causal_mask(frame_ids(inputs, vocab))
    hidden = model(inputs, mask=mask, return_hidden=True)
    out = masked_visual_loss(hidden, model.lm_head.weight, targets, frame, vocab, num_frames=frames)
    return out.frame_nll.numpy(), out.frame_count.numpy()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="moving-digits")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-tokenizer", help="text tokenizer JSON (default: the model's, else the built-in one)")
    p.add_argument("--template", help="prompt template (default: the pipeline's, lumos.vocab.video_prompt)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    path, builtin = resolve_model(a.model), resolve_model("moving-digits")
    own = lambda name: path / name if (path / name).exists() else builtin / name        # noqa: E731
    pipe = LumosPipeline.from_pretrained(path, device="cpu", text_tokenizer=a.text_tokenizer or own(TEXT_TOKENIZER_FILE),
                                         video_tokenizer=own(VIDEO_TOKENIZER_DIR))
    pipe.defaults = PipelineDefaults.from_file(own(DEFAULTS_FILE))
    if a.template is not None:
        pipe.defaults = dataclasses.replace(pipe.defaults, prompt_template=a.template)
    model, vocab, w = pipe.model, pipe.model.config.vocab, D.DigitsConfig()
    rng = np.random.default_rng([a.seed, 7])
    clips = [D.sample_clip("val", rng, w) for _ in range(a.clips)]
    codes = pipe.video_tokenizer.encode_batch(np.stack([c[0] for c in clips])).numpy()   # (N, F, h, w)
    F = codes.shape[1]
    sums = {v: np.zeros(F) for v in VARIANTS}
    counts = np.zeros(F)
    for i, ((video, caption, meta), c) in enumerate(zip(clips, codes)):
        for v in VARIANTS:
            cap = swap(caption, v, np.random.default_rng([a.seed, i])) if v != "true caption" else caption
            text = video_prompt(cap, w.width, w.height, w.num_frames, meta["fps"], pipe.defaults.prompt_template)
            ids = pipe.text_tokenizer.encode(text)
            seq = vocab.build_t2v(ids, c, duration=duration_seconds(w.num_frames, meta["fps"]), fps=meta["fps"])
            if v == "no text":
                seq = drop_text(seq, vocab)
            nll, n = frame_nll(model, seq, seed=a.seed * 100_003 + i, frames=F)
            sums[v] += nll
            if v == "true caption":
                counts += n
    print(f"caption sensitivity: {a.model}, {a.clips} validation clips, tube masks as in training "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"prompt template: {pipe.defaults.prompt_template!r}")
    print(f"{'caption':<17}{'nats/code':>10}{'vs true':>9}  per latent frame")
    base = sums["true caption"].sum() / counts.sum()
    for v in VARIANTS:
        mean = sums[v].sum() / counts.sum()
        per = "  ".join(f"{s / n:.3f}" for s, n in zip(sums[v], counts))
        print(f"{v:<17}{mean:>10.3f}{mean - base:>+9.3f}  {per}")


if __name__ == "__main__":
    main()
