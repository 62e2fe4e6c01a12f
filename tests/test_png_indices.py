"""The fast label PNG reader: whenever it decodes a file, it gives PIL's values; anything else it hands to PIL."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.data.sources.labels import encode_palette_png, read_palette_indices
from semcolor.data.sources.png_indices import PNG_SIGNATURE, plain_png_indices

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voc2012-aug-labels" / "SegmentationClassAug"


def pil_indices(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.array(image, dtype=np.uint8)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))


def handmade_png(
    pixels: np.ndarray,
    filters: list[int] | None = None,
    color_type: int = 3,
    depth: int = 8,
    interlace: int = 0,
    palette: bool = True,
    stream_tail: bytes = b"",
    before_idat: bytes = b"",
    split_idat_with: bytes | None = None,
) -> bytes:
    """A PNG written byte by byte: rows with the given filter types (applied correctly), so PIL reads the
    same values back."""
    height, width = pixels.shape
    filters = filters or [0] * height
    rows = []
    previous = np.zeros(width, np.int64)
    for y in range(height):
        row = pixels[y].astype(np.int64)
        left = np.concatenate([[0], row[:-1]])
        if filters[y] == 0:
            encoded = row
        elif filters[y] == 1:  # Sub
            encoded = row - left
        elif filters[y] == 2:  # Up
            encoded = row - previous
        else:
            raise ValueError("only None, Sub and Up are written here")
        rows.append(bytes([filters[y]]) + (encoded % 256).astype(np.uint8).tobytes())
        previous = row
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    body = chunk(b"IHDR", header)
    if palette:
        body += chunk(b"PLTE", bytes(range(256)) * 3)
    stream = zlib.compress(b"".join(rows) + stream_tail)
    body += before_idat
    if split_idat_with is None:
        body += chunk(b"IDAT", stream)
    else:  # two IDATs with another chunk between them
        body += chunk(b"IDAT", stream[:10]) + split_idat_with + chunk(b"IDAT", stream[10:])
    return PNG_SIGNATURE + body + chunk(b"IEND", b"")


def blocky(seed: int, height: int = 375, width: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    for _ in range(6):
        y0, x0 = int(rng.integers(0, height - 10)), int(rng.integers(0, width - 10))
        label[y0 : y0 + int(rng.integers(5, height)), x0 : x0 + int(rng.integers(5, width))] = rng.integers(1, 21)
    label[rng.random(label.shape) < 0.01] = 255
    return label


def test_genuine_voc_labels_take_the_fast_path_and_give_pils_values() -> None:
    paths = sorted(FIXTURES.glob("*.png"))
    assert len(paths) == 50
    for path in paths:
        data = path.read_bytes()
        fast = plain_png_indices(data)
        assert fast is not None, f"{path.name}: a genuine label left the fast path"
        assert fast.dtype == np.uint8 and fast.flags.writeable and fast.flags.c_contiguous
        assert np.array_equal(fast, pil_indices(data)), path.name


@pytest.mark.parametrize("seed", range(4))
def test_the_projects_own_label_pngs_take_the_fast_path(seed: int) -> None:
    label = blocky(seed)
    data = encode_palette_png(label)
    fast = plain_png_indices(data)
    assert fast is not None
    assert np.array_equal(fast, label)
    assert np.array_equal(fast, pil_indices(data))


def test_a_gray_label_reads_the_same_through_either_path(tmp_path: Path) -> None:
    label = blocky(7, 60, 80)
    unfiltered = handmade_png(label, color_type=0, palette=False)
    assert np.array_equal(plain_png_indices(unfiltered), label)
    path = tmp_path / "gray.png"
    Image.fromarray(label, mode="L").save(path)  # PIL chooses its own row filters here
    assert np.array_equal(read_palette_indices(path), label)
    assert np.array_equal(read_palette_indices(path), pil_indices(path.read_bytes()))


@pytest.mark.parametrize("filters", [[1] * 40, [0] * 39 + [2], [2, 1] * 20])
def test_filtered_rows_go_to_pil_which_undoes_them(tmp_path: Path, filters: list[int]) -> None:
    label = blocky(3, 40, 30)
    data = handmade_png(label, filters=filters)
    assert np.array_equal(pil_indices(data), label)  # the handmade file is right
    assert plain_png_indices(data) is None
    path = tmp_path / "filtered.png"
    path.write_bytes(data)
    assert np.array_equal(read_palette_indices(path), label)


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


@pytest.mark.parametrize(
    "case",
    ["interlaced", "depth_4", "rgb", "no_palette", "bad_crc", "truncated", "long_stream", "not_png", "no_iend",
     "ancillary_bad_crc", "idat_split", "odd_chunk_type", "second_ihdr", "long_palette"],
)
def test_anything_outside_the_plain_layout_is_left_to_pil(case: str) -> None:
    label = blocky(5, 24, 32)
    plain = handmade_png(label)
    assert np.array_equal(plain_png_indices(plain), label)
    variants = {
        "interlaced": handmade_png(label, interlace=1),
        "depth_4": handmade_png(label % 16, depth=4),
        "rgb": handmade_png(label, color_type=2),
        "no_palette": handmade_png(label, palette=False),
        "bad_crc": _flip_byte(plain, len(plain) - 20),  # inside the IDAT payload: its CRC no longer holds
        "truncated": plain[: len(plain) - 30],
        "long_stream": handmade_png(label, stream_tail=b"\0" * 33),
        "not_png": b"GIF89a" + plain[6:],
        "no_iend": plain[: -len(chunk(b"IEND", b""))],
        # a tEXt chunk whose CRC does not hold: the pixels are intact, the file is not
        "ancillary_bad_crc": handmade_png(label, before_idat=chunk(b"tEXt", b"a\0b")[:-1] + b"\0"),
        "idat_split": handmade_png(label, split_idat_with=chunk(b"tEXt", b"a\0b")),
        "odd_chunk_type": handmade_png(label, before_idat=chunk(b"a-b!", b"")),
        "second_ihdr": handmade_png(label, before_idat=chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 24, 8, 0, 0, 0, 0))),
        "long_palette": handmade_png(label, before_idat=chunk(b"PLTE", bytes(801))),
    }
    assert plain_png_indices(variants[case]) is None


def test_read_palette_indices_still_names_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(handmade_png(blocky(1, 20, 20))[:60])
    with pytest.raises((OSError, SyntaxError, ValueError)):
        read_palette_indices(path)
    with pytest.raises(FileNotFoundError):
        read_palette_indices(tmp_path / "absent.png")


def test_split_idats_in_a_row_are_read(tmp_path: Path) -> None:
    label = blocky(8, 24, 32)
    data = handmade_png(label, split_idat_with=b"")
    assert np.array_equal(plain_png_indices(data), label)
    assert np.array_equal(pil_indices(data), label)


def test_pils_pixel_limit_is_respected_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    label = blocky(9, 24, 32)
    data = handmade_png(label)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 24 * 32 - 1)  # PIL would warn: its verdict stands
    assert plain_png_indices(data) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the usual way to switch the check off
    assert np.array_equal(plain_png_indices(data), label)


def test_one_png_signature() -> None:
    from semcolor.data import shard_format

    assert PNG_SIGNATURE == shard_format.PNG_SIGNATURE == b"\x89PNG\r\n\x1a\n"
