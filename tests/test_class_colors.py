"""Typical class colors for the editor's swatches: the synthetic world's modes, names, the label palette."""

from __future__ import annotations

import numpy as np

from semcolor.app.class_colors import typical_class_colors
from semcolor.color import rgb8_to_lab
from semcolor.app.inference import class_colors
from semcolor.data.sources.synthetic import CLASS_NAMES, WORLD_CLASSES


def lab(rgb) -> np.ndarray:
    return rgb8_to_lab(np.array([[rgb]], np.uint8))[0, 0]


def test_the_synthetic_world_shows_its_own_modes_most_probable_first():
    colors = typical_class_colors(CLASS_NAMES)
    assert [c.source for c in colors] == ["world"] * len(CLASS_NAMES)
    for color, world_class in zip(colors, WORLD_CLASSES):
        assert len(color.modes) == len(world_class.modes) and color.color == color.modes[0]
        best = max(world_class.modes, key=lambda mode: mode.p)
        measured = lab(color.color)
        assert abs(measured[0] - 55.0) < 1.5  # at the world's middle lightness
        assert np.hypot(measured[1] - best.a, measured[2] - best.b) < 4.0
    sky, grass = lab(colors[CLASS_NAMES.index("sky")].color), lab(colors[CLASS_NAMES.index("grass")].color)
    assert sky[2] < -15 and grass[1] < -20  # sky blue, grass green: not the VOC palette (sky maroon)


def test_real_label_sets_by_name_and_the_palette_for_the_rest():
    names = ["background", "aeroplane", "sky-other-merged", "grass-merged", "pottedplant", "person", "car"]
    colors = typical_class_colors(names)
    assert [c.source for c in colors] == ["label", "label", "name", "name", "name", "name", "label"]
    palette = class_colors(len(names))
    assert colors[0].color == tuple(int(v) for v in palette[0])  # "background" has no typical color
    assert colors[6].color == tuple(int(v) for v in palette[6])
    assert lab(colors[2].color)[2] < -15 and lab(colors[3].color)[1] < -20
