"""Small readers shared by the sources: split lists, RGB images, VOC palette label PNGs, the VOC colormap,
and the shard geometry (an image and its label resized straight to S x S).

Every reader raises plain exceptions (FileNotFoundError, ValueError, OSError); the sources turn them into
``SampleError`` with the item's key so the converter can skip and record one bad input.

Decoding for a known, much smaller target (``read_rgb_image_resized``, ``decode_image_and_label_resized``,
what the shard converter calls through ``Source.load_resized``): a JPEG is decoded in draft mode, libjpeg
scaling the DCT blocks by 1/2, 1/4 or 1/8 to the smallest size that keeps both sides >= the target, and the
antialiased bilinear resize starts from there. That skips most of the inverse DCT, colour conversion and
resize work (entropy decoding is still done in full, so a truncated file still fails); the result differs
from the full decode + resize by a fraction of a code (tests/test_sources_voc.py measures it). Images that
are not JPEG, or not at least twice the target on both sides, take the full decode and give exactly
``resize_image(read_rgb_image(path), size)``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from semcolor.data.sources.base import Item, SampleError, Source
from semcolor.data.sources.png_indices import plain_png_indices

# Antialiased: PIL widens the kernel with the scale factor when downsizing, so this is a tent filter over
# the whole source footprint (torchvision's antialiased default too). Bicubic is a little sharper but
# costs 1.6x as much (1.5 vs 0.9 ms for 500x375 -> 128, more than the JPEG decode itself).
IMAGE_RESAMPLE = Image.Resampling.BILINEAR
# Labels: nearest neighbour, so every output value (255 included) is one of the input values.
LABEL_RESAMPLE = Image.Resampling.NEAREST
# Draft-decode a JPEG only when libjpeg can scale it by at least 1/2 and stay >= the target on both sides.
_MIN_DRAFT_FACTOR = 2

# WebDataset splits a sample's file names at the first dot, and keys become tar member names: an id used
# as a key must have neither dots nor path separators nor whitespace.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def voc_colormap(num_entries: int = 256) -> np.ndarray:
    """The standard PASCAL VOC bit-interleaved colormap, uint8 of shape (num_entries, 3), RGB in [0, 255].

    Entry i is the color of class index i (0 black background, 1 (128, 0, 0) aeroplane, ...,
    255 (224, 224, 192) void). Bits 0/1/2 of i go to the top bits of R/G/B, then bits 3/4/5, and so on.
    """
    indices = np.arange(num_entries, dtype=np.int64)
    colormap = np.zeros((num_entries, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (indices >> (3 * shift + channel)) & 1
            colormap[:, channel] |= bit << (7 - shift)
    return colormap.astype(np.uint8)


def check_key(image_id: str, where: str | Path) -> str:
    """``image_id`` unchanged if it is safe as a WebDataset key; ValueError naming ``where`` otherwise."""
    if not _SAFE_KEY.match(image_id):
        raise ValueError(
            f"{where}: id {image_id!r} cannot be a sample key (only letters, digits, '_' and '-' are allowed)"
        )
    return image_id


def read_id_list(path: str | Path) -> list[str]:
    """The ids of a split list file (one id per line, blank lines ignored), in file order.

    Raises FileNotFoundError if the file is absent and ValueError naming the file for an id that is not a
    safe key or appears twice (two samples with one key would overwrite each other in a shard)."""
    path = Path(path)
    ids: list[str] = []
    seen: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        image_id = line.strip()
        if not image_id:
            continue
        check_key(image_id, path)
        if image_id in seen:
            raise ValueError(f"{path}: id {image_id!r} is listed twice")
        seen.add(image_id)
        ids.append(image_id)
    return ids


def read_rgb_image(path: str | Path) -> np.ndarray:
    """Decode an image file fully into uint8 RGB of shape (H, W, 3), sRGB values in [0, 255].

    The pixels are decoded here (not lazily), so a truncated or corrupt file raises OSError now.
    Grayscale/CMYK/palette images are converted to RGB."""
    with Image.open(path) as image:
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.array(image, dtype=np.uint8)  # a writable copy


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) sRGB -> (size, size, 3): antialiased bilinear in 8-bit sRGB, aspect ratio not kept;
    returned as it is when already size x size."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image, mode="RGB").resize((size, size), IMAGE_RESAMPLE))


def resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) class indices -> (size, size) by nearest neighbour (every value is an input value)."""
    if label.shape == (size, size):
        return label
    return np.asarray(Image.fromarray(label, mode="L").resize((size, size), LABEL_RESAMPLE))


def read_rgb_image_resized(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file straight to uint8 RGB (size, size, 3); also returns the file's own (width,
    height). JPEG draft mode when the file is at least twice ``size`` on both sides (module docstring),
    otherwise exactly ``resize_image(read_rgb_image(path), size)``. Raises what ``read_rgb_image`` raises."""
    with Image.open(path) as image:
        original = image.size
        box = None
        if min(original) >= _MIN_DRAFT_FACTOR * size:
            drafted = image.draft("RGB", (size, size))  # None for formats without a draft mode
            if drafted is not None and image.size != original:
                box = drafted[1]  # the drafted pixels covering the original extent (sides rounded up)
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size == (size, size) and box is None:
            return np.asarray(image, dtype=np.uint8).copy(), original
        return np.asarray(image.resize((size, size), IMAGE_RESAMPLE, box=box)), original


def read_palette_indices(path: str | Path) -> np.ndarray:
    """A palette ('P') or grayscale ('L') PNG as its stored pixel values: uint8 of shape (H, W).

    The values ARE the class indices (VOC: 0 background, 1-20 classes, 255 void); the palette colors are
    ignored, never mapped back to indices. Any other mode raises ValueError: converting an RGB label
    through a palette would silently invent indices.

    A plain 8-bit, unfiltered, non-interlaced PNG (VOC's own labels) is inflated directly
    (``semcolor.data.sources.png_indices``: the same values, about 6x faster); anything else goes through PIL."""
    data = Path(path).read_bytes()
    indices = plain_png_indices(data)
    if indices is not None:
        return indices
    with Image.open(path) as image:  # by path, so that its errors name the file
        image.load()
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: label image has mode {image.mode!r}, expected a palette ('P') PNG")
        return np.array(image, dtype=np.uint8)  # a writable copy


def encode_palette_png(label: np.ndarray, colormap: np.ndarray | None = None) -> bytes:
    """PNG bytes of a uint8 (H, W) index map in mode 'P' with ``colormap`` (default: the VOC colormap).

    Deterministic: the same array gives the same bytes."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be uint8 of shape (H, W), got {label.dtype} {label.shape}")
    palette = voc_colormap() if colormap is None else np.asarray(colormap, dtype=np.uint8)
    image = Image.fromarray(label, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def invalid_label_values(label: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    """Sorted values of ``label`` outside [0, num_classes) that are not ``ignore_index`` (empty if valid)."""
    if label.dtype == np.uint8:  # the usual case: a few fast passes, no histogram of the whole map
        if label.size == 0 or label.max() < num_classes:
            return []
        bad = label >= num_classes
        if 0 <= ignore_index <= 255:
            bad &= label != ignore_index
        if not bad.any():
            return []
        return [int(value) for value in np.flatnonzero(np.bincount(label[bad], minlength=256))]
    values = np.unique(label)
    bad = values[(values < 0) | ((values >= num_classes) & (values != ignore_index))]
    return [int(value) for value in bad]


def missing_tree_error(path: Path, what: str, hint: str) -> FileNotFoundError:
    """The error raised when an extracted tree is absent: names the file and how to get it."""
    return FileNotFoundError(f"{path} not found: {what} is not extracted here. Get it with `{hint}`.")


def decode_image_and_label(
    key: str,
    image_path: Path,
    label_path: Path,
    read_label: Callable[[Path], np.ndarray],
    num_classes: int,
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one (image, label) pair and check that they belong together.

    Returns (image uint8 (H, W, 3) RGB in [0, 255], label uint8 (H, W) in [0, num_classes) or ignore_index).
    Raises SampleError(key, reason) for a missing file, an undecodable file, a label of another size than
    its image, or label values outside [0, num_classes) other than ``ignore_index``; the reason names the
    file at fault."""
    for path in (image_path, label_path):
        if not path.is_file():
            raise SampleError(key, f"missing file {path}")
    try:
        image = read_rgb_image(image_path)
    except (OSError, ValueError, SyntaxError) as error:  # PIL raises all three for broken files
        raise SampleError(key, f"cannot decode image {image_path}: {error}") from error
    try:
        label = read_label(label_path)
    except (OSError, ValueError, KeyError, IndexError, SyntaxError) as error:
        raise SampleError(key, f"cannot decode label {label_path}: {error}") from error
    if label.shape != image.shape[:2]:
        raise SampleError(
            key,
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}",
        )
    bad_values = invalid_label_values(label, num_classes, ignore_index)
    if bad_values:
        raise SampleError(
            key,
            f"label {label_path} has values {bad_values} outside [0, {num_classes}) that are not "
            f"the ignore index {ignore_index}",
        )
    return image, label


def decode_image_and_label_resized(
    key: str,
    image_path: Path,
    label_path: Path,
    read_label: Callable[[Path], np.ndarray],
    num_classes: int,
    ignore_index: int,
    size: int,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``decode_image_and_label`` for a ``size`` x ``size`` target: the same files, checks and
    SampleErrors (label size against the image file's own size, label values on the full label), then
    the image decoded and resized by ``read_rgb_image_resized`` and the label by ``resize_label``.

    Returns (image uint8 (size, size, 3), label uint8 (size, size), the image's original (height, width))."""
    # no is_file() checks first (two stat calls per sample): opening a missing file says so itself
    try:
        image, (width, height) = read_rgb_image_resized(image_path, size)
    except FileNotFoundError as error:
        raise SampleError(key, f"missing file {image_path}") from error
    except (OSError, ValueError, SyntaxError) as error:  # PIL raises all three for broken files
        raise SampleError(key, f"cannot decode image {image_path}: {error}") from error
    try:
        label = read_label(label_path)
    except FileNotFoundError as error:
        raise SampleError(key, f"missing file {label_path}") from error
    except (OSError, ValueError, KeyError, IndexError, SyntaxError) as error:
        raise SampleError(key, f"cannot decode label {label_path}: {error}") from error
    if label.shape != (height, width):
        raise SampleError(
            key,
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but image {image_path} is "
            f"{width}x{height}",
        )
    bad_values = invalid_label_values(label, num_classes, ignore_index)
    if bad_values:
        raise SampleError(
            key,
            f"label {label_path} has values {bad_values} outside [0, {num_classes}) that are not "
            f"the ignore index {ignore_index}",
        )
    return image, resize_label(label, size), (height, width)


def sample_metadata(source_name: str, item: Item, image: np.ndarray) -> dict[str, object]:
    """The facts every sample records: ``source``, ``split``, ``original_id`` and ``original_size``
    ([width, height] in pixels of the decoded image, before any resizing)."""
    height, width = image.shape[:2]
    return {
        "source": source_name,
        "split": item.split,
        "original_id": item.original_id,
        "original_size": [int(width), int(height)],
    }


class ListedPairSource(Source):
    """A source whose splits are id lists and whose samples are one image file + one label file per id.

    Subclasses define ``split_file``, ``image_path`` and ``label_path``; listing is inherited."""

    @property
    def download_hint(self) -> str:
        """The command that produces this source's extracted tree (quoted in missing-tree errors)."""
        return f"dvc repro download@{self.name}"

    def split_file(self, split: str) -> Path:
        raise NotImplementedError

    def image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def label_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def split_ids(self, split: str) -> list[str]:
        """The ids listed for ``split``, sorted. FileNotFoundError naming the list file and the download
        command when the tree is not extracted; ValueError for an unsafe or repeated id."""
        self._check_split(split)
        path = self.split_file(split)
        if not path.is_file():
            raise missing_tree_error(path, f"the {self.name} split list {split!r}", self.download_hint)
        return sorted(read_id_list(path))

    def list_items(self, split: str) -> list[Item]:
        """One item per listed id, sorted by key, ``paths`` = (image, label). Only the list is read: a
        missing image or label surfaces as a SampleError in ``load``, where the converter counts it."""
        return [
            Item(
                key=image_id,
                split=split,
                paths=(str(self.image_path(image_id)), str(self.label_path(image_id))),
                original_id=image_id,
            )
            for image_id in self.split_ids(split)
        ]


def read_mat_label_array(path: str | Path, variable: str, convert: Callable[[np.ndarray], np.ndarray],
                         hint: str) -> np.ndarray:
    """The 2-D array ``variable`` of the MATLAB file ``path``, passed through ``convert`` (id remapping).
    ValueError naming the file if it is unreadable, lacks ``variable`` (``hint`` says what the file should
    hold), the array is not 2-D, or ``convert`` rejects its values."""
    import zlib

    import scipy.io

    try:
        contents = scipy.io.loadmat(path, variable_names=[variable])
    except (scipy.io.matlab.MatReadError, NotImplementedError, zlib.error, TypeError) as error:
        # NotImplementedError: a MATLAB v7.3 (HDF5) file, which scipy cannot read
        raise ValueError(f"{path}: not a readable .mat file ({error})") from error
    if variable not in contents:
        raise ValueError(f"{path}: no variable {variable!r} ({hint})")
    array = contents[variable]
    if array.ndim != 2:
        raise ValueError(f"{path}: {variable!r} has shape {array.shape}, expected (H, W)")
    try:
        return convert(array)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
