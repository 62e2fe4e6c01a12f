"""The whole pipeline, tiny, through real `dvc repro` in a temporary git repository: data, every model,
evaluation and report, tracked in MLflow; then a second `dvc repro` has nothing to do."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.project_repo import make_project_repo, run_dvc

TRAIN_TINY = {"steps": 3, "log_every": 1, "checkpoint_every": 2, "threads": 1}
LOADER_TINY = {"batch_size": 4, "workers": 0, "shuffle_buffer": 8}
TINY_PIPELINE = {
    "train_psc": {"loader": {**LOADER_TINY, "crop": 32}, "train": TRAIN_TINY,
                  "model": {"width": 0.03125, "generator_layers": 1, "generator_channels": 8, "num_mixtures": 2}},
    "train_gridnet": {"loader": {**LOADER_TINY, "crop": 32}, "train": TRAIN_TINY, "model": {"width": 0.125}},
    "train_sdc": {"loader": {**LOADER_TINY, "crop": 64}, "train": TRAIN_TINY, "model": {"width": 0.0625}},
    "train_cls": {"loader": {**LOADER_TINY, "crop": 64}, "train": TRAIN_TINY,
                  "model": {"width": 0.0625, "discriminator_width": 0.0625}},
    "evaluate": {"max_images": 8, "sample_images": 2, "samples": 2, "batch_size": 8, "grid_images": 2,
                 "sweep_images": 2, "sweep_temperatures": [1.0, 0.6], "jitter": {"levels": [0.0, 1.0]}},
}
TRAINED = ["psc_plain", "psc_embed", "psc_full", "psc_seg_only", "gridnet_gray", "gridnet_color", "sdc_paper",
           "sdc_no_in", "cls_plain", "cls_semantic", "cls_semantic_gan"]


@pytest.mark.slow
@pytest.mark.server
def test_tiny_pipeline_end_to_end(tmp_path, migrated_mlflow_db):
    repo = make_project_repo(tmp_path, TINY_PIPELINE)
    store = tmp_path / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, store)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}", "SEMCOLOR_EXPERIMENT": "e2e"}
    from pipeline.prefect_server import prefect_server

    with prefect_server() as url:
        run_dvc(repo, "repro", env={**env, "PREFECT_API_URL": url}, timeout=1500)
        again = run_dvc(repo, "repro", env={**env, "PREFECT_API_URL": url})
    assert "Data and pipelines are up to date" in again.stdout

    for name in TRAINED:
        assert (repo / "models" / f"{name}.pt").is_file(), name
        summary = json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())
        assert summary["steps"] == 3 and summary["run_id"] and summary["registered_model"].startswith("semcolor-")
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())["models"]
    for name in ["psc_plain", "psc_embed", "psc_full", "sdc_paper", "sdc_no_in", "cls_plain", "cls_semantic_gan"]:
        figures = evaluation[name]
        assert 0.0 <= figures["palette_accuracy"] <= 1.0 and figures["psnr"] > 5.0, name
    assert 0.0 <= evaluation["psc_full"]["ms_ssim_between_samples"] <= 1.0
    assert set(evaluation["table3_color_segmenter"]) >= {"miou_gray", "miou_real"}
    claims = json.loads((repo / "metrics" / "claims.json").read_text())
    assert list(claims) == ["a", "b", "c", "d", "e", "f"]
    assert all(c["holds"] in (True, False, None) and c["single_seed"] and c["seeds"] == [0] for c in claims.values())
    assert evaluation["psc_full"]["fast_psnr"] > 5.0 and "steer_after" in evaluation["sdc_paper"]
    report = (repo / "reports" / "report.md").read_text()
    assert "## The papers' claims" in report and "figures/colorizations.png" in report
    assert (repo / "reports" / "figures" / "colorizations.png").stat().st_size > 0
    shown = run_dvc(repo, "metrics", "show", "--json")
    assert "metrics/headline.json" in shown.stdout and "metrics/evaluate.json" not in shown.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    stages = {run.data.tags.get("semcolor.stage") for run in runs}
    assert {f"train_{f}@{v}" for f, v in [("psc", "plain"), ("sdc", "no_in"), ("cls", "semantic_gan")]} <= stages
    assert "evaluate" in stages and "evaluate/psc_full" in stages
    trained = [r for r in runs if r.data.tags.get("semcolor.stage", "").startswith("train_")]
    assert len(trained) == len(TRAINED)
    assert all(r.data.tags.get("mlflow.source.git.commit") not in (None, "unknown") for r in trained)
    assert all(r.data.tags.get("semcolor.manifest_sha256") for r in trained)
    names = {m.name for m in client.search_registered_models()}
    assert {"semcolor-psc-full", "semcolor-sdc-paper", "semcolor-gridnet-gray", "semcolor-cls-semantic_gan"} <= names
