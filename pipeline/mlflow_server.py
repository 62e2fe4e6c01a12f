"""A real `mlflow server` on 127.0.0.1: remote tracking, artifacts served through it, as a team uses it.

    with mlflow_server(home) as server:  # store sqlite:///<home>/mlflow.db, artifacts in <home>/artifacts
        os.environ["MLFLOW_TRACKING_URI"] = server.uri   # http://127.0.0.1:<port>
        ...

Artifacts go through the server (``--serve-artifacts --artifacts-destination``): clients log to
``mlflow-artifacts:/`` and never need the server's disk, as with a shared team server. A new SQLite store
runs its migrations at start-up (6-12 s, REFERENCE.md section 4); pass ``template_db`` (an already migrated
database) to start from a copy of it instead.

    python -m pipeline.mlflow_server --home DIR [--port P] [--template-db DB] -- COMMAND ...

runs COMMAND with MLFLOW_TRACKING_URI pointing at a fresh server and stops the server afterwards (for CI).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.prefect_server import free_port

HOST = "127.0.0.1"
DB_NAME = "mlflow.db"


@dataclass(frozen=True)
class MlflowServer:
    """A running server: ``uri`` (http://127.0.0.1:<port>, the tracking and registry URI for clients),
    its backend store URI, the folder its artifacts are written to, and its log file."""

    uri: str
    port: int
    backend_store_uri: str
    artifacts_destination: Path
    log_path: Path
    process: subprocess.Popen


def server_command(port: int, backend_store_uri: str, artifacts_destination: Path,
                   workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a loopback server that proxies artifacts."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST, "--port", str(port),
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts_destination),
        # one worker: a 2-core CI machine, and SQLite serializes writes anyway
        "--workers", str(workers),
    ]


@contextmanager
def mlflow_server(home: str | Path | None = None, *, port: int | None = None,
                  template_db: str | Path | None = None, startup_timeout: float = 120.0,
                  workers: int = 1) -> Iterator[MlflowServer]:
    """Start `mlflow server` on 127.0.0.1 with its SQLite store and artifacts under ``home`` (a temporary
    folder when None), wait until ``/health`` answers, yield it, and stop it (its whole process group) on
    exit.

    template_db: an already migrated MLflow SQLite database copied to ``home/mlflow.db`` when that file does
    not exist yet (skips the migrations). Raises RuntimeError (server exited) or TimeoutError (not healthy in
    ``startup_timeout`` seconds) with the tail of the server's log."""
    with tempfile.TemporaryDirectory(prefix="semcolor-mlflow-") as temporary:
        home = Path(home or temporary).resolve()
        home.mkdir(parents=True, exist_ok=True)
        database = home / DB_NAME
        if template_db is not None and not database.exists():
            shutil.copyfile(template_db, database)
        artifacts = home / "artifacts"
        artifacts.mkdir(exist_ok=True)
        port = port or free_port()
        backend = f"sqlite:///{database}"
        log_path = home / "server.log"
        # the server must not inherit a client's tracking settings (e.g. a test's MLFLOW_TRACKING_URI)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("MLFLOW_TRACKING_", "MLFLOW_REGISTRY_"))}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(server_command(port, backend, artifacts, workers), cwd=home, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = MlflowServer(uri=f"http://{HOST}:{port}", port=port, backend_store_uri=backend,
                              artifacts_destination=artifacts, log_path=log_path, process=process)
        try:
            wait_healthy(server, startup_timeout)
            yield server
        finally:
            stop(process)


def wait_healthy(server: MlflowServer, timeout: float) -> None:
    """Poll ``<uri>/health`` until it answers 200 OK."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {server.process.returncode}; "
                               f"log {server.log_path}:\n{_tail(server.log_path)}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server on {server.uri} not healthy after {timeout:.0f} s; "
                       f"log {server.log_path}:\n{_tail(server.log_path)}")


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group (uvicorn runs workers as children), SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path,
                        help="folder for mlflow.db, artifacts and the log (default: temporary)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--template-db", type=Path, help="an already migrated mlflow.db to start from")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with mlflow_server(args.home, port=args.port, template_db=args.template_db) as server:
        print(f"mlflow server: {server.uri} (store {server.backend_store_uri}, log {server.log_path})",
              flush=True)
        if not command:  # no command: serve until interrupted
            try:
                server.process.wait()
            except KeyboardInterrupt:
                pass
            return 0
        env = dict(os.environ, MLFLOW_TRACKING_URI=server.uri)
        env.pop("MLFLOW_REGISTRY_URI", None)
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
