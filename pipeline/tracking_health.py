"""What happens to tracking when things go wrong: an unreachable server, a killed stage.

- ``check_reachable``: one request to an HTTP tracking server's ``/health`` with a short timeout and no
  retries, before a stage starts its work. MLflow's own client retries with back-off for about four minutes
  and then prints a raw traceback; this says in one line which server is down and what to do.
- ``process_tags``: every stage run records its host, process id and that process's start time.
- ``end_stale_runs``: when a stage starts, runs of the same stage still RUNNING whose process on this host no
  longer exists (a SIGKILL, a power cut) are marked KILLED, so they do not stay RUNNING forever.
- ``killed_on_interrupt``: Ctrl-C (SIGINT) or SIGTERM inside a run ends it as KILLED, not FAILED or RUNNING.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_S = 5.0
TAG_HOST, TAG_PID, TAG_PID_START = "semcolor.host", "semcolor.pid", "semcolor.pid_start"
_checked: set[str] = set()


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; the message names it and says what to do."""


class StageTerminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that runs, temp files and progress checkpoints are closed
    cleanly (a KeyboardInterrupt, so that the same handlers as for Ctrl-C apply)."""


def check_reachable(uri: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise TrackingUnavailable unless the tracking server at ``uri`` (default: MLflow's current tracking
    URI) answers; only HTTP(S) servers are checked (a local SQLite store needs no server), once per process.

    Any HTTP answer below 500 counts as reachable (401/403: the server is there, credentials are MLflow's
    business); a refused or timed-out connection, a reset, or a 5xx (a proxy in front of a dead server) not."""
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    uri = str(uri)
    if urlsplit(uri).scheme not in ("http", "https") or uri in _checked:
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(health, method="GET"), timeout=timeout):
            pass
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise _unavailable(uri, f"HTTP {error.code} from {health}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise _unavailable(uri, " ".join(str(reason).split()) or type(error).__name__) from None
    _checked.add(uri)


def _unavailable(uri: str, reason: str) -> TrackingUnavailable:
    return TrackingUnavailable(
        f"the MLflow tracking server {uri} is not reachable ({reason}); start it (mlflow server ...), or point "
        "MLFLOW_TRACKING_URI at a running one (unset, the stages log to sqlite:///mlflow.db in the project)")


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run (host, pid, its start time), for ``end_stale_runs``."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_PID_START: _start_time(os.getpid())}


def _start_time(pid: int) -> str:
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:  # no psutil, or the process is gone
        return ""


def _process_alive(pid: int, start_time: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return not start_time or _start_time(pid) in ("", start_time)  # the same pid reused by a new process


def end_stale_runs(experiment_name: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` in ``experiment_name`` whose process on this host is gone;
    their ids. Runs of other hosts are left alone (their processes cannot be seen from here)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    host = socket.gethostname()
    stage_filter = stage.replace("'", "\\'")
    runs = client.search_runs([experiment.experiment_id], max_results=200,
                              filter_string=f"tags.`semcolor.stage` = '{stage_filter}' and "
                                            "attributes.status = 'RUNNING'")
    ended = []
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_HOST) != host or not tags.get(TAG_PID, "").isdigit():
            continue
        if not _process_alive(int(tags[TAG_PID]), tags.get(TAG_PID_START, "")):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


@contextmanager
def killed_on_interrupt() -> Iterator[None]:
    """Inside an active MLflow run: SIGTERM raises StageTerminated, and an interrupt (Ctrl-C or SIGTERM) ends
    the run as KILLED before it propagates (MLflow itself would record FAILED)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except KeyboardInterrupt:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise StageTerminated(f"terminated by signal {signum}")
