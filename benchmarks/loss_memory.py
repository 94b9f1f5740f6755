"""Peak memory of the loss: chunked visual-vocabulary CE (`lumos.train.loss.masked_visual_loss`) against the
reference's full-vocabulary CE (`full_vocab_loss`: fp32 logits for every position over the whole
vocabulary, then the visual columns of the masked rows), for growing full vocabulary sizes at a
fixed codebook.

    .venv/bin/python benchmarks/loss_memory.py                  # CPU: profiler allocation trace
    .venv/bin/python benchmarks/loss_memory.py --device cuda    # GPU: torch.cuda.max_memory_allocated

What is measured, for one forward + backward of the loss alone (the hidden states and the head
weight exist before, as in training):
- peak: the highest amount of memory allocated above the starting point during forward + backward
  (CPU: running sum of the profiler's allocation/free events; GPU: max_memory_allocated), with the
  head weight trainable. This includes the [V, D] fp32 gradient of the head weight, which any loss
  must produce (it becomes `lm_head.weight.grad`, V D 4 bytes: "grad(W)" below);
- peak, frozen W: the same with the head weight frozen (gradient to the hidden states only), which
  isolates the loss's own working memory;
- saved: bytes of the tensors autograd references for the backward (`saved_tensors_hooks`; this
  counts the head weight or its visual rows too, which exist anyway).
The chunked loss's working memory must not grow with the vocabulary size; the reference's grows
linearly with it (and with the number of positions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seqs import full_vocab_loss  # noqa: E402  (the reference's loss is test material)

from lumos.train.loss import masked_visual_loss  # noqa: E402
from lumos.vocab import Vocab  # noqa: E402


def cpu_peak(fn) -> int:
    """Peak bytes allocated above the start while `fn` runs, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def cuda_peak(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(backward=False)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--positions", type=int, default=2048, help="B x L positions in the batch")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--codebook", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    args = ap.parse_args()
    dev = torch.device(args.device)
    peak_fn = cuda_peak if dev.type == "cuda" else cpu_peak
    g = torch.Generator().manual_seed(0)
    N, D, K = args.positions, args.dim, args.codebook
    print(f"positions {N} (about 80% masked), dim {D}, codebook {K}, chunk {args.chunk}, device {dev}")
    print(f"{'vocab':>7} {'grad(W)':>9} | {'full-vocab CE: peak':>19} {'frozen W':>10} {'saved':>9} | "
          f"{'chunked: peak':>13} {'frozen W':>10} {'saved':>9} | loss diff")
    mib = 2 ** 20
    for V in args.vocab:
        # compact layout: text ids, 7 specials, 65 size tokens, then the K codes -> V ids in all
        vocab = Vocab.compact(text_vocab_size=V - K - 72, codebook_size=K)
        assert vocab.vocab_size == V
        hidden = torch.randn(1, N, D, generator=g).to(dev).requires_grad_()
        weight = (torch.randn(V, D, generator=g) / D ** 0.5).to(dev).requires_grad_()
        targets = torch.randint(0, K, (1, N), generator=g)
        targets = torch.where(torch.rand(1, N, generator=g) < 0.8, targets, torch.full_like(targets, -100)).to(dev)
        frame = torch.zeros(1, N, dtype=torch.long, device=dev)
        grad_w = V * D * 4
        results = {}
        for name in ("full", "chunked"):
            def run(backward=True, name=name):
                if name == "full":
                    loss = full_vocab_loss(hidden, weight, targets, vocab)
                else:
                    loss = masked_visual_loss(hidden, weight, targets, frame, vocab, chunk=args.chunk).loss
                if backward:
                    loss.backward()
                return loss.detach()

            run()  # warm up (allocator caches, lazy inits)
            hidden.grad = weight.grad = None
            peak = peak_fn(run)
            hidden.grad = weight.grad = None
            weight.requires_grad_(False)
            frozen = peak_fn(run)
            weight.requires_grad_(True)
            hidden.grad = None
            results[name] = (peak, frozen, saved_bytes(run), run(backward=False).item())
        (pf, ff, sf, lf), (pc, fc, sc, lc) = results["full"], results["chunked"]
        print(f"{V:>7} {grad_w / mib:>5.0f} MiB | {pf / mib:>15.1f} MiB {ff / mib:>6.1f} MiB {sf / mib:>5.1f} MiB | "
              f"{pc / mib:>9.1f} MiB {fc / mib:>6.1f} MiB {sc / mib:>5.1f} MiB | {abs(lf - lc):.1e}")


if __name__ == "__main__":
    main()
