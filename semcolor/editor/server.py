"""The semantic editor's HTTP server: FastAPI routes served by uvicorn.

The browser page (``static/``) shows the gray photo at the DISPLAY shape (the U-Net's working shape: long
side 352, sides multiples of 32, so what the person edits is exactly what the model sees), the map as an
overlay, and the colorized result. Maps travel as raw bytes: H x W uint8 class indices, row-major
(``application/octet-stream``), or as a gray/palette PNG of indices (``image/png``).

API (every error answers JSON ``{"error": "..."}``; a bad request gets a 4xx naming what is wrong, without a
traceback or a server path, and never stops the server):
  GET  /api/session                      model, label set (id, name, color, typical_color), photos
  GET  /api/photos/<i>                   display and full size of photo i
  GET  /api/photos/<i>/gray.png          the gray photo at display size
  GET  /api/photos/<i>/map?which=predicted   the map as raw bytes (X-Map-Width/Height headers)
  GET  /api/photos/<i>/result.png        the latest colorization at display size
  POST /api/photos/<i>/colorize?seed=N   body: a map (or empty: the predicted one) -> PNG at display size
  POST /api/photos/<i>/save?seed=N       body: a map (or empty) -> writes <stem>_color.png (full resolution)
                                         and <stem>_map.png (palette PNG of indices) into the output folder

Who may do what:
- Only loopback hosts are served unless ``allow_remote``. Every request must then name this server in its
  Host header (no DNS rebinding).
- A POST changes state (the result; Save writes files), so it must be provably same-origin: an ``Origin``
  header equal to this server's own origin (what browsers send for the page's own requests), or, without
  Origin (scripts, curl), a non-empty map body typed ``application/octet-stream`` or ``image/png`` - types a
  cross-site page cannot send without a CORS preflight, which this server never grants. ``Origin: null``
  (sandboxed frames, file:// and data: pages) and a missing Origin with an empty or otherwise typed body are
  refused with 403.

Time limits (``Timeouts``): a connection must send its request head within ``head_s`` of opening it (or of its
previous response), an upload must arrive within ``body_s`` (else 408), an idle keep-alive connection is
closed after ``keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import sys
import threading
import time
import warnings
import webbrowser
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from semcolor.color import lab_to_rgb8
from semcolor.inference import (
    SDC_MULTIPLE,
    SDC_WORKING_SIZE,
    Colorizer,
    class_colors,
    map_palette,
    resize_gray,
    resize_label_map,
    working_shape,
)
from semcolor.sources.base import IGNORE_INDEX
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
MAP_TYPES = ("application/octet-stream", "image/png")


@dataclass(frozen=True)
class Timeouts:
    """Seconds a client may take: to send a request head, to upload a body, between keep-alive requests."""

    head_s: float = 10.0
    body_s: float = 30.0
    keep_alive_s: float = 5.0


class EditorError(Exception):
    """A setup problem (no photos, non-loopback host without permission, port in use, model not loadable)."""


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
    """The editor's state and work, independent of HTTP (the routes only parse and validate)."""

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

    def _read(self, path: Path):
        try:
            return read_photo(path, self.max_pixels)
        except PhotoError as error:  # the photo's name and the reason, not the server's folder
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"{path.name}: {error.reason}") from None

    def _load(self, index: int) -> PhotoSession:
        path = self.photos[index]
        photo = self._read(path)
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
            seg = _decode_map_png(body, width, height)
        else:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               "map must be application/octet-stream or image/png, "
                               f"got {content_type or 'none'}")
        num_classes = self.colorizer.num_classes or 0
        bad = (seg >= num_classes) & (seg != IGNORE_INDEX)
        if bad.any():
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"class id {int(seg[bad][0])} out of range: this model's classes are "
                               f"0..{num_classes - 1} ({IGNORE_INDEX} = unknown)")
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
        photo = self._read(session.path)
        with self._lock, torch.inference_mode():
            result = self.colorizer.colorize(photo.lightness, semantic_map=self._map_for_model(session, seg),
                                             seed=seed)
        stem = session.path.stem
        protected = [p.resolve() for p in self.photos]
        targets = {"image": (self.out_dir / f"{stem}_color.png", result.images[0], None)}
        if result.semantic_map is not None:
            targets["map"] = (self.out_dir / f"{stem}_map.png", result.semantic_map, map_palette())
        written = {}
        for kind, (target, array, palette) in targets.items():
            try:
                written[kind] = str(write_image_atomic(target, array, protected, palette=palette))
            except PhotoError as error:
                raise RequestError(HTTPStatus.CONFLICT, f"{target.name}: {error.reason}") from None
            except OSError as error:  # the output folder, not the request: 500, named, without the path
                raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR,
                                   f"cannot write {target.name} into the output folder "
                                   f"({error.strerror or type(error).__name__}); see the editor's terminal") from None
        return written

    def _map_for_model(self, session: PhotoSession, seg: np.ndarray | None) -> np.ndarray | None:
        if not self.colorizer.takes_semantic_map:
            return None
        return session.predicted_map if seg is None else seg


def _decode_map_png(body: bytes, width: int, height: int) -> np.ndarray:
    """A gray or palette PNG of class indices at (width, height) -> uint8 (height, width); RequestError (400)
    for anything else - a decompression bomb included: its declared size is refused before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           f"map PNG declares a huge image (a decompression bomb?); expected {width}x{height}") from None
    except Exception:  # Pillow raises many types for bad input; any of them is the client's bad PNG
        raise RequestError(HTTPStatus.BAD_REQUEST, "map is not a readable PNG") from None
    with image:
        if image.format != "PNG" or image.mode not in ("L", "P"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "map PNG must be gray (L) or palette (P) with class "
                               f"indices, got {image.format} {image.mode}")
        if image.size != (width, height):
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"map PNG is {image.size[0]}x{image.size[1]}; expected {width}x{height}")
        try:
            return np.array(image, dtype=np.uint8)
        except Exception:
            raise RequestError(HTTPStatus.BAD_REQUEST, "map PNG data is truncated or corrupt") from None


# ------------------------------------------------------------------------------------------ HTTP


def create_api(app: EditorApp, allowed_hosts: set[str] | None, timeouts: Timeouts = Timeouts()):
    """The FastAPI application of the editor (``allowed_hosts``: accepted Host headers; None: any)."""
    def check_host(request: Request) -> None:
        host = (request.headers.get("host") or "").lower()
        if allowed_hosts is not None and host not in allowed_hosts:
            raise RequestError(HTTPStatus.FORBIDDEN,
                               f"unexpected Host header {host!r}; open the editor at its printed URL")

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(check_host)])

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=int(status), headers=headers)

    @api.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = sorted(m for m in (exc.headers or {}).get("Allow", "").replace(" ", "").split(",")
                             if m and m != "HEAD")
            return error(exc.status_code, f"use {' or '.join(allowed)} here, not {request.method}",
                         exc.headers)
        if exc.status_code == HTTPStatus.NOT_FOUND:
            return error(exc.status_code, f"no such page {request.url.path}")
        return error(exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(HTTPStatus.BAD_REQUEST, "bad request")

    @api.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # a bug: the traceback goes to the editor's terminal (uvicorn logs it), the client gets one line
        return error(HTTPStatus.INTERNAL_SERVER_ERROR,
                     f"internal error ({type(exc).__name__}); see the editor's terminal")

    def headers() -> dict[str, str]:
        return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    def photo_index(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise RequestError(HTTPStatus.NOT_FOUND, f"photo index must be an integer, got {text!r}") from None

    def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
        values = request.query_params.getlist(name)
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

    def check_same_origin(request: Request) -> None:
        """A state-changing request must be provably same-origin (see the module docstring)."""
        origin = request.headers.get("origin")
        host = (request.headers.get("host") or "").lower()
        if origin is not None:
            if origin.lower() != f"http://{host}":
                raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")
            return
        content_type = _content_type(request)
        length = request.headers.get("content-length", "0").strip()
        if content_type not in MAP_TYPES or length in ("", "0"):
            raise RequestError(HTTPStatus.FORBIDDEN,
                               "a request without an Origin header must send a map (Content-Type "
                               "application/octet-stream or image/png); send Origin: http://<this server>")

    async def read_body(request: Request) -> bytes:
        if request.headers.get("transfer-encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "chunked uploads are not accepted; send Content-Length")
        length_text = request.headers.get("content-length")
        if length_text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text!r}")
        if length > app.max_upload_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"upload of {length} bytes exceeds the limit of {app.max_upload_bytes}")
        chunks: list[bytes] = []

        async def collect() -> None:
            async for chunk in request.stream():
                chunks.append(chunk)

        try:
            await asyncio.wait_for(collect(), timeout=timeouts.body_s)
        except asyncio.TimeoutError:
            received = sum(map(len, chunks))
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the upload stalled: {received} of {length} bytes "
                               f"in {timeouts.body_s:g} s") from None
        except ClientDisconnect:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the client went away during the upload") from None
        body = b"".join(chunks)
        if len(body) != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes")
        return body

    for route, (name, content_type) in STATIC_FILES.items():
        def static(name: str = name, content_type: str = content_type) -> Response:
            page = resources.files("semcolor.editor").joinpath("static", name).read_bytes()
            return Response(page, media_type=content_type, headers=headers())

        api.add_api_route(route, static, methods=["GET", "HEAD"], include_in_schema=False)

    @api.api_route("/api/session", methods=["GET", "HEAD"])
    def session_info() -> Response:
        return JSONResponse(app.describe(), headers=headers())

    @api.api_route("/api/photos/{index}", methods=["GET", "HEAD"])
    def photo_info(index: str) -> Response:
        number = photo_index(index)
        session = app.session(number)
        height, width = session.display_lightness.shape
        return JSONResponse({"index": number, "name": session.path.name, "width": width, "height": height,
                             "full_width": session.full_shape[1], "full_height": session.full_shape[0]},
                            headers=headers())

    @api.api_route("/api/photos/{index}/gray.png", methods=["GET", "HEAD"])
    def gray(index: str) -> Response:
        return Response(app.session(photo_index(index)).gray_png, media_type="image/png", headers=headers())

    @api.api_route("/api/photos/{index}/map", methods=["GET", "HEAD"])
    def predicted_map(index: str, request: Request) -> Response:
        session = app.session(photo_index(index))
        which = (request.query_params.getlist("which") or ["predicted"])[-1]
        if which != "predicted":
            raise RequestError(HTTPStatus.BAD_REQUEST, f"which must be 'predicted', got {which!r}")
        if session.predicted_map is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "this model has no semantic map")
        height, width = session.predicted_map.shape
        return Response(session.predicted_map.tobytes(), media_type="application/octet-stream",
                        headers={**headers(), "X-Map-Width": str(width), "X-Map-Height": str(height)})

    @api.api_route("/api/photos/{index}/result.png", methods=["GET", "HEAD"])
    def result(index: str) -> Response:
        return Response(app.result(photo_index(index)), media_type="image/png", headers=headers())

    async def map_request(index: str, request: Request) -> tuple[int, np.ndarray | None, int]:
        check_same_origin(request)
        seed = int_param(request, "seed", 0, 0, 2**31 - 1)
        number = photo_index(index)
        session = await run_in_threadpool(app.session, number)
        body = await read_body(request)
        return number, app.parse_map(session, body, _content_type(request)), seed

    @api.post("/api/photos/{index}/colorize")
    async def colorize(index: str, request: Request) -> Response:
        number, seg, seed = await map_request(index, request)
        png = await run_in_threadpool(app.colorize, number, seg, seed)
        return Response(png, media_type="image/png", headers=headers())

    @api.post("/api/photos/{index}/save")
    async def save(index: str, request: Request) -> Response:
        number, seg, seed = await map_request(index, request)
        return JSONResponse(await run_in_threadpool(app.save, number, seg, seed), headers=headers())

    return api


def _content_type(request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _timed_protocol(head_s: float):
    """uvicorn's h11 protocol, closing a connection that sends no complete request head within ``head_s``
    of opening (or of its last response): uvicorn alone waits forever for a first request (slowloris)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request head arrived: the body and the work have their own limits

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), IPv4 or IPv6 as the host says; EditorError in one line when
    the port is taken or the address is not this machine's."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise EditorError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise EditorError(f"port {port} on {host} is in use; choose another --port, "
                              "or --port 0 for any free one") from None
        raise EditorError(f"cannot serve on {host} port {port} ({error.strerror or error})") from None
    sock.setblocking(False)
    return sock


class EditorHTTPServer:
    """The editor served by uvicorn on one socket (``serve_forever`` in this thread, or ``start_in_thread``).

    Raises EditorError for a non-loopback host without ``allow_remote`` and for a port that cannot be bound.
    ``sock``: an already bound socket (``bind_socket``), so that ``semcolor edit`` finds a taken port before
    it spends time loading the model."""

    def __init__(self, app: EditorApp, host: str, port: int, allow_remote: bool = False,
                 verbose: bool = False, timeouts: Timeouts = Timeouts(), sock: socket.socket | None = None) -> None:
        import uvicorn

        if not allow_remote and not is_loopback(host):
            raise EditorError(f"--host {host} is not a loopback address; the editor serves only this machine "
                              "unless --allow-remote is given")
        self.app = app
        self.socket = sock if sock is not None else bind_socket(host, port)
        self.host = host
        bound_port = self.socket.getsockname()[1]
        # with --allow-remote any Host is accepted (the user chose to expose it); else only loopback names
        self.allowed_hosts = None if allow_remote else {
            f"{name}:{bound_port}" for name in ("127.0.0.1", "localhost", "[::1]", _url_host(host).lower())}
        config = uvicorn.Config(
            create_api(app, self.allowed_hosts, timeouts), lifespan="off", log_config=None,
            access_log=verbose, http=_timed_protocol(timeouts.head_s), ws="none",
            timeout_keep_alive=max(1, int(round(timeouts.keep_alive_s))), timeout_graceful_shutdown=2,
            server_header=False, date_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.server_address[1]}/"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def server_close(self) -> None:
        self.socket.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def start_in_thread(server: EditorHTTPServer) -> threading.Thread:
    """Serve in a daemon thread; returns once the server accepts requests."""
    thread = threading.Thread(target=server.serve_forever, name="semcolor-editor", daemon=True)
    server._thread = thread
    thread.start()
    deadline = time.monotonic() + 60
    while not server.server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise EditorError("the editor server did not start")
        time.sleep(0.01)
    return thread


def serve(photos: str | Path, model_ref: str, segmenter_ref: str | None, device: str, out_dir: Path,
          host: str, port: int, allow_remote: bool, open_browser: bool, max_pixels: int) -> int:
    """``semcolor edit``: check the setup, load the model, serve until Ctrl-C. Returns the exit status.

    Order: host, photos, port and output folder are checked first (in a second), the model is loaded after
    (it can take a while), so a setup mistake is reported at once."""
    from semcolor.atomic import check_writable_folder as probe
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
    sock = bind_socket(host, port)
    try:
        try:
            probe(out_dir)
        except OSError as error:
            raise EditorError(f"--out {out_dir}: cannot write there ({error.strerror or error}); "
                              "choose another folder") from None
        try:
            colorizer = load_colorizer(model_ref, segmenter_ref, device=device)
        except (OSError, ValueError, KeyError) as error:
            raise EditorError(f"cannot load the model: {' '.join(str(error).split())}") from None
        app = EditorApp(colorizer, found, out_dir, max_pixels)
        server = EditorHTTPServer(app, host, port, allow_remote, sock=sock)
    except BaseException:
        sock.close()
        raise
    print(f"semcolor editor: {len(found)} photo(s) at {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve_forever()  # uvicorn handles Ctrl-C: it stops serving, then re-raises the signal
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("semcolor editor: stopped", file=sys.stderr)
    return 0
