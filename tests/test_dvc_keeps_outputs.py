"""A `dvc repro` that fails before a stage's work starts keeps every existing output (real dvc, a temporary
git repository: the session's tiny `make demo` project): DVC deletes a stage's outputs before running its
command, so the `check` stage validates the interpreter and params.yaml first, and DVC stops there."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.project_repo import run_command, run_dvc, set_params

pytestmark = [pytest.mark.slow, pytest.mark.server]
TARGET = "train_gridnet@gray"
OUTPUTS = ("models/gridnet_gray.pt", "metrics/train/gridnet_gray.json", "plots/train/gridnet_gray.csv",
           "models/sdc_paper.pt", "metrics/train/sdc_paper.json", "plots/train/sdc_paper.csv",
           "metrics/evaluate.json", "reports/report.md", "data/shards/synthetic/128/manifest.json")


def digests(repo: Path) -> dict[str, str]:
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture
def built(demo_project):
    """The session's tiny `make demo` project; params.yaml is restored (and checked again) afterwards, so
    that the other tests that read the project find it as it was."""
    try:
        yield demo_project, {}
    finally:
        run_command(demo_project, "git", "checkout", "params.yaml")
        run_dvc(demo_project, "repro", "check")


def dvc_without_the_venv(repo: Path, env: dict[str, str]):
    """`.venv/bin/dvc repro` typed in a shell where the venv is not activated: its bin folder is not on PATH,
    so the stages' `python` is the system's (or none)."""
    dvc = Path(sys.executable).parent / "dvc"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if Path(p).resolve() != Path(sys.executable).parent.resolve())
    return run_command(repo, "env", f"PATH={path or '/usr/bin:/bin'}", str(dvc), "repro", env=env, check=False)


def test_a_failed_check_keeps_every_output_and_names_the_cause(built):
    repo, env = built
    before = digests(repo)
    set_params(repo, {"train_gridnet": {"loader": {"crp": 3}}})  # a typo of `crop`

    wrong = dvc_without_the_venv(repo, env)
    assert wrong.returncode != 0
    output = wrong.stdout + wrong.stderr
    assert "Running stage 'check'" in output and output.count("Running stage") == 1  # DVC stopped there
    # either this machine has a `python` without semcolor (one line naming it) or none at all
    assert "pipeline.check: this Python" in output or "python: not found" in output or "No such file" in output
    assert digests(repo) == before

    right = run_dvc(repo, "repro", env=env, check=False)
    assert right.returncode != 0
    output = right.stdout + right.stderr
    assert "params.yaml: unknown key(s) train_gridnet.loader.crp; allowed:" in output
    assert "Traceback" not in output and output.count("Running stage") == 1
    assert digests(repo) == before

    # a model config error (a variant's override) is caught before the stage too
    run_command(repo, "git", "checkout", "params.yaml")
    set_params(repo, {"train_gridnet": {"variants": {"gray": {"config": {"widht": 0.5}}}}})
    bad_model = run_dvc(repo, "repro", env=env, check=False)
    assert bad_model.returncode != 0 and "train_gridnet.variants.gray" in bad_model.stderr
    assert digests(repo) == before

    # fixed: the check passes with the same output bytes, so the model's stage has nothing to do
    run_command(repo, "git", "checkout", "params.yaml")
    fixed = run_dvc(repo, "repro", env=env)
    assert "Running stage 'check'" in fixed.stdout
    assert f"Stage '{TARGET}' didn't change, skipping" in fixed.stdout
    assert digests(repo) == before
    assert "Data and pipelines are up to date" in run_dvc(repo, "status").stdout
