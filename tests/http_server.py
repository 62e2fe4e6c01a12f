"""A local HTTP server for offline download tests: serves a directory on 127.0.0.1 with Range support.

Use it as a context manager::

    with LocalHTTPServer(directory) as server:
        url = server.url("archive.tar")
        server.cut_after["archive.tar"] = 1000   # the next GET of it stops after 1000 body bytes
        ...
        assert server.range_requests("archive.tar") == ["bytes=1000-"]

or through the ``http_server`` fixture (``from tests.http_server import http_server`` in a test module),
which serves a fresh ``tmp_path / "served"`` directory.

Knobs (all keyed by the path relative to the served directory, e.g. ``"voc/VOC.tar"``):
``cut_after[path] = N``: the next GET sends the full headers but only N body bytes, then closes the
connection (once; the entry is removed when used). ``wrong_body[path] = bytes``: serve these bytes instead
of the file (until removed). ``fail_status[path] = [503, ...]``: answer the next requests with these status
codes, one per request. ``ignore_range = True``: answer 200 with the whole file even when Range is asked.
Every request is logged in ``requests`` as ``(path, range header or None)``.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class LocalHTTPServer:
    """A threaded HTTP/1.0 server on a free port of 127.0.0.1 serving ``directory`` (see module doc)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.cut_after: dict[str, int] = {}
        self.wrong_body: dict[str, bytes] = {}
        self.fail_status: dict[str, list[int]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> LocalHTTPServer:
        handler = type("Handler", (_RangeHandler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="local-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- helpers for tests --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(path)}"

    def request_count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if path is None or p == path)

    def range_requests(self, path: str) -> list[str]:
        """The Range headers received for ``path``, in order (requests without Range are left out)."""
        with self._lock:
            return [r for p, r in self.requests if p == path and r is not None]


class _RangeHandler(BaseHTTPRequestHandler):
    server_state: LocalHTTPServer  # set on the subclass made per server

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        state = self.server_state
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        with state._lock:
            state.requests.append((path, range_header))
            statuses = state.fail_status.get(path)
            fail = statuses.pop(0) if statuses else None
            cut = None if head else state.cut_after.pop(path, None)
            body = state.wrong_body.get(path)
        if fail is not None:
            self.send_error(fail)
            return
        file = (state.directory / path).resolve()
        if body is None:
            if state.directory.resolve() not in file.parents or not file.is_file():
                self.send_error(404)
                return
            body = file.read_bytes()
        total = len(body)
        start, end, status = 0, total - 1, 200
        if range_header and not state.ignore_range:
            parsed = _parse_range(range_header, total)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = 206
        payload = body[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if head:
            return
        if cut is not None:
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            # Simulate a dropped connection: the client got fewer bytes than Content-Length promised.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """``bytes=A-B`` / ``bytes=A-`` / ``bytes=-N`` -> inclusive (start, end), or None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if first == "":
        length = int(last)
        return (max(total - length, 0), total - 1) if length and total else None
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or start > end:
        return None
    return start, end


@pytest.fixture
def http_server(tmp_path):
    """A running ``LocalHTTPServer`` serving ``tmp_path / "served"`` (created empty)."""
    served = tmp_path / "served"
    served.mkdir()
    with LocalHTTPServer(served) as server:
        yield server


__all__ = ["LocalHTTPServer", "http_server"]
