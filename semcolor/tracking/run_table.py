"""The comparison table of tracked runs: which columns, sorted how, formatted as text, markdown or csv.

A table row is one run: run id, experiment, stage, family, variant, dataset, key params (``params.<key>``,
the flattened config, e.g. ``params.train.lr``) and metrics (``metrics.<name>``, the last logged value;
MLflow's system metrics ``system/...`` are left out). Formats: ``table`` (aligned plain text),
``markdown`` (a GitHub table) and ``csv`` (full precision, empty cell = not logged).

By default the command is meant to be read: the text formats print one table per kind of run (evaluation,
training, other), each with the HEADLINE_METRICS its runs have and at most MAX_PARAMS params that differ
between them, headers without their prefixes, and no experiment column when there is one experiment;
``--columns all`` / ``--param`` choose others, and csv always has every fixed column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from semcolor.tracking.runs import RunSummary, stage_matches

FIXED_COLUMNS = ("run_id", "experiment", "stage", "family", "variant", "dataset")
# shown whenever a listed run has them; the params that differ between the listed runs are added
DEFAULT_KEY_PARAMS = (
    "model_name", "data.size", "model.width", "train.steps", "train.lr", "loader.batch_size",
)
MAX_PARAMS = 4  # default param columns at most: the differing key params first
# the metric columns by default (``--columns all``: every metric): what each stage is judged by
HEADLINE_METRICS = ("palette_accuracy", "psnr", "ciede2000", "seg_miou", "final_loss",
                    "samples_per_second")
ALL = "all"
# metric name fragments for which smaller is better (errors, distances, losses; delta_colorfulness is an
# absolute difference; ms_ssim_between_samples is 1 for identical samples, lower is more diverse; mode_tv is
# a distance to the true mode frequencies; twin_confusion a share of wrong twins); all others (psnr, ssim,
# auc_ab, miou, palette_accuracy ...): larger is better
LOWER_IS_BETTER = ("loss", "error", "ciede", "delta_", "mse", "mae", "fid", "lpips", "nll", "bpd",
                   "between_samples", "_tv", "twin_confusion")
FORMATS = ("table", "markdown", "csv")


def higher_is_better(metric: str) -> bool:
    """False for losses, errors and distances (``loss``, ``final_loss``, ``ciede2000``, ``fid`` ...)."""
    name = metric.lower()
    return not any(fragment in name for fragment in LOWER_IS_BETTER)


def sort_runs(runs: Sequence[RunSummary], metric: str | None,
              descending: bool | None = None) -> list[RunSummary]:
    """Best first by ``metric`` (direction from ``higher_is_better`` unless ``descending`` is given); runs
    without the metric (or with NaN) last; ties and ``metric=None``: family, variant, dataset, newest
    first."""
    by_name = sorted(runs, key=lambda run: (run.family, run.variant, run.dataset, -run.start_time,
                                            run.run_id))
    if metric is None:
        return by_name
    descending = higher_is_better(metric) if descending is None else descending
    present = [run for run in by_name if _finite(run.metrics.get(metric))]
    absent = [run for run in by_name if not _finite(run.metrics.get(metric))]
    present.sort(key=lambda run: run.metrics[metric], reverse=descending)  # stable: ties keep name order
    return present + absent


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def key_params(runs: Sequence[RunSummary], explicit: Sequence[str] = ()) -> list[str]:
    """The param columns: ``explicit`` if given, else the DEFAULT_KEY_PARAMS with two or more values among
    the runs that have them, then (sorted) other such params, MAX_PARAMS in all (what tells the runs
    apart; a param every run shares says nothing in a comparison)."""
    if explicit:
        return list(explicit)
    present = set().union(*(run.params for run in runs)) if runs else set()
    chosen = [name for name in DEFAULT_KEY_PARAMS if name in present
              and len({run.params[name] for run in runs if name in run.params}) > 1][:MAX_PARAMS]
    # a param only some runs have (another stage's config) does not tell runs apart: it is not "differing"
    varying = sorted(
        name for name in present - set(chosen) - {"stage"}
        if len({run.params[name] for run in runs if name in run.params}) > 1
    )
    return chosen + varying[: MAX_PARAMS - len(chosen)]


def metric_columns(runs: Sequence[RunSummary], explicit: Sequence[str] = (),
                   sort_metric: str | None = None) -> list[str]:
    """The metric columns: ``explicit`` if given (``["all"]``: every metric a run has, sorted), else the
    HEADLINE_METRICS some run has; the sort metric first."""
    present = set().union(*(run.metrics for run in runs)) if runs else set()
    if list(explicit) == [ALL]:
        names = sorted(present)
    elif explicit:
        names = list(explicit)
    else:
        names = [name for name in HEADLINE_METRICS if name in present]
    if sort_metric is not None:
        names = [sort_metric] + [name for name in names if name != sort_metric]
    return names


@dataclass(frozen=True)
class ComparisonTable:
    """Column names and rows of cells: str for identifiers and params, float for metrics, None = not
    logged."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | float | None, ...], ...]


def build_table(runs: Sequence[RunSummary], params: Sequence[str], metrics: Sequence[str],
                fixed: Sequence[str] = FIXED_COLUMNS) -> ComparisonTable:
    """One row per run (in the given order): the ``fixed`` columns (of FIXED_COLUMNS), then
    ``params.<name>``, then ``metrics.<name>``."""
    unknown = [name for name in fixed if name not in FIXED_COLUMNS]
    if unknown:
        raise ValueError(f"unknown fixed columns {unknown}; they are {FIXED_COLUMNS}")
    columns = (*fixed, *(f"params.{p}" for p in params), *(f"metrics.{m}" for m in metrics))
    rows = tuple(
        (*(getattr(run, "run_id" if name == "run_id" else name) for name in fixed),
         *(run.params.get(p) for p in params), *(run.metrics.get(m) for m in metrics))
        for run in runs
    )
    return ComparisonTable(columns=columns, rows=rows)


KIND_TITLES = {"evaluate": "evaluation runs", "train": "training runs", "other": "other runs"}


def run_kind(run: RunSummary) -> str:
    """``evaluate`` (evaluate/<model>), ``train`` (train_<family>@<variant>) or ``other``."""
    if stage_matches(run.stage, "evaluate"):
        return "evaluate"
    return "train" if stage_matches(run.stage, "train") else "other"


def group_by_kind(runs: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    """The runs by kind (evaluation first, then training, then others), each keeping the given order."""
    groups: dict[str, list[RunSummary]] = {kind: [] for kind in KIND_TITLES}
    for run in runs:
        groups[run_kind(run)].append(run)
    return {kind: members for kind, members in groups.items() if members}


def fixed_columns(runs: Sequence[RunSummary]) -> tuple[str, ...]:
    """FIXED_COLUMNS without ``experiment`` when every run is in the same one (a column of one value)."""
    if len({run.experiment for run in runs}) <= 1:
        return tuple(name for name in FIXED_COLUMNS if name != "experiment")
    return FIXED_COLUMNS


def format_table(table: ComparisonTable, fmt: str = "table") -> str:
    """``table`` (aligned text), ``markdown`` or ``csv``. Text formats show 8-character run ids, metrics
    with 4 significant digits and headers without the ``params.``/``metrics.`` prefixes (``short_headers``);
    csv keeps full names, full ids and full precision (``repr`` of the float)."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow("" if cell is None else repr(cell) if isinstance(cell, float) else cell
                            for cell in row)
        return buffer.getvalue()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    cells = [[_text_cell(column, cell) for column, cell in zip(table.columns, row)] for row in table.rows]
    numeric = [column.startswith("metrics.") for column in table.columns]
    header = short_headers(table.columns)
    if fmt == "markdown":
        def line(values: Sequence[str]) -> str:
            return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"

        rule = ["---:" if is_number else "---" for is_number in numeric]
        return "\n".join([line(header), line(rule), *(line(row) for row in cells)]) + "\n"
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(header)]

    def aligned(values: Sequence[str]) -> str:
        return "  ".join(value.rjust(width) if is_number else value.ljust(width)
                         for value, width, is_number in zip(values, widths, numeric)).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([aligned(header), separator, *(aligned(row) for row in cells)]) + "\n"


def short_headers(columns: Sequence[str]) -> list[str]:
    """Column names without their ``params.``/``metrics.`` prefix (params are dotted, ``train.lr``; metrics
    are not), unless two columns would then read the same; csv keeps the full names."""
    short = [column.split(".", 1)[1] if column.startswith(("params.", "metrics.")) else column
             for column in columns]
    return short if len(set(short)) == len(short) else list(columns)


def _text_cell(column: str, cell: str | float | None) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return cell[:8] if column == "run_id" else cell
