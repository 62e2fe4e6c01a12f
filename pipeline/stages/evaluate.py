"""DVC stage `evaluate`: every trained model on the validation split, the claims of both papers.

    python -m pipeline.stages.evaluate

Writes metrics/evaluate.json (per model), metrics/claims.json (one entry per claim a-e, with figures),
reports/figures/*.png (image grids) and logs an MLflow run per model (tagged with its family and variant,
so `semcolor compare` shows evaluation metrics beside the training runs) plus one for the stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import tracking
from pipeline.params import load_section
from semcolor import evaluation as ev
from semcolor.atomic import write_json_atomic
from semcolor.compare import add_column_labels
from semcolor.config import ConfigError, config_to_dict
from semcolor.loader import LoaderConfig, ShardBatches, read_manifest
from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint

MODELS_DIR = Path("models")
FIGURES_DIR = Path("reports/figures")

PSC_VARIANTS = ("plain", "embed", "full")
CLS_VARIANTS = ("plain", "semantic", "semantic_gan")
SDC_VARIANTS = ("paper", "no_in")


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml `evaluate`."""

    source: str = "synthetic"
    size: int = 128
    max_images: int = 150
    samples: int = 4
    sample_images: int = 48
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 50
    strong_jitter_fraction: float = 0.5
    grid_images: int = 6

    def __post_init__(self):
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (diversity compares two samples), got {self.samples}")
        if not 0 < self.strong_jitter_fraction <= 1:
            raise ValueError(f"strong_jitter_fraction must be in (0, 1], got {self.strong_jitter_fraction}")
        if min(self.max_images, self.sample_images, self.batch_size, self.grid_images) < 1:
            raise ValueError("max_images, sample_images, batch_size and grid_images must be >= 1")


def load_eval_set(shard_dir: Path, max_images: int) -> ev.EvalSet:
    """The first ``max_images`` validation samples (in key order), centre-cropped to the stored size."""
    batches = ShardBatches(shard_dir, "val", LoaderConfig(batch_size=max_images, crop=None, flip=False, workers=0),
                           train=False)
    batch = next(iter(batches))
    metadata = _shard_metadata(shard_dir, set(batch["key"]))
    return ev.EvalSet(batch["L"], batch["ab"], batch["seg"], list(batch["key"]), [metadata.get(k, {}) for k in batch["key"]])


def _shard_metadata(shard_dir: Path, keys: set[str]) -> dict[str, dict[str, Any]]:
    from semcolor.shards import read_shard_samples

    found: dict[str, dict[str, Any]] = {}
    for shard in read_manifest(shard_dir)["splits"]["val"]["shards"]:
        for sample in read_shard_samples(shard_dir / shard["file"]):
            if sample.key in keys:
                found[sample.key] = sample.metadata
    return found


def batched(function, tensors: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Apply ``function`` to aligned slices of ``tensors`` and concatenate the results (no grad)."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, tensors[0].shape[0], batch_size):
            outputs.append(function(*(t[start : start + batch_size] for t in tensors)))
    return torch.cat(outputs)


def _load(name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    path = MODELS_DIR / f"{name}.pt"
    payload = load_checkpoint(path)
    return model_from_checkpoint(payload), payload


def evaluate_all(config: EvaluateConfig) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Every model's metrics, the claims, and the image grids (name -> uint8 image)."""
    torch.manual_seed(config.seed)
    shard_dir = Path("data/shards") / config.source / str(config.size)
    manifest = read_manifest(shard_dir)
    data = load_eval_set(shard_dir, config.max_images)
    spec = manifest.get("source_description", {}).get("world_spec")
    class_modes = _class_modes(spec)
    num_classes = len(manifest["class_names"])
    results: dict[str, dict[str, float]] = {}
    columns: dict[str, np.ndarray] = {}
    grid_index = list(range(min(config.grid_images, len(data))))
    sample_set = data.subset(range(min(config.sample_images, len(data))))
    predictions: dict[str, torch.Tensor] = {}  # model -> ab (N, 2, h, w) on `data`
    sampled: dict[str, torch.Tensor] = {}

    # Pixelated Semantic Colorization: generator samples (the model's output), the embedding's fast
    # colorization, segmentation of the gray input
    for variant in PSC_VARIANTS:
        model, _ = _load(f"psc_{variant}")
        name = f"psc_{variant}"
        samples = batched(lambda L: model.sample(L, k=config.samples, temperature=config.temperature, seed=config.seed),
                          [sample_set.L], max(1, config.batch_size // config.samples))
        sampled[name] = samples
        fast = batched(lambda L: model.colorize_fast(L), [data.L], config.batch_size)
        metrics_sample = ev.colorization_metrics(sample_set, samples[:, 0], class_modes)
        if class_modes:  # semantic accuracy pooled over all k samples, not just the first
            metrics_sample["semantic_color_accuracy"] = float(np.mean([
                ev.colorization_metrics(sample_set, samples[:, j], class_modes)["semantic_color_accuracy"]
                for j in range(config.samples)]))
        results[name] = {**metrics_sample, **ev.diversity_metrics(sample_set, samples, class_modes),
                         **{f"fast_{k}": v for k, v in ev.colorization_metrics(data, fast, class_modes).items()}}
        predictions[name] = fast
        columns[name] = ev.to_rgb8(data.L[grid_index], ev.upsample_ab(samples[grid_index, 0].float(), data.L.shape[-1]))
        if variant != "plain":
            logits = batched(lambda L: model.segment(L), [data.L], config.batch_size)
            results[name].update({f"seg_{k}": v for k, v in ev.segmentation_metrics(data, logits, num_classes).items()})
    seg_only, _ = _load("psc_seg_only")
    logits = batched(lambda L: seg_only.segment(L), [data.L], config.batch_size)
    results["psc_seg_only"] = {f"seg_{k}": v for k, v in ev.segmentation_metrics(data, logits, num_classes).items()}

    # Semantic-driven Colorization: GridNet maps from gray, then the U-Net (as the paper evaluates it),
    # plus the U-Net with ground-truth maps (its upper bound)
    gridnet, _ = _load("gridnet_gray")
    gridnet_logits = batched(lambda L: gridnet(_pad32(L)[0])[..., : L.shape[-2], : L.shape[-1]], [data.L], config.batch_size)
    results["gridnet_gray"] = {f"seg_{k}": v for k, v in ev.segmentation_metrics(data, gridnet_logits, num_classes).items()}
    predicted_maps = gridnet_logits.argmax(1)
    strong = ev.strong_jitter_indices(data, config.strong_jitter_fraction)
    for variant in SDC_VARIANTS:
        model, _ = _load(f"sdc_{variant}")
        name = f"sdc_{variant}"
        ab = batched(lambda L, seg: _unpad(model(*_pad32(L, seg)), L), [data.L, predicted_maps], config.batch_size)
        ab_gt = batched(lambda L, seg: _unpad(model(*_pad32(L, seg)), L), [data.L, data.seg], config.batch_size)
        results[name] = {**ev.colorization_metrics(data, ab, class_modes),
                         **{f"gt_map_{k}": v for k, v in ev.colorization_metrics(data, ab_gt, class_modes).items()},
                         **{f"strong_jitter_{k}": v for k, v in ev.colorization_metrics(data.subset(strong), ab[strong], class_modes).items()}}
        predictions[name] = ab
        columns[name] = ev.to_rgb8(data.L[grid_index], ab[grid_index])

    # classification colorizers (third seed)
    for variant in CLS_VARIANTS:
        model, _ = _load(f"cls_{variant}")
        name = f"cls_{variant}"
        ab = batched(lambda L: model.colorize(L), [data.L], config.batch_size)
        results[name] = ev.colorization_metrics(data, ab, class_modes)
        predictions[name] = ab
        columns[name] = ev.to_rgb8(data.L[grid_index], ab[grid_index])

    # the Table 3 protocol: a segmenter trained on color images, on gray / colorized / real color inputs
    color_segmenter, _ = _load("gridnet_color")

    def miou_on(ab: torch.Tensor, subset: ev.EvalSet) -> float:
        ab_full = ev.upsample_ab(ab.float(), subset.L.shape[-1])
        logits = batched(lambda L, a: color_segmenter(_pad32(torch.cat([L, a], 1))[0])[..., : L.shape[-2], : L.shape[-1]],
                         [subset.L, ab_full], config.batch_size)
        return ev.segmentation_metrics(subset, logits, num_classes)["miou"]

    table3 = {"gray": miou_on(torch.zeros_like(data.ab), data), "real": miou_on(data.ab, data)}
    for name, ab in predictions.items():
        table3[name] = miou_on(ab, data)
    for name, samples in sampled.items():
        table3[f"{name}_sample"] = miou_on(samples[:, 0], sample_set)
    table3["gray_on_sampled_images"] = miou_on(torch.zeros_like(sample_set.ab), sample_set)
    table3["real_on_sampled_images"] = miou_on(sample_set.ab, sample_set)
    results["table3_color_segmenter"] = {f"miou_{k}": v for k, v in table3.items()}

    grid_columns = [ev.to_rgb8(data.L[grid_index], torch.zeros_like(data.ab[grid_index])),
                    ev.to_rgb8(data.L[grid_index], data.ab[grid_index])]
    grids = {"colorizations": ev.image_grid(grid_columns + list(columns.values())),
             "semantic_maps": _map_grid(data.seg[grid_index], predicted_maps[grid_index])}
    grids["colorizations_columns"] = np.array(["gray", "real", *columns.keys()])  # names, not an image
    return results, claims(results, table3, class_modes is not None), grids


def claims(results: dict[str, dict[str, float]], table3: dict[str, float], have_modes: bool) -> list[dict[str, Any]]:
    """The five claims, each with the figures it rests on."""
    accuracy = {v: results[f"psc_{v}"].get("semantic_color_accuracy", float("nan")) for v in PSC_VARIANTS}
    a = ev.claim("a", have_modes and accuracy["embed"] > accuracy["plain"] and accuracy["full"] > accuracy["plain"]
                 and accuracy["full"] >= accuracy["embed"],
                 {f"semantic_color_accuracy_{k}": v for k, v in accuracy.items()},
                 "semantics help: embed and full beat plain on semantic color accuracy, and full >= embed")
    joint = {v: results[f"psc_{v}"] for v in ("embed", "full")}
    alone = results["psc_seg_only"]
    b = ev.claim("b", joint["embed"]["seg_miou"] > alone["seg_miou"] and joint["embed"]["seg_seg_loss"] < alone["seg_seg_loss"],
                 {"miou_joint_embed": joint["embed"]["seg_miou"], "miou_joint_full": joint["full"]["seg_miou"],
                  "miou_alone": alone["seg_miou"], "val_loss_joint_embed": joint["embed"]["seg_seg_loss"],
                  "val_loss_alone": alone["seg_seg_loss"]},
                 "joint training helps segmentation: the head trained with colorization (embed) reaches a higher "
                 "mIoU and lower validation loss than the same head trained alone for the same steps")
    with_in, without = results["sdc_paper"], results["sdc_no_in"]
    c = ev.claim("c", with_in["strong_jitter_psnr"] > without["strong_jitter_psnr"],
                 {"psnr_strong_jitter_in": with_in["strong_jitter_psnr"], "psnr_strong_jitter_no_in": without["strong_jitter_psnr"],
                  "semantic_accuracy_strong_jitter_in": with_in.get("strong_jitter_semantic_color_accuracy", float("nan")),
                  "semantic_accuracy_strong_jitter_no_in": without.get("strong_jitter_semantic_color_accuracy", float("nan")),
                  "psnr_all_in": with_in["psnr"], "psnr_all_no_in": without["psnr"]},
                 "Instance Normalization helps: sdc beats sdc without IN (PSNR) on the images with the strongest "
                 "contrast/brightness/gamma jitter")
    full = results["psc_full"]
    d = ev.claim("d", have_modes and full["mode_coverage"] > 1.5 * full["single_mode_coverage"] and full["ms_ssim_between_samples"] < 1.0,
                 {"mode_coverage_full": full.get("mode_coverage", float("nan")),
                  "single_mode_coverage": full.get("single_mode_coverage", float("nan")),
                  "ms_ssim_between_samples_full": full["ms_ssim_between_samples"],
                  **{f"mode_coverage_{v}": results[f"psc_{v}"].get("mode_coverage", float("nan")) for v in ("plain", "embed")}},
                 "diversity: PixelCNN samples cover the modes of multimodal classes (coverage > 1.5x a single-mode "
                 "model's) and MS-SSIM between two samples is below 1")
    colorized = {k: v for k, v in table3.items() if k.endswith("_sample")}
    gray_s, real_s = table3["gray_on_sampled_images"], table3["real_on_sampled_images"]
    e = ev.claim("e", bool(colorized) and all(gray_s < v < real_s for v in colorized.values()),
                 {"miou_gray": gray_s, "miou_real": real_s, **{f"miou_{k}": v for k, v in colorized.items()}},
                 "the Table 3 protocol: a segmenter trained on color images scores mIoU on PixelCNN-colorized images "
                 "between its scores on gray and on real color images")
    return [a, b, c, d, e]


def _class_modes(spec: dict[str, Any] | None) -> dict[int, np.ndarray] | None:
    if not spec:
        return None
    from semcolor.sources.synthetic import class_modes

    return class_modes(spec)


def _pad32(L: torch.Tensor, seg: torch.Tensor | None = None):
    """Pad to sides that are multiples of 32 (reflect for images, ignore for maps)."""
    height, width = L.shape[-2:]
    pad_h, pad_w = (-height) % 32, (-width) % 32
    if pad_h or pad_w:
        L = torch.nn.functional.pad(L, (0, pad_w, 0, pad_h), mode="reflect")
        if seg is not None:
            seg = torch.nn.functional.pad(seg, (0, pad_w, 0, pad_h), value=255)
    return (L,) if seg is None else (L, seg)


def _unpad(output: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return output[..., : like.shape[-2], : like.shape[-1]]


def _map_grid(truth: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    from semcolor.sources._labels import voc_colormap

    palette = voc_colormap()
    return ev.image_grid([palette[truth.numpy().astype(np.uint8)], palette[predicted.numpy().astype(np.uint8)]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_section(EvaluateConfig, "evaluate", args.params)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    shard_dir = Path("data/shards") / config.source / str(config.size)
    with tracking.stage_run("evaluate", config_to_dict(config), manifest=shard_dir / "manifest.json",
                            tags={"semcolor.dataset": config.source},
                            dataset=tracking.DatasetRef(shard_dir, "evaluation")) as stage_run:
        results, claim_list, grids = evaluate_all(config)
        column_names = [str(c) for c in grids.pop("colorizations_columns")]
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        labels = {"colorizations": column_names, "semantic_maps": ["ground truth", "GridNet on gray"]}
        for name, image in grids.items():
            if name in labels:  # the column names in the picture (ev.image_grid: tiles 2 px apart)
                image = add_column_labels(image, labels[name], (image.shape[1] - 2) // len(labels[name]), left=2)
            Image.fromarray(image).save(FIGURES_DIR / f"{name}.png")
            tracking.log_image(image, f"figures/{name}.png")
        (FIGURES_DIR / "columns.json").write_text(json.dumps({"colorizations": column_names,
                                                              "run_id": stage_run.info.run_id}, indent=2) + "\n")
        for model, figures in results.items():
            tracking.log_metrics({f"{model}.{k}": v for k, v in figures.items()})
    for model, figures in results.items():
        family, _, variant = model.partition("_")
        with tracking.stage_run(f"evaluate/{model}", config_to_dict(config), manifest=shard_dir / "manifest.json",
                                tags={"semcolor.family": family, "semcolor.variant": variant,
                                      "semcolor.dataset": config.source, "semcolor.evaluates": model},
                                parent_run_id=stage_run.info.run_id, system_metrics=False):
            tracking.log_metrics(figures)
    Path("metrics").mkdir(exist_ok=True)
    write_json_atomic(Path("metrics/evaluate.json"), {"dataset": config.source, "models": results})
    write_json_atomic(Path("metrics/claims.json"), {"claims": claim_list})
    for item in claim_list:
        print(f"claim ({item['claim']}) {'holds' if item['holds'] else 'does NOT hold'}: {item['figures']}")
    return 0


if __name__ == "__main__":
    from pipeline.stage_main import stage_main  # one line per user error, exit 2

    sys.exit(stage_main(main, "evaluate"))
