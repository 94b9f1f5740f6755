"""The chunked visual-vocabulary loss against the plain full-vocabulary cross-entropy (the reference's
way: full logits, then the visual columns of the masked rows), forward and gradient; the z-loss and
per-frame sums against direct formulas; and what autograd keeps for the backward."""

import pytest
import torch
import torch.nn.functional as F

from lumos.train.loss import chunked_visual_ce, masked_visual_loss
from lumos.vocab import Vocab
from seqs import full_vocab_loss

# A vocabulary whose text part is much larger than the codebook, like the released one.
VOCAB = Vocab.compact(text_vocab_size=2000, codebook_size=96)


def problem(seed=0, B=3, L=40, D=16, dtype=torch.float32, frac=0.4):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, D, generator=g, dtype=dtype)
    weight = torch.randn(VOCAB.vocab_size, D, generator=g, dtype=dtype) / D ** 0.5 * 3
    targets = torch.randint(0, VOCAB.codebook_size, (B, L), generator=g)
    targets = torch.where(torch.rand(B, L, generator=g) < frac, targets, torch.full_like(targets, -100))
    frame = torch.randint(0, 4, (B, L), generator=g)
    return hidden.requires_grad_(), weight.requires_grad_(), targets, frame


@pytest.mark.parametrize("chunk", [1, 7, 1024])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_chunked_equals_full_vocab_cross_entropy(chunk, dtype, tol):
    hidden, weight, targets, frame = problem(dtype=dtype)
    out = masked_visual_loss(hidden, weight, targets, frame, VOCAB, chunk=chunk)
    ref = full_vocab_loss(hidden, weight, targets, VOCAB)
    gh, gw = torch.autograd.grad(out.loss, [hidden, weight])
    rh, rw = torch.autograd.grad(ref, [hidden, weight])
    print(f"chunk {chunk} {dtype}: loss diff {abs(out.loss.item() - ref.item()):.2e}, "
          f"grad_h {(gh - rh).abs().max():.2e}, grad_w {(gw - rw).abs().max():.2e}")
    assert abs(out.loss.item() - ref.item()) < tol
    assert torch.allclose(gh, rh, rtol=0, atol=tol) and torch.allclose(gw, rw, rtol=0, atol=tol)
    assert gw[:VOCAB.visual_offset].abs().max() == 0                   # text rows get no gradient
    assert out.count == int((targets >= 0).sum())


def test_z_loss_and_normaliser():
    hidden, weight, targets, frame = problem(seed=1, dtype=torch.float64)
    out = masked_visual_loss(hidden, weight, targets, frame, VOCAB, z_loss_weight=1e-2, normaliser=123.0)
    keep = targets >= 0
    logits = (hidden[keep] @ weight[VOCAB.visual_offset:].T)                  # (N, K)
    lse = torch.logsumexp(logits, -1)
    ref = (F.cross_entropy(logits, targets[keep], reduction="sum") + 1e-2 * (lse ** 2).sum()) / 123.0
    g = torch.autograd.grad(out.loss, [hidden, weight])
    r = torch.autograd.grad(ref, [hidden, weight])
    assert abs(out.loss.item() - ref.item()) < 1e-12
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(g, r))
    assert abs(out.z_sum.item() - (lse ** 2).sum().item()) < 1e-3


def test_per_frame_sums():
    hidden, weight, targets, frame = problem(seed=2)
    out = masked_visual_loss(hidden, weight, targets, frame, VOCAB, num_frames=6)
    logits = hidden @ weight[VOCAB.visual_offset:].T                          # (B, L, K)
    for f in range(6):
        sel = (targets >= 0) & (frame == f)
        nll = F.cross_entropy(logits[sel], targets[sel], reduction="sum") if sel.any() else torch.tensor(0.0)
        assert abs(out.frame_nll[f].item() - nll.item()) < 1e-4
        assert out.frame_count[f].item() == sel.sum().item()
    assert out.frame_count[4:].sum() == 0                                   # frames 4, 5 absent
    assert abs(out.frame_nll.sum().item() - out.nll_sum.item()) < 1e-3


def test_backward_keeps_no_logits():
    """Autograd saves only the gathered hidden rows, the visual weight view, the labels and the
    per-position log-sum-exp: nothing with a vocabulary-sized or codebook-sized axis per position."""
    hidden, weight, targets, frame = problem(seed=3, B=2, L=300, D=8, frac=0.9)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        masked_visual_loss(hidden, weight, targets, frame, VOCAB, chunk=32)
    N = int((targets >= 0).sum())
    logits_like = [s for s in saved if len(s) == 2 and s[0] >= 32 and s[1] in (VOCAB.codebook_size, VOCAB.vocab_size)]
    assert logits_like == [], saved
    assert (N, 8) in saved and (VOCAB.codebook_size, 8) in saved and (N,) in saved
    # ...whereas the reference path keeps [N, K] fp32 logits (and builds [B L, V] in the forward).
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        full_vocab_loss(hidden, weight, targets, VOCAB)
    assert (N, VOCAB.codebook_size) in saved


def test_bf16_weights_fp32_softmax():
    hidden, weight, targets, frame = problem(seed=4)
    ref = full_vocab_loss(hidden, weight, targets, VOCAB)
    out = masked_visual_loss(hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16(), targets,
                             frame, VOCAB, chunk=5)
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - ref.item()) < 0.05
    out.loss.backward()


def test_chunk_must_be_positive():
    h = torch.randn(3, 4)
    with pytest.raises(ValueError, match="chunk"):
        chunked_visual_ce(h, torch.randn(5, 4), torch.zeros(3, dtype=torch.long), chunk=0)
