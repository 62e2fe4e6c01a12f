"""The semantic editor end to end in real headless Chromium, checked as a person sees it: the photo as large
as the window allows, swatches in each class's typical color, the shortcuts on screen, a brush circle at the
brush's size, zoom and pan, paint / undo / redo / erase / eyedrop with the colors following, and a layout
that stays put after Save.

Screenshots of every step go to ``test-artifacts/editor/`` (kept by CI as artifacts); the checks below read
the pixels of those screenshots where a person would look.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from semcolor.class_colors import typical_class_colors
from semcolor.editor.server import EditorApp, EditorHTTPServer, start_in_thread
from semcolor.inference import load_colorizer
from tests.browser import ensure_chromium, launch
from tests.inference_models import CLASS_NAMES, NUM_CLASSES, save_sdc_pair

pytestmark = [pytest.mark.server, pytest.mark.slow]
PHOTO = "colton-sturgeon--Izy1v9Roeg-unsplash.png"
SIZE = 352  # the display size of this photo (its long side at the U-Net's working size)
REGION = (slice(60, 150), slice(190, 300))  # rows, columns of the painted block, display pixels
VIEWPORT = {"width": 1200, "height": 800}


@pytest.fixture(scope="module")
def editor(tmp_path_factory, shared_dir, one_thread):
    root = tmp_path_factory.mktemp("browser")
    (root / "photos").mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, root / "photos" / "photo.png")
    app = EditorApp(load_colorizer(*save_sdc_pair(root)), [root / "photos" / "photo.png"], root / "out")
    server = EditorHTTPServer(app, "127.0.0.1", 0)
    start_in_thread(server)
    yield server, root
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def page(editor, repo_root):
    from playwright.sync_api import sync_playwright

    ensure_chromium()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport=VIEWPORT)
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


def shot(page, repo_root, name: str) -> np.ndarray:
    """Screenshot of the window (saved for people) as an RGB array (for the checks)."""
    folder = repo_root / "test-artifacts" / "editor"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def box_of(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def screen_point(box: dict, row: float, col: float) -> tuple[float, float]:
    """Where display pixel (row, col) of the photo is on the screen, at the current zoom."""
    return box["x"] + col * box["width"] / SIZE, box["y"] + row * box["height"] / SIZE


def test_what_a_person_sees_paint_zoom_undo_save(editor, page, repo_root):
    server, root = editor
    page.goto(server.url)
    version = wait_for_result(page, 0)
    loaded = shot(page, repo_root, "1_loaded")

    # the photo fills its pane (larger than its 352 px), the colorized result beside it at the same size
    box = box_of(page, "#overlay")
    result_box = box_of(page, "#result")
    pane = box_of(page, "#edit-view")
    assert box["width"] > 1.2 * SIZE and abs(box["width"] - box["height"]) < 1
    assert box["width"] >= min(pane["width"], pane["height"]) - 2  # as large as the pane allows
    assert abs(result_box["width"] - box["width"]) < 1 and result_box["x"] > box["x"] + box["width"]
    assert box["x"] + box["width"] <= VIEWPORT["width"] and box["y"] + box["height"] <= VIEWPORT["height"]
    center = loaded[int(box["y"] + box["height"] / 2), int(result_box["x"] + result_box["width"] / 2)]
    assert center.std() > 0 or center.sum() > 0  # the result is painted there

    # the swatches show each class's typical color (the API's typical_color), visible in the screenshot
    session = json.loads(get(server, "/api/session"))
    typical = typical_class_colors(CLASS_NAMES)
    assert [c["typical_color"] for c in session["classes"]] == [list(t.color) for t in typical]
    sky = CLASS_NAMES.index("sky")
    swatch = box_of(page, f"#classes li[data-class-id='{sky}'] .swatch")
    seen = loaded[int(swatch["y"] + swatch["height"] / 2), int(swatch["x"] + swatch["width"] / 2)]
    np.testing.assert_allclose(seen, typical[sky].color, atol=3)
    assert seen[2] > seen[0] + 40  # sky is blue, not the VOC palette's maroon
    assert page.locator("#classes li").count() == NUM_CLASSES
    assert page.locator(f"#classes li[data-class-id='{sky}']").inner_text().startswith("sky")

    # the shortcuts are on screen
    shortcuts = page.locator("#shortcuts")
    assert shortcuts.is_visible()
    for text in ("Ctrl+Z", "Ctrl+Y", "Ctrl+S", "Space+drag"):
        assert text in shortcuts.inner_text().replace(" ", "").replace("\n", "") or text in shortcuts.inner_text()

    before = result_pixels(server)
    predicted = np.frombuffer(get(server, "/api/photos/0/map"), np.uint8).reshape(SIZE, SIZE)
    # paint with the class least present in the region, so nearly every pixel there changes
    target = int(np.argmin(np.bincount(predicted[REGION].ravel(), minlength=NUM_CLASSES)))
    page.click(f"#classes li[data-class-id='{target}']")
    page.eval_on_selector("#size", "e => { e.value = 30; e.dispatchEvent(new Event('input')); }")

    # the brush circle: the brush's footprint at this zoom, centred on the pointer
    scale = box["width"] / SIZE
    page.mouse.move(*screen_point(box, 100, 100))
    brush = box_of(page, "#brush")
    assert page.locator("#brush").is_visible()
    assert abs(brush["width"] - 30 * scale) < 1.5 and abs(brush["height"] - 30 * scale) < 1.5
    x, y = screen_point(box, 100, 100)
    assert abs(brush["x"] + brush["width"] / 2 - x) < 1.5 and abs(brush["y"] + brush["height"] / 2 - y) < 1.5
    circle = shot(page, repo_root, "2_brush")
    ring = circle[int(brush["y"] + brush["height"] / 2), int(brush["x"]) : int(brush["x"] + 3)]
    assert ring.max() > 200  # the white ring is drawn at its left edge

    rows, cols = REGION
    page.mouse.move(*screen_point(box, rows.start + 15, cols.start + 15))
    page.mouse.down()
    for row in range(rows.start + 15, rows.stop - 14, 10):  # zig-zag over the block
        page.mouse.move(*screen_point(box, row, cols.start + 15), steps=3)
        page.mouse.move(*screen_point(box, row, cols.stop - 15), steps=6)
    page.mouse.up()
    version = wait_for_result(page, version)
    painted_shot = shot(page, repo_root, "3_painted")

    current = np.array(page.evaluate("Array.from(state.current)"), np.uint8).reshape(SIZE, SIZE)
    changed = current != predicted
    assert (current[REGION] == target).mean() > 0.9
    assert not changed[:40].any() and not changed[:, :170].any()  # the brush stayed inside its block
    after = result_pixels(server)
    diff = np.abs(after - before).sum(-1)
    far = np.ones_like(diff, bool)
    far[rows.start - 40:rows.stop + 40, cols.start - 40:cols.stop + 40] = False
    assert diff[REGION].mean() > 10 * max(diff[far].mean(), 0.1), (diff[REGION].mean(), diff[far].mean())
    # on screen, the painted block took on the target class's typical color (over the gray photo)
    sx, sy = screen_point(box, (rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    target_color = np.array(typical[target].color)
    was, now = loaded[int(sy), int(sx)], painted_shot[int(sy), int(sx)]
    assert np.abs(now - target_color).sum() < np.abs(was - target_color).sum()

    page.click("#undo")
    version = wait_for_result(page, version)
    shot(page, repo_root, "4_undone")
    np.testing.assert_array_equal(result_pixels(server), before)
    np.testing.assert_array_equal(np.array(page.evaluate("Array.from(state.current)")), predicted.ravel())

    page.keyboard.press("Control+y")  # the shortcut shown on screen
    version = wait_for_result(page, version)
    np.testing.assert_array_equal(result_pixels(server), after)

    # zoom in: the photo grows about the pane's centre; painting still lands on the right pixels
    page.keyboard.press("+")
    page.keyboard.press("+")
    zoomed = box_of(page, "#overlay")
    assert zoomed["width"] == pytest.approx(box["width"] * 1.25 ** 2, rel=0.01)
    assert page.locator("#zoom-value").inner_text() == f"{round(zoomed['width'] / SIZE * 100)}%"
    assert abs(box_of(page, "#result")["width"] - zoomed["width"]) < 1  # both panes zoom together
    shot(page, repo_root, "5_zoomed")
    # pan with the right button: the photo follows the drag
    start = screen_point(zoomed, 200, 200)
    page.mouse.move(*start)
    page.mouse.down(button="right")
    page.mouse.move(start[0] - 60, start[1] - 40, steps=4)
    page.mouse.up(button="right")
    panned = box_of(page, "#overlay")
    assert panned["x"] == pytest.approx(zoomed["x"] - 60, abs=1.5)
    assert panned["y"] == pytest.approx(zoomed["y"] - 40, abs=1.5)
    shot(page, repo_root, "6_panned")
    np.testing.assert_array_equal(np.array(page.evaluate("Array.from(state.current)"), np.uint8), current.ravel())

    # the eraser brings back the predicted map under its stroke (and recolorizes), at this zoom
    page.keyboard.press("e")
    assert page.is_checked("input[name=tool][value=eraser]")
    page.mouse.move(*screen_point(panned, rows.start + 20, cols.start + 15))
    page.mouse.down()
    page.mouse.move(*screen_point(panned, rows.start + 20, cols.stop - 15), steps=6)
    page.mouse.up()
    version = wait_for_result(page, version)
    erased = np.array(page.evaluate("Array.from(state.current)"), np.uint8).reshape(SIZE, SIZE)
    np.testing.assert_array_equal(erased[rows.start + 15:rows.start + 25, cols.start + 15:cols.stop - 15],
                                  predicted[rows.start + 15:rows.start + 25, cols.start + 15:cols.stop - 15])
    assert (erased[rows.stop - 20:rows.stop - 15, cols.start + 20:cols.stop - 20] == target).all()
    page.keyboard.press("Control+z")
    version = wait_for_result(page, version)
    np.testing.assert_array_equal(result_pixels(server), after)

    # back to the fitted view; the eyedropper picks the painted class back up
    page.keyboard.press("0")
    assert box_of(page, "#overlay") == pytest.approx(box, abs=0.5)
    page.click("#classes li[data-class-id='0']" if target != 0 else "#classes li[data-class-id='1']")
    page.keyboard.press("i")
    page.mouse.click(*screen_point(box, rows.stop - 20, (cols.start + cols.stop) / 2))
    assert page.get_attribute("#classes li.selected", "data-class-id") == str(target)

    # opacity 0 hides the overlay
    page.eval_on_selector("#opacity", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
    alpha = page.evaluate(
        "document.getElementById('overlay').getContext('2d').getImageData(100, 100, 1, 1).data[3]")
    assert alpha == 0
    page.eval_on_selector("#opacity", "e => { e.value = 55; e.dispatchEvent(new Event('input')); }")

    # Save: the long status message stays on one line and nothing on the page moves
    layout = {name: box_of(page, name) for name in ("header", "#status", "#overlay", "#result", "#classes")}
    page.click("#save")
    page.wait_for_function(
        "document.body.dataset.saved !== undefined && document.body.dataset.state === 'idle'")
    shot(page, repo_root, "7_saved")
    assert page.locator("#status").inner_text().startswith("saved photo_color.png and photo_map.png in ")
    assert {name: box_of(page, name) for name in layout} == layout
    written = json.loads(page.evaluate("document.body.dataset.saved"))
    out = root / "out"
    assert written == {"image": str(out / "photo_color.png"), "map": str(out / "photo_map.png")}
    saved_image = np.asarray(Image.open(written["image"])).astype(int)
    saved_map = np.asarray(Image.open(written["map"]))
    np.testing.assert_array_equal(saved_map, current)  # the edited map, exactly (photo is 352 px)
    np.testing.assert_array_equal(saved_image, after)  # full resolution == display resolution here
    assert page.errors == []
