"""semcolor.inference: photo -> colorized photo for every family, at full resolution, lightness kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from semcolor.color import lab_to_rgb8_keep_lightness, rgb8_to_lab
from semcolor.inference import (
    Colorizer,
    class_names_from_payload,
    load_colorizer,
    predict_ab,
    resize_label_map,
    working_shape,
)
from semcolor.model_reference import resolve_checkpoint, resolve_segmenter
from semcolor.models import create_model
from semcolor.photo_io import read_photo
from tests.inference_models import (
    CLASS_NAMES,
    GRIDNET_CONFIG,
    NUM_CLASSES,
    PSC_CONFIG,
    SDC_CONFIG,
    save_model,
    save_sdc_pair,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def sdc_files(tmp_path_factory):
    return save_sdc_pair(tmp_path_factory.mktemp("sdc"))


@pytest.fixture(scope="module")
def sdc_colorizer(sdc_files):
    return load_colorizer(*sdc_files)


@pytest.fixture(scope="module")
def psc_colorizer(tmp_path_factory):
    path = save_model(tmp_path_factory.mktemp("psc") / "psc.pt", "psc_full", PSC_CONFIG, seed=3)
    return load_colorizer(path)


def color_photos(shared_dir):
    photos = sorted((shared_dir / "photos").glob("*unsplash.png"))
    assert len(photos) == 10
    return photos


def output_lightness(image: np.ndarray) -> np.ndarray:
    return rgb8_to_lab(image)[..., 0]


@pytest.mark.slow
def test_real_color_photos_keep_size_and_lightness(shared_dir, sdc_colorizer):
    for path in color_photos(shared_dir):
        photo = read_photo(path)
        gray_L = photo.lightness  # the photo converted to gray: its CIE lightness
        result = sdc_colorizer.colorize(photo)
        (image,) = result.images
        assert image.shape == (*photo.size, 3) and image.dtype == np.uint8
        assert np.abs(output_lightness(image) - gray_L).max() < 1.0, path.name
        chroma = np.hypot(*np.moveaxis(rgb8_to_lab(image)[..., 1:], -1, 0))
        assert (chroma > 2).mean() > 0.5, path.name  # colors, not a gray copy
        assert result.semantic_map.shape == photo.size
        assert result.semantic_map.max() < NUM_CLASSES
        assert result.class_names == tuple(CLASS_NAMES)


def test_large_odd_sized_photo(shared_dir, sdc_colorizer):
    photo = read_photo(shared_dir / "photos" / "Hindenburg_disaster_1937.jpg")  # 1097 x 1300, not /32
    result = sdc_colorizer.colorize(photo.lightness)
    assert result.images[0].shape == (1300, 1097, 3)
    assert result.working_map.shape == working_shape(1300, 1097, 352, 32) == (352, 288)
    assert np.abs(output_lightness(result.images[0]) - photo.lightness).max() < 1.0


def test_working_shape_keeps_aspect_and_multiples():
    assert working_shape(352, 352, 352, 32) == (352, 352)
    assert working_shape(480, 640, 352, 32) == (256, 352)
    assert working_shape(3000, 100, 352, 32) == (352, 64)  # never below 2 x multiple
    assert working_shape(1300, 1097, 128, 4) == (128, 108)


def test_out_of_gamut_colors_lose_chroma_not_lightness():
    L = np.linspace(2, 98, 60)
    a, b = np.tile([120, -120, 90, -60], 60), np.tile([110, 100, -127, -127], 60)
    lab = np.stack([np.repeat(L, 4), a, b], -1)
    lab = lab.reshape(20, 12, 3)
    rgb = lab_to_rgb8_keep_lightness(lab)
    back = rgb8_to_lab(rgb)
    assert np.abs(back[..., 0] - lab[..., 0]).max() < 1.0
    # hue kept where chroma is left (a and b keep their signs)
    strong = np.hypot(back[..., 1], back[..., 2]) > 10
    assert (np.sign(back[..., 1:][strong]) == np.sign(lab[..., 1:][strong])).mean() > 0.95
    # colors already inside the gamut are untouched (up to 8-bit rounding)
    inside = np.array([[[50.0, 20.0, -30.0], [70.0, -10.0, 40.0]]])
    np.testing.assert_allclose(rgb8_to_lab(lab_to_rgb8_keep_lightness(inside)), inside, atol=0.8)


def test_a_given_map_is_used_at_full_or_working_size(sdc_colorizer):
    rng = np.random.default_rng(0)
    L = np.clip(50 + 30 * np.sin(np.arange(200)[None, :] / 17.0) + rng.normal(0, 2, (150, 200)), 0, 100)
    shape = sdc_colorizer.working_shape(150, 200)
    working = np.zeros(shape, np.uint8)
    working[:, : shape[1] // 2] = 3
    a = sdc_colorizer.colorize(L, semantic_map=working).images[0]
    b = sdc_colorizer.colorize(L, semantic_map=resize_label_map(working, (150, 200))).images[0]
    assert np.abs(a.astype(int) - b).max() <= 1
    # an edit of a square changes the colors there, and hardly beyond a margin around it
    edited = working.copy()
    edited[100:150, 60:110] = 5
    c = sdc_colorizer.colorize(L, semantic_map=edited).images[0]
    diff = np.abs(a.astype(int) - c).sum(-1)
    scale = np.array([150, 200]) / np.array(shape)
    top, left = (np.array([100, 60]) * scale).astype(int)
    bottom, right = (np.array([150, 110]) * scale).astype(int)
    inside = diff[top:bottom, left:right].mean()
    far = np.ones_like(diff, bool)
    far[max(0, top - 20):bottom + 20, max(0, left - 20):right + 20] = False
    assert inside > 10 * diff[far].mean()
    with pytest.raises(ValueError, match="holds class 9"):
        sdc_colorizer.colorize(L, semantic_map=np.full(shape, 9, np.uint8))
    with pytest.raises(ValueError, match="must match the photo"):
        sdc_colorizer.colorize(L, semantic_map=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="deterministic"):
        sdc_colorizer.colorize(L, samples=2)
    with pytest.raises(ValueError, match="expected a Photo, lightness"):
        sdc_colorizer.colorize(np.zeros((4, 4, 4)))
    # uint8 RGB in: the same as its lightness in
    rgb = np.stack([np.uint8(L)] * 3, axis=-1)
    np.testing.assert_array_equal(sdc_colorizer.colorize(rgb, semantic_map=working).images[0],
                                  sdc_colorizer.colorize(rgb8_to_lab(rgb)[..., 0], semantic_map=working).images[0])


@pytest.mark.slow
def test_pixelcnn_samples_are_diverse_and_reproducible(shared_dir, psc_colorizer):
    photo = read_photo(shared_dir / "photos" / "brian-61OqtzLUWko-unsplash.png")
    assert psc_colorizer.supports_samples and not psc_colorizer.takes_semantic_map
    two = psc_colorizer.colorize(photo.lightness, samples=2, seed=5)
    assert len(two.images) == 2
    assert (two.images[0] != two.images[1]).mean() > 0.1
    again = psc_colorizer.colorize(photo.lightness, samples=1, seed=6)
    np.testing.assert_array_equal(again.images[0], two.images[1])  # sample i is seed + i
    for image in two.images:
        assert image.shape == (352, 352, 3)
        assert np.abs(output_lightness(image) - photo.lightness).max() < 1.0
    assert two.semantic_map.shape == (352, 352)  # psc_full's own segmentation head
    fast = psc_colorizer.colorize(photo.lightness, fast=True)
    assert np.abs(output_lightness(fast.images[0]) - photo.lightness).max() < 1.0


def test_predict_ab_every_family(sdc_colorizer, psc_colorizer):
    L = torch.rand(2, 1, 50, 70) * 2 - 1
    ab = predict_ab(sdc_colorizer.model, L, segmenter=sdc_colorizer.segmenter)
    assert ab.shape == (2, 2, 50, 70) and ab.abs().max() <= 1
    seg = torch.zeros(2, 50, 70, dtype=torch.long)
    assert predict_ab(sdc_colorizer.model, L, seg=seg).shape == (2, 2, 50, 70)
    with pytest.raises(ValueError, match="needs a semantic map"):
        predict_ab(sdc_colorizer.model, L)
    assert predict_ab(psc_colorizer.model, L).shape == (2, 2, 50, 70)
    with pytest.raises(ValueError, match="segmentation model"):
        predict_ab(sdc_colorizer.segmenter, L)


def test_class_names_and_segmenter_checks(tmp_path):
    payload = {"extra": {"class_names": ["a", "b"]}}
    assert class_names_from_payload(payload, 2) == ("a", "b")
    assert class_names_from_payload(payload, 3) == ("class 0", "class 1", "class 2")
    assert class_names_from_payload({"extra": {"dataset": "voc2012"}}, 21)[:2] == ("background", "aeroplane")
    model = save_model(tmp_path / "sdc.pt", "sdc", SDC_CONFIG)
    wrong = save_model(tmp_path / "g.pt", "gridnet", {**GRIDNET_CONFIG, "num_classes": NUM_CLASSES + 1})
    with pytest.raises(ValueError, match="segmenter predicts 7 classes"):
        load_colorizer(model, wrong)
    no_segmenter = load_colorizer(model)
    assert no_segmenter.class_names == tuple(f"class {i}" for i in range(NUM_CLASSES))
    with pytest.raises(ValueError, match="needs a semantic map: give one"):
        no_segmenter.colorize(np.full((64, 64), 50.0))
    with pytest.raises(ValueError, match="segmentation model"):
        Colorizer(create_model("gridnet", **GRIDNET_CONFIG), "gridnet")


def test_mlflow_model_folder_with_a_bundled_segmenter(tmp_path, sdc_files):
    """The on-disk layout of a downloaded pyfunc model: MLmodel + artifacts/<file name>."""
    folder = tmp_path / "model"
    (folder / "artifacts").mkdir(parents=True)
    # both files named alike on purpose: pyfunc renames one, the MLmodel table says which is which
    (folder / "artifacts" / "best.pt").write_bytes(sdc_files[1].read_bytes())  # the GridNet
    (folder / "artifacts" / "best_1.pt").write_bytes(sdc_files[0].read_bytes())  # the U-Net
    spec = {"flavors": {"python_function": {"artifacts": {
        "checkpoint": {"path": "artifacts/best_1.pt", "uri": "/x/best.pt"},
        "segmenter": {"path": "artifacts/best.pt", "uri": "/y/best.pt"}}}}}
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    assert resolve_checkpoint(folder) == folder / "artifacts" / "best_1.pt"
    assert resolve_segmenter(folder) == folder / "artifacts" / "best.pt"
    assert resolve_segmenter(sdc_files[0]) is None
    colorizer = load_colorizer(folder)
    assert colorizer.model_name == "sdc" and colorizer.segmenter is not None
    result = colorizer.colorize(np.full((64, 96), 40.0))
    assert result.images[0].shape == (64, 96, 3)


def test_mlflow_pyfunc_predict_uses_the_bundled_segmenter(sdc_files):
    """CheckpointModel (the logged pyfunc) colorizes an sdc model's input with its 'segmenter' artifact."""
    from semcolor.mlflow_model import CHECKPOINT_ARTIFACT, SEGMENTER_ARTIFACT, CheckpointModel

    context = type("Context", (), {"artifacts": {CHECKPOINT_ARTIFACT: str(sdc_files[0]),
                                                 SEGMENTER_ARTIFACT: str(sdc_files[1])}})()
    pyfunc = CheckpointModel()
    pyfunc.load_context(context)
    L = np.random.default_rng(0).uniform(-1, 1, (1, 1, 64, 96)).astype(np.float32)
    ab = pyfunc.predict(context, L)
    assert ab.shape == (1, 2, 64, 96) and np.abs(ab).max() <= 1
    expected = predict_ab(pyfunc.model, torch.from_numpy(L), segmenter=pyfunc.segmenter).numpy()
    np.testing.assert_array_equal(ab, expected)
    alone = type("Context", (), {"artifacts": {CHECKPOINT_ARTIFACT: str(sdc_files[0])}})()
    pyfunc.load_context(alone)
    with pytest.raises(ValueError, match="needs a semantic map"):
        pyfunc.predict(alone, L)


def test_classification_family(tmp_path, sdc_files):
    import semcolor.models.cls  # noqa: F401 - registers cls_* (until the registry lists the module)

    config = {"width": 0.125, "num_classes": NUM_CLASSES, "semantic": "input"}
    path = save_model(tmp_path / "cls.pt", "cls_semantic", config, seed=5, extra={"class_names": CLASS_NAMES})
    colorizer = load_colorizer(path, sdc_files[1])
    assert colorizer.takes_semantic_map and colorizer.class_names == tuple(CLASS_NAMES)
    L = np.clip(np.add.outer(np.linspace(20, 80, 120), np.linspace(0, 10, 90)), 0, 100)
    result = colorizer.colorize(L)
    assert result.images[0].shape == (120, 90, 3) and result.semantic_map.shape == (120, 90)
    assert np.abs(output_lightness(result.images[0]) - L).max() < 1.0
    edited = result.working_map.copy()
    edited[:100] = (edited[:100] + 1) % NUM_CLASSES
    assert (colorizer.colorize(L, semantic_map=edited).images[0] != result.images[0]).any()
    ab = predict_ab(colorizer.model, torch.zeros(1, 1, 40, 50), segmenter=colorizer.segmenter)
    assert ab.shape == (1, 2, 40, 50)

    head = load_colorizer(save_model(tmp_path / "head.pt", "cls_semantic", {**config, "semantic": "head"}))
    assert not head.takes_semantic_map and head.num_classes == NUM_CLASSES
    assert head.colorize(L).semantic_map.shape == (120, 90)
    plain = load_colorizer(save_model(tmp_path / "plain.pt", "cls_plain", {"width": 0.125}))
    assert plain.num_classes is None and plain.colorize(L).semantic_map is None
