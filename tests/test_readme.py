"""The README's commands, run as written, so that it cannot drift from the code.

Every ```bash block of README.md carries a tag on the line before it:

- ``<!-- readme-test: run -->``: run after a tiny `make demo` (the session's ``demo_project``), in the
  project's root with its environment activated (``.venv/bin`` first on PATH), offline, each block as one
  ``bash -e -o pipefail`` script: it must exit 0 and print no traceback;
- ``<!-- readme-test: skip: <why> -->``: not runnable here (a GPU, a cloud bucket, a server that runs until
  stopped, the full `make demo` itself), with the reason.

The ```mermaid block tagged ``<!-- readme-test: dvc dag --md -->`` must be exactly what `dvc dag --md`
prints for this checkout's dvc.yaml and params.yaml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.project_repo import PROJECT_ROOT, run_dvc, tool_env

README = PROJECT_ROOT / "README.md"
TAG = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>run|skip|dvc dag --md)\s*(?::\s*(?P<reason>.*?))?\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SHELL = ("bash", "sh", "shell", "console")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: its language, text, 1-based first line and its tag (None: untagged)."""

    lang: str
    text: str
    line: int
    kind: str | None
    reason: str | None


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the readme-test tag on the nearest non-blank line above it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        tag = TAG.match(lines[above].strip()) if above >= 0 else None
        blocks.append(Block(match["lang"], "\n".join(body) + "\n", start + 1, tag["kind"] if tag else None,
                            tag["reason"] if tag else None))
        index += 1
    return blocks


def shell_blocks() -> list[Block]:
    return [block for block in readme_blocks(README.read_text()) if block.lang in SHELL]


def test_every_shell_block_says_whether_it_runs():
    blocks = shell_blocks()
    assert len(blocks) >= 10
    untagged = [block.line for block in blocks if block.kind is None]
    assert not untagged, f"README.md blocks without a readme-test tag at lines {untagged}"
    for block in blocks:
        assert block.kind in ("run", "skip"), block.line
        if block.kind == "skip":
            assert block.reason, f"README.md line {block.line}: a skipped block says why"
    assert sum(block.kind == "run" for block in blocks) >= 4


def test_the_tag_parser_finds_tags_and_untagged_blocks():
    text = ("intro\n\n<!-- readme-test: run -->\n```bash\necho a\n```\n\n```bash\necho b\n```\n"
            "<!-- readme-test: skip: needs a GPU -->\n\n```sh\ntorchrun x\n```\n")
    blocks = readme_blocks(text)
    assert [(b.kind, b.reason, b.text, b.line) for b in blocks] == [
        ("run", None, "echo a\n", 4), (None, None, "echo b\n", 8), ("skip", "needs a GPU", "torchrun x\n", 13)]


def test_the_pipeline_chart_is_what_dvc_dag_prints():
    charts = [block for block in readme_blocks(README.read_text()) if block.kind == "dvc dag --md"]
    assert len(charts) == 1 and charts[0].lang == "mermaid"
    printed = run_dvc(PROJECT_ROOT, "dag", "--md").stdout
    body = printed.strip().removeprefix("```mermaid").removesuffix("```").strip()
    assert charts[0].text.strip() == body, "README's chart differs from `dvc dag --md`: paste the new one"


def activated_env(repo: Path) -> dict[str, str]:
    """The environment of a shell after `source .venv/bin/activate` in ``repo``, offline and quiet."""
    env = tool_env()
    venv = Path(sys.executable).parent.parent
    env.update({"VIRTUAL_ENV": str(venv), "PATH": os.pathsep.join([str(venv / "bin"), env["PATH"]])})
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "SEMCOLOR_EXPERIMENT", "SEMCOLOR_PARENT_RUN_ID"):
        env.pop(name, None)  # the README's defaults: mlflow.db in the project, no Prefect server
    return env


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("block", [b for b in shell_blocks() if b.kind == "run"],
                         ids=lambda block: f"README.md:{block.line}")
def test_readme_block_runs_as_written(block: Block, demo_project: Path):
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=demo_project,
                            env=activated_env(demo_project), capture_output=True, text=True,
                            timeout=BLOCK_TIMEOUT_S)
    output = f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"README.md line {block.line} failed ({result.returncode}):\n{block.text}{output}"
    assert "Traceback (most recent call last)" not in result.stdout + result.stderr, output
