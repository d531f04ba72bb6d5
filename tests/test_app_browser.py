"""The web app in a real browser: headless Chromium driven by Playwright (an installed one, never a downloaded one),
against `dragkit app` started on a free local port with the GAN engine."""

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import App

CHROMIUM = os.environ.get("DRAGKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# screenshots go to the test's temporary folder; DRAGKIT_APP_SCREENSHOTS=docs/app refreshes the committed ones
SHOTS = os.environ.get("DRAGKIT_APP_SCREENSHOTS")

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="chromium is not installed: apt-get install chromium, or DRAGKIT_CHROMIUM=/path/to/chromium (README)",
    ),
    pytest.mark.browser,
    pytest.mark.subprocess,
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    app = App(tmp_path_factory.mktemp("app") / "app.log")  # binds a free port and says which once it serves
    yield app.url
    app.stop()


# the image is shown and laid out, and the page's hint says what to click
READY = (
    "() => { const i = document.querySelector('#canvas img'); const h = document.querySelector('#hint');"
    " return !!(i && i.complete && i.naturalWidth > 0 && h && h.innerText.includes('click a handle')); }"
)


def hint_has(page, text, timeout=30000):
    page.wait_for_function(
        "t => (document.querySelector('#hint')?.innerText || '').includes(t)", arg=text, timeout=timeout
    )


def upload(page, path):
    with page.expect_file_chooser() as chooser:  # as a user does: the button opens the file dialog
        page.locator("#upload").click()
    chooser.value.set_files(str(path))


def visible(page, selector):
    return page.locator(selector).first.is_visible()


def click_image(page, selector, x, y, size):
    box = page.locator(f"{selector} img").bounding_box()
    # the image is shown scaled to fit (aspect kept, centred): map image pixels to page pixels
    k = min(box["width"] / size[0], box["height"] / size[1])
    ox = box["x"] + (box["width"] - size[0] * k) / 2
    oy = box["y"] + (box["height"] - size[1] * k) / 2
    page.mouse.click(ox + (x + 0.5) * k, oy + (y + 0.5) * k)


def test_upload_click_run_download_with_a_second_user_alongside(app_url, face_png, tmp_path):
    from playwright.sync_api import sync_playwright

    src = Image.open(face_png).convert("RGB")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (2100, 40), (90, 120, 150)).save(huge)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        alice = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        bob = browser.new_context(viewport={"width": 1400, "height": 1000})
        a, b = alice.new_page(), bob.new_page()
        for page in (a, b):
            page.goto(app_url)
            page.locator("#run").wait_for(timeout=30000)  # the page is rendered and connected
        # the first screen (1400×1000): upload, method, Run and the hint beside the canvas, nothing to scroll to
        canvas = a.locator("#canvas").bounding_box()
        for selector in ("#upload", "#method", "#run", "#hint"):
            box = a.locator(selector).bounding_box()
            assert box["x"] + box["width"] <= canvas["x"] and box["y"] + box["height"] <= 1000, selector
        assert not visible(a, "#gallery") and not visible(a, "#prompt")  # draggan: no results gallery, no prompt
        upload(a, face_png)  # Alice uploads a face...
        b.get_by_label("GAN seed").fill("27")  # ... while Bob generates the very same face with the GAN
        b.get_by_role("button", name="generate (GAN)").click()
        a.wait_for_function(READY, timeout=60000)
        b.wait_for_function(READY, timeout=60000)
        assert a.locator("img[src*='/file=']:visible").count() == 1  # the uploaded photo is shown once: the canvas
        b.get_by_label("GAN seed").fill("0")  # Bob moves on to another face
        b.get_by_role("button", name="generate (GAN)").click()
        hint_has(b, "image 0 from the DCGAN", timeout=60000)
        click_image(a, "#canvas", 32, 44, src.size)
        hint_has(a, "now click its target")
        click_image(b, "#canvas", 20, 20, (64, 64))
        hint_has(b, "now click its target")
        click_image(a, "#canvas", 32, 38, src.size)
        hint_has(a, "1 pair(s)")
        assert "handle 1: now click its target" in b.locator("#hint").inner_text()  # Bob's click is still his own
        shots = Path(SHOTS) if SHOTS else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        a.screenshot(path=str(shots / "before.png"), full_page=True)
        a.locator("#run").click()
        link = a.locator("#bundle a")
        link.wait_for(timeout=180000)
        a.screenshot(path=str(shots / "after.png"), full_page=True)
        assert "steps" in a.locator("#hint").inner_text()
        with a.expect_download() as dl:
            link.click()
        bundle = tmp_path / "bundle.zip"
        dl.value.save_as(bundle)
        z = zipfile.ZipFile(bundle)
        assert {"result.png", "result.json", "points.json", "source.png"} <= set(z.namelist())
        result = Image.open(io.BytesIO(z.read("result.png"))).convert("RGB")
        assert result.size == src.size
        assert np.abs(np.asarray(result, float) - np.asarray(src, float)).mean() > 0.5  # the edit changed it
        assert '"handles": [[32.0, 44.0]], "targets": [[32.0, 38.0]]' in z.read("points.json").decode()

        # Bob's mistakes are shown in his page, and the app keeps working
        b.locator("#run").click()  # a handle without a target
        b.wait_for_selector("text=has no target yet", timeout=30000)
        assert b.locator("text=has no target yet").count() == 1  # said once: in the status line, not on each panel
        assert b.get_by_text("Error", exact=True).count() == 0
        click_image(b, "#canvas", 20, 26, (64, 64))
        hint_has(b, "1 pair(s)")  # the next action replaced the error
        b.get_by_label("model: hub id").fill("/etc")  # a path outside the app's model folders: never read
        b.locator("#method input").fill("dragdiffusion")
        b.locator("#method input").press("Enter")
        b.locator("#run").click()
        b.wait_for_selector("text=other paths are not read", timeout=30000)
        b.get_by_label("model: hub id").fill("no-such-org/no-such-model")  # a hub id that cannot be loaded
        b.locator("#run").click()
        b.wait_for_selector("text=cannot load model 'no-such-org/no-such-model'", timeout=30000)
        shown = b.locator("#canvas img").get_attribute("src")
        upload(b, huge)  # an oversized upload
        b.wait_for_selector("text=the app takes images up to 2048 pixels", timeout=30000)
        assert b.locator("#canvas img").get_attribute("src") == shown  # the refused upload left his drag as it was
        b.get_by_label("model: hub id").fill("")
        b.locator("#method input").fill("draggan")
        b.locator("#method input").press("Enter")
        b.locator("#run").click()  # and his drag still runs
        b.locator("#bundle a").wait_for(timeout=180000)
        hint_has(b, "steps")
        b.locator("#method input").fill("luciddrag")  # a method with several results shows their gallery
        b.locator("#method input").press("Enter")
        b.wait_for_selector("#gallery", state="visible", timeout=10000)
        assert visible(b, "#prompt") and not visible(b, "#edit-prompt")
        b.get_by_label("model: hub id").fill("/etc")
        b.locator("#run").click()  # an error after a run: no stale "N steps" line beside it, no old result
        b.wait_for_selector("text=other paths are not read", timeout=30000)
        assert "steps" not in b.locator("#hint").inner_text() and b.locator("#bundle a").count() == 0
        browser.close()


def test_a_stylegan_pkl_from_the_model_folder_generates_by_seed_and_drags_with_draggan(oracle_pkl, tmp_path):
    """DragGAN's workflow in the page: pick a ``.pkl`` in the generator list (the app's model folder), generate by
    seed, click a handle and its target, Run ``draggan``: the edit runs on that generator's code for the seed."""
    from playwright.sync_api import sync_playwright

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(oracle_pkl, models / "tiny-stylegan2.pkl")
    app = App(tmp_path / "app.log", "--model-dir", models)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
            page.goto(app.url)
            page.locator("#run").wait_for(timeout=30000)
            page.locator("#generator input").fill("tiny-stylegan2.pkl")
            page.locator("#generator input").press("Enter")
            page.get_by_label("GAN seed").fill("3")
            page.get_by_role("button", name="generate (GAN)").click()
            hint_has(page, "image 3 from tiny-stylegan2.pkl", timeout=60000)
            page.wait_for_function(READY, timeout=60000)  # the generated face is shown, not only announced
            click_image(page, "#canvas", 44, 64, (128, 128))
            hint_has(page, "now click its target")
            click_image(page, "#canvas", 54, 64, (128, 128))
            hint_has(page, "1 pair(s)")
            page.get_by_text("Advanced").click()
            page.get_by_label("parameters, one NAME=VALUE").fill("drag_steps=3")
            page.locator("#run").click()
            link = page.locator("#bundle a")
            link.wait_for(timeout=180000)
            with page.expect_download() as dl:
                link.click()
            dl.value.save_as(tmp_path / "bundle.zip")
            browser.close()
    finally:
        app.stop()
    import json

    result = json.loads(zipfile.ZipFile(tmp_path / "bundle.zip").read("result.json"))
    assert result["method"] == "draggan" and result["info"]["generator"] == "stylegan2"
    assert result["info"]["source"] == "generated" and result["info"]["steps"] == 3  # the seed's code, no fit
    assert result["info"]["model"].endswith("tiny-stylegan2.pkl")
