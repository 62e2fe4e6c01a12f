"""The semantic editor's HTTP server (standard library ``ThreadingHTTPServer``; no framework needed).

The browser page (``static/``) shows the gray photo at the DISPLAY shape (the U-Net's working shape: long
side 352, sides multiples of 32, so what the person edits is exactly what the model sees), the map as an
overlay, and the colorized result. Maps travel as raw bytes: H x W uint8 class indices, row-major
(``application/octet-stream``), or as a gray/palette PNG of indices (``image/png``).

API (every error answers JSON ``{"error": "..."}`` with a 4xx status; a bad request never stops the server):
  GET  /api/session                      model, label set (id, name, color, typical_color), photos
  GET  /api/photos/<i>                   display and full size of photo i
  GET  /api/photos/<i>/gray.png          the gray photo at display size
  GET  /api/photos/<i>/map?which=predicted|current   the map as raw bytes (X-Map-Width/Height headers)
  GET  /api/photos/<i>/result.png        the latest colorization at display size
  POST /api/photos/<i>/colorize?seed=N   body: a map (or empty: the predicted one) -> PNG at display size
  POST /api/photos/<i>/save?seed=N       body: a map (or empty) -> writes <stem>_color.png (full resolution)
                                         and <stem>_map.png (palette PNG of indices) into the output folder
Only loopback hosts are served unless ``allow_remote``; then too, requests must name this server in their
Host header and, when the browser sends one, in their Origin (no DNS-rebinding or cross-site posts).
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import sys
import threading
import traceback
import webbrowser
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from semcolor.color import lab_to_rgb8
from semcolor.inference import (
    SDC_MULTIPLE,
    SDC_WORKING_SIZE,
    UNKNOWN_CLASS,
    Colorizer,
    resize_gray,
    resize_label_map,
    class_colors,
    map_palette,
    working_shape,
)
from semcolor.photo_io import (
    DEFAULT_MAX_PIXELS,
    PhotoError,
    encode_png,
    find_photos,
    read_photo,
    write_image_atomic,
)

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # a 352 px map is 124 KB raw; 8 MB leaves room for big PNGs, no more
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/app.css": ("app.css", "text/css; charset=utf-8")}


class EditorError(Exception):
    """A setup problem (no photos, non-loopback host without permission, model not loadable)."""


class RequestError(Exception):
    """A bad request: answered with ``status`` and a JSON error message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PhotoSession:
    """One photo in the editor; maps and images at the display shape."""

    path: Path
    full_shape: tuple[int, int]
    display_lightness: np.ndarray  # float32 (h, w), L in [0, 100]
    gray_png: bytes
    predicted_map: np.ndarray | None  # uint8 (h, w)
    result_png: bytes | None = None


class EditorApp:
    """The editor's state and work, independent of HTTP (the handler only parses and validates)."""

    def __init__(self, colorizer: Colorizer, photos: list[Path], out_dir: Path,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        if not photos:
            raise EditorError("no photos to edit")
        self.colorizer = colorizer
        self.photos = photos
        self.out_dir = Path(out_dir)
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self._sessions: dict[int, PhotoSession] = {}
        # one model, one inference at a time: torch already uses every core for one request
        self._lock = threading.Lock()

    # -- description -----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        c = self.colorizer
        colors = class_colors(c.num_classes or 0)
        from semcolor.class_colors import typical_class_colors  # what each class will look like (swatches)

        typical = typical_class_colors(c.class_names)
        return {
            "model": c.model_name,
            "family": c.family,
            "takes_semantic_map": c.takes_semantic_map,
            "supports_samples": c.supports_samples,
            "has_map": c.num_classes is not None,
            "classes": [{"id": i, "name": name, "color": [int(v) for v in colors[i]],
                         "typical_color": list(typical[i].color),
                         "typical_modes": [list(m) for m in typical[i].modes],
                         "typical_source": typical[i].source}
                        for i, name in enumerate(c.class_names)],
            "photos": [{"index": i, "name": p.name} for i, p in enumerate(self.photos)],
        }

    def session(self, index: int) -> PhotoSession:
        if not 0 <= index < len(self.photos):
            raise RequestError(HTTPStatus.NOT_FOUND,
                               f"no photo {index}; photos are 0..{len(self.photos) - 1}")
        with self._lock:
            if index not in self._sessions:
                self._sessions[index] = self._load(index)
            return self._sessions[index]

    def _load(self, index: int) -> PhotoSession:
        path = self.photos[index]
        try:
            photo = read_photo(path, self.max_pixels)
        except PhotoError as error:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from error
        shape = working_shape(*photo.size, SDC_WORKING_SIZE, SDC_MULTIPLE)
        L = torch.from_numpy(photo.lightness)[None, None]
        display = resize_gray(L, shape)[0, 0].clamp(0.0, 100.0).numpy()
        zeros = np.zeros_like(display)
        gray = lab_to_rgb8(np.stack([display, zeros, zeros], axis=-1))[..., 0]
        predicted = None
        if self.colorizer.num_classes is not None:
            with torch.inference_mode():
                predicted = self.colorizer.predict_map(display)
        if predicted is not None and predicted.shape != display.shape:
            predicted = resize_label_map(predicted, display.shape)
        return PhotoSession(path=path, full_shape=photo.size, display_lightness=display,
                            gray_png=encode_png(gray), predicted_map=predicted)

    # -- work ------------------------------------------------------------------------------------------
    def parse_map(self, session: PhotoSession, body: bytes, content_type: str) -> np.ndarray | None:
        """Validate an uploaded map: None (empty body: the predicted map) or uint8 at the display shape."""
        if not body:
            return None
        if not self.colorizer.takes_semantic_map:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"{self.colorizer.model_name} does not take a semantic map; "
                               "send an empty body")
        height, width = session.display_lightness.shape
        if content_type == "application/octet-stream":
            if len(body) != height * width:
                raise RequestError(HTTPStatus.BAD_REQUEST,
                                   f"map has {len(body)} bytes; expected {height}x{width} = {height * width} "
                                   "(one uint8 class index per pixel, row-major)")
            seg = np.frombuffer(body, dtype=np.uint8).reshape(height, width)
        elif content_type == "image/png":
            try:
                with Image.open(io.BytesIO(body)) as image:
                    if image.format != "PNG" or image.mode not in ("L", "P"):
                        raise RequestError(HTTPStatus.BAD_REQUEST,
                                           "map PNG must be gray (L) or palette (P) with class indices, "
                                           f"got {image.format} {image.mode}")
                    if image.size != (width, height):
                        raise RequestError(HTTPStatus.BAD_REQUEST,
                                           f"map PNG is {image.size[0]}x{image.size[1]}; "
                                           f"expected {width}x{height}")
                    seg = np.array(image, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, SyntaxError) as error:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"map is not a readable PNG ({error})") from error
        else:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               "map must be application/octet-stream or image/png, "
                               f"got {content_type or 'none'}")
        num_classes = self.colorizer.num_classes or 0
        bad = (seg >= num_classes) & (seg != UNKNOWN_CLASS)
        if bad.any():
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"class id {int(seg[bad][0])} out of range: this model's classes are "
                               f"0..{num_classes - 1} ({UNKNOWN_CLASS} = unknown)")
        return seg

    def colorize(self, index: int, seg: np.ndarray | None, seed: int) -> bytes:
        session = self.session(index)
        with self._lock, torch.inference_mode():
            result = self.colorizer.colorize(session.display_lightness,
                                             semantic_map=self._map_for_model(session, seg), seed=seed)
            session.result_png = encode_png(result.images[0])
            return session.result_png

    def result(self, index: int) -> bytes:
        session = self.session(index)
        if session.result_png is None:
            return self.colorize(index, None, 0)
        return session.result_png

    def save(self, index: int, seg: np.ndarray | None, seed: int) -> dict[str, str]:
        """Colorize at full resolution with the (edited) map and write image and map atomically."""
        session = self.session(index)
        try:
            photo = read_photo(session.path, self.max_pixels)
        except PhotoError as error:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from error
        with self._lock, torch.inference_mode():
            result = self.colorizer.colorize(photo.lightness, semantic_map=self._map_for_model(session, seg),
                                             seed=seed)
        stem = session.path.stem
        protected = [p.resolve() for p in self.photos]
        image_path = write_image_atomic(self.out_dir / f"{stem}_color.png", result.images[0], protected)
        written = {"image": str(image_path)}
        full_map = result.semantic_map
        if full_map is not None:
            written["map"] = str(write_image_atomic(self.out_dir / f"{stem}_map.png", full_map, protected,
                                                    palette=map_palette()))
        return written

    def _map_for_model(self, session: PhotoSession, seg: np.ndarray | None) -> np.ndarray | None:
        if not self.colorizer.takes_semantic_map:
            return None
        return session.predicted_map if seg is None else seg


# ------------------------------------------------------------------------------------------ HTTP


_PHOTO_ROUTE = re.compile(r"^/api/photos/(?P<index>[^/]+)(?P<rest>/[a-z.]+)?$")


class EditorRequestHandler(BaseHTTPRequestHandler):
    """Routes and validates; every failure becomes a JSON error response."""

    server: EditorHTTPServer
    server_version = "semcolor-editor"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing --------------------------------------------------------------------------------------
    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _handle(self, method: str) -> None:
        try:
            self._check_origin(method)
            self._route(method)
        except RequestError as error:
            self._drain_if_needed()
            self._json(error.status, {"error": str(error)})
        except Exception as error:  # a bug must not stop the server: answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            message = f"internal error: {type(error).__name__}: {error}"
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": message})

    def _drain_if_needed(self) -> None:
        # a rejected upload's unread body would be parsed as the next request: close the connection instead
        if self.command == "POST" and not getattr(self, "_body_read", False):
            self.close_connection = True

    def _check_origin(self, method: str) -> None:
        allowed = self.server.allowed_hosts
        host = (self.headers.get("Host") or "").lower()
        if allowed is not None and host not in allowed:
            raise RequestError(HTTPStatus.FORBIDDEN,
                               f"unexpected Host header {host!r}; open the editor at its printed URL")
        origin = self.headers.get("Origin")
        if method == "POST" and origin and origin != "null" and allowed is not None:
            if urlsplit(origin).netloc.lower() not in allowed:
                raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")

    def _read_body(self) -> tuple[bytes, str]:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED,
                               "chunked uploads are not accepted; send Content-Length")
        if length_text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text!r}")
        limit = self.server.app.max_upload_bytes
        if length > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"upload of {length} bytes exceeds the limit of {limit}")
        body = self.rfile.read(length) if length else b""
        self._body_read = True
        if len(body) != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return body, content_type

    @staticmethod
    def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
        values = query.get(name)
        if not values:
            return default
        try:
            value = int(values[-1])
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"{name} must be an integer, got {values[-1]!r}") from None
        if not low <= value <= high:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be in [{low}, {high}], got {value}")
        return value

    # -- routes ----------------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        app = self.server.app
        if url.path in STATIC_FILES:
            if method not in ("GET", "HEAD"):
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path} is not supported")
            name, content_type = STATIC_FILES[url.path]
            page = resources.files("semcolor.editor").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, page, content_type)
            return
        if url.path == "/api/session":
            self._require(method, "GET")
            self._json(HTTPStatus.OK, app.describe())
            return
        match = _PHOTO_ROUTE.match(url.path)
        if not match:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page {url.path}")
        try:
            index = int(match["index"])
        except ValueError:
            raise RequestError(HTTPStatus.NOT_FOUND,
                               f"photo index must be an integer, got {match['index']!r}") from None
        rest = match["rest"] or ""
        if rest == "":
            self._require(method, "GET")
            session = app.session(index)
            height, width = session.display_lightness.shape
            self._json(HTTPStatus.OK, {
                "index": index, "name": session.path.name, "width": width, "height": height,
                "full_width": session.full_shape[1], "full_height": session.full_shape[0],
            })
        elif rest == "/gray.png":
            self._require(method, "GET")
            self._send(HTTPStatus.OK, app.session(index).gray_png, "image/png")
        elif rest == "/map":
            self._require(method, "GET")
            self._send_map(app.session(index), query)
        elif rest == "/result.png":
            self._require(method, "GET")
            self._send(HTTPStatus.OK, app.result(index), "image/png")
        elif rest in ("/colorize", "/save"):
            self._require(method, "POST")
            seed = self._int_param(query, "seed", 0, 0, 2**31 - 1)
            session = app.session(index)
            body, content_type = self._read_body()
            seg = app.parse_map(session, body, content_type)
            if rest == "/colorize":
                self._send(HTTPStatus.OK, app.colorize(index, seg, seed), "image/png")
            else:
                self._json(HTTPStatus.OK, app.save(index, seg, seed))
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page {url.path}")

    def _send_map(self, session: PhotoSession, query: dict[str, list[str]]) -> None:
        which = (query.get("which") or ["predicted"])[-1]
        if which != "predicted":
            raise RequestError(HTTPStatus.BAD_REQUEST, f"which must be 'predicted', got {which!r}")
        if session.predicted_map is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "this model has no semantic map")
        height, width = session.predicted_map.shape
        self._send(HTTPStatus.OK, session.predicted_map.tobytes(), "application/octet-stream",
                   {"X-Map-Width": str(width), "X-Map-Height": str(height)})

    def _require(self, method: str, expected: str) -> None:
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {expected} here, not {method}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class EditorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: EditorApp, host: str, port: int, allow_remote: bool = False,
                 verbose: bool = False) -> None:
        if not allow_remote and not is_loopback(host):
            raise EditorError(f"--host {host} is not a loopback address; the editor serves only this machine "
                              "unless --allow-remote is given")
        super().__init__((host, port), EditorRequestHandler)
        self.app = app
        self.verbose = verbose
        bound_port = self.server_address[1]
        # with --allow-remote any Host is accepted (the user chose to expose it); else only loopback names
        self.allowed_hosts = None if allow_remote else {
            f"{name}:{bound_port}" for name in ("127.0.0.1", "localhost", "[::1]", host.lower())}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_in_thread(server: EditorHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="semcolor-editor", daemon=True)
    thread.start()
    return thread


def serve(photos: str | Path, model_ref: str, segmenter_ref: str | None, device: str, out_dir: Path,
          host: str, port: int, allow_remote: bool, open_browser: bool, max_pixels: int) -> int:
    """``semcolor edit``: load the model, serve until Ctrl-C. Returns the exit status."""
    from semcolor.inference import load_colorizer

    if not allow_remote and not is_loopback(host):
        raise EditorError(f"--host {host} is not a loopback address; "
                          "add --allow-remote to serve other machines")
    try:
        found = [path for path, _ in find_photos([photos], exclude=[out_dir])]
    except PhotoError as error:
        raise EditorError(str(error)) from error
    if not found:
        raise EditorError(f"no photos in {photos}")
    try:
        colorizer = load_colorizer(model_ref, segmenter_ref, device=device)
    except (OSError, ValueError, KeyError) as error:
        raise EditorError(f"cannot load the model: {error}") from error
    app = EditorApp(colorizer, found, out_dir, max_pixels)
    server = EditorHTTPServer(app, host, port, allow_remote, verbose=True)
    print(f"semcolor editor: {len(found)} photo(s) at {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
