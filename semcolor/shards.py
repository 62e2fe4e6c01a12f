"""Convert a source split into byte-deterministic Lab WebDataset shards, and read them back.

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
read by ``read_shard_samples`` and the loader.

Geometry: the image is resized straight to S x S (the aspect ratio is NOT kept) with an antialiased
bilinear (tent) filter, in sRGB, before the Lab conversion; the label is resized to S x S with nearest
neighbour, so 255 stays 255 and no class index is invented. Stretching rather than shorter side + center
crop is what both papers do (Pixelated Semantic Colorization: "rescale each image to 128 x 128";
Semantic-driven Colorization: "scale ... to 360 x 360, randomly crop them to 352 x 352"), and it keeps
every labelled pixel, where a crop would drop the borders. A source with ``load_resized`` (the VOC-layout
sources) decodes a JPEG at least twice the target in draft mode and resizes from there
(``semcolor.sources.labels``); the others are loaded in full and resized here.

Shard ``<split>-000000.tar`` holds the first ``samples_per_shard`` converted samples in sorted key order,
and so on. The bytes depend only on the inputs and this code: fixed tar metadata (USTAR, mtime 0, uid/gid
0, empty owner names, mode 0o644), fixed member order, deterministic NPY, PNG and JSON encoders; the work
is split across processes in chunks and reassembled in key order, so any worker count gives the same files.

Bad inputs (``SampleError`` from ``Source.load``, or a sample whose label is not the size of its image)
follow an explicit policy: ``on_error="raise"`` stops at the first one naming its key; ``"skip"`` leaves
it out, lists it with its reason in ``manifest.json`` and fails once more than ``max_skipped_fraction`` of
the split was skipped. ``manifest.json`` is written last and atomically: a directory without it is not a
finished build.
"""

from __future__ import annotations

import ast
import collections
import ctypes
import functools
import io
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from semcolor.atomic import atomic_output, write_text_atomic
from semcolor.hashing import file_sha256
from semcolor.shard_settings import OnError, ShardSettings
from semcolor.color import rgb8_to_lab8_planar
# IMAGE_RESAMPLE: the filter the shards are resized with, re-exported here where it used to live
from semcolor.sources.labels import IMAGE_RESAMPLE, resize_image, resize_label  # noqa: F401
from semcolor.sources.base import Item, Sample, SampleError, Source
from semcolor.errors import TooManySkippedError

MANIFEST_NAME = "manifest.json"
# Format 2: <key>.lab.npy (raw channel-first Lab planes) replaces format 1's <key>.lab.png; the map's PNG
# is written unfiltered. Readers accept both.
FORMAT_VERSION = 2
MANIFEST_FORMAT = f"semcolor-lab-webdataset/{FORMAT_VERSION}"

# zlib level of the PNGs. Measured on 500x375 photos resized to 128 (bench/shards.py): level 1 encodes
# 3-5x faster than the default 6 for files about 15% larger; levels 2-9 buy a few percent more at several
# times the cost. Encoding is a large share of the conversion time, so the fast level wins.
PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTERS = {"none": 0, "up": 2}
_NPY_MAGIC = b"\x93NUMPY"
_NPY_ALIGN = 64  # numpy's own header alignment (numpy.lib.format.ARRAY_ALIGN)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)

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


_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_\-]+)-(?P<index>\d{6})\.tar$")
_MEMBER_SUFFIXES = ("json", "lab.npy", "seg.png")  # the fixed order of a sample's members in a shard
_FORMAT1_SUFFIXES = ("json", "lab.png", "seg.png")  # format 1, still read


@dataclass(frozen=True)
class ConvertedSample:
    """One sample, encoded and ready for a shard. ``members`` are (suffix, bytes) in the fixed order.

    ``lab_npy``: the format-2 Lab planes (``encode_npy``); ``lab_png``: a format-1 Lab PNG instead (for
    callers that build format-1 shards by hand, e.g. test fixtures). Exactly one of the two is given."""

    key: str
    metadata_json: bytes
    seg_png: bytes
    lab_npy: bytes | None = None
    lab_png: bytes | None = None

    def __post_init__(self) -> None:
        if (self.lab_npy is None) == (self.lab_png is None):
            raise ValueError(
                f"sample {self.key!r}: give exactly one of lab_npy (format 2) and lab_png (format 1)"
            )

    @property
    def members(self) -> tuple[tuple[str, bytes], ...]:
        if self.lab_npy is not None:
            return tuple(zip(_MEMBER_SUFFIXES, (self.metadata_json, self.lab_npy, self.seg_png)))
        return tuple(zip(_FORMAT1_SUFFIXES, (self.metadata_json, self.lab_png, self.seg_png)))


@dataclass(frozen=True)
class Skipped:
    """An input left out of the shards, and why (recorded in the manifest)."""

    key: str
    reason: str


@dataclass(frozen=True)
class ShardInfo:
    """One written shard: file name (relative to the shard directory), sample count, sha256 hex digest."""

    file: str
    samples: int
    sha256: str


@dataclass(frozen=True)
class SplitResult:
    """What converting one split produced: ``items`` listed, ``samples`` written, its shards and skips."""

    split: str
    items: int
    samples: int
    shards: tuple[ShardInfo, ...]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class ShardSample:
    """A sample read back from a shard.

    lab8: uint8 (S, S, 3) Lab8 codes, channel last (L, a, b; decode with ``semcolor.color.decode_lab8``),
    whatever the shard format stores.
    label: uint8 (S, S), class index or 255. metadata: the parsed ``<key>.json``."""

    key: str
    lab8: np.ndarray
    label: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


class ChunkFuture(Protocol):
    """What the ordered map needs of a future: ``result()``, and ``cancel()`` if it has one.
    concurrent.futures, Prefect and Dask futures all fit."""

    def result(self) -> list[ConvertedSample | Skipped]: ...


SubmitChunk = Callable[[Sequence[Item]], ChunkFuture]


# ----------------------------------------------------------------------------------------------- encoding


def stored_size_for(size: int) -> int:
    """The side in pixels stored on disk for shard set ``size`` (352 -> 360, otherwise ``size``)."""
    if size <= 0:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    return STORED_SIZES.get(size, size)


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
            _PNG_SIGNATURE,
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


def resize_sample(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` uint8 (H, W, 3) sRGB and ``label`` uint8 (H, W) resized to ``size`` x ``size``.

    The image: antialiased bilinear in 8-bit sRGB (aspect ratio not kept); the label: nearest neighbour,
    so every output value (255 included) is one of the input values."""
    return resize_image(image, size), resize_label(label, size)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _check_sample(sample: Sample) -> str | None:
    """Why ``sample`` cannot be converted, or None. Sources check these too; this guards the shards
    against a source that does not."""
    image, label = sample.image, sample.label
    image_ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
    if not (image_ok and image.shape[2] == 3):
        return f"image must be uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} {np.shape(image)}"
    if not (isinstance(label, np.ndarray) and label.dtype == np.uint8 and label.ndim == 2):
        return f"label must be uint8 (H, W), got {getattr(label, 'dtype', type(label))} {np.shape(label)}"
    if label.shape != image.shape[:2]:
        return (
            f"label is {label.shape[1]}x{label.shape[0]} (WxH) but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        return "image is empty"
    return None


def resized_loader(source: Source) -> Callable[[Item, int], Sample] | None:
    """``source.load_resized`` when the source decodes straight to a target size, else None.

    The protocol: ``load_resized(item, size)`` returns a Sample whose image (size, size, 3) and label
    (size, size) are what ``load`` + ``resize_sample`` would store (up to the documented draft-mode
    difference for large JPEGs), with the same checks and SampleErrors, and ``metadata['original_size']``
    the file's own [width, height]. A subclass that overrides ``load`` but not ``load_resized`` (it adds
    to or changes the sample, as the synthetic world adds its facts) goes through its ``load``."""
    method = getattr(type(source), "load_resized", None)
    if method is None:
        return None
    mro = type(source).__mro__
    load_owner = next(cls for cls in mro if "load" in vars(cls))
    resized_owner = next(cls for cls in mro if "load_resized" in vars(cls))
    return source.load_resized if issubclass(resized_owner, load_owner) else None


def convert_item(source: Source, item: Item, size: int) -> ConvertedSample | Skipped:
    """Load ``item`` (``source.load_resized`` where it has one, see ``resized_loader``, else
    ``source.load`` + ``resize_sample``) and encode it at ``size`` x ``size`` pixels (the stored size).

    Returns ``Skipped(key, reason)`` for bad data (``SampleError`` from the source, or a label of another
    size than its image); any other exception is a bug and propagates."""
    _keep_freed_buffers()
    load_resized = resized_loader(source)
    try:
        sample = source.load(item) if load_resized is None else load_resized(item, size)
    except SampleError as error:
        return Skipped(item.key, error.reason)
    problem = _check_sample(sample)
    if problem is not None:
        return Skipped(item.key, f"{problem} ({', '.join(item.paths)})")
    if load_resized is None:
        height, width = sample.image.shape[:2]
        original_size = [int(width), int(height)]
        image, label = resize_sample(sample.image, sample.label, size)
    else:
        original_size = [int(side) for side in sample.metadata["original_size"]]
        image, label = sample.image, sample.label
        if image.shape[:2] != (size, size):
            raise ValueError(f"{type(source).__name__}.load_resized({item.key!r}, {size}) returned "
                             f"{image.shape[1]}x{image.shape[0]} pixels")
    metadata = {
        **sample.metadata,
        "source": source.name,
        "split": item.split,
        "original_id": item.original_id,
        "original_size": original_size,
        "stored_size": [size, size],
    }
    return ConvertedSample(
        key=item.key,
        metadata_json=_json_bytes(metadata),
        lab_npy=encode_npy(rgb8_to_lab8_planar(np.ascontiguousarray(image))),
        seg_png=encode_png(np.ascontiguousarray(label), row_filter="none"),
    )


def convert_items(source: Source, items: Sequence[Item], size: int) -> list[ConvertedSample | Skipped]:
    """``convert_item`` over one chunk, in order: the unit of work sent to a process or a task."""
    return [convert_item(source, item, size) for item in items]


_allocator_tuned = False


def _keep_freed_buffers() -> None:
    """Once per process: ask glibc to keep freed image buffers for reuse instead of unmapping them.

    By default glibc serves blocks over 128 KiB with mmap and trims the heap eagerly, so a fresh worker
    process pays ~750 page faults and ~2 ms of kernel time per 500x375 image (measured: a quarter of the
    conversion) re-zeroing memory it has just freed. Long-lived processes escape this only because glibc
    raises its thresholds after large frees. No-op where the C library has no ``mallopt``."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)  # blocks up to 16 MiB (a 2300x2300 RGB image) from the heap
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # keep up to 64 MiB of free heap before returning it


# ----------------------------------------------------------------------------------------------- writing


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file header with every field that could vary between machines or runs fixed."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_shard(samples: Iterable[ConvertedSample], path: str | Path) -> ShardInfo:
    """Write ``samples`` (strictly increasing keys) to the tar ``path`` atomically; its ShardInfo.

    The tar is USTAR with fixed metadata (see the module docstring), written to a temporary file beside
    ``path`` and renamed over it only when complete."""
    path = Path(path)
    count = 0
    with atomic_output(path) as stream:
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for suffix, data in sample.members:
                    tar.addfile(_tar_info(f"{sample.key}.{suffix}", len(data)), io.BytesIO(data))
                count += 1
    return ShardInfo(file=path.name, samples=count, sha256=file_sha256(path))


def shard_name(split: str, index: int) -> str:
    """``<split>-<index:06d>.tar``."""
    return f"{split}-{index:06d}.tar"


def _checked_order(samples: Iterable[ConvertedSample]) -> Iterator[ConvertedSample]:
    """``samples`` unchanged; ValueError at the first key that is not greater than the one before (a
    repeated key would make two samples collide in a shard, an unsorted one would break determinism)."""
    previous: str | None = None
    for sample in samples:
        if previous is not None and sample.key <= previous:
            raise ValueError(
                f"sample keys must be strictly increasing: {sample.key!r} came after {previous!r}"
            )
        previous = sample.key
        yield sample


def write_shards(
    samples: Iterable[ConvertedSample], out_dir: str | Path, split: str, samples_per_shard: int
) -> list[ShardInfo]:
    """Write ``samples`` (strictly increasing keys) into ``out_dir/<split>-000000.tar``, ... with
    ``samples_per_shard`` samples each (the last one may hold fewer). A split without samples writes no
    shard. Returns the ShardInfo of each shard, in order."""
    if samples_per_shard <= 0:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iterator = _checked_order(samples)
    shards: list[ShardInfo] = []
    while True:
        first = next(iterator, None)
        if first is None:
            return shards
        batch = [first, *(sample for _, sample in zip(range(samples_per_shard - 1), iterator))]
        shards.append(write_shard(batch, out_dir / shard_name(split, len(shards))))


# ----------------------------------------------------------------------------------------------- converting


def ordered_results(
    submit_chunk: SubmitChunk, chunks: Iterable[Sequence[Item]], window: int
) -> Iterator[list[ConvertedSample | Skipped]]:
    """Submit chunks with at most ``window`` in flight and yield their results in submission order.

    Bounded memory (``window`` chunks of encoded samples) and an order that does not depend on which
    worker finishes first. Futures still pending when the consumer stops (an error) are cancelled."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    pending: collections.deque[ChunkFuture] = collections.deque()
    chunk_iterator = iter(chunks)
    try:
        for chunk in chunk_iterator:
            pending.append(submit_chunk(chunk))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            next_chunk = next(chunk_iterator, None)
            if next_chunk is not None:
                pending.append(submit_chunk(next_chunk))
            yield result
    finally:
        for future in pending:
            cancel = getattr(future, "cancel", None)
            if cancel is not None:
                cancel()


def auto_chunk_size(count: int, window: int, smallest: int = 8, largest: int = 256) -> int:
    """A chunk size giving about two chunks per in-flight slot (``window``) over ``count`` items, kept in
    [smallest, largest]: enough chunks to balance the workers, few enough that a per-chunk overhead (a
    Prefect task run costs ~0.1-0.5 s) stays small next to the work (~5 ms per 128 px image)."""
    return max(smallest, min(largest, -(-count // (2 * window))))


def chunked(items: Sequence[Item], chunk_size: int) -> list[Sequence[Item]]:
    """``items`` cut into consecutive chunks of ``chunk_size`` (the last may be shorter)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [items[start : start + chunk_size] for start in range(0, len(items), chunk_size)]


def sorted_items(source: Source, split: str) -> list[Item]:
    """``source.list_items(split)`` sorted by key; ValueError naming a key listed twice."""
    items = sorted(source.list_items(split), key=lambda item: item.key)
    for before, after in zip(items, items[1:]):
        if before.key == after.key:
            raise ValueError(f"{source.name} {split}: key {after.key!r} is listed twice")
    return items


def apply_skip_policy(
    results: Iterable[ConvertedSample | Skipped],
    skipped: list[Skipped],
    *,
    total: int,
    on_error: OnError,
    max_skipped_fraction: float,
    where: str,
) -> Iterator[ConvertedSample]:
    """The converted samples of ``results``; every Skipped is appended to ``skipped``.

    ``on_error="raise"``: SampleError(key, reason) at the first skip. ``"skip"``: TooManySkippedError as
    soon as more than ``max_skipped_fraction * total`` inputs were skipped (no need to convert the rest)."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    for result in results:
        if isinstance(result, ConvertedSample):
            yield result
            continue
        if on_error == "raise":
            raise SampleError(result.key, f"{result.reason} (in {where}; on_error='raise')")
        skipped.append(result)
        if len(skipped) > max_skipped_fraction * total:
            listed = "; ".join(f"{s.key}: {s.reason}" for s in skipped[:5])
            raise TooManySkippedError(
                f"{where}: {len(skipped)} of {total} inputs skipped, more than max_skipped_fraction="
                f"{max_skipped_fraction} allows ({listed}{' ...' if len(skipped) > 5 else ''}). "
                "Fix or re-extract the source, or raise max_skipped_fraction."
            )


def convert_split(
    source: Source,
    split: str,
    size: int,
    out_dir: str | Path,
    *,
    settings: ShardSettings = ShardSettings(),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    submit_chunk: SubmitChunk | None = None,
    window: int | None = None,
) -> SplitResult:
    """Convert every item of ``split`` at ``size`` x ``size`` pixels into shards in ``out_dir``.

    Where the work runs: ``submit_chunk`` (a callable items -> future, e.g. a Prefect task's submit) if
    given, else ``executor`` (any concurrent.futures.Executor), else this process when ``workers == 1``,
    else a pool of ``workers`` processes. Chunks of ``chunk_size`` items (default ``auto_chunk_size``) are
    the unit of work; at most ``window`` chunks (default ``2 * max(workers, 2)``) are in flight, and
    results are reassembled in key order, so the shards are identical for any of these choices.
    Writes only shards (no manifest; see ``convert_source``)."""
    if workers <= 0:
        raise ValueError(f"workers must be positive, got {workers}")
    items = sorted_items(source, split)
    window = window or 2 * max(workers, 2)
    chunks = chunked(items, chunk_size or auto_chunk_size(len(items), window))
    where = f"{source.name} {split} at {size}px"
    skipped: list[Skipped] = []
    own_pool: ProcessPoolExecutor | None = None
    chunk_results: Iterable[list[ConvertedSample | Skipped]] = ()
    if submit_chunk is None:
        if executor is None and workers > 1:
            executor = own_pool = process_pool(workers)
        if executor is not None:
            pool = executor

            def submit_chunk(chunk: Sequence[Item]) -> ChunkFuture:
                return pool.submit(convert_items, source, chunk, size)

    try:
        if submit_chunk is None:
            chunk_results = (convert_items(source, chunk, size) for chunk in chunks)
        else:
            chunk_results = ordered_results(submit_chunk, chunks, window)
        with tqdm(total=len(items), desc=where, unit="img", disable=not progress) as bar:

            def flattened() -> Iterator[ConvertedSample | Skipped]:
                for results in chunk_results:
                    yield from results
                    bar.update(len(results))

            accepted = apply_skip_policy(
                flattened(),
                skipped,
                total=len(items),
                on_error=settings.on_error,
                max_skipped_fraction=settings.max_skipped_fraction,
                where=where,
            )
            shards = write_shards(accepted, out_dir, split, settings.samples_per_shard)
    finally:
        close = getattr(chunk_results, "close", None)
        if close is not None:  # cancels the chunks still in flight when we stop early
            close()
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)
    return SplitResult(
        split=split,
        items=len(items),
        samples=sum(shard.samples for shard in shards),
        shards=tuple(shards),
        skipped=tuple(skipped),
    )


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a clean server process that has this module loaded.

    Not plain fork: the caller may hold threads (tqdm's monitor, Prefect's clients) whose locks fork
    would copy mid-state. Not spawn: every worker would import this module (numpy, PIL, and torch through
    semcolor.color) again, seconds each; the fork server imports it once per Python process."""
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context)


def clear_outputs(out_dir: str | Path) -> None:
    """Remove the manifest first (the directory stops claiming to be complete), then every shard and
    leftover temporary file of a previous build. Other files are left alone."""
    out_dir = Path(out_dir)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    if not out_dir.is_dir():
        return
    for path in out_dir.iterdir():
        if _SHARD_NAME.match(path.name) or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def convert_source(
    source: Source,
    out_dir: str | Path,
    size: int,
    splits: Sequence[str] | None = None,
    *,
    stored_size: int | None = None,
    settings: ShardSettings = ShardSettings(),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    submit_chunk_for: Callable[[int], SubmitChunk] | None = None,
    window: int | None = None,
) -> Path:
    """Build the shard set ``size`` of ``source`` in ``out_dir``: clear it, convert each split (all of the
    source's by default), then write ``manifest.json``. Returns the manifest path.

    ``stored_size`` defaults to ``stored_size_for(size)``. ``submit_chunk_for(stored_size)`` may provide
    the chunk submitter (Prefect/Dask); see ``convert_split`` for the other arguments. If anything fails,
    the directory is left without a manifest."""
    stored = stored_size_for(size) if stored_size is None else stored_size
    splits = tuple(source.splits if splits is None else splits)
    out_dir = Path(out_dir)
    clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own_pool = None
    if submit_chunk_for is None and executor is None and workers > 1:
        executor = own_pool = process_pool(workers)  # one pool for every split
    try:
        results = [
            convert_split(
                source,
                split,
                stored,
                out_dir,
                settings=settings,
                workers=workers,
                chunk_size=chunk_size,
                progress=progress,
                executor=executor,
                submit_chunk=None if submit_chunk_for is None else submit_chunk_for(stored),
                window=window,
            )
            for split in splits
        ]
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)
    policy = {"on_error": settings.on_error, "max_skipped_fraction": settings.max_skipped_fraction}
    return write_manifest(
        out_dir,
        source_description=source.describe(),
        size=size,
        stored_size=stored,
        splits=results,
        skip_policy=policy,
    )


# ----------------------------------------------------------------------------------------------- manifest


def manifest_data(
    *,
    source_description: Mapping[str, Any],
    size: int,
    stored_size: int,
    splits: Sequence[SplitResult],
    skip_policy: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest as plain data (see ``write_manifest``)."""
    description = dict(source_description)
    return {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "source": description.get("source"),
        "size": size,
        "stored_size": [stored_size, stored_size],
        "resize": RESIZE_DESCRIPTION,
        "lab_encoding": dict(LAB_ENCODING),
        "label_encoding": LABEL_ENCODING,
        "members": [f"<key>.{suffix}" for suffix in _MEMBER_SUFFIXES],
        "class_names": list(description.get("class_names", [])),
        "ignore_index": description.get("ignore_index"),
        "source_description": description,
        "skip_policy": dict(skip_policy),
        "splits": {
            result.split: {
                "items": result.items,
                "samples": result.samples,
                "shards": [{"file": s.file, "samples": s.samples, "sha256": s.sha256} for s in result.shards],
                "skipped": [{"key": s.key, "reason": s.reason} for s in result.skipped],
            }
            for result in splits
        },
    }


def write_manifest(
    out_dir: str | Path,
    *,
    source_description: Mapping[str, Any],
    size: int,
    stored_size: int,
    splits: Sequence[SplitResult],
    skip_policy: Mapping[str, Any],
) -> Path:
    """Write ``out_dir/manifest.json`` atomically and return its path.

    Contents: format, source, ``size`` (the shard set's name, the training size) and ``stored_size``
    ([W, H] on disk), resize, Lab and label encodings, class names, ignore index, the source's
    ``describe()``, the skip policy, and per split: items listed, samples written, shards
    [{file, samples, sha256}] and skipped [{key, reason}]. Sorted keys, indent 2: same build, same bytes."""
    data = manifest_data(
        source_description=source_description,
        size=size,
        stored_size=stored_size,
        splits=splits,
        skip_policy=skip_policy,
    )
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    path = write_text_atomic(Path(out_dir) / MANIFEST_NAME, text)
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a shard directory; FileNotFoundError saying the build is
    incomplete when it is missing."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the shards in {out_dir} are missing or their build did not finish"
        )
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------- reading


def read_shard_samples(path: str | Path) -> Iterator[ShardSample]:
    """The samples of one shard, in stored order, with lab8 and label decoded (see ``ShardSample``).

    ValueError naming the shard for a sample with missing or unexpected members."""
    path = Path(path)
    with tarfile.open(path, mode="r:") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            key_part, _, suffix = member.name.partition(".")
            if key is not None and key_part != key:
                yield _shard_sample(path, key, members)
                members = {}
            key = key_part
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file always has contents
            members[suffix] = extracted.read()
        if key is not None:
            yield _shard_sample(path, key, members)


def _shard_sample(path: Path, key: str, members: Mapping[str, bytes]) -> ShardSample:
    suffixes = sorted(members)
    if suffixes not in (sorted(_MEMBER_SUFFIXES), sorted(_FORMAT1_SUFFIXES)):
        raise ValueError(
            f"{path}: sample {key!r} has members {suffixes}, expected {list(_MEMBER_SUFFIXES)} "
            f"(or format 1's {list(_FORMAT1_SUFFIXES)})"
        )
    try:
        lab8 = decode_lab_member(members)
    except ValueError as error:
        raise ValueError(f"{path}: sample {key!r}: {error}") from None
    return ShardSample(
        key=key,
        lab8=np.moveaxis(lab8, 0, -1).copy(order="C"),  # channel last, writable
        label=decode_png(members["seg.png"]),
        metadata=json.loads(members["json"]),
    )


def decode_lab_member(members: Mapping[str, bytes]) -> np.ndarray:
    """The Lab8 code planes, uint8 (3, S, S), of a sample's members: ``lab.npy`` (format 2, a read-only
    view of its bytes) or ``lab.png`` (format 1, channel-last pixels, moved first). ValueError for an
    array of another type or shape; KeyError when the sample has neither member."""
    if "lab.npy" in members:
        planes = decode_npy(members["lab.npy"])
        if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[0] != 3:
            raise ValueError(f"lab.npy must be uint8 (3, S, S), got {planes.dtype} {planes.shape}")
        return planes
    if "lab.png" in members:
        with Image.open(io.BytesIO(members["lab.png"])) as image:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        return pixels.transpose(2, 0, 1)
    raise KeyError("lab.npy")
