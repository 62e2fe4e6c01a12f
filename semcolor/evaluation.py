"""Evaluation of colorizers and segmenters on a validation split: pure computations over arrays.

Inputs are in model units (semcolor.scaling): L_unit (N, 1, S, S) in [-1, 1], ab_unit (N, 2, S, S) in
[-1, 1); label maps (N, S, S) with 255 ignored. Predicted ab at a lower resolution are upsampled
bilinearly to S and combined with the full-resolution L (the papers' protocol). Metrics are averaged
over images (PSNR, SSIM, colorfulness) or pooled over pixels (AuC, CIEDE2000, semantic accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semcolor import metrics
from semcolor.color import lab_to_srgb
from semcolor.scaling import AB_SCALE


@dataclass
class EvalSet:
    """The validation images of one shard size, in model units, with their shard metadata."""

    L: torch.Tensor  # (N, 1, S, S)
    ab: torch.Tensor  # (N, 2, S, S)
    seg: torch.Tensor  # (N, S, S) int64
    keys: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, indices: Sequence[int]) -> "EvalSet":
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return EvalSet(self.L[index], self.ab[index], self.seg[index], [self.keys[i] for i in indices],
                       [self.metadata[i] for i in indices] if self.metadata else [])


def upsample_ab(ab: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 2, h, w) -> (N, 2, size, size), bilinear (no-op at the same size)."""
    if ab.shape[-1] == size and ab.shape[-2] == size:
        return ab
    return F.interpolate(ab, size=(size, size), mode="bilinear", align_corners=False)


def to_lab(L_unit: torch.Tensor, ab_unit: torch.Tensor) -> np.ndarray:
    """Model units -> Lab, channel-last (N, S, S, 3): L in [0, 100], ab in [-128, 127]."""
    L = (L_unit.float().numpy() + 1.0) * 50.0
    ab = np.clip(ab_unit.float().numpy() * AB_SCALE, -128.0, 127.0)
    return np.concatenate([L, ab], axis=1).transpose(0, 2, 3, 1).astype(np.float64)


def to_rgb8(L_unit: torch.Tensor, ab_unit: torch.Tensor) -> np.ndarray:
    """Model units -> sRGB uint8 (N, S, S, 3)."""
    return np.round(lab_to_srgb(to_lab(L_unit, ab_unit)) * 255.0).astype(np.uint8)


def colorization_metrics(data: EvalSet, predicted_ab: torch.Tensor,
                         class_modes: dict[int, np.ndarray] | None = None) -> dict[str, float]:
    """Colorization quality of ``predicted_ab`` (N, 2, h, w) in model units against the real colors.

    Returns psnr (dB), ssim, colorfulness (of the predictions), delta_colorfulness, auc_ab and
    auc_ab_rebalanced (in [0, 1]), ciede2000 (mean), and semantic_color_accuracy when class modes are known.
    """
    size = data.L.shape[-1]
    ab = upsample_ab(predicted_ab.float(), size)
    lab_pred, lab_true = to_lab(data.L, ab), to_lab(data.L, data.ab)
    rgb_pred = np.round(lab_to_srgb(lab_pred) * 255.0).astype(np.uint8)
    rgb_true = np.round(lab_to_srgb(lab_true) * 255.0).astype(np.uint8)
    weights = metrics.rebalancing_weights(lab_true[..., 1:])
    result = {
        "psnr": float(np.mean([metrics.psnr(p, t) for p, t in zip(rgb_pred, rgb_true)])),
        "ssim": float(np.mean([metrics.ssim(p, t) for p, t in zip(rgb_pred, rgb_true)])),
        "colorfulness": float(np.mean([metrics.colorfulness(p) for p in rgb_pred])),
        "delta_colorfulness": metrics.delta_colorfulness(list(rgb_pred), list(rgb_true)),
        "auc_ab": metrics.ab_error_auc(lab_pred[..., 1:], lab_true[..., 1:]),
        "auc_ab_rebalanced": metrics.ab_error_auc(lab_pred[..., 1:], lab_true[..., 1:], weights),
        "ciede2000": float(metrics.ciede2000(lab_pred, lab_true).mean()),
    }
    if class_modes:
        result["semantic_color_accuracy"] = metrics.semantic_color_accuracy(
            lab_pred[..., 1:], data.seg.numpy(), class_modes)
    return result


def segmentation_metrics(data: EvalSet, logits: torch.Tensor, num_classes: int) -> dict[str, float]:
    """mIoU, pixel accuracy and cross-entropy (nats, 255 ignored) of class logits (N, C, h, w),
    upsampled bilinearly to the label size."""
    size = data.seg.shape[-1]
    logits = logits.float()
    if logits.shape[-1] != size:
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    prediction = logits.argmax(1)
    confusion = metrics.confusion_matrix(prediction.numpy(), data.seg.numpy(), num_classes)
    labelled = confusion.sum()
    return {
        "miou": metrics.mean_iou(confusion),
        "pixel_accuracy": float(np.trace(confusion) / labelled) if labelled else float("nan"),
        "seg_loss": float(F.cross_entropy(logits, data.seg, ignore_index=metrics.IGNORE_INDEX)),
    }


def diversity_metrics(data: EvalSet, samples_ab: torch.Tensor, class_modes: dict[int, np.ndarray] | None) -> dict[str, float]:
    """Diversity of k samples per image, samples_ab (N, k, 2, h, w): mean MS-SSIM between samples 0
    and 1 of each image (1 = identical) and, where modes are known, mode coverage of multimodal classes."""
    count, k = samples_ab.shape[:2]
    if k < 2:
        raise ValueError("diversity needs at least 2 samples per image")
    size = data.L.shape[-1]
    first = to_rgb8(data.L, upsample_ab(samples_ab[:, 0].float(), size))
    second = to_rgb8(data.L, upsample_ab(samples_ab[:, 1].float(), size))
    result = {"ms_ssim_between_samples": float(np.mean([metrics.ms_ssim(a, b) for a, b in zip(first, second)]))}
    if class_modes:
        coverages = []
        for index in range(count):
            abs_ = [to_lab(data.L[index : index + 1], upsample_ab(samples_ab[index, j : j + 1].float(), size))[0, ..., 1:]
                    for j in range(k)]
            coverage = metrics.mode_coverage(abs_, data.seg[index].numpy(), class_modes)
            if np.isfinite(coverage):
                coverages.append(coverage)
        result["mode_coverage"] = float(np.mean(coverages)) if coverages else float("nan")
        # the same measure for a model that always paints one mode: 1 / modes, averaged the same way
        result["single_mode_coverage"] = _single_mode_baseline(data, class_modes)
    return result


def _single_mode_baseline(data: EvalSet, class_modes: dict[int, np.ndarray]) -> float:
    values = []
    for index in range(len(data)):
        for class_id, modes in class_modes.items():
            if len(modes) >= 2 and bool((data.seg[index] == class_id).any()):
                values.append(1.0 / len(modes))
    return float(np.mean(values)) if values else float("nan")


def jitter_strength(metadata: dict[str, Any]) -> float:
    """How far an image's global lightness jitter is from none (synthetic world metadata): the largest of
    |log contrast|, |brightness| / 15 and |log gamma| / log 1.55, each about 1 at its range's end."""
    jitter = metadata.get("world", {}).get("jitter")
    if not jitter:
        return float("nan")
    return max(abs(np.log(jitter["contrast"])) / abs(np.log(0.5)), abs(jitter["brightness"]) / 15.0,
               abs(np.log(jitter["gamma"])) / np.log(1.55))


def strong_jitter_indices(data: EvalSet, fraction: float = 0.5) -> list[int]:
    """Indices of the ``fraction`` of images with the strongest jitter (all of them without metadata)."""
    strengths = [jitter_strength(m) for m in data.metadata] if data.metadata else []
    if not strengths or not np.isfinite(strengths).all():
        return list(range(len(data)))
    order = np.argsort(strengths)[::-1]
    return sorted(int(i) for i in order[: max(1, int(round(fraction * len(order))))])


def image_grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile column stacks into one image: ``columns`` is a list of (N, S, S, 3) uint8 arrays (one per
    column: gray, real, each model ...); rows are images. White padding between tiles."""
    count, size = columns[0].shape[0], columns[0].shape[1]
    grid = np.full((count * (size + pad) + pad, len(columns) * (size + pad) + pad, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        for r in range(count):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            tile = column[r]
            if tile.ndim == 2:
                tile = np.repeat(tile[..., None], 3, axis=-1)
            grid[top : top + size, left : left + size] = tile
    return grid


def claim(name: str, holds: bool, figures: dict[str, Any], statement: str) -> dict[str, Any]:
    """One entry of metrics/claims.json."""
    clean = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in figures.items()}
    return {"claim": name, "holds": bool(holds), "statement": statement, "figures": clean}
