"""`lumos serve` in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run` installs when
missing; Playwright drives it through `executable_path`, no browser is downloaded) against the server
started as a user starts it, `lumos serve --port P` with the built-in model.

The test skips only when /usr/bin/chromium is absent. Screenshots of the page before, during and after
a generation (and of an upload refused) go to test-artifacts/screenshots/ (gitignored, kept by CI).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
PROMPT, SEED, STEPS = "a red 3 moving down", 1234, 3

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: `apt-get install chromium` "
                                                              "(.ci/run installs it) to run the browser test")

# Records, in order, every change of the preview image's src and the first time the result video has
# one, so the test can tell how many frame updates reached the page before the final video.
WATCH = """() => {
  window.__events = [];
  let preview = null, video = null, status = null;
  const look = () => {
    const st = document.querySelector('#status');
    const text = st ? st.innerText.trim() : null;
    if (text && text !== status) { status = text; window.__events.push(['status', text]); }
    const img = document.querySelector('#preview img');
    const src = img ? img.getAttribute('src') : null;
    if (src && src !== preview) { preview = src; window.__events.push(['preview', src]); }
    const v = document.querySelector('#result-video video');
    const vsrc = v ? v.getAttribute('src') : null;
    if (vsrc && vsrc !== video) { video = vsrc; window.__events.push(['video', vsrc]); }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true, attributeFilter: ['src']});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lumos serve` on a free localhost port, one torch thread (as the reference below); its log on failure."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "lumos.cli", "serve", "--port", str(port), "--threads", "1"],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"lumos serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"lumos serve did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        outside: list[str] = []

        def local_only(route):              # the page must work offline: nothing beyond the server is fetched
            url = route.request.url
            if url.startswith(server) or url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        pg.route("**/*", local_only)
        pg.goto(server, wait_until="load")
        pg.wait_for_selector("#generate", timeout=60_000)
        pg.outside = outside
        yield pg
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def set_number(page, elem_id: str, value) -> None:
    """A gradio number or slider: type into its number box and leave it (the value is taken on blur)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def download(page, name: str) -> bytes:
    """The file `name` among the page's download links, fetched as the browser would."""
    links = page.locator("#downloads a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    href = next((h for h in hrefs if h and h.split("?")[0].endswith("/" + name)), None)
    assert href, f"no download link for {name} among {hrefs}"
    r = page.request.get(href)
    assert r.ok, f"GET {href}: {r.status}"
    return r.body()


def test_generate_streams_frames_and_matches_the_pipeline(page, tmp_path):
    """Type a prompt, set the seed and 3 steps, generate: at least two intermediate frame updates reach the
    page before the final video, and the result is exactly `LumosPipeline`'s for the same settings.

    The exact check: mp4 is lossy, so the page also offers the frames losslessly, a PNG strip (the
    frames side by side, `lumos.media.write_image`). Decoded, it must equal, pixel for pixel, the frames of
    `pipe(prompt, generator=seed, num_inference_steps=3)` computed here (one torch thread, as the server).
    The GIF download must equal, byte for byte, `media.write_video` of those frames (the same encoder on
    the same uint8 frames). The manifest records the prompt, seed and settings."""
    import torch

    from lumos import LumosPipeline, media

    assert page.outside == [], f"the page fetched from outside the server: {page.outside}"
    shot(page, "before")
    page.locator("#prompt textarea").fill(PROMPT)
    set_number(page, "seed", SEED)
    set_number(page, "steps", STEPS)
    page.evaluate(WATCH)
    page.click("#generate")
    page.wait_for_function("window.__events.filter(e => e[0] === 'preview').length >= 1", timeout=60_000)
    shot(page, "during")
    page.wait_for_function("window.__events.some(e => e[0] === 'video')", timeout=120_000)
    page.wait_for_function("document.querySelectorAll('#downloads a').length >= 4", timeout=30_000)
    page.wait_for_timeout(300)                     # let the video element lay out for the screenshot
    shot(page, "after")
    events = page.evaluate("window.__events")
    first_video = next(i for i, e in enumerate(events) if e[0] == "video")
    previews = [e for e in events[:first_video] if e[0] == "preview"]
    assert len(previews) >= 2, f"expected >= 2 frame updates before the video, saw {events}"
    progress = [e[1] for e in events[:first_video] if e[0] == "status"]
    assert any(f"of 5, step {STEPS} of {STEPS}" in t for t in progress), progress   # latent frame k of 5, step j of 3
    assert any("frame 5 of 17 decoded" in t for t in progress), progress
    assert "done" in page.inner_text("#status")

    pipe = LumosPipeline.from_pretrained("moving-digits")
    assert torch.get_num_threads() == 1             # tests/conftest.py; the server runs --threads 1
    expected = pipe(PROMPT, generator=SEED, num_inference_steps=STEPS).frames[0]        # uint8 [17, 64, 64, 3]
    (tmp_path / "strip.png").write_bytes(download(page, "lumos-frames.png"))
    strip = media.read_image(tmp_path / "strip.png")[0]
    T, H, W, _ = expected.shape
    assert strip.shape == (H, T * W, 3)
    assert np.array_equal(strip.reshape(H, T, W, 3).transpose(1, 0, 2, 3), expected)
    media.write_video(tmp_path / "ref.gif", expected, fps=pipe.defaults.fps)
    assert download(page, "lumos.gif") == (tmp_path / "ref.gif").read_bytes()
    manifest = json.loads(download(page, "lumos.json"))
    assert (manifest["prompt"], manifest["seed"], manifest["model"]) == (PROMPT, SEED, "moving-digits")
    assert manifest["settings"]["num_inference_steps"] == STEPS and manifest["frames"] == T


def test_gallery_click_restores_settings(page):
    """After the generation above, change the prompt and steps, click the gallery entry: they come back."""
    page.wait_for_selector("#gallery img", timeout=30_000)
    page.locator("#prompt textarea").fill("a blue 7 moving up")
    set_number(page, "steps", 9)
    page.locator("#gallery img").first.click()
    page.wait_for_function(f"document.querySelector('#prompt textarea').value === {json.dumps(PROMPT)}",
                           timeout=30_000)
    assert page.locator("#steps input[type=number]").input_value() == str(STEPS)
    assert page.locator("#seed input").input_value() == str(SEED)


def test_one_frame_shows_an_image(page):
    """frames = 1 is text-to-image: the page shows a still image (no video) and offers the png and manifest."""
    page.locator("#prompt textarea").fill("a blue 7")
    set_number(page, "num-frames", 1)
    set_number(page, "steps", 2)
    page.click("#generate")
    page.wait_for_selector("#still img", timeout=60_000)
    page.locator("#status").filter(has_text="done: 1 frame").wait_for(timeout=30_000)
    assert page.locator("#result-video video").count() == 0
    page.wait_for_function("document.querySelectorAll('#downloads a').length === 2", timeout=30_000)
    shot(page, "image")


def test_a_bad_upload_is_a_clear_message_in_the_page(page, tmp_path):
    """A text file given as the first image: one line in the page naming the upload, no traceback."""
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all\n")
    page.locator("#image-upload input[type=file]").set_input_files(str(bad))
    status = page.locator("#status")
    status.filter(has_text="notes.png").wait_for(timeout=30_000)
    text = status.inner_text()
    shot(page, "bad-upload")
    assert "error" in text and "first image notes.png" in text and "cannot decode" in text, text
    assert "Traceback" not in page.content()
