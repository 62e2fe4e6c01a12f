"""Comparing models: a table of tracked runs, and a side-by-side grid of the same validation images.

Runs are found in the MLflow tracking store by the tags every semcolor stage sets (``pipeline.tracking``):
``semcolor.stage`` (``train_psc@full``, ``evaluate/psc_full``, ...; a ``--stage`` filter also matches the
stages it groups: ``train``, ``train_psc``, ``evaluate``), ``semcolor.family`` (psc, sdc, ...),
``semcolor.variant`` (full, paper, ...), ``semcolor.dataset`` (the shard source) and
``semcolor.model_name``. Runs without a family tag (other tools' runs) are never listed.

This module is the command; the jobs live in their own modules: ``semcolor.tracking.runs`` (the MLflow
query), ``semcolor.tracking.run_table`` (a table row, the formats and default columns) and
``semcolor.tracking.comparison_grid`` (what the grid shows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semcolor.evaluation.tiles import write_png
from semcolor.tracking.comparison_grid import GridModel, comparison_grid, grid_models
from semcolor.tracking.run_table import (
    FORMATS,
    HEADLINE_METRICS,
    KIND_TITLES,
    MAX_PARAMS,
    build_table,
    fixed_columns,
    format_table,
    group_by_kind,
    key_params,
    metric_columns,
    sort_runs,
)
from semcolor.tracking.runs import ModelSelector, search_runs


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="compare tracked models: a table of runs and a grid of colorized validation images",
        description=(
            "List semcolor runs from the MLflow tracking store (MLFLOW_TRACKING_URI, else "
            "sqlite:///mlflow.db in the working directory) with their family, variant, dataset, key params "
            "and metrics, and optionally write a PNG grid of validation images colorized by each listed "
            "model. "
            "Exit status: 0 success, 1 no run matched, 2 usage or setup error."
        ),
    )
    parser.add_argument("--experiment", action="append", default=[], metavar="NAME",
                        help="experiment name (repeatable; default: all)")
    parser.add_argument("--dataset", action="append", default=[], metavar="SOURCE",
                        help="training dataset (shard source) tag, e.g. voc2012_aug (repeatable)")
    parser.add_argument("--model", action="append", default=[], metavar="FAMILY[-VARIANT]",
                        help="model family (psc) or family-variant (psc-full) (repeatable)")
    parser.add_argument("--stage", action="append", default=[], metavar="STAGE",
                        help="stage, or a group of stages: evaluate (every evaluate/<model>), train, "
                        "train_psc, train_psc@full (repeatable; default: all)")
    parser.add_argument("--latest", action="store_true",
                        help="only the newest run per stage, family, variant and dataset")
    parser.add_argument("--metric", help="sort by this metric, best first (smaller is better for losses, "
                        "errors and distances)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--ascending", dest="descending", action="store_false", default=None,
                           help="sort the metric ascending whatever its name")
    direction.add_argument("--descending", dest="descending", action="store_true",
                           help="sort the metric descending whatever its name")
    parser.add_argument("--param", action="append", default=[], metavar="KEY",
                        help="param column, e.g. train.lr (repeatable; default: up to "
                        f"{MAX_PARAMS} params whose values differ "
                        "between the listed runs)")
    parser.add_argument("--columns", metavar="M1,M2",
                        help="metric columns, comma-separated, or 'all' (default: the headline metrics "
                        f"{', '.join(HEADLINE_METRICS)}, those the runs have)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.add_argument("--grid", type=Path, metavar="OUT.png",
                        help="also write a grid: rows = validation images, "
                        "columns = gray | real | each model")
    parser.add_argument("--shards", type=Path, metavar="DIR",
                        help="shard set for --grid, e.g. data/shards/voc2012/128")
    parser.add_argument("--images", type=int, default=4, help="rows of the grid (default 4)")
    parser.add_argument("--samples", type=int, default=0, metavar="K",
                        help="also K autoregressive samples of each PixelCNN (psc) model in the grid; its "
                        "first column is its fast, non-autoregressive output, labelled 'fast' (default 0)")
    parser.add_argument("--grid-model", action="append", default=[], metavar="URI",
                        help="a model column of the grid (models:/name@alias, runs:/id/model, checkpoint; "
                        "repeatable; default: the registered model of each listed family-variant)")
    parser.add_argument("--device", default="cpu", help="torch device for --grid")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own resolution)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_compare)
    return parser


def run_compare(args: argparse.Namespace) -> int:
    """The ``semcolor compare`` handler: prints the table to stdout; returns the exit status."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if args.grid is not None and args.shards is None:
        return _error("--grid needs --shards DIR (the shard set whose validation images are shown)")
    if args.images < 1:
        return _error(f"--images must be >= 1, got {args.images}")
    if args.samples < 0:
        return _error(f"--samples must be >= 0, got {args.samples}")
    try:
        selectors = [ModelSelector.parse(text) for text in args.model]
    except ValueError as error:
        return _error(str(error))
    if args.tracking_uri:
        import mlflow

        # model URIs in the grid are resolved by mlflow's global URI (semcolor.tracking.mlflow_model)
        mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    try:
        runs = search_runs(client, experiments=args.experiment, datasets=args.dataset, models=selectors,
                           stages=args.stage, latest=args.latest)
    except LookupError as error:
        return _error(str(error.args[0]))
    except MlflowException as error:
        return _error(f"tracking store {client.tracking_uri}: {error.message}")
    if not runs:
        print(f"no semcolor runs match these filters in {client.tracking_uri}", file=sys.stderr)
        return 1
    runs = sort_runs(runs, args.metric, args.descending)
    metrics = [m.strip() for m in args.columns.split(",") if m.strip()] if args.columns else []
    if args.format == "csv":  # one machine-readable table with every fixed column
        sys.stdout.write(format_table(build_table(runs, key_params(runs, args.param),
                                                  metric_columns(runs, metrics, args.metric)), "csv"))
    else:  # for people: one table per kind of run, each with the columns that kind has
        groups = group_by_kind(runs)
        for index, (kind, members) in enumerate(groups.items()):
            if len(groups) > 1:
                title = f"{KIND_TITLES[kind]} ({len(members)})"
                sys.stdout.write(("\n" if index else "") + (f"**{title}**\n\n" if args.format == "markdown"
                                                            else f"{title}\n"))
            table = build_table(members, key_params(members, args.param),
                                metric_columns(members, metrics, args.metric), fixed_columns(runs))
            sys.stdout.write(format_table(table, args.format))
    if args.grid is None:
        return 0
    models = ([GridModel(label=reference, reference=reference) for reference in args.grid_model]
              or grid_models(client, runs))
    if not models:
        return _error("no registered model for the listed runs; give --grid-model URI")
    try:
        grid, names = comparison_grid(models, args.shards, args.images, device=args.device,
                                      progress=not args.no_progress, samples=args.samples)
    except (FileNotFoundError, KeyError, ValueError) as error:
        return _error(str(error))
    write_png(grid, args.grid, description=" | ".join(names))
    print(f"wrote {args.grid} ({grid.shape[1]}x{grid.shape[0]}): columns {' | '.join(names)}",
          file=sys.stderr)
    return 0


def _error(message: str) -> int:
    print(f"semcolor compare: error: {message}", file=sys.stderr)
    return 2
