"""`lumos tokenize` end to end on tiny synthetic media with the scripted Cosmos stand-in:
bad files skipped and reported, SIGKILL + resume gives the uninterrupted result, records parse,
settings checks, the CLI, and the authors' records through the reader."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _stand_ins import save_cosmos_stand_in, save_vq_stand_in
from lumos import media
from lumos.cli import main as cli_main
from lumos.tokenizers.cosmos import CosmosTokenizer
from lumos.data.pretokenize import pretokenize
from lumos.data.records import RecordReader, load_official_record
from lumos.tokenizers.text import TextTokenizer, train_text_tokenizer
from lumos.utils import LumosError
from lumos.vocab import Vocab, video_prompt

TESTS = Path(__file__).resolve().parent
BAD_ROWS = {3: "missing", 7: "undecodable", 12: "undecodable"}
OPTS = dict(fps=4, duration=1, size=64, shard_size=6, progress=False, device="cpu")


def caption(i):
    return f"a {['red', 'green', 'blue', 'grey'][i % 4]} square number {i} slides {['left', 'right'][i % 2]}"


def make_clip(i, T=8, H=32, W=32):
    """A moving bright square on a tinted background: distinct per row and per frame."""
    v = np.zeros((T, H, W, 3), np.uint8)
    v[..., i % 3] = 40 + 8 * i
    for t in range(T):
        x = (2 * t + i) % (W - 8)
        v[t, 8:16, x:x + 8] = 230
    return v


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """20 rows: 15 mp4 (some 2:1), a png image (row 5), a gif (row 9), a row with its own fps (row 10),
    one missing file (row 3), random bytes (row 7), a truncated webm (row 12)."""
    d = tmp_path_factory.mktemp("data")
    media_dir = d / "media"
    media_dir.mkdir()
    rows = []
    for i in range(20):
        row = {"path": f"media/{i:02d}.mp4", "caption": caption(i), "fps": "", "duration": ""}
        if i == 5:
            row["path"] = "media/05.png"
            media.write_image(d / row["path"], make_clip(i, T=1, W=48)[0])
        elif i == 9:
            row["path"] = "media/09.gif"
            media.write_video(d / row["path"], make_clip(i), fps=8)
        elif i == 3:
            pass  # listed, never written
        elif i == 7:
            (d / row["path"]).write_bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes())
        elif i == 12:
            row["path"] = "media/12.webm"
            media.write_video(d / "full.webm", make_clip(i), fps=8)
            data = (d / "full.webm").read_bytes()
            (d / row["path"]).write_bytes(data[:200])
        else:
            media.write_video(d / row["path"], make_clip(i, W=64 if i in (1, 13, 17) else 32), fps=8)
        if i == 10:
            row["fps"], row["duration"] = "8", "1"
        rows.append(row)
    with open(d / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "caption", "fps", "duration"])
        w.writeheader()
        w.writerows(rows)
    train_text_tokenizer([r["caption"] for r in rows], 320, d / "text.json")
    save_cosmos_stand_in(d / "cosmos")
    return d


def run(dataset, out, **kw):
    opts = {**OPTS, **kw}
    return pretokenize(input=str(dataset / "list.csv"), out=str(out), tokenizer=str(dataset / "cosmos"),
                       text_tokenizer=str(dataset / "text.json"), **opts)


def digest(out) -> str:
    """sha256 over every record's tokens and meta, in order."""
    reader = RecordReader(out)
    h = hashlib.sha256()
    for i in range(len(reader)):
        h.update(reader[i].astype(np.uint32).tobytes())
        h.update(json.dumps(reader.meta(i), sort_keys=True).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """Uninterrupted run with 2 worker processes (the pool path)."""
    out = tmp_path_factory.mktemp("ref") / "tok"
    report = run(dataset, out, workers=2)
    return out, report


def test_skips_and_reports_bad_files(dataset, reference_run, capsys):
    out, report = reference_run
    assert report["records"] == 17 and report["rows_done"] == 20 and report["complete"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert {s["row"]: s["kind"] for s in report["skipped"]} == BAD_ROWS
    assert [Path(s["path"]).name for s in report["skipped"]] == ["03.mp4", "07.mp4", "12.webm"]
    assert all(s["reason"] for s in report["skipped"])
    reader = RecordReader(out)
    assert len(reader) == 17 and reader.index["num_shards"] == 4
    assert [reader.meta(i)["row"] for i in range(17)] == [i for i in range(20) if i not in BAD_ROWS]


def test_records_parse_and_match_a_direct_encode(dataset, reference_run):
    out, _ = reference_run
    reader = RecordReader(out)
    assert reader.vocab == Vocab.chameleon()  # Cosmos -> the released layout
    text = TextTokenizer(dataset / "text.json")
    tok = CosmosTokenizer(dataset / "cosmos")
    for i in range(len(reader)):
        m = reader.meta(i)
        p = reader.vocab.parse_video(reader[i])
        assert p.complete and p.frames.shape == (m["frames"], *m["grid"])
        row = m["row"]
        if row == 5:     # still image: t2i layout, "1 frames at 1 frames per second"
            assert (p.duration, p.fps, m["frames"]) == (1, 1, 1) and m["size"] == [64, 32]  # 48x32 -> 64x32
        elif row == 10:  # own fps: 8 frames -> 3 latent frames
            assert (p.duration, p.fps, m["frames"]) == (1, 8, 3)
        else:            # 4 frames at 4 fps -> 2 latent frames; 32x32 -> the 64x64 bucket, 64x32 -> 64x32
            assert (p.duration, p.fps, m["frames"]) == (1, 4, 2)
            assert m["size"] == ([64, 32] if row in (1, 13, 17) else [64, 64])
        W, H = m["size"]
        assert text.decode(p.text) == video_prompt(caption(row), W, H, p.fps * p.duration, p.fps)
    # the tokens are exactly: read 4 frames at 4 fps, crop to the bucket, encode
    m = reader.meta(0)
    clip = media.crop_to_bucket(media.read_clip(dataset / m["path"], 4, 1), 64, 32)
    assert np.array_equal(reader.vocab.parse_video(reader[0]).frames, tok.encode(clip).numpy())


CHILD = """
import sys, time
from lumos.tokenizers.cosmos import CosmosTokenizer
from lumos.data.pretokenize import pretokenize
slow = CosmosTokenizer.encode
def encode(self, video):
    time.sleep(0.25)  # make the run long enough to be killed halfway
    return slow(self, video)
CosmosTokenizer.encode = encode
d, out = sys.argv[1], sys.argv[2]
pretokenize(input=d + "/list.csv", out=out, tokenizer=d + "/cosmos", text_tokenizer=d + "/text.json",
            fps=4, duration=1, size=64, shard_size=6, progress=False, device="cpu")
"""


def test_sigkill_and_resume_gives_the_same_records(dataset, reference_run, tmp_path):
    out = tmp_path / "tok"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(dataset), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out / "shard-00000").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.time() < deadline, "the child never finished a shard"
            time.sleep(0.05)
        time.sleep(0.4)  # well inside the second shard
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    finished = sorted(p.name for p in out.glob("shard-*"))
    assert "shard-00000" in finished and len(finished) < 4 and not (out / "index.json").exists()
    report = run(dataset, out)  # resume in-process
    assert report["records"] == 17
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # temp folders of the killed run are gone
    assert digest(out) == digest(reference_run[0])


def test_rerun_skips_finished_shards_and_checks_settings(dataset, tmp_path):
    out = tmp_path / "tok"
    run(dataset, out, shard_size=10, rank=1, world_size=2)  # rank 1 of 2: shard 1 only (rows 10..19)
    index = json.loads((out / "index.json").read_text())
    assert [s["name"] for s in index["shards"]] == ["shard-00001"] and not index["complete"]
    stamp = (out / "shard-00001" / "tokens.npy").stat().st_mtime_ns
    report = run(dataset, out, shard_size=10, rank=0, world_size=2)
    assert report["records"] == 17 and report["complete"]
    assert (out / "shard-00001" / "tokens.npy").stat().st_mtime_ns == stamp  # not redone
    assert digest(out) == digest_of_fresh_run(dataset, tmp_path / "fresh")
    with pytest.raises(LumosError, match=r"different settings \(fps\)"):
        run(dataset, out, shard_size=10, fps=8)


def digest_of_fresh_run(dataset, out):
    run(dataset, out, shard_size=10)
    return digest(out)


def test_compact_vocab_too_short_clips_and_cli(dataset, tmp_path, capsys):
    lines = [{"path": str(dataset / "media" / "00.mp4"), "text": "first"},
             {"path": "media/01.mp4", "caption": "second", "duration": 5}]  # 1 s source, 5 s asked
    (dataset / "list.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    code = cli_main(["tokenize", "--input", str(dataset / "list.jsonl"), "--out", str(tmp_path / "tok"),
                     "--tokenizer", str(dataset / "cosmos"), "--text-tokenizer", str(dataset / "text.json"),
                     "--fps", "4", "--duration", "1", "--size", "32", "--vocab", "compact", "--no-progress",
                     "--device", "cpu"])
    assert code == 0
    said = capsys.readouterr().out
    assert "1 records from 2 rows" in said and "1 too short" in said
    reader = RecordReader(tmp_path / "tok")
    assert reader.vocab.name == "compact" and reader.vocab.grid_per_size == 1
    p = reader.vocab.parse_video(reader[0])
    assert p.frames.shape == (2, 4, 4)  # 32x32 (patch 8 -> one bucket of 32x32 at size 32) -> 4x4 latent
    report = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert report["skipped"][0]["kind"] == "too_short" and "01.mp4" in report["skipped"][0]["reason"]
    # bad arguments are one-line errors, exit code 2
    code = cli_main(["tokenize", "--input", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x"),
                     "--tokenizer", str(dataset / "cosmos"), "--text-tokenizer", str(dataset / "text.json")])
    assert code == 2 and "none.csv: input list not found" in capsys.readouterr().err
    code = cli_main(["tokenize", "--input", str(dataset / "list.jsonl"), "--out", str(tmp_path / "x"),
                     "--tokenizer", str(tmp_path), "--text-tokenizer", str(dataset / "text.json")])
    assert code == 2 and "not a visual tokenizer folder" in capsys.readouterr().err
    # --index-only rebuilds from the shards
    (tmp_path / "tok" / "index.json").unlink()
    assert cli_main(["tokenize", "--out", str(tmp_path / "tok"), "--index-only"]) == 0
    assert len(RecordReader(tmp_path / "tok")) == 1


def test_builtin_vq_tokenizer_gets_the_compact_layout(dataset, tmp_path):
    rows = [{"path": str(dataset / "media" / f"{i:02d}.mp4"), "caption": caption(i)} for i in (0, 1)]
    (tmp_path / "two.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = pretokenize(input=str(tmp_path / "two.jsonl"), out=str(tmp_path / "tok"),
                         tokenizer=str(save_vq_stand_in(tmp_path / "vq")), text_tokenizer=str(dataset / "text.json"),
                         fps=4, duration=1, size=32, progress=False, device="cpu")
    assert report["records"] == 2
    reader = RecordReader(tmp_path / "tok")
    assert reader.vocab == Vocab.compact(TextTokenizer(dataset / "text.json").vocab_size, 16)
    # patch = 8 px (one latent row per size unit), size 32 -> 16 patches: 32x32 stays 32x32; for 64x32
    # the staircase offers 5x3 (aspect 1.67) and 5x2 (2.5) but no 4x2, so 2:1 goes to 40x24
    grids = [reader.vocab.parse_video(reader[i]).frames.shape for i in range(2)]
    assert grids == [(2, 4, 4), (2, 3, 5)]
    assert [reader.meta(i)["size"] for i in range(2)] == [[32, 32], [40, 24]]


def shared_data() -> Path:
    env = os.environ.get("LUMOS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (shared_data() / "official-records").is_dir(), reason="shared/data not present")
def test_official_records_load_through_the_reader_format(tmp_path):
    """The authors' records, rewritten into our shard format, read back by RecordReader and capped
    to the reference's training length."""
    from lumos.data.records import build_index, shard_name, write_shard

    vocab = Vocab.chameleon()
    tokens = [load_official_record(shared_data() / "official-records" / f"video-{i}.json.gz") for i in (0, 1)]
    metas = [{"id": i, "frames": 22, "grid": [48, 84], "fps": 12, "duration": 7, "num_frames_span": None}
             for i in (0, 1)]
    write_shard(tmp_path / shard_name(0), tokens, {"shard": 0, "num_shards": 1, "vocab": vocab.to_dict(),
                                                   "digit_ids": list(range(16399, 16409)), "records": metas,
                                                   "skipped": []})
    build_index(tmp_path)
    reader = RecordReader(tmp_path)
    assert len(reader) == 2
    for i in (0, 1):
        p = vocab.parse_video(reader[i])
        assert p.frames.shape == (22, 48, 84)
        short = vocab.parse_video(reader.sample(i, max_frames=7))
        assert short.frames.shape == (7, 48, 84) and short.duration == 2 and np.array_equal(short.frames, p.frames[:7])
