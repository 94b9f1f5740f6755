"""Core timings and sizes on this machine (prints numbers; asserts nothing).

    python benchmarks/core.py

- position ids: vectorised `lumos.positions.position_ids` vs a token-by-token Python loop over a list (the
  reference loops over a GPU tensor with host syncs, far slower than this list loop; on the CPU the
  vectorised version is allocation-bound and not faster, its point is the GPU: no syncs), on a 384p
  7-frame sequence (~28.9k tokens) and a 22-frame one (~90k tokens);
- the frame-causal mask for those lengths: bytes of the FlexAttention BlockMask vs a dense bool mask;
- a forward of the tiny model, SDPA vs compiled FlexAttention (CPU).
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seqs import ref_positions  # noqa: E402

from lumos.config import ModelConfig  # noqa: E402
from lumos.masks import frame_causal_block_mask, frame_ids  # noqa: E402
from lumos.model import LumosModel  # noqa: E402
from lumos.positions import position_ids  # noqa: E402
from lumos.vocab import Vocab  # noqa: E402


def timed(fn, n=3):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main():
    v = Vocab.chameleon()
    print(f"{'sequence':<22}{'tokens':>8}{'py-loop (s)':>12}{'vectorised (s)':>16}{'BlockMask':>12}{'dense bool':>12}")
    for frames in (7, 22):
        seq = v.build_t2v(np.arange(1, 280), np.zeros((frames, 48, 84), np.int64), duration=2, fps=12)
        t = torch.as_tensor(seq)[None]
        loop = timed(lambda: ref_positions(seq, v), n=1)
        vec = timed(lambda: position_ids(t, v))
        bm = frame_causal_block_mask(frame_ids(t, v))
        bm_bytes = sum(x.numel() * x.element_size() for x in bm.as_tuple() if isinstance(x, torch.Tensor))
        L = len(seq)
        print(f"{f'384p, {frames} frames':<22}{L:>8}{loop:>12.3f}{vec:>16.4f}{bm_bytes / 2**20:>10.2f}MB"
              f"{L * L / 2**30:>10.2f}GB")

    cfg = ModelConfig.from_name("tiny")
    model = LumosModel.from_config(cfg, seed=0).eval()
    cv = cfg.vocab
    seq = torch.as_tensor(cv.build_t2v(np.arange(1, 30), np.zeros((5, 16, 16), np.int64), duration=2, fps=8))[None]
    with torch.no_grad():
        for backend in ("sdpa", "flex"):
            mask = model.build_mask(seq, backend=backend)
            t0 = time.perf_counter()
            model(seq, mask=mask)
            first = time.perf_counter() - t0
            print(f"tiny model, {seq.shape[1]} tokens, {backend:>4}: first call {first:.2f} s, "
                  f"then {timed(lambda: model(seq, mask=mask)) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
