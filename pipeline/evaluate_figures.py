"""The `evaluate` stage's figures on disk (``pipeline.stages.evaluate``, default seed only): every image grid
of the evaluation as ``<name>.png``, claim (c)'s jitter chart, and ``columns.json`` (each grid's column
titles and the stage's MLflow run id), which the report stage reads.

    write_figures(evaluation, Path("reports/figures"), run_id)
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from semcolor.atomic import write_text_atomic
from semcolor.evaluation.jitter_sweep_plot import jitter_sweep_plot
from semcolor.evaluation.suite import Evaluation


def write_figures(evaluation: Evaluation, folder: Path, run_id: str | None) -> None:
    """Write ``evaluation.images`` as PNGs, ``jitter_sweep.png`` when a jitter sweep was measured, and
    ``columns.json`` into ``folder`` (created when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in evaluation.images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    jitter = evaluation.details.get("jitter_sweep")
    if jitter:
        Image.fromarray(jitter_sweep_plot(jitter)).save(folder / "jitter_sweep.png")
    write_text_atomic(folder / "columns.json",
                      json.dumps({**evaluation.columns, "run_id": run_id}, indent=2) + "\n")
