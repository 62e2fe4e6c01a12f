"""Trivial baselines every reported figure stands beside (pure computations; no model, no I/O).

A figure means something only next to what a predictor that knows nothing (or only the obvious) scores:

- ``constant_color``: one ab for every pixel, fitted on the TRAIN split. No single constant is best for
  every metric, so each metric gets the constant that is best for it: the mean train ab (the least-squares
  constant) for PSNR, SSIM, AuC, CIEDE2000 and colourfulness, and for palette accuracy the mode of the
  largest chromatic train class (a constant scores the pixel share of the one class whose mode it is
  nearest, so that is the best any constant can do).
- ``gray``: ab = 0 everywhere (the input itself).
- ``single_mode``: every labelled pixel painted with its TRUE class's most likely mode (it is given the
  label map), 255 pixels with the train mean: what perfect segmentation without any diversity paints.
  Its ``mode_tv`` is the total-variation distance of always choosing the likeliest mode (claim d).
- ``majority_class``: segmentation predicting the most frequent train class everywhere, with the train
  class frequencies as its probabilities (its cross-entropy is the prior's).
- ``real``: the real validation images scored like a prediction (colourfulness, palette accuracy: the
  ceilings).

Units: ab in Lab units unless a name says ``_unit`` (model units, ab / 128); label maps with 255 ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from semcolor.evaluation import measures as ev
from semcolor.evaluation import metrics
from semcolor.scaling import AB_SCALE


@dataclass(frozen=True)
class TrainStatistics:
    """What the baselines fit on the train split: per-class labelled pixel counts (C,) and the mean ab
    (2,) in Lab units over all pixels (labelled or not)."""

    class_pixels: np.ndarray
    mean_ab: np.ndarray

    @property
    def majority_class(self) -> int:
        return int(np.argmax(self.class_pixels))

    @property
    def class_prior(self) -> np.ndarray:
        """Train class frequencies (C,), smoothed by one pixel per class so that no class gets 0."""
        counts = self.class_pixels.astype(np.float64) + 1.0
        return counts / counts.sum()


def train_statistics(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> TrainStatistics:
    """Accumulate ``TrainStatistics`` over (seg (N, H, W) long, ab_unit (N, 2, H, W)) batches of the train
    split. ValueError when a label is neither a class < num_classes nor 255."""
    counts = np.zeros(num_classes, np.int64)
    ab_sum, pixels = np.zeros(2), 0
    for seg, ab in batches:
        labels = seg.numpy().ravel()
        labels = labels[labels != metrics.IGNORE_INDEX]
        if labels.size and (labels.max() >= num_classes or labels.min() < 0):
            raise ValueError(f"train label {labels.max()} outside [0, {num_classes}); check num_classes")
        counts += np.bincount(labels, minlength=num_classes)
        ab_sum += ab.double().sum(dim=(0, 2, 3)).numpy() * AB_SCALE
        pixels += ab.shape[0] * ab.shape[2] * ab.shape[3]
    if pixels == 0:
        raise ValueError("no train samples to fit the baselines on")
    return TrainStatistics(counts, ab_sum / pixels)


def palette_constant(statistics: TrainStatistics, palette: metrics.Palette) -> np.ndarray:
    """The constant ab (Lab units) with the best train palette accuracy: the likeliest mode of the largest
    chromatic train class."""
    chromatic = palette.chromatic_classes
    largest = chromatic[int(np.argmax(statistics.class_pixels[chromatic]))]
    modes = palette.modes_of(largest)
    return palette.modes[modes[int(np.argmax(palette.mode_probability[modes]))]].copy()


def _constant(data: ev.EvalSet, ab: np.ndarray) -> torch.Tensor:
    """A constant ab (Lab units) as a prediction for every image of ``data`` (N, 2, S, S), model units."""
    value = torch.tensor(np.asarray(ab, np.float32) / AB_SCALE).view(1, 2, 1, 1)
    return value.expand(len(data), 2, *data.L.shape[-2:]).contiguous()


def single_mode_prediction(data: ev.EvalSet, palette: metrics.Palette, fallback_ab: np.ndarray) -> torch.Tensor:
    """Every labelled pixel painted with its true class's likeliest mode, others with ``fallback_ab``;
    (N, 2, S, S) in model units."""
    table = np.tile(np.asarray(fallback_ab, np.float32), (256, 1))
    for class_id in range(palette.num_classes):
        modes = palette.modes_of(class_id)
        if modes.size:
            table[class_id] = palette.modes[modes[int(np.argmax(palette.mode_probability[modes]))]]
    ab = table[data.seg.numpy()] / AB_SCALE  # (N, S, S, 2)
    return torch.from_numpy(ab).permute(0, 3, 1, 2).contiguous()


def colorization_baselines(data: ev.EvalSet, statistics: TrainStatistics, palette: metrics.Palette | None,
                           sampled: ev.EvalSet | None = None) -> dict[str, dict[str, Any]]:
    """``constant_color``, ``gray``, ``single_mode`` (with a palette) and ``real`` scored with
    ``evaluation.colorization_metrics`` on ``data``; with ``sampled`` (the subset the PixelCNN samples
    are drawn on) also their ``palette_accuracy_sampled_images`` and ``psnr_sampled_images``, so sampled
    figures are compared on the same images."""
    baselines: dict[str, dict[str, Any]] = {}
    mean_constant = _constant(data, statistics.mean_ab)
    baselines["constant_color"] = {**ev.colorization_metrics(data, mean_constant),
                                   "ab_mean": [float(v) for v in statistics.mean_ab]}
    baselines["gray"] = ev.colorization_metrics(data, torch.zeros_like(data.ab), palette)
    baselines["real"] = ev.colorization_metrics(data, data.ab, palette)
    if palette is not None:
        constant = palette_constant(statistics, palette)
        baselines["constant_color"]["ab_palette"] = [float(v) for v in constant]
        baselines["constant_color"]["palette_accuracy"] = metrics.palette_accuracy(
            ev.palette_confusion(data, _constant(data, constant), palette))
        baselines["single_mode"] = ev.colorization_metrics(
            data, single_mode_prediction(data, palette, statistics.mean_ab), palette)
    if sampled is not None:
        for name, prediction in (("constant_color", None), ("gray", torch.zeros_like(sampled.ab)),
                                 ("real", sampled.ab)):
            if prediction is None:
                prediction = _constant(sampled, statistics.mean_ab)
            baselines[name]["psnr_sampled_images"] = ev.cheap_colorization_metrics(sampled, prediction)["psnr"]
        if palette is not None:
            constant = _constant(sampled, np.array(baselines["constant_color"]["ab_palette"]))
            baselines["constant_color"]["palette_accuracy_sampled_images"] = metrics.palette_accuracy(
                ev.palette_confusion(sampled, constant, palette))
    return baselines


def majority_class_baseline(data: ev.EvalSet, statistics: TrainStatistics, num_classes: int) -> dict[str, float]:
    """Segmentation figures (``seg_miou``, ``seg_pixel_accuracy``, ``seg_seg_loss``: the names the models'
    segmentation figures carry) of predicting the majority train class everywhere, with the train class
    prior as its probabilities."""
    logits = torch.from_numpy(np.log(statistics.class_prior).astype(np.float32)).view(1, num_classes, 1, 1)
    logits = logits.expand(len(data), num_classes, *data.seg.shape[-2:])
    figures = ev.segmentation_metrics(data, logits, num_classes)
    return {f"seg_{k}": v for k, v in figures.items()}
