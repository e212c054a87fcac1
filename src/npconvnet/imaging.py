"""Image files as arrays, and preparing a photo of a handwritten digit the way MNIST was made.

``load_image(path)`` reads PNG, JPEG, BMP (and whatever else Pillow reads) into float32 values
in [0, 1]: ``(H, W)`` for grayscale files, ``(H, W, 3)`` for colour ones. Transparent pixels
are composited onto white, 16-bit files keep their full range, and the EXIF orientation of
phone photos is applied. ``decode_image(data)`` reads the bytes of such a file (an upload) the
same way, with limits on the pixels and the formats.

``prepare_digit(image)`` turns a photo or scan of one digit into a ``(28, 28)`` MNIST-style
image. MNIST's digits (LeCun et al.) are white ink on black, size-normalised to fit a 20x20 box
keeping their aspect ratio (with anti-aliasing), and centred by their centre of mass in the
28x28 field. The steps, each on the whole image with NumPy:

1. grayscale (ITU-R 601 luma), then inverted when the background is light, i.e. when the
   median of the border pixels is above 0.5, so that ink is bright;
2. levels: the background level (that border median) becomes 0 and the brightest ink 1;
   values below ``noise_floor`` (paper texture, JPEG noise, shadows) are set to 0;
3. cropped to the ink, ignoring the outermost ``0.5%`` of the ink mass on each side so that a
   stray speck does not stretch the box;
4. resized so that the larger side is 80 pixels (four times the final 20) and, when the pen
   strokes would end up thinner than MNIST's (their width is estimated on the cropped ink as
   ``2 * area / perimeter``), thickened there to MNIST's typical 2-pixel stroke by a mean over
   a disk followed by a contrast stretch (the larger side then being 80 with the thickened
   strokes);
5. resized so that the larger side is 20 pixels (area averaging, the anti-aliasing), then
   scaled so that the brightest pixel is 1;
6. placed in the 28x28 field so that its centre of mass lands on pixel (14, 14), to the
   nearest pixel (MNIST's own centres of mass lie within half a pixel of (14, 14)).
"""

import io
import warnings
from pathlib import Path

import numpy as np

__all__ = ["ImageError", "ImageTooLargeError", "load_image", "decode_image", "to_grayscale",
           "prepare_digit", "resize_image", "MNIST_SIZE", "MNIST_BOX"]

MNIST_SIZE = 28
MNIST_BOX = 20
_WORK_SCALE = 4               # steps 4-5 work at 4x the final size, then average 4x4 blocks
_MNIST_STROKE = 2.0           # median 2 * area / perimeter of MNIST ink (> 0.5) at 28x28
_THIN_STROKE = 1.5            # strokes thinner than this (at 28x28) are thickened
_LUMA = np.array([0.299, 0.587, 0.114])


class ImageError(ValueError):
    """An image file cannot be read, or holds nothing that can be prepared."""


class ImageTooLargeError(ImageError):
    """An image file declares more pixels than may be decoded."""


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as err:
        raise ImportError("reading image files needs Pillow: pip install pillow") from err
    return Image, ImageOps


def load_image(path, max_size=None):
    """Read an image file into float32 values in [0, 1].

    Returns ``(H, W)`` for grayscale files (modes 1, L, LA, I;16, I, F) and ``(H, W, 3)`` RGB
    for the others (RGB, RGBA, P, CMYK, YCbCr, ...). Transparency (LA, RGBA, PA, P with a
    transparent colour) is composited onto white by the alpha channel, as a viewer shows it.
    16-bit images are divided by 65535, 32-bit integer ones by 65535 when their values fit in
    16 bits and by their maximum otherwise; float images are used as they are when they lie in
    [0, 1], else divided by their maximum. Raises ``ImageError`` naming the file when it is
    missing, not an image, or larger than Pillow's ``Image.MAX_IMAGE_PIXELS``.

    ``max_size``: an image whose longer side is larger is shrunk to that many pixels (box
    filter, same aspect ratio) before its pixels become floats, so that a 24-megapixel photo
    (or a tiny file declaring one) costs no more than a small image; None keeps every pixel.
    """
    path = Path(path)
    _pillow()                       # a missing Pillow is reported before a missing file
    if not path.is_file():
        raise ImageError(f"{path}: no such image file" if not path.exists()
                         else f"{path}: not a file")
    return _decode(path, path, max_size)


def decode_image(data, name="image", max_size=None, max_pixels=None, formats=None):
    """The bytes of an image file (``data``: bytes) as ``load_image`` reads a file.

    For images that arrive over a network: ``max_pixels`` refuses an image of more pixels
    (width x height, read from its header before any pixel is decoded) with
    ``ImageTooLargeError``, as it does one over Pillow's ``Image.MAX_IMAGE_PIXELS``;
    ``formats``, a list of Pillow format names such as ``["PNG", "JPEG"]``, refuses the other
    formats (None: every format Pillow reads). ``name`` says what the data is in the errors
    (``ImageError``).
    """
    return _decode(io.BytesIO(data), name, max_size, max_pixels, formats)


def _decode(source, name, max_size, max_pixels=None, formats=None):
    """Open ``source`` (a path or a binary file) with Pillow and return ``_to_float`` of it,
    shrunk to ``max_size``; errors name ``name``."""
    Image, ImageOps = _pillow()
    try:
        with warnings.catch_warnings():
            # Pillow refuses a header declaring more than 2 * Image.MAX_IMAGE_PIXELS pixels
            # (DecompressionBombError) but only warns above MAX_IMAGE_PIXELS: refuse those too,
            # before their pixels are allocated. Its warnings about damaged metadata it skips
            # (EXIF, TIFF tags) name no file and change nothing here: a file whose pixels cannot
            # be read raises ImageError.
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as image:
                if max_pixels is not None and image.width * image.height > max_pixels:
                    raise ImageTooLargeError(f"{name}: the image has {image.width}x{image.height} pixels, "
                                     f"more than the {max_pixels:,} accepted")
                image = ImageOps.exif_transpose(image)
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"{name}: the image is too large to read safely ({err})") from None
    except ImageError:
        raise
    except Image.UnidentifiedImageError:    # its message names the source: a path, or a buffer
        kind = "an image file" if formats is None else f"a {', '.join(formats)} file"
        raise ImageError(f"{name}: cannot read this as an image (not {kind})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name}: cannot read this as an image ({err})") from None
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{name}: the image is empty ({image.width}x{image.height} pixels)")
    if max_size is not None and max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BOX)
    return _to_float(image)


def _to_float(image):
    """A Pillow image as float32 ``(H, W)`` or ``(H, W, 3)`` in [0, 1] (see ``load_image``)."""
    mode = image.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 65535
    if mode == "I":
        values = np.asarray(image, dtype=np.float64)
        top = 65535 if values.min() >= 0 and values.max() <= 65535 else max(values.max(), 1)
        return np.clip(values / top, 0, 1).astype(np.float32)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        top = values.max()
        return np.clip(values if top <= 1 else values / top, 0, 1).astype(np.float32)
    if mode in ("L", "LA", "RGB", "RGBA", "La", "RGBa"):
        pixels = np.asarray(image, dtype=np.float32) / 255
    else:                                   # CMYK, YCbCr, LAB, HSV, ...
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    if mode in ("LA", "RGBA", "La", "RGBa"):
        colour, alpha = pixels[..., :-1], pixels[..., -1:]
        if mode in ("La", "RGBa"):           # premultiplied alpha: colour already scaled
            pixels = colour + (1 - alpha)
        else:
            pixels = colour * alpha + (1 - alpha)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return np.ascontiguousarray(pixels, dtype=np.float32)


def to_grayscale(image):
    """``(H, W)`` or ``(H, W, 3)`` values -> ``(H, W)``: ``0.299 R + 0.587 G + 0.114 B`` (Pillow's luma)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return (image @ _LUMA.astype(np.float32)).astype(np.float32)
    raise ImageError(f"expected an image of shape (H, W) or (H, W, 3), got shape {image.shape}")


def _resize(values, height, width, method):
    """Resize a float ``(h, w)`` array with Pillow's ``method`` ("lanczos", "box", "bilinear")."""
    Image, _ = _pillow()
    filters = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
               "bilinear": Image.Resampling.BILINEAR}
    resized = Image.fromarray(np.asarray(values, dtype=np.float32)).resize(
        (width, height), filters[method])
    return np.asarray(resized, dtype=np.float32)


def resize_image(image, channels, height, width):
    """An image ``(H, W)`` or ``(H, W, 3)`` as a model input ``(channels, height, width)`` float32.

    Colour becomes grayscale for 1-channel models and grayscale is repeated for 3-channel
    ones; the pixels are resized with bilinear interpolation, as ``load_image_folder`` does.
    No inversion or cropping: this is the preparation for models not trained on digits.
    """
    image = np.asarray(image, dtype=np.float32)
    if channels == 1:
        planes = [to_grayscale(image)]
    elif channels == 3:
        planes = [image[..., c] for c in range(3)] if image.ndim == 3 else [image] * 3
    else:
        raise ImageError(f"cannot make an image with {channels} channels (expected 1 or 3)")
    return np.stack([np.clip(_resize(p, height, width, "bilinear"), 0, 1) for p in planes])


def _border(values):
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def _ink_span(profile, trim):
    """``(start, stop)`` of the indices holding all but ``trim`` of the mass on each side."""
    cumulative = np.cumsum(profile) / profile.sum()
    return int(np.argmax(cumulative > trim)), int(np.argmax(cumulative >= 1 - trim)) + 1


def _stroke_width(ink):
    """Mean stroke width of the ink (> 0.5) in pixels: ``2 * area / perimeter``.

    A stroke of length l and width w has area l * w and a perimeter close to 2 l.
    The perimeter counts the pixel edges between ink and background.
    """
    mask = np.pad(ink > 0.5, 1)
    area = mask.sum()
    perimeter = (mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
    return 2 * area / perimeter if perimeter else 0.0


def _thicken(values, radius):
    """Widen thin strokes to about ``2 * radius`` pixels with an even brightness.

    The mean over a disk of ``radius`` pixels spreads each stroke's ink over the disk's width,
    whatever the stroke's position relative to the pixel grid (a maximum would keep the uneven
    brightness of a stroke thinner than a pixel); the result is then scaled so that most of each
    stroke's core is saturated at 1, as MNIST's strokes are.
    """
    padded = np.pad(values, radius)
    height, width = values.shape
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius]
    spread = np.zeros_like(values)
    for dy, dx in offsets:
        spread += padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width]
    spread /= len(offsets)
    core = np.percentile(spread[spread > 0.1 * spread.max()], 75)
    return np.clip(spread / (0.6 * core), 0, 1)


def prepare_digit(image, noise_floor=0.25, thicken=True):
    """A photo or scan of one handwritten digit as a ``(28, 28)`` MNIST-style float32 image.

    ``image``: ``(H, W)`` or ``(H, W, 3)`` values in [0, 1] (``load_image``'s output), dark ink on
    light paper or light on dark, any size. Returns white ink on black in [0, 1], the digit
    fitting a 20x20 box and centred by its centre of mass (the steps are in the module
    docstring). ``noise_floor``: ink fainter than this fraction of the darkest stroke is
    dropped; ``thicken=False`` keeps pen strokes as thin as they are. Raises ``ImageError``
    when the image is uniform (no ink can be told from the background).
    """
    gray = to_grayscale(image).astype(np.float64)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(f"expected a non-empty 2-D image, got shape {gray.shape}")
    if np.median(_border(gray)) > 0.5:
        gray = 1 - gray
    background = np.median(_border(gray))
    contrast = gray.max() - background
    if contrast < 0.05:
        raise ImageError("no digit found: the image is (nearly) uniform, nothing stands out "
                         "from the background")
    ink = np.clip((gray - background) / contrast, 0, 1)
    ink = np.clip((ink - noise_floor) / (1 - noise_floor), 0, 1)

    top, bottom = _ink_span(ink.sum(axis=1), trim=0.005)
    left, right = _ink_span(ink.sum(axis=0), trim=0.005)
    ink = ink[top:bottom, left:right]

    height, width = ink.shape
    # Thickening widens the digit by the added stroke on each side: leave room for it in the box.
    stroke = _stroke_width(ink) * MNIST_BOX / max(height, width)   # at 28x28, measured unscaled
    margin = round((_MNIST_STROKE - stroke) * _WORK_SCALE / 2) if thicken and stroke < _THIN_STROKE else 0
    scale = (MNIST_BOX * _WORK_SCALE - 2 * margin) / max(height, width)
    work_h, work_w = max(1, round(height * scale)), max(1, round(width * scale))
    work = np.clip(_resize(ink, work_h, work_w, "lanczos"), 0, 1)
    if margin:
        work = _thicken(np.pad(work, margin), margin)
    out_h = max(1, round(work.shape[0] / _WORK_SCALE))
    out_w = max(1, round(work.shape[1] / _WORK_SCALE))
    digit = _resize(work, out_h, out_w, "box").astype(np.float64)
    digit /= digit.max()

    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    centre_row, centre_col = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    top = round(MNIST_SIZE / 2 - centre_row)
    left = round(MNIST_SIZE / 2 - centre_col)
    # A margin of MNIST_SIZE around the field lets the digit be pasted whole, then cut.
    field = np.zeros((3 * MNIST_SIZE, 3 * MNIST_SIZE))
    field[MNIST_SIZE + top:MNIST_SIZE + top + out_h,
          MNIST_SIZE + left:MNIST_SIZE + left + out_w] = digit
    return field[MNIST_SIZE:2 * MNIST_SIZE, MNIST_SIZE:2 * MNIST_SIZE].astype(np.float32)
