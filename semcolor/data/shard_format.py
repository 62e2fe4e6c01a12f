"""The on-disk format of a semcolor shard set: member names and order, the deterministic encoders and
decoders of their bytes, tar member headers, shard file names and the manifest's format texts.

One sample is three tar members, always in this order (format 2, ``MANIFEST_FORMAT``)::

    <key>.json      {"source", "split", "original_id", "original_size": [W, H], "stored_size": [W, H], ...}
    <key>.lab.npy   uint8 (3, S, S) 8-bit Lab code planes, channel-first L, a, b: L*255/100, a+128, b+128
                    (rounded, clipped to [0, 255]), a NumPy .npy file (format 1.0, C order, no compression;
                    decode the codes with ``semcolor.color.decode_lab8`` after moving the channels last)
    <key>.seg.png   uint8 (S, S) class indices, a PNG of mode 'L', 255 = ignore

Why raw planes for Lab and a PNG for the map (measured, ``bench/shards.py`` and ``bench/loader.py``): the
loader must decode a 360 px sample in well under 2 ms to feed a GPU from a few cores; inflating its Lab
PNG costs 2-3 ms (zlib inflate alone 1.7 ms), reading the .npy costs nothing. The price is disk: 380 KiB
instead of 150-175 KiB per 360 px sample, 48 instead of 20-26 KiB at 128 px (photos). The map compresses
~35x and decodes in a quarter of a millisecond, so it stays a PNG (rows unfiltered, zlib level 1). The
planes are channel-first because the conversion computes them that way and the models take (C, H, W):
crops and flips then read whole rows. Format 1 (``<key>.lab.png``, (S, S, 3) pixels in an RGB PNG) is still
read by ``semcolor.data.shard_reader`` and the loader.

Shard ``<split>-000000.tar`` holds the first ``samples_per_shard`` samples in sorted key order, and so on.
The bytes depend only on the inputs and the code: fixed tar metadata (USTAR, mtime 0, uid/gid 0, empty
owner names, mode 0o644; ``tar_member_info``), fixed member order, deterministic NPY, PNG and JSON encoders
(``encode_npy``, ``encode_png``, ``encode_json``).
Each shard set has a ``manifest.json`` (``MANIFEST_NAME``), written last by ``semcolor.data.shards``.

Kept apart from the conversion (``semcolor.data.shards``) and the reading (``semcolor.data.shard_reader``)
so that both sides agree on one definition of the bytes, and a reader does not import the converter.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

MANIFEST_NAME = "manifest.json"
# Format 2: <key>.lab.npy (raw channel-first Lab planes) replaces format 1's <key>.lab.png; the map's PNG
# is written unfiltered. Readers accept both.
FORMAT_VERSION = 2
MANIFEST_FORMAT = f"semcolor-lab-webdataset/{FORMAT_VERSION}"

# zlib level of the PNGs. Measured on 500x375 photos resized to 128 (bench/shards.py): level 1 encodes
# 3-5x faster than the default 6 for files about 15% larger; levels 2-9 buy a few percent more at several
# times the cost. Encoding is a large share of the conversion time, so the fast level wins.
PNG_COMPRESS_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTERS = {"none": 0, "up": 2}
_NPY_MAGIC = b"\x93NUMPY"
_NPY_ALIGN = 64  # numpy's own header alignment (numpy.lib.format.ARRAY_ALIGN)

# The side stored on disk for a shard set named by its training size. The Semantic-driven Colorization
# recipe trains on random 352 crops of 360x360 images; every other size is stored as it is trained.
STORED_SIZES: Mapping[int, int] = {352: 360}

LAB_ENCODING: Mapping[str, Any] = {
    "file": "<key>.lab.npy: NumPy .npy format 1.0, dtype |u1, C order, shape (3, S, S): the Lab8 code "
    "planes L, a, b (channel first), uncompressed",
    "why": "decoding a 360 px Lab PNG costs 2-3 ms per sample in the loader, the .npy nothing; the price is "
    "disk (about 2.3x a level-1 PNG on photos)",
    "L": "code = round(L * 255 / 100), L in [0, 100]",
    "a": "code = round(a + 128), a clipped to [-128, 127]",
    "b": "code = round(b + 128), b clipped to [-128, 127]",
    "decode": "L = code * 100 / 255, a = code - 128, b = code - 128 (semcolor.color.decode_lab8)",
    "colorspace": "CIE Lab, D65 white, 2-degree observer, from sRGB with sRGB companding",
}
LABEL_ENCODING = ("<key>.seg.png: PNG, mode L (rows unfiltered, zlib level 1), uint8 class index; "
                  "nearest-neighbour resize")
RESIZE_DESCRIPTION = (
    "image: direct antialiased bilinear resize to stored_size x stored_size in sRGB (aspect ratio not kept), "
    "then Lab; a JPEG at least twice stored_size on both sides is decoded in draft mode (libjpeg DCT scaling "
    "by 1/2, 1/4 or 1/8, staying >= stored_size) and resized from there; label: nearest-neighbour resize to "
    "the same size"
)


# A shard's file name (``shard_name``): a rebuild removes exactly the files that match it
SHARD_NAME_PATTERN = re.compile(r"^(?P<split>[A-Za-z0-9_\-]+)-(?P<index>\d{6})\.tar$")
MEMBER_SUFFIXES = ("json", "lab.npy", "seg.png")  # the fixed order of a sample's members in a shard
FORMAT1_MEMBER_SUFFIXES = ("json", "lab.png", "seg.png")  # format 1, still read


def stored_size_for(size: int) -> int:
    """The side in pixels stored on disk for shard set ``size`` (352 -> 360, otherwise ``size``)."""
    if size <= 0:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    return STORED_SIZES.get(size, size)


def encode_json(value: Any) -> bytes:
    """The ``<key>.json`` member's bytes: sorted keys, no spaces, ASCII only (equal values, equal bytes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(array: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL, row_filter: str = "up") -> bytes:
    """Lossless PNG bytes of uint8 ``array``: (H, W) -> grayscale (PIL mode 'L'), (H, W, 3) -> truecolor
    (PIL mode 'RGB'; the channel bytes are stored as they are, whatever they mean).

    A minimal standard PNG (IHDR, one IDAT, IEND; 8 bits, no interlace) with the same filter on every
    row - ``row_filter`` "up" (each byte minus the byte above it: photos) or "none" (label maps: their
    repeated rows compress as well as LZ77 matches, and decode without an unfiltering pass) - and zlib at
    ``compress_level`` (0-9). Written here rather than with PIL because PIL tries all five filters on every
    row: that costs more than the compression itself at level 1 (0.9 of 1.7 ms for a 128x128 Lab image)
    for files only ~5% smaller. Deterministic for a given array and zlib build."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    if row_filter not in _PNG_FILTERS:
        raise ValueError(f"row_filter must be one of {sorted(_PNG_FILTERS)}, got {row_filter!r}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot encode an empty image of shape {array.shape}")
    rows = array.reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_FILTERS[row_filter]
    if row_filter == "up":  # modulo 256; the first row has nothing above it
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    else:
        filtered[:, 1:] = rows
    color_type = 0 if array.ndim == 2 else 2  # grayscale / truecolor
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def decode_png(data: bytes) -> np.ndarray:
    """The uint8 pixels of PNG bytes: (H, W) for mode 'L', (H, W, 3) for mode 'RGB'."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"expected a PNG of mode 'L' or 'RGB', got {image.mode!r}")
        return np.asarray(image, dtype=np.uint8).copy()


def encode_npy(array: np.ndarray) -> bytes:
    """NumPy ``.npy`` bytes (format 1.0, C order) of a uint8 array, header written here so the bytes
    depend on nothing but the array: the same as ``numpy.save`` writes (tests/test_shards.py compares),
    whatever numpy version is installed."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    shape = repr(tuple(int(side) for side in array.shape))  # "(3, 128, 128)", as numpy writes it
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': " + shape + ", }"
    padding = -(len(_NPY_MAGIC) + 4 + len(header) + 1) % _NPY_ALIGN
    header_bytes = (header + " " * padding + "\n").encode("latin1")
    return b"".join((_NPY_MAGIC, b"\x01\x00", struct.pack("<H", len(header_bytes)), header_bytes,
                     np.ascontiguousarray(array).tobytes()))


@functools.lru_cache(maxsize=64)
def _npy_layout(prefix: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) of a format-1.0 .npy header (magic through the header's newline).
    Cached: every sample of a shard set has the same header, so each distinct one is parsed once."""
    fields = ast.literal_eval(prefix[10:].decode("latin1"))
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"not a .npy header: {prefix[10:]!r}")
    shape = tuple(int(side) for side in fields["shape"])
    return np.dtype(fields["descr"]), shape, bool(fields["fortran_order"])


def decode_npy(data: bytes) -> np.ndarray:
    """The array of ``.npy`` bytes, as a read-only view of ``data`` (no copy) for format 1.0 headers;
    any other version goes through ``numpy.load``. ValueError for bytes that are not a plain .npy."""
    if data[:6] != _NPY_MAGIC:
        raise ValueError("not a .npy file (bad magic)")
    if data[6:8] != b"\x01\x00":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        return array
    (header_length,) = struct.unpack("<H", data[8:10])
    dtype, shape, fortran = _npy_layout(bytes(data[: 10 + header_length]))
    if dtype.hasobject:
        raise ValueError(".npy holds Python objects; refusing to unpickle")
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != 10 + header_length + count * dtype.itemsize:
        raise ValueError(f".npy of shape {shape} {dtype} has {len(data)} bytes, not "
                         f"{10 + header_length + count * dtype.itemsize}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=10 + header_length)
    return array.reshape(shape, order="F" if fortran else "C")


_TAR_ENCODING = "utf-8"  # what TarFile uses on this project's platforms (its ENCODING: the file system's)


def tar_member_info(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file header with every field that could vary between machines or runs fixed."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def tar_member_bytes(name: str, data: bytes) -> bytes:
    """The bytes ``tarfile`` writes for one member (``tar_member_info``'s USTAR header, ``data``, NULs to
    the next 512-byte block): built here so that the shard writer can hash them as it writes, rather than
    read each shard back, and skip ``TarFile.addfile``'s copies (a third of the writing time)."""
    header = tar_member_info(name, len(data)).tobuf(tarfile.USTAR_FORMAT, _TAR_ENCODING, "surrogateescape")
    return b"".join((header, data, bytes(-len(data) % tarfile.BLOCKSIZE)))


def tar_end_bytes(offset: int) -> bytes:
    """What ``TarFile.close`` appends to an archive of ``offset`` bytes: two zero blocks, then NULs to a
    whole record (10240 bytes)."""
    end = offset + 2 * tarfile.BLOCKSIZE
    return bytes(2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE))


def shard_name(split: str, index: int) -> str:
    """``<split>-<index:06d>.tar``."""
    return f"{split}-{index:06d}.tar"
