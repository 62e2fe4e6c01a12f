"""pipeline.champions: after a pipeline run every evaluated model gets its champion by the retrain flow's
rule, so the README's ``models:/semcolor-<family>-<variant>@champion`` resolves right after `make demo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import champions
from semcolor.tracking import registry
from tests.mlflow_store import (  # noqa: F401  (fixtures)
    PSC_CONFIG,
    copy_store,
    log_training_run,
    migrated_mlflow_db,
    tracking_store,
)

pytestmark = pytest.mark.slow


def write_records(repo: Path, runs: dict, evaluation: dict) -> None:
    """metrics/train/<key>.json (as the train stage writes them) and metrics/evaluate.json."""
    (repo / "metrics" / "train").mkdir(parents=True, exist_ok=True)
    for key, run in runs.items():
        (repo / "metrics" / "train" / f"{key}.json").write_text(json.dumps(
            {"steps": 4, "run_id": run.run_id, "registered_model": f"{run.registered_name}/{run.version}"}))
    (repo / "metrics" / "evaluate.json").write_text(json.dumps({"dataset": "synthetic", "models": evaluation}))


def test_every_evaluated_model_gets_a_champion_by_the_retrain_rule(tmp_path, migrated_mlflow_db, capsys):
    from mlflow import MlflowClient

    repo = tmp_path / "repo"
    repo.mkdir()
    with tracking_store(copy_store(migrated_mlflow_db, tmp_path / "store"), repo) as uri:
        first = {"psc_plain": log_training_run(repo, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG),
                 "psc_seg_only": log_training_run(repo, "psc", "seg_only", "synthetic", "psc_embed",
                                                  {**PSC_CONFIG, "variant": "embed"})}
        assert first["psc_seg_only"].registered_name == "semcolor-psc-seg-only"
        write_records(repo, first, {
            "psc_plain": {"palette_accuracy": 0.4, "psnr": 20.0},
            "psc_seg_only": {"seg_miou": 0.3, "seg_pixel_accuracy": 0.6},
            "table3_color_segmenter": {"miou_gray": 0.1}})  # no training summary: not a model
        capsys.readouterr()
        assert champions.main(["--repo-dir", str(repo)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == [
            "semcolor-psc-plain v1: champion (palette_accuracy 0.4; no champion yet)",
            "semcolor-psc-seg-only v1: champion (seg_miou 0.3; no champion yet)"]
        client = MlflowClient(uri)
        assert registry.check_model_uri("models:/semcolor-psc-plain@champion") is None
        tags = client.get_model_version("semcolor-psc-plain", "1").tags
        assert tags["semcolor.metric.palette_accuracy"] == "0.4" and tags["semcolor.metric.psnr"] == "20.0"
        assert client.get_model_version("semcolor-psc-seg-only", "1").tags["semcolor.metric.seg_miou"] == "0.3"

        # a second pipeline run: a worse psc_plain keeps the champion, a better one would move it
        second = {"psc_plain": log_training_run(repo, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG,
                                                seed=1)}
        write_records(repo, second, {"psc_plain": {"palette_accuracy": 0.35}})
        decisions = champions.promote_evaluated(repo)
        decision = decisions["semcolor-psc-plain"]
        assert (decision.challenger_version, decision.promote, decision.champion_version) == ("2", False, "1")
        assert str(registry.get_by_alias("semcolor-psc-plain", registry.CHAMPION, client).version) == "1"
        assert str(registry.get_by_alias("semcolor-psc-plain", registry.CHALLENGER, client).version) == "2"
        assert registry.best_champion("psc", "palette_accuracy", client) == \
            "models:/semcolor-psc-plain@champion"


def test_without_an_evaluation_it_says_to_run_the_pipeline(tmp_path, capsys):
    assert champions.main(["--repo-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics/evaluate.json" in err and "dvc repro" in err
