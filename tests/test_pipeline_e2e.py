"""The whole pipeline, tiny, through real `dvc repro` in a temporary git repository (the session's
``demo_project``: a tiny `make demo`): data, every model, evaluation, photos and report, tracked in MLflow the
way its users expect, every evaluated model a champion; then a second `dvc repro` has nothing to do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.project_repo import DEMO_PHOTOS, run_dvc

TRAINED = ["psc_plain", "psc_embed", "psc_full", "psc_seg_only", "gridnet_gray", "gridnet_color", "sdc_paper",
           "sdc_no_in", "cls_plain", "cls_semantic", "cls_semantic_gan"]
REGISTERED = {"psc_seg_only": "semcolor-psc-seg-only", "sdc_no_in": "semcolor-sdc-no-in",
              "cls_semantic_gan": "semcolor-cls-semantic-gan", "psc_full": "semcolor-psc-full",
              "gridnet_gray": "semcolor-gridnet-gray"}

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_tiny_pipeline_end_to_end(demo_project):
    repo = demo_project
    again = run_dvc(repo, "repro")
    assert "Data and pipelines are up to date" in again.stdout

    for name in TRAINED:
        assert (repo / "models" / f"{name}.pt").is_file(), name
        summary = json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())
        assert summary["steps"] == 3 and summary["run_id"] and summary["registered_model"].startswith("semcolor-")
    for key, name in REGISTERED.items():  # one spelling: variants with '-'
        assert json.loads((repo / "metrics" / "train" / f"{key}.json").read_text())["registered_model"] == \
            f"{name}/1"
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
    assert (repo / "reports" / "figures" / "colorizations.png").stat().st_size > 0
    shown = run_dvc(repo, "metrics", "show", "--json")
    assert "metrics/headline.json" in shown.stdout and "metrics/evaluate.json" not in shown.stdout


def test_the_report_shows_photos_curves_labelled_grids_and_provenance(demo_project):
    from PIL import Image

    repo = demo_project
    report = (repo / "reports" / "report.md").read_text()
    assert "## The papers' claims" in report and "figures/colorizations.png" in report
    assert "![before/after: the demo U-Net on real photos](photos_strip.png)" in report
    strip = Image.open(repo / "reports" / "photos_strip.png")
    assert strip.height == 2 * 160 + 4 and strip.width == len(DEMO_PHOTOS) * 164 - 4  # gray above colorized
    for family in ("psc", "sdc", "gridnet", "cls"):
        assert f"(curves/{family}.png)" in report and (repo / "reports" / "curves" / f"{family}.png").is_file()
    assert "## Provenance" in report and "Git commit `" in report
    summary = json.loads((repo / "metrics" / "train" / "sdc_paper.json").read_text())
    assert f"| sdc_paper | `{summary['run_id']}` | `semcolor-sdc-paper/1` |" in report
    run_id = json.loads((repo / "reports" / "figures" / "columns.json").read_text())["run_id"]
    assert f"the evaluation `{run_id}`" in report
    grid = np.asarray(Image.open(repo / "reports" / "figures" / "colorizations.png").convert("L"))
    assert grid[:11].min() < 100  # the first line of column titles, drawn in the header band above the tiles


def test_mlflow_holds_what_its_users_expect(demo_project):
    from mlflow.tracking import MlflowClient

    from semcolor.tracking import registry

    repo = demo_project
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("semcolor")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    stages = {run.data.tags.get("semcolor.stage") for run in runs}
    assert {f"train_{f}@{v}" for f, v in [("psc", "plain"), ("sdc", "no_in"), ("cls", "semantic_gan")]} <= stages
    assert "evaluate" in stages and "evaluate/psc_full" in stages
    # one parent run for the `dvc repro`, every stage nested in it; the per-model evaluations in evaluate's
    parents = [r for r in runs if r.data.tags.get("semcolor.stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.run_name == "dvc repro"
    assert parents[0].info.status == "FINISHED"
    evaluate = next(r for r in runs if r.data.tags.get("semcolor.stage") == "evaluate")
    for run in runs:
        stage = run.data.tags.get("semcolor.stage")
        if stage.startswith("evaluate/"):
            assert run.data.tags["mlflow.parentRunId"] == evaluate.info.run_id, stage
        elif stage != "pipeline":
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id, stage
    trained = [r for r in runs if r.data.tags.get("semcolor.stage", "").startswith("train_")]
    assert len(trained) == len(TRAINED)
    manifest_digest = trained[0].data.tags["semcolor.manifest_sha256"]
    for run in trained:
        assert run.data.tags.get("mlflow.source.git.commit") not in (None, "unknown")
        dataset = run.inputs.dataset_inputs[0]
        assert dataset.dataset.name == "synthetic-128" and manifest_digest.startswith(dataset.dataset.digest)
        assert [t.value for t in dataset.tags if t.key == "mlflow.data.context"] == ["training"]
        assert "images/samples.png" in [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        assert "config.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
        assert all(len(value) <= 250 for value in run.data.params.values())  # long ones in config.json
    names = {m.name for m in client.search_registered_models()}
    assert set(REGISTERED.values()) | {"semcolor-sdc-paper"} <= names
    evaluated = json.loads((repo / "metrics" / "evaluate.json").read_text())["models"]
    champions = [name for name in names if registry.model_key(name) in evaluated]
    assert len(champions) == len(TRAINED) - 1  # gridnet_color is evaluated inside the Table 3 protocol only
    for name in champions:  # every evaluated model has a champion, with its description and tags
        version = client.get_model_version_by_alias(name, registry.CHAMPION)
        assert version.description and "trained by the DVC stage" in version.description
        assert version.tags["semcolor.data_version"] == manifest_digest and "semcolor.train.final_loss" in version.tags
        assert any(key.startswith("semcolor.metric.") for key in version.tags)
