"""The `evaluate` stage's MLflow record (``pipeline.stages.evaluate``): every model's figures in the stage's
run, and, for the default seed, one nested run per model tagged with its family and variant, so that
`semcolor compare` shows a model's evaluation beside its training runs.

    log_stage_figures(record["models"], images)            # inside the stage's run
    log_model_runs(record["models"], config, manifest, dataset, parent_run_id)   # after it, default seed
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from semcolor.tracking import tags as tt


def log_stage_figures(results: Mapping[str, Mapping[str, float]], images: Mapping[str, np.ndarray]) -> None:
    """Into the active run: each image as ``figures/<name>.png`` and each figure as ``<model>.<metric>``."""
    for name, image in images.items():
        tracking.log_image(image, f"figures/{name}.png")
    for model, figures in results.items():
        tracking.log_metrics({f"{model}.{k}": v for k, v in figures.items()})


def log_model_runs(results: Mapping[str, Mapping[str, float]], config: Mapping[str, Any], manifest: Path,
                   dataset: str, parent_run_id: str) -> None:
    """One run ``evaluate/<model>`` per model under ``parent_run_id``, holding that model's figures; its
    family and variant come from the name ``<family>_<variant>``."""
    for model, figures in results.items():
        family, _, variant = model.partition("_")
        # no system metrics: the stage's run sampled CPU and memory while measuring; these only log figures
        with tracking.stage_run(f"evaluate/{model}", config, manifest=manifest,
                                tags={tt.TAG_FAMILY: family, tt.TAG_VARIANT: variant,
                                      tt.TAG_DATASET: dataset, tt.TAG_EVALUATES: model},
                                parent_run_id=parent_run_id, system_metrics=False):
            tracking.log_metrics(figures)
