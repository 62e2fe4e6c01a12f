"""Every model of the pipeline on one validation set: the figures the report, the claims and the retrain
flow read (pure computation over loaded models and arrays; the `evaluate` stage does the I/O).

Every model is called through the prediction path `semcolor colorize` uses (``semcolor.app.inference``:
``predict_ab`` for deterministic colors, ``sample_ab`` for PixelCNN draws, ``segment_logits`` for
segmenters), never by hand. Roles, named by the caller:

- ``colorizers``: name -> model, each driven by what its interface says (``semcolor.models.interface``),
  never by its name. Models that sample (``can_sample``: the PixelCNN models, ``psc_*``): their headline is k samples at
  ``temperature`` (1.0, the model's distribution) on the first ``sample_images`` images, image i's noise
  seeded by ``seed + i`` (the same seeds at every temperature); ``fast_*`` figures are the
  non-autoregressive mean on all images; a temperature sweep on ``sweep_images`` images is reported beside,
  never used for the headline. Models that take a map (``takes_map``: the U-Nets, ``sdc_*``; a ``cls_*``
  with the map as input): headline with the maps of ``map_segmenter`` (GridNet on
  gray, the paper's system); ``gt_map_*`` with the true maps; the test-time jitter sweep (claim c) and the
  twin repainting (claim f) with true maps. Others (``cls_*``): their deterministic output.
- ``segmenters``: name -> model whose segmentation of the gray input is scored (``seg_*``).
- ``table3_segmenter``: the colour-trained GridNet of the Table 3 protocol, run on gray, real and every
  colorizer's headline output (claim e).

Figures of one model live under ``results[name]`` as flat ``metric -> float`` (what MLflow and the retrain
flow read); matrices and curves go under ``details``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from semcolor.evaluation import baselines as bl
from semcolor.evaluation import measures as ev
from semcolor.evaluation import metrics
from semcolor.app.inference import SAMPLE_GROUP, predict_ab, sample_ab, segment_logits
from semcolor.models.interface import as_colorizer

SWEEP_TEMPERATURE_KEY = "temperature_{:g}"


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml ``evaluate``: what is measured and on how many images (validation split)."""

    source: str = "synthetic"
    size: int = 128
    max_images: int = 150  # validation images for every deterministic figure (the first, in key order)
    samples: int = 4  # PixelCNN draws per image (diversity, mode frequencies, pooled palette accuracy)
    sample_images: int = 48  # images drawn autoregressively for the headline (the costly part on a CPU)
    temperature: float = 1.0  # the headline's sampling temperature: the model's own distribution
    sweep_temperatures: tuple[float, ...] = (1.0, 0.8, 0.6)  # reported beside the headline, never chosen from
    sweep_images: int = 12
    seed: int = 0  # image i's sampling noise: seed + i
    batch_size: int = 50
    grid_images: int = 6
    min_region_pixels: int = 25  # smallest region whose mode is counted (claim d)
    jitter: ev.JitterSweep = field(default_factory=ev.JitterSweep)

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (diversity compares two samples), got {self.samples}")
        if min(self.max_images, self.sample_images, self.sweep_images, self.batch_size, self.grid_images) < 1:
            raise ValueError("max_images, sample_images, sweep_images, batch_size and grid_images must be >= 1")
        if self.grid_images > self.sample_images:
            raise ValueError(f"grid_images ({self.grid_images}) must be <= sample_images ({self.sample_images}): "
                             "the grid shows the headline samples")
        if not self.temperature > 0 or any(not t > 0 for t in self.sweep_temperatures):
            raise ValueError("temperature and sweep_temperatures must be > 0")
        if self.min_region_pixels < 1:
            raise ValueError(f"min_region_pixels must be >= 1, got {self.min_region_pixels}")


@dataclass(frozen=True)
class World:
    """What the synthetic world's spec tells the evaluation: the palette and the gray-alike twin pairs."""

    palette: metrics.Palette
    twin_pairs: tuple[tuple[int, int], ...] = ()


@dataclass
class Evaluation:
    """results: model -> {metric: float}; baselines: name -> {metric: value}; details: confusion matrices,
    mode counts, sweep curves (JSON-ready); images: name -> uint8 (H, W, 3); columns: image name -> the
    column titles of that grid."""

    results: dict[str, dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)


def _batched(function: Callable[..., torch.Tensor], tensors: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """``function`` on aligned slices of ``tensors``, concatenated (no grad)."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, tensors[0].shape[0], batch_size):
            outputs.append(function(*(t[start : start + batch_size] for t in tensors)))
    return torch.cat(outputs)


def evaluate_models(
    colorizers: Mapping[str, nn.Module],
    segmenters: Mapping[str, nn.Module],
    map_segmenter: nn.Module | None,
    table3_segmenter: nn.Module | None,
    data: ev.EvalSet,
    statistics: bl.TrainStatistics,
    num_classes: int,
    world: World | None,
    config: EvaluateConfig,
    progress: bool = True,
) -> Evaluation:
    """Measure everything (see the module docstring). ``data``: the validation set (model units);
    ``statistics``: the train split's, for the baselines; ``world``: None for a real dataset (no palette:
    palette accuracy, mode frequencies and twin repainting are then not measured)."""
    out = Evaluation()
    palette = world.palette if world else None
    sampled = data.subset(range(min(config.sample_images, len(data))))  # the first images (table 3 relies on it)
    sweep_set = data.subset(range(min(config.sweep_images, len(data))))
    grid = list(range(min(config.grid_images, len(data))))
    size = data.L.shape[-1]
    headline_ab: dict[str, tuple[ev.EvalSet, torch.Tensor]] = {}  # colorizer -> (its images, its ab)
    out.baselines = bl.colorization_baselines(data, statistics, palette, sampled)
    out.baselines["majority_class"] = bl.majority_class_baseline(data, statistics, num_classes)
    out.baselines["majority_class"]["seg_miou_sampled_images"] = bl.majority_class_baseline(
        sampled, statistics, num_classes)["seg_miou"]
    grid_columns = {"gray": ev.to_rgb8(data.L[grid], torch.zeros_like(data.ab[grid])),
                    "real": ev.to_rgb8(data.L[grid], data.ab[grid])}
    confusions: dict[str, Any] = {}
    steps = tqdm(total=len(colorizers) + len(segmenters) + 1, desc="evaluate", unit="model", disable=not progress)

    def step(name: str, what: str) -> None:
        steps.set_description(f"evaluate {name} ({what})")

    maps, logits_cache = None, {}
    if map_segmenter is not None:
        logits_cache[id(map_segmenter)] = _batched(lambda L: segment_logits(map_segmenter, L), [data.L],
                                                   config.batch_size)
        maps = logits_cache[id(map_segmenter)].argmax(1)
    for name, model in colorizers.items():
        interface = as_colorizer(model, name)
        figures: dict[str, float] = {}
        if interface.can_sample:
            step(name, f"{config.samples} samples x {len(sampled)} images")
            samples = _draw(model, sampled, config.samples, config.temperature, config.seed, config.batch_size)
            figures.update(ev.colorization_metrics(sampled, samples[:, 0], None))
            if palette is not None:
                confusion = ev.palette_confusion(sampled, [samples[:, j] for j in range(samples.shape[1])], palette)
                figures["palette_accuracy"] = metrics.palette_accuracy(confusion)
                confusions[name] = confusion.tolist()
            diversity = ev.diversity_metrics(sampled, samples, palette, config.min_region_pixels)
            if "mode_counts" in diversity:
                out.details.setdefault("mode_counts", {})[name] = diversity.pop("mode_counts")
                out.baselines.setdefault("single_mode", {})["mode_tv"] = diversity.pop("single_mode_tv")
            figures.update(diversity)
            step(name, "fast path")
            fast = _batched(lambda L: predict_ab(model, L), [data.L], config.batch_size)
            figures.update({f"fast_{k}": v for k, v in ev.colorization_metrics(data, fast, palette).items()})
            step(name, "temperature sweep")
            sweep = _temperature_sweep(model, sweep_set, config, palette)
            out.details.setdefault("temperature_sweep", {})[name] = sweep["figures"]
            out.images[f"temperature_sweep_{name}"] = sweep["image"]
            out.columns[f"temperature_sweep_{name}"] = sweep["columns"]
            headline_ab[name] = (sampled, samples[:, 0])
            headline_ab[f"{name}_fast"] = (data, fast)
            grid_columns[f"{name} sample T={config.temperature:g}"] = ev.to_rgb8(
                data.L[grid], ev.upsample_ab(samples[grid, 0].float(), size))
            grid_columns[f"{name} fast"] = ev.to_rgb8(data.L[grid], ev.upsample_ab(fast[grid].float(), size))
        elif interface.takes_map:
            step(name, "GridNet maps")
            ab = _batched(lambda L, seg: predict_ab(model, L, seg), [data.L, maps], config.batch_size) \
                if maps is not None else None
            step(name, "true maps")
            ab_gt = _batched(lambda L, seg: predict_ab(model, L, seg), [data.L, data.seg], config.batch_size)
            if ab is None:
                ab = ab_gt
            figures.update(ev.colorization_metrics(data, ab, palette))
            figures.update({f"gt_map_{k}": v for k, v in ev.colorization_metrics(data, ab_gt, palette).items()})
            if palette is not None:
                confusions[name] = ev.palette_confusion(data, ab, palette).tolist()
                confusions[f"{name}_gt_map"] = ev.palette_confusion(data, ab_gt, palette).tolist()
            step(name, "jitter sweep")
            curve = _jitter_sweep(model, data, ab_gt, config, palette)
            out.details.setdefault("jitter_sweep", {})[name] = curve
            figures.update({f"jitter_psnr_{i}": v for i, v in enumerate(curve["psnr"])})
            if world is not None and world.twin_pairs:
                step(name, "twins repainted")
                swapped = ev.swap_twins(data.seg, world.twin_pairs)
                ab_swapped = _batched(lambda L, seg: predict_ab(model, L, seg), [data.L, swapped], config.batch_size)
                shares = ev.steering_shares(data, ab_gt, ab_swapped, world.twin_pairs, palette)
                figures.update({f"steer_{k}": v for k, v in shares.items()})
                out.images[f"steering_{name}"] = _steering_image(data, grid, ab_gt, ab_swapped, swapped)
                out.columns[f"steering_{name}"] = ["gray", "true map", f"{name}, true map", "twins repainted",
                                                   f"{name}, repainted"]
            headline_ab[name] = (data, ab)
            grid_columns[name] = ev.to_rgb8(data.L[grid], ab[grid])
        else:
            step(name, "colorize")
            ab = _batched(lambda L: predict_ab(model, L), [data.L], config.batch_size)
            figures.update(ev.colorization_metrics(data, ab, palette))
            if palette is not None:
                confusions[name] = ev.palette_confusion(data, ab, palette).tolist()
            headline_ab[name] = (data, ab)
            grid_columns[name] = ev.to_rgb8(data.L[grid], ab[grid])
        out.results[name] = figures
        steps.update(1)

    seg_confusions: dict[str, Any] = {}
    for name, model in segmenters.items():
        step(name, "segmentation")
        logits = logits_cache.get(id(model))  # the U-Net's map segmenter ran already
        if logits is None:
            logits = _batched(lambda L: segment_logits(model, L), [data.L], config.batch_size)
        figures, confusion = ev.segmentation_metrics_and_confusion(data, logits, num_classes)
        entry = out.results.setdefault(name, {})
        entry.update({f"seg_{k}": v for k, v in figures.items()})
        if world is not None and world.twin_pairs:
            entry["seg_twin_confusion"] = ev.twin_confusion(confusion, world.twin_pairs)
        seg_confusions[name] = confusion.tolist()
        steps.update(1)

    if table3_segmenter is not None:
        step("table3", "colour segmenter")
        out.results["table3_color_segmenter"] = _table3(table3_segmenter, data, sampled, headline_ab, num_classes,
                                                        config.batch_size, world)
    steps.update(1)
    steps.close()
    out.details["palette_confusion"] = confusions
    out.details["segmentation_confusion"] = seg_confusions
    out.images["colorizations"] = ev.image_grid(list(grid_columns.values()), titles=list(grid_columns))
    out.columns["colorizations"] = list(grid_columns)
    if maps is not None:
        out.images["semantic_maps"] = _map_grid(data.seg[grid], maps[grid])
        out.columns["semantic_maps"] = ["true map", "GridNet on gray"]
    return out


def _draw(model: nn.Module, data: ev.EvalSet, k: int, temperature: float, seed: int, batch_size: int) -> torch.Tensor:
    """k draws per image (N, k, 2, S, S), image i of ``data`` seeded by ``seed + i``. Chunks are whole
    multiples of ``inference.SAMPLE_GROUP`` images starting at multiples of it, so even a model without
    per-image seeds (drawn in such groups) gets the same noise for image i whatever ``batch_size`` is."""
    chunk = max(SAMPLE_GROUP, (batch_size // k) // SAMPLE_GROUP * SAMPLE_GROUP)
    draws = []
    for start in range(0, len(data), chunk):
        L = data.L[start : start + chunk]
        draws.append(sample_ab(model, L, [seed + i for i in range(start, start + L.shape[0])], k=k,
                               temperature=temperature))
    return torch.cat(draws)


def _temperature_sweep(model: nn.Module, data: ev.EvalSet, config: EvaluateConfig,
                       palette: metrics.Palette | None) -> dict[str, Any]:
    """Samples at each of ``sweep_temperatures`` with the same per-image seeds: per temperature psnr,
    colorfulness, ms_ssim_between_samples (2 draws) and palette_accuracy; and an image row of the first
    images' first draws, one column per temperature."""
    figures: dict[str, dict[str, float]] = {}
    columns = {"gray": ev.to_rgb8(data.L[:3], torch.zeros_like(data.ab[:3])), "real": ev.to_rgb8(data.L[:3], data.ab[:3])}
    for temperature in config.sweep_temperatures:
        samples = _draw(model, data, 2, temperature, config.seed, config.batch_size)
        entry = ev.cheap_colorization_metrics(data, samples[:, 0], palette)
        entry.update(ev.diversity_metrics(data, samples, None))
        figures[SWEEP_TEMPERATURE_KEY.format(temperature)] = entry
        columns[f"T={temperature:g}"] = ev.to_rgb8(data.L[:3], ev.upsample_ab(samples[:3, 0].float(), data.L.shape[-1]))
    return {"figures": figures, "image": ev.image_grid(list(columns.values()), titles=list(columns)),
            "columns": list(columns)}


def _jitter_sweep(model: nn.Module, data: ev.EvalSet, unjittered: torch.Tensor, config: EvaluateConfig,
                  palette: metrics.Palette | None) -> dict[str, list[float]]:
    """PSNR (and palette accuracy) at each jitter level, the model given the true maps: the jittered gray
    goes in, the ORIGINAL lightness joins the predicted ab, so only the colours are scored."""
    curve: dict[str, list[float]] = {"levels": list(config.jitter.levels), "psnr": [], "palette_accuracy": []}
    for strength in config.jitter.levels:
        if strength == 0.0:
            ab = unjittered
        else:
            jittered = ev.jittered_gray(data.L, strength, config.jitter)
            ab = _batched(lambda L, seg: predict_ab(model, L, seg), [jittered, data.seg], config.batch_size)
        scored = ev.cheap_colorization_metrics(data, ab, palette)
        curve["psnr"].append(scored["psnr"])
        curve["palette_accuracy"].append(scored.get("palette_accuracy", float("nan")))
    return curve


def _table3(segmenter: nn.Module, data: ev.EvalSet, sampled: ev.EvalSet,
            headline: Mapping[str, tuple[ev.EvalSet, torch.Tensor]], num_classes: int, batch_size: int,
            world: World | None) -> dict[str, float]:
    """mIoU of the colour-trained segmenter on gray, real and every colorizer's headline output; gray and
    real also on the sampled images (the PixelCNN headline's set), and its twin confusion on gray/real."""

    def logits_of(subset: ev.EvalSet, ab: torch.Tensor) -> torch.Tensor:
        ab_full = ev.upsample_ab(ab.float(), subset.L.shape[-1])
        return _batched(lambda L, a: segment_logits(segmenter, L, a), [subset.L, ab_full], batch_size)

    def scored(subset: ev.EvalSet, logits: torch.Tensor) -> tuple[float, np.ndarray]:
        figures, confusion = ev.segmentation_metrics_and_confusion(subset, logits, num_classes)
        return figures["miou"], confusion

    table: dict[str, float] = {}
    for label, ab in (("gray", torch.zeros_like(data.ab)), ("real", data.ab)):
        logits = logits_of(data, ab)
        table[f"miou_{label}"], confusion = scored(data, logits)
        # the sampled images are the first ones of the set: the same logits, sliced
        table[f"miou_{label}_on_sampled_images"], _ = scored(sampled, logits[: len(sampled)])
        if world is not None and world.twin_pairs:
            table[f"twin_confusion_{label}"] = ev.twin_confusion(confusion, world.twin_pairs)
    for name, (subset, ab) in headline.items():
        if not name.endswith("_fast"):  # the fast paths are no colorizer's headline (claim e's rule)
            table[f"miou_{name}"], _ = scored(subset, logits_of(subset, ab))
    return table


def _steering_image(data: ev.EvalSet, rows: list[int], ab_true_map: torch.Tensor, ab_swapped: torch.Tensor,
                    swapped: torch.Tensor) -> np.ndarray:
    from semcolor.data.sources.labels import voc_colormap

    palette = voc_colormap()
    return ev.image_grid([
        ev.to_rgb8(data.L[rows], torch.zeros_like(data.ab[rows])),
        palette[data.seg[rows].numpy().astype(np.uint8)],
        ev.to_rgb8(data.L[rows], ab_true_map[rows]),
        palette[swapped[rows].numpy().astype(np.uint8)],
        ev.to_rgb8(data.L[rows], ab_swapped[rows]),
    ], titles=["gray", "true map", "with true map", "twins repainted", "with repainted map"])


def _map_grid(truth: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    from semcolor.data.sources.labels import voc_colormap

    palette = voc_colormap()
    return ev.image_grid([palette[truth.numpy().astype(np.uint8)], palette[predicted.numpy().astype(np.uint8)]],
                         titles=["true map", "GridNet on gray"])
