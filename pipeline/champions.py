"""Give every evaluated model a ``champion``: the retrain flow's promotion rule applied after a pipeline run.

    python -m pipeline.champions            # after `dvc repro` (make demo runs it)

For each model in ``metrics/evaluate.json`` whose training summary (``metrics/train/<key>.json``) names the
version it registered, the version is the challenger and is compared with the model's champion by the
retrain flow's own functions (``pipeline.flows.retrain.read_challenger`` and ``promote_if_better``: champion
when there is none yet, or when better by more than ``--margin``), on the model's headline metric:
``palette_accuracy`` for colorizers, ``seg_miou`` for segmenters. So right after ``make demo``,
``models:/semcolor-sdc-paper@champion`` (and every other ``models:/semcolor-<family>-<variant>@champion``)
resolves. The headline metrics are also recorded on each version as tags ``semcolor.metric.<name>``.

It prints one line per model and exits 0; 2 when there is nothing to promote (no evaluation yet).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.flows.retrain import (
    DEFAULT_METRIC, METRIC_TAG_PREFIX, METRICS_FILE, TRAIN_SUMMARIES, Decision, StepFailed, promote_if_better,
    read_challenger, resolve_tracking_uri,
)

SEGMENTATION_METRIC = "seg_miou"
# recorded on each registered version beside the promotion metric, when the model has them
HEADLINE_METRICS = ("palette_accuracy", "psnr", "ssim", "ciede2000", "seg_miou", "seg_pixel_accuracy")


def promotion_metric(figures: dict[str, Any]) -> str | None:
    """The metric a model is promoted on: the retrain default for colorizers, mIoU for segmenters."""
    for metric in (DEFAULT_METRIC, SEGMENTATION_METRIC):
        if metric in figures:
            return metric
    return None


def evaluated_models(repo_dir: Path) -> dict[str, dict[str, Any]]:
    """``{registered name: figures}`` for every model of evaluate.json that has a training summary naming its
    registered version (table entries such as ``table3_color_segmenter`` have none)."""
    evaluation = json.loads((repo_dir / METRICS_FILE).read_text()).get("models", {})
    found: dict[str, dict[str, Any]] = {}
    for key, figures in evaluation.items():
        summary = repo_dir / TRAIN_SUMMARIES / f"{key}.json"
        if not summary.is_file():
            continue
        registered = str(json.loads(summary.read_text()).get("registered_model", ""))
        name = registered.rpartition("/")[0]
        if name:
            found[name] = figures
    return found


def promote_evaluated(repo_dir: str | Path = ".", tracking_uri: str | None = None,
                      margin: float = 0.0) -> dict[str, Decision]:
    """Run the retrain flow's promotion for every evaluated model; the decisions by registered name."""
    from mlflow import MlflowClient

    repo_dir = Path(repo_dir).resolve()
    uri = resolve_tracking_uri(tracking_uri, repo_dir)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    decisions: dict[str, Decision] = {}
    for name, figures in evaluated_models(repo_dir).items():
        metric = promotion_metric(figures)
        if metric is None:
            continue
        challenger = read_challenger(repo_dir, name, metric, client)
        for headline in HEADLINE_METRICS:
            if headline != metric and isinstance(figures.get(headline), (int, float)):
                client.set_model_version_tag(name, challenger.version, METRIC_TAG_PREFIX + headline,
                                             repr(float(figures[headline])))
        decisions[name] = promote_if_better(challenger, client, higher_is_better=True, margin=margin)
    return decisions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Promote each evaluated model's new version to champion "
                                     "by the retrain flow's rule.")
    parser.add_argument("--repo-dir", default=".", help="the project checkout (default: .)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="how much better than the champion a challenger must be (default 0.0)")
    parser.add_argument("--tracking-uri", help="MLflow store (default MLFLOW_TRACKING_URI, else mlflow.db)")
    args = parser.parse_args(argv)
    if not (Path(args.repo_dir) / METRICS_FILE).is_file():
        print(f"pipeline.champions: error: no {METRICS_FILE} in {args.repo_dir}: run the pipeline first "
              "(dvc repro)", file=sys.stderr)
        return 2
    try:
        decisions = promote_evaluated(args.repo_dir, args.tracking_uri, args.margin)
    except StepFailed as error:
        print(f"pipeline.champions: error: {error}", file=sys.stderr)
        return 2
    for name, decision in sorted(decisions.items()):
        verdict = "champion" if decision.promote else "kept champion v" + str(decision.champion_version)
        print(f"{name} v{decision.challenger_version}: {verdict} ({decision.metric} "
              f"{decision.challenger_value:.4g}; {decision.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
