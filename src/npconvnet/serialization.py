"""Architectures as JSON, and whole models as one ``.npz`` file.

An architecture is a tree of ``{"class": layer name, "config": constructor arguments}``.

A model file (``model.save(path)``, ``load_model(path)``) is an uncompressed NumPy ``.npz``
(zip) archive of plain numeric arrays::

    model.json             the header: UTF-8 JSON, stored as a uint8 array
    weights/<name>         every parameter and buffer, named as in state_dict() ("0.weight")
    optimizer/<i>.<name>   the optimizer's buffers, as in optimizer.state_dict() (optional)

The header::

    {"format": "npconvnet-model", "format_version": 1 or 2, "npconvnet_version": "0.1.0",
     "architecture": {"class": "Sequential", "config": {"layers": [...]}},
     "dtype": "float32", "input_shape": [1, 28, 28] or null, "class_names": [...] or null,
     "preprocessing": null or "center",        (how the model wants its pixels; see training.py)
     "compile": {"loss": {"class", "config"}, "optimizer": {"class", "config"},
                 "metrics": ["accuracy"]} or null,
     "optimizer_state": ["0.exp_avg", ...] or null,     (the optimizer/ arrays it holds)
     "history": {"epoch": [...], "history": {...}} or null}

A training checkpoint (``fit(checkpoint_dir=...)``, :func:`save_checkpoint`) is a model file
with one more header entry, ``"training"``, and its arrays ``training/<i>``; ``load_model``
reads it as a model, :func:`load_checkpoint` also returns the training state::

    "training": {"next_epoch": 3, "seed": 7, "rng_state": {...}, "stop_training": false,
                 "batch_size": 64, "samples": 54000, "shuffle": true,
                 "callbacks": [{"class": "EarlyStopping", "state": {...}}, ...],
                 "arrays": 2}            (callback states refer to array i as {"__ndarray__": i})

Saving writes a temporary file beside the target, flushes it to disk, then renames it over
the target: a crash never leaves a half-written model under the real name. Weights holding
NaN or infinity are refused (``allow_nonfinite=True`` writes them anyway), so that a diverged
run never replaces a good model file.

Loading never unpickles and trusts nothing in the file. Before any array is read it checks
the format and version, the sizes the zip directory declares (against the file size and
against the parameters the architecture declares), the architecture (known layers, each
rebuilt by its own ``from_config``, whose constructor checks every argument's type and range:
see ``layers.base.layer_from_config``), that the rebuilt model runs on one sample of ``input_shape`` without absurdly large
activations, and the name, shape and dtype of every array against the rebuilt model; only then
are the arrays read and copied in.
Any problem raises :class:`ModelFileError` naming the file.
"""

import contextlib
import inspect
import json
import lzma
import math
import os
import tempfile
import tokenize
import zipfile
import zlib

import numpy as np

from . import losses, optim, rng
from .callbacks import History
from .data import PREPROCESSING, check_preprocessing
from .layers.base import LAYER_CLASSES, ConfigError, layer_from_config, layer_to_config
from .version import __version__

FORMAT = "npconvnet-model"
#: The newest format this module reads. Version 2 added "preprocessing"; a file whose model
#: needs none is still written as version 1, readable by older npconvnet, while one that does
#: is version 2, which older npconvnet refuses rather than feeding the model unshifted pixels.
FORMAT_VERSION = 2
HEADER = "model.json"
_MAX_HEADER_BYTES = 16 * 2**20
# An .npy member is its header (numpy reads at most 10,000 bytes of it) and then the data.
_MAX_NPY_HEADER_BYTES = 16 * 2**10
# Deflate cannot expand data more than ~1032 times: a larger declared size is a lie.
_MAX_EXPANSION = 1100
_DTYPES = ("float32", "float64")
# One sample's largest activation, in values: far above any real network (a 224x224 image with
# 64 channels is 3.2M), far below what a huge padding in a tiny hostile file would allocate.
_MAX_ACTIVATION_SIZE = 2**26


class ModelFileError(ValueError):
    """A file that is not an npconvnet model, is damaged, or contradicts itself."""


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _ints(minimum):
    """A check: an int >= minimum."""
    return lambda value: _is_int(value) and value >= minimum


_POSITIVE_INT = (_ints(1), "a positive int")
_BOOL = (lambda value: isinstance(value, bool), "true or false")


# Saving.

def _object_config(value):
    return {"class": type(value).__name__, "config": value.get_config()}


def _header(model, include_history):
    # A plain layers.Sequential has none of the model's attributes: it is saved as an uncompiled
    # model, with no recorded input, classes, preprocessing or history.
    attributes = {name: getattr(model, name, None) for name in
                  ("preprocessing", "class_names", "optimizer", "loss", "input_shape", "history")}
    preprocessing = check_preprocessing(attributes["preprocessing"], "save: model.preprocessing")
    class_names = attributes["class_names"]
    if class_names is not None:
        if not all(isinstance(name, str) for name in class_names):
            raise TypeError(f"save: model.class_names must be strings, got {class_names!r:.200}")
        class_names = list(class_names)
    compiled = attributes["optimizer"] is not None and attributes["loss"] is not None
    input_shape, history = attributes["input_shape"], attributes["history"]
    return {
        "format": FORMAT, "format_version": 1 if preprocessing is None else 2,
        "npconvnet_version": __version__,
        "architecture": layer_to_config(model),
        "dtype": model.dtype.name,
        "input_shape": None if input_shape is None else [int(n) for n in input_shape],
        "class_names": class_names,
        "preprocessing": preprocessing,
        "compile": {"loss": _object_config(model.loss), "optimizer": _object_config(model.optimizer),
                    "metrics": list(model.metric_names)} if compiled else None,
        "optimizer_state": None,
        "history": history.to_dict() if include_history and history is not None else None,
    }


def save_model(model, path, include_optimizer=True, include_history=True, allow_nonfinite=False):
    """Write ``model`` (a ``Sequential``) to the ``.npz`` file ``path``, atomically; returns ``path``.

    ``include_optimizer``: also the optimizer's buffers (momentum, Adam's moments), so that
    training resumes exactly. ``include_history``: also ``model.history``. Weights holding NaN
    or infinity raise ``ValueError`` and leave any file at ``path`` as it was, unless
    ``allow_nonfinite=True``.
    """
    return _save(model, path, include_optimizer, include_history, allow_nonfinite)


def save_checkpoint(model, path, training):
    """Write a training checkpoint: the model with its optimizer state and history, and the
    ``training`` state of ``fit`` (the header entry described in the module docstring, without
    ``"arrays"``: NumPy arrays inside the callback states are stored as arrays of their own)."""
    return _save(model, path, include_optimizer=True, include_history=True, allow_nonfinite=False,
                 training=training)


def _save(model, path, include_optimizer, include_history, allow_nonfinite, training=None):
    if not isinstance(model, LAYER_CLASSES["Sequential"]):
        raise TypeError(f"save_model: expected a Sequential model, got {type(model).__name__}")
    path = os.fspath(path)
    weights = model.state_dict()
    if not allow_nonfinite:
        _refuse_nonfinite(weights, path)
    header = _header(model, include_history)
    arrays = {f"weights/{name}": value for name, value in weights.items()}
    if include_optimizer and header["compile"] is not None:
        buffers = model.optimizer.state_dict()["buffers"]
        header["optimizer_state"] = sorted(buffers)
        arrays.update((f"optimizer/{key}", value) for key, value in buffers.items())
    if training is not None:
        training_arrays = []
        header["training"] = {**training, "callbacks": _pack_arrays(training["callbacks"], training_arrays),
                              "arrays": len(training_arrays)}
        arrays.update((f"training/{index}", value) for index, value in enumerate(training_arrays))
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    write_atomically(path, lambda file: np.savez(file, allow_pickle=False, **arrays))
    return path


def _refuse_nonfinite(weights, path):
    bad = [name for name, value in weights.items() if not np.isfinite(value).all()]
    if bad:
        kept = "the file already there is left as it was" if os.path.exists(path) else "nothing was written"
        raise ValueError(f"save_model: refusing to write {path}: {', '.join(bad[:5])}"
                         f"{' and more' if len(bad) > 5 else ''} hold NaN or infinite values "
                         f"(training diverged?); {kept}. Pass allow_nonfinite=True to save them anyway.")


def _pack_arrays(value, arrays):
    """``value`` with every NumPy array replaced by ``{"__ndarray__": i}``, the array going to
    ``arrays[i]``; dicts and lists are walked, anything else must be JSON already."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"__ndarray__": len(arrays) - 1}
    if isinstance(value, dict):
        return {key: _pack_arrays(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack_arrays(item, arrays) for item in value]
    return value


def _unpack_arrays(value, arrays, fail):
    """The inverse of :func:`_pack_arrays`."""
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            index = value["__ndarray__"]
            if not (_is_int(index) and 0 <= index < len(arrays)):
                raise fail(f"the training state refers to array {index!r:.20}, but the file holds "
                           f"{len(arrays)}")
            return arrays[index]
        return {key: _unpack_arrays(item, arrays, fail) for key, item in value.items()}
    if isinstance(value, list):
        return [_unpack_arrays(item, arrays, fail) for item in value]
    return value


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file in the target's folder, fsync it, then rename it
    over ``path``: a failure at any moment leaves any file at ``path`` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private to its owner; keep the permissions of the file replaced.
        os.chmod(temporary, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # The rename itself is durable only once the folder is flushed (not possible everywhere).
    with contextlib.suppress(OSError, AttributeError):
        folder_descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)


# Loading.

def load_model(path, compile=True, *, model_class):
    """Rebuild the model saved in ``path``: same architecture and weights (predictions match
    to the bit), ``input_shape``, ``class_names``, ``preprocessing`` and ``history``; compiled
    with the saved loss, optimizer (with its state, when saved) and metrics unless
    ``compile=False``. A training checkpoint loads as the model it holds.

    ``model_class``: the class of the model to rebuild, a ``layers.Sequential`` with the
    training methods (``npconvnet.load_model`` passes ``npconvnet.Sequential``).

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for a file that
    is not a valid model.
    """
    model, _ = _open(path, compile, read_training=False, model_class=model_class)
    return model


def load_checkpoint(path, *, model_class):
    """``(model, training)`` from a checkpoint written by ``fit(checkpoint_dir=...)``: the
    compiled model with its optimizer state and history, and the training state (see the
    module docstring) with its arrays back in the callback states.

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for a file that
    is not a valid checkpoint (a model file without training state included).
    """
    model, training = _open(path, compile=True, read_training=True, model_class=model_class)
    if training is None:
        raise ModelFileError(f"{os.fspath(path)}: a model file without training state, not a "
                             "checkpoint (fit(checkpoint_dir=...) writes checkpoints; to train a "
                             "saved model further, use load_model(path).fit(..., initial_epoch=...))")
    if model.optimizer is None:
        raise ModelFileError(f"{os.fspath(path)}: a checkpoint without its compile configuration")
    return model, training


def _open(path, compile, read_training, model_class):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: no such file: {path!r}")
    # Checked first: for any other bytes np.load's own message speaks of pickles.
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            single_array = file.read(6) == b"\x93NUMPY"
        what = ("a single .npy array, not an .npz archive" if single_array else
                "not an .npz archive: model files are written by model.save or npconvnet train")
        raise ModelFileError(f"{path}: not an npconvnet model file ({what})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path}: not an npconvnet model file (not a readable .npz archive: "
                             f"{error})") from None
    with archive:
        try:
            return _load(archive, path, compile, read_training, model_class)
        except ModelFileError:
            raise
        # What the zip and .npy readers raise for damaged data: NumPy lets tokenize.TokenError
        # through from some malformed .npy headers; zipfile raises NotImplementedError for an
        # unknown compression method, RuntimeError for an encrypted member, and the LZMA error
        # of a member that claims LZMA compression.
        except (ValueError, TypeError, KeyError, EOFError, OSError, OverflowError, RecursionError,
                NotImplementedError, RuntimeError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
                tokenize.TokenError) as error:
            raise ModelFileError(f"{path}: damaged or invalid model file ({type(error).__name__}: "
                                 f"{error})") from None


def _load(archive, path, compile, read_training, model_class):
    def fail(message):
        return ModelFileError(f"{path}: {message}")

    sizes = _member_sizes(archive, path, fail)
    header = _read_header(archive, sizes, fail)
    dtype = np.dtype(header["dtype"])
    declared = _declared_parameter_count(header["architecture"]) * dtype.itemsize
    stored = sum(size for key, size in sizes.items() if key.startswith("weights/"))
    if declared > stored:
        raise fail(f"the architecture declares at least {declared:,} bytes of weights, but the file "
                   f"holds only {stored:,}")

    model = _build_model(header, dtype, fail, model_class)
    if header["input_shape"] is not None:
        _check_input_shape(model, tuple(header["input_shape"]), fail)
    expected = {f"weights/{name}": (p.data.shape, p.data.dtype) for name, p in model.named_parameters()}
    expected.update((f"weights/{name}", (np.shape(b), np.asarray(b).dtype)) for name, b in model.named_buffers())
    optimizer_keys = _optimizer_keys(header, model, fail)
    training = _training_header(header, fail)
    if training is not None and training["arrays"] > len(sizes):
        raise fail(f"the training state lists {training['arrays']:,} arrays, but the file holds "
                   f"{len(sizes)} members")
    training_keys = [f"training/{index}" for index in range(training["arrays"] if training else 0)]
    expected_keys = set(expected) | {f"optimizer/{key}" for key in optimizer_keys} | set(training_keys)
    present = set(sizes) - {HEADER}
    missing, unexpected = sorted(expected_keys - present), sorted(present - expected_keys)
    if missing or unexpected:
        raise fail(f"the arrays do not match the architecture: missing {missing[:10]}, "
                   f"unexpected {unexpected[:10]}")

    parameters = model.parameters()
    for key in sorted(expected_keys - set(training_keys)):
        if key.startswith("weights/"):
            allowed = [expected[key]]
        else:               # a per-parameter array, or a scalar such as Adam's step count
            parameter = parameters[int(key[len("optimizer/"):].split(".", 1)[0])].data
            allowed = [(parameter.shape, parameter.dtype), ((), None)]
        _check_member(archive, key, sizes[key], allowed, fail)
    if read_training:
        # A callback keeps at most a copy of the weights (EarlyStopping's best epoch).
        limit = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in expected.values())
        for key in training_keys:
            _check_training_member(archive, key, sizes[key], limit, fail)

    # Everything matches: now read the arrays and copy them in.
    model.load_state_dict({key[len("weights/"):]: archive[key] for key in expected})
    model.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
    model.class_names = header["class_names"]
    model.preprocessing = header.get("preprocessing")
    if header["history"] is not None:
        model.history = History.from_dict(header["history"])
    if compile and header["compile"] is not None:
        _compile(model, header["compile"], {key: archive[f"optimizer/{key}"] for key in optimizer_keys},
                 fail)
    if not read_training or training is None:
        return model, None
    arrays = [archive[key] for key in training_keys]
    return model, {**training, "callbacks": _unpack_arrays(training["callbacks"], arrays, fail)}


def _member_sizes(archive, path, fail):
    """``{array name: declared uncompressed size}`` from the zip directory, checked for sanity."""
    infos = archive.zip.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise fail("the archive holds the same member twice")
    if HEADER + ".npy" not in names:
        raise fail(f"not an npconvnet model file (no {HEADER} header; members: {names[:5]})")
    strange = [name for name in names if not name.endswith(".npy")]
    if strange:
        raise fail(f"unexpected members {strange[:5]} (a model file holds only .npy arrays)")
    total, file_size = sum(info.file_size for info in infos), os.path.getsize(path)
    if total > _MAX_EXPANSION * file_size:
        raise fail(f"the archive declares {total:,} bytes of content in a file of {file_size:,} bytes")
    return {info.filename[:-len(".npy")]: info.file_size for info in infos}


def _read_header(archive, sizes, fail):
    if sizes[HEADER] > _MAX_HEADER_BYTES:
        raise fail(f"the {HEADER} header declares {sizes[HEADER]:,} bytes (at most "
                   f"{_MAX_HEADER_BYTES:,} expected)")
    shape, dtype = _peek(archive, HEADER, fail)
    if dtype != np.uint8 or len(shape) != 1:
        raise fail(f"the {HEADER} header must be a 1-D uint8 array, got {dtype} of shape {shape}")
    raw = archive[HEADER]
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"the {HEADER} header is not valid UTF-8 JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise fail(f"not an npconvnet model file (the header's format is not {FORMAT!r})")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise fail(f"written in model format version {version}, newer than this npconvnet reads "
                   f"({FORMAT_VERSION}); upgrade npconvnet")
    required = ("architecture", "dtype", "input_shape", "class_names", "compile", "optimizer_state",
                "history")
    missing = [key for key in required if key not in header]
    if missing:
        raise fail(f"the header lacks {missing}")
    if header["dtype"] not in _DTYPES:
        raise fail(f"dtype must be one of {_DTYPES}, got {header['dtype']!r}")
    shape = header["input_shape"]
    if shape is not None and not (isinstance(shape, list) and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise fail(f"input_shape must be a list of positive ints or null, got {shape!r:.100}")
    names = header["class_names"]
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise fail(f"class_names must be a list of strings or null, got {names!r:.100}")
    # Files written before the model recorded its preprocessing lack the entry: the default.
    preprocessing = header.get("preprocessing")
    if preprocessing not in PREPROCESSING:
        raise fail(f"preprocessing must be null or 'center', got {preprocessing!r:.100}")
    compiled = header["compile"]
    if compiled is not None and not (isinstance(compiled, dict)
                                     and set(compiled) == {"loss", "optimizer", "metrics"}):
        raise fail("compile must be null or {'loss': ..., 'optimizer': ..., 'metrics': [...]}")
    return header


def _is_generator_state(value):
    scratch = type(rng.default_rng().bit_generator)()
    try:
        scratch.state = value
    except (ValueError, TypeError, KeyError, OverflowError):
        return False
    return True


def _is_callback_states(value):
    return isinstance(value, list) and all(
        isinstance(item, dict) and set(item) == {"class", "state"} and isinstance(item["class"], str)
        and isinstance(item["state"], dict) for item in value)


_NON_NEGATIVE_INT = (_ints(0), "an int >= 0")
# The header entry "training" of a checkpoint (see the module docstring).
_TRAINING_SCHEMA = {
    "next_epoch": _NON_NEGATIVE_INT,
    "seed": (lambda value: _is_int(value) and 0 <= value < 2**63, "an int in [0, 2**63)"),
    "rng_state": (_is_generator_state, "a state of the global random generator"),
    "stop_training": _BOOL, "batch_size": _POSITIVE_INT, "samples": _POSITIVE_INT, "shuffle": _BOOL,
    "callbacks": (_is_callback_states, "a list of {'class': name, 'state': {...}}"),
    "arrays": _NON_NEGATIVE_INT,
}


def _training_header(header, fail):
    """The checked "training" entry of a checkpoint's header; None for a model file."""
    training = header.get("training")
    if training is None:
        return None
    if not isinstance(training, dict) or set(training) != set(_TRAINING_SCHEMA):
        found = sorted(training) if isinstance(training, dict) else type(training).__name__
        raise fail(f"the training state must hold {sorted(_TRAINING_SCHEMA)}, got {found}")
    for key, (check, description) in _TRAINING_SCHEMA.items():
        if not check(training[key]):
            raise fail(f"the training state's {key} must be {description}, got {training[key]!r:.100}")
    return training


def _declared_parameter_count(config):
    """A lower bound on the parameters an architecture declares, read from the layer configs
    without building anything, so that absurd sizes are refused before memory is allocated."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        return 0
    arguments = config["config"]

    def product(*values):
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        return math.prod(ints) if len(ints) == len(values) else 0

    kernel = arguments.get("kernel_size")
    kernel = [kernel, kernel] if isinstance(kernel, int) else kernel if isinstance(kernel, list) else [None]
    count = (product(arguments.get("in_features"), arguments.get("out_features"))
             + product(arguments.get("in_channels"), arguments.get("out_channels"), *kernel)
             + 4 * product(arguments.get("num_features")))
    nested = arguments.get("layers") if isinstance(arguments.get("layers"), list) else []
    nested = nested + [arguments.get("block"), arguments.get("shortcut")]
    return count + sum(_declared_parameter_count(item) for item in nested)


def _build_model(header, dtype, fail, model_class):
    # Building draws fresh initial weights; they are overwritten, so leave the global generator as it was.
    state = rng.get_state()
    try:
        network = layer_from_config(header["architecture"], "architecture")
    except ConfigError as error:
        raise fail(f"invalid architecture: {error}") from None
    finally:
        rng.set_state(state)
    if type(network) is not LAYER_CLASSES["Sequential"]:
        raise fail(f"the architecture must be a Sequential, got {type(network).__name__}")
    model = model_class(network.layers)
    return model.astype(dtype) if dtype != np.float32 else model


def _check_input_shape(model, input_shape, fail):
    """Refuse an architecture that does not run on one sample of ``input_shape``, or whose
    activations would be absurdly large: a huge padding costs nothing in a file but gigabytes
    in ``predict``. The sizes are computed first; then one sample of zeros goes through."""
    try:
        _, largest = _activation_size(model, input_shape)
    except (ValueError, TypeError, IndexError) as error:
        raise fail(f"the architecture does not fit its input_shape {list(input_shape)}: {error}") from None
    if largest > _MAX_ACTIVATION_SIZE:
        raise fail(f"the architecture makes activations of {largest:,} values for one sample of "
                   f"shape {list(input_shape)} (at most {_MAX_ACTIVATION_SIZE:,} accepted)")
    try:
        model.eval().forward(np.zeros((1, *input_shape), model.dtype))
    except (ValueError, TypeError) as error:
        raise fail(f"the architecture does not fit its input_shape {list(input_shape)}: {error}") from None
    finally:
        model.train()


def _activation_size(layer, shape):
    """``(output shape, largest activation on the way)`` of ``layer`` for one sample of ``shape``."""
    if isinstance(layer, LAYER_CLASSES["Sequential"]):
        largest = math.prod(shape)
        for child in layer.layers:
            shape, size = _activation_size(child, shape)
            largest = max(largest, size)
        return shape, largest
    if isinstance(layer, LAYER_CLASSES["Residual"]):
        branches = [layer.block] + ([layer.shortcut] if layer.shortcut is not None else [])
        results = [_activation_size(branch, shape) for branch in branches]
        return results[0][0], max(size for _, size in results)
    output = tuple(layer.output_shape(shape)) if hasattr(layer, "output_shape") else shape
    if min(output, default=1) < 1:
        raise ValueError(f"{type(layer).__name__} turns samples of shape {list(shape)} into {list(output)}")
    return output, max(math.prod(shape), math.prod(output))


def _optimizer_keys(header, model, fail):
    keys = header["optimizer_state"]
    if keys is None:
        return []
    if header["compile"] is None or not isinstance(keys, list):
        raise fail("optimizer_state must be a list of buffer names, and needs a compile config")
    count = len(model.parameters())
    for key in keys:
        index, _, name = key.partition(".") if isinstance(key, str) else ("", "", "")
        if not (index.isdigit() and int(index) < count and name):
            raise fail(f"invalid optimizer buffer name {key!r} (expected '<parameter index>.<name>' "
                       f"with an index below {count})")
    return keys


def _peek(archive, key, fail):
    """The shape and dtype in the .npy header of member ``key``, reading nothing more."""
    with archive.zip.open(key + ".npy") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise fail(f"{key} uses .npy format version {version}, expected 1.0 or 2.0")
    return shape, dtype


def _check_member(archive, key, size, allowed, fail):
    """Read only the .npy header of member ``key`` and check its shape, dtype and declared size."""
    largest = max(int(np.prod(shape)) * (dtype.itemsize if dtype is not None else 8)
                  for shape, dtype in allowed)
    if size > largest + _MAX_NPY_HEADER_BYTES:
        raise fail(f"{key} declares {size:,} bytes, more than its expected {largest:,}")
    shape, dtype = _peek(archive, key, fail)
    for expected_shape, expected_dtype in allowed:
        if shape == expected_shape and (dtype.kind in "iuf" if expected_dtype is None
                                        else dtype == expected_dtype):
            return
    wanted = " or ".join(f"{s} {d if d is not None else 'number'}" for s, d in allowed)
    raise fail(f"{key} has shape {shape} and dtype {dtype}; expected {wanted}")


def _check_training_member(archive, key, size, limit, fail):
    """Read only the .npy header of a training array: numbers, no larger than ``limit`` bytes."""
    if size > limit + _MAX_NPY_HEADER_BYTES:
        raise fail(f"{key} declares {size:,} bytes, more than the model's weights ({limit:,})")
    shape, dtype = _peek(archive, key, fail)
    if dtype.kind not in "biuf" or math.prod(shape) * dtype.itemsize > limit:
        raise fail(f"{key} has shape {shape} and dtype {dtype}; expected numbers, at most as many "
                   f"bytes as the model's weights ({limit:,})")


def _from_config(kind, classes, config, fail):
    """Build a loss or an optimizer from ``{"class", "config"}`` of a known class."""
    if not isinstance(config, dict) or set(config) != {"class", "config"} \
            or not isinstance(config["config"], dict):
        raise fail(f"the {kind} must be {{'class': ..., 'config': {{...}}}}, got {config!r:.200}")
    name, arguments = config["class"], config["config"]
    if name not in classes:
        raise fail(f"unknown {kind} {name!r}; known: {', '.join(sorted(classes))}")
    if "params" in arguments:
        raise fail(f"the {kind} config must not name parameters")
    try:
        inspect.signature(classes[name]).bind(**arguments)
        return classes[name](**arguments)
    except (TypeError, ValueError) as error:
        raise fail(f"bad {kind} config for {name}: {error}") from None


def _compile(model, config, buffers, fail):
    loss_classes = {cls.__name__: cls for cls in losses.LOSSES.values()}
    optimizer_classes = {cls.__name__: cls for cls in optim.OPTIMIZERS.values()}
    loss = _from_config("loss", loss_classes, config["loss"], fail)
    optimizer = _from_config("optimizer", optimizer_classes, config["optimizer"], fail)
    metrics = config["metrics"]
    if not isinstance(metrics, list) or not all(isinstance(name, str) for name in metrics):
        raise fail(f"metrics must be a list of names, got {metrics!r:.100}")
    try:
        model.compile(optimizer, loss, metrics)
    except ValueError as error:
        raise fail(f"cannot compile the saved configuration: {error}") from None
    if buffers:
        optimizer.load_state_dict({"config": optimizer.get_config(), "buffers": buffers})
