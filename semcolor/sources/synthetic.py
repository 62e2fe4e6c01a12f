"""The synthetic semantic world (``synthetic``): a seeded, procedurally generated dataset in the exact VOC2012
layout, the offline default of ``make demo`` and a controlled benchmark for the papers' claims.

``write_world_archive(config, path)`` writes a plain tar that unpacks like ``VOCtrainval_11-May-2012.tar``::

    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,trainval,val}.txt   ids, one per line
    VOCdevkit/VOC2012/JPEGImages/<id>.jpg          sRGB JPEG, image_size x image_size, 4:4:4, jpeg_quality
    VOCdevkit/VOC2012/SegmentationClass/<id>.png   8-bit palette PNG, VOC colormap, value = class id,
                                                    255 = boundary band (``boundary_width`` px) / ignore
    VOCdevkit/VOC2012/semantic_world.json          the class spec (``class_spec``), shipped with the shards
    VOCdevkit/VOC2012/semantic_world_images.json   per image: its L jitter and its regions' drawn modes

so it goes through the same extract and convert code as the real VOC2012 (``Synthetic`` is a ``Voc2012``).
Ids are ``train_000000``... and ``val_000000``...; image ``i`` of a split depends only on (seed, split, i)
and the config, never on the other images, so changing ``num_train`` leaves the val images as they are.

The world, version 2 (``WORLD_CLASSES``; class id = index = VOC palette index). A *kind* is a gray
appearance (shape, position, texture, lightness statistics); most kinds have one class, three have two
gray-alike twins::

    id name        kind   shape, position                           gray texture             (a, b) modes: p
    0  background  ground below the horizon, fills the rest        low-frequency blotches   earth (12, 19): 1
    1  sky         sky    top band above a wavy horizon (22-42 %)   smooth vertical ramp     blue (7, -34): 1
    9  dusk        sky    (the same)                                (the same)               purple (25, -30): 1
    2  grass       grass  bottom band with a jagged top edge        vertical strokes         green (-35, 34): 1
    10 straw       grass  (the same)                                (the same)               yellow (5, 35): 1
    3  water       water  horizontal band, horizon to grass         horizontal ripples       teal (-18, -3): 1
    4  brick       wall   upright rectangle on the ground           brick grid, dark mortar  red-brown (29, 22): 1
    11 slate       wall   (the same)                                (the same)               blue-gray (-8, -18): 1
    5  tree        tree   blob of overlapping discs at the horizon  fine foliage noise       green (-28, 18): .7
                                                                                             autumn (22, 40): .3
    6  car         car    rounded rectangle with wheels, lower half window band, highlight   red (35, 4): .5
                                                                                             blue (9, -16): .3
                                                                                             yellow (-13, 34): .2
    7  fruit       fruit  small discs in clusters of 1-3, lower 2/3 spherical shading        red (42, -26): .6
                                                                                             green (-9, 17): .4
    8  stone       stone  irregular ellipse on the ground           speckle (sparse dots)    gray (0, 0): 1

Gray-alike twins (``GRAY_ALIKE_PAIRS``: sky/dusk, grass/straw, brick/slate): a region of a twinned kind is
drawn exactly as before (geometry, texture, mean L, jitter) and then becomes either twin with probability
``kind_share`` = 0.5, so the gray image carries nothing that tells the twins apart; the label map does. The
expected effect (``EXPECTED_EFFECT``, also in the spec): from gray alone a colorizer can be right on a twin
region at best half of the time, a colorizer that reads the true map nearly always, and repainting a twin
region with its twin in the map must move its colors to the twin's modes. The multimodal classes (tree,
car, fruit) have no twin, so their mode frequencies measure sampling, not twin ambiguity.

Modes: every pair of modes of a class is more than ``MIN_MODE_DISTANCE`` (30) apart in ab, every pair of
modes of different classes more than ``MIN_CLASS_MODE_DISTANCE`` (16; the closest pairs are about 17),
more than three times the largest chroma-noise offset (3 sqrt 2 = 4.2): assigning a color to its nearest
mode among all classes' modes names the class it belongs to (``semcolor.metrics.palette_accuracy``), and
no constant color can be right for more than one class. Both are checked at import. One class is
achromatic (stone: a = b = 0 exactly, no chroma noise). Each region draws one mode with the listed
probability; every pixel then gets chroma noise N(0, (chroma_noise / 2)^2) clipped to +-chroma_noise on a
and b (not for achromatic classes). The modes fill the part of the ab plane that is inside sRGB at every L
of ``lightness_limits`` (with the noise disc), hence their hues are only roughly those of their names.

Scene: sky (or dusk) above a wavy horizon; ground (background) below; water band with probability 0.45,
grass (or straw) band with probability 0.7; then min_objects..max_objects objects, each uniformly one of
wall (brick or slate), tree, stone, car, fruit cluster, painted in that order (later ones occlude earlier
ones). Sizes are fractions of the image side S, so the world looks the same at any ``image_size``.

Lightness (CIE L in [0, 100]), the same for every class so that gray level alone does not reveal the class:

1. each region draws its mean L uniformly from ``lightness_range`` (shared by all classes);
2. its texture is a kind-specific pattern normalized to zero mean and standard deviation
   ``texture_amplitude`` (3-4 L units) inside the region, clipped to +-``texture_headroom``, so pixel L
   lies in the pixel range P = [lo - headroom, hi + headroom];
3. one global jitter per image (it exercises Instance Normalization), applied to L only, never a or b:
   gamma ~ log-uniform(gamma_range), contrast ~ U(contrast_range), then
   brightness ~ U(-m, m) with m = min(max_brightness, half - contrast * (P_hi - P_lo) / 2), where
   [mid - half, mid + half] = ``lightness_limits``: the shift this image's contrast leaves free, so that
   low-contrast images can move far (strong jitter) and no pixel ever leaves ``lightness_limits``;
   t = (L - P_lo) / (P_hi - P_lo);  t = t ** gamma;  L = mid + contrast * (P_lo + t (P_hi - P_lo) - P_mid)
   + brightness, with P_mid = (P_lo + P_hi) / 2. Defaults: gamma in [0.65, 1.55], contrast in [0.5, 1.1],
   |brightness| <= 15 (at most 11 in practice: the L range leaves no more), L within [35, 75].

Gamut: every (L, a, b) the generator can produce lies inside sRGB. ``WorldConfig`` checks the worst case
(every class mode, plus a chroma-noise disc, over all of ``lightness_limits``) when it is built and raises
ValueError naming the fields otherwise; the generator checks every image again before quantization (Lab ->
sRGB -> Lab must come back within ``GAMUT_TOLERANCE``, i.e. nothing was clipped).

Measured by tests/test_sources_synthetic.py (seed 3, 220 images of 128 px, decoded JPEGs): a nearest-
centroid classifier on 7 gray-only region features reaches 0.91 balanced accuracy over the 9 kinds (chance
0.11), while between gray-alike twins it is at chance (0.50-0.53; 1.00 between a twin and another kind);
the best pixel-wise gray level -> class map scores 0.33, the same as the majority class (I(L; class) =
0.08 bit); region mode counts and twin shares fit the spec's probabilities (chi-square); the max Lab ->
sRGB -> Lab error of any generated pixel is ~1e-13.

Determinism: the same config gives the same archive bytes (sorted members, fixed mtime/uid/gid/mode, ustar
headers without pax timestamps) with the same numpy/scipy/Pillow/libjpeg versions.
"""

from __future__ import annotations

import functools
import io
import json
import math
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from semcolor.atomic import atomic_output
from semcolor.color import lab_to_srgb, srgb_to_lab
from semcolor.config import config_to_dict
from semcolor.metrics import Palette
from semcolor.sources.labels import encode_palette_png, missing_tree_error, voc_colormap
from semcolor.sources.base import IGNORE_INDEX, Archive, Item, Sample, SampleError
from semcolor.sources.voc2012 import Voc2012

WORLD_VERSION = 2  # bump when a change to the generator changes the images a config produces
ARCHIVE_FILENAME = "semantic_world.tar"
DEVKIT_DIR = "VOCdevkit/VOC2012"
SPLIT_DIR = "ImageSets/Segmentation"
SPEC_FILE = "semantic_world.json"
IMAGE_FACTS_FILE = "semantic_world_images.json"
SPLIT_CODES = {"train": 0, "val": 1}  # part of every image's random seed
GAMUT_TOLERANCE = 0.01  # max |Lab -> sRGB -> Lab| error, Lab units; a clip of ~1e-4 in sRGB exceeds it
TAR_MTIME = 1336694400  # 2012-05-11 00:00 UTC, the VOC2012 release day: any fixed value works
MIN_MODE_DISTANCE = 30.0  # ab distance every pair of modes of one class must exceed
# ab distance every pair of modes of DIFFERENT classes must exceed: > 3 x the largest chroma-noise offset
# (3 * sqrt 2 = 4.2), so every real pixel is nearer its own class's mode than any other (palette accuracy)
MIN_CLASS_MODE_DISTANCE = 16.0


# ----------------------------------------------------------------------------------------------
# The world's classes, as data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChromaMode:
    """One (a, b) color of a class, drawn for a region with probability ``p``. a, b in Lab units."""

    name: str
    a: float
    b: float
    p: float


@dataclass(frozen=True)
class WorldClass:
    """One class of the world: what it looks like in gray (shape, position, texture) and its colors.

    ``kind`` names the gray appearance (geometry, texture, position, lightness statistics). Classes of one
    kind are *gray-alike twins*: the generator draws a region of that kind and then its class with
    probability ``kind_share``, so nothing in the gray image tells the twins apart; only their colors and
    the label map do."""

    name: str
    kind: str
    shape: str
    position: str
    texture: str
    texture_amplitude: float  # standard deviation of the zero-mean L texture inside a region, L units
    modes: tuple[ChromaMode, ...]
    kind_share: float = 1.0  # probability that a region of this kind is this class

    @property
    def achromatic(self) -> bool:
        return all(mode.a == 0 and mode.b == 0 for mode in self.modes)


_SKY = ("band above a wavy horizon", "top 22-42 % of the image", "smooth vertical ramp, brighter toward the horizon")
_GRASS = ("band with a jagged top edge reaching the bottom", "bottom 14-32 % of the image",
          "vertical strokes (noise elongated along y)")
_WALL = ("upright rectangle (a wall)", "standing on the ground, may reach into the sky",
         "brick grid: rows of bricks offset by half a brick, dark mortar lines")
WORLD_CLASSES: tuple[WorldClass, ...] = (
    WorldClass(
        "background", "ground", "everything below the horizon not covered by another region", "lower part",
        "low-frequency blotches (smooth noise, scale ~S/24)", 3.5, (ChromaMode("earth", 12.0, 19.0, 1.0),),
    ),
    WorldClass("sky", "sky", *_SKY, 2.5, (ChromaMode("blue", 7.0, -34.0, 1.0),), kind_share=0.5),
    WorldClass("grass", "grass", *_GRASS, 4.0, (ChromaMode("green", -35.0, 34.0, 1.0),), kind_share=0.5),
    WorldClass(
        "water", "water", "full-width band with gently wavy edges", "between the horizon and the grass",
        "horizontal ripples (sinusoid along y, period ~S/22) with streaks along x", 4.0,
        (ChromaMode("teal", -18.0, -3.0, 1.0),),
    ),
    WorldClass("brick", "wall", *_WALL, 4.0, (ChromaMode("red-brown", 29.0, 22.0, 1.0),), kind_share=0.5),
    WorldClass(
        "tree", "tree", "blob of 4-7 overlapping discs", "crown around the horizon",
        "fine isotropic foliage noise on a coarse shading", 4.0,
        (ChromaMode("green", -28.0, 18.0, 0.7), ChromaMode("autumn", 22.0, 40.0, 0.3)),
    ),
    WorldClass(
        "car", "car", "rounded rectangle with two wheels", "lower half of the image",
        "dark window band, bright horizontal highlight, dark wheels", 4.0,
        (
            ChromaMode("red", 35.0, 4.0, 0.5),
            ChromaMode("blue", 9.0, -16.0, 0.3),
            ChromaMode("yellow", -13.0, 34.0, 0.2),
        ),
    ),
    WorldClass(
        "fruit", "fruit", "small discs in clusters of 1-3", "lower two thirds of the image",
        "spherical shading with a highlight at the upper left", 4.0,
        (ChromaMode("red", 42.0, -26.0, 0.6), ChromaMode("green", -9.0, 17.0, 0.4)),
    ),
    WorldClass(
        "stone", "stone", "irregular ellipse", "on the ground, lower half",
        "speckle: fine noise with sparse dark and bright dots", 4.0, (ChromaMode("gray", 0.0, 0.0, 1.0),),
    ),
    # the gray-alike twins of sky, grass and brick (same kind: same shape, position, texture, lightness)
    WorldClass("dusk", "sky", *_SKY, 2.5, (ChromaMode("purple", 25.0, -30.0, 1.0),), kind_share=0.5),
    WorldClass("straw", "grass", *_GRASS, 4.0, (ChromaMode("yellow", 5.0, 35.0, 1.0),), kind_share=0.5),
    WorldClass("slate", "wall", *_WALL, 4.0, (ChromaMode("blue-gray", -8.0, -18.0, 1.0),), kind_share=0.5),
)
_PALETTE = voc_colormap()  # the 256-entry VOC colormap every label PNG carries
CLASS_NAMES: tuple[str, ...] = tuple(world_class.name for world_class in WORLD_CLASSES)
CLASS_ID = {name: index for index, name in enumerate(CLASS_NAMES)}
KIND_CLASSES: dict[str, tuple[str, ...]] = {}  # kind -> its classes, in class-id order
for _world_class in WORLD_CLASSES:
    KIND_CLASSES.setdefault(_world_class.kind, ())
    KIND_CLASSES[_world_class.kind] += (_world_class.name,)
GRAY_ALIKE_PAIRS: tuple[tuple[str, ...], ...] = tuple(names for names in KIND_CLASSES.values() if len(names) > 1)
OBJECT_KINDS = ("wall", "tree", "stone", "car", "fruit")  # placed per image; also their painting order
EXPECTED_EFFECT = (
    "The gray image reveals each region's kind (shape, position, texture), so a colorizer can learn every "
    "class's colors from gray alone, except between gray-alike twins (sky/dusk, grass/straw, brick/slate): "
    "their gray appearance is drawn from the same distributions, so from gray alone a twin region is right "
    "at best with its kind_share (0.5) and the semantic map carries the missing bit. A model that reads the "
    "map (the U-Net given the true map) can reach palette accuracy near 1 on twin pixels, one that ignores "
    "it about 0.5; repainting a twin region with its twin class in the map must move its colors to the "
    "twin's modes (claim f). Segmenters on gray confuse the twins, segmenters on color do not (Table 3)."
)


def _check_world_classes() -> None:
    """The class table's own invariants (checked once at import: a typo here must not ship a world)."""
    for world_class in WORLD_CLASSES:
        total = sum(mode.p for mode in world_class.modes)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"class {world_class.name}: mode probabilities sum to {total}, not 1")
        for i, first in enumerate(world_class.modes):
            for second in world_class.modes[i + 1 :]:
                if math.hypot(first.a - second.a, first.b - second.b) <= MIN_MODE_DISTANCE:
                    raise ValueError(f"class {world_class.name}: modes {first.name}/{second.name} too close")
    for kind, names in KIND_CLASSES.items():
        total = sum(WORLD_CLASSES[CLASS_ID[name]].kind_share for name in names)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"kind {kind}: the kind_share of {', '.join(names)} sums to {total}, not 1")
    for i, first_class in enumerate(WORLD_CLASSES):
        for second_class in WORLD_CLASSES[i + 1 :]:
            for first in first_class.modes:
                for second in second_class.modes:
                    distance = math.hypot(first.a - second.a, first.b - second.b)
                    if distance <= MIN_CLASS_MODE_DISTANCE:
                        raise ValueError(
                            f"modes {first_class.name}/{first.name} and {second_class.name}/{second.name} are "
                            f"{distance:.1f} apart in ab, not more than {MIN_CLASS_MODE_DISTANCE}: nearest-mode "
                            "assignment (palette accuracy) could not tell them apart"
                        )


_check_world_classes()


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """params.yaml ``sources.synthetic`` (or wherever the download flow keeps it): the world's size and
    randomness. All lightness values are CIE L in [0, 100]; brightness in L units; sizes in pixels.

    The defaults give 600 train / 150 val images of 160 x 160 px (about 11 MB, generated in ~15 s on one
    core): enough for the demo models to learn class colors in minutes on 2 CPU cores, and 160 px
    resizes to both shard sizes (128, and 360 for the 352-crop recipe)."""

    seed: int = 0
    num_train: int = 600
    num_val: int = 150
    image_size: int = 160  # square side, px
    # Pillow quality, 4:4:4 chroma (no subsampling: thin regions keep their color). 100, not 95: at 95 the
    # coarser chroma quantization leaks into CIE L by an amount that depends on the hue, a fine L texture
    # that told gray-alike twins apart (sky/dusk at 0.99 balanced accuracy from gray features)
    jpeg_quality: int = 100
    boundary_width: int = 4  # px of 255 band across every region edge (about half on each side)
    lightness_range: tuple[float, float] = (45.0, 65.0)  # region mean L, shared by all classes
    texture_headroom: float = 8.0  # texture clipped to +- this many L units around the region mean
    chroma_noise: float = 3.0  # per-pixel a/b noise bound, Lab units (std chroma_noise / 2)
    # no pixel leaves this L range (gamut-checked); narrower than [30, 80] so that the sRGB gamut at every L
    # leaves room for 16 modes more than MIN_CLASS_MODE_DISTANCE apart
    lightness_limits: tuple[float, float] = (35.0, 75.0)
    contrast_range: tuple[float, float] = (0.5, 1.1)  # per-image L contrast factor about the mid gray
    max_brightness: float = 15.0  # per-image L offset bound, L units (further limited by lightness_limits)
    gamma_range: tuple[float, float] = (0.65, 1.55)  # per-image gamma on normalized L (log-uniform)
    min_objects: int = 2  # objects (brick, tree, stone, car, fruit cluster) per image, inclusive
    max_objects: int = 6

    def __post_init__(self) -> None:
        _check_range("seed", self.seed, 0, 2**63 - 1)
        _check_range("num_train", self.num_train, 1, 1_000_000)
        _check_range("num_val", self.num_val, 1, 1_000_000)
        _check_range("image_size", self.image_size, 64, 2048)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        _check_range("boundary_width", self.boundary_width, 0, self.image_size // 16)
        _check_interval("lightness_range", self.lightness_range, 0.0, 100.0)
        _check_range("texture_headroom", self.texture_headroom, 0.0, 50.0)
        _check_range("chroma_noise", self.chroma_noise, 0.0, 10.0)
        _check_interval("lightness_limits", self.lightness_limits, 0.0, 100.0)
        _check_interval("contrast_range", self.contrast_range, 0.05, 3.0)
        _check_range("max_brightness", self.max_brightness, 0.0, 50.0)
        _check_interval("gamma_range", self.gamma_range, 0.1, 10.0)
        _check_range("min_objects", self.min_objects, 0, 20)
        _check_range("max_objects", self.max_objects, self.min_objects, 20)
        pixel_low, pixel_high = self.pixel_lightness_bounds
        limit_low, limit_high = self.lightness_limits
        if self.contrast_range[1] * (pixel_high - pixel_low) > limit_high - limit_low:
            raise ValueError(
                f"contrast_range: max contrast {self.contrast_range[1]} stretches the pixel L range "
                f"[{pixel_low}, {pixel_high}] (lightness_range +- texture_headroom) beyond "
                f"lightness_limits {list(self.lightness_limits)}"
            )
        problem = _gamut_problem(limit_low, limit_high, self.chroma_noise)
        if problem:
            raise ValueError(
                f"lightness_limits/chroma_noise: {problem}; narrow lightness_limits (and with it the jitter)"
            )

    @property
    def pixel_lightness_bounds(self) -> tuple[float, float]:
        """[P_lo, P_hi]: the L range of pixels before the per-image jitter."""
        low, high = self.lightness_range
        return (low - self.texture_headroom, high + self.texture_headroom)

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def _check_interval(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"{name} must be [min, max] with {low} <= min <= max <= {high}, got {value!r}")


@functools.lru_cache(maxsize=32)
def _gamut_problem(low: float, high: float, chroma_noise: float) -> str:
    """'' if every class mode plus a chroma-noise disc stays in sRGB for every L in [low, high] (0.5 L
    steps), else what leaves it (the first offending class, mode and L)."""
    lightness = np.linspace(low, high, max(2, int(math.ceil((high - low) / 0.5)) + 1))
    angles = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    radius = chroma_noise * math.sqrt(2.0)  # the +-chroma_noise box's corners
    for world_class in WORLD_CLASSES:
        disc = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        offsets = np.zeros((1, 2)) if world_class.achromatic else np.concatenate([np.zeros((1, 2)), disc])
        for mode in world_class.modes:
            ab = np.array([mode.a, mode.b]) + offsets
            lab = np.concatenate(
                [np.repeat(lightness, len(ab))[:, None], np.tile(ab, (len(lightness), 1))], axis=-1
            )
            error = np.abs(srgb_to_lab(lab_to_srgb(lab)) - lab).max(axis=-1)
            if error.max() > GAMUT_TOLERANCE:
                worst = lab[int(error.argmax())]
                return (
                    f"class {world_class.name} mode {mode.name} leaves the sRGB gamut at "
                    f"L={worst[0]:.1f} (a={worst[1]:.1f}, b={worst[2]:.1f})"
                )
    return ""


# ----------------------------------------------------------------------------------------------
# The class spec
# ----------------------------------------------------------------------------------------------


def class_spec(config: WorldConfig) -> dict[str, Any]:
    """The world's JSON-serializable spec: config, lightness model, jitter, and per class its id, name,
    VOC palette color (RGB 0-255), shape/position/texture description, chroma modes ``[{"a", "b", "p"}]``
    (p sums to 1; the achromatic class has a = b = 0) with their names, and its region-mean L range."""
    classes = []
    for class_id, world_class in enumerate(WORLD_CLASSES):
        classes.append(
            {
                "id": class_id,
                "name": world_class.name,
                "kind": world_class.kind,
                "kind_share": world_class.kind_share,
                "gray_alike_twins": [name for name in KIND_CLASSES[world_class.kind] if name != world_class.name],
                "palette": [int(v) for v in _PALETTE[class_id]],
                "shape": world_class.shape,
                "position": world_class.position,
                "texture": world_class.texture,
                "texture_amplitude": world_class.texture_amplitude,
                "chroma_modes": [{"a": mode.a, "b": mode.b, "p": mode.p} for mode in world_class.modes],
                "mode_names": [mode.name for mode in world_class.modes],
                "multimodal": len(world_class.modes) > 1,
                "achromatic": world_class.achromatic,
                "chroma_noise": 0.0 if world_class.achromatic else config.chroma_noise,
                "lightness_range": list(config.lightness_range),
            }
        )
    return {
        "world": "semantic_world",
        "version": WORLD_VERSION,
        "config": config_to_dict(config),
        "image_size": [config.image_size, config.image_size],
        "ignore_index": IGNORE_INDEX,
        "boundary_width": config.boundary_width,
        "splits": {"train": config.num_train, "val": config.num_val},
        "class_names": list(CLASS_NAMES),
        "lightness": {
            "region_mean_range": list(config.lightness_range),
            "shared_by_all_classes": True,
            "pixel_range_before_jitter": list(config.pixel_lightness_bounds),
            "limits": list(config.lightness_limits),
        },
        "jitter": {
            "contrast_range": list(config.contrast_range),
            "max_brightness": config.max_brightness,
            "gamma_range": list(config.gamma_range),
            "gamma_distribution": "log-uniform",
            "brightness_distribution": "uniform in [-m, m], m = min(max_brightness, "
            "(limits_hi - limits_lo) / 2 - contrast * (P_hi - P_lo) / 2)",
            "formula": "t=(L-P_lo)/(P_hi-P_lo); t=t**gamma; "
            "L=(limits_lo+limits_hi)/2+contrast*(P_lo+t*(P_hi-P_lo)-(P_lo+P_hi)/2)+brightness",
            "applies_to": "L only",
        },
        "chroma_noise": {"distribution": "normal, std chroma_noise/2, clipped to +-chroma_noise, per pixel"},
        "min_mode_distance": {"same_class": MIN_MODE_DISTANCE, "different_classes": MIN_CLASS_MODE_DISTANCE},
        "gray_alike_pairs": [
            {
                "classes": list(names),
                "kind": WORLD_CLASSES[CLASS_ID[names[0]]].kind,
                "shares": [WORLD_CLASSES[CLASS_ID[name]].kind_share for name in names],
                "same": "shape, position, texture, texture amplitude, lightness statistics and jitter",
                "different": "chroma modes (more than min_mode_distance.different_classes apart)",
            }
            for names in GRAY_ALIKE_PAIRS
        ],
        "expected_effect": EXPECTED_EFFECT,
        "classes": classes,
    }


def class_modes(spec: Mapping[str, Any]) -> dict[int, np.ndarray]:
    """class id -> (M, 2) float array of the class's (a, b) modes, from a spec (``class_spec`` output, the
    tree's ``semantic_world.json`` or a shard manifest's ``world_spec``)."""
    return {
        int(entry["id"]): np.array([[mode["a"], mode["b"]] for mode in entry["chroma_modes"]], np.float64)
        for entry in spec["classes"]
    }


def palette_of(spec: Mapping[str, Any]) -> Palette:
    """The world's ``semcolor.metrics.Palette`` (every class's modes with their probabilities) from a spec."""
    classes = spec["classes"]
    return Palette.from_class_modes(
        class_modes(spec),
        {int(c["id"]): [float(m["p"]) for m in c["chroma_modes"]] for c in classes},
        num_classes=len(classes),
    )


def gray_alike_pairs_of(spec: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The spec's gray-alike twin pairs as class ids, e.g. [(1, 9), (2, 10), (4, 11)]; [] for a spec
    without twins (world version 1)."""
    ids = {c["name"]: int(c["id"]) for c in spec["classes"]}
    return [tuple(ids[name] for name in pair["classes"]) for pair in spec.get("gray_alike_pairs", [])]


# ----------------------------------------------------------------------------------------------
# Generation: layout (label geometry), textures, colors
# ----------------------------------------------------------------------------------------------


@dataclass
class _Region:
    """One drawn region: its instance value in the layout map, class and geometry (pixels)."""

    instance: int
    class_name: str
    kind: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # left, top, right, bottom
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class WorldImage:
    """One generated image before encoding.

    lab: float64 (S, S, 3), L in [0, 100], a/b in Lab units, in the sRGB gamut.
    label: uint8 (S, S), class id or 255 on the boundary band.
    instances: uint8 (S, S), the region each pixel belongs to (0 ... len(regions) - 1).
    facts: JSON-serializable jitter parameters and the visible regions' class, drawn mode and mean L."""

    image_id: str
    lab: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    facts: dict[str, Any]


def image_id(split: str, index: int) -> str:
    """The id of image ``index`` of ``split``: ``train_000042``."""
    return f"{split}_{index:06d}"


def world_ids(config: WorldConfig, split: str) -> list[str]:
    return [image_id(split, index) for index in range(config.split_size(split))]


def _rngs(config: WorldConfig, split: str, index: int) -> tuple[np.random.Generator, ...]:
    # Two independent streams: the layout/colors, and the jitter. Turning the jitter off therefore gives
    # the very same scene, which is what the jitter's test compares against.
    base = [config.seed, SPLIT_CODES[split], index]
    return np.random.default_rng(base + [0]), np.random.default_rng(base + [1])


def _wavy_edge(
    rng: np.random.Generator, size: int, mean_y: float, amplitude: float, step: float, roughness: float = 0.0
) -> list[tuple[float, float]]:
    """Points (x, y) from x = -1 to x = size along a sinusoid about ``mean_y`` plus optional jitter."""
    period = rng.uniform(0.5, 1.5) * size
    phase = rng.uniform(0, 2 * np.pi)
    xs = np.arange(-1.0, size + step, step)
    ys = mean_y + amplitude * np.sin(2 * np.pi * xs / period + phase)
    if roughness:
        ys = ys + rng.uniform(-roughness, roughness, size=xs.shape)
    return list(zip(xs.tolist(), ys.tolist()))


def _draw_layout(rng: np.random.Generator, config: WorldConfig) -> tuple[np.ndarray, list[_Region]]:
    """The instance map (uint8 (S, S), value = index into the regions) and its regions in painting order."""
    size = config.image_size
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    regions: list[_Region] = []

    def new_region(kind: str, box=(0.0, 0.0, 0.0, 0.0), **extra: float) -> int:
        regions.append(_Region(len(regions), _pick_class(rng, kind), kind, tuple(float(v) for v in box),
                               dict(extra)))
        return len(regions) - 1

    new_region("ground", (0, 0, size, size))  # instance 0 fills the canvas
    horizon = rng.uniform(0.22, 0.42) * size
    edge = _wavy_edge(rng, size, horizon, rng.uniform(0.01, 0.04) * size, max(2.0, size / 40))
    draw.polygon([(-1, -1), *edge, (size, -1)], fill=new_region("sky", (0, 0, size, horizon)))

    if rng.random() < 0.45:
        top = rng.uniform(horizon + 0.08 * size, 0.60 * size)
        bottom = top + rng.uniform(0.10, 0.22) * size
        upper = _wavy_edge(rng, size, top, 0.01 * size, max(2.0, size / 40))
        lower = _wavy_edge(rng, size, bottom, 0.01 * size, max(2.0, size / 40))
        draw.polygon(upper + lower[::-1], fill=new_region("water", (0, top, size, bottom)))
    if rng.random() < 0.7:
        top = rng.uniform(0.68, 0.86) * size
        blades = _wavy_edge(rng, size, top, 0.02 * size, max(1.0, size / 80), roughness=0.02 * size)
        grass = new_region("grass", (0, top, size, size))
        draw.polygon([(-1, size + 1), *blades, (size, size + 1)], fill=grass)

    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    chosen = sorted(rng.integers(0, len(OBJECT_KINDS), size=count).tolist())  # painting order
    for object_index in chosen:
        _draw_object(rng, draw, OBJECT_KINDS[object_index], size, horizon, new_region)
    return np.asarray(canvas, dtype=np.uint8), regions


def _pick_class(rng: np.random.Generator, kind: str) -> str:
    """The class of a new region of ``kind``: drawn by ``kind_share`` among gray-alike twins (one draw from
    the layout stream when the region is created; no geometry, texture or lightness draw depends on it)."""
    names = KIND_CLASSES[kind]
    if len(names) == 1:
        return names[0]
    shares = [WORLD_CLASSES[CLASS_ID[name]].kind_share for name in names]
    return names[int(rng.choice(len(names), p=shares))]


def _draw_object(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    kind: str,
    size: int,
    horizon: float,
    new_region: Callable[..., int],
) -> None:
    """Draw one object of ``kind`` (a fruit object is a cluster of 1-3 fruit regions)."""
    if kind == "wall":
        width, height = rng.uniform(0.2, 0.4) * size, rng.uniform(0.18, 0.35) * size
        bottom = rng.uniform(min(horizon + 0.05 * size, 0.75 * size), 0.75 * size)
        left = rng.uniform(-0.1 * size, size - 0.9 * width)
        box = (left, max(bottom - height, 0.0), left + width, bottom)
        draw.rectangle(box, fill=new_region("wall", box))
    elif kind == "tree":
        center_x = rng.uniform(0.0, 1.0) * size
        center_y = np.clip(rng.uniform(horizon - 0.1 * size, horizon + 0.05 * size), 0.1 * size, 0.6 * size)
        reach = 0.2 * size
        box = (center_x - reach, center_y - reach, center_x + reach, center_y + reach)
        instance = new_region("tree", box)
        for _ in range(int(rng.integers(4, 8))):
            radius = rng.uniform(0.05, 0.10) * size
            x, y = center_x + rng.normal(0, 0.07 * size), center_y + rng.normal(0, 0.05 * size)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=instance)
    elif kind == "stone":
        center_x = rng.uniform(0.05, 0.95) * size
        center_y = rng.uniform(max(horizon / size + 0.1, 0.5), 0.95) * size
        radius_x = rng.uniform(0.05, 0.1) * size
        radius_y = radius_x * rng.uniform(0.6, 0.85)
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        # Irregular outline: a smooth random radial profile (few harmonics) so stones are not discs.
        profile = 1 + sum(
            rng.uniform(-0.08, 0.08) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
        )
        xs = center_x + radius_x * profile * np.cos(angles)
        ys = center_y + radius_y * profile * np.sin(angles)
        points = list(zip(xs.tolist(), ys.tolist()))
        box = (center_x - radius_x, center_y - radius_y, center_x + radius_x, center_y + radius_y)
        draw.polygon(points, fill=new_region("stone", box))
    elif kind == "car":
        width = rng.uniform(0.22, 0.36) * size
        height = rng.uniform(0.35, 0.5) * width
        center_x, center_y = rng.uniform(0.05, 0.95) * size, rng.uniform(0.5, 0.88) * size
        box = (center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2)
        wheel = 0.22 * height
        instance = new_region("car", box)
        draw.rounded_rectangle(box, radius=0.3 * height, fill=instance)
        for wheel_x in (box[0] + 0.25 * width, box[2] - 0.25 * width):
            draw.ellipse((wheel_x - wheel, box[3] - wheel, wheel_x + wheel, box[3] + wheel), fill=instance)
    elif kind == "fruit":
        center_x, center_y = rng.uniform(0.05, 0.95) * size, rng.uniform(0.35, 0.95) * size
        for _ in range(int(rng.integers(1, 4))):
            radius = rng.uniform(0.04, 0.065) * size
            x, y = center_x + rng.uniform(-1.5, 1.5) * radius, center_y + rng.uniform(-1.0, 1.0) * radius
            box = (x - radius, y - radius, x + radius, y + radius)
            draw.ellipse(box, fill=new_region("fruit", box, radius=radius))
    else:  # pragma: no cover - OBJECT_KINDS lists exactly the branches above
        raise ValueError(f"unknown object kind {kind!r}")


class _Textures:
    """Per-image texture fields (float, arbitrary scale; normalized per region later), evaluated on the
    window (a pair of slices) around one region. Noise fields are drawn once per class and image over the
    whole image and shared by that class's regions."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng = rng
        self.size = size
        self.y, self.x = np.mgrid[0:size, 0:size].astype(np.float64)
        self._noise: dict[str, np.ndarray] = {}

    def noise(self, key: str, sigma: tuple[float, float]) -> np.ndarray:
        """White noise smoothed with a Gaussian of ``sigma`` = (sigma_y, sigma_x) px, scaled to unit std."""
        if key not in self._noise:
            white = self.rng.standard_normal((self.size, self.size))
            smooth = ndimage.gaussian_filter(white, sigma=sigma, mode="reflect", truncate=3.0)
            self._noise[key] = smooth / smooth.std()
        return self._noise[key]

    def field(self, region: _Region, window: tuple[slice, slice]) -> np.ndarray:
        size, y, x = self.size, self.y[window], self.x[window]
        left, top, right, bottom = region.box
        name = region.kind  # gray-alike twins share their kind's texture (and its noise fields)
        if name == "ground":
            return self.noise("background", (size / 24, size / 24))[window]
        if name == "sky":
            return y  # brighter toward the horizon, like a real sky
        if name == "grass":
            return self.noise("grass", (size / 32, max(0.6, size / 250)))[window]
        if name == "water":
            wavelength = size / 22
            wobble = 0.2 * wavelength * np.sin(2 * np.pi * x / (size / 3) + self.rng.uniform(0, 2 * np.pi))
            ripples = np.sin(2 * np.pi * (y + wobble) / wavelength)
            return ripples + 0.35 * self.noise("water", (max(0.6, size / 250), size / 25))[window]
        if name == "wall":
            brick_height = max(4.0, size / 20)
            mortar = max(1.0, round(size / 110))
            row = np.floor((y - top) / brick_height)
            shifted = x - left + (row % 2) * brick_height  # alternate rows offset by half a brick (2 h wide)
            column = np.floor(shifted / (2 * brick_height))
            per_brick = np.sin(row * 12.9898 + column * 78.233) * 0.5  # fixed per-brick shade, no rng draw
            in_mortar = (((y - top) % brick_height) < mortar) | ((shifted % (2 * brick_height)) < mortar)
            return np.where(in_mortar, -2.5, per_brick) + 0.1 * self.noise("brick", (0.7, 0.7))[window]
        if name == "tree":
            fine = self.noise("tree_fine", (max(0.5, size / 200),) * 2)[window]
            return fine + 0.5 * self.noise("tree_coarse", (size / 40,) * 2)[window]
        if name == "car":
            width, height = right - left, bottom - top
            relative_y = (y - top) / max(height, 1.0)
            inset = 0.18 * width
            window_band = (relative_y > 0.12) & (relative_y < 0.45) & (x > left + inset) & (x < right - inset)
            highlight = np.abs(relative_y - 0.58) < 0.05
            wheels = relative_y > 1.0 - 0.12
            shade = np.where(window_band, -2.5, 0.0) + np.where(highlight, 2.0, 0.0)
            return shade - np.where(wheels, 3.0, 0.0)
        if name == "fruit":
            radius = region.extra["radius"]
            center_x, center_y = (left + right) / 2, (top + bottom) / 2
            return -np.hypot(x - (center_x - 0.35 * radius), y - (center_y - 0.35 * radius)) / radius
        if name == "stone":
            fine = self.noise("stone", (0.6, 0.6))[window]
            dots = self.noise("stone_dots", (0.3, 0.3))[window]  # nearly white: sparse extreme dots
            return fine + np.where(dots < -2.0, -4.0, 0.0) + np.where(dots > 2.2, 4.0, 0.0)
        raise ValueError(f"no texture for kind {name!r}")  # pragma: no cover


def _lightness_jitter(rng: np.random.Generator, config: WorldConfig) -> dict[str, float]:
    """One image's (gamma, contrast, brightness), drawn as the module docstring says (step 3)."""
    gamma_low, gamma_high = config.gamma_range
    gamma = math.exp(rng.uniform(math.log(gamma_low), math.log(gamma_high)))
    contrast = rng.uniform(*config.contrast_range)
    pixel_low, pixel_high = config.pixel_lightness_bounds
    limit_low, limit_high = config.lightness_limits
    free = (limit_high - limit_low) / 2 - contrast * (pixel_high - pixel_low) / 2
    reach = min(config.max_brightness, max(free, 0.0))
    brightness = rng.uniform(-reach, reach)
    return {"contrast": float(contrast), "brightness": float(brightness), "gamma": float(gamma)}


def apply_lightness_jitter(
    lightness: np.ndarray, jitter: Mapping[str, float], config: WorldConfig
) -> np.ndarray:
    """The per-image L jitter (module docstring, step 3) applied to L values in the pixel range.
    ``jitter``: {"contrast", "brightness", "gamma"} as in ``metadata["world"]["jitter"]``."""
    low, high = config.pixel_lightness_bounds
    normalized = np.clip((lightness - low) / (high - low), 0.0, 1.0) ** jitter["gamma"]
    limits_mid = (config.lightness_limits[0] + config.lightness_limits[1]) / 2
    centered = normalized * (high - low) - (high - low) / 2
    return limits_mid + jitter["contrast"] * centered + jitter["brightness"]


def boundary_band(instances: np.ndarray, width: int) -> np.ndarray:
    """Bool (H, W): pixels within about ``width``/2 px of a change of instance (a band ``width`` px wide
    across every region edge, like VOC's void outlines); the image border is not an edge."""
    if width <= 0:
        return np.zeros(instances.shape, dtype=bool)
    window = width + 1
    return ndimage.maximum_filter(instances, size=window, mode="nearest") != ndimage.minimum_filter(
        instances, size=window, mode="nearest"
    )


def render_image(config: WorldConfig, split: str, index: int) -> WorldImage:
    """Generate image ``index`` of ``split`` (pure computation, deterministic in (config, split, index))."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_CODES)}")
    layout_rng, jitter_rng = _rngs(config, split, index)
    instances, regions = _draw_layout(layout_rng, config)
    size = config.image_size
    textures = _Textures(layout_rng, size)
    lightness = np.zeros((size, size))
    chroma = np.zeros((size, size, 2))
    chromatic = np.ones((size, size), dtype=bool)
    class_map = np.zeros((size, size), dtype=np.uint8)
    mean_low, mean_high = config.lightness_range
    # Each region is processed inside its bounding window only (find_objects: label k + 1 -> index k).
    windows = ndimage.find_objects(instances.astype(np.int32) + 1, max_label=len(regions))
    region_facts = []
    for region, window in zip(regions, windows):
        world_class = WORLD_CLASSES[CLASS_ID[region.class_name]]
        # Draws happen for every region, visible or not, so the random stream never depends on occlusion.
        mean = float(layout_rng.uniform(mean_low, mean_high))
        mode_index = int(layout_rng.choice(len(world_class.modes), p=[m.p for m in world_class.modes]))
        if window is None:  # fully covered by later regions
            continue
        mask = instances[window] == region.instance
        values = textures.field(region, window)[mask]
        spread = values.std()
        normalized = (values - values.mean()) / spread if spread > 1e-9 else np.zeros_like(values)
        headroom = config.texture_headroom
        offsets = np.clip(normalized * world_class.texture_amplitude, -headroom, headroom)
        mode = world_class.modes[mode_index]
        lightness[window][mask] = mean + offsets
        chroma[window][mask] = (mode.a, mode.b)
        chromatic[window][mask] = not world_class.achromatic
        class_map[window][mask] = CLASS_ID[region.class_name]
        region_facts.append(
            {
                "class": region.class_name,
                "mode": mode_index,
                "lightness": round(mean, 4),
                "pixels": int(mask.sum()),
            }
        )
    if config.chroma_noise > 0:
        noise = layout_rng.normal(0.0, config.chroma_noise / 2, size=(size, size, 2))
        chroma += np.clip(noise, -config.chroma_noise, config.chroma_noise) * chromatic[..., None]
    jitter = _lightness_jitter(jitter_rng, config)
    lightness = apply_lightness_jitter(lightness, jitter, config)
    label = np.where(boundary_band(instances, config.boundary_width), np.uint8(IGNORE_INDEX), class_map)
    facts = {"jitter": {k: round(v, 6) for k, v in jitter.items()}, "regions": region_facts}
    lab = np.concatenate([lightness[..., None], chroma], axis=-1)
    return WorldImage(image_id(split, index), lab, label.astype(np.uint8), instances, facts)


def to_srgb_checked(lab: np.ndarray, where: str = "") -> np.ndarray:
    """Float sRGB in [0, 1] of ``lab`` (..., 3), after checking that no channel needed clipping.

    ``lab_to_srgb`` clips, so a clipped channel lands exactly on 0 or 1: only those pixels are suspects,
    and they pass if Lab -> sRGB -> Lab comes back within ``GAMUT_TOLERANCE`` (an in-gamut color that is
    exactly black or white in one channel does). RuntimeError naming ``where`` otherwise."""
    rgb = lab_to_srgb(lab)
    # lab_to_srgb also zeroes a negative Z (b > 200 (L + 16) / 116) before converting: suspects too.
    negative_z = lab[..., 2] > 200.0 * (lab[..., 0] + 16.0) / 116.0
    suspects = ((rgb <= 0.0) | (rgb >= 1.0)).any(axis=-1) | negative_z
    if suspects.any():
        error = float(np.abs(srgb_to_lab(rgb[suspects]) - lab[suspects]).max())
        if error > GAMUT_TOLERANCE:
            raise RuntimeError(f"{where}: a color leaves the sRGB gamut (round-trip error {error:.4f})")
    return rgb


def encode_world_image(world_image: WorldImage, jpeg_quality: int) -> tuple[bytes, bytes]:
    """(JPEG bytes, palette PNG bytes) of one generated image. RuntimeError if a color left the gamut
    (WorldConfig's check makes that a bug, not a config problem)."""
    rgb8 = np.rint(to_srgb_checked(world_image.lab, world_image.image_id) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb8, mode="RGB").save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue(), encode_palette_png(world_image.label, _PALETTE)


# ----------------------------------------------------------------------------------------------
# The archive
# ----------------------------------------------------------------------------------------------


class _DeterministicTar:
    """Adds members with fixed metadata (mtime, uid/gid 0, no user names, 0644 files / 0755 dirs) and
    checks that they arrive in sorted order, so the archive's bytes depend on its contents only."""

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.last = ""

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        if name <= self.last:
            raise RuntimeError(f"tar members out of order: {name!r} after {self.last!r}")
        self.last = name
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, TAR_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))

    def add_file(self, name: str, data: bytes) -> None:
        self.tar.addfile(self._info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _generate(config: WorldConfig, progress: bool) -> Iterator[tuple[str, bytes, bytes, dict[str, Any]]]:
    total = config.num_train + config.num_val
    with tqdm(total=total, desc="synthetic world", unit="img", disable=not progress) as bar:
        for split in ("train", "val"):  # "train_*" < "val_*": generation order is sorted order
            for index in range(config.split_size(split)):
                world_image = render_image(config, split, index)
                jpeg, png = encode_world_image(world_image, config.jpeg_quality)
                bar.update(1)
                yield world_image.image_id, jpeg, png, world_image.facts


def write_world_archive(config: WorldConfig, path: str | Path, progress: bool = True) -> Path:
    """Generate the world and write it as a VOC2012-layout tar at ``path`` (atomically: a temporary file
    beside it, renamed when complete). The same config gives the same bytes. Returns ``path``.

    Labels (small PNGs) are held in memory until the JPEGs are written, since tar members go in sorted
    order (JPEGImages < SegmentationClass); JPEGs stream straight into the archive."""
    path = Path(path)
    with atomic_output(path) as raw:
        with tarfile.open(
            fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT  # ustar: no pax headers, no atime/ctime
        ) as tar:
            writer = _DeterministicTar(tar)
            for directory in ("VOCdevkit", DEVKIT_DIR, f"{DEVKIT_DIR}/ImageSets"):
                writer.add_dir(directory)
            writer.add_dir(f"{DEVKIT_DIR}/{SPLIT_DIR}")
            ids = {split: world_ids(config, split) for split in ("train", "val")}
            ids["trainval"] = sorted(ids["train"] + ids["val"])
            for split in ("train", "trainval", "val"):
                listing = "".join(f"{image}\n" for image in ids[split]).encode("ascii")
                writer.add_file(f"{DEVKIT_DIR}/{SPLIT_DIR}/{split}.txt", listing)
            writer.add_dir(f"{DEVKIT_DIR}/JPEGImages")
            labels: dict[str, bytes] = {}
            facts: dict[str, Any] = {}
            for key, jpeg, png, image_facts in _generate(config, progress):
                writer.add_file(f"{DEVKIT_DIR}/JPEGImages/{key}.jpg", jpeg)
                labels[key] = png
                facts[key] = image_facts
            writer.add_dir(f"{DEVKIT_DIR}/SegmentationClass")
            for key in sorted(labels):
                writer.add_file(f"{DEVKIT_DIR}/SegmentationClass/{key}.png", labels[key])
            writer.add_file(f"{DEVKIT_DIR}/{SPEC_FILE}", _json_bytes(class_spec(config)))
            writer.add_file(f"{DEVKIT_DIR}/{IMAGE_FACTS_FILE}", _json_bytes(facts))
    return path


# ----------------------------------------------------------------------------------------------
# The source
# ----------------------------------------------------------------------------------------------


class Synthetic(Voc2012):
    """The synthetic world read from its extracted tree (``root`` = ``data/extracted/synthetic``), exactly
    as VOC2012 is. Nothing is downloaded: ``generated`` tells the download flow to call
    ``write_world_archive(WorldConfig(...), data/raw/synthetic/semantic_world.tar)`` and extract that.

    Samples carry ``metadata["world"]``: the image's L jitter and its regions' classes and drawn modes.
    ``spec`` is the class spec (``class_spec``) read from the tree; ``describe()`` includes it, so the shard
    manifest carries the modes the metrics need."""

    name: ClassVar[str] = "synthetic"
    archives: ClassVar[tuple[Archive, ...]] = ()
    generated: ClassVar[bool] = True
    archive_filename: ClassVar[str] = ARCHIVE_FILENAME
    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES

    def _read_json(self, file_name: str) -> Any:
        path = self.devkit_root / file_name
        if not path.is_file():
            raise missing_tree_error(path, f"the {self.name} world file {file_name}", self.download_hint)
        return json.loads(path.read_text(encoding="utf-8"))

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The class spec written with the world (``semantic_world.json``)."""
        return self._read_json(SPEC_FILE)

    @functools.cached_property
    def image_facts(self) -> dict[str, Any]:
        """id -> {"jitter": {...}, "regions": [...]} (``semantic_world_images.json``)."""
        return self._read_json(IMAGE_FACTS_FILE)

    def load(self, item: Item) -> Sample:
        sample = super().load(item)
        facts = self.image_facts.get(item.original_id)
        if facts is None:
            path = self.devkit_root / IMAGE_FACTS_FILE
            raise SampleError(item.key, f"no entry for {item.original_id!r} in {path}")
        sample.metadata["world"] = facts
        return sample

    @property
    def class_modes(self) -> dict[int, np.ndarray]:
        """class id -> (M, 2) array of its (a, b) modes, the form ``semcolor.metrics`` takes."""
        return class_modes(self.spec)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "world_spec": self.spec}
