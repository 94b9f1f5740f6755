"""Record format: shard writer, index, RecordReader (frame cap, prompt rewrite), official records."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lumos.data.records import (RecordReader, build_index, cap_frames, load_official_record, shard_name,
                           write_shard)
from lumos.tokenizers.text import train_text_tokenizer
from lumos.utils import LumosError
from lumos.vocab import VIDEO_PROMPT, Vocab, video_prompt
from seqs import record_lengths


def shared_data() -> Path:
    env = os.environ.get("LUMOS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


OFFICIAL = shared_data() / "official-records"


@pytest.fixture(scope="module")
def text_tok(tmp_path_factory):
    return train_text_tokenizer(["a digit moves", "two digits bounce"], 300, tmp_path_factory.mktemp("t") / "t.json")


def make_record(tok, vocab, F, fps, duration, seed, h=2, w=3):
    """A sequence with F latent frames and its meta, the prompt saying fps * duration frames."""
    codes = np.random.default_rng(seed).integers(0, vocab.codebook_size, (F, h, w))
    text = video_prompt(f"clip {seed}", 32 * w, 32 * h, fps * duration, fps)
    ids, offsets = tok.encode_with_offsets(text)
    start = len(VIDEO_PROMPT.split("{num_frames}")[0].format(width=32 * w, height=32 * h))
    idx = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= start + len(str(fps * duration))]
    meta = {"id": seed, "frames": F, "grid": [h, w], "fps": fps, "duration": duration,
            "num_frames_span": [1 + idx[0], 2 + idx[-1]]}
    return vocab.build_t2v(ids, codes, duration=duration, fps=fps), codes, meta


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory, text_tok):
    root = tmp_path_factory.mktemp("records")
    vocab = Vocab.compact(text_tok.vocab_size, 50)
    recs = [make_record(text_tok, vocab, F, 12, d, seed) for seed, (F, d) in enumerate([(22, 7), (7, 2), (4, 1)])]
    for k, chunk in enumerate([recs[:2], recs[2:]]):
        meta = {"shard": k, "num_shards": 2, "vocab": vocab.to_dict(), "digit_ids": text_tok.digit_ids,
                "temporal_compression": 4, "records": [m for _, _, m in chunk], "skipped": []}
        write_shard(root / shard_name(k), [t for t, _, _ in chunk], meta)
    build_index(root)
    return root, recs


def test_reader_returns_what_was_written(records_dir):
    root, recs = records_dir
    reader = RecordReader(root)
    assert len(reader) == 3 and reader.index["complete"] and reader.index["num_tokens"] == sum(len(t) for t, _, _ in recs)
    for i, (tokens, codes, meta) in enumerate(recs):
        assert np.array_equal(reader[i], tokens) and reader[i].dtype == np.int64
        assert reader.meta(i)["id"] == meta["id"]
        assert np.array_equal(reader.vocab.parse_video(reader[i]).frames, codes)
    assert np.array_equal(reader[-1], recs[-1][0])
    assert record_lengths(reader).tolist() == [len(t) for t, _, _ in recs]
    with pytest.raises(IndexError):
        reader[3]
    # picklable for DataLoader workers, without the memory maps
    again = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(again[1], recs[1][0])


def test_sample_caps_frames_and_rewrites_the_prompt(records_dir, text_tok):
    root, recs = records_dir
    reader = RecordReader(root)
    out = reader.sample(0, max_frames=7)
    parsed = reader.vocab.parse_video(out)
    assert parsed.complete and parsed.frames.shape == (7, 2, 3) and parsed.duration == 2 and parsed.fps == 12
    assert np.array_equal(parsed.frames, recs[0][1][:7])
    # the prompt now says 24 frames (12 fps x 2 s), as the reference trainer writes for 7 latent frames
    assert text_tok.decode(parsed.text) == video_prompt("clip 0", 96, 64, 24, 12)
    assert out[-2:].tolist() == [reader.vocab.video_end, reader.vocab.sep]
    # no cap, or a cap above the length: unchanged
    assert np.array_equal(reader.sample(1, max_frames=7), recs[1][0])
    assert np.array_equal(reader.sample(2), recs[2][0])
    # random windows: valid, contiguous, and they move
    starts = set()
    for seed in range(20):
        p = reader.vocab.parse_video(reader.sample(0, max_frames=5, rng=np.random.default_rng(seed)))
        s = int(np.flatnonzero((recs[0][1] == p.frames[0]).all(axis=(1, 2)))[0])
        assert np.array_equal(p.frames, recs[0][1][s:s + 5]) and p.duration == 1
        starts.add(s)
    assert len(starts) > 3


def test_cap_frames_errors(records_dir):
    root, recs = records_dir
    vocab = RecordReader(root).vocab
    with pytest.raises(ValueError, match="cannot keep"):
        cap_frames(recs[1][0], vocab, 3, start=5)
    with pytest.raises(ValueError, match="not digits"):
        cap_frames(recs[0][0], vocab, 3, num_frames_span=[1, 3], digit_ids=list(range(10)))


def test_index_rebuild_and_incomplete(tmp_path, records_dir, text_tok):
    root, recs = records_dir
    with pytest.raises(LumosError, match="index.json: not found"):
        RecordReader(tmp_path)
    with pytest.raises(LumosError, match="no finished shards"):
        build_index(tmp_path)
    # one of two shards finished: the reader warns and reads what is there
    vocab = RecordReader(root).vocab
    meta = {"shard": 1, "num_shards": 2, "vocab": vocab.to_dict(), "digit_ids": None, "records": [recs[2][2]],
            "skipped": []}
    write_shard(tmp_path / shard_name(1), [recs[2][0]], meta)
    index = build_index(tmp_path)
    assert not index["complete"] and index["missing_shards"] == ["shard-00000"]
    with pytest.warns(UserWarning, match="not finished"):
        reader = RecordReader(tmp_path)
    assert len(reader) == 1 and np.array_equal(reader[0], recs[2][0])


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="shared/data/official-records not present")
@pytest.mark.parametrize("name", ["video-0", "video-1"])
def test_official_video_records(name):
    vocab = Vocab.chameleon()
    tokens = load_official_record(OFFICIAL / f"{name}.json.gz")
    p = vocab.parse_video(tokens)
    assert p.frames.shape == (22, 48, 84) and (p.duration, p.fps) == (7, 12) and p.complete
    text = p.text.tolist()
    assert 65539 not in text and 65540 not in text
    digits = [t - 16399 for t in text if 16399 <= t <= 16408]
    # "672x384", then 7 s x 12 fps = "84" frames, then "12" fps
    assert digits == [6, 7, 2, 3, 8, 4, 8, 4, 1, 2]
    # the reference's training sample: first 7 latent frames, "24 frames", duration 2
    short = vocab.parse_video(load_official_record(OFFICIAL / f"{name}.json.gz", duration=2))
    assert short.frames.shape == (7, 48, 84) and short.duration == 2
    assert np.array_equal(short.frames, p.frames[:7])
    assert [t - 16399 for t in short.text.tolist() if 16399 <= t <= 16408][6:] == [2, 4, 1, 2]


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="shared/data/official-records not present")
def test_official_image_records():
    vocab = Vocab.chameleon()
    for name in ("image-0", "image-1"):
        p = vocab.parse_video(load_official_record(OFFICIAL / f"{name}.json.gz"))
        assert p.frames.shape == (1, 52, 72) and (p.duration, p.fps) == (1, 1)
        assert [t - 16399 for t in p.text.tolist() if 16399 <= t <= 16408] == [5, 7, 6, 4, 1, 6, 1, 1]


def test_official_record_errors(tmp_path):
    with pytest.raises(LumosError, match="no such file"):
        load_official_record(tmp_path / "x.json.gz")
    (tmp_path / "bad.json").write_text('{"id": 0}')
    with pytest.raises(LumosError, match="not an official Lumos record"):
        load_official_record(tmp_path / "bad.json")
