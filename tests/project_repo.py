"""A throw-away copy of this project as its own git + DVC repository, for tests that run real `dvc`.

    repo = make_project_repo(tmp_path, {"shards": {"samples_per_shard": 4}})
    run_dvc(repo, "repro", env={"PREFECT_API_URL": url})
    run_git(repo, "add", "-A"); git_commit(repo, "built")

The copy holds the pipeline files (dvc.yaml, params.yaml, .dvc/config, .dvc/.gitignore, the offline plots
template, .dvcignore, .gitignore, data/checksums/ if present) and the `pipeline/` and `semcolor/` trees that dvc.yaml lists as
deps, so their hashes are real. Stages run `python -m pipeline...` from the copy's root, so they import the
copied code (the same files as the editable install of the checkout). params.yaml is the project's,
deep-merged with ``TINY_PARAMS`` (a synthetic world of 24 + 8 images of 64 px, 128 px shards of 8 samples)
and then with the caller's overrides; the result is committed.

Commands run with ``DVC_NO_ANALYTICS=1``, the patient Prefect start-up settings, a fixed git identity, the
checkout's virtual environment first on PATH, and raise ``CommandError`` (with the command's output) when
they fail.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Files and trees a pipeline run needs (dvc.yaml hashes pipeline/ and semcolor/ as deps). Missing optional
# entries (data/checksums before any real download) are skipped.
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvc/plots/offline.html",
                 ".dvcignore", ".gitignore", "metrics/seeds/README.md")  # the claims stage depends on metrics/seeds
PROJECT_TREES = ("pipeline", "semcolor", "configs", "data/checksums")
_SKIPPED_IN_TREES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")

# A world that generates, extracts and shards in a few seconds on one core. Sizes: only 128 (a 352 build
# would be the same code at ten times the pixels).
TINY_PARAMS: dict[str, Any] = {
    "data": {"sources": ["synthetic"], "sizes": [128]},
    "sources": {"synthetic": {"seed": 0, "num_train": 24, "num_val": 8, "image_size": 64}},
    "shards": {"samples_per_shard": 8, "workers": 1},
}

# Every model at a few steps and tiny widths, evaluation on a handful of images: the whole pipeline in
# minutes (merged as `overrides` of make_project_repo).
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

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "semcolor tests", "GIT_AUTHOR_EMAIL": "tests@semcolor.invalid",
    "GIT_COMMITTER_NAME": "semcolor tests", "GIT_COMMITTER_EMAIL": "tests@semcolor.invalid",
}

DEFAULT_TIMEOUT_S = 600.0


class CommandError(RuntimeError):
    """A `dvc` or `git` command exited non-zero; the message holds the command, its directory and output."""

    def __init__(self, result: subprocess.CompletedProcess, cwd: Path):
        self.result = result
        command = " ".join(str(a) for a in result.args)
        super().__init__(
            f"`{command}` failed with exit status {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, anything else (lists too) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `dvc`/`git`/stages run in: this process's, plus quiet tools and a git identity."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **GIT_IDENTITY,
    })
    env.pop("PYTHONPATH", None)  # stages must import the repo copy's code (cwd), not a test's path hacks
    env.update(extra or {})
    return env


def run_command(
    cwd: Path, *args: str | os.PathLike, env: Mapping[str, str] | None = None, check: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run ``args`` in ``cwd`` with ``tool_env(env)``; text output captured; CommandError on failure."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=tool_env(env), capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise CommandError(result, Path(cwd))
    return result


def run_dvc(
    repo: Path, *args: str | os.PathLike, env: Mapping[str, str] | None = None, check: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """`dvc <args>` in ``repo`` (the venv's dvc). ``env``: extra variables, e.g. ``PREFECT_API_URL`` so
    every stage shares one Prefect server instead of starting its own (~20 s each)."""
    return run_command(repo, "dvc", *args, env=env, check=check, timeout=timeout)


def run_git(repo: Path, *args: str | os.PathLike, env: Mapping[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """`git <args>` in ``repo`` with the test identity."""
    return run_command(repo, "git", *args, env=env, check=check, timeout=120)


def git_commit(repo: Path, message: str) -> str:
    """Stage everything (respecting .gitignore) and commit; returns the new commit's sha."""
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return run_git(repo, "rev-parse", "HEAD").stdout.strip()


def _copy_project(source_root: Path, repo: Path) -> None:
    for name in PROJECT_FILES:
        source = source_root / name
        if not source.is_file():
            if name in ("dvc.yaml", "params.yaml"):
                raise FileNotFoundError(f"{source} is missing: cannot copy the project's pipeline")
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, repo / name)
    for name in PROJECT_TREES:
        if (source_root / name).is_dir():
            shutil.copytree(source_root / name, repo / name, ignore=_SKIPPED_IN_TREES)


def make_project_repo(
    tmp_path: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    name: str = "project",
    tiny: bool = True,
    remote_url: str | os.PathLike | None = None,
    source_root: Path = PROJECT_ROOT,
) -> Path:
    """Create ``tmp_path/name``: a committed git repo copying this project's pipeline; returns its path.

    ``overrides``: params.yaml changes, deep-merged after ``TINY_PARAMS`` (when ``tiny``), e.g.
    ``{"data": {"sizes": [128, 352]}}``. ``remote_url``: when given, becomes the default DVC remote
    (named ``storage``, committed in .dvc/config like a team's shared remote); otherwise the project's
    own .dvc/config decides (its default remote is under ``~``: a test that pushes without ``remote_url``
    should run dvc with ``env={"HOME": ...}``). Nothing is built: run ``run_dvc(repo, "repro")``."""
    repo = Path(tmp_path) / name
    if repo.exists():
        raise FileExistsError(f"{repo} already exists; pass another name")
    repo.mkdir(parents=True)
    _copy_project(Path(source_root), repo)
    (repo / ".dvc").mkdir(exist_ok=True)  # a .dvc directory is what makes a DVC repository

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    if tiny:
        params = deep_merge(params, TINY_PARAMS)
    params = deep_merge(params, overrides or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run_git(repo, "init", "-q")
    if remote_url is not None:
        run_dvc(repo, "remote", "add", "--default", "--force", "storage", str(remote_url))
    git_commit(repo, "project copy for a test")
    return repo


def set_params(repo: Path, overrides: Mapping[str, Any]) -> None:
    """Deep-merge ``overrides`` into ``repo``'s params.yaml (not committed)."""
    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by path relative to it (byte-identical trees compare equal)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


# the photos of ../shared/photos a demo-like project sees: three 352 px ones (the README names the first)
DEMO_PHOTOS = ("lusitania-wiki-common.png", "colton-sturgeon--Izy1v9Roeg-unsplash.png",
               "brian-61OqtzLUWko-unsplash.png")


USER_TRACKING_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME",
                           "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "SEMCOLOR_EXPERIMENT", "SEMCOLOR_PARENT_RUN_ID",
                           "PREFECT_API_URL")


@contextmanager
def _without_environment(*names: str) -> Iterator[None]:
    """``names`` absent from os.environ inside the block, restored after it."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def build_demo_like_project(root: Path, mlflow_template: Path, shared_dir: Path,
                            timeout: float = 2400.0) -> Path:
    """``root/project``: the project after a tiny `make demo`, laid out as a user has it - `dvc repro` of
    TINY_PIPELINE (one Prefect server for all stages), then ``python -m pipeline.champions``; the MLflow
    store is the default ``mlflow.db`` in the project (copied from ``mlflow_template``), ``../shared/photos``
    holds DEMO_PHOTOS of ``shared_dir`` (links) and ``.venv`` links to this checkout's environment.
    Committed afterwards."""
    from pipeline.prefect_server import prefect_server

    (root / "shared" / "photos").mkdir(parents=True)
    for name in DEMO_PHOTOS:
        (root / "shared" / "photos" / name).symlink_to(Path(shared_dir).resolve() / "photos" / name)
    repo = make_project_repo(root, TINY_PIPELINE)
    shutil.copyfile(mlflow_template, repo / "mlflow.db")
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    # built lazily inside whichever test first asks for it: that test's tracking variables (a store of its
    # own, set with monkeypatch) must not send this project's runs elsewhere
    with _without_environment(*USER_TRACKING_VARIABLES), prefect_server() as url:
        run_dvc(repo, "repro", env={"PREFECT_API_URL": url}, timeout=timeout)
        run_command(repo, sys.executable, "-m", "pipeline.champions")
    git_commit(repo, "after a tiny make demo")
    return repo
