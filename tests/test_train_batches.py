"""Training batches: deterministic per (seed, step), the same samples for any number of ranks or
micro-batches, frame caps, joint image/video padding, and RecordReader records on disk."""

import json

import numpy as np
import pytest
import torch

from lumos.train.batches import BatchOptions, Batcher, ConcatSource, SyntheticVideos, fetch
from lumos.data.records import RecordReader, build_index, write_shard
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.utils import LumosError
from lumos.vocab import Vocab
from seqs import t2v

VOCAB = Vocab.compact(text_vocab_size=64, codebook_size=64, max_size=32)


def videos(n=10, frames=5, vocab=VOCAB):
    """A plain list source: n videos of `frames` 2x3 latent frames, every third sample an image."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(vocab.build_t2i([1 + i], rng.integers(0, vocab.codebook_size, (2, 3))))
        else:
            out.append(t2v(vocab, n_text=1 + i % 4, frames=frames, h=2, w=3, seed=i))
    return out


def rows(batch):
    """Unpadded (inputs, targets, frame) of each row."""
    return [(batch.inputs[b][batch.valid[b]], batch.targets[b][batch.valid[b]], batch.frame[b][batch.valid[b]])
            for b in range(batch.inputs.shape[0])]


def same(r1, r2):
    return len(r1) == len(r2) and all(all(torch.equal(x, y) for x, y in zip(a, b)) for a, b in zip(r1, r2))


def test_deterministic_and_independent_of_ranks_and_micro_batches():
    b = Batcher(videos(), VOCAB, BatchOptions(max_frames=3), seed=7)
    one = b.step_batches(5, global_batch=4, micro_batch=4)
    assert len(one) == 1 and same(rows(one[0]), rows(Batcher(videos(), VOCAB, BatchOptions(max_frames=3), seed=7)
                                                    .step_batches(5, 4, 4)[0]))
    # 2 ranks x 2 micro-steps of 1 sample: rank r's micro-step a holds global sample 2a + r.
    split = {(r, a): mb for r in range(2) for a, mb in enumerate(b.step_batches(5, 4, 1, rank=r, world=2))}
    flat = rows(one[0])
    for (r, a), mb in split.items():
        assert same(rows(mb), [flat[2 * a + r]])
    assert not same(flat, rows(b.step_batches(6, 4, 4)[0]))                       # the next step differs
    assert not same(flat, rows(Batcher(videos(), VOCAB, BatchOptions(max_frames=3), seed=8).step_batches(5, 4, 4)[0]))


def test_every_record_once_per_epoch():
    b = Batcher(videos(n=10), VOCAB, BatchOptions(), seed=0)
    seen = [r for s in range(5) for r in b.step_batches(s, 4, 4)[0].records]       # 20 samples = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]


def test_frame_cap_first_and_random_window():
    src = videos()
    full = VOCAB.parse_video(src[0]).frames                                       # 5 frames
    first = VOCAB.parse_video(fetch(src, 0, 3, None, VOCAB)).frames
    assert np.array_equal(first, full[:3])
    starts = set()
    for s in range(30):
        got = VOCAB.parse_video(fetch(src, 0, 3, np.random.default_rng(s), VOCAB)).frames
        k = next(k for k in range(3) if np.array_equal(got, full[k:k + 3]))
        starts.add(k)
    assert starts == {0, 1, 2}
    batch = Batcher(src, VOCAB, BatchOptions(max_frames=2, frame_window="random"), seed=0).step_batches(0, 8, 8)[0]
    assert batch.frame.max() == 1


def test_joint_images_and_videos_right_padded():
    src = videos()
    opts = BatchOptions(max_frames=3, cfg_drop_prob=0.0, pad_multiple=8)
    batch = Batcher(src, VOCAB, opts, seed=0).step_batches(0, 6, 6)[0]
    lengths = [len(fetch(src, r, 3, None, VOCAB)) for r in batch.records]
    assert batch.inputs.shape[1] % 8 == 0 and batch.inputs.shape[1] >= max(lengths)
    assert batch.valid.sum(1).tolist() == lengths
    pad = ~batch.valid
    assert (batch.inputs[pad] == VOCAB.bos).all()
    assert (batch.targets[pad] == -100).all() and (batch.frame[pad] == -1).all()
    assert any(src[r].size < 40 for r in batch.records) and any(src[r].size > 40 for r in batch.records)  # mixed
    assert batch.num_targets > 0 and batch.num_tokens == sum(lengths)


def test_cfg_drop_and_length_check():
    drop_all = Batcher(videos(), VOCAB, BatchOptions(cfg_drop_prob=1.0), seed=0).step_batches(0, 4, 4)[0]
    assert (drop_all.inputs[:, 0] == VOCAB.video_start).all()
    keep_all = Batcher(videos(), VOCAB, BatchOptions(cfg_drop_prob=0.0), seed=0).step_batches(0, 4, 4)[0]
    assert (keep_all.inputs[:, 0] == VOCAB.bos).all()
    with pytest.raises(LumosError, match="max_seq_len"):
        Batcher(videos(), VOCAB, BatchOptions(max_frames=5), seed=0, max_seq_len=30).step_batches(0, 4, 4)
    with pytest.raises(ValueError, match="not a multiple"):
        Batcher(videos(), VOCAB, BatchOptions(), seed=0).step_batches(0, 5, 2)


def test_synthetic_source_and_concat():
    syn = SyntheticVideos(VOCAB, num=20, frames=4, height=2, width=2, image_fraction=0.5, seed=1)
    parsed = [VOCAB.parse_video(syn[i]) for i in range(20)]
    assert {p.frames.shape[0] for p in parsed} == {1, 4}                          # images and videos
    assert np.array_equal(syn[3], SyntheticVideos(VOCAB, num=20, frames=4, height=2, width=2,
                                                  image_fraction=0.5, seed=1)[3])
    both = ConcatSource([videos(n=4), syn])
    assert len(both) == 24 and np.array_equal(both[5], syn[1])
    assert np.array_equal(fetch(both, 2, 3, None, VOCAB), fetch(videos(n=4), 2, 3, None, VOCAB))


def write_records(root, seqs, vocab):
    meta = {"shard": 0, "num_shards": 1, "vocab": vocab.to_dict(), "digit_ids": None, "temporal_compression": 4,
            "records": [{"id": i, "frames": int((s == vocab.frame_start).sum()), "num_frames_span": None}
                        for i, s in enumerate(seqs)]}
    write_shard(root / "shard-00000", seqs, meta)
    build_index(root)


def test_record_reader_source_and_training_on_records(tmp_path):
    vocab = Vocab.compact(text_vocab_size=32, codebook_size=48, max_size=16)   # not the tiny preset's
    seqs = videos(n=12, vocab=vocab)
    write_records(tmp_path / "records", seqs, vocab)
    reader = RecordReader(tmp_path / "records")
    assert np.array_equal(fetch(reader, 0, 3, None, vocab), fetch(seqs, 0, 3, None, vocab))
    hist = train(TrainConfig(model="tiny", data=[str(tmp_path / "records")], batch=BatchOptions(max_frames=3),
                             max_steps=2, batch_size=4, warmup_steps=1, tensorboard=False,
                             out_dir=str(tmp_path / "run")))
    assert len(hist) == 2 and all(np.isfinite(r["loss"]) for r in hist)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000002" / "train_state.json").read_text())
    assert state["model_config"]["vocab"] == vocab.to_dict()                     # the records' vocabulary
