"""The train stage when things go wrong: it fails at its start with one line naming the key or file (a typo in
the model config, a crop larger than the shards, a damaged shard, an unreachable tracking server), and a
run killed mid-way or after its last checkpoint resumes to the complete curve and summary."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest
import yaml

from pipeline.stages import train as train_stage
from semcolor.extract import safe_extract
from semcolor.shard_settings import ShardSettings
from semcolor.shards import convert_source
from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive
from tests.mlflow_store import migrated_mlflow_db, mlflow_store  # noqa: F401  (fixtures)

PARAMS = {
    "train_sdc": {
        "data": {"source": "synthetic", "size": 128},
        "loader": {"batch_size": 4, "crop": 64, "flip": True, "workers": 0, "shuffle_buffer": 8, "seed": 0},
        "train": {"steps": 4, "lr": "1e-3", "log_every": 1, "checkpoint_every": 2, "device": "cpu",
                  "threads": 1, "seed": 0, "progress": False},
        "model": {"num_classes": 9, "width": 0.0625, "semantic_stream": False},
        "variants": {"paper": {"model": "sdc"}},
    }
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    archive = write_world_archive(WorldConfig(seed=3, num_train=16, num_val=4, image_size=64), root / "w.tar",
                                  progress=False)
    out = root / "128"
    convert_source(Synthetic(safe_extract(archive, root / "x", progress=False)), out, 128,
                   settings=ShardSettings(samples_per_shard=8), progress=False)
    return out


@pytest.fixture
def project(mlflow_store, shards, tmp_path, monkeypatch):
    """tmp_path as the project root (cwd): the shards in data/shards/synthetic/128, a tiny params.yaml."""
    monkeypatch.setenv("SEMCOLOR_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(shards, tmp_path / "data" / "shards" / "synthetic" / "128")
    write_params(tmp_path, PARAMS)
    return tmp_path


def write_params(root: Path, params: dict) -> None:
    text = yaml.safe_dump(params, sort_keys=False).replace("'1e-3'", "1e-3")  # as a user writes it
    (root / "params.yaml").write_text(text)


def with_changes(section: str, key: str, value) -> dict:
    params = json.loads(json.dumps(PARAMS))
    params["train_sdc"][section][key] = value
    return params


def runs(status: str | None = None) -> list:
    import mlflow

    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in found if status is None or r.info.status == status]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert "Traceback" not in text, text
    return lines[-1]


def test_a_typo_in_the_model_config_names_its_params_key(project, capsys):
    params = json.loads(json.dumps(PARAMS))
    params["train_sdc"]["model"]["widht"] = 0.1
    write_params(project, params)
    assert train_stage.main(["sdc", "paper"]) == 2
    line = last_line(capsys.readouterr().err)
    assert "unknown key(s) train_sdc.model.widht" in line, line
    params["train_sdc"]["model"].pop("widht")
    params["train_sdc"]["variants"]["paper"]["config"] = {"instance_nrom": False}
    write_params(project, params)
    assert train_stage.main(["sdc", "paper"]) == 2
    assert "train_sdc.variants.paper.config.instance_nrom" in last_line(capsys.readouterr().err)


def test_a_crop_larger_than_the_shards_fails_at_start(project, capsys):
    write_params(project, with_changes("loader", "crop", 160))
    assert train_stage.main(["sdc", "paper"]) == 2
    line = last_line(capsys.readouterr().err)
    assert "train_sdc.loader.crop" in line and "160" in line and "128" in line, line
    assert not (project / "models").exists() and runs() == []


def test_a_damaged_shard_stops_the_stage_before_its_run(project, capsys):
    shard = project / "data" / "shards" / "synthetic" / "128" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-4096])
    assert train_stage.main(["sdc", "paper"]) == 2
    line = last_line(capsys.readouterr().err)
    assert str(Path("data/shards/synthetic/128/train-000001.tar")) in line and "differs from" in line, line
    assert not (project / "models").exists() and runs() == []


class RefusingServer:
    """A TCP port that accepts each connection and closes it at once, counting them (a dead server)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()


def test_an_unreachable_tracking_server_is_found_with_one_request(project, capsys, monkeypatch):
    import mlflow

    server = RefusingServer()
    uri = f"http://127.0.0.1:{server.port}"
    mlflow.set_tracking_uri(uri)
    try:
        assert train_stage.main(["sdc", "paper"]) == 2
    finally:
        server.socket.close()
    line = last_line(capsys.readouterr().err)
    assert f"the MLflow tracking server {uri} is not reachable" in line and "MLFLOW_TRACKING_URI" in line, line
    assert server.connections == 1  # no retries with back-off (MLflow's client: ~4 minutes of them)
    assert not (project / "models").exists()  # nothing trained


def read_curve(root: Path) -> list[dict]:
    with open(root / "plots" / "train" / "sdc_paper.csv") as stream:
        return list(csv.DictReader(stream))


def uninterrupted(project: Path) -> tuple[list[dict], dict]:
    assert train_stage.main(["sdc", "paper"]) == 0
    summary = json.loads((project / "metrics" / "train" / "sdc_paper.json").read_text())
    return read_curve(project), summary


def without_speed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "samples_per_second"} for row in rows]


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_the_whole_curve(project, monkeypatch, capsys):
    reference_curve, reference = uninterrupted(project)
    assert [row["step"] for row in reference_curve] == ["1", "2", "3", "4"]
    shutil.rmtree(project / "plots")
    real_log = train_stage.tracking.log_metrics

    def killed_at_step_3(metrics, step=None):
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C after the checkpoint of step 2
        real_log(metrics, step)

    monkeypatch.setattr(train_stage.tracking, "log_metrics", killed_at_step_3)
    assert train_stage.main(["sdc", "paper"]) == 130
    assert "interrupted" in last_line(capsys.readouterr().err)
    assert len(runs("KILLED")) == 1 and runs("RUNNING") == []
    monkeypatch.setattr(train_stage.tracking, "log_metrics", real_log)
    assert train_stage.main(["sdc", "paper"]) == 0
    assert without_speed(read_curve(project)) == without_speed(reference_curve)  # rows 1-2 kept, 3-4 replayed
    summary = json.loads((project / "metrics" / "train" / "sdc_paper.json").read_text())
    assert summary["final_loss"] == reference["final_loss"] and summary["steps"] == 4


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_resumes_to_a_full_summary(project, monkeypatch, capsys):
    reference_curve, reference = uninterrupted(project)
    for folder in ("plots", "metrics"):
        shutil.rmtree(project / folder)
    real_register = train_stage.tracking.log_checkpoint_model

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_stage.tracking, "log_checkpoint_model", killed)
    assert train_stage.main(["sdc", "paper"]) == 130
    monkeypatch.setattr(train_stage.tracking, "log_checkpoint_model", real_register)
    assert train_stage.main(["sdc", "paper"]) == 0
    summary = json.loads((project / "metrics" / "train" / "sdc_paper.json").read_text())
    assert summary["steps"] == 4 and summary["final_loss"] == reference["final_loss"], summary
    assert without_speed(read_curve(project)) == without_speed(reference_curve)
    assert list((project / "models" / ".partial").iterdir()) == []  # progress checkpoint and curve removed
    assert sorted(p.name for p in (project / "models").iterdir()) == [".partial", "sdc_paper.pt"]
