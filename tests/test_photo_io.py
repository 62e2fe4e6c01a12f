"""semcolor.app.photo_io: every kind of photo a user has, and every way a file can be bad."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from semcolor.color import srgb_to_lab
from semcolor.app.photo_io import (
    PhotoError,
    find_photos,
    read_label_map,
    read_photo,
    write_image_atomic,
)


def gradient_rgb(height: int = 24, width: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("extension", [".jpg", ".png", ".webp", ".tif", ".bmp"])
def test_every_format_reads_rgb_and_lightness(tmp_path, extension):
    rgb8 = gradient_rgb()
    path = tmp_path / f"photo{extension}"
    Image.fromarray(rgb8).save(path, **({"quality": 95} if extension in (".jpg", ".webp") else {}))
    photo = read_photo(path)
    assert photo.size == (24, 40)
    assert photo.rgb.shape == (24, 40, 3) and photo.rgb.dtype == np.float32
    assert photo.lightness.dtype == np.float32 and 0 <= photo.lightness.min() and photo.lightness.max() <= 100
    expected_L = srgb_to_lab(rgb8 / 255.0)[..., 0]
    tolerance = 1e-3 if extension in (".png", ".tif", ".bmp") else 6.0  # lossy codecs move pixels a little
    assert np.abs(photo.lightness - expected_L).max() < tolerance


def test_sixteen_bit_gray_keeps_its_precision(tmp_path):
    # two neighbouring 16-bit levels that fall into the same 8-bit level must stay distinct
    values = np.array([[30000, 30001, 30100, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    photo = read_photo(path)
    assert photo.source_mode.startswith("I")
    expected = srgb_to_lab(np.repeat((values / 65535.0)[..., None], 3, -1))[..., 0]
    np.testing.assert_allclose(photo.lightness, expected, atol=1e-4)
    assert photo.lightness[0, 1] > photo.lightness[0, 0]  # lost by any 8-bit step: 30000 >> 8 == 30001 >> 8
    assert photo.lightness[0, 3] == pytest.approx(100.0, abs=1e-3)


def test_sixteen_bit_tiff(tmp_path):
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    photo = read_photo(path)
    assert len(np.unique(photo.lightness)) == 64


def test_gray_palette_and_one_bit(tmp_path):
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (4, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_allclose(read_photo(tmp_path / "gray.png").rgb[..., 0], gray / 255.0, atol=1e-6)

    palette_image = Image.fromarray(gradient_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette_image.save(tmp_path / "palette.png")
    expected = np.asarray(palette_image.convert("RGB")) / 255.0
    photo = read_photo(tmp_path / "palette.png")
    assert photo.source_mode == "P"
    np.testing.assert_allclose(photo.rgb, expected, atol=1e-6)

    Image.fromarray(gray > 128).save(tmp_path / "bits.png")
    assert set(np.unique(read_photo(tmp_path / "bits.png").rgb)) == {0.0, 1.0}


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[0, :, 3] = 255  # top row opaque
    rgba[1, 0, 3] = 0  # fully transparent -> white
    rgba[1, 1, 3] = 128  # half -> between
    rgba[1, 2, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgb = read_photo(tmp_path / "alpha.png").rgb
    np.testing.assert_allclose(rgb[0, 0], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], [1, 1, 1], atol=1e-6)
    alpha = 128 / 255
    np.testing.assert_allclose(rgb[1, 1], [200 / 255 * alpha + 1 - alpha, 1 - alpha, 1 - alpha], atol=1e-6)


def test_gray_with_alpha_from_the_real_photos(shared_dir):
    photo = read_photo(shared_dir / "photos" / "lusitania-wiki-common.png")  # an LA (gray + alpha) PNG
    assert photo.source_mode == "LA"
    assert photo.size == (352, 352)
    np.testing.assert_allclose(photo.rgb[..., 0], photo.rgb[..., 2])


def test_exif_orientation_is_applied(tmp_path):
    rgb8 = gradient_rgb(20, 50)  # landscape pixels ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... stored with "rotate 90 CW to display": a viewer shows a portrait photo
    Image.fromarray(rgb8).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    photo = read_photo(tmp_path / "rotated.jpg")
    assert photo.size == (50, 20)
    # orientation 6: the stored first column becomes the displayed first row, right to left
    expected = np.rot90(rgb8, k=-1)
    assert np.abs(photo.rgb * 255 - expected).mean() < 4


def test_missing_and_not_an_image_name_the_file(tmp_path):
    with pytest.raises(PhotoError, match=r"nothing\.png: no such file"):
        read_photo(tmp_path / "nothing.png")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    with pytest.raises(PhotoError, match=r"notes\.jpg: not an image"):
        read_photo(text)
    with pytest.raises(PhotoError, match="not a regular file"):
        read_photo(tmp_path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(gradient_rgb(200, 200)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError, match=r"cut\.jpg: truncated or corrupt"):
        read_photo(path)
    png = tmp_path / "cut.png"
    Image.fromarray(gradient_rgb(200, 200)).save(png)
    png.write_bytes(png.read_bytes()[:300])
    with pytest.raises(PhotoError, match=r"cut\.png: truncated or corrupt"):
        read_photo(png)


def test_decompression_bomb_over_the_limit(tmp_path):
    path = tmp_path / "bomb.png"
    # 4000 x 4000 of one color: a few KB on disk, 16 MP when decoded
    Image.new("L", (4000, 4000), 7).save(path, optimize=True)
    assert path.stat().st_size < 100_000
    message = r"bomb\.png: 4000x4000 = 16000000 pixels exceeds the limit of 1000000"
    with pytest.raises(PhotoError, match=message):
        read_photo(path, max_pixels=1_000_000)
    small = tmp_path / "small.png"
    Image.new("L", (100, 30), 7).save(small)
    assert read_photo(small, max_pixels=3000).size == (30, 100)  # the limit itself is allowed
    with pytest.raises(PhotoError, match="exceeds the limit of 2999"):
        read_photo(small, max_pixels=2999)


def test_label_map_reading(tmp_path):
    indices = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_image_atomic(tmp_path / "map.png", indices, palette=np.zeros((256, 3), np.uint8))
    assert Image.open(tmp_path / "map.png").mode == "P"
    np.testing.assert_array_equal(read_label_map(tmp_path / "map.png"), indices)
    Image.fromarray(gradient_rgb()).save(tmp_path / "colored.png")
    with pytest.raises(PhotoError, match="colored.png: a semantic map must be a palette"):
        read_label_map(tmp_path / "colored.png")


def test_atomic_write_refuses_inputs_and_leaves_no_temp(tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(gradient_rgb()).save(source)
    before = source.read_bytes()
    with pytest.raises(PhotoError, match="refusing to overwrite an input"):
        write_image_atomic(source, np.zeros((2, 2, 3), np.uint8), protected=[source])
    link = tmp_path / "alias.png"
    os.link(source, link)  # the same file under another name
    with pytest.raises(PhotoError, match="refusing to overwrite an input"):
        write_image_atomic(link, np.zeros((2, 2, 3), np.uint8), protected=[source])
    assert source.read_bytes() == before
    out = write_image_atomic(tmp_path / "sub" / "out.png", gradient_rgb(), protected=[source])
    np.testing.assert_array_equal(np.asarray(Image.open(out)), gradient_rgb())
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.png"]


def test_find_photos_recurses_and_skips_the_output_folder(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "out").mkdir()
    for name in ["a/x.JPG", "a/deep/y.png", "a/readme.txt", "a/out/x_color.png", "single.webp"]:
        (tmp_path / name).write_bytes(b"")
    found = find_photos([tmp_path / "a", tmp_path / "single.webp"], exclude=[tmp_path / "a" / "out"])
    assert [(p.relative_to(tmp_path).as_posix(), r.as_posix()) for p, r in found] == [
        ("a/deep/y.png", "deep"), ("a/x.JPG", "."), ("single.webp", ".")]
    with pytest.raises(PhotoError, match="missing: no such file or directory"):
        find_photos([tmp_path / "missing"])
