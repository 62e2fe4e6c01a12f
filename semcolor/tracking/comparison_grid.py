"""The comparison grid: the same validation images colorized by each model, side by side.

The grid: rows are validation images of a shard set, columns gray | real | one per model (a PixelCNN's
column is its fast, non-autoregressive output, labelled ``fast``; ``samples`` adds autoregressive ones).
Models are loaded from their registered URIs through ``semcolor.app.inference.load_colorizer`` and drawn
with ``semcolor.evaluation.tiles`` (what a training run's grid uses too). An ``sdc`` model with a semantic
stream uses its bundled segmenter, else the shards' ground-truth map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semcolor.evaluation.tiles import (
    assemble_grid,
    colorize_tiles,
    read_validation_images,
    reference_tiles,
    sample_tiles,
)
from semcolor.tracking.registry import CHAMPION
from semcolor.tracking.runs import RunSummary, all_pages, filter_value, select_runs


@dataclass(frozen=True)
class GridModel:
    """One model column of the grid: its label and a reference ``load_colorizer`` accepts
    (``models:/name/3``, ``models:/name@champion``, ``runs:/id/model``, a checkpoint path)."""

    label: str
    reference: str


def grid_models(client: Any, runs: Sequence[RunSummary]) -> list[GridModel]:
    """One registered model per (family, variant) among ``runs``, in first-seen order: the registered
    version logged by the newest of these runs (so the grid shows what the table lists), else the
    ``champion`` alias, else the newest version. (family, variant) pairs with no registered model are
    skipped. Labels: ``family-variant vN``."""
    from mlflow.exceptions import MlflowException

    run_order = {run.run_id: index for index, run in enumerate(select_runs(runs))}  # newest first
    chosen: list[GridModel] = []
    seen: set[str] = set()
    for run in runs:
        name = run.registered_name
        if name in seen:
            continue
        seen.add(name)
        versions = all_pages(client.search_model_versions, filter_string=f"name = {filter_value(name)}")
        if not versions:
            continue
        from_listed = sorted((v for v in versions if v.run_id in run_order),
                             key=lambda v: run_order[v.run_id])
        if from_listed:
            version = str(from_listed[0].version)
        else:
            try:
                version = str(client.get_model_version_by_alias(name, CHAMPION).version)
            except MlflowException:
                version = str(max(int(v.version) for v in versions))
        chosen.append(GridModel(label=f"{run.model} v{version}", reference=f"models:/{name}/{version}"))
    return chosen


def comparison_grid(models: Sequence[GridModel], shard_dir: str | Path, images: int = 4, *,
                    split: str = "val", crop: int | None = None, device: str = "cpu", labels: bool = True,
                    progress: bool = True, samples: int = 0) -> tuple[np.ndarray, list[str]]:
    """The grid image (uint8 RGB) and its column labels: gray | real | one column per model, one row per
    validation image (see the module docstring). A PixelCNN model's column is its fast, non-autoregressive
    output, labelled ``<label> fast``; ``samples`` > 0 adds that many autoregressive samples of it
    (``<label> sample 1`` ...; seeds 0, 1, ...)."""
    from tqdm import tqdm

    from semcolor.app.inference import load_colorizer

    if not models:
        raise ValueError("no models to compare: give at least one")
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    batch = read_validation_images(shard_dir, images, split, crop)
    gray, real = reference_tiles(batch)
    columns, names = [gray, real], ["gray", "real"]
    for model in tqdm(models, desc="colorizing", unit="model", disable=not progress):
        colorizer = load_colorizer(model.reference, device=device)
        columns.append(colorize_tiles(colorizer, batch))
        if not colorizer.supports_samples:
            names.append(model.label)
            continue
        names.append(f"{model.label} fast")  # predict_ab's PixelCNN output: the embedding, not a sample
        for index in range(samples):
            columns.append(sample_tiles(colorizer, batch, seed=index))
            names.append(f"{model.label} sample {index + 1}")
    return assemble_grid(columns, names if labels else None), names
