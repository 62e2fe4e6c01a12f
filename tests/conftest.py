"""Shared test setup: offline, quiet tools, and the location of ../shared (fixtures, photos)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before any tool is imported: no analytics, a patient ephemeral Prefect server (REFERENCE.md section 4).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# verified shards are remembered in a per-session folder, not in the user's ~/.cache/semcolor
os.environ.setdefault("SEMCOLOR_CACHE_DIR", tempfile.mkdtemp(prefix="semcolor-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SEMCOLOR_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder beside the checkout (CI has it there too)."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared material not found at {SHARED_DIR}; set SEMCOLOR_SHARED_DIR")
    return SHARED_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    the nets under test are tiny and the machine is a shared 2-core one, where a second thread mostly waits
    (measured 30-50x slower under load). The previous count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Under pytest-xdist (`make test` runs TEST_WORKERS processes with --dist loadgroup) a test file is one unit
# of work, so its module fixtures (trained models) are built once; the tests of the two costly session
# fixtures share one worker each, so that the tiny demo project (~5 min to build) and the Prefect test
# server (20-50 s to start) are each built once per run, not once per worker.
_SHARED_SESSION_FIXTURES = ("demo_project", "prefect_harness")
_DEMO_PROJECT_TIMEOUT_S = 1800


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    grouping = config.pluginmanager.hasplugin("xdist")
    for item in items:
        shared = next((name for name in _SHARED_SESSION_FIXTURES if name in item.fixturenames), None)
        if shared == "demo_project" and item.get_closest_marker("timeout") is None:
            # pytest-timeout counts the setup: the first of these tests builds the project (5-8 min beside
            # another worker), then does its own work
            item.add_marker(pytest.mark.timeout(_DEMO_PROJECT_TIMEOUT_S))
        if grouping and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(shared or item.nodeid.split("::", 1)[0]))


# The marker rule of `make test-fast`: a test whose setup and call take over SLOW_SECONDS (a module fixture
# that trains a model counts for its first test) is marked slow (or server). Timings are noisy on a shared
# machine, so this is a report at the end of the run, never a failure.
SLOW_SECONDS = 5.0
_unmarked_slow: list[tuple[float, str]] = []
_spent: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call"):
        _spent[report.nodeid] = _spent.get(report.nodeid, 0.0) + report.duration
    if report.when == "call" and _spent[report.nodeid] > SLOW_SECONDS:
        if not {"slow", "server"} & set(report.keywords):
            _unmarked_slow.append((_spent[report.nodeid], report.nodeid))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section(f"unmarked tests over {SLOW_SECONDS:g} s: mark them @pytest.mark.slow")
        for duration, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{duration:7.1f}s {nodeid}")


# fixtures: `http_server` (a Range-capable server on 127.0.0.1), `migrated_mlflow_db` / `mlflow_store`
pytest_plugins = ["tests.http_server", "tests.mlflow_store"]


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every test that runs real flows: the server start-up
    (~20-50 s on a loaded 2-core machine) is paid once per test session, not once per flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory, migrated_mlflow_db, shared_dir) -> Path:
    """The project after a tiny `make demo` (tests.project_repo.build_demo_like_project), built once per
    session for the tests that read it (the end-to-end checks, the README's commands)."""
    from tests.project_repo import build_demo_like_project

    return build_demo_like_project(tmp_path_factory.mktemp("demo"), migrated_mlflow_db, shared_dir)
