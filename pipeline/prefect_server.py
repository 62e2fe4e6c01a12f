"""Run a command under ONE Prefect API server, so that every DVC stage of a `dvc repro` shares it.

Without a configured server, each Prefect process starts its own temporary server (about 20 s here,
REFERENCE.md section 4). `python -m pipeline.prefect_server -- dvc repro` starts `prefect server start` on
a free loopback port with its own PREFECT_HOME (unless PREFECT_API_URL is already set, in which case the
command simply runs against that server), waits until it is healthy, runs the command with
PREFECT_API_URL pointing at it, and stops the server afterwards, whatever the command's outcome.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_server(home: Path | None = None, startup_timeout: float = 180.0) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1 and yield its API URL; stop it on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="semcolor-prefect-") as tmp:
        home = Path(home or tmp)
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        log_path = home / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}/api"
        try:
            _wait_healthy(url, process, startup_timeout, log_path)
            yield url
        finally:
            _stop(process)


@contextmanager
def ensure_prefect_api() -> Iterator[str]:
    """Use the Prefect API in PREFECT_API_URL, or start one server for the duration of the block and
    export its URL, so that the flow AND the worker processes of its task runner share it (without one,
    every process-pool worker would start its own temporary server, ~20 s each)."""
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    with prefect_server() as url:
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            _flush_prefect_logs()  # while the server still answers, not at interpreter exit
            os.environ.pop("PREFECT_API_URL", None)


def _flush_prefect_logs() -> None:
    if "prefect" not in sys.modules:
        return
    from prefect.logging.handlers import APILogHandler

    APILogHandler.flush()


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {timeout:.0f} s; log:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given; usage: python -m pipeline.prefect_server -- dvc repro")
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(command)
    with prefect_server() as url:
        print(f"prefect server: {url}", flush=True)
        return subprocess.call(command, env=dict(os.environ, PREFECT_API_URL=url))


if __name__ == "__main__":
    sys.exit(main())
