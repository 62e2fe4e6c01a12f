"""Claim (f) in the browser: in `semcolor edit`, painting a region with another class changes that
region's colours to the new class's colours, and nothing else.

The editor drives a U-Net stand-in whose colours are a lookup of its map (``tests.oracle_models``), behind
a segmenter that predicts "sky" everywhere, so the right answer is known: before the stroke the photo is
sky blue; after painting "dusk" over a block, the block must be dusk purple (its pixels' colours nearest
dusk's mode among all the world's modes), the rest untouched. Whether a *trained* U-Net reads its map is
claim (f)'s measurement in the evaluate stage; this test checks the editor's loop end to end: stroke ->
edited map -> model input -> recolorized photo on screen. Screenshots go to test-artifacts/editor_steering/.
"""

from __future__ import annotations

import io
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from semcolor.color import rgb8_to_lab
from semcolor.editor.server import EditorApp, EditorHTTPServer, start_in_thread
from semcolor.inference import Colorizer
from semcolor.sources.synthetic import CLASS_NAMES
from tests.browser import ensure_chromium, launch
from tests.oracle_models import PALETTE, PaintsItsMap, PredictsOneClass, mode_table

pytestmark = [pytest.mark.server, pytest.mark.slow]
PHOTO = "colton-sturgeon--Izy1v9Roeg-unsplash.png"
REGION = (slice(60, 150), slice(190, 300))  # rows, columns of the painted block, map pixels
SKY, DUSK = CLASS_NAMES.index("sky"), CLASS_NAMES.index("dusk")


@pytest.fixture(scope="module")
def editor(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("steering")
    (root / "photos").mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, root / "photos" / "photo.png")
    colorizer = Colorizer(model=PaintsItsMap(mode_table()), model_name="sdc", segmenter=PredictsOneClass(SKY),
                          class_names=CLASS_NAMES)
    server = EditorHTTPServer(EditorApp(colorizer, [root / "photos" / "photo.png"], root / "out"), "127.0.0.1", 0)
    start_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def result_pixels(server) -> np.ndarray:
    with urllib.request.urlopen(server.url.rstrip("/") + "/api/photos/0/result.png", timeout=60) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def class_of_colour(rgb: np.ndarray) -> np.ndarray:
    """The class owning the world mode nearest each pixel's ab; -1 where the photo is so dark or bright
    (L < 20 or > 90) that keeping its lightness in sRGB left little chroma to judge."""
    lab = rgb8_to_lab(rgb)
    owner = PALETTE.mode_class[PALETTE.nearest_mode(lab[..., 1:])]
    return np.where((lab[..., 0] >= 20) & (lab[..., 0] <= 90), owner, -1)


def test_painting_dusk_over_sky_turns_that_region_dusk_and_leaves_the_rest(editor, repo_root, one_thread):
    from playwright.sync_api import sync_playwright

    folder = repo_root / "test-artifacts" / "editor_steering"
    folder.mkdir(parents=True, exist_ok=True)
    ensure_chromium()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(editor.url)
        page.wait_for_function("document.body.dataset.state === 'idle' && "
                               "Number(document.body.dataset.resultVersion || 0) > 0")
        version = int(page.evaluate("document.body.dataset.resultVersion"))
        page.screenshot(path=str(folder / "1_loaded.png"), full_page=True)
        before = result_pixels(editor)
        before_class = class_of_colour(before)
        judged = before_class >= 0
        assert np.mean(before_class[judged] == SKY) > 0.95  # all sky: what the segmenter said

        page.click(f"#classes li[data-class-id='{DUSK}']")
        page.eval_on_selector("#size", "e => { e.value = 30; e.dispatchEvent(new Event('input')); }")
        box = page.locator("#overlay").bounding_box()  # on screen: the view's zoom and offset included
        zoom = box["width"] / before.shape[1]

        def at(row: float, col: float) -> tuple[float, float]:  # a map pixel's position on the screen
            return box["x"] + col * zoom, box["y"] + row * zoom

        rows, cols = REGION
        page.mouse.move(*at(rows.start + 15, cols.start + 15))
        page.mouse.down()
        for y in range(rows.start + 15, rows.stop - 14, 10):  # zig-zag over the block
            page.mouse.move(*at(y, cols.start + 15), steps=3)
            page.mouse.move(*at(y, cols.stop - 15), steps=6)
        page.mouse.up()
        page.wait_for_function("document.body.dataset.state === 'idle' && "
                               f"Number(document.body.dataset.resultVersion || 0) > {version}")
        page.screenshot(path=str(folder / "2_painted_dusk.png"), full_page=True)
        edited = np.array(page.evaluate("Array.from(state.current)"), np.uint8).reshape(before.shape[:2])
        assert errors == []
        browser.close()

    after = result_pixels(editor)
    after_class = class_of_colour(after)
    painted = (edited == DUSK) & (after_class >= 0)
    assert (edited[REGION] == DUSK).mean() > 0.9 and painted.sum() > 2000  # the rest of the block is dark
    # the painted pixels' colours moved to dusk's mode; before, none of them was there
    assert np.mean(after_class[painted] == DUSK) > 0.95
    assert np.mean(before_class[painted] == DUSK) < 0.01
    # everything the stroke did not touch kept its colour exactly
    untouched = edited == SKY
    np.testing.assert_array_equal(after[untouched], before[untouched])
