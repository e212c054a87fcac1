"""``npconvnet serve``: a web page to draw a digit on, answered by the model as you draw.

:func:`make_server` builds the server (the standard library's ``ThreadingHTTPServer``, one
thread per connection) and ``cmd_serve`` runs it until Ctrl-C. It answers three requests and
nothing else; it never reads a file after it starts, so no path can reach one:

``GET /`` (also ``/index.html``)
    the page, ``serve.html`` beside this module: one HTML file with plain JavaScript that
    needs nothing from the internet. A canvas to draw on with a mouse, a pen or a finger, a
    button to clear it and one to upload a photo; as the drawing changes, the canvas goes to
    ``/predict`` as a PNG and the page shows the ten probabilities as bars, the most probable
    class large, the 28x28 image the model was given with its Grad-CAM heat map over it, and
    the first convolution's feature maps.

``POST /predict``
    the body is an image file's bytes (PNG, JPEG, BMP, GIF or WebP; any size up to the
    limits), prepared exactly as ``npconvnet predict`` prepares an image file (for a digit
    model: cropped to the ink, scaled into 20x20, centred by centre of mass in 28x28). The
    answer, JSON::

        {"probabilities": [p_0, ..., p_{K-1}],   # the K class probabilities, summing to 1
         "label": k,                             # the most probable class's index
         "class_name": "7",                      # and its name
         "classes": ["0", ..., "9"],             # every class's name
         "input": [[0..255, ...], ...],          # the prepared (H, W) input, channels averaged
         "feature_maps": {"layer": 0, "maps": [[[0..255, ...], ...], ...]},
                                                 # the first Conv2D's outputs (at most 16),
                                                 # each scaled from its minimum (0) to its
                                                 # maximum (255); null without a Conv2D
         "grad_cam": [[0..255, ...], ...]}       # where the model looks for the class it
                                                 # chose: npconvnet.explain.grad_cam of the
                                                 # last Conv2D, input-sized, its maximum 255
                                                 # (all 0 when nothing raised the score);
                                                 # null without a Conv2D

Every refused request is answered ``{"error": "what was wrong"}`` with a 4xx status, and the
server goes on serving: 400 for a body that is not an image (or not one of the formats
above) or that ends early, 404 for any other path, 405 for another method (with ``Allow``),
408 for a body that stops coming for ``REQUEST_TIMEOUT`` seconds, 411 without a
``Content-Length``, 413 for a body over ``max_body_bytes`` (refused before it is read) or an
image over ``max_pixels`` (refused from its header, before its pixels are decoded), and 422
for an image with nothing to classify: a blank canvas, or a photo of uniform colour, has no
digit to crop to. The page never sends a blank canvas; it shows "draw a digit" instead. A
model whose outputs are not finite gets 500, as does a bug, with the error in one line.

Requests run in parallel, but the model's forward pass keeps state in its layers (the
evaluation mode, reused buffers), so one lock lets one request at a time through the model;
decoding and preparing the image, the slow part for a photo, run outside it.
"""

import importlib.util
import json
import socket
import socketserver
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

import numpy as np

from ..explain import grad_cam
from ..imaging import ImageError, ImageTooLargeError, decode_image
from ..layers import Conv2D
from ..training import layer_outputs
from .common import (EXIT_OK, IMAGE_MAX_SIZE, CliError, class_names, is_digit_model,
                     load_model_file, model_input_shape, predict, prepare, preparation)

__all__ = ["make_server", "PredictionServer", "PredictionHandler", "Predictor", "cmd_serve",
           "MAX_BODY_BYTES", "MAX_PIXELS"]

#: The largest request body read: a phone photo's JPEG fits, a canvas PNG is some kilobytes.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The largest image decoded, in pixels: a 24-megapixel photo fits; its pixels cost ~100 MB.
MAX_PIXELS = 25_000_000
#: The image formats decoded: those of photos and canvases, not every format Pillow knows
#: (some, such as EPS, run other programs).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
#: The most feature maps of the first convolution sent with each answer.
MAX_FEATURE_MAPS = 16
#: A refused request's body up to this size is read off, so that the connection may go on.
DISCARD_BYTES = 1024 * 1024
#: Seconds a connection may stay silent in the middle of a request before it is dropped.
REQUEST_TIMEOUT = 30
PAGE_PATHS = ("/", "/index.html")
PREDICT_PATH = "/predict"


class RequestError(Exception):
    """A request that is refused: the HTTP status and the one-line reason sent as JSON."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _as_bytes(image):
    """Values in [0, 1] as nested lists of integers 0-255 (small JSON)."""
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8).tolist()


def _stretched(maps):
    """``(F, H, W)`` maps each scaled from its minimum (0) to its maximum (1); 0 where flat."""
    low = maps.min(axis=(1, 2), keepdims=True)
    spread = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, spread, out=np.zeros_like(maps), where=spread > 0)


def _of_maximum(heat):
    """A map scaled by its maximum, to [0, 1]; all 0 where it is 0 everywhere."""
    peak = heat.max()
    return heat / peak if peak > 0 else np.zeros_like(heat)


class Predictor:
    """The model behind ``/predict``: image bytes in, the JSON answer (a dict) out.

    ``how``: ``--prepare``'s choice, "auto", "digit" or "resize" (see ``npconvnet predict``);
    ``name``: what the model is called in errors (its file).
    """

    def __init__(self, model, how="auto", name="the model", max_pixels=MAX_PIXELS):
        if importlib.util.find_spec("PIL") is None:
            raise ModuleNotFoundError('npconvnet serve reads the drawings with Pillow: '
                                      'pip install "npconvnet[all]"', name="PIL")
        self.model = model
        self.name = name
        self.input_shape = model_input_shape(model)
        self.how = how
        self.digits = is_digit_model(model)
        preparation(self.input_shape, how, self.digits)      # an impossible choice fails now
        self.max_pixels = max_pixels
        self.first_conv = next((index for index, layer in enumerate(model.layers)
                                if isinstance(layer, Conv2D)), None)
        self.has_conv = any(isinstance(layer, Conv2D) for layer in model.walk())
        self._lock = threading.Lock()

    def __call__(self, data):
        try:
            image = decode_image(data, name="the uploaded image", max_size=IMAGE_MAX_SIZE,
                                 max_pixels=self.max_pixels, formats=IMAGE_FORMATS)
        except ImageTooLargeError as error:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error)) from None
        except ImageError as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        try:
            prepared = prepare(image, self.input_shape, self.how, self.digits)
        except ImageError as error:         # nothing to crop to: a blank canvas
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"the uploaded image: {error}") from None
        batch = prepared[None].astype(np.float32)
        with self._lock:
            probabilities = predict(self.model, batch, self.name, ["the uploaded image"])[0]
            label = int(np.argmax(probabilities))
            maps = heat = None
            if self.first_conv is not None:
                outputs = layer_outputs(self.model, self.model.preprocess_input(batch))
                maps = outputs[self.first_conv][1][0, :MAX_FEATURE_MAPS]
            if self.has_conv:
                heat = grad_cam(self.model, batch, target=label)[0].astype(np.float64)
        names = class_names(self.model, len(probabilities))
        return {"probabilities": [float(p) for p in probabilities], "label": label,
                "class_name": names[label], "classes": names,
                "input": _as_bytes(prepared.mean(axis=0)),
                "feature_maps": None if maps is None else
                {"layer": self.first_conv, "maps": _as_bytes(_stretched(maps.astype(np.float64)))},
                "grad_cam": None if heat is None else _as_bytes(_of_maximum(heat))}


class PredictionHandler(BaseHTTPRequestHandler):
    """One connection to a :class:`PredictionServer`: the page, ``/predict``, JSON errors."""

    protocol_version = "HTTP/1.1"           # keep-alive: the page sends a request per stroke
    server_version = "npconvnet-serve"
    timeout = REQUEST_TIMEOUT

    def parse_request(self):
        self._body_read = False
        return super().parse_request()

    def do_GET(self):
        path = self._path()
        if path in PAGE_PATHS:
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8",
                       {"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                        "style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'"})
        elif path == PREDICT_PATH:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST with an image file as the body",
                         allow="POST")
        else:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such page: {path} (the page is at /)")

    def do_POST(self):
        path = self._path()
        if path != PREDICT_PATH:
            self._refuse(*((HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET only") if path in PAGE_PATHS
                           else (HTTPStatus.NOT_FOUND, f"no such endpoint: {path} (POST to /predict)")),
                         allow="GET" if path in PAGE_PATHS else None)
            return
        try:
            answer = self.server.predictor(self._body())
        except RequestError as error:
            self._refuse(error.status, str(error))
        except CliError as error:           # the model's outputs are not finite: its fault
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))
        except Exception as error:          # a bug: the server says so and goes on
            self.log_error("internal error in /predict: %s: %s", type(error).__name__, error)
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"internal error: {type(error).__name__}: {error}")
        else:
            self._send_json(HTTPStatus.OK, answer)

    def _other_method(self):
        path = self._path()
        allow = "POST" if path == PREDICT_PATH else "GET" if path in PAGE_PATHS else None
        if allow is None:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such page: {path} (the page is at /)")
        else:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {allow} only, not {self.command}",
                         allow=allow)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    def _path(self):
        return urlsplit(self.path).path

    def _body(self):
        """The request's body, read whole, or a RequestError before reading it."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length, "
                                                           "not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        if not length.strip().isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length is not a number: {length!r}")
        length = int(length)
        if length > self.server.max_body_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body has {length:,} bytes, more than the "
                               f"{self.server.max_body_bytes:,} accepted")
        if length == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is empty; expected an image file")
        self._body_read = True
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not come within "
                                                           f"{REQUEST_TIMEOUT} seconds") from None
        if len(body) < length:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body):,} of "
                                                       f"{length:,} bytes")
        return body

    def _refuse(self, status, message, allow=None):
        headers = {"Allow": allow} if allow else {}
        # A body left unread would be taken for the next request: close the connection then.
        if not self._discard_body() or self.close_connection:
            self.close_connection = True
            headers["Connection"] = "close"
        self._send_json(status, {"error": message}, headers)

    def _discard_body(self):
        """Read off a body that was not read, when it is small; True when none is left. (A
        connection closed with data unread is reset, and the client may then lose the answer.)"""
        if self._body_read:
            return True
        self._body_read = True
        length = self.headers.get("Content-Length", "0").strip()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not length.isdigit():
            return False
        if int(length) > DISCARD_BYTES:
            return False
        return len(self.rfile.read(int(length))) == int(length)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, headers too long, an unknown
        method) in JSON too."""
        self.log_error("code %d, message %s", code, message)
        self._body_read = True              # the request itself could not be read
        self.close_connection = True
        self._send_json(code, {"error": message or HTTPStatus(code).phrase}, {"Connection": "close"})

    def _send_json(self, status, value, headers=None):
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def log_request(self, code="-", size="-"):
        """Only refused requests are logged: a drawing sends one request per stroke."""
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


class PredictionServer(ThreadingHTTPServer):
    """The HTTP server of ``npconvnet serve`` (see the module docstring); ``url`` is its address.

    ``predictor``: a :class:`Predictor`; ``log``: a function taking one line (the refused
    requests), or None for silence.
    """

    daemon_threads = True                   # an open keep-alive connection does not hold up exit
    # Connections waiting to be accepted: socketserver's 5 overflow (and are reset) when a few
    # dozen clients connect at once.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address, predictor, max_body_bytes=MAX_BODY_BYTES, log=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.predictor = predictor
        self.max_body_bytes = max_body_bytes
        self.log = log
        self.page = resources.files(__package__).joinpath("serve.html").read_bytes()
        super().__init__(address, PredictionHandler)

    def server_bind(self):
        # HTTPServer.server_bind looks the host's name up (socket.getfqdn), which can hang
        # without a network: the address is all that is needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        """A connection that failed outside a request (the client went away): one line, not
        a traceback."""
        error = sys.exc_info()[1]
        if self.log is not None:
            self.log(f"{client_address[0]} connection dropped: {type(error).__name__}: {error}")

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(model, host="127.0.0.1", port=8000, how="auto", name="the model",
                max_body_bytes=MAX_BODY_BYTES, max_pixels=MAX_PIXELS, log=None):
    """A :class:`PredictionServer` for ``model`` listening on ``host``:``port`` (0: a free
    port; ``server.url`` says which), not yet serving: call ``serve_forever()`` (in a thread,
    for tests), then ``shutdown()`` and ``server_close()``. ``how``: the images' preparation
    (see ``npconvnet predict --prepare``); ``name``: the model in error messages;
    ``max_body_bytes``, ``max_pixels``: the largest body and image accepted; ``log``: a function
    given a line for each refused request, or None."""
    try:
        return PredictionServer((host, port), Predictor(model, how, name, max_pixels),
                                max_body_bytes=max_body_bytes, log=log)
    except OSError as error:
        raise CliError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def cmd_serve(args):
    model = load_model_file(args.model_file)
    server = make_server(model, args.host, args.port, how=args.prepare, name=str(args.model_file),
                         log=lambda line: print(f"npconvnet serve: {line}", file=sys.stderr, flush=True))
    with server:
        print(f"npconvnet serve: {args.model_file} at {server.url} (Ctrl-C stops)", flush=True)
        server.serve_forever()
    return EXIT_OK
