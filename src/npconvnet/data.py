"""Preprocessing, splitting, mini-batching and on-the-fly image augmentation.

Images are NCHW arrays: (N, C, H, W) = (samples, channels, height, width).
Typical use::

    x = to_nchw(scale(x_uint8))                  # (N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]
    y = one_hot(labels, num_classes=10)          # (N,) int -> (N, 10) float32
    (x_train, y_train), (x_val, y_val) = train_val_split(x, y, val_fraction=0.1, seed=0)
    x_train, y_train = oversample(x_train, y_train, seed=0)     # every class as large as the largest
    rng = np.random.default_rng(0)
    augment = default_augmenter()
    for x_batch, y_batch in batches(x_train, y_train, batch_size=128, seed=rng):
        x_batch = augment(x_batch, rng=rng)

Augmentation is vectorised over the whole batch: every image gets its own 3x3
affine matrix, the source coordinates of all output pixels of all images are
computed at once by broadcasting, and the four neighbours of every source point
are gathered with one fancy index each for bilinear interpolation.
"""

import numbers

import numpy as np

from . import rng as global_rng

_CHANNEL_COUNTS = (1, 3, 4)


def _generator(seed):
    """The generator for an int seed or a Generator; None gives the global generator.

    Drawing from the global generator makes unseeded calls repeatable after
    npconvnet.manual_seed.
    """
    return global_rng.default_rng() if seed is None else np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# Layout and value preprocessing
# ---------------------------------------------------------------------------

def to_nchw(x, channels_last=None, dtype=np.float32):
    """Return images as a ``dtype`` (float32 by default) (N, C, H, W) array.

    Accepted layouts:
      * (N, H, W): grayscale, a channel axis of size 1 is added;
      * (N, H, W, C) channels-last, transposed to (N, C, H, W);
      * (N, C, H, W) already channels-first, returned in ``dtype``.

    channels_last: True / False says which 4-D layout ``x`` has. None infers it:
    a 4-D array is channels-last when its last axis has 1, 3 or 4 entries and
    its second axis does not, channels-first otherwise; a shape where both
    axes could hold the channels, such as (N, 3, 5, 3), raises ValueError.

    Integer images should be scaled first (``to_nchw(scale(x))``): after the
    conversion to floats ``scale`` leaves the values as they are.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        if channels_last:
            raise ValueError(
                f"to_nchw: a 3-D array is read as (N, H, W) with no channel axis, "
                f"but channels_last=True was given for shape {x.shape}; pass a 4-D "
                f"(N, H, W, C) array for channels-last images")
        return np.ascontiguousarray(x[:, None, :, :], dtype=dtype)
    if x.ndim != 4:
        raise ValueError(
            f"to_nchw: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
            f"got an array of shape {x.shape} ({x.ndim}-D)")
    if channels_last is None:
        last_is_channel = x.shape[3] in _CHANNEL_COUNTS
        second_is_channel = x.shape[1] in _CHANNEL_COUNTS
        if last_is_channel and second_is_channel:
            raise ValueError(
                f"to_nchw: cannot tell whether shape {x.shape} is (N, C, H, W) or "
                f"(N, H, W, C); pass channels_last=True or channels_last=False")
        channels_last = last_is_channel
    if channels_last:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=dtype)


def scale(x, dtype=np.float32):
    """Scale 8-bit pixel values to floats in [0, 1]; float arrays are returned unchanged.

    x: any shape. Integer arrays must hold values in 0..255 and are divided by
    255 in ``dtype`` (float32 by default; a float64 model takes its pixels in float64 straight
    away, never rounded through float32); floating-point arrays are assumed to be scaled already.
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(
            f"scale: expected integer pixel values (e.g. uint8) or floats, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(
            f"scale: integer pixel values must lie in 0..255, got values from "
            f"{x.min()} to {x.max()} (dtype {x.dtype})")
    dtype = np.dtype(dtype)
    return x.astype(dtype) / dtype.type(255)


#: The values of a model's ``preprocessing``: None (pixels in [0, 1]) or "center" ([-0.5, 0.5]).
PREPROCESSING = (None, "center")


def check_preprocessing(value, where):
    """``value`` if it is one of :data:`PREPROCESSING`, else a ValueError naming ``where``."""
    if not (value is None or (isinstance(value, str) and value in PREPROCESSING)):
        raise ValueError(f"{where}: preprocessing must be None (pixels / 255, in [0, 1]) or 'center' "
                         f"(pixels / 255 - 0.5, in [-0.5, 0.5]), got {value!r:.100}")
    return value


def scaled_pixels(x, preprocessing, dtype=np.float32):
    """Pixels as model input, in ``dtype``: uint8 ``x`` / 255 (floats are taken as scaled to
    [0, 1] already), minus 0.5 when ``preprocessing`` is "center". Any shape; the layout is kept."""
    scaled = scale(x, dtype).astype(dtype, copy=False)
    return scaled - scaled.dtype.type(0.5) if preprocessing == "center" else scaled


def standardize(x, mean=None, std=None):
    """Standardise each channel to zero mean and unit standard deviation.

    x: (N, C, H, W). Returns (x_std, mean, std) with
    x_std[:, c] = (x[:, c] - mean[c]) / std[c], where mean and std have shape
    (C,) and are computed over the N, H and W axes when not given. Pass the
    returned mean and std back in to apply the training statistics to test data.
    A constant channel (std 0) is given std 1 so it is only centred.
    x_std keeps a float dtype of x (integers become float32).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"standardize: expected images of shape (N, C, H, W), got shape {x.shape}; "
            f"use to_nchw first")
    if (mean is None) != (std is None):
        raise ValueError(
            "standardize: pass both mean and std (from an earlier call) or neither")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    channels = x.shape[1]
    if mean is None:
        if x.shape[0] == 0:
            raise ValueError("standardize: cannot compute statistics of an empty batch")
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        std = x.std(axis=(0, 2, 3), dtype=np.float64)
        std = np.where(std == 0, 1.0, std)
    for name, value in (("mean", mean), ("std", std)):
        if np.shape(value) not in ((), (channels,)):
            raise ValueError(
                f"standardize: {name} must be a number or have shape ({channels},) (one value "
                f"per channel) for x of shape {x.shape}, got shape {np.shape(value)}")
    mean = np.broadcast_to(np.asarray(mean, dtype=dtype), (channels,))
    std = np.broadcast_to(np.asarray(std, dtype=dtype), (channels,))
    if np.any(std <= 0):
        raise ValueError(f"standardize: std must be positive, got {std}")
    x_std = (x.astype(dtype, copy=False) - mean[:, None, None]) / std[:, None, None]
    return x_std, mean, std


def one_hot(labels, num_classes=None):
    """Encode integer class labels as float32 one-hot rows.

    labels: (N,) integers in 0..num_classes-1. num_classes defaults to
    labels.max() + 1. Returns (N, num_classes) with out[i, labels[i]] = 1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"one_hot: expected labels of shape (N,), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"one_hot: labels must be integers, got dtype {labels.dtype} "
            f"(use labels.astype(int) if they are whole numbers)")
    if num_classes is None:
        if labels.size == 0:
            raise ValueError(
                "one_hot: cannot infer num_classes from empty labels; pass num_classes")
        num_classes = int(labels.max()) + 1
    if not isinstance(num_classes, numbers.Integral) or num_classes <= 0:
        raise ValueError(f"one_hot: num_classes must be a positive integer, got {num_classes!r}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"one_hot: labels must be non-negative, got {labels.min()}")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"one_hot: label {labels.max()} is out of range for num_classes={num_classes} "
            f"(labels must be in 0..{num_classes - 1})")
    encoded = np.zeros((labels.size, num_classes), dtype=np.float32)
    encoded[np.arange(labels.size), labels] = 1.0
    return encoded


# ---------------------------------------------------------------------------
# Splitting and mini-batches
# ---------------------------------------------------------------------------

def _check_same_length(function, x, y):
    if len(x) != len(y):
        raise ValueError(
            f"{function}: x and y must have the same number of samples, "
            f"got len(x)={len(x)} and len(y)={len(y)}")


def train_val_split(x, y, val_fraction=0.1, seed=0, stratify=False):
    """Split samples at random into a training and a validation set.

    x: (N, ...), y: (N, ...). Returns ((x_train, y_train), (x_val, y_val)) with
    round(N * val_fraction) validation samples; both parts keep the original
    order of the samples. seed (int or np.random.Generator) makes the split
    deterministic; None draws from the global generator (npconvnet.manual_seed).
    stratify=True keeps the class proportions: about round(count_k * val_fraction)
    samples of each class k go to validation, the class being y itself for (N,)
    labels and y.argmax(1) for one-hot (N, K).
    """
    x, y = np.asarray(x), np.asarray(y)
    _check_same_length("train_val_split", x, y)
    if not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise ValueError(
            f"train_val_split: val_fraction must be a number strictly between 0 and 1, "
            f"got {val_fraction!r}")
    n = len(x)
    order = _generator(seed).permutation(n)
    if stratify:
        if y.ndim not in (1, 2):
            raise ValueError(
                f"train_val_split: stratify needs labels of shape (N,) or one-hot (N, K), "
                f"got y of shape {y.shape}")
        classes = y if y.ndim == 1 else y.argmax(axis=1)
        # Within each class (in shuffled order) the first round(count * fraction) go to validation.
        by_class = order[np.argsort(classes[order], kind="stable")]
        _, starts, inverse, counts = np.unique(
            classes[by_class], return_index=True, return_inverse=True, return_counts=True)
        rank_in_class = np.arange(n) - starts[inverse]
        quota = np.round(counts * val_fraction).astype(np.intp)
        is_val = rank_in_class < quota[inverse]
        val_index, train_index = by_class[is_val], by_class[~is_val]
    else:
        n_val = int(round(n * val_fraction))
        val_index, train_index = order[:n_val], order[n_val:]
    if len(val_index) == 0 or len(train_index) == 0:
        raise ValueError(
            f"train_val_split: val_fraction={val_fraction} of {n} samples leaves "
            f"{len(train_index)} for training and {len(val_index)} for validation; "
            f"both need at least one")
    train_index, val_index = np.sort(train_index), np.sort(val_index)
    return (x[train_index], y[train_index]), (x[val_index], y[val_index])


def _class_indices(function, x, y):
    """The sample indices of each class present in ``y`` (labels (N,) or one-hot (N, K))."""
    x, y = np.asarray(x), np.asarray(y)
    _check_same_length(function, x, y)
    if y.ndim not in (1, 2) or (y.ndim == 1 and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{function}: y must be integer labels (N,) or one-hot rows (N, K), got "
                         f"{y.dtype} of shape {y.shape}")
    if len(y) == 0:
        raise ValueError(f"{function}: no samples to balance")
    classes = y if y.ndim == 1 else y.argmax(axis=1)
    return x, y, [np.flatnonzero(classes == label) for label in np.unique(classes)]


def oversample(x, y, seed=0):
    """Balance the classes by drawing extra samples of the smaller ones (with replacement)
    until every class present has as many as the largest; returns ``(x, y)`` in a seeded
    random order. Every original sample is kept. seed: int, np.random.Generator or None (the
    global generator)."""
    x, y, by_class = _class_indices("oversample", x, y)
    rng = _generator(seed)
    largest = max(len(index) for index in by_class)
    chosen = np.concatenate([np.concatenate([index, rng.choice(index, largest - len(index))])
                             for index in by_class])
    chosen = chosen[rng.permutation(len(chosen))]
    return x[chosen], y[chosen]


def undersample(x, y, seed=0):
    """Balance the classes by keeping a seeded random subset of each, as many as the smallest
    class present has (without replacement); returns ``(x, y)`` in a seeded random order."""
    x, y, by_class = _class_indices("undersample", x, y)
    rng = _generator(seed)
    smallest = min(len(index) for index in by_class)
    chosen = np.concatenate([rng.choice(index, smallest, replace=False) for index in by_class])
    chosen = chosen[rng.permutation(len(chosen))]
    return x[chosen], y[chosen]


def batches(x, y=None, batch_size=128, shuffle=True, seed=None, drop_last=False):
    """Iterate once over the data (one epoch) in mini-batches.

    x: (N, ...), y: (N, ...) or None. Yields (x_batch, y_batch) pairs, or
    x_batch alone when y is None, with batch_size samples each (the last batch
    may be smaller unless drop_last=True). With shuffle=True the samples are
    visited in the order of one random permutation; seed is an int (the same
    order on every call), an np.random.Generator (a new order per call, so
    pass the training generator to get a fresh but reproducible order each
    epoch) or None (the global generator, seeded by npconvnet.manual_seed).
    Each batch is read with one sorted index array, which keeps reads from
    np.memmap arrays sequential.
    """
    x = np.asarray(x)
    if y is not None:
        y = np.asarray(y)
        _check_same_length("batches", x, y)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size <= 0:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    n = len(x)
    order = _generator(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return _iterate_batches(x, y, order, batch_size, stop)


def _iterate_batches(x, y, order, batch_size, stop):
    for start in range(0, stop, batch_size):
        index = np.sort(order[start:start + batch_size])
        yield x[index] if y is None else (x[index], y[index])


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

def affine_matrices(height, width, angle=0.0, zoom=1.0, shift_x=0.0, shift_y=0.0, flip=False):
    """Build per-image 3x3 matrices mapping output pixels to source pixels.

    Coordinates are (row, col) pixel indices, as in scipy.ndimage. Each
    parameter is a scalar or an (N,) array; they broadcast to N matrices of
    shape (N, 3, 3) (N = 1 when all are scalars). The image transform they
    describe, about the centre c = ((height - 1) / 2, (width - 1) / 2), is:
    flip left-right (if flip), zoom by ``zoom`` (> 1 enlarges the content),
    rotate by ``angle`` degrees counter-clockwise as displayed with row 0 at
    the top (angle=90 matches np.rot90 on square images), then move the
    content shift_x pixels right and shift_y pixels down. The returned matrix
    is its inverse: source = L @ (output - c - shift) + c, with
    L = F @ R(-angle) / zoom, R(a) = [[cos a, -sin a], [sin a, cos a]] and
    F = diag(1, -1) when flipping.
    """
    angle, zoom, shift_x, shift_y, flip = np.broadcast_arrays(
        *np.atleast_1d(angle, zoom, shift_x, shift_y, flip))
    if angle.ndim != 1:
        raise ValueError(
            f"affine_matrices: parameters must be scalars or (N,) arrays, got shape {angle.shape}")
    if np.any(zoom <= 0):
        raise ValueError(f"affine_matrices: zoom must be positive, got {zoom}")
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta) / zoom, np.sin(theta) / zoom
    mirror = np.where(flip, -1.0, 1.0)
    linear = np.stack([np.stack([cos, sin], axis=-1),
                       np.stack([-sin * mirror, cos * mirror], axis=-1)], axis=-2)  # (N, 2, 2)
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    shifted_centre = centre + np.stack([shift_y, shift_x], axis=-1)                 # (N, 2)
    matrices = np.zeros((len(angle), 3, 3))
    matrices[:, :2, :2] = linear
    matrices[:, :2, 2] = centre - np.einsum("nij,nj->ni", linear, shifted_centre)
    matrices[:, 2, 2] = 1.0
    return matrices


def apply_affine(x, matrices, fill_value=0.0):
    """Resample every image with its own affine matrix using bilinear interpolation.

    x: (N, C, H, W) float. matrices: (N, 3, 3) or (N, 2, 3) mapping output
    pixel (row, col, 1) to the source point (row, col) it is sampled from, or
    a single (1, 3, 3) / (1, 2, 3) matrix for all images; all channels of an
    image use the same matrix. Pixels outside the source image count as
    fill_value, and source points between the border and the outside
    interpolate towards it. Equals, per image and channel,
    scipy.ndimage.affine_transform(image, matrix, order=1, mode="grid-constant",
    cval=fill_value). Returns an array of the shape and dtype of x.
    """
    x = np.asarray(x)
    matrices = np.asarray(matrices, dtype=np.float64)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"apply_affine: expected a float (N, C, H, W) batch, got shape {x.shape} "
            f"and dtype {x.dtype}")
    n, channels, height, width = x.shape
    if matrices.ndim != 3 or matrices.shape[0] not in (1, n) \
            or matrices.shape[1:] not in ((3, 3), (2, 3)):
        raise ValueError(
            f"apply_affine: expected matrices of shape ({n}, 3, 3) or ({n}, 2, 3) for a "
            f"batch of {n} images (or one matrix for all), got shape {matrices.shape}")
    if not np.all(np.isfinite(matrices)):
        raise ValueError("apply_affine: matrices contain NaN or infinite entries")
    matrices = np.broadcast_to(matrices, (n,) + matrices.shape[1:])
    # Coordinates in the batch's precision (at least float32): float64 would double the work.
    # Updates are in place where that reads naturally: allocating large temporaries costs
    # more than the arithmetic on them.
    dtype = np.result_type(x.dtype, np.float32)
    rows = np.arange(height, dtype=dtype)[:, None]
    cols = np.arange(width, dtype=dtype)[None, :]
    m = matrices[:, :2, :, None, None].astype(dtype)
    src_row = m[:, 0, 0] * rows + m[:, 0, 1] * cols + m[:, 0, 2]                      # (N, H, W)
    src_col = m[:, 1, 0] * rows + m[:, 1, 1] * cols + m[:, 1, 2]
    # Every image gets a one-pixel border of fill values. A source point more than a pixel
    # outside the image sees only fill values, so moving it onto that border changes nothing.
    np.clip(src_row, -1, height, out=src_row)
    np.clip(src_col, -1, width, out=src_col)
    row0 = np.minimum(np.floor(src_row), height - 1)
    col0 = np.minimum(np.floor(src_col), width - 1)
    row_weight = (src_row - row0).astype(x.dtype, copy=False).reshape(n, 1, height * width)
    col_weight = (src_col - col0).astype(x.dtype, copy=False).reshape(n, 1, height * width)

    padded_width = width + 2
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill_value).ravel()
    top_left = ((row0 + 1) * padded_width + col0 + 1).astype(np.intp)               # (N, H, W)
    image_start = np.arange(n * channels).reshape(n, channels, 1) * ((height + 2) * padded_width)
    index = top_left.reshape(n, 1, height * width) + image_start                      # (N, C, H*W)
    # The right, lower and lower-right neighbours are read through shifted views of the
    # padded pixels with the same index.
    top = padded[index]
    top += (padded[1:][index] - top) * col_weight
    bottom = padded[padded_width:][index]
    bottom += (padded[padded_width + 1:][index] - bottom) * col_weight
    top += (bottom - top) * row_weight
    return top.reshape(x.shape)


def _check_range(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"Augmenter: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Augmenter:
    """Random shifts, rotations, zooms and horizontal flips of whole image batches.

    Configured like Keras' ImageDataGenerator:
      width_shift_range, height_shift_range: the content moves by up to this
        much left/right and up/down, a fraction of the width/height when < 1,
        pixels when >= 1 (uniform over [-range, range]);
      rotation_range: up to this many degrees either way (counter-clockwise is
        positive);
      zoom_range: a float z means zoom factors in [1 - z, 1 + z], a pair
        (lo, hi) means [lo, hi]; factors > 1 enlarge the content. Unlike
        Keras, one factor is used for both axes so shapes keep their aspect;
      horizontal_flip: mirror left-right with probability 1/2;
      fill_value: the value of pixels that come from outside the image;
      seed: seeds the augmenter's own generator, used when no rng is passed;
        with seed=None the global generator (npconvnet.manual_seed) is used.

    ``augmenter(x_batch, rng=None)`` maps a float (N, C, H, W) batch to a new
    batch of the same shape and dtype, each image with its own parameters.
    """

    def __init__(self, width_shift_range=0.0, height_shift_range=0.0, rotation_range=0.0,
                 zoom_range=0.0, horizontal_flip=False, fill_value=0.0, seed=None):
        self.width_shift_range = _check_range("width_shift_range", width_shift_range)
        self.height_shift_range = _check_range("height_shift_range", height_shift_range)
        self.rotation_range = _check_range("rotation_range", rotation_range)
        if isinstance(zoom_range, numbers.Real):
            zoom_range = _check_range("zoom_range", zoom_range)
            if zoom_range >= 1:
                raise ValueError(
                    f"Augmenter: a float zoom_range z gives factors in [1 - z, 1 + z] and "
                    f"must be < 1 so that zoom stays > 0, got {zoom_range}")
            self.zoom_range = zoom_range
            self._zoom_bounds = (1 - zoom_range, 1 + zoom_range)
        else:
            if np.shape(zoom_range) != (2,):
                raise ValueError(
                    f"Augmenter: zoom_range must be a float or a (lo, hi) pair, got {zoom_range!r}")
            lo, hi = (_check_range("zoom_range", z) for z in zoom_range)
            if not 0 < lo <= hi:
                raise ValueError(
                    f"Augmenter: zoom_range (lo, hi) needs 0 < lo <= hi, got {zoom_range!r}")
            self.zoom_range = [lo, hi]
            self._zoom_bounds = (lo, hi)
        if not isinstance(horizontal_flip, (bool, np.bool_)):
            raise ValueError(
                f"Augmenter: horizontal_flip must be True or False, got {horizontal_flip!r}")
        self.horizontal_flip = bool(horizontal_flip)
        if isinstance(fill_value, bool) or not isinstance(fill_value, numbers.Real) \
                or not np.isfinite(fill_value):
            raise ValueError(f"Augmenter: fill_value must be a finite number, got {fill_value!r}")
        self.fill_value = float(fill_value)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Augmenter: seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._rng = None if seed is None else np.random.default_rng(self.seed)

    def get_config(self):
        """Return the constructor arguments as a plain JSON-serialisable dict."""
        return {"width_shift_range": self.width_shift_range,
                "height_shift_range": self.height_shift_range,
                "rotation_range": self.rotation_range,
                "zoom_range": self.zoom_range,
                "horizontal_flip": self.horizontal_flip,
                "fill_value": self.fill_value,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        """Build an augmenter from a dict made by get_config."""
        unknown = set(config) - set(cls().get_config())
        if unknown:
            raise ValueError(f"Augmenter.from_config: unknown keys {sorted(unknown)}")
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"Augmenter({arguments})"

    def sample_transforms(self, n, height, width, rng=None):
        """Draw random parameters for n images of size (height, width).

        Returns (n, 3, 3) matrices as made by affine_matrices, ready for
        apply_affine. rng defaults to the augmenter's own generator (or the
        global one when the augmenter has no seed).
        """
        if rng is None:
            rng = _generator(None) if self._rng is None else self._rng
        max_shift_x = self.width_shift_range * (width if self.width_shift_range < 1 else 1)
        max_shift_y = self.height_shift_range * (height if self.height_shift_range < 1 else 1)
        angle = rng.uniform(-self.rotation_range, self.rotation_range, n)
        zoom = rng.uniform(*self._zoom_bounds, n)
        shift_x = rng.uniform(-max_shift_x, max_shift_x, n)
        shift_y = rng.uniform(-max_shift_y, max_shift_y, n)
        flip = self.horizontal_flip & (rng.random(n) < 0.5)
        return affine_matrices(height, width, angle, zoom, shift_x, shift_y, flip)

    def __call__(self, x, rng=None):
        """Augment a float (N, C, H, W) batch; returns a new array of the same shape and dtype."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"Augmenter: expected a batch of shape (N, C, H, W), got shape {x.shape}; "
                f"use to_nchw first")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"Augmenter: expected a float batch, got dtype {x.dtype}; use scale first")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ValueError(
                f"Augmenter: rng must be a numpy.random.Generator or None, got {rng!r}")
        n, _, height, width = x.shape
        return apply_affine(x, self.sample_transforms(n, height, width, rng), self.fill_value)


def default_augmenter(seed=None):
    """A mild MNIST-friendly augmenter: rotation up to 10 degrees, shifts up to 10%, zoom 0.9-1.1.

    No flips, since mirrored digits are different symbols.
    """
    return Augmenter(width_shift_range=0.1, height_shift_range=0.1, rotation_range=10.0,
                     zoom_range=0.1, seed=seed)
