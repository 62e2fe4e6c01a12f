"""semcolor compare (semcolor.tracking.compare, runs, run_table, comparison_grid) against the default SQLite
store: runs logged as the stages log them, filtered, sorted, formatted, and a grid of validation images
colorized by registered models."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.color import decode_lab8, lab_to_rgb8, rgb8_to_lab, rgb8_to_lab8
from semcolor.tracking import compare, run_table, runs as tracked_runs
from semcolor.evaluation.tiles import LABEL_HEIGHT
from semcolor.tracking.comparison_grid import GridModel, comparison_grid, grid_models
from semcolor.tracking.run_table import (
    ComparisonTable,
    build_table,
    format_table,
    higher_is_better,
    key_params,
    sort_runs,
)
from semcolor.tracking.runs import ModelSelector, RunSummary, search_runs
from semcolor.data.shard_format import encode_png
from semcolor.data.shard_reader import read_shard_samples
from semcolor.data.shards import ConvertedSample, SplitResult, write_manifest, write_shards
from tests.mlflow_store import (  # noqa: F401  (fixtures)
    PSC_CONFIG,
    SDC_CONFIG,
    copy_store,
    log_evaluation_run,
    log_training_run,
    migrated_mlflow_db,
    save_tiny_checkpoint,
    tracking_store,
)

pytestmark = pytest.mark.slow
TILE = 32
VAL_IMAGES = 3


# ---------------------------------------------------------------------------------------------- fixtures


def write_val_shards(out_dir: Path, count: int = VAL_IMAGES, size: int = TILE) -> Path:
    """A shard set in the real layout (manifest.json + val-000000.tar) of ``count`` colorful images with a
    3-class map (class 255 on a band)."""
    rng = np.random.default_rng(3)
    samples = []
    y, x = np.mgrid[0:size, 0:size]
    for index in range(count):
        slope_x, slope_y = rng.uniform(-3, 3, 3), rng.uniform(-3, 3, 3)
        base = rng.uniform(40, 215, 3) + slope_x * x[..., None] + slope_y * y[..., None]
        image = np.clip(base, 0, 255).astype(np.uint8)
        label = np.zeros((size, size), np.uint8)
        label[: size // 2] = 1
        label[(x - size // 2) ** 2 + (y - size // 2) ** 2 < (size // 4) ** 2] = 2
        label[size // 4] = 255
        samples.append(ConvertedSample(key=f"val_{index:03d}", metadata_json=b"{}",
                                       lab_png=encode_png(rgb8_to_lab8(image)), seg_png=encode_png(label)))
    shards = write_shards(samples, out_dir, "val", samples_per_shard=100)
    write_manifest(out_dir, source_description={"source": "tiny", "class_names": ["a", "b", "c"]}, size=size,
                   stored_size=size, splits=[SplitResult("val", count, count, tuple(shards), ())],
                   skip_policy={"on_error": "skip", "max_skipped_fraction": 0.0})
    return out_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path) -> dict:
    """One populated store for the module (read by the tests, never written): in experiment ``semcolor``
    three training runs (psc-plain on synthetic and voc2012, sdc-paper on synthetic) and four evaluations;
    in experiment ``other`` one evaluation; and two runs without a model family."""
    import mlflow

    from pipeline import tracking

    folder = tmp_path_factory.mktemp("compare_store")
    uri = copy_store(migrated_mlflow_db, folder / "store")
    runs: dict = {"folder": folder, "uri": uri}
    with tracking_store(uri, folder):
        runs["psc_synthetic"] = log_training_run(folder, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG,
                                                 seed=0, losses=(1.0, 0.6))
        runs["sdc_synthetic"] = log_training_run(folder, "sdc", "paper", "synthetic", "sdc", SDC_CONFIG,
                                                 seed=1, lr=5e-4, losses=(0.9, 0.4))
        runs["psc_voc"] = log_training_run(folder, "psc", "plain", "voc2012", "psc_plain", PSC_CONFIG, seed=2,
                                           losses=(1.0, 0.7))
        runs["eval_psc_synthetic_old"] = log_evaluation_run(
            "psc", "plain", "synthetic", {"psnr": 19.0, "ssim": 0.75, "ciede2000": 13.0})
        runs["eval_psc_synthetic"] = log_evaluation_run(
            "psc", "plain", "synthetic", {"psnr": 20.0, "ssim": 0.8, "ciede2000": 12.0})
        runs["eval_sdc_synthetic"] = log_evaluation_run(
            "sdc", "paper", "synthetic", {"psnr": 22.5, "ssim": 0.7, "ciede2000": 9.0, "auc_ab": 0.9})
        runs["eval_psc_voc"] = log_evaluation_run("psc", "plain", "voc2012",
                                                  {"psnr": 18.0, "ciede2000": 15.0})
        # the evaluate stage's summary run carries no model family: never a row
        with tracking.stage_run("evaluate", {"source": "synthetic"}, tags={"semcolor.dataset": "synthetic"}):
            tracking.log_metrics({"psc_plain.psnr": 20.0})
        with mlflow.start_run(run_name="someone else's run"):
            mlflow.log_metric("psnr", 99.0)
        experiment = tracking.EXPERIMENT
        tracking.EXPERIMENT = "other"
        try:
            runs["eval_other"] = log_evaluation_run("sdc", "paper", "synthetic", {"psnr": 30.0})
        finally:
            tracking.EXPERIMENT = experiment
    return runs


@pytest.fixture
def use_store(store: dict, tmp_path: Path):
    """The module's store as MLflow's current store (MLFLOW_TRACKING_URI=sqlite:///...), cwd ``tmp_path``."""
    with tracking_store(store["uri"], tmp_path):
        yield store


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_val_shards(tmp_path_factory.mktemp("shards") / "tiny" / str(TILE))


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="semcolor")
    compare.add_compare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.handler(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- querying


def test_lists_tagged_runs_with_params_and_metrics(use_store: dict) -> None:
    runs = search_runs(client())
    expected = ("psc_synthetic", "sdc_synthetic", "psc_voc", "eval_psc_synthetic_old", "eval_psc_synthetic",
                "eval_sdc_synthetic", "eval_psc_voc", "eval_other")
    # every tagged run, and not the untagged one
    assert {run.run_id for run in runs} == {run_id(use_store, key) for key in expected}
    train = next(run for run in runs if run.run_id == use_store["sdc_synthetic"].run_id)
    assert (train.experiment, train.stage, train.family, train.variant, train.dataset, train.model_name) == (
        "semcolor", "train_sdc@paper", "sdc", "paper", "synthetic", "sdc")
    assert train.params["model.width"] == "0.0625" and train.params["train.lr"] == "0.0005"
    assert train.metrics["final_loss"] == pytest.approx(0.4) and train.metrics["loss"] == pytest.approx(0.4)
    assert not any(name.startswith("system/") for run in runs for name in run.metrics)
    assert [run.start_time for run in runs] == sorted((run.start_time for run in runs), reverse=True)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"experiments": ["other"]}, {"eval_other"}),
        ({"datasets": ["voc2012"]}, {"psc_voc", "eval_psc_voc"}),
        ({"models": ["sdc-paper"], "experiments": ["semcolor"]}, {"sdc_synthetic", "eval_sdc_synthetic"}),
        ({"models": ["semcolor-sdc-paper"]}, {"sdc_synthetic", "eval_sdc_synthetic", "eval_other"}),
        ({"models": ["psc"], "datasets": ["synthetic"]},
         {"psc_synthetic", "eval_psc_synthetic_old", "eval_psc_synthetic"}),
        ({"models": ["psc-plain", "sdc"], "stages": ["evaluate"], "experiments": ["semcolor"]},
         {"eval_psc_synthetic_old", "eval_psc_synthetic", "eval_sdc_synthetic", "eval_psc_voc"}),
        ({"stages": ["evaluate"], "latest": True, "experiments": ["semcolor"]},
         {"eval_psc_synthetic", "eval_sdc_synthetic", "eval_psc_voc"}),
        ({"stages": ["train"]}, {"psc_synthetic", "sdc_synthetic", "psc_voc"}),
        ({"stages": ["train_psc"]}, {"psc_synthetic", "psc_voc"}),
        ({"stages": ["train_psc@plain", "evaluate/sdc_paper"], "datasets": ["synthetic"]},
         {"psc_synthetic", "eval_sdc_synthetic", "eval_other"}),
        ({"models": ["psc-full"]}, set()),
    ],
)
def test_filters(use_store: dict, filters: dict, expected: set[str]) -> None:
    models = [ModelSelector.parse(text) for text in filters.pop("models", [])]
    runs = search_runs(client(), models=models, **filters)
    assert {run.run_id for run in runs} == {run_id(use_store, key) for key in expected}


def run_id(store: dict, key: str) -> str:
    """The run id of a fixture entry (a LoggedRun for training runs, the id itself for evaluations)."""
    return getattr(store[key], "run_id", store[key])


def test_unknown_experiment_names_the_known_ones(use_store: dict) -> None:
    with pytest.raises(LookupError, match=r"'nope'.*\['Default', 'other', 'semcolor'\]"):
        search_runs(client(), experiments=["nope"])


def test_sorting_by_metric_best_first_missing_last(use_store: dict) -> None:
    runs = search_runs(client(), experiments=["semcolor"])
    by_psnr = sort_runs(runs, "psnr")
    assert [run.metrics.get("psnr") for run in by_psnr] == [22.5, 20.0, 19.0, 18.0, None, None, None]
    by_ciede = sort_runs(runs, "ciede2000")  # a color difference: smaller is better
    assert [run.metrics.get("ciede2000") for run in by_ciede][:4] == [9.0, 12.0, 13.0, 15.0]
    assert [run.metrics.get("psnr") for run in sort_runs(runs, "psnr", descending=False)][:4] == [
        18.0, 19.0, 20.0, 22.5]
    by_loss = sort_runs(runs, "final_loss")
    assert [run.metrics.get("final_loss") for run in by_loss][:3] == pytest.approx([0.4, 0.6, 0.7])


def test_stage_groups() -> None:
    assert tracked_runs.stage_matches("evaluate/psc_full", "evaluate")
    for group in ("train", "train_sdc", "train_sdc@no_in"):
        assert tracked_runs.stage_matches("train_sdc@no_in", group)
    assert not tracked_runs.stage_matches("train_sdc@no_in", "train_s")
    assert not tracked_runs.stage_matches("evaluated", "evaluate")


def test_direction_of_metrics() -> None:
    assert higher_is_better("psnr") and higher_is_better("palette_accuracy")
    assert not higher_is_better("mode_tv") and not higher_is_better("seg_twin_confusion")
    assert higher_is_better("auc_ab") and higher_is_better("colorfulness")
    assert not higher_is_better("final_loss") and not higher_is_better("ciede2000")
    assert not higher_is_better("fid") and not higher_is_better("delta_colorfulness")
    assert not higher_is_better("seg_loss") and not higher_is_better("ms_ssim_between_samples")
    assert higher_is_better("miou") and higher_is_better("mode_coverage") and higher_is_better("ssim")


def test_model_selector_parsing() -> None:
    assert ModelSelector.parse("psc") == ModelSelector("psc", None)
    assert ModelSelector.parse("sdc-no_in") == ModelSelector("sdc", "no_in")
    assert ModelSelector.parse("semcolor-psc-full") == ModelSelector("psc", "full")
    assert ModelSelector.parse("cls-semantic-gan") == ModelSelector("cls", "semantic-gan")
    with pytest.raises(ValueError, match="FAMILY or FAMILY-VARIANT"):
        ModelSelector.parse("-full")


# ---------------------------------------------------------------------------------------------- formats


def _summary(run_id: str, variant: str, psnr: float | None, lr: str, width: str = "0.5") -> RunSummary:
    return RunSummary(run_id=run_id, experiment="semcolor", stage="evaluate", family="psc", variant=variant,
                      dataset="voc|2012", params={"train.lr": lr, "model.width": width, "stage": "evaluate"},
                      metrics={} if psnr is None else {"psnr": psnr})


def test_key_params_are_defaults_present_and_differing_ones() -> None:
    runs = [_summary("a" * 32, "full", 1.0, "0.001"), _summary("b" * 32, "plain", 2.0, "0.01")]
    assert key_params(runs) == ["train.lr"]  # model.width is 0.5 in both: it tells nothing apart
    runs.append(_summary("c" * 32, "embed", 3.0, "0.01", width="0.25"))
    assert key_params(runs) == ["model.width", "train.lr"]
    runs = [RunSummary("c", "e", "s", "f", "v", "d", params={"x.same": "1", "x.differs": "1", "x.only": "3"}),
            RunSummary("d", "e", "s", "f", "v", "d", params={"x.same": "1", "x.differs": "2"})]
    assert key_params(runs) == ["x.differs"]
    assert key_params(runs, ["x.same"]) == ["x.same"]
    many = [RunSummary(str(i), "e", "s", "f", "v", "d", params={f"p{k}": str(i) for k in range(9)})
            for i in range(2)]
    assert key_params(many) == ["p0", "p1", "p2", "p3"]  # at most MAX_PARAMS columns by default


def test_default_metric_columns_are_the_headline_ones() -> None:
    runs = [RunSummary("a", "e", "evaluate/psc_full", "psc", "full", "d",
                       metrics={"psnr": 20.0, "ssim": 0.8, "palette_accuracy": 0.5, "auc_ab": 0.9}),
            RunSummary("b", "e", "evaluate/gridnet_gray", "gridnet", "gray", "d", metrics={"seg_miou": 0.4})]
    assert run_table.metric_columns(runs) == ["palette_accuracy", "psnr", "seg_miou"]
    assert run_table.metric_columns(runs, sort_metric="ssim") == ["ssim", "palette_accuracy", "psnr",
                                                                "seg_miou"]
    assert run_table.metric_columns(runs, ["all"]) == ["auc_ab", "palette_accuracy", "psnr", "seg_miou",
                                                     "ssim"]


def test_runs_group_by_kind_evaluation_first() -> None:
    runs = [RunSummary(i, "e", stage, "psc", "full", "d") for i, stage in
            [("1", "train_psc@full"), ("2", "evaluate/psc_full"), ("3", "ab_bins"), ("4", "train_sdc@paper")]]
    groups = run_table.group_by_kind(runs)
    assert list(groups) == ["evaluate", "train", "other"]
    assert [run.run_id for run in groups["train"]] == ["1", "4"]


def test_csv_is_parseable_with_full_precision() -> None:
    runs = [_summary("a" * 32, "full", 21.123456789, "0.001"), _summary("b" * 32, "plain", None, "0.01")]
    text = format_table(build_table(runs, ["train.lr"], ["psnr"]), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["run_id", "experiment", "stage", "family", "variant", "dataset",
                             "params.train.lr", "metrics.psnr"]
    assert rows[0]["run_id"] == "a" * 32 and float(rows[0]["metrics.psnr"]) == 21.123456789
    assert rows[0]["dataset"] == "voc|2012"
    assert rows[1]["metrics.psnr"] == "" and rows[1]["params.train.lr"] == "0.01"


def test_markdown_and_text_shapes() -> None:
    runs = [_summary("a" * 32, "full", 21.123456789, "0.001"), _summary("b" * 32, "plain", None, "0.01")]
    table = build_table(runs, ["train.lr"], ["psnr"])
    lines = format_table(table, "markdown").splitlines()
    assert len(lines) == 4
    assert lines[0] == "| run_id | experiment | stage | family | variant | dataset | train.lr | psnr |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- | --- | ---: |"
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    # 8 columns; the '|' in voc|2012 is escaped
    assert all(line.replace("\\|", "").count("|") == 9 for line in lines)
    assert lines[2] == "| aaaaaaaa | semcolor | evaluate | psc | full | voc\\|2012 | 0.001 | 21.12 |"
    text = format_table(table, "table").splitlines()
    # headers for people: without the params./metrics. prefixes
    assert text[0].split() == [*table.columns[:6], "train.lr", "psnr"] and set(text[1]) == {"-", " "}
    assert text[2].split() == [
        "aaaaaaaa", "semcolor", "evaluate", "psc", "full", "voc|2012", "0.001", "21.12"]
    assert text[0].index("psnr") + len("psnr") == len(text[2])  # numbers right-aligned
    assert run_table.short_headers(["params.loss", "metrics.loss"]) == ["params.loss", "metrics.loss"]
    with pytest.raises(ValueError, match="table, markdown, csv"):
        format_table(ComparisonTable((), ()), "html")


# ---------------------------------------------------------------------------------------------- command


def test_command_csv_filtered_and_sorted(use_store: dict, capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["compare", "--experiment", "semcolor", "--stage", "evaluate", "--metric",
                              "psnr", "--format", "csv", "--columns", "psnr,ciede2000"], capsys)
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["family"], r["variant"], r["dataset"], float(r["metrics.psnr"])) for r in rows] == [
        ("sdc", "paper", "synthetic", 22.5), ("psc", "plain", "synthetic", 20.0),
        ("psc", "plain", "synthetic", 19.0), ("psc", "plain", "voc2012", 18.0)]
    assert [key for key in rows[0] if key.startswith("metrics.")] == ["metrics.psnr", "metrics.ciede2000"]
    assert rows[0]["run_id"] == use_store["eval_sdc_synthetic"]


def test_command_markdown_of_training_runs(use_store: dict, capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["compare", "--model", "psc-plain", "--stage", "train_psc@plain", "--metric",
                              "final_loss", "--format", "markdown"], capsys)
    assert status == 0
    lines = out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    # one experiment: no experiment column; params: only those that differ (seed, source); headline metrics
    assert header == ["run_id", "stage", "family", "variant", "dataset", "data.source", "train.seed",
                      "final_loss"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    datasets = [row[header.index("dataset")] for row in rows]
    assert datasets == ["synthetic", "voc2012"]  # final_loss 0.6 before 0.7
    assert {row[header.index("train.seed")] for row in rows} == {"0", "2"}  # differing params shown


def test_command_default_table_is_one_narrow_table_per_kind(use_store: dict,
                                                            capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["compare", "--experiment", "semcolor"], capsys)
    assert status == 0
    sections = out.split("\n\n")
    assert [section.splitlines()[0] for section in sections] == ["evaluation runs (4)", "training runs (3)"]
    evaluation = sections[0].splitlines()
    # the differing params (the evaluated model, the source) and the headline metrics the runs have, not
    # ssim or auc_ab
    assert evaluation[1].split() == ["run_id", "stage", "family", "variant", "dataset", "models", "source",
                                     "psnr", "ciede2000"]
    assert max(len(line) for line in out.splitlines()) < 120


def test_command_exit_statuses(use_store: dict, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    status, out, err = run_cli(["compare", "--model", "gridnet"], capsys)
    assert status == 1 and out == "" and "no semcolor runs match" in err
    status, _, err = run_cli(["compare", "--experiment", "missing"], capsys)
    assert status == 2 and "'missing'" in err
    status, _, err = run_cli(["compare", "--grid", str(tmp_path / "g.png")], capsys)
    assert status == 2 and "--shards" in err


# ---------------------------------------------------------------------------------------------- grid


def test_grid_models_are_the_versions_the_listed_runs_registered(use_store: dict, tmp_path: Path) -> None:
    runs = search_runs(client(), datasets=["voc2012"])
    assert grid_models(client(), runs) == [GridModel("psc-plain v2", "models:/semcolor-psc-plain/2")]
    runs = search_runs(client(), datasets=["synthetic"], experiments=["semcolor"])
    assert sorted(grid_models(client(), runs), key=lambda m: m.label) == [
        GridModel("psc-plain v1", "models:/semcolor-psc-plain/1"),
        GridModel("sdc-paper v1", "models:/semcolor-sdc-paper/1")]


def test_grid_falls_back_to_the_champion(store: dict, tmp_path: Path) -> None:
    from semcolor.tracking.registry import promote

    # evaluation runs logged no model: their family-variant's champion is shown (a copy: the alias is a write)
    database = Path(store["uri"].removeprefix("sqlite:///"))
    with tracking_store(copy_store(database, tmp_path / "copy"), tmp_path):
        promote("semcolor-psc-plain", 2)
        runs = search_runs(client(), models=[ModelSelector.parse("psc")], datasets=["synthetic"],
                           stages=["evaluate"])
        assert grid_models(client(), runs) == [GridModel("psc-plain v2", "models:/semcolor-psc-plain/2")]


def test_grid_image_layout_and_tiles(use_store: dict, shards: Path, tmp_path: Path) -> None:
    psc = use_store["psc_synthetic"]
    # an sdc with its semantic stream and no bundled segmenter colorizes with the shards' ground-truth map
    semantic = save_tiny_checkpoint(tmp_path / "sdc_semantic.pt", "sdc",
                                    {**SDC_CONFIG, "semantic_stream": True})
    models = [GridModel("psc by uri", f"models:/{psc.registered_name}/{psc.version}"),
              GridModel("psc by file", str(psc.checkpoint)),
              GridModel("sdc", f"models:/semcolor-sdc-paper/{use_store['sdc_synthetic'].version}"),
              GridModel("sdc semantic", str(semantic))]
    grid, names = comparison_grid(models, shards, images=VAL_IMAGES, progress=False)
    assert names == ["gray", "real", "psc by uri fast", "psc by file fast", "sdc", "sdc semantic"]
    assert grid.shape == (LABEL_HEIGHT + VAL_IMAGES * TILE, 6 * TILE, 3) and grid.dtype == np.uint8

    def tile(row: int, column: int) -> np.ndarray:
        top = LABEL_HEIGHT + row * TILE
        return grid[top : top + TILE, column * TILE : (column + 1) * TILE]

    stored = [sample.lab8 for sample in read_shard_samples(next(shards.glob("val-*.tar")))]
    for row, lab8 in enumerate(stored):
        lab = decode_lab8(lab8)
        np.testing.assert_array_equal(tile(row, 1), lab_to_rgb8(lab))  # real: the stored colors
        gray = tile(row, 0).astype(int)
        assert np.abs(gray - gray[..., :1]).max() <= 1  # gray: R = G = B
        np.testing.assert_array_equal(tile(row, 2), tile(row, 3))  # the registered model is the checkpoint
        for column in (0, 2, 4, 5):  # every column keeps the image's lightness
            assert np.abs(rgb8_to_lab(tile(row, column))[..., 0] - lab[..., 0]).max() < 1.5
        assert not np.array_equal(tile(row, 2), tile(row, 4))
        assert not np.array_equal(tile(row, 4), tile(row, 5))
    assert grid[:LABEL_HEIGHT].min() < 128  # the labels are drawn


def test_command_writes_the_grid(use_store: dict, shards: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grids" / "compare.png"
    status, _, err = run_cli(["compare", "--stage", "train_psc@plain", "--stage", "train_sdc@paper",
                              "--dataset", "synthetic", "--grid", str(out), "--shards", str(shards),
                              "--images", "2", "--no-progress"], capsys)
    assert status == 0, err
    with Image.open(out) as image:
        assert image.size == (4 * TILE, LABEL_HEIGHT + 2 * TILE)
        assert image.text["Description"] == "gray | real | psc-plain v1 fast | sdc-paper v1"
    assert str(out) in err
