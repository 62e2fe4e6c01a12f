"""Evaluation of colorizers and segmenters on a validation split: pure computations over arrays.

Inputs are in model units (semcolor.scaling): L_unit (N, 1, S, S) in [-1, 1], ab_unit (N, 2, S, S) in
[-1, 1); label maps (N, S, S) with 255 ignored. Predicted ab at a lower resolution are upsampled
bilinearly to S and combined with the full-resolution L (the papers' protocol). Metrics are averaged
over images (PSNR, SSIM, colorfulness) or pooled over pixels (AuC, CIEDE2000, palette accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from semcolor.evaluation import image_pool, metrics
from semcolor import color
from semcolor.scaling import AB_SCALE, unit_to_lab, upsample_ab


@dataclass
class EvalSet:
    """The validation images of one shard size, in model units, with their shard metadata."""

    L: torch.Tensor  # (N, 1, S, S)
    ab: torch.Tensor  # (N, 2, S, S)
    seg: torch.Tensor  # (N, S, S) int64
    keys: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    # the real images' Lab, sRGB and rebalancing weights, computed once: every metric call compares to them
    _reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.keys)

    def reference(self) -> dict[str, np.ndarray]:
        """{"lab": (N, S, S, 3) float64, "rgb": uint8 (N, S, S, 3), "weights": (N, S, S)} of the real images."""
        if not self._reference:
            lab = to_lab(self.L, self.ab)
            self._reference.update(lab=lab, rgb=lab_to_rgb8(lab),
                                   weights=metrics.rebalancing_weights(lab[..., 1:]))
        return self._reference

    def subset(self, indices: Sequence[int]) -> "EvalSet":
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return EvalSet(self.L[index], self.ab[index], self.seg[index], [self.keys[i] for i in indices],
                       [self.metadata[i] for i in indices] if self.metadata else [])


def to_lab(L_unit: torch.Tensor, ab_unit: torch.Tensor) -> np.ndarray:
    """Model units -> Lab, channel-last (N, S, S, 3): L in [0, 100], ab in [-128, 127]."""
    lab = unit_to_lab(L_unit.float().numpy(), ab_unit.float().numpy())
    return lab.transpose(0, 2, 3, 1).astype(np.float64)


def lab_to_rgb8(lab: np.ndarray) -> np.ndarray:
    """Lab (N, S, S, 3), L in [0, 100] -> sRGB uint8 (N, S, S, 3): ``semcolor.color.lab_to_rgb8`` over chunks
    of images on every compute thread (the same bits)."""
    return image_pool.per_pixel(color.lab_to_rgb8, lab)


def to_rgb8(L_unit: torch.Tensor, ab_unit: torch.Tensor) -> np.ndarray:
    """Model units -> sRGB uint8 (N, S, S, 3)."""
    return lab_to_rgb8(to_lab(L_unit, ab_unit))


def colorization_metrics(data: EvalSet, predicted_ab: torch.Tensor, palette: metrics.Palette | None = None
                         ) -> dict[str, float]:
    """Colorization quality of ``predicted_ab`` (N, 2, h, w) in model units against the real colors.

    Returns psnr (dB, RGB, mean over images), ssim, colorfulness (of the predictions, mean over images),
    delta_colorfulness, auc_ab and auc_ab_rebalanced (in [0, 1]), ciede2000 (mean over pixels) and, when the
    world's ``palette`` is known, palette_accuracy (``semcolor.evaluation.metrics.palette_accuracy``, pooled over
    pixels)."""
    size = data.L.shape[-1]
    ab = upsample_ab(predicted_ab.float(), size)
    reference = data.reference()
    lab_pred, lab_true, rgb_true, weights = to_lab(data.L, ab), reference["lab"], reference["rgb"], reference["weights"]
    rgb_pred = lab_to_rgb8(lab_pred)
    result = {
        "psnr": float(np.mean(image_pool.map_images(metrics.psnr, rgb_pred, rgb_true))),
        "ssim": float(np.mean(image_pool.map_images(metrics.ssim, rgb_pred, rgb_true))),
        "colorfulness": float(np.mean(image_pool.map_images(metrics.colorfulness, rgb_pred))),
        "delta_colorfulness": metrics.delta_colorfulness(list(rgb_pred), list(rgb_true)),
        "auc_ab": metrics.ab_error_auc(lab_pred[..., 1:], lab_true[..., 1:]),
        "auc_ab_rebalanced": metrics.ab_error_auc(lab_pred[..., 1:], lab_true[..., 1:], weights),
        "ciede2000": float(image_pool.per_pixel(metrics.ciede2000, lab_pred, lab_true).mean()),
    }
    if palette is not None:
        result["palette_accuracy"] = metrics.palette_accuracy(palette_confusion(data, ab, palette))
    return result


def cheap_colorization_metrics(data: EvalSet, predicted_ab: torch.Tensor,
                               palette: metrics.Palette | None = None) -> dict[str, float]:
    """The figures of ``colorization_metrics`` a sweep needs, at a fifth of its cost: psnr, colorfulness and
    (with a palette) palette_accuracy, computed exactly as there."""
    ab = upsample_ab(predicted_ab.float(), data.L.shape[-1])
    rgb_pred = to_rgb8(data.L, ab)
    result = {"psnr": float(np.mean(image_pool.map_images(metrics.psnr, rgb_pred, data.reference()["rgb"]))),
              "colorfulness": float(np.mean(image_pool.map_images(metrics.colorfulness, rgb_pred)))}
    if palette is not None:
        result["palette_accuracy"] = metrics.palette_accuracy(palette_confusion(data, ab, palette))
    return result


def ab_lab_units(data: EvalSet, predicted_ab: torch.Tensor) -> np.ndarray:
    """Predicted ab (N, 2, h, w) in model units -> Lab units (N, S, S, 2) at the label size, float32."""
    ab = upsample_ab(predicted_ab.float(), data.seg.shape[-1])
    return (ab.clamp(-1.0, 127.0 / AB_SCALE) * AB_SCALE).permute(0, 2, 3, 1).numpy()


def palette_confusion(data: EvalSet, predicted_ab: torch.Tensor | Sequence[torch.Tensor],
                      palette: metrics.Palette) -> np.ndarray:
    """``semcolor.evaluation.metrics.palette_confusion`` of predictions (N, 2, h, w) in model units against the
    set's labels, summed over several predictions (e.g. the k samples) when a sequence is given."""
    predictions = [predicted_ab] if isinstance(predicted_ab, torch.Tensor) else list(predicted_ab)
    labels = data.seg.numpy()

    def confusion(ab: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return metrics.palette_confusion(ab, seg, palette)

    return sum(image_pool.summed(confusion, ab_lab_units(data, ab), labels) for ab in predictions)


def segmentation_metrics(data: EvalSet, logits: torch.Tensor, num_classes: int) -> dict[str, float]:
    """mIoU, pixel accuracy and cross-entropy (nats, 255 ignored) of class logits (N, C, h, w),
    upsampled bilinearly to the label size."""
    figures, _ = segmentation_metrics_and_confusion(data, logits, num_classes)
    return figures


def segmentation_metrics_and_confusion(data: EvalSet, logits: torch.Tensor, num_classes: int
                                       ) -> tuple[dict[str, float], np.ndarray]:
    """``segmentation_metrics`` and the (C, C) confusion matrix (rows: true class, columns: predicted)."""
    size = data.seg.shape[-1]
    logits = logits.float()
    if logits.shape[-1] != size:
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    confusion = metrics.confusion_matrix(logits.argmax(1).numpy(), data.seg.numpy(), num_classes)
    labelled = confusion.sum()
    figures = {
        "miou": metrics.mean_iou(confusion),
        "pixel_accuracy": float(np.trace(confusion) / labelled) if labelled else float("nan"),
        "seg_loss": float(F.cross_entropy(logits, data.seg, ignore_index=metrics.IGNORE_INDEX)),
    }
    return figures, confusion


def twin_confusion(confusion: np.ndarray, pairs: Sequence[tuple[int, int]]) -> float:
    """Share of the labelled pixels of gray-alike twin classes that a segmenter gave to the other twin
    (from its (C, C) confusion matrix); nan when no twin pixel is labelled. 0.5 is chance between twins."""
    confusion = np.asarray(confusion, np.float64)
    swapped = sum(confusion[a, b] + confusion[b, a] for a, b in pairs)
    total = sum(confusion[a].sum() + confusion[b].sum() for a, b in pairs)
    return float(swapped / total) if total else float("nan")


def diversity_metrics(data: EvalSet, samples_ab: torch.Tensor, palette: metrics.Palette | None,
                      min_region_pixels: int = 25) -> dict[str, Any]:
    """Diversity of k samples per image, samples_ab (N, k, 2, h, w) in model units: mean MS-SSIM between
    samples 0 and 1 of each image (1 = identical) and, where the palette is known, ``mode_counts`` (class id
    -> counts per mode and "other", pooled over the regions of multimodal classes, see
    ``semcolor.evaluation.metrics.region_mode_counts``) with their total-variation distance ``mode_tv`` to the world's
    probabilities and ``single_mode_tv``, that of a sampler always painting each class's likeliest mode."""
    count, k = samples_ab.shape[:2]
    if k < 2:
        raise ValueError("diversity needs at least 2 samples per image")
    size = data.L.shape[-1]
    first = to_rgb8(data.L, upsample_ab(samples_ab[:, 0].float(), size))
    second = to_rgb8(data.L, upsample_ab(samples_ab[:, 1].float(), size))
    result: dict[str, Any] = {
        "ms_ssim_between_samples": float(np.mean(image_pool.map_images(metrics.ms_ssim, first, second)))}
    if palette is not None:
        pooled: dict[int, np.ndarray] = {}
        draws = [ab_lab_units(data, samples_ab[:, j]) for j in range(k)]
        for index in range(count):
            found = metrics.region_mode_counts([d[index] for d in draws], data.seg[index].numpy(), palette,
                                               min_region_pixels)
            for class_id, tally in found.items():
                pooled[class_id] = pooled.get(class_id, 0) + tally
        result["mode_tv"] = metrics.mode_total_variation(pooled, palette)
        result["single_mode_tv"] = metrics.single_mode_total_variation(sorted(pooled), palette)
        result["mode_counts"] = {str(c): tally.tolist() for c, tally in sorted(pooled.items())}
    return result


# ------------------------------------------------------------------------------------------ test-time jitter


@dataclass(frozen=True)
class JitterSweep:
    """A test-time change of the gray input of increasing strength (claim c). At strength s in [0, 1]:
    L' = clip(50 + c (100 t^g - 50) + b, 0, 100) with t = L / 100, contrast c = 1 + s (contrast - 1),
    gamma g = gamma^(+-s), brightness b = +-s * brightness; the sign alternates with the image's index
    (even +, odd -), so the set's mean lightness stays put while every image moves. L in [0, 100].
    Defaults reach beyond the world's own jitter (contrast 0.5-1.1, |brightness| <= 11, gamma 0.65-1.55)
    on top of it."""

    levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    contrast: float = 0.4
    brightness: float = 20.0
    gamma: float = 1.8

    def __post_init__(self) -> None:
        if not self.levels or any(not 0.0 <= s <= 1.0 for s in self.levels) or list(self.levels) != sorted(self.levels):
            raise ValueError(f"levels must be increasing strengths in [0, 1], got {list(self.levels)}")
        if not 0.0 < self.contrast <= 1.0:
            raise ValueError(f"contrast must be in (0, 1] (the strongest level's factor), got {self.contrast}")
        if not 0.0 <= self.brightness <= 50.0:
            raise ValueError(f"brightness must be in [0, 50] L units, got {self.brightness}")
        if not 1.0 <= self.gamma <= 4.0:
            raise ValueError(f"gamma must be in [1, 4], got {self.gamma}")


def jittered_gray(L_unit: torch.Tensor, strength: float, sweep: JitterSweep) -> torch.Tensor:
    """The sweep's change of strength ``strength`` applied to gray images L_unit (N, 1, H, W) in [-1, 1]
    (``L / 50 - 1``); strength 0 returns the input unchanged."""
    if strength == 0.0:
        return L_unit
    sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(L_unit.shape[0])],
                        dtype=L_unit.dtype).view(-1, 1, 1, 1)
    t = ((L_unit + 1.0) / 2.0).clamp(0.0, 1.0)
    t = t ** (sweep.gamma ** (sign * strength))
    contrast = 1.0 + strength * (sweep.contrast - 1.0)
    lightness = 50.0 + contrast * (100.0 * t - 50.0) + sign * strength * sweep.brightness
    return lightness.clamp(0.0, 100.0) / 50.0 - 1.0


# ------------------------------------------------------------------------------------------ the map steers


def swap_twins(seg: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The label map with every pixel of a gray-alike twin class repainted as its twin (both directions)."""
    swapped = seg.clone()
    for a, b in pairs:
        swapped[seg == a] = b
        swapped[seg == b] = a
    return swapped


def steering_shares(data: EvalSet, before_ab: torch.Tensor, after_ab: torch.Tensor,
                    pairs: Sequence[tuple[int, int]], palette: metrics.Palette) -> dict[str, float]:
    """Claim (f)'s measurement. Among the labelled pixels of twin classes, the share whose predicted ab
    (model units) lies nearest to a mode of the pixel's TWIN class: ``before`` with the true map, ``after``
    with the map in which every twin region was repainted as its twin (``swap_twins``). A model that reads
    the map moves from about 0 to about 1; one that ignores it stays where it was. Also ``pixels``."""
    seg = data.seg.numpy()
    twin_of = np.full(256, -1, np.int64)
    for a, b in pairs:
        twin_of[a], twin_of[b] = b, a
    target = twin_of[seg]
    repainted = target >= 0
    shares = {}
    for name, ab in (("before", before_ab), ("after", after_ab)):
        owner = palette.mode_class[palette.nearest_mode(ab_lab_units(data, ab)[repainted])]
        shares[name] = float(np.mean(owner == target[repainted])) if repainted.any() else float("nan")
    shares["pixels"] = float(repainted.sum())
    return shares


def image_grid(columns: Sequence[np.ndarray], pad: int = 2, titles: Sequence[str] | None = None) -> np.ndarray:
    """Tile column stacks into one image: ``columns`` is a list of (N, S, S, 3) uint8 arrays (one per
    column: gray, real, each model ...); rows are images. White padding between tiles; with ``titles``
    (one per column) a header band names each column in the picture (wrapped to the tile width)."""
    count, size = columns[0].shape[0], columns[0].shape[1]
    header = 0
    lines: list[list[str]] = []
    if titles is not None:
        if len(titles) != len(columns):
            raise ValueError(f"{len(titles)} titles for {len(columns)} columns")
        per_line = max(4, size // 6)  # Pillow's default bitmap font is about 6 px per character
        lines = [textwrap.wrap(str(title), per_line)[:3] or [""] for title in titles]
        header = 11 * max(len(block) for block in lines) + 4
    grid = np.full((header + count * (size + pad) + pad, len(columns) * (size + pad) + pad, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        for r in range(count):
            top, left = header + pad + r * (size + pad), pad + c * (size + pad)
            tile = column[r]
            if tile.ndim == 2:
                tile = np.repeat(tile[..., None], 3, axis=-1)
            grid[top : top + size, left : left + size] = tile
    if lines:
        from PIL import Image, ImageDraw

        picture = Image.fromarray(grid)
        draw = ImageDraw.Draw(picture)
        for c, block in enumerate(lines):
            for j, line in enumerate(block):
                draw.text((pad + c * (size + pad) + 1, 2 + 11 * j), line, fill=(0, 0, 0))
        grid = np.asarray(picture).copy()
    return grid
