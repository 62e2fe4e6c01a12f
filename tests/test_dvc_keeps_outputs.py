"""A `dvc repro` that fails before a stage's work starts keeps every existing output (real dvc, a temporary
git repository): DVC deletes a stage's outputs before running its command, so the `check` stage validates
the interpreter and params.yaml first, and DVC stops there."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.project_repo import TINY_PIPELINE, git_commit, make_project_repo, run_command, run_dvc, set_params

pytestmark = [pytest.mark.slow, pytest.mark.server]
TARGET = "train_gridnet@gray"
OUTPUTS = ("models/gridnet_gray.pt", "metrics/train/gridnet_gray.json", "plots/train/gridnet_gray.csv",
           "data/shards/synthetic/128/manifest.json")


def digests(repo: Path) -> dict[str, str]:
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture(scope="module")
def built(tmp_path_factory, migrated_mlflow_db):
    """A project copy where `dvc repro train_gridnet@gray` ran (check, data, the model), committed."""
    import shutil

    from pipeline.prefect_server import prefect_server

    root = tmp_path_factory.mktemp("keeps_outputs")
    repo = make_project_repo(root, {"train_gridnet": TINY_PIPELINE["train_gridnet"]})
    shutil.copyfile(migrated_mlflow_db, repo / "mlflow.db")
    with prefect_server() as url:
        env = {"PREFECT_API_URL": url}
        run_dvc(repo, "repro", TARGET, env=env, timeout=900)
        git_commit(repo, "built")
        yield repo, env


def dvc_without_the_venv(repo: Path, env: dict[str, str]):
    """`.venv/bin/dvc repro` typed in a shell where the venv is not activated: its bin folder is not on PATH,
    so the stages' `python` is the system's (or none)."""
    dvc = Path(sys.executable).parent / "dvc"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if Path(p).resolve() != Path(sys.executable).parent.resolve())
    return run_command(repo, "env", f"PATH={path or '/usr/bin:/bin'}", str(dvc), "repro", TARGET,
                       env=env, check=False)


def test_a_failed_check_keeps_every_output_and_names_the_cause(built):
    repo, env = built
    before = digests(repo)
    set_params(repo, {"train_gridnet": {"loader": {"crp": 3}}})  # a typo of `crop`

    wrong = dvc_without_the_venv(repo, env)
    assert wrong.returncode != 0
    output = wrong.stdout + wrong.stderr
    assert "Running stage 'check'" in output and f"Running stage '{TARGET}'" not in output
    # either this machine has a `python` without semcolor (one line naming it) or none at all
    assert "pipeline.check: this Python" in output or "python: not found" in output or "No such file" in output
    assert digests(repo) == before

    right = run_dvc(repo, "repro", TARGET, env=env, check=False)
    assert right.returncode != 0
    output = right.stdout + right.stderr
    assert "params.yaml: unknown key(s) train_gridnet.loader.crp; allowed:" in output
    assert "Traceback" not in output and f"Running stage '{TARGET}'" not in output
    assert digests(repo) == before

    # a model config error (a variant's override) is caught before the stage too
    run_command(repo, "git", "checkout", "params.yaml")
    set_params(repo, {"train_gridnet": {"variants": {"gray": {"config": {"widht": 0.5}}}}})
    bad_model = run_dvc(repo, "repro", TARGET, env=env, check=False)
    assert bad_model.returncode != 0 and "train_gridnet.variants.gray" in bad_model.stderr
    assert digests(repo) == before

    # fixed: the check passes with the same output bytes, so the model's stage has nothing to do
    run_command(repo, "git", "checkout", "params.yaml")
    fixed = run_dvc(repo, "repro", TARGET, env=env)
    assert "Running stage 'check'" in fixed.stdout
    assert f"Stage '{TARGET}' didn't change, skipping" in fixed.stdout
    assert digests(repo) == before
    assert "Data and pipelines are up to date" in run_dvc(repo, "status", TARGET).stdout
