"""What each class will look like: a typical sRGB color per class, for the editor's swatches and overlay.

Three sources, best first, each color tagged with where it came from:

- ``world``: the synthetic semantic world's own chroma modes (``semcolor.sources.synthetic.WORLD_CLASSES``)
  at the middle of its shared lightness range: the colors a model trained on that world learns. A class
  with several modes (tree: green or autumn) lists every mode, most probable first.
- ``name``: for real label sets (VOC, COCO-stuff, PASCAL-Context), a typical color of the thing a class
  names (sky blue, grass green, sand beige), from a small table of words; a guess from the name, not from
  a model.
- ``label``: classes without a typical color (a car, a chair: any color) keep their label-palette color
  (PASCAL VOC colormap), marked so that a viewer does not take it for a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semcolor.color import lab_to_rgb8_keep_lightness

WORLD_LIGHTNESS = 55.0  # the middle of the synthetic world's region lightness range (42..68)

# word in a class name -> typical CIE Lab (L in [0, 100], a/b in Lab units); first matching word wins
NAME_COLORS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("sky", (72.0, -4.0, -28.0)), ("cloud", (88.0, 0.0, -4.0)), ("snow", (94.0, 0.0, -2.0)),
    ("grass", (58.0, -32.0, 40.0)), ("tree", (45.0, -22.0, 28.0)), ("bush", (45.0, -22.0, 28.0)),
    ("plant", (50.0, -28.0, 32.0)), ("leaves", (50.0, -26.0, 34.0)), ("leaf", (50.0, -26.0, 34.0)),
    ("field", (62.0, -16.0, 38.0)), ("moss", (48.0, -18.0, 34.0)), ("vegetation", (50.0, -26.0, 32.0)),
    ("water", (50.0, -12.0, -18.0)), ("sea", (48.0, -10.0, -26.0)), ("river", (50.0, -12.0, -14.0)),
    ("lake", (50.0, -12.0, -18.0)), ("sand", (76.0, 4.0, 24.0)), ("dirt", (48.0, 8.0, 22.0)),
    ("mud", (40.0, 6.0, 18.0)), ("earth", (45.0, 8.0, 20.0)), ("ground", (50.0, 4.0, 14.0)),
    ("road", (50.0, 0.0, 2.0)), ("pavement", (58.0, 0.0, 3.0)), ("rock", (52.0, 1.0, 6.0)),
    ("stone", (55.0, 0.0, 4.0)), ("mountain", (50.0, -2.0, -6.0)), ("brick", (45.0, 28.0, 24.0)),
    ("wood", (48.0, 12.0, 30.0)), ("person", (66.0, 14.0, 20.0)), ("skin", (66.0, 14.0, 20.0)),
    ("fruit", (55.0, 30.0, 40.0)), ("flower", (60.0, 40.0, 10.0)), ("building", (60.0, 2.0, 8.0)),
    ("wall", (70.0, 1.0, 8.0)), ("ceiling", (86.0, 0.0, 4.0)), ("floor", (55.0, 6.0, 16.0)),
)


@dataclass(frozen=True)
class ClassColor:
    """``color``: the typical sRGB uint8 color; ``modes``: every typical color (several for a multimodal
    world class), most probable first; ``source``: ``world``, ``name`` or ``label`` (see the module)."""

    color: tuple[int, int, int]
    modes: tuple[tuple[int, int, int], ...]
    source: str


def _rgb(lab: Sequence[float]) -> tuple[int, int, int]:
    pixel = lab_to_rgb8_keep_lightness(np.array([[lab]], dtype=np.float64))[0, 0]
    return tuple(int(v) for v in pixel)


def _world_colors(class_names: Sequence[str]) -> list[ClassColor] | None:
    from semcolor.sources.synthetic import CLASS_NAMES, WORLD_CLASSES

    if tuple(class_names) != CLASS_NAMES:
        return None
    colors = []
    for world_class in WORLD_CLASSES:
        modes = sorted(world_class.modes, key=lambda mode: -mode.p)
        rgb = tuple(_rgb((WORLD_LIGHTNESS, mode.a, mode.b)) for mode in modes)
        colors.append(ClassColor(rgb[0], rgb, "world"))
    return colors


# names of "everything else" classes: no typical color, whatever words they contain (background: ground)
NO_TYPICAL_COLOR = ("background", "unlabeled", "unlabelled", "void", "other", "things", "stuff")


def _name_color(name: str) -> tuple[float, float, float] | None:
    words = name.lower().replace("-", " ").replace("_", " ").split()
    if not words or words[0] in NO_TYPICAL_COLOR:
        return None
    for word, lab in NAME_COLORS:
        if any(word in part for part in words):  # compound label names too: pottedplant, sky-other
            return lab
    return None


def typical_class_colors(class_names: Sequence[str]) -> list[ClassColor]:
    """One ClassColor per class name, in order (see the module docstring for the sources)."""
    world = _world_colors(class_names)
    if world is not None:
        return world
    from semcolor.inference import class_colors

    palette = class_colors(len(class_names))
    colors = []
    for index, name in enumerate(class_names):
        lab = _name_color(name)
        if lab is None:
            rgb = tuple(int(v) for v in palette[index])
            colors.append(ClassColor(rgb, (rgb,), "label"))
        else:
            rgb = _rgb(lab)
            colors.append(ClassColor(rgb, (rgb,), "name"))
    return colors
