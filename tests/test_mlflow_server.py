"""A real `mlflow server` on 127.0.0.1 used as a team uses it: remote tracking and registry over HTTP,
artifacts uploaded and downloaded through the server, a model promoted and loaded back by its alias."""

from __future__ import annotations

import argparse
import csv
import io
import socket
import urllib.request
from pathlib import Path

import pytest

from pipeline.mlflow_server import mlflow_server
from semcolor import compare, registry
from semcolor.model_reference import resolve_checkpoint
from tests.mlflow_store import (  # noqa: F401  (fixtures)
    PSC_CONFIG,
    log_evaluation_run,
    log_training_run,
    migrated_mlflow_db,
    tracking_store,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]
NAME = "semcolor-psc-plain"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path):
    """One server for the module (start-up takes 10-30 s); after it, the server's processes are gone."""
    home = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(home, template_db=migrated_mlflow_db) as running:
        yield running
    # stopping is part of the contract: the process group is gone and the port is free again
    assert running.process.poll() is not None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", running.port)) != 0


@pytest.fixture(scope="module")
def served_run(server, tmp_path_factory: pytest.TempPathFactory):
    """A training run logged through the server (model registered as version 1) and an evaluation run.
    The client's working directory is an empty folder: nothing may land there."""
    client_dir = tmp_path_factory.mktemp("client")
    with tracking_store(server.uri, client_dir):
        run = log_training_run(client_dir, "psc", "plain", "synthetic", "psc_plain", PSC_CONFIG, seed=4)
        evaluation = log_evaluation_run("psc", "plain", "synthetic", {"psnr": 21.5, "ssim": 0.81})
    return {"run": run, "evaluation": evaluation, "client_dir": client_dir}


@pytest.fixture
def remote(server, served_run, tmp_path: Path):
    with tracking_store(server.uri, tmp_path):
        yield served_run


def test_server_is_healthy_on_loopback(server) -> None:
    assert server.uri.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{server.uri}/health", timeout=10) as response:
        assert response.status == 200 and response.read().strip() == b"OK"
    assert server.backend_store_uri == f"sqlite:///{server.log_path.parent / 'mlflow.db'}"


def test_artifacts_travel_through_the_server(server, remote) -> None:
    from mlflow import MlflowClient

    run = MlflowClient().get_run(remote["run"].run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied, not a path on the client
    stored = [path for path in server.artifacts_destination.rglob("*.pt")]
    assert [path.read_bytes() for path in stored] == [remote["run"].checkpoint.read_bytes()]
    assert sorted(p.name for p in remote["client_dir"].iterdir()) == [remote["run"].checkpoint.name]
    log = server.log_path.read_text()
    assert "PUT /api/2.0/mlflow-artifacts/artifacts/" in log


def test_champion_loads_back_through_the_server(server, remote, tmp_path: Path) -> None:
    promotion = registry.promote(NAME, remote["run"].version)
    assert (promotion.version, promotion.previous) == ("1", None)
    assert str(registry.get_by_alias(NAME, registry.CHAMPION).run_id) == remote["run"].run_id
    downloaded = resolve_checkpoint(f"models:/{NAME}@champion")
    assert downloaded.read_bytes() == remote["run"].checkpoint.read_bytes()
    # a download, not the server's own file
    assert not str(downloaded).startswith(str(server.artifacts_destination))
    assert "GET /api/2.0/mlflow-artifacts/artifacts/" in server.log_path.read_text()


def test_compare_and_promote_commands_with_a_tracking_uri(server, served_run, capsys, monkeypatch,
                                                          tmp_path: Path) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    parser = argparse.ArgumentParser(prog="semcolor")
    subparsers = parser.add_subparsers(dest="command", required=True)
    compare.add_compare_parser(subparsers)
    registry.add_promote_parser(subparsers)
    try:
        args = parser.parse_args(["compare", "--tracking-uri", server.uri, "--format", "csv",
                                  "--metric", "psnr"])
        assert args.handler(args) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert [(r["run_id"], r["stage"], r["metrics.psnr"]) for r in rows] == [
            (served_run["evaluation"], "evaluate/psc_plain", "21.5"),
            (served_run["run"].run_id, "train_psc@plain", "")]
        args = parser.parse_args(["promote", NAME, "--version", "1", "--alias", "challenger",
                                  "--tracking-uri", server.uri])
        assert args.handler(args) == 0
        assert capsys.readouterr().out == f"models:/{NAME}@challenger -> version 1 (was unset)\n"
    finally:
        mlflow.set_tracking_uri(None)  # run_compare sets the process-wide URI for model downloads
    assert not (tmp_path / "mlflow.db").exists()  # the local default store was never touched
