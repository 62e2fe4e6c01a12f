"""The retrain flow against real servers on loopback: `prefect server start` (its own home, SQLite) and an
MLflow SQLite store copied from a migrated template.

The pipeline is a toy git + DVC repository (one stage, built here in the real on-disk layout): its stage reads
``toy.quality`` from params.yaml, writes ``metrics/evaluate.json`` as the evaluate stage does and registers a
new version of ``semcolor-toy-base`` in MLflow, so a retrain's outcome is set by a params override.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.flows import retrain as retrain_module
from pipeline.flows.retrain import (
    ARTIFACT_KEY, METRIC_TAG_PREFIX, StepFailed, comparison_markdown, decide, metrics_key, override_arguments,
    pipeline_command, resolve_tracking_uri, retrain,
)
from pipeline.prefect_server import prefect_server
from tests.mlflow_store import copy_store, migrated_mlflow_db  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(400)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "semcolor-toy-base"
METRIC = "palette_accuracy"
CRON = "15 4 * * 1"
DEPLOYMENT = "test-weekly-retrain"

STAGE_SCRIPT = '''\
"""Toy train + evaluate stage: the model's quality is toy.quality from params.yaml."""
import json, os, sys
import yaml
params = yaml.safe_load(open("params.yaml"))["toy"]
if params["fail"]:
    print("toy stage: refusing to train because toy.fail is set", file=sys.stderr)
    sys.exit(3)
quality = float(params["quality"])
os.makedirs("models", exist_ok=True)
os.makedirs("metrics", exist_ok=True)
with open("models/toy.txt", "w") as f:
    f.write(f"quality={quality}\\n")
with open("metrics/evaluate.json", "w") as f:
    json.dump({"models": {"toy_base": {"palette_accuracy": quality, "psnr": 20.0}}}, f)
import mlflow
from mlflow import MlflowClient
mlflow.set_experiment("semcolor")
tags = {"semcolor.family": "toy", "semcolor.variant": "base", "semcolor.stage": "evaluate"}
with mlflow.start_run(run_name="train_evaluate", tags=tags) as run:
    mlflow.log_metric("palette_accuracy", quality)
    mlflow.log_artifact("models/toy.txt", "model")
client = MlflowClient()
if not client.search_registered_models(filter_string="name = 'semcolor-toy-base'"):
    client.create_registered_model("semcolor-toy-base")
client.create_model_version("semcolor-toy-base", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
'''


def _run(repo: Path, *args: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    result = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_toy_repo(root: Path, quality: float, remote: Path | None = None) -> Path:
    """A committed git + DVC repository whose one stage trains and evaluates the toy model."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    _run(repo, "git", "init", "-q")
    _run(repo, sys.executable, "-m", "dvc", "init", "-q")
    (repo / "train_evaluate.py").write_text(STAGE_SCRIPT)
    (repo / "params.yaml").write_text(yaml.safe_dump({"toy": {"quality": quality, "fail": False}}))
    (repo / ".gitignore").write_text("mlruns/\n")
    stage = {"cmd": f"{sys.executable} train_evaluate.py", "deps": ["train_evaluate.py"], "params": ["toy"],
             "outs": ["models/toy.txt"], "metrics": [{"metrics/evaluate.json": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train_evaluate": stage}}, sort_keys=False))
    if remote is not None:
        _run(repo, sys.executable, "-m", "dvc", "remote", "add", "-d", "storage", str(remote))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "toy project")
    return repo


def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_version(uri: str, alias: str) -> str | None:
    from semcolor.tracking import registry

    version = registry.get_by_alias(MODEL, alias, mlflow_client(uri))
    return None if version is None else str(version.version)


def _drain_prefect_workers() -> None:
    """Ship queued logs and events while the server still runs (as prefect_test_harness does): otherwise
    they are retried against the stopped server at interpreter exit, for more than a minute."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


@pytest.fixture(scope="module")
def prefect_api():
    """A real `prefect server start` on 127.0.0.1 for this module; its API URL, current in this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with prefect_server() as url, temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
        _drain_prefect_workers()


@pytest.fixture
def store(tmp_path: Path, migrated_mlflow_db: Path) -> str:  # noqa: F811
    """A fresh MLflow SQLite store (copied from the migrated template); its URI."""
    return copy_store(migrated_mlflow_db, tmp_path / "mlflow")


# ------------------------------------------------------------------------------------------ pure parts


def test_metrics_key_maps_registered_names_to_evaluate_json_keys():
    assert metrics_key("semcolor-sdc-paper") == "sdc_paper"
    assert metrics_key("semcolor-sdc-no-in") == "sdc_no_in"  # registered names spell variants with '-'
    assert metrics_key("semcolor-sdc-no_in") == "sdc_no_in"  # the older spelling still maps
    assert metrics_key("semcolor-psc-seg-only") == "psc_seg_only"
    with pytest.raises(ValueError, match="semcolor-<family>-<variant>"):
        metrics_key("sdc-paper")


def test_serve_refuses_without_a_reachable_prefect_server(monkeypatch, capsys):
    from pipeline.prefect_server import free_port

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    if retrain_module.prefect_server_problem() is None:
        pytest.skip("a Prefect profile on this machine names a reachable server")
    assert retrain_module.main(["--serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PREFECT_API_URL is not set" in err and "prefect server start" in err
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nothing listens there
    assert retrain_module.main(["--serve", "--cron", "0 4 * * *"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not answer" in err and "prefect server start" in err


def test_overrides_become_dvc_exp_run_set_arguments():
    assert pipeline_command(None) == ["repro"]
    assert pipeline_command({}) == ["repro"]
    assert pipeline_command({"train": {"lr": 0.001, "amp": True}, "data.sizes": [128, 352], "x": None}) == [
        "exp", "run", "-S", "train.lr=0.001", "-S", "train.amp=true", "-S", "data.sizes=[128,352]",
        "-S", "x=null"]
    assert override_arguments({"a": {"b": {"c": "s"}}}) == ["-S", "a.b.c=s"]


def test_decide_promotes_only_when_better_by_more_than_the_margin():
    first = decide(METRIC, "1", 0.5, None, None)
    assert first.promote and first.reason == "no champion yet"
    assert decide(METRIC, "2", 0.61, "1", 0.6).promote
    assert not decide(METRIC, "2", 0.6, "1", 0.6).promote  # equal is not better
    assert not decide(METRIC, "2", 0.65, "1", 0.6, margin=0.1).promote
    assert decide(METRIC, "2", 0.75, "1", 0.6, margin=0.1).promote
    assert decide("loss", "2", 0.4, "1", 0.5, higher_is_better=False).promote
    assert not decide("loss", "2", 0.6, "1", 0.5, higher_is_better=False).promote
    assert not decide(METRIC, "3", 0.9, "3", 0.9).promote  # nothing retrained
    unknown = decide(METRIC, "2", 0.9, "1", None)
    assert not unknown.promote and "no recorded" in unknown.reason
    with pytest.raises(ValueError, match="margin"):
        decide(METRIC, "2", 0.9, "1", 0.5, margin=-1)


def test_comparison_markdown_is_a_table_with_both_values_and_the_decision():
    text = comparison_markdown(decide(METRIC, "2", 0.5, "1", 0.75), MODEL)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == "| metric | champion | challenger | decision |"
    assert rows[2].startswith(f"| {METRIC} | v1: 0.75 | v2: 0.5 | kept champion")


def test_relative_sqlite_uri_is_resolved_in_the_repository(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def test_prefect_yaml_deploys_this_flow_on_the_documented_schedule():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in config["deployments"] if d["name"] == retrain_module.DEPLOYMENT_NAME]
    assert load_flow_from_entrypoint(str(PROJECT_ROOT / deployment["entrypoint"])).name == retrain.name
    assert [s["cron"] for s in deployment["schedules"]] == [retrain_module.DEFAULT_CRON]
    # every parameter the deployment sets is one the flow takes, with the flow's default
    defaults = {name: p.default for name, p in inspect.signature(retrain.fn).parameters.items()}
    assert deployment["parameters"] == {key: defaults[key] for key in deployment["parameters"]}


# ------------------------------------------------------------------------------------------ real servers


def _wait_for_deployment(client, name: str, server: subprocess.Popen, log: Path, timeout: float = 180.0):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the serve process exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(1)
    pytest.fail(f"deployment {name} not registered after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.mark.server
@pytest.mark.slow
def test_served_deployment_has_the_cron_schedule_and_a_triggered_run_promotes(
        prefect_api: str, store: str, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.deployments import run_deployment

    remote = tmp_path / "dvc-remote"
    repo = make_toy_repo(tmp_path, quality=0.8, remote=remote)
    log = tmp_path / "serve.log"
    env = dict(os.environ, PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=store, DVC_NO_ANALYTICS="1",
               PREFECT_RUNNER_POLL_FREQUENCY="1")  # pick the triggered run up within a second
    started = time.monotonic()
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.flows.retrain", "--serve", "--cron", CRON, "--name", DEPLOYMENT,
             "--model-name", MODEL, "--repo-dir", str(repo)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            deployment = _wait_for_deployment(client, f"retrain/{DEPLOYMENT}", server, log)
            registered = time.monotonic()
            assert [s.schedule.cron for s in deployment.schedules] == [CRON]
            assert all(s.active for s in deployment.schedules)
            assert deployment.parameters["repo_dir"] == str(repo)

            flow_run = run_deployment(f"retrain/{DEPLOYMENT}", timeout=240, poll_interval=1)
            finished = time.monotonic()
            assert flow_run.state.is_completed(), f"{flow_run.state}\n{log.read_text()[-4000:]}"

            by_key = ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
            artifacts = client.read_artifacts(artifact_filter=by_key)
            ours = [a for a in artifacts if a.flow_run_id == flow_run.id]
            assert len(ours) == 1 and ours[0].type == "markdown"
            assert f"| {METRIC} | none | v1: 0.8 | promoted (no champion yet) |" in ours[0].data
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"\nserve -> deployment registered {registered - started:.1f} s; "
          f"triggered run {finished - registered:.1f} s")

    assert alias_version(store, "champion") == "1"
    assert alias_version(store, "challenger") == "1"
    version = mlflow_client(store).get_model_version(MODEL, "1")
    assert float(version.tags[METRIC_TAG_PREFIX + METRIC]) == 0.8
    # pulled (nothing yet) and pushed: the remote holds the model output's bytes
    pushed = [p for p in remote.rglob("*") if p.is_file()]
    assert any(p.read_bytes() == b"quality=0.8\n" for p in pushed)


@pytest.mark.server
@pytest.mark.slow
def test_worse_challenger_keeps_the_champion_and_a_better_one_replaces_it(
        prefect_api: str, store: str, tmp_path: Path):
    repo = make_toy_repo(tmp_path, quality=0.7)
    common = {"model_name": MODEL, "repo_dir": str(repo), "tracking_uri": store, "pull": False, "push": False}

    started = time.monotonic()
    first = retrain(**common)
    assert first["promote"] and alias_version(store, "champion") == "1"

    worse = retrain(params_overrides={"toy": {"quality": 0.5}}, **common)
    assert worse["challenger_version"] == "2" and worse["challenger_value"] == 0.5
    assert worse["champion_value"] == 0.7 and not worse["promote"]
    assert alias_version(store, "champion") == "1"
    assert alias_version(store, "challenger") == "2"

    # better, but not by more than the margin: kept; by more: promoted, and the old champion is remembered
    close = retrain(params_overrides={"toy.quality": 0.75}, margin=0.1, **common)
    assert not close["promote"] and alias_version(store, "champion") == "1"
    better = retrain(params_overrides={"toy.quality": 0.9}, margin=0.1, **common)
    assert better["promote"] and alias_version(store, "champion") == "4"
    assert alias_version(store, "previous_champion") == "1"
    print(f"\nfour in-process retrains: {time.monotonic() - started:.1f} s")
    # dvc exp run left the evaluated outputs in the workspace
    assert json.loads((repo / "metrics/evaluate.json").read_text())["models"]["toy_base"][METRIC] == 0.9


@pytest.mark.server
@pytest.mark.slow
def test_failing_stage_fails_the_flow_with_its_output_and_moves_no_alias(
        prefect_api: str, store: str, tmp_path: Path):
    repo = make_toy_repo(tmp_path, quality=0.6)
    common = {"model_name": MODEL, "repo_dir": str(repo), "tracking_uri": store, "pull": False, "push": False}
    assert retrain(**common)["promote"]
    before = {alias: alias_version(store, alias) for alias in ("champion", "challenger")}

    state = retrain(params_overrides={"toy": {"fail": True, "quality": 0.99}}, return_state=True, **common)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StepFailed)
    assert "dvc exp run -S toy.fail=true -S toy.quality=0.99" in str(error)
    assert "toy stage: refusing to train because toy.fail is set" in str(error)
    after = {alias: alias_version(store, alias) for alias in before}
    assert after == before == {"champion": "1", "challenger": "1"}
    assert [str(v.version) for v in mlflow_client(store).search_model_versions(f"name = '{MODEL}'")] == ["1"]


@pytest.mark.server
@pytest.mark.slow
def test_missing_metric_fails_in_evaluate_and_names_the_file(prefect_api: str, store: str, tmp_path: Path):
    repo = make_toy_repo(tmp_path, quality=0.6)
    state = retrain(model_name=MODEL, metric="colorfulness", repo_dir=str(repo), tracking_uri=store,
                    pull=False, push=False, return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "metrics/evaluate.json has no models.toy_base.colorfulness" in message
    assert "'toy_base': ['palette_accuracy', 'psnr']" in message
    assert alias_version(store, "champion") is None


def test_cli_without_serve_runs_once(monkeypatch):
    calls = []
    monkeypatch.setattr(retrain_module, "retrain", lambda **kwargs: calls.append(kwargs))
    assert retrain_module.main(["--set", "toy.quality=0.3", "--margin", "0.05", "--no-push"]) == 0
    assert calls[0]["params_overrides"] == {"toy.quality": "0.3"}
    assert calls[0]["margin"] == 0.05 and calls[0]["push"] is False and calls[0]["pull"] is True
