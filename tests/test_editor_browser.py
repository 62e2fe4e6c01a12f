"""The semantic editor end to end in real headless Chromium: paint, see the colors follow, undo, save.

Screenshots of every step go to ``test-artifacts/editor/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.editor.server import EditorApp, EditorHTTPServer, start_in_thread
from semcolor.inference import load_colorizer
from tests.browser import ensure_chromium, launch
from tests.inference_models import NUM_CLASSES, save_sdc_pair

pytestmark = [pytest.mark.server, pytest.mark.slow]
PHOTO = "colton-sturgeon--Izy1v9Roeg-unsplash.png"
REGION = (slice(60, 150), slice(190, 300))  # rows, columns of the painted block, display pixels


@pytest.fixture(scope="module")
def editor(tmp_path_factory, shared_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("browser")
    (root / "photos").mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, root / "photos" / "photo.png")
    app = EditorApp(load_colorizer(*save_sdc_pair(root)), [root / "photos" / "photo.png"], root / "out")
    server = EditorHTTPServer(app, "127.0.0.1", 0)
    start_in_thread(server)
    yield server, root
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(editor, repo_root):
    from playwright.sync_api import sync_playwright

    ensure_chromium()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors
        yield page
        browser.close()


def get(server, path: str) -> bytes:
    with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=60) as response:
        return response.read()


def result_pixels(server) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(get(server, "/api/photos/0/result.png")))).astype(int)


def wait_for_result(page, after_version: int) -> int:
    page.wait_for_function(
        "document.body.dataset.state === 'idle' && "
        f"Number(document.body.dataset.resultVersion || 0) > {after_version}")
    return int(page.evaluate("document.body.dataset.resultVersion"))


def shot(page, repo_root, name: str) -> None:
    folder = repo_root / "test-artifacts" / "editor"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_paint_undo_redo_save(editor, page, repo_root):
    server, root = editor
    page.goto(server.url)
    version = wait_for_result(page, 0)
    shot(page, repo_root, "1_loaded")
    assert page.locator("#classes li").count() == NUM_CLASSES
    before = result_pixels(server)
    predicted = np.frombuffer(get(server, "/api/photos/0/map"), np.uint8).reshape(352, 352)
    # paint with the class least present in the region, so nearly every pixel there changes
    target = int(np.argmin(np.bincount(predicted[REGION].ravel(), minlength=NUM_CLASSES)))
    page.click(f"#classes li[data-class-id='{target}']")
    page.eval_on_selector("#size", "e => { e.value = 30; e.dispatchEvent(new Event('input')); }")

    box = page.locator("#overlay").bounding_box()
    assert (box["width"], box["height"]) == (352, 352)
    rows, cols = REGION
    page.mouse.move(box["x"] + cols.start + 15, box["y"] + rows.start + 15)
    page.mouse.down()
    for y in range(rows.start + 15, rows.stop - 14, 10):  # zig-zag over the block
        page.mouse.move(box["x"] + cols.start + 15, box["y"] + y, steps=3)
        page.mouse.move(box["x"] + cols.stop - 15, box["y"] + y, steps=6)
    page.mouse.up()
    version = wait_for_result(page, version)
    shot(page, repo_root, "2_painted")

    current = np.array(page.evaluate("Array.from(state.current)"), np.uint8).reshape(352, 352)
    changed = current != predicted
    assert (current[REGION] == target).mean() > 0.9
    assert not changed[:40].any() and not changed[:, :170].any()  # the brush stayed inside its block
    after = result_pixels(server)
    diff = np.abs(after - before).sum(-1)
    far = np.ones_like(diff, bool)
    far[rows.start - 40:rows.stop + 40, cols.start - 40:cols.stop + 40] = False
    assert diff[REGION].mean() > 10 * max(diff[far].mean(), 0.1), (diff[REGION].mean(), diff[far].mean())

    page.click("#undo")
    version = wait_for_result(page, version)
    shot(page, repo_root, "3_undone")
    np.testing.assert_array_equal(result_pixels(server), before)
    np.testing.assert_array_equal(np.array(page.evaluate("Array.from(state.current)")), predicted.ravel())

    page.click("#redo")
    version = wait_for_result(page, version)
    np.testing.assert_array_equal(result_pixels(server), after)

    # the eraser brings back the predicted map under its stroke (and recolorizes)
    page.check("input[name=tool][value=eraser]")
    page.mouse.move(box["x"] + cols.start + 15, box["y"] + rows.start + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + cols.stop - 15, box["y"] + rows.start + 20, steps=6)
    page.mouse.up()
    version = wait_for_result(page, version)
    erased = np.array(page.evaluate("Array.from(state.current)"), np.uint8).reshape(352, 352)
    np.testing.assert_array_equal(erased[rows.start + 15:rows.start + 25, cols.start + 15:cols.stop - 15],
                                  predicted[rows.start + 15:rows.start + 25, cols.start + 15:cols.stop - 15])
    assert (erased[rows.stop - 20:rows.stop - 15, cols.start + 20:cols.stop - 20] == target).all()
    page.click("#undo")
    version = wait_for_result(page, version)
    np.testing.assert_array_equal(result_pixels(server), after)

    # the eyedropper picks the painted class back up
    page.click("#classes li[data-class-id='0']" if target != 0 else "#classes li[data-class-id='1']")
    page.check("input[name=tool][value=eyedropper]")
    page.mouse.click(box["x"] + (cols.start + cols.stop) / 2, box["y"] + rows.stop - 20)
    assert page.get_attribute("#classes li.selected", "data-class-id") == str(target)

    # opacity 0 hides the overlay
    page.eval_on_selector("#opacity", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
    alpha = page.evaluate(
        "document.getElementById('overlay').getContext('2d').getImageData(100, 100, 1, 1).data[3]")
    assert alpha == 0
    page.eval_on_selector("#opacity", "e => { e.value = 55; e.dispatchEvent(new Event('input')); }")

    page.click("#save")
    page.wait_for_function(
        "document.body.dataset.saved !== undefined && document.body.dataset.state === 'idle'")
    shot(page, repo_root, "4_saved")
    written = json.loads(page.evaluate("document.body.dataset.saved"))
    out = root / "out"
    assert written == {"image": str(out / "photo_color.png"), "map": str(out / "photo_map.png")}
    saved_image = np.asarray(Image.open(written["image"])).astype(int)
    saved_map = np.asarray(Image.open(written["map"]))
    np.testing.assert_array_equal(saved_map, current)  # the edited map, exactly (photo is 352 px)
    np.testing.assert_array_equal(saved_image, after)  # full resolution == display resolution here
    assert page.errors == []
