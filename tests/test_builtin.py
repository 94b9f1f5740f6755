"""The built-in model's recipe at toy size: prepare records -> train -> export -> pipeline."""

import json

import numpy as np
import pytest

from lumos.world.builtin import caption_corpus, export, prepare, prepared_with
from lumos.data.records import RecordReader
from lumos.train.batches import BatchOptions
from lumos.train.config import TrainConfig
from lumos.train.loop import train
from lumos.utils import LumosError
from lumos.vocab import Vocab
from _stand_ins import save_vq_stand_in


def test_prepare_train_export_generate(tmp_path):
    tok = save_vq_stand_in(tmp_path / "vq")
    data = prepare(tmp_path / "data", num_records=12, seed=0, tokenizer=tok, progress=False)
    reader = RecordReader(data / "train")
    assert len(reader) == 12
    vocab = Vocab.from_dict(json.loads((data / "train" / "index.json").read_text())["vocab"])
    kinds = []
    for i in range(12):
        p = vocab.parse_video(reader[i])
        kinds.append(p.frames.shape[0])
        assert p.frames.shape[1:] == (8, 8) and p.complete
    assert kinds.count(1) == 12 // 5 and kinds.count(5) == 12 - 12 // 5     # images and 17-frame clips
    again = prepare(tmp_path / "data", num_records=12, seed=0, tokenizer=tok, progress=False)  # resumes: no-op
    assert np.array_equal(RecordReader(again / "train")[3], reader[3])
    # records of another preparation are never mixed in (nor exported under this one's prompt template)
    with pytest.raises(LumosError, match="was prepared with .*'seed': 0.*use a new --out"):
        prepare(tmp_path / "data", num_records=12, seed=1, tokenizer=tok, progress=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "text_tokenizer.json").write_text("{}")
    with pytest.raises(LumosError, match="has no prepared.json"):
        prepare(tmp_path / "old", num_records=12, seed=0, tokenizer=tok, progress=False)

    train(TrainConfig(model="tiny", data=[str(data / "train")], batch=BatchOptions(max_frames=5), max_steps=2, batch_size=4,
                      warmup_steps=1, tensorboard=False, out_dir=str(tmp_path / "run")))
    out = export(tmp_path / "run", data=data, out=tmp_path / "asset", tokenizer=tok)
    from lumos.pipeline import LumosPipeline
    pipe = LumosPipeline.from_pretrained(out)
    assert pipe.defaults.prompt_template == prepared_with(data)["prompt_template"] == "{caption}"
    video = pipe("a red 3 moving left", num_inference_steps=2, generator=__import__("torch").Generator().manual_seed(0),
                 progress=False).frames[0]
    assert video.shape == (17, 64, 64, 3) and video.dtype == np.uint8

    from lumos.world.demo import demo
    files = demo(tmp_path / "demo", model=out, progress=False)
    names = sorted(f.name for f in files)
    assert names == ["heldout.gif", "heldout.mp4", "i2v.gif", "i2v.mp4", "t2i.png", "t2v.gif", "t2v.mp4"]
    assert all(f.stat().st_size > 0 for f in files)
    assert json.loads((tmp_path / "demo" / "heldout.json").read_text())["prompt"] == "a cyan 4 moving left"


def test_caption_corpus_covers_the_grammar():
    corpus = caption_corpus(np.random.default_rng(0), n_two=10)
    assert sum("moving" in c for c in corpus) == 240 + 10 and len(corpus) == 60 + 240 + 10


def test_prepare_long_wrapping_clips(tmp_path):
    """`prepare(num_frames=33, edges="wrap")`: records of long clips on a toroidal canvas (the data a model
    needs to go on past 17 frames); the world is part of the stamp, so another world is a new folder."""
    tok = save_vq_stand_in(tmp_path / "vq")
    data = prepare(tmp_path / "data", num_records=5, seed=0, tokenizer=tok, progress=False, num_frames=33,
                   edges="wrap")
    reader = RecordReader(data / "train")
    vocab = Vocab.from_dict(json.loads((data / "train" / "index.json").read_text())["vocab"])
    frames = sorted(vocab.parse_video(reader[i]).frames.shape[0] for i in range(5))
    assert frames == [1, 9, 9, 9, 9]                                     # one image, four 33-frame clips
    assert {k: prepared_with(data)[k] for k in ("num_frames", "edges")} == {"num_frames": 33, "edges": "wrap"}
    with pytest.raises(LumosError, match="was prepared with"):
        prepare(tmp_path / "data", num_records=5, seed=0, tokenizer=tok, progress=False)
    with pytest.raises(LumosError, match="edges"):
        prepare(tmp_path / "bad", num_records=5, seed=0, tokenizer=tok, progress=False, edges="bounce")
    assert not (tmp_path / "bad").exists()


def test_prepare_with_a_given_text_tokenizer_keeps_its_ids_and_stamps_both_tokenizers(tmp_path):
    """`prepare(text_tokenizer=...)` (more records for an existing model: its token ids must not change)
    copies that file in instead of training one; the sha256 of both tokenizers is in the stamp, so
    records of another video tokenizer (e.g. another padding mode: other codes) are never mixed in."""
    from lumos.tokenizers.text import TextTokenizer
    from lumos.world.builtin import ASSET
    tok = save_vq_stand_in(tmp_path / "vq")
    given = ASSET / "text_tokenizer.json"
    data = prepare(tmp_path / "data", num_records=3, seed=4, tokenizer=tok, progress=False, text_tokenizer=given)
    assert (data / "text_tokenizer.json").read_bytes() == given.read_bytes()
    reader = RecordReader(data / "train")
    vocab = Vocab.from_dict(json.loads((data / "train" / "index.json").read_text())["vocab"])
    caption = reader.meta(0)["caption"]
    ids = TextTokenizer(given).encode(caption)
    text = vocab.parse_video(reader[0]).text.tolist()
    assert len(ids) > 2 and any(text[i:i + len(ids)] == ids for i in range(len(text)))   # the given ids, as they are
    stamp = prepared_with(data)
    assert set(stamp) >= {"video_tokenizer_sha256", "text_tokenizer_sha256"}
    other = save_vq_stand_in(tmp_path / "vq2", padding_mode="circular")
    with pytest.raises(LumosError, match="was prepared with"):
        prepare(tmp_path / "data", num_records=3, seed=4, tokenizer=other, progress=False, text_tokenizer=given)
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(LumosError):
        prepare(tmp_path / "fresh", num_records=3, seed=4, tokenizer=tok, progress=False, text_tokenizer=bad)
    assert not (tmp_path / "fresh").exists()
