"""Comparing models: a table of tracked runs, and a side-by-side grid of the same validation images.

Runs are found in the MLflow tracking store by the tags every semcolor stage sets (``pipeline.tracking``):
``semcolor.stage`` (``train_psc@full``, ``evaluate/psc_full``, ...; a ``--stage`` filter also matches the
stages it groups: ``train``, ``train_psc``, ``evaluate``), ``semcolor.family`` (psc, sdc, ...),
``semcolor.variant`` (full, paper, ...), ``semcolor.dataset`` (the shard source) and
``semcolor.model_name``. Runs without a family tag (other tools' runs) are never listed.

A table row is one run: run id, experiment, stage, family, variant, dataset, key params (``params.<key>``,
the flattened config, e.g. ``params.train.lr``) and metrics (``metrics.<name>``, the last logged value;
MLflow's system metrics ``system/...`` are left out). Formats: ``table`` (aligned plain text),
``markdown`` (a GitHub table) and ``csv`` (full precision, empty cell = not logged).

By default the command is meant to be read: the text formats print one table per kind of run (evaluation,
training, other), each with the HEADLINE_METRICS its runs have and at most MAX_PARAMS params that differ
between them, headers without their prefixes, and no experiment column when there is one experiment;
``--columns all`` / ``--param`` choose others, and csv always has every fixed column.

The grid: rows are validation images of a shard set, columns gray | real | one per model (a PixelCNN's
column is its fast, non-autoregressive output, labelled ``fast``; ``samples`` adds autoregressive ones). Every model sees
the images at the shards' stored size (as evaluation does), is loaded from its registered URI through
``semcolor.inference.load_colorizer`` and colorizes with ``predict_ab``; the colors are joined with the
image's own L and brought into the sRGB gamut at constant L (``lab_to_rgb8_keep_lightness``), as
``semcolor colorize`` does. An ``sdc`` model with a semantic stream uses its bundled segmenter, else the
shards' ground-truth map.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcolor.registry import CHAMPION, REGISTERED_PREFIX, registered_name
from semcolor.tracking_tags import TAG_DATASET, TAG_FAMILY, TAG_MODEL_NAME, TAG_STAGE, TAG_VARIANT


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
STAGE_SEPARATORS = ("/", "_", "@")  # evaluate/<model>, train_<family>@<variant>
LABEL_HEIGHT = 18  # pixels of the column-label band above the grid's tiles
LABEL_FONT_SIZE = 13  # px, Pillow's bundled scalable font (a bitmap fallback without FreeType)


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSummary:
    """One tracked run as the table sees it. start_time: ms since the epoch; metrics: last logged values."""

    run_id: str
    experiment: str
    stage: str
    family: str
    variant: str
    dataset: str
    model_name: str = ""
    start_time: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """``family-variant`` (or the family alone when the run has no variant), e.g. ``psc-full``."""
        return f"{self.family}-{self.variant}" if self.variant else self.family

    @property
    def registered_name(self) -> str:
        """The registry name of the run's model family and variant (``semcolor-psc-full``,
        ``semcolor-psc-seg-only`` for variant ``seg_only``)."""
        return registered_name(self.family, self.variant or None)


@dataclass(frozen=True)
class ModelSelector:
    """A ``--model`` filter: a family (``psc``: every variant) or a family and variant (``psc-full``)."""

    family: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSelector:
        """``psc`` / ``psc-full`` / ``semcolor-psc-full`` (a registered name). Family names hold no ``-``,
        so the first ``-`` separates family from variant (variants may contain ``-``)."""
        text = text.strip()
        if text.startswith(REGISTERED_PREFIX):
            text = text[len(REGISTERED_PREFIX):]
        family, _, variant = text.partition("-")
        if not family:
            raise ValueError(f"model {text!r}: expected FAMILY or FAMILY-VARIANT, e.g. psc or psc-full")
        return cls(family, variant or None)

    def matches(self, run: RunSummary) -> bool:
        """Same family, and same variant when one is given; ``seg-only`` and ``seg_only`` are one variant
        (registered names spell variants with ``-``, params.yaml with ``_``)."""
        return run.family == self.family and (
            self.variant is None or run.variant.replace("-", "_") == self.variant.replace("-", "_"))


def _quote(value: str) -> str:
    """A string constant for an MLflow filter (single quotes unless the value holds one)."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def run_filter(*, datasets: Sequence[str] = (), models: Sequence[ModelSelector] = (),
               stages: Sequence[str] = (), finished_only: bool = True) -> str:
    """The MLflow ``filter_string`` for the filters MLflow can apply itself (it has no OR: a filter with
    several values is applied after the query, see ``select_runs``)."""
    clauses = []
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    if len(datasets) == 1:
        clauses.append(f"tags.`{TAG_DATASET}` = {_quote(datasets[0])}")
    if len(stages) == 1:  # a superset (LIKE's "_" is a wildcard); stage_matches decides
        clauses.append(f"tags.`{TAG_STAGE}` LIKE {_quote(stages[0] + '%')}")
    if len(models) == 1:  # the variant is matched afterwards (select_runs): its spelling may differ
        clauses.append(f"tags.`{TAG_FAMILY}` = {_quote(models[0].family)}")
    return " and ".join(clauses)


def stage_matches(stage: str, wanted: str) -> bool:
    """Whether a run's stage tag is ``wanted`` or one of the stages it groups: ``evaluate`` matches
    ``evaluate`` and ``evaluate/psc_full``; ``train`` every ``train_<family>@<variant>``; ``train_psc``
    every ``train_psc@<variant>``."""
    return stage == wanted or any(stage.startswith(wanted + separator) for separator in STAGE_SEPARATORS)


def select_runs(runs: Iterable[RunSummary], *, datasets: Sequence[str] = (),
                models: Sequence[ModelSelector] = (), stages: Sequence[str] = (),
                latest: bool = False) -> list[RunSummary]:
    """The runs that pass every filter (an empty filter passes all), newest first. ``latest``: only the
    newest run per (stage, family, variant, dataset)."""
    chosen = [
        run for run in runs
        if run.family
        and (not datasets or run.dataset in datasets)
        and (not stages or any(stage_matches(run.stage, wanted) for wanted in stages))
        and (not models or any(selector.matches(run) for selector in models))
    ]
    chosen.sort(key=lambda run: (-run.start_time, run.run_id))
    if latest:
        seen: set[tuple[str, str, str, str]] = set()
        newest = []
        for run in chosen:
            key = (run.stage, run.family, run.variant, run.dataset)
            if key not in seen:
                seen.add(key)
                newest.append(run)
        chosen = newest
    return chosen


def search_runs(client: Any, *, experiments: Sequence[str] = (), datasets: Sequence[str] = (),
                models: Sequence[ModelSelector] = (), stages: Sequence[str] = (), latest: bool = False,
                finished_only: bool = True) -> list[RunSummary]:
    """Query the tracking store of ``client`` (an ``mlflow.MlflowClient``) for semcolor runs.

    experiments: experiment names (default: every active experiment); an unknown name is a LookupError
    listing the known ones. Other filters as ``select_runs``. Returns newest first."""
    from mlflow.entities import ViewType

    known = {e.name: e for e in _all_pages(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)}
    if experiments:
        missing = [name for name in experiments if name not in known]
        if missing:
            raise LookupError(f"no experiment named {', '.join(map(repr, missing))} in the tracking store "
                              f"{client.tracking_uri}; it has {sorted(known)}")
        chosen = [known[name] for name in experiments]
    else:
        chosen = list(known.values())
    if not chosen:
        return []
    names = {e.experiment_id: e.name for e in chosen}
    query = run_filter(datasets=datasets, models=models, stages=stages, finished_only=finished_only)
    found = _all_pages(client.search_runs, experiment_ids=list(names), filter_string=query,
                       run_view_type=ViewType.ACTIVE_ONLY)
    return select_runs((_summary(run, names[run.info.experiment_id]) for run in found), datasets=datasets,
                       models=models, stages=stages, latest=latest)


def _all_pages(search: Any, **kwargs: Any) -> list[Any]:
    """Every result of a paged MLflow search (``page_token`` until there is none)."""
    results: list[Any] = []
    token = None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        results.extend(page)
        token = page.token
        if not token:
            return results


def _summary(run: Any, experiment: str) -> RunSummary:
    tags = run.data.tags
    return RunSummary(
        run_id=run.info.run_id, experiment=experiment, stage=tags.get(TAG_STAGE, ""),
        family=tags.get(TAG_FAMILY, ""), variant=tags.get(TAG_VARIANT, ""), dataset=tags.get(TAG_DATASET, ""),
        model_name=tags.get(TAG_MODEL_NAME, ""), start_time=int(run.info.start_time or 0),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items() if not k.startswith("system/")},
    )


# ---------------------------------------------------------------------------------------------- table


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


# ---------------------------------------------------------------------------------------------- grid


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
        versions = _all_pages(client.search_model_versions, filter_string=f"name = {_quote(name)}")
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


@dataclass(frozen=True)
class ValidationImages:
    """N validation images: L_unit (N, 1, S, S) = L / 50 - 1, ab_unit (N, 2, S, S) = ab / 128, seg (N, S, S)
    long class indices (255 unknown) and their sample keys."""

    L_unit: Any
    ab_unit: Any
    seg: Any
    keys: tuple[str, ...]


def read_validation_images(shard_dir: str | Path, count: int, split: str = "val",
                           crop: int | None = None) -> ValidationImages:
    """The first ``count`` samples of ``split`` in shard order (all of them when the split has fewer),
    centre-cropped to ``crop`` when given."""
    from semcolor.loader import LoaderConfig, ShardBatches

    if count < 1:
        raise ValueError(f"images must be >= 1, got {count}")
    batches = ShardBatches(shard_dir, split, LoaderConfig(batch_size=count, crop=crop, flip=False, workers=0),
                           train=False)
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError(f"{shard_dir} split {split!r} has no samples")
    return ValidationImages(L_unit=batch["L"], ab_unit=batch["ab"], seg=batch["seg"],
                            keys=tuple(batch["key"]))


def lab_images(L_unit: Any, ab_unit: Any) -> np.ndarray:
    """(N, 1, H, W) and (N, 2, H, W) unit tensors -> Lab (N, H, W, 3) float64, L in [0, 100]."""
    from semcolor.scaling import unit_to_lab

    lab = unit_to_lab(L_unit.detach().cpu().float().numpy(), ab_unit.detach().cpu().float().numpy())
    return np.moveaxis(lab, 1, -1).astype(np.float64)


def colorize_tiles(colorizer: Any, images: ValidationImages) -> list[np.ndarray]:
    """One uint8 (H, W, 3) sRGB tile per image: the colorizer's prediction at the images' own size, joined
    with their L and brought into gamut at constant L."""
    import torch

    from semcolor.inference import lab_to_rgb8_keep_lightness, predict_ab

    L = images.L_unit.to(colorizer.device)
    seg = None
    if colorizer.takes_semantic_map and colorizer.segmenter is None:
        seg = images.seg.to(colorizer.device)  # no bundled segmenter: the ground-truth map
    with torch.inference_mode():
        ab = predict_ab(colorizer.model, L, seg=seg, segmenter=colorizer.segmenter).clamp(-1.0, 1.0)
    return [lab_to_rgb8_keep_lightness(lab) for lab in lab_images(images.L_unit, ab.cpu())]


def reference_tiles(images: ValidationImages) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The gray (a = b = 0) and real (the stored colors) uint8 sRGB tiles of every image."""
    import torch

    from semcolor.color import lab_to_rgb8

    gray = [lab_to_rgb8(lab) for lab in lab_images(images.L_unit, torch.zeros_like(images.ab_unit))]
    real = [lab_to_rgb8(lab) for lab in lab_images(images.L_unit, images.ab_unit)]
    return gray, real


def assemble_grid(columns: Sequence[Sequence[np.ndarray]], labels: Sequence[str] | None = None) -> np.ndarray:
    """Tiles (columns of equally sized (H, W, 3) uint8 tiles, one per row) -> one uint8 image of
    rows x H (+ LABEL_HEIGHT when ``labels`` are given, drawn above each column) by columns x W."""
    if not columns or not columns[0]:
        raise ValueError("a grid needs at least one column with one tile")
    rows = len(columns[0])
    height, width = columns[0][0].shape[:2]
    for index, column in enumerate(columns):
        if len(column) != rows or any(tile.shape != (height, width, 3) for tile in column):
            raise ValueError(f"grid column {index}: expected {rows} tiles of {height}x{width}x3")
    grid = np.full((rows * height, len(columns) * width, 3), 255, np.uint8)
    for c, column in enumerate(columns):
        for r, tile in enumerate(column):
            grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = tile
    return grid if labels is None else add_column_labels(grid, labels, width)


def add_column_labels(grid: np.ndarray, labels: Sequence[str], column_width: int, left: int = 0) -> np.ndarray:
    """``grid`` (uint8 (H, W, 3)) with a white band of LABEL_HEIGHT pixels on top holding ``labels[i]`` above
    the column that starts at ``left + i * column_width`` (each label clipped to its column)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(np.asarray(grid, dtype=np.uint8)), (0, LABEL_HEIGHT))
    try:
        font = ImageFont.load_default(size=LABEL_FONT_SIZE)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    for c, label in enumerate(labels):
        # each label is clipped to its own column, so long names never run into the next one
        band = Image.new("RGB", (column_width, LABEL_HEIGHT), (255, 255, 255))
        ImageDraw.Draw(band).text((3, 1), label, fill=(0, 0, 0), font=font)
        canvas.paste(band, (left + c * column_width, 0))
    return np.asarray(canvas)


def sample_tiles(colorizer: Any, images: ValidationImages, seed: int) -> list[np.ndarray]:
    """One autoregressive PixelCNN sample per image (``psc_*`` models), as ``colorize_tiles`` tiles."""
    import torch

    from semcolor.color import lab_to_rgb8_keep_lightness
    from semcolor.scaling import upsample_ab

    L = images.L_unit.to(colorizer.device)
    with torch.inference_mode():
        samples = colorizer.model.sample(L, k=1, temperature=1.0, seed=seed)[:, 0].float()
    ab = upsample_ab(samples, tuple(L.shape[-2:])).clamp(-1.0, 1.0).cpu()
    return [lab_to_rgb8_keep_lightness(lab) for lab in lab_images(images.L_unit, ab)]


def comparison_grid(models: Sequence[GridModel], shard_dir: str | Path, images: int = 4, *,
                    split: str = "val", crop: int | None = None, device: str = "cpu", labels: bool = True,
                    progress: bool = True, samples: int = 0) -> tuple[np.ndarray, list[str]]:
    """The grid image (uint8 RGB) and its column labels: gray | real | one column per model, one row per
    validation image (see the module docstring). A PixelCNN model's column is its fast, non-autoregressive
    output, labelled ``<label> fast``; ``samples`` > 0 adds that many autoregressive samples of it
    (``<label> sample 1`` ...; seeds 0, 1, ...)."""
    from tqdm import tqdm

    from semcolor.inference import load_colorizer

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


def write_png(image: np.ndarray, path: str | Path, description: str = "") -> Path:
    """Write an RGB uint8 image as PNG atomically (temp file + rename); ``description`` goes into the PNG's
    ``Description`` text chunk (the grid's column order)."""
    from PIL import Image, PngImagePlugin

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if description:
        info.add_text("Description", description)
    from semcolor.atomic import atomic_output

    with atomic_output(path) as stream:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(stream, format="PNG", pnginfo=info)
    return path


# ---------------------------------------------------------------------------------------------- command


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

        # model URIs in the grid are resolved by mlflow's global URI (semcolor.mlflow_model)
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
