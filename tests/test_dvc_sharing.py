"""Sharing versioned datasets with DVC, as a team does: real `dvc` and `git` in temporary repositories that
copy this project's pipeline (tests/project_repo.py), offline, with a tiny synthetic world.

One origin repository is built once (`dvc repro`), committed, tagged ``data-v1`` and pushed to a local
directory remote. Then: a git clone pulls byte-identical data and has nothing to reproduce; another project
imports / gets ``data/shards/synthetic/128``; a changed source (the world's seed) is a new version, and
checking out the old commit plus ``dvc checkout`` brings the old shards back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.project_repo import (
    PROJECT_ROOT, git_commit, make_project_repo, run_dvc, run_git, set_params, tree_digests,
)

pytestmark = [pytest.mark.slow, pytest.mark.server]

SHARDS = "data/shards/synthetic/128"
UP_TO_DATE = "Data and pipelines are up to date."
# The data stages only (the shards stage and, --with-deps, its upstream download): dvc.yaml also holds
# training stages that these tests neither build nor need.
DATA = ("shards@synthetic-128", "--with-deps")


@dataclass(frozen=True)
class Origin:
    repo: Path
    remote: Path
    commit: str
    shards: dict[str, str]  # relative path -> sha256 of data/shards/synthetic/128 at data-v1
    extracted: dict[str, str]
    env: dict[str, str]  # PREFECT_API_URL of the session's test server: stages share it


@pytest.fixture(scope="module")
def prefect_env(prefect_harness) -> dict[str, str]:
    """Stage processes talk to the session's Prefect test server instead of each starting one (~20 s)."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, prefect_env: dict[str, str]) -> Origin:
    base = tmp_path_factory.mktemp("sharing")
    remote = base / "remote"
    repo = make_project_repo(base, name="origin", remote_url=remote)
    run_dvc(repo, "repro", DATA[0], env=prefect_env)
    commit = git_commit(repo, "data v1")
    run_git(repo, "tag", "data-v1")
    run_dvc(repo, "push", *DATA)
    return Origin(repo, remote, commit, tree_digests(repo / SHARDS),
                  tree_digests(repo / "data/extracted/synthetic"), prefect_env)


def _lock_out_hash(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def _clone(origin: Origin, destination: Path, *, pull: bool = True) -> Path:
    run_git(destination.parent, "clone", "-q", str(origin.repo), destination.name)
    if pull:
        run_dvc(destination, "pull", *DATA)
    return destination


def test_built_data_is_in_git_only_as_hashes_and_in_sync_with_the_remote(origin: Origin) -> None:
    tracked = run_git(origin.repo, "ls-files").stdout.splitlines()
    assert "dvc.lock" in tracked
    assert not [name for name in tracked if name.startswith("data/shards/") and name.endswith(".tar")]
    assert run_dvc(origin.repo, "status", *DATA).stdout.strip() == UP_TO_DATE
    assert "in sync" in run_dvc(origin.repo, "status", "--cloud", *DATA).stdout
    manifest = json.loads((origin.repo / SHARDS / "manifest.json").read_text())
    listed = {shard["file"]: shard["sha256"] for split in manifest["splits"].values()
              for shard in split["shards"]}
    assert listed and {name: origin.shards[name] for name in listed} == listed
    assert sum(1 for p in (origin.remote / "files" / "md5").rglob("*") if p.is_file()) >= len(origin.shards)


def test_clone_pulls_identical_data_and_has_nothing_to_reproduce(origin: Origin, tmp_path: Path) -> None:
    clone = _clone(origin, tmp_path / "clone", pull=False)
    assert not (clone / SHARDS).exists()  # git carries only the hashes
    pulled = run_dvc(clone, "pull", *DATA)
    assert "files" in pulled.stdout
    assert tree_digests(clone / SHARDS) == origin.shards
    assert tree_digests(clone / "data/extracted/synthetic") == origin.extracted
    # the setup check's output is not cached (it must run in the clone's own interpreter): the first repro
    # runs the check alone, in seconds; its output has the same bytes, so no data stage reruns
    repro = run_dvc(clone, "repro", DATA[0], env=origin.env).stdout
    assert repro.count("Running stage") == 1 and "Running stage 'check'" in repro, repro
    assert run_dvc(clone, "status", *DATA).stdout.strip() == UP_TO_DATE
    assert run_git(clone, "status", "--porcelain").stdout == ""  # nothing rewritten either


def test_rebuilding_from_scratch_gives_the_same_hashes(origin: Origin, tmp_path: Path) -> None:
    """Same params and code -> same dvc.lock, on any machine: no output may hold a timestamp or a path."""
    clone = _clone(origin, tmp_path / "rebuild", pull=False)
    run_dvc(clone, "repro", "--force", DATA[0], env=origin.env)  # --force: the upstream download too
    changed = run_git(clone, "diff", "--", "dvc.lock").stdout
    assert changed == "", (
        "a rebuild changed dvc.lock (data/raw holds *.verified.json digest caches keyed by mtime? "
        "list them in .dvcignore):\n" + changed)
    assert tree_digests(clone / SHARDS) == origin.shards


def test_another_project_imports_and_gets_the_shards(origin: Origin, tmp_path: Path) -> None:
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run_git(consumer, "init", "-q")
    run_dvc(consumer, "init", "-q")
    run_dvc(consumer, "import", str(origin.repo), SHARDS, "-o", "shards-128")
    assert tree_digests(consumer / "shards-128") == origin.shards
    record = yaml.safe_load((consumer / "shards-128.dvc").read_text())
    source = record["deps"][0]
    assert source["path"] == SHARDS and source["repo"]["url"] == str(origin.repo)
    assert source["repo"]["rev_lock"] == origin.commit  # the exact dataset version is pinned
    assert run_dvc(consumer, "status").stdout.strip() == UP_TO_DATE

    run_dvc(tmp_path, "get", str(origin.repo), SHARDS, "--rev", "data-v1", "-o", "got-128")
    assert tree_digests(tmp_path / "got-128") == origin.shards


def test_changed_source_is_a_new_version_and_the_old_one_checks_out(origin: Origin, tmp_path: Path) -> None:
    clone = _clone(origin, tmp_path / "work")
    set_params(clone, {"sources": {"synthetic": {"seed": 1}}})
    assert "shards@synthetic-128" in run_dvc(clone, "status", *DATA).stdout
    run_dvc(clone, "repro", DATA[0], env=origin.env)
    new_shards = tree_digests(clone / SHARDS)
    assert new_shards.keys() == origin.shards.keys()  # same layout (counts) ...
    tars = [name for name in new_shards if name.endswith(".tar")]
    assert tars and all(new_shards[name] != origin.shards[name] for name in tars)  # ... every shard differs
    assert _lock_out_hash(clone, "shards@synthetic-128", SHARDS) != _lock_out_hash(
        origin.repo, "shards@synthetic-128", SHARDS)
    v2 = git_commit(clone, "data v2: world seed 1")

    run_git(clone, "checkout", "-q", "data-v1")
    run_dvc(clone, "checkout", *DATA)
    assert tree_digests(clone / SHARDS) == origin.shards
    assert run_dvc(clone, "status", *DATA).stdout.strip() == UP_TO_DATE

    run_git(clone, "checkout", "-q", v2)
    run_dvc(clone, "checkout", *DATA)
    assert tree_digests(clone / SHARDS) == new_shards

    # Publish v2 (git branch + data) and move a consumer's import from v1 to v2.
    run_dvc(clone, "push", *DATA)
    run_git(clone, "push", "-q", "origin", "HEAD:refs/heads/data-v2")
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run_git(consumer, "init", "-q")
    run_dvc(consumer, "init", "-q")
    run_dvc(consumer, "import", "--rev", "data-v1", str(origin.repo), SHARDS, "-o", "shards-128")
    assert tree_digests(consumer / "shards-128") == origin.shards
    run_dvc(consumer, "update", "--rev", "data-v2", "shards-128.dvc")
    assert tree_digests(consumer / "shards-128") == new_shards


def test_project_default_remote_is_a_per_user_directory_every_clone_shares(tmp_path: Path) -> None:
    """The committed .dvc/config names a default local remote under the user's home (``~`` is expanded by
    DVC), so `dvc push` / `dvc pull` work out of the box in every clone on the machine."""
    repo = make_project_repo(tmp_path, name="first")  # a copy of the project's committed .dvc/config
    home = tmp_path / "home"  # where `~` points for these commands
    env = {"HOME": str(home)}
    default = run_dvc(repo, "remote", "default", check=False)
    assert default.returncode == 0, (
        f"{PROJECT_ROOT / '.dvc/config'} names no default remote ([core] remote = ...): {default.stdout}")
    default = default.stdout.strip()
    store = Path(run_dvc(repo, "config", f"remote.{default}.url", env=env).stdout.strip())
    assert store.is_relative_to(home), f"default remote {store} should be a per-user path (~/...)"

    (repo / "notes.txt").write_text("a dataset version\n")
    run_dvc(repo, "add", "notes.txt", env=env)
    git_commit(repo, "notes")
    assert "1 file pushed" in run_dvc(repo, "push", "notes.txt", env=env).stdout
    assert sum(1 for p in store.rglob("*") if p.is_file()) == 1
    assert not (repo / "~").exists() and not (repo / ".dvc" / "~").exists()

    run_git(tmp_path, "clone", "-q", str(repo), "second")
    run_dvc(tmp_path / "second", "pull", "notes.txt", env=env)  # the pipeline outs: not built here
    assert (tmp_path / "second" / "notes.txt").read_text() == "a dataset version\n"
