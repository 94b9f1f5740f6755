"""`lumos serve` without a browser: the rules of `lumos.serve.app.Studio` (limits, uploads, the queue, the
results) driven through its API with the built-in model, and the command line's checks before the model
loads. tests/test_browser.py drives the page itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lumos import LumosPipeline, media
from lumos.serve import Limits, Request, Studio
from lumos.utils import LumosError

PROMPT = "a red 3 moving down"


@pytest.fixture(scope="module")
def pipe():
    return LumosPipeline.from_pretrained("moving-digits")


def studio(pipe, tmp_path, **limits) -> Studio:
    return Studio(pipe, "moving-digits", Limits(**limits), out_dir=tmp_path / "results")


def refused(st: Studio, req: Request) -> str:
    """The one-line message a request is refused with (before anything is queued or run)."""
    with pytest.raises(LumosError) as e:
        next(st.generate(req))
    assert st.waiting == 0 and st._pending == 0 and "\n" not in str(e.value)
    return str(e.value)


def test_generate_streams_frames_then_the_pipelines_result(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    updates = list(st.generate(Request(PROMPT, seed=7, settings={"num_inference_steps": 2})))
    frames = [u.frames for u in updates if u.frames is not None]
    assert [len(f) for f in frames] == [1, 4, 4, 4, 4]            # the frames of each latent frame, as decoded
    assert any("step 2 of 2" in u.status for u in updates)
    r = updates[-1].result
    expected = pipe(PROMPT, generator=7, num_inference_steps=2).frames[0]
    assert np.array_equal(r.frames, expected) and np.array_equal(np.concatenate(frames), expected)
    assert sorted(r.files) == ["gif", "json", "mp4", "png"]
    assert all(p.is_file() and p.parent.parent == st.out_dir for p in r.files.values())
    strip = media.read_image(r.files["png"])[0]                  # lossless: the frames side by side
    assert np.array_equal(strip, np.concatenate(list(expected), axis=1))
    m = r.manifest
    assert (m["prompt"], m["seed"], m["model"], m["frames"]) == (PROMPT, 7, "moving-digits", 17)
    assert m["settings"]["num_inference_steps"] == 2 and m["settings"]["guidance_scale"] == pipe.defaults.guidance_scale
    assert st.restore(0) == {"prompt": PROMPT, "seed": 7, "num_frames": 17, "height": 64, "width": 64,
                             "num_inference_steps": 2, "guidance_scale": 2.0, "history_mask_ratio": 0.7,
                             "temperature": 0.6}


def test_one_frame_is_an_image(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    r = list(st.generate(Request("a red 3", seed=0, settings={"num_frames": 1, "num_inference_steps": 2})))[-1].result
    assert r.is_image and sorted(r.files) == ["json", "png"] and r.thumbnail == r.files["png"]
    assert np.array_equal(r.frames, pipe("a red 3", generator=0, num_frames=1, num_inference_steps=2).frames[0])


def test_image_to_video_from_an_upload(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    first = tmp_path / "first.png"
    media.write_image(first, pipe("a cyan 4", generator=0, num_frames=1, num_inference_steps=2).frames[0])
    updates = list(st.generate(Request("a cyan 4 moving left", seed=1, image=str(first),
                                       settings={"num_inference_steps": 2, "num_frames": 9})))
    r = updates[-1].result
    assert r.frames.shape[0] == 9 and r.manifest["image"] == "first.png" and r.manifest["settings"]["task"] == "i2v"
    assert np.array_equal(r.frames, pipe("a cyan 4 moving left", image=str(first), generator=1, num_frames=9,
                                         num_inference_steps=2).frames[0])


def test_continuation_of_an_uploaded_video(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    start = tmp_path / "start.mp4"
    media.write_video(start, pipe(PROMPT, generator=2, num_frames=5, num_inference_steps=1).frames[0], fps=8)
    r = list(st.generate(Request(PROMPT, seed=4, video=str(start),
                                 settings={"num_inference_steps": 1, "num_frames": 9})))[-1].result
    assert r.frames.shape[0] == 9 and r.manifest["video"] == "start.mp4"
    assert r.manifest["settings"]["task"] == "continuation"
    assert np.array_equal(r.frames, pipe(PROMPT, video=str(start), generator=4, num_frames=9,
                                         num_inference_steps=1).frames[0])


def test_the_model_defaults_fill_the_page_within_the_limits(pipe, tmp_path):
    assert studio(pipe, tmp_path).defaults() == {"num_frames": 17, "height": 64, "width": 64, "num_inference_steps": 6,
                                                 "guidance_scale": 2.0, "history_mask_ratio": 0.7, "temperature": 0.6}
    small = studio(pipe, tmp_path, max_frames=9, max_steps=4, max_resolution=40)
    assert small.max_side == 40 and small.defaults()["num_frames"] == 9 and small.defaults()["num_inference_steps"] == 4


# ---------------------------------------------------------------------------------------------- limits
def test_too_many_frames_steps_or_pixels_name_the_flag(pipe, tmp_path):
    st = studio(pipe, tmp_path, max_frames=9, max_steps=4, max_resolution=32)
    assert "17 frames is more than this server allows (9; lumos serve --max-frames)" in refused(
        st, Request(PROMPT, 0, settings={"num_frames": 17}))
    assert "--max-steps" in refused(st, Request(PROMPT, 0, settings={"num_frames": 9, "num_inference_steps": 5}))
    assert "height 64 px is more than this server allows (32 px; lumos serve --max-resolution)" in refused(
        st, Request(PROMPT, 0, settings={"num_frames": 9, "num_inference_steps": 4, "height": 64}))


def test_bad_requests_are_one_line(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    assert "prompt is empty" in refused(st, Request("  ", 0))
    assert "seed" in refused(st, Request(PROMPT, -1))
    assert "not a multiple of 8" in refused(st, Request(PROMPT, 0, settings={"height": 60}))   # the pipeline's check
    assert "unknown settings" in refused(st, Request(PROMPT, 0, settings={"device": "cuda"}))


def test_too_large_an_upload(pipe, tmp_path):
    st = studio(pipe, tmp_path, max_upload_mb=0.001)
    big = tmp_path / "big.png"
    media.write_image(big, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))   # ~12 kB
    msg = refused(st, Request(PROMPT, 0, image=str(big)))
    assert msg.startswith("first image big.png is 0.0") and "at most 0.001 MB (lumos serve --max-upload-mb)" in msg


def test_a_bad_upload_names_the_upload_not_a_server_path(pipe, tmp_path):
    st = studio(pipe, tmp_path)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    msg = refused(st, Request(PROMPT, 0, image=str(bad)))
    assert msg.startswith("first image notes.png: cannot decode") and str(tmp_path) not in msg
    assert "video still.png: a still image" in refused(st, Request(PROMPT, 0, video=_png(tmp_path)))
    assert "not both" in refused(st, Request(PROMPT, 0, image=_png(tmp_path), video=_png(tmp_path)))


def _png(tmp_path) -> str:
    p = tmp_path / "still.png"
    media.write_image(p, np.zeros((64, 64, 3), np.uint8))
    return str(p)


def test_queue_full_is_busy_at_once(pipe, tmp_path):
    """One generation runs, max_queue=1 waits; the next request is refused at once with "busy, N waiting",
    and the two admitted ones both finish. (Generators driven by hand: no timing involved.)"""
    st = studio(pipe, tmp_path, max_queue=1)
    req = Request(PROMPT, 3, settings={"num_inference_steps": 1, "num_frames": 5})
    running = st.generate(req)
    assert next(running).status.startswith("starting")            # holds the model
    waiting = st.generate(req)
    assert next(waiting).status.startswith("waiting") and st.waiting == 1
    msg = refused_while_busy(st, req)
    assert msg == "busy: one generation running and 1 waiting (at most 1); try again in a moment"
    assert list(running)[-1].result is not None
    assert list(waiting)[-1].result is not None
    assert st._pending == 0 and len(st.results) == 2
    assert np.array_equal(st.results[0].frames, st.results[1].frames)   # same request, same seed


def refused_while_busy(st: Studio, req: Request) -> str:
    with pytest.raises(LumosError) as e:
        next(st.generate(req))
    return str(e.value)


def test_a_closed_page_frees_the_model(pipe, tmp_path):
    """A generation abandoned halfway (the browser went away: gradio closes the generator) stops its
    worker and releases the lock; the next request runs."""
    st = studio(pipe, tmp_path)
    g = st.generate(Request(PROMPT, 0, settings={"num_inference_steps": 2}))
    while next(g).frames is None:
        pass
    g.close()
    assert st._pending == 0 and not st._running.locked()
    assert list(st.generate(Request(PROMPT, 0, settings={"num_inference_steps": 1, "num_frames": 5})))[-1].result


def test_limits_are_checked():
    with pytest.raises(LumosError, match="--max-frames must be an integer >= 1"):
        Limits(max_frames=0)
    with pytest.raises(LumosError, match="--max-upload-mb must be a number > 0"):
        Limits(max_upload_mb=0)
    assert Limits(max_queue=0).max_queue == 0


# ---------------------------------------------------------------------------------------------- the command
def test_bad_flags_and_no_gradio_are_refused_before_the_model_loads(monkeypatch, capsys):
    import importlib.util

    from lumos import pipeline
    from lumos.cli import main

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline.LumosPipeline, "from_pretrained", no_load)
    for argv, message in ((["--max-frames", "0"], "--max-frames must be an integer >= 1"),
                          (["--port", "70000"], "--port must be 0..65535"),
                          (["--max-upload-mb", "-0.5"], "--max-upload-mb must be a number > 0")):
        assert main(["serve", *argv]) == 2
        assert capsys.readouterr().err == f"lumos: error: {message}, got {argv[1]}\n"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "lumos: error: lumos serve needs gradio: pip install 'lumos[ui]'\n"


def test_lumos_and_its_help_do_not_import_gradio():
    code = ("import sys, lumos, lumos.serve, lumos.cli.serve\n"
            "from lumos.cli import parse\n"
            "try:\n    parse(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'gradio' not in sys.modules, 'gradio imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_server_serves_no_file_outside_its_results(pipe, tmp_path):
    """The page can fetch a result's files, never another path: the repository, /etc, the uploads of others."""
    pytest.importorskip("gradio")
    import socket
    import urllib.error
    import urllib.request
    from pathlib import Path

    from lumos.serve.app import launch

    st = studio(pipe, tmp_path)
    r = list(st.generate(Request(PROMPT, 0, settings={"num_inference_steps": 1, "num_frames": 5})))[-1].result
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkey_env = {"GRADIO_ANALYTICS_ENABLED": "False"}
    import os
    old = {k: os.environ.get(k) for k in monkey_env}
    os.environ.update(monkey_env)
    page = None
    try:
        page = launch(st, port=port, block=False)
        url = page.local_url

        def status(path) -> int:
            try:
                with urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as e:
                return e.code

        assert status(r.files["json"]) == 200
        readme = Path(__file__).resolve().parents[1] / "README.md"
        assert status(readme) in (403, 404) and status("/etc/passwd") in (403, 404)
        (tmp_path / "elsewhere.txt").write_text("private")
        assert status(tmp_path / "elsewhere.txt") in (403, 404)
    finally:
        if page is not None:
            page.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
