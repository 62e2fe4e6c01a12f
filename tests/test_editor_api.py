"""The editor's HTTP API, with real requests against a running server: the work, and every bad request."""

from __future__ import annotations

import http.client
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from semcolor.cli import main
from semcolor.color import rgb8_to_lab
from semcolor.editor.server import EditorApp, EditorError, EditorHTTPServer, is_loopback, start_in_thread
from semcolor.inference import load_colorizer
from semcolor.photo_io import read_photo
from tests.inference_models import CLASS_NAMES, NUM_CLASSES, PSC_CONFIG, save_model, save_sdc_pair

PHOTO = "brian-61OqtzLUWko-unsplash.png"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Client:
    """Raw HTTP against the server (http.client, so tests can send malformed requests too). POSTs carry the
    server's own Origin, as a browser sends for the page's requests, unless ``headers`` say otherwise
    (``"Origin": None`` leaves it out). Response headers are case-insensitive (an ``HTTPMessage``)."""

    def __init__(self, server: EditorHTTPServer) -> None:
        self.host, self.port = server.server_address[:2]
        self.origin = server.url.rstrip("/")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                skip_length: bool = False) -> tuple[int, dict, bytes]:
        headers = {**({"Origin": self.origin} if method == "POST" else {}), **(headers or {})}
        headers = {k: v for k, v in headers.items() if v is not None}
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.putrequest(method, path, skip_host="Host" in headers)
            for key, value in headers.items():
                connection.putheader(key, value)
            if body is not None and not skip_length and "Content-Length" not in headers:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders()
            if body:
                connection.send(body)
            response = connection.getresponse()
            return response.status, response.msg, response.read()
        finally:
            connection.close()

    def post_map(self, path: str, seg: np.ndarray | bytes, content_type: str = "application/octet-stream",
                 **kw):
        body = seg if isinstance(seg, bytes) else np.ascontiguousarray(seg, np.uint8).tobytes()
        return self.request("POST", path, body, {"Content-Type": content_type, **kw.pop("headers", {})}, **kw)

    def error(self, *args, **kwargs) -> tuple[int, str]:
        send = self.post_map if kwargs.pop("post", False) else self.request
        status, headers, body = send(*args, **kwargs)
        assert headers["Content-Type"] == "application/json"
        return status, json.loads(body)["error"]


@pytest.fixture(scope="module")
def editor(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("editor")
    photos = root / "photos"
    photos.mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, photos / "a.png")
    rgb = np.asarray(Image.open(shared_dir / "photos" / PHOTO).convert("RGB"))
    Image.fromarray(rgb[:200, :300]).save(photos / "b.jpg", quality=95)  # not a multiple of 32
    (photos / "c.png").write_text("broken")
    colorizer = load_colorizer(*save_sdc_pair(root))
    app = EditorApp(colorizer, sorted(photos.iterdir()), root / "out")
    server = EditorHTTPServer(app, "127.0.0.1", 0)
    start_in_thread(server)
    yield {"server": server, "client": Client(server), "photos": photos, "out": root / "out", "app": app}
    server.shutdown()
    server.server_close()


def png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def test_session_photo_and_maps(editor):
    client = editor["client"]
    status, _, body = client.request("GET", "/api/session")
    session = json.loads(body)
    assert status == 200
    assert [c["name"] for c in session["classes"]] == CLASS_NAMES
    assert session["classes"][1]["color"] == [128, 0, 0]
    assert session["takes_semantic_map"] and not session["supports_samples"]
    assert [p["name"] for p in session["photos"]] == ["a.png", "b.jpg", "c.png"]
    info = json.loads(client.request("GET", "/api/photos/1")[2])
    assert (info["width"], info["height"], info["full_width"], info["full_height"]) == (352, 224, 300, 200)
    status, headers, gray = client.request("GET", "/api/photos/1/gray.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and png(gray).shape == (224, 352)
    status, headers, raw = client.request("GET", "/api/photos/1/map?which=predicted")
    assert (headers["X-Map-Width"], headers["X-Map-Height"]) == ("352", "224")
    assert len(raw) == 352 * 224 and max(raw) < NUM_CLASSES
    page = client.request("GET", "/")[2].decode()
    assert "/static/app.js" in page
    assert client.request("GET", "/static/app.js")[0] == 200


def test_an_edit_changes_the_result_where_it_was_made(editor):
    client = editor["client"]
    predicted = np.frombuffer(client.request("GET", "/api/photos/0/map")[2], np.uint8).reshape(352, 352)
    status, headers, before = client.post_map("/api/photos/0/colorize", predicted)
    assert status == 200 and headers["Content-Type"] == "image/png"
    edited = predicted.copy()
    edited[40:120, 200:300] = (edited[40:120, 200:300] + 3) % NUM_CLASSES
    after = client.post_map("/api/photos/0/colorize?seed=0", edited)[2]
    assert client.request("GET", "/api/photos/0/result.png")[2] == after  # the latest result
    diff = np.abs(png(before).astype(int) - png(after)).sum(-1)
    far = np.ones_like(diff, bool)
    far[10:150, 170:330] = False
    assert diff[40:120, 200:300].mean() > 10 * diff[far].mean()
    # an empty body means the predicted map
    assert client.post_map("/api/photos/0/colorize", b"")[2] == before


def test_save_writes_full_resolution_image_and_map(editor):
    client, out = editor["client"], editor["out"]
    predicted = np.frombuffer(client.request("GET", "/api/photos/1/map")[2], np.uint8).reshape(224, 352)
    edited = predicted.copy()
    edited[:, :100] = 4
    status, _, body = client.post_map("/api/photos/1/save", edited)
    assert status == 200
    written = json.loads(body)
    assert written == {"image": str(out / "b_color.png"), "map": str(out / "b_map.png")}
    image = np.asarray(Image.open(out / "b_color.png"))
    assert image.shape == (200, 300, 3)
    assert np.abs(rgb8_to_lab(image)[..., 0] - read_photo(editor["photos"] / "b.jpg").lightness).max() < 1.0
    saved_map = Image.open(out / "b_map.png")
    assert saved_map.mode == "P" and saved_map.size == (300, 200)
    assert (np.asarray(saved_map)[:, :80] == 4).all()  # the edited band, at full resolution
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/api/photos/99", 404, "no photo 99"),
    ("GET", "/api/photos/x/gray.png", 404, "photo index must be an integer"),
    ("GET", "/api/photos/0/nothing", 404, "no such page"),
    ("GET", "/etc/passwd", 404, "no such page"),
    ("GET", "/static/../server.py", 404, "no such page"),
    ("GET", "/api/photos/0/colorize", 405, "use POST"),
    ("DELETE", "/api/session", 405, "use GET"),
    ("GET", "/api/photos/0/map?which=other", 400, "which must be 'predicted'"),
    ("GET", "/api/photos/2", 422, "c.png: not an image"),
])
def test_bad_requests_get_json_errors(editor, method, path, status, message):
    got_status, error = editor["client"].error(method, path)
    assert got_status == status and message in error


def test_bad_uploads(editor):
    client = editor["client"]
    good = np.zeros((352, 352), np.uint8)
    cases = [
        (dict(seg=good[:100]), 400, "map has 35200 bytes; expected 352x352"),
        (dict(seg=np.full((352, 352), NUM_CLASSES, np.uint8)), 400, "class id 6 out of range"),
        (dict(seg=b"x" * 10, content_type="text/plain"), 415, "application/octet-stream or image/png"),
        (dict(seg=b"not a png", content_type="image/png"), 400, "not a readable PNG"),
        (dict(seg=_png(np.zeros((10, 10), np.uint8)), content_type="image/png"), 400, "map PNG is 10x10"),
        (dict(seg=_png(np.zeros((352, 352, 3), np.uint8)), content_type="image/png"), 400,
         "gray (L) or palette"),
        (dict(seg=good, path="/api/photos/0/colorize?seed=abc"), 400, "seed must be an integer"),
        (dict(seg=good, path="/api/photos/0/colorize?seed=-1"), 400, "seed must be in"),
        (dict(seg=good, headers={"Content-Length": str(10**9)}), 413, "exceeds the limit"),
        (dict(seg=good, skip_length=True), 411, "Content-Length is required"),
        (dict(seg=good, headers={"Origin": "http://evil.example"}), 403, "cross-origin request"),
        (dict(seg=good, headers={"Host": "evil.example:80"}), 403, "unexpected Host header"),
    ]
    for kwargs, status, message in cases:
        path = kwargs.pop("path", "/api/photos/0/colorize")
        got_status, error = client.error(path, post=True, **kwargs)
        assert (got_status, message in error) == (status, True), (kwargs, got_status, error)
    # a PNG of class indices is accepted as well as raw bytes
    assert client.post_map("/api/photos/0/colorize", _png(good), "image/png")[0] == 200
    assert client.request("GET", "/api/session")[0] == 200  # still serving after all of that


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_model_without_map_input(tmp_path, shared_dir):
    colorizer = load_colorizer(save_model(tmp_path / "psc.pt", "psc_embed", PSC_CONFIG, seed=1))
    app = EditorApp(colorizer, [shared_dir / "photos" / PHOTO], tmp_path / "out")
    server = EditorHTTPServer(app, "127.0.0.1", 0)
    start_in_thread(server)
    try:
        client = Client(server)
        session = json.loads(client.request("GET", "/api/session")[2])
        assert session["supports_samples"] and not session["takes_semantic_map"] and session["has_map"]
        status, error = client.error("/api/photos/0/colorize", post=True, seg=np.zeros((352, 352), np.uint8))
        assert status == 400 and "does not take a semantic map" in error
        one = client.post_map("/api/photos/0/colorize?seed=1", b"")[2]
        two = client.post_map("/api/photos/0/colorize?seed=2", b"")[2]
        assert one != two  # "new sample" draws another colorization
        assert client.post_map("/api/photos/0/colorize?seed=1", b"")[2] == one
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_only_unless_allowed(tmp_path, shared_dir, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    with pytest.raises(EditorError, match="not a loopback address"):
        EditorHTTPServer(None, "0.0.0.0", 0)
    status = main(["edit", str(shared_dir / "photos" / PHOTO), "--model", "unused.pt", "--host", "0.0.0.0",
                   "--no-browser"])
    assert status == 2 and "--allow-remote" in capsys.readouterr().err
