"""What the subcommands share: errors and exit statuses, model and settings files, datasets,
and the preparation of image files as model input."""

import json
import warnings
from pathlib import Path

import numpy as np

from .. import plots
from ..atomic import atomic_write
from ..data import scale, to_nchw
from ..datasets import MNIST_CLASSES, DatasetError, load_dataset
from ..imaging import ImageError, load_image, prepare_digit, resize_image
from ..models import load_model

EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MODEL_FILE = "model.npz"
SETTINGS_FILE = "run.json"
#: Image files are shrunk to this many pixels on their longer side as they are read: plenty to
#: find a digit in a photo, and a 24-megapixel photo then takes a fifth of the time and memory.
IMAGE_MAX_SIZE = 2048
#: The input of a digit model, which ``--prepare digit`` makes.
DIGIT_SHAPE = (1, 28, 28)


class CliError(Exception):
    """A problem with what the user asked for, reported as one line (exit status 2)."""

    exit_status = EXIT_USAGE


class TrainingDiverged(CliError):
    """The loss became NaN or infinite during npconvnet train (exit status 3)."""

    exit_status = EXIT_DIVERGED


def one_line(error):
    """An error's message on one line: the lines joined, indentation dropped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    message = lines[0]
    for line in lines[1:]:
        message += (" " if message.endswith(":") else "; ") + line
    return message


#: The errors that bad input raises: reported as one line, exit status 2 (a CliError's own).
EXPECTED_ERRORS = (CliError, DatasetError, ValueError, TypeError, OSError, ImportError)


# ---------------------------------------------------------------------------- files

def load_model_file(path):
    path = Path(path)
    if not path.exists():
        raise CliError(f"{path}: no such model file")
    if not path.is_file():
        raise CliError(f"{path}: not a file (expected a model file written by npconvnet train)")
    return load_model(path)


def write_json(path, value):
    atomic_write(path, lambda file: file.write((json.dumps(value, indent=2) + "\n").encode()))


def read_settings(folder):
    """The run.json in ``folder`` (a dict), or None when there is none."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"{path}: cannot read the run's settings ({error})") from None
    if not isinstance(settings, dict):
        raise CliError(f"{path}: expected a JSON object of settings")
    return settings


def model_label(path):
    """A model file's name for folders of pictures: a model.npz or checkpoint.npz is named after
    its folder (runs/convnet-mnist/model.npz: convnet-mnist), any other file after itself."""
    model = Path(path).resolve()
    return {"model": model.parent.name, "checkpoint": f"{model.parent.name}-checkpoint"}.get(
        model.stem, model.stem)


def write_pictures(out, figures, overwrite):
    """Write the figures ``{name: Figure}`` as PNG files into ``out``, atomically; without
    ``overwrite``, refuse (before writing any) when a file there would change, so that no
    earlier run's pictures are lost (the same model, image and options draw the same pixels)."""
    pictures = {name: plots.png_bytes(figure) for name, figure in figures.items()}
    if not overwrite:
        changed = [name for name, picture in pictures.items()
                   if (out / name).exists() and (out / name).read_bytes() != picture]
        if changed:
            raise CliError(f"{out} already holds {', '.join(changed)} of another model, image or "
                           "options: choose another --out, or add --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    for name, picture in pictures.items():
        atomic_write(out / name, lambda file, picture=picture: file.write(picture))


def skip_pictures(names, error):
    """Say in one line (a warning) that pictures were not drawn, as matplotlib is missing."""
    warnings.warn(f"skipped {', '.join(names)}: {error}", stacklevel=2)


# ---------------------------------------------------------------------------- models and data

def class_names(model, num_classes):
    names = model.class_names
    return list(names) if names is not None else [str(k) for k in range(num_classes)]


def predict(model, images, model_file, samples, batch_size=256):
    """``model.predict(images)``, refusing to report NaN or infinite probabilities as a result
    (weights that overflow). ``samples``: the inputs' names (image files), or what they are,
    e.g. "test images"; the error names them. NumPy's overflow warnings on the way are left
    out: the error says what they would."""
    with np.errstate(over="ignore", invalid="ignore"):
        probabilities = model.predict(images, batch_size=batch_size)
    bad = np.flatnonzero(~np.isfinite(probabilities.reshape(len(probabilities), -1)).all(axis=1))
    if not len(bad):
        return probabilities
    if isinstance(samples, str):
        inputs = f"{len(bad):,} of the {len(probabilities):,} {samples}"
    else:
        inputs = ", ".join(str(samples[index]) for index in bad[:3])
        inputs += f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise CliError(f"{model_file}: the model's outputs are NaN or infinite for {inputs}, so there is "
                   "no prediction to report: its weights do not work (did its training diverge?)")


def dataset(name, data_dir):
    return load_dataset(name, data_dir=data_dir)


def dataset_label(dataset):
    key = str(dataset).lower()
    if key in ("mnist", "fashion-mnist", "fashion_mnist"):
        return key.replace("_", "-")
    return Path(dataset).resolve().name or "dataset"


def sample_shape(images):
    """``(C, H, W)`` of one sample of channels-last uint8 images ``(N, H, W[, C])``."""
    return (1,) + images.shape[1:3] if images.ndim == 3 else (images.shape[3],) + images.shape[1:3]


def nchw(images):
    """uint8 ``(N, H, W[, C])`` -> float32 ``(N, C, H, W)`` in [0, 1]."""
    return to_nchw(scale(images), channels_last=images.ndim == 4)


# ---------------------------------------------------------------------------- image files

def is_digit_model(model):
    return (model.input_shape is not None and tuple(model.input_shape) == DIGIT_SHAPE
            and model.class_names in (None, MNIST_CLASSES))


def preparation(input_shape, how, digits):
    """What ``--prepare`` ``how`` does for a model taking ``input_shape``: "digit" (prepared as
    an MNIST digit: ``how`` "digit", or "auto" when ``digits``, a digit model) or "resize";
    a CliError when a digit cannot be made for that model."""
    if how == "digit" or (how == "auto" and digits):
        _, height, width = input_shape
        if (height, width) != DIGIT_SHAPE[1:]:
            raise CliError(f"--prepare digit makes 28x28 images, but the model takes "
                           f"{height}x{width}; use --prepare resize")
        return "digit"
    return "resize"


def prepare(image, input_shape, how, digits):
    """An image file's pixels as one input ``(C, H, W)`` of shape ``input_shape``, made as
    :func:`preparation` says."""
    if preparation(input_shape, how, digits) == "digit":
        return np.repeat(prepare_digit(image)[None], input_shape[0], axis=0)
    return resize_image(image, *input_shape)


def prepared_images(paths, input_shape, how, digits):
    """The image files as inputs ``(N, C, H, W)`` in [0, 1] (see :func:`prepare`)."""
    images = []
    for path in paths:
        image = load_image(path, max_size=IMAGE_MAX_SIZE)      # its errors name the file
        try:
            images.append(prepare(image, input_shape, how, digits))
        except ImageError as error:         # prepare_digit sees only pixels: say which file
            raise CliError(f"{path}: {error}") from None
    return np.stack(images).astype(np.float32)


def model_input_shape(model):
    """The ``(C, H, W)`` that images are prepared to for ``model``, from its file."""
    if model.input_shape is None:
        raise CliError("the model file does not record its input shape; cannot prepare images for it")
    return tuple(model.input_shape)


def model_images(model, paths, how):
    """The image files as the model's inputs ``(N, C, H, W)`` in [0, 1]."""
    return prepared_images(paths, model_input_shape(model), how, is_digit_model(model))
