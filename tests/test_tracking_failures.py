"""MLflow runs of stages that die: SIGTERM and Ctrl-C end them as KILLED, and a run left RUNNING by a killed
process (SIGKILL) is marked KILLED when its stage next starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from pipeline import tracking
from pipeline.tracking_health import TAG_HOST, TAG_PID, process_tags
from tests.mlflow_store import migrated_mlflow_db, mlflow_store  # noqa: F401  (fixtures)


def status(run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient().get_run(run_id).info.status


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_runs_left_running_by_dead_processes_are_marked_killed(mlflow_store):
    import mlflow

    client = mlflow.MlflowClient()
    experiment = mlflow.set_experiment(tracking.EXPERIMENT).experiment_id
    stage = "train_sdc@paper"

    def running(tags: dict) -> str:
        return client.create_run(experiment, tags={"semcolor.stage": stage, **tags}).info.run_id

    killed = running({TAG_HOST: socket.gethostname(), TAG_PID: str(dead_pid())})
    alive = running(process_tags())  # this very process: still alive
    elsewhere = running({TAG_HOST: "another-host", TAG_PID: str(dead_pid())})
    other_stage = client.create_run(experiment, tags={"semcolor.stage": "evaluate", TAG_HOST: socket.gethostname(),
                                                      TAG_PID: str(dead_pid())}).info.run_id
    with tracking.stage_run(stage, {"a": 1}) as run:
        assert run.data.tags[TAG_PID] == str(os.getpid())
    assert status(killed) == "KILLED"
    assert [status(r) for r in (alive, elsewhere, other_stage)] == ["RUNNING"] * 3
    assert status(run.info.run_id) == "FINISHED"


def test_ctrl_c_inside_a_stage_run_marks_it_killed(mlflow_store):
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("train_psc@plain", {}) as run:
            raise KeyboardInterrupt
    assert status(run.info.run_id) == "KILLED"
    with pytest.raises(ValueError):
        with tracking.stage_run("train_psc@plain", {}) as failed:
            raise ValueError("a bug")
    assert status(failed.info.run_id) == "FAILED"


@pytest.mark.slow
def test_sigterm_ends_a_stage_with_its_run_killed(mlflow_store, tmp_path):
    code = textwrap.dedent("""
        import sys, time
        from pipeline import tracking
        from pipeline.stage_main import stage_main

        def work():
            with tracking.stage_run("train_gridnet@gray", {}) as run:
                print(run.info.run_id, flush=True)
                time.sleep(120)
            return 0

        sys.exit(stage_main(work, "train_gridnet@gray"))
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "terminated (SIGTERM)" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert status(run_id) == "KILLED"
