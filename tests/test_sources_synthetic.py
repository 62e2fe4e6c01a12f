"""The synthetic semantic world: layout, spec, and each promised property measured on a generated sample.

One world (160 train / 60 val images at 128 px) is written as a tar, extracted by the real extraction code
and read back through the ``Synthetic`` source; most statistics below are computed from the decoded JPEGs
and label PNGs, as any consumer of the data sees them. Thresholds are stated in each test's docstring.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tarfile

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from semcolor.color import lab_to_srgb, rgb8_to_lab, srgb_to_lab
from semcolor.config import ConfigError, load_config
from semcolor.extract import safe_extract
from semcolor.sources import get_source
from semcolor.sources.labels import voc_colormap
from semcolor.sources.synthetic import (
    CLASS_NAMES,
    GAMUT_TOLERANCE,
    GRAY_ALIKE_PAIRS,
    MIN_CLASS_MODE_DISTANCE,
    WORLD_CLASSES,
    Synthetic,
    WorldConfig,
    apply_lightness_jitter,
    class_modes,
    class_spec,
    render_image,
    to_srgb_checked,
    write_world_archive,
)

SAMPLE_CONFIG = WorldConfig(seed=3, num_train=160, num_val=60, image_size=128)
MIN_COMPONENT_PIXELS = 25  # connected labeled pieces smaller than this are too small to measure


@dataclasses.dataclass
class Component:
    """One connected labeled region of a decoded sample, with what the tests measure on it."""

    split: str
    class_id: int
    mean_ab: np.ndarray  # (2,)
    features: np.ndarray  # gray-only features


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Synthetic:
    base = tmp_path_factory.mktemp("world")
    archive = write_world_archive(SAMPLE_CONFIG, base / "raw" / "semantic_world.tar", progress=False)
    root = safe_extract(archive, base / "extracted" / "synthetic", progress=False)
    return get_source("synthetic", root)


@pytest.fixture(scope="module")
def decoded(world) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """split -> [(Lab float (H, W, 3) of the decoded JPEG, label uint8 (H, W))]."""
    return {
        split: [(rgb8_to_lab(sample.image), sample.label) for sample in world.samples(split)]
        for split in ("train", "val")
    }


@pytest.fixture(scope="module")
def rendered():
    """The sample's images as generated (before JPEG): Lab floats, labels and the instance map."""
    return [
        render_image(SAMPLE_CONFIG, split, index)
        for split, count in (("train", SAMPLE_CONFIG.num_train), ("val", SAMPLE_CONFIG.num_val))
        for index in range(count)
    ]


@pytest.fixture(scope="module")
def components(decoded) -> list[Component]:
    found = []
    for split, pairs in decoded.items():
        for lab, label in pairs:
            for class_id in np.unique(label[label != 255]):
                pieces, count = ndimage.label(label == class_id)
                for index in range(1, count + 1):
                    pixels = pieces == index
                    if pixels.sum() >= MIN_COMPONENT_PIXELS:
                        mean_ab = lab[pixels, 1:].mean(axis=0)
                        features = gray_features(lab[..., 0], pixels)
                        found.append(Component(split, int(class_id), mean_ab, features))
    return found


def gray_features(lightness: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Shape, position and texture of one region from its gray level only, insensitive to the per-image
    contrast/brightness jitter (texture enters as ratios)."""
    size = lightness.shape[0]
    ys, xs = np.nonzero(pixels)
    height, width = np.ptp(ys) + 1, np.ptp(xs) + 1

    def mean_step(axis: int) -> float:
        inside = pixels[:, 1:] & pixels[:, :-1] if axis == 1 else pixels[1:, :] & pixels[:-1, :]
        steps = np.abs(np.diff(lightness, axis=axis))[inside]
        return (steps.mean() if steps.size else 0.0) + 1e-3

    step_x, step_y = mean_step(1), mean_step(0)
    values = lightness[pixels]
    spread = values.std() + 1e-3
    return np.array(
        [
            ys.mean() / size,  # position
            math.log(pixels.sum() / size**2),  # size
            pixels.sum() / (height * width),  # fill of the bounding box: discs, rectangles, blobs, bands
            math.log(width / height),  # elongation
            math.log(step_x / step_y),  # stroke / ripple orientation
            math.log((step_x + step_y) / spread),  # fine vs coarse texture
            np.mean(np.abs(values - np.median(values)) > 2.5 * spread),  # speckle: share of outliers
        ]
    )


# ----------------------------------------------------------------------------------------------
# Layout: exactly the VOC2012 tree, read by the real extract code and the Voc2012 reader
# ----------------------------------------------------------------------------------------------


def test_archive_unpacks_into_the_voc2012_layout_and_reads_back(world):
    devkit = world.root / "VOCdevkit" / "VOC2012"
    split_lists = sorted(p.name for p in (devkit / "ImageSets" / "Segmentation").iterdir())
    assert split_lists == ["train.txt", "trainval.txt", "val.txt"]
    train, val = world.list_items("train"), world.list_items("val")
    assert len(train) == 160 and len(val) == 60
    trainval = (devkit / "ImageSets/Segmentation/trainval.txt").read_text().split()
    assert trainval == sorted(item.key for item in train + val)
    assert len(list((devkit / "JPEGImages").glob("*.jpg"))) == 220
    assert len(list((devkit / "SegmentationClass").glob("*.png"))) == 220

    with Image.open(world.label_path(val[0].key)) as label_png:
        assert label_png.mode == "P"
        palette = np.array(label_png.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(palette, voc_colormap())
    with Image.open(world.image_path(val[0].key)) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (128, 128)

    sample = world.load(val[0])
    assert sample.image.shape == (128, 128, 3) and sample.label.shape == (128, 128)
    assert set(np.unique(sample.label)) <= set(range(len(CLASS_NAMES))) | {255}
    assert sample.metadata["source"] == "synthetic" and sample.metadata["original_size"] == [128, 128]
    assert set(sample.metadata["world"]["jitter"]) == {"contrast", "brightness", "gamma"}


def test_boundary_band_separates_every_region_and_is_boundary_width_wide(decoded):
    """No two 4-neighbours carry different classes (255 covers every edge, also between two regions of
    one class), and the band measured across the horizon is boundary_width +- 1 px wide."""
    runs = []
    for _, label in decoded["val"]:
        for a, b in ((label[:, 1:], label[:, :-1]), (label[1:, :], label[:-1, :])):
            labeled = (a != 255) & (b != 255)
            assert np.all(a[labeled] == b[labeled])
        for column in label.T:  # going down from the sky, the first run of 255 is the horizon's band
            void = np.flatnonzero(column == 255)
            if len(void) and column[0] == CLASS_NAMES.index("sky"):
                runs.append(len(np.split(void, np.flatnonzero(np.diff(void) > 1) + 1)[0]))
    assert abs(np.median(runs) - SAMPLE_CONFIG.boundary_width) <= 1
    band_share = np.mean([np.mean(label == 255) for _, label in decoded["val"]])
    assert 0.02 < band_share < 0.3


def test_source_attributes_spec_and_description(world):
    assert Synthetic.name == "synthetic" and Synthetic.archives == () and Synthetic.generated is True
    assert world.class_names == CLASS_NAMES and world.num_classes == len(CLASS_NAMES)
    assert world.spec == json.loads(json.dumps(class_spec(SAMPLE_CONFIG)))
    description = world.describe()
    assert description["source"] == "synthetic" and description["class_names"] == list(CLASS_NAMES)
    assert description["world_spec"]["config"]["seed"] == 3
    modes = world.class_modes
    assert sorted(modes) == list(range(len(CLASS_NAMES)))
    assert modes[CLASS_NAMES.index("car")].shape == (3, 2)


def test_missing_tree_names_the_file_and_the_command(tmp_path):
    source = Synthetic(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"semantic_world\.json.*dvc repro download@synthetic"):
        source.spec
    with pytest.raises(FileNotFoundError, match=r"train\.txt.*dvc repro download@synthetic"):
        source.list_items("train")


# ----------------------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------------------


def test_spec_lists_classes_modes_and_lightness():
    spec = json.loads(json.dumps(class_spec(WorldConfig())))
    classes = spec["classes"]
    assert len(classes) >= 8 and [c["name"] for c in classes] == list(CLASS_NAMES)
    assert [c["id"] for c in classes] == list(range(len(classes)))
    assert [c["palette"] for c in classes] == voc_colormap(len(classes)).tolist()
    for c in classes:
        assert math.isclose(sum(m["p"] for m in c["chroma_modes"]), 1.0)
        assert c["lightness_range"] == spec["lightness"]["region_mean_range"]  # shared by all
    multimodal = [c for c in classes if len(c["chroma_modes"]) > 1]
    assert 2 <= len(multimodal) < len(classes) / 2  # most classes have one mode
    for c in multimodal:
        modes = class_modes(spec)[c["id"]]
        gaps = np.linalg.norm(modes[:, None] - modes[None], axis=-1)[np.triu_indices(len(modes), 1)]
        assert gaps.min() > 30, c["name"]
    achromatic = [c for c in classes if c["achromatic"]]
    assert achromatic and all(m["a"] == m["b"] == 0 for c in achromatic for m in c["chroma_modes"])
    # modes of different classes are far apart relative to the chroma noise (palette accuracy needs it)
    modes = class_modes(spec)
    for first in range(len(classes)):
        for second in range(first + 1, len(classes)):
            gaps = np.linalg.norm(modes[first][:, None] - modes[second][None], axis=-1)
            assert gaps.min() > MIN_CLASS_MODE_DISTANCE >= 3 * spec["config"]["chroma_noise"] * math.sqrt(2)
    # gray-alike twins: documented, same kind and gray description, shares summing to 1, no multimodal twin
    pairs = spec["gray_alike_pairs"]
    assert [p["classes"] for p in pairs] == [["sky", "dusk"], ["grass", "straw"], ["brick", "slate"]]
    by_name = {c["name"]: c for c in classes}
    for pair in pairs:
        first, second = (by_name[name] for name in pair["classes"])
        for key in ("kind", "shape", "position", "texture", "texture_amplitude", "lightness_range"):
            assert first[key] == second[key], key
        assert first["gray_alike_twins"] == [second["name"]] and sum(pair["shares"]) == 1.0
        assert not first["multimodal"] and not second["multimodal"]
    assert "semantic map carries the missing bit" in spec["expected_effect"]


# ----------------------------------------------------------------------------------------------
# Property 1: classes are recognizable from gray alone
# ----------------------------------------------------------------------------------------------


KIND_OF = {CLASS_NAMES.index(c.name): c.kind for c in WORLD_CLASSES}


def _nearest_centroid_balanced_accuracy(components, label_of) -> tuple[float, list[float]]:
    """Fit a nearest-centroid classifier on the train regions' gray features (standardized), score it on
    the val regions: balanced accuracy and the recall per label. ``label_of(class_id)`` is the target."""
    train = [c for c in components if c.split == "train"]
    val = [c for c in components if c.split == "val"]
    features = np.array([c.features for c in train])
    center, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    train_labels = np.array([label_of(c.class_id) for c in train])
    labels = sorted(set(train_labels.tolist()))
    centroids = np.array([((features[train_labels == k] - center) / scale).mean(axis=0) for k in labels])
    val_features = (np.array([c.features for c in val]) - center) / scale
    predicted = np.array(labels)[np.argmin(((val_features[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    truth = np.array([label_of(c.class_id) for c in val])
    recalls = [float(np.mean(predicted[truth == k] == k)) for k in labels if (truth == k).any()]
    return float(np.mean(recalls)), recalls


def test_gray_only_region_features_recognize_the_kinds(components):
    """A nearest-centroid classifier on gray-only region features (position, shape, texture ratios), fit on
    train regions and scored on val regions, recognizes the 9 kinds (twins merged): balanced accuracy >= 0.6,
    against 1/9 = 0.11 for guessing."""
    balanced_accuracy, recalls = _nearest_centroid_balanced_accuracy(components, KIND_OF.get)
    print(f"gray-only region classifier over kinds: balanced accuracy {balanced_accuracy:.3f}; "
          f"recall per kind {np.round(recalls, 2).tolist()}")
    assert len(recalls) == len(set(KIND_OF.values())) == 9
    assert balanced_accuracy >= 0.6


@pytest.mark.parametrize("pair", GRAY_ALIKE_PAIRS, ids="/".join)
def test_gray_alike_twins_cannot_be_told_apart_from_gray(components, pair):
    """Between the two classes of a gray-alike pair the same gray-feature classifier is at chance: balanced
    accuracy <= 0.62 (chance 0.5; about 60 val regions per pair, so +-0.07 is sampling noise). Control: the
    same classifier between the pair's kind and a kind of similar geometry (sky vs water bands, grass vs
    water bands, wall vs car objects) is >= 0.75, so the features would show a difference; and the twins'
    region mean colors are far apart (their modes differ)."""
    twins = [CLASS_NAMES.index(name) for name in pair]
    control_kind = {"sky": "water", "grass": "water", "wall": "car"}[KIND_OF[twins[0]]]
    control = [twins[0], next(k for k, kind in KIND_OF.items() if kind == control_kind)]
    scores = {}
    for name, classes in (("twins", twins), ("control", control)):
        chosen = [c for c in components if c.class_id in classes]
        scores[name], _ = _nearest_centroid_balanced_accuracy(chosen, lambda class_id: class_id)
    colors = [np.mean([c.mean_ab for c in components if c.class_id == k], axis=0) for k in twins]
    print(f"{'/'.join(pair)}: twins {scores['twins']:.3f}, control vs {control_kind} {scores['control']:.3f}, "
          f"mean ab {np.round(colors, 1).tolist()}")
    assert scores["twins"] <= 0.62
    assert scores["control"] >= 0.75
    assert np.linalg.norm(colors[0] - colors[1]) > MIN_CLASS_MODE_DISTANCE


# ----------------------------------------------------------------------------------------------
# Property 2: class-conditional chroma, one mode per region, drawn with the spec's probabilities
# ----------------------------------------------------------------------------------------------


def test_region_colors_sit_on_their_class_modes(components, world):
    """Measured on the decoded JPEGs: every labeled region's mean (a, b) lies within 4 of one of its
    class's modes (JPEG and the chroma noise move it by about 1); achromatic regions stay within 1.5 of 0."""
    for spec_class in world.spec["classes"]:
        modes = world.class_modes[spec_class["id"]]
        means = np.array([c.mean_ab for c in components if c.class_id == spec_class["id"]])
        assert len(means) >= 30, spec_class["name"]
        distances = np.linalg.norm(means[:, None] - modes[None], axis=-1).min(axis=1)
        assert distances.max() < 4.0, spec_class["name"]
        if spec_class["achromatic"]:
            assert np.abs(means).max() < 1.5


def test_modes_are_drawn_per_region_with_the_spec_probabilities(rendered, world):
    """Per region (one instance of the generator, measured from its rendered pixels): the nearest mode of
    its mean color, counted over all sample images, fits the spec's probabilities (chi-square p > 0.001)."""
    spec_classes = world.spec["classes"]
    modes = world.class_modes
    counts = {c["id"]: np.zeros(len(c["chroma_modes"]), int) for c in spec_classes}
    for world_image in rendered:
        for instance in np.unique(world_image.instances):
            inside = (world_image.instances == instance) & (world_image.label != 255)
            if not inside.any():
                continue
            (class_id,) = np.unique(world_image.label[inside])
            mean_ab = world_image.lab[inside, 1:].mean(axis=0)
            counts[class_id][np.linalg.norm(modes[class_id] - mean_ab, axis=1).argmin()] += 1
    for spec_class in (c for c in spec_classes if len(c["chroma_modes"]) > 1):
        observed = counts[spec_class["id"]]
        probabilities = np.array([m["p"] for m in spec_class["chroma_modes"]])
        _, p_value = stats.chisquare(observed, probabilities * observed.sum())
        print(f"{spec_class['name']}: regions per mode {observed.tolist()}, spec p {probabilities.tolist()}, "
              f"chi-square p-value {p_value:.3f}")
        assert observed.sum() >= 100 and p_value > 0.001, spec_class["name"]
    for pair in GRAY_ALIKE_PAIRS:  # which twin a region of a twinned kind becomes: kind_share (0.5 each)
        observed = np.array([counts[CLASS_NAMES.index(name)].sum() for name in pair])
        shares = np.array([WORLD_CLASSES[CLASS_NAMES.index(name)].kind_share for name in pair])
        _, p_value = stats.chisquare(observed, shares * observed.sum())
        print(f"{'/'.join(pair)}: regions {observed.tolist()}, chi-square p-value {p_value:.3f}")
        assert observed.min() >= 40 and p_value > 0.001, pair


# ----------------------------------------------------------------------------------------------
# Property 3: gray level alone does not reveal the class
# ----------------------------------------------------------------------------------------------


def _gray_bins_and_classes(pairs, class_shift: float = 0.0):
    """Labeled pixels of decoded samples as (L bin of 1 unit, class id); ``class_shift`` adds
    class_id * class_shift to L (the control: what a class-dependent lightness would look like)."""
    classes = np.concatenate([label[label != 255] for _, label in pairs]).astype(int)
    lightness = np.concatenate([lab[..., 0][label != 255] for lab, label in pairs]) + class_shift * classes
    return np.clip(lightness.astype(int), 0, 120), classes


def _best_per_bin(bins, classes, gains):
    """For each L bin, the answer (row of ``gains``: answer x class -> 1 if right) right most often, and
    the best constant answer."""
    counts = np.zeros((121, len(CLASS_NAMES)))
    np.add.at(counts, (bins, classes), 1)
    best_constant = int((counts.sum(axis=0) @ gains.T).argmax())
    per_bin = (counts @ gains.T).argmax(axis=1)
    return np.where(counts.sum(axis=1) > 0, per_bin, best_constant), best_constant


def _mutual_information(bins: np.ndarray, classes: np.ndarray) -> float:
    joint = np.zeros((bins.max() + 1, classes.max() + 1))
    np.add.at(joint, (bins, classes), 1)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    present = joint > 0
    return float((joint[present] * np.log2(joint[present] / outer[present])).sum())


@pytest.mark.parametrize("class_shift", [0.0, 10.0], ids=["world", "control-class-dependent-L"])
def test_pixel_gray_level_does_not_reveal_class_or_class_color(decoded, world, class_shift):
    """The best pixel-wise map from gray level (1-L-unit bins, fit on train) to (1) a class and (2) an ab
    color, scored on val: (1) class accuracy, (2) palette accuracy (the answer's nearest mode belongs to the
    pixel's class), each against the best constant answer, plus the mutual information I(L bin; class).
    The world must give at most 10 % relative gain and under 0.1 bit. The control - the same pixels with L
    shifted by 10 units per class id, as if classes had their own lightness bands - must give over 30 %
    and 0.5 bit: the measurement does catch class-dependent lightness."""
    train_bins, train_classes = _gray_bins_and_classes(decoded["train"], class_shift)
    val_bins, val_classes = _gray_bins_and_classes(decoded["val"], class_shift)
    # every mode of every class is a possible answer; palette accuracy counts it right for its own class
    # (the nearest mode of a mode is itself, and modes of different classes are > 16 apart)
    mode_class = np.concatenate([[k] * len(world.class_modes[k]) for k in range(len(CLASS_NAMES))])
    color_gains = (mode_class[:, None] == np.arange(len(CLASS_NAMES))[None]).astype(float)
    gains = {}
    for name, table in (("class", np.eye(len(CLASS_NAMES))), ("color", color_gains)):
        per_bin, constant = _best_per_bin(train_bins, train_classes, table)
        gray_score = table[per_bin[val_bins], val_classes].mean()
        constant_score = table[constant, val_classes].mean()
        gains[name] = gray_score / constant_score
        print(f"shift {class_shift}: gray -> {name}: {gray_score:.3f} vs constant {constant_score:.3f}")
    information = _mutual_information(val_bins, val_classes)
    print(f"shift {class_shift}: I(L bin; class) = {information:.3f} bits")
    if class_shift == 0.0:
        assert gains["class"] <= 1.1 and gains["color"] <= 1.1 and information < 0.1
    else:
        assert gains["class"] > 1.3 and gains["color"] > 1.3 and information > 0.5


# ----------------------------------------------------------------------------------------------
# Property 4: per-image global L jitter
# ----------------------------------------------------------------------------------------------


def test_lightness_jitter_follows_the_documented_formula_and_spans_its_ranges(world, decoded):
    """The decoded L of each val image equals the jitter-free rendering of the same scene passed through
    the documented jitter with the parameters the sample's metadata reports (mean error < 1 L unit, JPEG),
    while ignoring the jitter is off by > 4; the parameters cover their documented ranges; and the images'
    gray statistics really vary (per-image mean L over > 20 units, L std over a factor > 2)."""
    still = dataclasses.replace(
        SAMPLE_CONFIG, contrast_range=(1.0, 1.0), max_brightness=0.0, gamma_range=(1.0, 1.0)
    )
    errors_with, errors_without = [], []
    for index, (item, (lab, label)) in enumerate(zip(world.list_items("val")[:30], decoded["val"])):
        jitter = world.load(item).metadata["world"]["jitter"]
        plain = render_image(still, "val", index).lab[..., 0]
        inside = label != 255
        jittered = apply_lightness_jitter(plain, jitter, SAMPLE_CONFIG)
        errors_with.append(np.abs(jittered - lab[..., 0])[inside].mean())
        errors_without.append(np.abs(plain - lab[..., 0])[inside].mean())
    print(f"mean |L error|: {np.mean(errors_with):.2f} with the documented jitter, "
          f"{np.mean(errors_without):.2f} without")
    assert max(errors_with) < 1.0
    assert np.mean(errors_without) > 4.0

    jitters = [world.image_facts[item.key]["jitter"] for item in world.list_items("train")]
    contrast, brightness, gamma = (
        np.array([jitter[key] for jitter in jitters]) for key in ("contrast", "brightness", "gamma")
    )
    for name, values, (low, high) in (("contrast", contrast, (0.5, 1.1)), ("gamma", gamma, (0.65, 1.55))):
        assert low <= values.min() and values.max() <= high
        assert np.ptp(values) > 0.7 * (high - low), name
    reach = np.minimum(15.0, 20.0 - contrast * 18.0)  # lightness_limits half-width 20, pixel range 37-73
    assert np.all(np.abs(brightness) <= reach + 1e-6)
    assert np.abs(brightness).max() > 8.0  # low-contrast images move far
    means = [lab[..., 0].mean() for lab, _ in decoded["train"]]
    spreads = [lab[..., 0].std() for lab, _ in decoded["train"]]
    print(f"per-image L mean {min(means):.1f}-{max(means):.1f}, L std {min(spreads):.1f}-{max(spreads):.1f}")
    assert np.ptp(means) > 20.0 and max(spreads) > 2.0 * min(spreads)


# ----------------------------------------------------------------------------------------------
# Property 5: every color inside sRGB
# ----------------------------------------------------------------------------------------------


def test_every_generated_color_is_inside_the_srgb_gamut(rendered):
    """No channel of any generated pixel needs clipping: Lab -> sRGB (clipped) -> Lab returns every
    pixel of all sample images within GAMUT_TOLERANCE (a clip of ~1e-4 in sRGB would exceed it)."""
    worst = max(float(np.abs(srgb_to_lab(lab_to_srgb(w.lab)) - w.lab).max()) for w in rendered)
    lightness = np.concatenate([w.lab[..., 0].ravel() for w in rendered])
    print(f"max Lab round-trip error over {len(rendered)} images: {worst:.1e}; "
          f"L from {lightness.min():.1f} to {lightness.max():.1f}")
    assert worst < GAMUT_TOLERANCE
    assert 35.0 <= lightness.min() and lightness.max() <= 75.0  # lightness_limits
    to_srgb_checked(rendered[0].lab, "sample")  # the generator's own check agrees
    out_of_gamut = rendered[0].lab.copy()
    out_of_gamut[0, 0] = (50.0, 90.0, -90.0)
    with pytest.raises(RuntimeError, match="sample: a color leaves the sRGB gamut"):
        to_srgb_checked(out_of_gamut, "sample")


def test_config_rejects_settings_that_would_leave_the_gamut():
    with pytest.raises(ValueError, match=r"lightness_limits.*class \w+ mode \w+ leaves the sRGB gamut"):
        WorldConfig(lightness_limits=(20.0, 90.0))
    with pytest.raises(ValueError, match="contrast_range: max contrast 1.5"):
        WorldConfig(contrast_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="contrast_range"):
        WorldConfig(contrast_range=(1.2, 0.8))


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_train", 0), ("image_size", 32), ("jpeg_quality", 101), ("boundary_width", 40), ("max_objects", 1)],
)
def test_config_range_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**{field: value})


def test_config_loads_from_params_mapping():
    mapping = {"seed": 5, "lightness_range": [45, 65], "num_val": 10}
    config = load_config(WorldConfig, mapping, "sources.synthetic")
    assert config.lightness_range == (45.0, 65.0) and config.seed == 5
    with pytest.raises(ConfigError, match="sources.synthetic.num_trian"):
        load_config(WorldConfig, {"num_trian": 5}, "sources.synthetic")


# ----------------------------------------------------------------------------------------------
# Property 6: deterministic bytes
# ----------------------------------------------------------------------------------------------


def test_archive_bytes_are_deterministic_and_members_sorted(tmp_path):
    config = WorldConfig(seed=11, num_train=4, num_val=2, image_size=96)
    first = write_world_archive(config, tmp_path / "a" / "world.tar", progress=False)
    second = write_world_archive(config, tmp_path / "b" / "world.tar", progress=False)
    other_seed = dataclasses.replace(config, seed=12)
    other = write_world_archive(other_seed, tmp_path / "c" / "world.tar", progress=False)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second, other)]
    assert digest[0] == digest[1] != digest[2]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["world.tar"]  # no temporary left behind
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {members[0].mtime}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert all(not m.pax_headers for m in members)
    assert "VOCdevkit/VOC2012/semantic_world.json" in names


def test_an_image_depends_only_on_seed_split_and_index():
    small = WorldConfig(seed=11, num_train=3, num_val=2, image_size=96)
    large = dataclasses.replace(small, num_train=50)
    first, second = render_image(small, "val", 1), render_image(large, "val", 1)
    assert np.array_equal(first.lab, second.lab) and np.array_equal(first.label, second.label)
    assert not np.array_equal(render_image(small, "val", 0).lab, first.lab)


def test_failed_generation_leaves_no_archive(tmp_path, monkeypatch):
    import semcolor.sources.synthetic as synthetic

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(synthetic, "render_image", broken)
    with pytest.raises(RuntimeError, match="boom"):
        write_world_archive(WorldConfig(num_train=2, num_val=1), tmp_path / "world.tar", progress=False)
    assert list(tmp_path.iterdir()) == []
