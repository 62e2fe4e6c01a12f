"""The editor against hostile or unlucky clients, on a real uvicorn server on 127.0.0.1 (and ::1):
cross-site writes refused, time limits on idle, slow and stalled connections, bad uploads answered 4xx
without server paths, and setup errors of `semcolor edit` in one line."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.cli import main
from semcolor.editor.server import EditorApp, EditorHTTPServer, Timeouts, start_in_thread
from semcolor.inference import load_colorizer
from tests.inference_models import save_sdc_pair

PHOTO = "brian-61OqtzLUWko-unsplash.png"
FAST = Timeouts(head_s=1.0, body_s=1.0, keep_alive_s=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("editor")
    photos = root / "photos"
    photos.mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, photos / "a.png")
    (photos / "broken.png").write_text("not an image")
    model, segmenter = save_sdc_pair(root)
    colorizer = load_colorizer(model, segmenter)
    return {"root": root, "photos": sorted(photos.iterdir()), "colorizer": colorizer, "model": model,
            "segmenter": segmenter}


@pytest.fixture(scope="module")
def server(setup):
    app = EditorApp(setup["colorizer"], setup["photos"], setup["root"] / "out")
    server = EditorHTTPServer(app, "127.0.0.1", 0, timeouts=FAST)
    start_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=b"", headers=None, host=None):
    connection = http.client.HTTPConnection(host or server.server_address[0], server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


def display_map(server) -> bytes:
    return request(server, "GET", "/api/photos/0/map")[2]


def written(setup) -> list[str]:
    out = setup["root"] / "out"
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


def test_cross_site_writes_are_refused(server, setup):
    own = server.url.rstrip("/")
    good_map = display_map(server)
    refused = [
        ({"Origin": "null", "Content-Type": "text/plain"}, b""),  # the probe: sandboxed frame, file://
        ({"Origin": "null", "Content-Type": "application/octet-stream"}, good_map),
        ({"Content-Type": "text/plain"}, b""),  # no Origin, a type any page may send cross-site
        ({"Content-Type": "application/x-www-form-urlencoded"}, good_map),
        ({"Content-Type": "application/octet-stream"}, b""),  # no Origin and nothing to show for it
        ({}, b""),
        ({"Origin": "http://evil.example", "Content-Type": "application/octet-stream"}, good_map),
        ({"Origin": own.replace("127.0.0.1", "localhost"), "Content-Type": "application/octet-stream"}, good_map),
        ({"Origin": own + ".evil.example", "Content-Type": "application/octet-stream"}, good_map),
    ]
    for headers, body in refused:
        status, response_headers, reply = request(server, "POST", "/api/photos/0/save", body, headers)
        assert status == 403, (headers, status, reply)
        assert response_headers["Content-Type"] == "application/json" and json.loads(reply)["error"]
    assert written(setup) == []  # nothing was written
    # provably same-origin: the page's own Origin (even with an empty body), or a map no page can send cross-site
    assert request(server, "POST", "/api/photos/0/colorize", b"", {"Origin": own})[0] == 200
    status, _, reply = request(server, "POST", "/api/photos/0/save", good_map,
                               {"Content-Type": "application/octet-stream"})
    assert status == 200 and written(setup) == ["a_color.png", "a_map.png"]


def png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def test_bad_uploads_are_4xx_without_server_paths(server, setup):
    for body, phrase in [(png_bomb(60000, 60000), "decompression bomb"), (png_bomb(352, 352), "truncated"),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "not a readable PNG")]:
        status, _, reply = request(server, "POST", "/api/photos/0/colorize", body, {"Content-Type": "image/png"})
        assert status == 400 and phrase in json.loads(reply)["error"], (status, reply)
    status, _, reply = request(server, "GET", "/api/photos/1")
    message = json.loads(reply)["error"]
    assert status == 422 and message.startswith("broken.png: not an image"), message
    assert str(setup["root"]) not in message and "Traceback" not in message
    status, _, reply = request(server, "GET", "/api/photos/1/gray.png")
    assert status == 422 and str(setup["root"]) not in reply.decode()
    assert request(server, "HEAD", "/api/session")[:1] == (200,)


def wait_closed(connection: socket.socket, limit_s: float = 15.0) -> bool:
    """True when the server closes the connection before ``limit_s`` (a generous bound, not a timing test)."""
    connection.settimeout(limit_s)
    try:
        while connection.recv(65536):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def test_idle_and_slow_connections_are_closed(server):
    host, port = server.server_address
    idle = [socket.create_connection((host, port)) for _ in range(20)]  # never send anything
    assert all(wait_closed(s) for s in idle)
    slow = socket.create_connection((host, port))  # a request head trickling in (slowloris)
    slow.sendall(b"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = False
    for _ in range(50):
        try:
            slow.sendall(b"X-A: b\r\n")
        except OSError:
            closed = True
            break
        time.sleep(0.2)
    assert closed or wait_closed(slow, 1.0)
    kept = socket.create_connection((host, port))  # keep-alive: one request, then nothing
    kept.sendall(f"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert wait_closed(kept)
    for s in [*idle, slow, kept]:
        s.close()
    assert request(server, "GET", "/api/session")[0] == 200  # still serving


def test_a_stalled_upload_gets_408(server):
    host, port = server.server_address
    connection = socket.create_connection((host, port))
    connection.sendall(f"POST /api/photos/0/colorize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       f"Content-Type: application/octet-stream\r\nContent-Length: 123904\r\n\r\n".encode()
                       + b"\0" * 1000)
    connection.settimeout(15)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        reply += chunk
    connection.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"the upload stalled: 1000 of 123904 bytes" in reply


def test_a_client_that_goes_away_mid_response(server, capfd):
    host, port = server.server_address
    for _ in range(5):
        connection = socket.create_connection((host, port))
        connection.sendall(f"GET /api/photos/0/map HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        connection.recv(10)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        connection.close()
    assert request(server, "GET", "/api/session")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "500" not in err, err


def test_ipv6_loopback(setup):
    app = EditorApp(setup["colorizer"], setup["photos"], setup["root"] / "out6")
    server = EditorHTTPServer(app, "::1", 0, timeouts=FAST)
    start_in_thread(server)
    try:
        assert server.url == f"http://[::1]:{server.server_address[1]}/"
        with urllib.request.urlopen(server.url + "api/session", timeout=30) as response:
            assert response.status == 200 and json.load(response)["photos"][0]["name"] == "a.png"
        own = server.url.rstrip("/")
        assert request(server, "POST", "/api/photos/0/colorize", b"", {"Origin": own}, host="::1")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_edit_setup_errors_are_one_line(setup, tmp_path, capsys):
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    photo = str(setup["photos"][0])
    try:
        # the port is checked before the model is loaded: a bad model is not even looked at
        status = main(["edit", photo, "--model", str(tmp_path / "none.pt"), "--port", str(port), "--no-browser"])
    finally:
        busy.close()
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and f"port {port} on 127.0.0.1 is in use" in err, err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status = main(["edit", photo, "--model", str(setup["model"]), "--out", str(blocker), "--no-browser"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and f"--out {blocker}" in err, err


@pytest.mark.slow
def test_edit_serves_on_ipv6_and_stops_on_ctrl_c(setup, tmp_path):
    command = [str(Path(sys.executable).with_name("semcolor")), "edit", str(setup["photos"][0]), "--model",
               str(setup["model"]), "--segmenter", str(setup["segmenter"]), "--host", "::1", "--no-browser",
               "--out", str(tmp_path / "edits")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "semcolor editor: 1 photo(s) at http://[::1]:" in line, (line, process.stderr.read())
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/photos/0", timeout=60) as response:
            assert json.load(response)["width"] == 352
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and "Traceback" not in err, err
