"""Reading real photos of any kind and writing results safely.

``read_photo`` turns a JPEG, PNG, WebP, TIFF or BMP file into float arrays the colorizers use:

- ``rgb``: float32 (H, W, 3), sRGB in [0, 1], channel order R, G, B (gray photos: three equal channels);
- ``lightness``: float32 (H, W), CIE Lab L in [0, 100] (D65), computed from the decoded values at their full
  precision: a 16-bit gray PNG/TIFF keeps its 65536 levels instead of being cut to 8 bits.

Decisions, so that every input has one documented meaning:
- EXIF orientation is applied (``ImageOps.exif_transpose``): H x W are the photo as a viewer shows it.
- Transparency (RGBA, LA, PA, palette with a transparent entry) is composited over WHITE, as most viewers
  show a transparent page; the alpha channel itself is dropped after that.
- Modes: ``1``/``L``/``P``/``RGB``/``CMYK``/``YCbCr``/``LAB``/``HSV`` through Pillow's RGB conversion;
  ``I;16*`` and ``I`` as 16-bit gray (0..65535, values outside clipped); ``F`` as gray in [0, 1] when its
  maximum is <= 1, else in [0, 255]. (Pillow decodes 16-bit-per-channel RGB PNGs to 8 bits itself.)
- A photo with more than ``max_pixels`` pixels is refused before its pixels are decoded (a decompression
  bomb: a small file that expands to gigabytes). Pillow's own global limit is not touched.

Every failure raises ``PhotoError`` whose message starts with the file's path and says what is wrong.
Writes go through ``write_image_atomic``: a temp file in the target folder, then ``os.replace``, and never
onto a file the caller marked as an input.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semcolor.atomic import atomic_output
from semcolor.color import srgb_to_lab

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, small enough to decode in memory

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class PhotoError(Exception):
    """A photo could not be read or a result could not be written; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class Photo:
    """A decoded photo. rgb: float32 (H, W, 3) sRGB in [0, 1]; lightness: float32 (H, W) Lab L in [0, 100]."""

    path: Path
    rgb: np.ndarray
    lightness: np.ndarray
    source_mode: str  # Pillow's mode of the file ("RGB", "I;16", "P", ...), for messages and tests

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels, after EXIF orientation."""
        return self.lightness.shape[0], self.lightness.shape[1]


def read_photo(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode ``path`` (see the module docstring for modes, alpha and orientation); PhotoError on failure."""
    path = Path(path)
    image = _open_checked(path, max_pixels)
    with image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise PhotoError(path, f"truncated or corrupt image data ({error})") from error
        mode = image.mode
        rgb = _to_float_rgb(image)
    return Photo(path=path, rgb=rgb, lightness=_lightness(rgb), source_mode=mode)


def _lightness(rgb: np.ndarray, rows_per_block: int = 256) -> np.ndarray:
    """float32 (H, W, 3) sRGB in [0, 1] -> float32 (H, W) Lab L in [0, 100], converted in float64.

    8-bit / 255 and 16-bit / 65535 values alike: no 8-bit step in between. In blocks of rows, so a
    100-megapixel photo does not need a float64 copy of itself at once."""
    lightness = np.empty(rgb.shape[:2], np.float32)
    for top in range(0, rgb.shape[0], rows_per_block):
        block = rgb[top:top + rows_per_block].astype(np.float64)
        lightness[top:top + rows_per_block] = np.clip(srgb_to_lab(block)[..., 0], 0.0, 100.0)
    return lightness


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise PhotoError(path, "no such file")
    if not path.is_file():
        raise PhotoError(path, "not a regular file")
    try:
        with warnings.catch_warnings():
            # our own limit below replaces Pillow's warning; Pillow still raises at twice its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise PhotoError(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise PhotoError(
            path, "not an image, or a format Pillow cannot read (JPEG, PNG, WebP, TIFF, BMP work)"
        ) from error
    except OSError as error:
        raise PhotoError(path, f"cannot open ({error.strerror or error})") from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise PhotoError(
            path, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(a possible decompression bomb); raise --max-pixels if the photo is genuine"
        )
    if width == 0 or height == 0:
        image.close()
        raise PhotoError(path, f"empty image ({width}x{height})")
    return image


def _to_float_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 (H, W, 3) sRGB in [0, 1], alpha composited over white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.asarray(image).astype(np.float64) / 65535.0, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    if mode == "F":
        gray = np.asarray(image).astype(np.float64)
        scale = 1.0 if np.nanmax(gray, initial=0.0) <= 1.0 else 255.0
        gray = np.clip(np.nan_to_num(gray / scale), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32) / 255.0
        alpha = rgba[..., 3:]
        return (rgba[..., :3] * alpha + (1.0 - alpha)).astype(np.float32)
    return np.asarray(image.convert("RGB")).astype(np.float32) / 255.0


def read_label_map(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A semantic map image -> uint8 (H, W) class indices (255 = unknown).

    Accepts palette (``P``: the pixel values are the indices, as VOC label PNGs and our ``*_map.png``) and
    gray (``L``) images. EXIF orientation is applied. An RGB rendering of a map is refused: its colors are
    not class indices.
    """
    path = Path(path)
    image = _open_checked(path, max_pixels)
    with image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise PhotoError(path, f"truncated or corrupt image data ({error})") from error
        if image.mode not in ("P", "L"):
            raise PhotoError(
                path,
                "a semantic map must be a palette (P) or gray (L) PNG of class indices, "
                f"not mode {image.mode}",
            )
        return np.array(image, dtype=np.uint8)


def find_photos(inputs: Sequence[str | Path], exclude: Iterable[str | Path] = (),
                skipped: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """Expand files and directories into ``(photo, relative_output_stem_dir)`` pairs, in a stable order.

    A file given explicitly is taken whatever its extension (reading it reports a non-image). A directory
    is searched recursively for files with an ``IMAGE_EXTENSIONS`` suffix (case-insensitive), skipping
    anything under an ``exclude`` folder (the output folder, so a rerun does not colorize its own results).
    The second element is the photo's folder relative to the directory it was found in ("." for files
    given directly), so outputs can mirror the input tree. A missing input raises PhotoError. ``skipped``, when
    given, receives the files of searched directories left out for their extension (hidden files aside), so
    that the caller can say so (a GIF is not silently ignored).
    """
    excluded = [Path(e).resolve() for e in exclude]
    found: list[tuple[Path, Path]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            for candidate in sorted(entry.rglob("*")):
                resolved = candidate.resolve()
                if any(resolved == e or e in resolved.parents for e in excluded):
                    continue
                if candidate.is_file() and candidate.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append((candidate, candidate.parent.relative_to(entry)))
                elif skipped is not None and candidate.is_file() and not candidate.name.startswith("."):
                    skipped.append(candidate)
        elif entry.exists():
            found.append((entry, Path(".")))
        else:
            raise PhotoError(entry, "no such file or directory")
    return found


def encode_png(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """uint8 (H, W, 3) RGB or (H, W) gray/indices -> PNG bytes; with ``palette`` (K, 3) a palette PNG."""
    import io

    image = _to_pil(array, palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_pil(array: np.ndarray, palette: np.ndarray | None) -> Image.Image:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    image = Image.fromarray(array)
    if palette is not None:
        if array.ndim != 2:
            raise ValueError("a palette image needs a 2-D array of indices")
        # putpalette turns an L image into a P image whose pixel values stay the indices
        image.putpalette(np.asarray(palette, dtype=np.uint8)[:256].reshape(-1).tolist())
    return image


def write_image_atomic(
    path: str | Path,
    array: np.ndarray,
    protected: Iterable[str | Path] = (),
    palette: np.ndarray | None = None,
) -> Path:
    """Write uint8 ``array`` ((H, W, 3) RGB or (H, W)) to ``path`` atomically; the suffix picks the format.

    Refuses (PhotoError) when ``path`` is one of the ``protected`` files (the inputs) - by resolved path
    and, where both exist, by inode. A temp file in the same folder is renamed over the target with
    ``os.replace``, so a reader never sees a half-written file. ``palette`` (K, 3) uint8 writes a palette PNG.
    """
    path = Path(path)
    target = path.resolve()
    for item in protected:
        item = Path(item)
        if item.resolve() == target or (path.exists() and item.exists() and os.path.samefile(item, path)):
            raise PhotoError(path, "refusing to overwrite an input file; choose another output folder")
    image = _to_pil(array, palette)
    extension = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
               ".tiff": "TIFF", ".bmp": "BMP"}
    if extension not in formats:
        known = ", ".join(sorted(formats))
        raise PhotoError(path, f"unknown output format {extension!r}; use one of {known}")
    with atomic_output(path) as handle:
        image.save(handle, format=formats[extension])
    return path
