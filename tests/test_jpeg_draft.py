"""Draft decoding through libjpeg-turbo gives exactly PIL's draft pixels, or hands the file to PIL."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.data.sources import labels
from semcolor.data.sources.jpeg_draft import decode_jpeg_draft, pil_draft_scale
from semcolor.data.sources.labels import pil_rgb_image_resized, read_rgb_image_resized

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "photos"


def photo(seed: int, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3): smooth colour, hard edges and noise, so chroma subsampling and the IDCT matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = rng.uniform(30, 220, 3) + rng.uniform(-60, 60, 3) * (y / height)[..., None]
    image[height // 4 : height // 2, width // 3 : 2 * width // 3] = rng.uniform(0, 255, 3)
    image += 12 * np.sin(x * 0.3)[..., None] + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, pixels: np.ndarray, mode: str = "RGB", **options) -> Path:
    Image.fromarray(pixels).convert(mode).save(path, format="JPEG", **options)
    return path


@pytest.mark.parametrize(("width", "height", "size", "scale"), [
    (500, 375, 128, 2), (333, 257, 128, 2), (1024, 768, 128, 4), (2048, 1100, 128, 8), (1000, 800, 352, 2),
    (720, 660, 320, 2),
])
@pytest.mark.parametrize("options", [
    {"quality": 90, "subsampling": 2},  # 4:2:0, the usual photo
    {"quality": 75, "subsampling": 1},  # 4:2:2
    {"quality": 95, "subsampling": 0},  # 4:4:4
    {"quality": 85, "progressive": True},
    {"quality": 80, "restart_marker_rows": 2},
], ids=["420", "422", "444", "progressive", "restarts"])
def test_turbojpeg_drafts_give_pils_pixels_exactly(tmp_path: Path, width, height, size, scale, options) -> None:
    assert pil_draft_scale(width, height, size) == scale
    path = write_jpeg(tmp_path / "photo.jpg", photo(width + height, width, height), **options)
    drafted = decode_jpeg_draft(path.read_bytes(), size)
    assert drafted is not None, "a YCbCr JPEG left the libjpeg-turbo path"
    pixels, original, box = drafted
    assert original == (width, height)
    with Image.open(path) as image:  # PIL's own draft of the same file
        assert image.draft("RGB", (size, size)) == ("RGB", box)
        image.load()
        assert np.array_equal(pixels, np.asarray(image))
    image_fast, original_fast = read_rgb_image_resized(path, size)
    image_pil, original_pil = pil_rgb_image_resized(path, size)
    assert original_fast == original_pil == (width, height)
    assert image_fast.shape == (size, size, 3)
    assert np.array_equal(image_fast, image_pil)


def test_a_genuine_photo_drafts_the_same(tmp_path: Path) -> None:
    path = PHOTOS / "Hindenburg_disaster_1937.jpg"
    for size in (128, 352):
        assert decode_jpeg_draft(path.read_bytes(), size) is not None
        assert np.array_equal(read_rgb_image_resized(path, size)[0], pil_rgb_image_resized(path, size)[0])


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_gray_and_cmyk_jpegs_keep_pils_conversion(tmp_path: Path, mode: str) -> None:
    path = write_jpeg(tmp_path / f"{mode}.jpg", photo(3, 500, 375), mode=mode)
    assert decode_jpeg_draft(path.read_bytes(), 128) is None
    image, original = read_rgb_image_resized(path, 128)
    assert original == (500, 375) and image.shape == (128, 128, 3)
    assert np.array_equal(image, pil_rgb_image_resized(path, 128)[0])


def test_small_damaged_and_foreign_files_are_left_to_pil(tmp_path: Path) -> None:
    small = write_jpeg(tmp_path / "small.jpg", photo(1, 250, 300))  # under twice 128 on one side
    assert decode_jpeg_draft(small.read_bytes(), 128) is None
    np.testing.assert_array_equal(read_rgb_image_resized(small, 128)[0], pil_rgb_image_resized(small, 128)[0])
    data = write_jpeg(tmp_path / "whole.jpg", photo(2, 500, 375)).read_bytes()
    assert decode_jpeg_draft(data[: len(data) // 2], 128) is None  # truncated: libjpeg warns, PIL decides
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        read_rgb_image_resized(truncated, 128)
    png = io.BytesIO()
    Image.fromarray(photo(4, 500, 375)).save(png, format="PNG")
    assert decode_jpeg_draft(png.getvalue(), 128) is None
    (tmp_path / "photo.png").write_bytes(png.getvalue())
    np.testing.assert_array_equal(read_rgb_image_resized(tmp_path / "photo.png", 128)[0],
                                  pil_rgb_image_resized(tmp_path / "photo.png", 128)[0])


def test_a_ycbcr_jpeg_never_reaches_pil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jpeg(tmp_path / "photo.jpg", photo(5, 500, 375))
    expected = pil_rgb_image_resized(path, 128)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("the YCbCr JPEG went through PIL")

    monkeypatch.setattr(labels, "pil_rgb_image_resized", refuse)
    assert np.array_equal(read_rgb_image_resized(path, 128)[0], expected)


def test_pils_pixel_limit_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_jpeg(tmp_path / "photo.jpg", photo(6, 500, 375)).read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses this file now: so must the fast path
    assert decode_jpeg_draft(data, 128) is None
    with pytest.raises(Image.DecompressionBombError):
        read_rgb_image_resized(tmp_path / "photo.jpg", 128)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert decode_jpeg_draft(data, 128) is not None
