"""What happens to tracking when things go wrong: an unreachable server, a killed stage.

- ``check_reachable`` (``semcolor.tracking_server``): one request to an HTTP tracking server's ``/health``
  with a short timeout and no retries, before a stage starts its work, instead of MLflow's four minutes of
  retries and a raw traceback.
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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from semcolor.tracking_server import TrackingUnavailable, check_reachable  # noqa: F401  (re-exported)
from semcolor.tracking_tags import TAG_HOST, TAG_PID, TAG_PID_START, TAG_STAGE


class StageTerminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that runs, temp files and progress checkpoints are closed
    cleanly (a KeyboardInterrupt, so that the same handlers as for Ctrl-C apply)."""


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
                              filter_string=f"tags.`{TAG_STAGE}` = '{stage_filter}' and "
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
        previous = signal.signal(signal.SIGTERM, raise_terminated)
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


def raise_terminated(signum: int, frame: Any) -> None:
    raise StageTerminated(f"terminated by signal {signum}")
