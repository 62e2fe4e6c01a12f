"""Image tiles of validation images: gray, real and a model's colorizations, and the labelled grid they
make. Shared by a training run's grid (``semcolor.evaluation.sample_grids``) and ``semcolor compare --grid``
(``semcolor.tracking.comparison_grid``), so the two show the same pictures.

Every model sees the images at the shards' stored size (as evaluation does) and colorizes through
``semcolor.app.inference`` (``predict_ab``, ``sample_ab``); the colors are joined with the image's own L and
brought into the sRGB gamut at constant L (``lab_to_rgb8_keep_lightness``), as ``semcolor colorize`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABEL_HEIGHT = 18  # pixels of the column-label band above the grid's tiles
LABEL_FONT_SIZE = 13  # px, Pillow's bundled scalable font (a bitmap fallback without FreeType)


@dataclass(frozen=True)
class ValidationImages:
    """N validation images: L_unit (N, 1, S, S) = L / 50 - 1, ab_unit (N, 2, S, S) = ab / 128, seg (N, S, S)
    long class indices (255 unknown) and their sample keys."""

    L_unit: Any
    ab_unit: Any
    seg: Any
    keys: tuple[str, ...]


def read_validation_images(shard_dir: str | Path, count: int, split: str = "val",
                           crop: int | None = None) -> ValidationImages:
    """The first ``count`` samples of ``split`` in shard order (all of them when the split has fewer),
    centre-cropped to ``crop`` when given."""
    from semcolor.data.loader import LoaderConfig, ShardBatches

    if count < 1:
        raise ValueError(f"images must be >= 1, got {count}")
    batches = ShardBatches(shard_dir, split, LoaderConfig(batch_size=count, crop=crop, flip=False, workers=0),
                           train=False)
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError(f"{shard_dir} split {split!r} has no samples")
    return ValidationImages(L_unit=batch["L"], ab_unit=batch["ab"], seg=batch["seg"],
                            keys=tuple(batch["key"]))


def lab_images(L_unit: Any, ab_unit: Any) -> np.ndarray:
    """(N, 1, H, W) and (N, 2, H, W) unit tensors -> Lab (N, H, W, 3) float64, L in [0, 100]."""
    from semcolor.scaling import unit_to_lab

    lab = unit_to_lab(L_unit.detach().cpu().float().numpy(), ab_unit.detach().cpu().float().numpy())
    return np.moveaxis(lab, 1, -1).astype(np.float64)


def colorize_tiles(colorizer: Any, images: ValidationImages) -> list[np.ndarray]:
    """One uint8 (H, W, 3) sRGB tile per image: the colorizer's prediction at the images' own size, joined
    with their L and brought into gamut at constant L."""
    import torch

    from semcolor.app.inference import lab_to_rgb8_keep_lightness, predict_ab

    L = images.L_unit.to(colorizer.device)
    seg = None
    if colorizer.takes_semantic_map and colorizer.segmenter is None:
        seg = images.seg.to(colorizer.device)  # no bundled segmenter: the ground-truth map
    with torch.inference_mode():
        ab = predict_ab(colorizer.model, L, seg=seg, segmenter=colorizer.segmenter).clamp(-1.0, 1.0)
    return [lab_to_rgb8_keep_lightness(lab) for lab in lab_images(images.L_unit, ab.cpu())]


def reference_tiles(images: ValidationImages) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The gray (a = b = 0) and real (the stored colors) uint8 sRGB tiles of every image."""
    import torch

    from semcolor.color import lab_to_rgb8

    gray = [lab_to_rgb8(lab) for lab in lab_images(images.L_unit, torch.zeros_like(images.ab_unit))]
    real = [lab_to_rgb8(lab) for lab in lab_images(images.L_unit, images.ab_unit)]
    return gray, real


def assemble_grid(columns: Sequence[Sequence[np.ndarray]], labels: Sequence[str] | None = None) -> np.ndarray:
    """Tiles (columns of equally sized (H, W, 3) uint8 tiles, one per row) -> one uint8 image of
    rows x H (+ LABEL_HEIGHT when ``labels`` are given, drawn above each column) by columns x W."""
    if not columns or not columns[0]:
        raise ValueError("a grid needs at least one column with one tile")
    rows = len(columns[0])
    height, width = columns[0][0].shape[:2]
    for index, column in enumerate(columns):
        if len(column) != rows or any(tile.shape != (height, width, 3) for tile in column):
            raise ValueError(f"grid column {index}: expected {rows} tiles of {height}x{width}x3")
    grid = np.full((rows * height, len(columns) * width, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        for r, tile in enumerate(column):
            grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = tile
    return grid if labels is None else add_column_labels(grid, labels, width)


def add_column_labels(grid: np.ndarray, labels: Sequence[str], column_width: int, left: int = 0) -> np.ndarray:
    """``grid`` (uint8 (H, W, 3)) with a white band of LABEL_HEIGHT pixels on top holding ``labels[i]`` above
    the column that starts at ``left + i * column_width`` (each label clipped to its column)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(np.asarray(grid, dtype=np.uint8)), (0, LABEL_HEIGHT))
    try:
        font = ImageFont.load_default(size=LABEL_FONT_SIZE)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    for c, label in enumerate(labels):
        # each label is clipped to its own column, so long names never run into the next one
        band = Image.new("RGB", (column_width, LABEL_HEIGHT), (255, 255, 255))
        ImageDraw.Draw(band).text((3, 1), label, fill=(0, 0, 0), font=font)
        canvas.paste(band, (left + c * column_width, 0))
    return np.asarray(canvas)


def sample_tiles(colorizer: Any, images: ValidationImages, seed: int) -> list[np.ndarray]:
    """One autoregressive PixelCNN sample per image (``psc_*`` models), as ``colorize_tiles`` tiles."""
    import torch

    from semcolor.color import lab_to_rgb8_keep_lightness
    from semcolor.app.inference import sample_ab

    L = images.L_unit.to(colorizer.device)
    with torch.inference_mode():  # image n's noise: seed + n, as the evaluate stage seeds its draws
        ab = sample_ab(colorizer.model, L, [seed + n for n in range(L.shape[0])])[:, 0].float()
    ab = ab.clamp(-1.0, 1.0).cpu()
    return [lab_to_rgb8_keep_lightness(lab) for lab in lab_images(images.L_unit, ab)]


def write_png(image: np.ndarray, path: str | Path, description: str = "") -> Path:
    """Write an RGB uint8 image as PNG atomically (temp file + rename); ``description`` goes into the PNG's
    ``Description`` text chunk (the grid's column order)."""
    from PIL import Image, PngImagePlugin

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if description:
        info.add_text("Description", description)
    from semcolor.atomic import atomic_output

    with atomic_output(path) as stream:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(stream, format="PNG", pnginfo=info)
    return path
