"""Every DVC stage's deps list the code it runs: the module its ``python -m`` command starts and every
project module that one can import (transitively, function-level imports included, with the packages above
each), so a change to that code reruns the stage instead of leaving stale outputs."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.import_graph import REPO_ROOT, import_graph, package_modules, transitive_imports

COMMAND_MODULE = re.compile(r"\bpython -m ([\w.]+)")


def stages() -> dict[str, dict]:
    """Stage name -> its definition (``foreach``/``matrix`` stages: the ``do`` body or the stage itself)."""
    document = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    return {name: body.get("do", body) for name, body in document["stages"].items()}


def listed_deps(stage: dict) -> list[str]:
    return [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage.get("deps", [])]


def uncovered(files: set[str], deps: list[str]) -> list[str]:
    """The files no dep covers: a dep covers itself and, as a folder, everything below it."""
    folders = [dep.rstrip("/") + "/" for dep in deps]
    return sorted(f for f in files if f not in deps and not any(f.startswith(folder) for folder in folders))


def code_of(module: str) -> set[str]:
    """Repository-relative files of ``module`` and everything it may import."""
    modules = package_modules()
    return {modules[m].relative_to(REPO_ROOT).as_posix() for m in transitive_imports(import_graph(), module)
            if m in modules}


def test_coverage_rule_on_a_known_case():
    files = {"semcolor/a.py", "semcolor/models/b.py", "pipeline/c.py"}
    assert uncovered(files, ["semcolor/a.py", "semcolor/models"]) == ["pipeline/c.py"]
    assert uncovered(files, ["semcolor", "pipeline/"]) == []
    assert uncovered({"semcolor/models_extra.py"}, ["semcolor/models"]) == ["semcolor/models_extra.py"]


def test_the_closure_follows_function_level_imports_and_packages():
    # pipeline.stages.train imports pipeline.tracking at module level; tracking's log_checkpoint_model
    # imports semcolor.mlflow_model inside a function: both are code the stage runs
    code = code_of("pipeline.stages.train")
    assert {"pipeline/stages/train.py", "pipeline/tracking.py", "pipeline/__init__.py",
            "pipeline/stages/__init__.py", "semcolor/mlflow_model.py"} <= code


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_the_code_its_command_imports(name):
    stage = stages()[name]
    commands = COMMAND_MODULE.findall(stage["cmd"])
    assert commands, f"dvc.yaml stage {name}: no `python -m <module>` in its cmd {stage['cmd']!r}"
    code = set().union(*(code_of(module) for module in commands))
    missing = uncovered(code, listed_deps(stage))
    assert missing == [], f"dvc.yaml stage {name}: add to its deps {missing}"
