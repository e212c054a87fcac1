"""Image files as arrays, and the MNIST-style preparation of a photographed digit."""

import io
import struct
import warnings

import numpy as np
import pytest

from npconvnet.imaging import (ImageError, ImageTooLargeError, decode_image, load_image, prepare_digit,
                               resize_image, to_grayscale)
from synthetic import png_declaring

Image = pytest.importorskip("PIL.Image", reason="reading image files needs Pillow (pip install pillow)")
ImageDraw = pytest.importorskip("PIL.ImageDraw")


# ---------------------------------------------------------------------------- drawn digits
# Also used by test_cli.py: digits drawn with pen strokes, as someone would write them.

def _arc(cx, cy, rx, ry, start, stop, steps=40):
    angles = np.deg2rad(np.linspace(start, stop, steps))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles)))


def _bezier(p0, p1, p2, steps=30):
    t = np.linspace(0, 1, steps)[:, None]
    points = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t ** 2 * np.array(p2)
    return [tuple(point) for point in points]


# Each digit as pen strokes (polylines) in a box 0.6 wide and 1 high, y pointing down.
DIGIT_STROKES = {
    0: [_arc(0.3, 0.5, 0.27, 0.47, 0, 360)],
    1: [[(0.36, 0.02), (0.26, 0.98)]],
    2: [_arc(0.3, 0.28, 0.27, 0.26, 180, 400) + [(0.03, 0.97), (0.6, 0.97)]],
    3: [_arc(0.3, 0.26, 0.25, 0.24, 200, 450), _arc(0.3, 0.73, 0.28, 0.25, 270, 520)],
    4: [[(0.46, 0.98), (0.46, 0.02), (0.02, 0.68), (0.6, 0.68)]],
    5: [[(0.55, 0.03), (0.12, 0.03), (0.09, 0.46)] + _arc(0.3, 0.68, 0.27, 0.28, 230, 510)],
    6: [_bezier((0.5, 0.03), (0.05, 0.2), (0.04, 0.72)), _arc(0.3, 0.72, 0.26, 0.25, 0, 360)],
    7: [[(0.02, 0.03), (0.6, 0.03), (0.22, 0.98)]],
    8: [_arc(0.3, 0.26, 0.22, 0.23, 0, 360), _arc(0.3, 0.73, 0.27, 0.25, 0, 360)],
    9: [_arc(0.3, 0.27, 0.26, 0.25, 0, 360), [(0.56, 0.27), (0.5, 0.98)]],
}


def draw_digit(digit, canvas=(300, 240), height=150, origin=(40, 60), stroke=12, ink=20, paper=235):
    """A grayscale Pillow image of ``digit`` written with round pen strokes ``stroke`` pixels wide,
    ``height`` pixels tall, its top-left corner at ``origin`` on a ``canvas`` (width, height)."""
    image = Image.new("L", canvas, paper)
    draw = ImageDraw.Draw(image)
    for line in DIGIT_STROKES[digit]:
        points = [(origin[0] + x * height, origin[1] + y * height) for x, y in line]
        draw.line(points, fill=ink, width=stroke, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - stroke / 2, y - stroke / 2, x + stroke / 2, y + stroke / 2), fill=ink)
    return image


def _pixels(image):
    return np.asarray(image, dtype=np.float32) / 255


# ---------------------------------------------------------------------------- load_image

def test_load_image_reads_an_8_bit_grayscale_png_as_values_in_0_1(tmp_path):
    pixels = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(pixels).save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.dtype == np.float32 and loaded.shape == (4, 6)
    np.testing.assert_allclose(loaded, pixels / 255, atol=1e-7)


def test_load_image_keeps_the_full_range_of_a_16_bit_png(tmp_path):
    pixels = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    np.testing.assert_allclose(load_image(tmp_path / "deep.png"), pixels / 65535, atol=1e-7)


def test_load_image_reads_rgb_as_three_channels(tmp_path):
    pixels = np.zeros((3, 5, 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = 255, 51
    Image.fromarray(pixels).save(tmp_path / "colour.png")
    loaded = load_image(tmp_path / "colour.png")
    assert loaded.shape == (3, 5, 3)
    np.testing.assert_allclose(loaded[0, 0], [1.0, 0.0, 0.2], atol=1e-7)


def test_load_image_composites_transparent_rgba_pixels_onto_white(tmp_path):
    pixels = np.zeros((1, 3, 4), np.uint8)                    # black, with alpha 0, 255 and 51
    pixels[0, :, 3] = [0, 255, 51]
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    loaded = load_image(tmp_path / "alpha.png")
    np.testing.assert_allclose(loaded[0, :, 0], [1.0, 0.0, 0.8], atol=1e-6)


def test_load_image_composites_gray_with_alpha_onto_white(tmp_path):
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (0, 255)])
    image.save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png"), [[1.0, 0.0]], atol=1e-7)


def test_load_image_reads_palette_and_bilevel_images(tmp_path):
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.putdata([0, 1, 1, 0])
    palette.save(tmp_path / "palette.png")
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 255])
    bilevel.save(tmp_path / "bilevel.bmp")
    np.testing.assert_allclose(load_image(tmp_path / "palette.png")[..., 0], [[0, 1], [1, 0]])
    np.testing.assert_allclose(load_image(tmp_path / "bilevel.bmp"), [[0.0, 1.0]])


def test_load_image_reads_jpeg_and_cmyk(tmp_path):
    Image.new("RGB", (8, 8), (200, 100, 50)).save(tmp_path / "photo.jpg")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "print.jpg")
    np.testing.assert_allclose(load_image(tmp_path / "photo.jpg")[4, 4], [200 / 255, 100 / 255, 50 / 255],
                               atol=0.02)
    np.testing.assert_allclose(load_image(tmp_path / "print.jpg"), 1.0, atol=0.02)   # no ink: white


def test_load_image_names_the_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nothing.png: no such image file"):
        load_image(tmp_path / "nothing.png")


def test_load_image_names_a_file_that_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ImageError, match="notes.png: cannot read this as an image"):
        load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("pixels", [2 * Image.MAX_IMAGE_PIXELS + 1, Image.MAX_IMAGE_PIXELS + 1])
def test_load_image_refuses_a_decompression_bomb_before_allocating_its_pixels(pixels, tmp_path):
    """Above twice MAX_IMAGE_PIXELS Pillow raises; above MAX_IMAGE_PIXELS it only warns."""
    (tmp_path / "bomb.png").write_bytes(png_declaring(pixels, 1))
    with pytest.raises(ImageError, match=rf"bomb.png: the image is too large to read safely "
                                         rf"\(Image size \({pixels} pixels\) exceeds limit"):
        load_image(tmp_path / "bomb.png")


# ---------------------------------------------------------------------------- decode_image

def test_decode_image_reads_bytes_as_load_image_reads_the_file(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 4), np.uint8), "RGBA")
    image.save(tmp_path / "photo.png")
    decoded = decode_image((tmp_path / "photo.png").read_bytes(), max_size=25)
    np.testing.assert_array_equal(decoded, load_image(tmp_path / "photo.png", max_size=25))
    assert decoded.shape == (15, 25, 3)


def test_decode_image_refuses_more_pixels_than_max_pixels_from_the_header():
    with pytest.raises(ImageTooLargeError, match=r"upload: the image has 3000x2000 pixels, more than the "
                                                  r"5,999,999 accepted"):
        decode_image(png_declaring(3000, 2000), name="upload", max_pixels=5_999_999)
    small = io.BytesIO()
    Image.new("L", (2, 3)).save(small, "PNG")
    assert decode_image(small.getvalue(), max_pixels=6).shape == (3, 2)


def test_decode_image_refuses_a_decompression_bomb_as_too_large():
    with pytest.raises(ImageTooLargeError, match="too large to read safely"):
        decode_image(png_declaring(Image.MAX_IMAGE_PIXELS + 1, 1))


def test_decode_image_refuses_formats_not_listed_and_names_those_that_are():
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "BMP")
    with pytest.raises(ImageError, match=r"upload: cannot read this as an image \(not a PNG, JPEG file\)"):
        decode_image(buffer.getvalue(), name="upload", formats=["PNG", "JPEG"])
    assert decode_image(buffer.getvalue(), formats=["BMP"]).shape == (4, 4)


def test_decode_image_names_bytes_that_are_no_image():
    with pytest.raises(ImageError, match=r"^upload: cannot read this as an image \(not an image file\)$"):
        decode_image(b"plain text", name="upload")


def test_load_image_keeps_quiet_about_damaged_metadata_that_pillow_skips(tmp_path):
    """Pillow warns, naming no file, about a TIFF tag holding more values than it should."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    directory = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[directory:directory + 2])[0]
    for entry in range(directory + 2, directory + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry:entry + 2])[0] == 257:         # ImageLength
            data[entry + 4:entry + 8] = struct.pack("<I", 2)             # two values, not one
    (tmp_path / "odd-tag.tif").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "odd-tag.tif")
    assert image.dtype == np.float32 and image.ndim == 2


def test_load_image_with_max_size_shrinks_the_longer_side_by_averaging(tmp_path):
    pixels = np.zeros((40, 100), np.uint8)
    pixels[:, 1::2] = 200                                    # columns alternately 0 and 200
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    loaded = load_image(tmp_path / "wide.png", max_size=50)
    assert loaded.shape == (20, 50)
    np.testing.assert_allclose(loaded, 100 / 255, atol=1 / 255)   # each 2x2 box averaged
    assert load_image(tmp_path / "wide.png", max_size=100).shape == (40, 100)


def test_load_image_with_max_size_keeps_at_least_one_pixel_of_a_thin_image(tmp_path):
    Image.new("RGB", (5000, 2), (255, 0, 0)).save(tmp_path / "thin.png")
    loaded = load_image(tmp_path / "thin.png", max_size=100)
    assert loaded.shape == (1, 100, 3)
    np.testing.assert_allclose(loaded[0, 0], [1, 0, 0], atol=1e-6)


def test_to_grayscale_uses_the_itu_r_601_luma_weights():
    np.testing.assert_allclose(to_grayscale(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])),
                               [[0.299, 0.587]], atol=1e-6)


def test_resize_image_gives_the_model_input_shape():
    colour = np.random.default_rng(0).random((50, 40, 3)).astype(np.float32)
    assert resize_image(colour, 3, 32, 32).shape == (3, 32, 32)
    assert resize_image(colour, 1, 28, 28).shape == (1, 28, 28)
    gray = np.full((10, 10), 0.5, np.float32)
    np.testing.assert_allclose(resize_image(gray, 3, 4, 4), 0.5, atol=1e-6)


# ---------------------------------------------------------------------------- prepare_digit

def test_prepare_digit_gives_a_28x28_float32_image_in_0_1():
    digit = prepare_digit(_pixels(draw_digit(3)))
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() == 0.0 and digit.max() == pytest.approx(1.0)


def test_prepare_digit_makes_dark_ink_on_light_paper_white_on_black():
    digit = prepare_digit(_pixels(draw_digit(7, ink=20, paper=235)))
    assert digit[0].max() == 0 and digit[:, 0].max() == 0       # black border
    assert (digit > 0.5).sum() > 30                             # bright strokes


def test_prepare_digit_gives_the_same_result_for_dark_on_light_and_light_on_dark():
    dark_on_light = prepare_digit(_pixels(draw_digit(5, ink=0, paper=255)))
    light_on_dark = prepare_digit(_pixels(draw_digit(5, ink=255, paper=0)))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-5)


def test_prepare_digit_puts_the_centre_of_mass_at_pixel_14_14(ndimage):
    for digit in (1, 4, 7):
        prepared = prepare_digit(_pixels(draw_digit(digit, canvas=(500, 400), origin=(320, 10))))
        row, col = ndimage.center_of_mass(prepared)
        assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_prepare_digit_fits_the_larger_side_of_the_ink_to_20_pixels_keeping_the_aspect():
    bar = np.ones((300, 300), np.float32)
    bar[50:250, 130:170] = 0                                    # a 200x40 black bar, 5:1
    prepared = prepare_digit(bar, thicken=False)
    rows, cols = np.nonzero(prepared > 0.5)
    assert rows.max() - rows.min() + 1 == 20
    assert cols.max() - cols.min() + 1 == 4


def test_prepare_digit_does_not_depend_on_where_the_digit_is_or_the_canvas_size():
    small = prepare_digit(_pixels(draw_digit(2, canvas=(200, 200), height=120, origin=(40, 40))))
    large = prepare_digit(_pixels(draw_digit(2, canvas=(900, 700), height=120, origin=(700, 500))))
    np.testing.assert_allclose(small, large, atol=1e-5)


def test_prepare_digit_ignores_a_small_speck_far_from_the_digit():
    clean = _pixels(draw_digit(4, canvas=(400, 400), origin=(100, 100)))
    specked = clean.copy()
    specked[380:382, 380:382] = 0.1
    np.testing.assert_allclose(prepare_digit(specked), prepare_digit(clean), atol=0.05)


def test_prepare_digit_ignores_faint_paper_texture():
    clean = _pixels(draw_digit(8))
    noisy = np.clip(clean - np.random.default_rng(0).uniform(0, 0.12, clean.shape), 0, 1)
    np.testing.assert_allclose(prepare_digit(noisy), prepare_digit(clean), atol=0.1)


def test_prepare_digit_thickens_thin_pen_strokes_to_mnist_width():
    thin = prepare_digit(_pixels(draw_digit(0, canvas=(600, 600), height=450, origin=(150, 75),
                                            stroke=4)))
    mask = np.pad(thin > 0.5, 1)
    perimeter = (mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
    assert 1.5 <= 2 * mask.sum() / perimeter <= 3.0            # MNIST's median stroke is 2 px


def test_prepare_digit_rejects_a_blank_image():
    with pytest.raises(ImageError, match="no digit found"):
        prepare_digit(np.full((50, 50), 0.9, np.float32))


def test_prepare_digit_reproduces_real_mnist_digits(mnist_dir):
    from npconvnet.datasets import load_mnist
    _, (x_test, _) = load_mnist(mnist_dir)
    images = x_test[:200].astype(np.float32) / 255
    prepared = np.stack([prepare_digit(image) for image in images])
    assert np.abs(prepared - images).mean() < 0.04
