"""``npconvnet serve``: the /predict endpoint over real HTTP, its refusals, and the page in a
headless Chromium.

The server runs in a thread on a free port of 127.0.0.1; the requests go through the standard
library's HTTP client. The model is trained here in half a second on the ten digits drawn as
pen strokes (those of test_imaging, jittered and slanted), so that it tells drawn digits apart.
The browser tests need Playwright (``pip install playwright``) and a Chromium (Debian's
``/usr/bin/chromium``; ``$NPCONVNET_CHROMIUM`` names another); they skip without them. With
``NPCONVNET_SCREENSHOT=path.png`` the drawing test saves the page as it shows the second digit
(the README's picture, docs/images/serve.png, was taken so).
"""

import concurrent.futures
import contextlib
import http.client
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import npconvnet
from npconvnet import Sequential, cli, explain, optim
from npconvnet.cli.serve import MAX_BODY_BYTES, MAX_PIXELS, make_server
from npconvnet.imaging import prepare_digit
from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from synthetic import png_declaring

Image = pytest.importorskip("PIL.Image", reason="the server decodes the drawings with Pillow "
                                                "(pip install pillow)")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

from test_imaging import DIGIT_STROKES, draw_digit  # noqa: E402  (tests/ is on sys.path under pytest)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the model

def _written_digit(digit, rng, size=96):
    """``digit``'s pen strokes, jittered, slanted and of a random width, as an MNIST-style
    (28, 28) image: what the server makes of a drawing."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    height, slant, width = size * rng.uniform(0.6, 0.8), rng.uniform(-0.25, 0.25), int(rng.integers(4, 9))
    for line in DIGIT_STROKES[digit]:
        points = np.array(line) + rng.normal(0, 0.02, (len(line), 2))
        draw.line([(0.3 * size + (x + slant * (y - 0.5)) * height, 0.12 * size + y * height)
                   for x, y in points], fill=0, width=width, joint="curve")
    return prepare_digit(np.asarray(image, np.float32) / 255)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small convnet trained on 400 written digits (40 of each), saved; a test set of 100
    other written digits it classifies all right shows that it learned them."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 40)
    images = np.stack([_written_digit(digit, rng) for digit in labels])[:, None]
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 8, 3, padding="same"), ReLU(), MaxPool2D(2),
                       Conv2D(8, 16, 3, padding="same"), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(16 * 7 * 7, 10))
    model.compile(optimizer=optim.Adam(lr=3e-3), loss="cross_entropy")
    model.fit(images, labels, epochs=6, batch_size=32, seed=0, verbose=0)
    test_labels = np.repeat(np.arange(10), 10)
    test_images = np.stack([_written_digit(digit, rng) for digit in test_labels])[:, None]
    assert (model.predict_classes(test_images) == test_labels).all()
    return model.save(tmp_path_factory.mktemp("model") / "digits.npz")


@pytest.fixture(scope="module")
def model(model_file):
    return npconvnet.load_model(model_file)


@contextlib.contextmanager
def serving(model, **options):
    """``make_server(model, "127.0.0.1", 0, ...)`` serving in a thread, shut down afterwards."""
    server = make_server(model, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def server(model):
    with serving(model) as server:
        yield server


# ---------------------------------------------------------------------------- HTTP helpers

def request(server, method, path, body=None, headers=None):
    """One request on a new connection: ``(status, headers, body bytes)``."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def raw_exchange(server, data):
    """``data`` sent as it is on a new connection, which then stops sending: ``(head, body)``
    of everything the server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=30) as raw:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


def post_image(server, body, content_type="image/png"):
    """``POST /predict`` with ``body``: ``(status, the JSON answer)``."""
    status, headers, data = request(server, "POST", "/predict", body, {"Content-Type": content_type})
    assert headers["content-type"] == "application/json"
    return status, json.loads(data)


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawing(digit):
    """``digit`` drawn dark on light paper, as a PNG file's bytes."""
    return png_bytes(draw_digit(digit))


def assert_refused(status, answer, expected_status, *fragments):
    assert status == expected_status
    assert set(answer) == {"error"}
    for fragment in fragments:
        assert fragment in answer["error"]


def assert_still_serving(server):
    status, answer = post_image(server, drawing(7))
    assert status == 200 and answer["label"] == 7


# ---------------------------------------------------------------------------- /predict

def test_predict_answers_the_probabilities_that_npconvnet_predict_gives_for_the_same_file(
        server, model_file, tmp_path, capsys):
    draw_digit(3, canvas=(280, 280), origin=(90, 60)).save(tmp_path / "three.png")
    status, answer = post_image(server, (tmp_path / "three.png").read_bytes())
    assert cli.main(["predict", model_file, tmp_path / "three.png", "--json", "--top", "10"]) == 0
    (expected,) = json.loads(capsys.readouterr().out)
    assert status == 200
    assert answer["label"] == expected["class_index"] == 3
    by_class = {entry["class_index"]: entry["probability"] for entry in expected["top"]}
    np.testing.assert_allclose(answer["probabilities"], [by_class[k] for k in range(10)],
                               rtol=1e-6, atol=1e-9)
    assert answer["class_name"] == "3" and answer["classes"] == [str(k) for k in range(10)]


@pytest.mark.parametrize("digit", range(10))
def test_predict_labels_each_drawn_digit(server, digit):
    status, answer = post_image(server, drawing(digit))
    assert status == 200
    assert answer["label"] == int(np.argmax(answer["probabilities"])) == digit
    assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-5)


def test_predict_reads_light_ink_on_dark_rgb_jpeg_photos_too(server):
    photo = draw_digit(4, ink=230, paper=30).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    status, answer = post_image(server, buffer.getvalue(), "image/jpeg")
    assert status == 200 and answer["label"] == 4


def test_predict_sends_the_prepared_input_and_the_first_convolutions_feature_maps(server, model_file):
    image = draw_digit(2)
    status, answer = post_image(server, png_bytes(image))
    prepared = prepare_digit(np.asarray(image, np.float32) / 255)
    assert status == 200
    np.testing.assert_array_equal(answer["input"], np.rint(prepared * 255))
    conv = npconvnet.load_model(model_file).layers[0]          # the model has no preprocessing
    first = conv.forward(prepared[None, None].astype(np.float32))[0]   # (8, 28, 28)
    low, high = first.min(axis=(1, 2), keepdims=True), first.max(axis=(1, 2), keepdims=True)
    assert answer["feature_maps"]["layer"] == 0
    np.testing.assert_allclose(answer["feature_maps"]["maps"], np.rint(255 * (first - low) / (high - low)),
                               atol=1)


def test_predict_sends_the_grad_cam_of_the_class_it_chose(server, model_file):
    image = draw_digit(5)
    status, answer = post_image(server, png_bytes(image))
    prepared = prepare_digit(np.asarray(image, np.float32) / 255)
    heat = explain.grad_cam(npconvnet.load_model(model_file), prepared[None, None], target=answer["label"])[0]
    assert status == 200 and heat.max() > 0
    np.testing.assert_allclose(answer["grad_cam"], np.rint(255 * heat / heat.max()), atol=1)


def test_predict_answers_concurrent_requests_each_with_its_own_drawing(server):
    """40 clients at once, four for each digit: every one gets the answer for its own drawing."""
    expected = {digit: post_image(server, drawing(digit))[1]["probabilities"] for digit in range(10)}
    bodies = {digit: drawing(digit) for digit in range(10)}
    digits = list(range(10)) * 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(digits)) as pool:
        answers = list(pool.map(lambda digit: post_image(server, bodies[digit]), digits))
    for digit, (status, answer) in zip(digits, answers):
        assert status == 200 and answer["probabilities"] == expected[digit]


# ---------------------------------------------------------------------------- refusals

def test_a_blank_canvas_is_refused_with_422_no_digit_found(server):
    status, answer = post_image(server, png_bytes(Image.new("RGB", (280, 280), "white")))
    assert_refused(status, answer, 422, "no digit found")
    assert_still_serving(server)


def test_bytes_that_are_not_an_image_are_refused_with_400(server):
    status, answer = post_image(server, b"this is not a picture" * 50, "application/octet-stream")
    assert_refused(status, answer, 400, "cannot read this as an image", "PNG, JPEG")
    assert_still_serving(server)


def test_a_truncated_png_is_refused_with_400(server):
    status, answer = post_image(server, drawing(5)[:200])
    assert_refused(status, answer, 400, "cannot read this as an image")
    assert_still_serving(server)


def test_an_image_format_outside_the_served_ones_is_refused_with_400(server):
    buffer = io.BytesIO()
    draw_digit(5).save(buffer, format="TIFF")      # Pillow reads it, the server does not
    status, answer = post_image(server, buffer.getvalue(), "image/tiff")
    assert_refused(status, answer, 400, "not a PNG, JPEG, BMP, GIF, WEBP file")
    assert_still_serving(server)


def test_an_empty_body_is_refused_with_400(server):
    assert_refused(*post_image(server, b""), 400, "the body is empty")
    assert_still_serving(server)


def test_a_body_over_the_limit_is_refused_with_413_from_its_content_length_before_it_is_sent(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    connection.endheaders()                         # the body never comes
    response = connection.getresponse()
    assert_refused(response.status, json.loads(response.read()), 413, f"{MAX_BODY_BYTES + 1:,} bytes")
    assert response.getheader("Connection") == "close"
    connection.close()
    assert_still_serving(server)


def test_a_body_over_a_smaller_limit_is_refused_with_413(model):
    noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)))
    blank = png_bytes(Image.new("L", (8, 8), 255))
    assert len(blank) <= 1000 < len(noise)
    with serving(model, max_body_bytes=1000) as small:
        assert_refused(*post_image(small, noise), 413, f"{len(noise):,} bytes, more than the 1,000 accepted")
        assert_refused(*post_image(small, blank), 422, "no digit found")       # read and prepared


def test_an_image_over_the_pixel_limit_is_refused_with_413_from_its_header(server):
    width, height = 6000, MAX_PIXELS // 6000 + 1    # a 100-byte file declaring 25 million pixels
    status, answer = post_image(server, png_declaring(width, height))
    assert_refused(status, answer, 413, f"{width}x{height} pixels", f"{MAX_PIXELS:,}")
    assert_still_serving(server)


def test_a_body_shorter_than_its_content_length_is_refused_with_400(server):
    # The client goes away mid-body.
    head, body = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                              + b"x" * 10)
    assert head.startswith(b"HTTP/1.1 400")
    assert_refused(400, json.loads(body), 400, "the body ended after 10 of 1,000 bytes")
    assert_still_serving(server)


def test_a_post_without_content_length_is_refused_with_411(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.putrequest("POST", "/predict")
    connection.endheaders()
    response = connection.getresponse()
    assert_refused(response.status, json.loads(response.read()), 411, "Content-Length")
    connection.close()
    assert_still_serving(server)


@pytest.mark.parametrize("method, path, allow", [("GET", "/predict", "POST"), ("PUT", "/predict", "POST"),
                                                 ("DELETE", "/", "GET"), ("POST", "/", "GET")])
def test_a_wrong_method_is_refused_with_405_saying_which_is_allowed(server, method, path, allow):
    status, headers, data = request(server, method, path, body=b"x" * 10)
    assert_refused(status, json.loads(data), 405, path)
    assert headers["allow"] == allow
    assert_still_serving(server)


def test_an_unknown_method_is_answered_in_json_too(server):
    status, _, data = request(server, "BREW", "/")
    assert_refused(status, json.loads(data), 501)
    assert_still_serving(server)


@pytest.mark.parametrize("path", ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                                  "//etc/passwd", "/serve.html", "/serve.py", "/predict/../serve.py",
                                  "/..%2fserve.py", "/static/../../pyproject.toml", "/favicon.ico"])
def test_no_path_but_the_page_and_the_endpoint_is_served(server, path):
    status, headers, data = request(server, "GET", path)
    assert_refused(status, json.loads(data), 404, "no such page")
    assert b"root:" not in data and b"import" not in data
    assert_still_serving(server)


def test_a_malformed_request_line_gets_a_json_error_and_the_server_goes_on(server):
    head, body = raw_exchange(server, b"GET / three words HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert_refused(400, json.loads(body), 400, "Bad request syntax")
    assert_still_serving(server)


def test_keep_alive_connections_get_an_answer_for_every_drawing(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        for digit in (1, 4, 1):
            connection.request("POST", "/predict", body=drawing(digit), headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["label"] == digit
    finally:
        connection.close()


# ---------------------------------------------------------------------------- the page

def test_the_page_is_served_at_the_root_and_fetches_nothing_from_elsewhere(server):
    for path in ("/", "/index.html", "/?from=bookmark"):
        status, headers, data = request(server, "GET", path)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        page = data.decode()
        assert "<canvas" in page and 'id="clear"' in page and 'type="file"' in page
        assert "http://" not in page and "https://" not in page and "src=" not in page
        assert "connect-src 'self'" in headers["content-security-policy"]


def test_the_page_is_package_data_that_setuptools_installs():
    assert resources.files("npconvnet.cli").joinpath("serve.html").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "serve.html" in package_data["npconvnet.cli"]


# ---------------------------------------------------------------------------- the command

def test_serve_prints_its_url_serves_and_stops_with_130_on_ctrl_c(model_file):
    process = subprocess.Popen([sys.executable, "-m", "npconvnet", "serve", str(model_file), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        line = process.stdout.readline()
        assert line.startswith(f"npconvnet serve: {model_file} at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/predict", body=drawing(8))
        assert json.loads(connection.getresponse().read())["label"] == 8
        connection.close()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "npconvnet: interrupted"


def test_serve_refuses_a_missing_model_file_in_one_line(tmp_path, capsys):
    assert cli.main(["serve", tmp_path / "nothing.npz"]) == 2
    assert capsys.readouterr().err == f"npconvnet: error: {tmp_path / 'nothing.npz'}: no such model file\n"


def test_serve_refuses_a_port_in_use_in_one_line(server, model_file, capsys):
    port = server.server_address[1]
    assert cli.main(["serve", model_file, "--port", port]) == 2
    assert capsys.readouterr().err.startswith(f"npconvnet: error: cannot listen on 127.0.0.1:{port}: ")


def test_serve_refuses_a_port_out_of_range(model_file, capsys):
    assert cli.main(["serve", model_file, "--port", "70000"]) == 2
    assert "must be a port number in 0-65535" in capsys.readouterr().err


def test_serve_without_pillow_says_which_extra_to_install(model, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *rest: None if name == "PIL" else find_spec(name, *rest))
    with pytest.raises(ModuleNotFoundError, match=r'pip install "npconvnet\[all\]"'):
        make_server(model, "127.0.0.1", 0)


# ---------------------------------------------------------------------------- in a browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with "
                                                                 "Playwright (pip install playwright)")
    chromium = (os.environ.get("NPCONVNET_CHROMIUM") or shutil.which("chromium")
                or shutil.which("chromium-browser"))
    if chromium is None:
        pytest.skip("no Chromium for the browser tests: install Debian's chromium (apt-get install "
                    "chromium) or set NPCONVNET_CHROMIUM to one")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 860, "height": 640})
    page.goto(server.url)
    yield page
    page.close()


def draw_with_the_mouse(page, digit):
    """Write ``digit`` on the canvas stroke by stroke, as a hand would: press, move along the
    stroke, release."""
    box = page.locator("#canvas").bounding_box()
    left, top, height = box["x"] + 80, box["y"] + 40, 0.72 * box["height"]
    for line in DIGIT_STROKES[digit]:
        points = [(left + x * height, top + y * height) for x, y in line]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=2)
        page.mouse.up()


def shown_label(page):
    """The large label, once the answer to the drawing as it is now is on the page."""
    page.wait_for_function("() => { const r = document.getElementById('result');"
                           " return r.dataset.drawn !== '0' && r.dataset.shown === r.dataset.drawn; }")
    return page.inner_text("#label")


def test_the_page_shows_the_label_of_a_digit_drawn_with_the_mouse_then_clears_for_another(page):
    draw_with_the_mouse(page, 3)
    assert shown_label(page) == "3"
    assert page.locator(".bar").count() == 10 and page.inner_text(".bar.top .name") == "3"
    page.click("#clear")
    assert page.inner_text("#label") == "?"
    assert page.inner_text("#confidence") == "draw a digit" and page.locator(".bar").count() == 0
    blank = page.evaluate("() => { const c = document.getElementById('canvas');"
                          " return c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                          ".every(v => v === 255); }")
    assert blank
    draw_with_the_mouse(page, 7)
    assert shown_label(page) == "7"
    assert page.locator("#maps canvas").count() == 8
    assert page.inner_text("#message") == ""
    if os.environ.get("NPCONVNET_SCREENSHOT"):
        page.screenshot(path=os.environ["NPCONVNET_SCREENSHOT"])


def test_the_page_classifies_an_uploaded_photo(page, tmp_path):
    draw_digit(6).convert("RGB").save(tmp_path / "six.jpg", quality=90)
    page.set_input_files("#photo", str(tmp_path / "six.jpg"))
    assert shown_label(page) == "6"
