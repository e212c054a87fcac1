"""Architectures as JSON, and whole models as one ``.npz`` file.

An architecture is a tree of ``{"class": layer name, "config": constructor arguments}``.

A model file (``model.save(path)``, ``load_model(path)``) is an uncompressed NumPy ``.npz``
(zip) archive of plain numeric arrays::

    model.json             the header: UTF-8 JSON, stored as a uint8 array
    weights/<name>         every parameter and buffer, named as in state_dict() ("0.weight")
    optimizer/<i>.<name>   the optimizer's buffers, as in optimizer.state_dict() (optional)

The header::

    {"format": "npconvnet-model", "format_version": 1, "npconvnet_version": "0.1.0",
     "architecture": {"class": "Sequential", "config": {"layers": [...]}},
     "dtype": "float32", "input_shape": [1, 28, 28] or null, "class_names": [...] or null,
     "compile": {"loss": {"class", "config"}, "optimizer": {"class", "config"},
                 "metrics": ["accuracy"]} or null,
     "optimizer_state": ["0.exp_avg", ...] or null,     (the optimizer/ arrays it holds)
     "history": {"epoch": [...], "history": {...}} or null}

Saving writes a temporary file beside the target, flushes it to disk, then renames it over
the target: a crash never leaves a half-written model under the real name.

Loading never unpickles and trusts nothing in the file. Before any array is read it checks
the format and version, the sizes the zip directory declares (against the file size and
against the parameters the architecture declares), the architecture (known layers, valid
arguments), and the name, shape and dtype of every array against the rebuilt model; only then
are the arrays read and copied in. Any problem raises :class:`ModelFileError` naming the file.
"""

import contextlib
import inspect
import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import rng
from .callbacks import History
from .layers.base import LAYER_CLASSES

FORMAT = "npconvnet-model"
FORMAT_VERSION = 1
HEADER = "model.json"
_MAX_HEADER_BYTES = 16 * 2**20
# An .npy member is its header (numpy reads at most 10,000 bytes of it) and then the data.
_MAX_NPY_HEADER_BYTES = 16 * 2**10
# Deflate cannot expand data more than ~1032 times: a larger declared size is a lie.
_MAX_EXPANSION = 1100
_DTYPES = ("float32", "float64")


class ModelFileError(ValueError):
    """A file that is not an npconvnet model, is damaged, or contradicts itself."""


def layer_to_config(layer):
    """``Conv2D(1, 8, 3) -> {"class": "Conv2D", "config": {"in_channels": 1, ...}}``."""
    return {"class": type(layer).__name__, "config": layer.get_config()}


def layer_from_config(config, where="model"):
    """Rebuild a layer (with fresh weights) from :func:`layer_to_config`'s output.

    Unknown layer names, missing or unexpected arguments raise ``ValueError`` naming the place
    in the architecture (``where``), never a bare ``TypeError`` from deep inside.
    """
    if not isinstance(config, dict) or set(config) != {"class", "config"}:
        raise ValueError(f"{where}: a layer must be {{'class': ..., 'config': {{...}}}}, got {config!r:.200}")
    name, arguments = config["class"], config["config"]
    if name not in LAYER_CLASSES:
        raise ValueError(f"{where}: unknown layer {name!r}; known layers: {', '.join(sorted(LAYER_CLASSES))}")
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: the config of {name} must be a dict, got {type(arguments).__name__}")
    cls = LAYER_CLASSES[name]
    arguments = dict(arguments)
    if name == "Sequential":
        layers = arguments.pop("layers", None)
        if not isinstance(layers, list):
            raise ValueError(f"{where}: Sequential needs a list of layers")
        if arguments:
            raise ValueError(f"{where}: unexpected Sequential arguments {sorted(arguments)}")
        return cls([layer_from_config(item, f"{where}.{index}") for index, item in enumerate(layers)])
    if name == "Residual":
        for key in ("block", "shortcut"):
            if arguments.get(key) is not None:
                arguments[key] = layer_from_config(arguments[key], f"{where}.{key}")
    try:
        inspect.signature(cls).bind(**arguments)
    except TypeError as error:
        raise ValueError(f"{where}: bad arguments for {name}: {error}") from None
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: bad arguments for {name}: {error}") from None


# Saving.

def _object_config(value):
    return {"class": type(value).__name__, "config": value.get_config()}


def _header(model, include_history):
    from . import __version__      # the package imports this module
    class_names = model.class_names
    if class_names is not None:
        if not all(isinstance(name, str) for name in class_names):
            raise TypeError(f"save: model.class_names must be strings, got {class_names!r:.200}")
        class_names = list(class_names)
    compiled = model.optimizer is not None and model.loss is not None
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "npconvnet_version": __version__,
        "architecture": layer_to_config(model),
        "dtype": np.dtype(model._dtype()).name,
        "input_shape": None if model.input_shape is None else [int(n) for n in model.input_shape],
        "class_names": class_names,
        "compile": {"loss": _object_config(model.loss), "optimizer": _object_config(model.optimizer),
                    "metrics": list(model.metric_names)} if compiled else None,
        "optimizer_state": None,
        "history": model.history.to_dict() if include_history and model.history is not None else None,
    }


def save_model(model, path, include_optimizer=True, include_history=True):
    """Write ``model`` (a ``Sequential``) to the ``.npz`` file ``path``, atomically; returns ``path``.

    ``include_optimizer``: also the optimizer's buffers (momentum, Adam's moments), so that
    training resumes exactly. ``include_history``: also ``model.history``.
    """
    if not isinstance(model, LAYER_CLASSES["Sequential"]):
        raise TypeError(f"save_model: expected a Sequential model, got {type(model).__name__}")
    path = os.fspath(path)
    header = _header(model, include_history)
    arrays = {f"weights/{name}": value for name, value in model.state_dict().items()}
    if include_optimizer and header["compile"] is not None:
        buffers = model.optimizer.state_dict()["buffers"]
        header["optimizer_state"] = sorted(buffers)
        arrays.update((f"optimizer/{key}", value) for key, value in buffers.items())
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    _write_atomically(path, arrays)
    return path


def _write_atomically(path, arrays):
    """Write into a temporary file in the target's folder, fsync it, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, allow_pickle=False, **arrays)
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

def load_model(path, compile=True):
    """Rebuild the model saved in ``path``: same architecture and weights (predictions match
    to the bit), ``input_shape``, ``class_names`` and ``history``; compiled with the saved loss,
    optimizer (with its state, when saved) and metrics unless ``compile=False``.

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for a file that
    is not a valid model.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: no such file: {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path}: not an npconvnet model file (not a readable .npz archive: "
                             f"{error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelFileError(f"{path}: not an npconvnet model file (a single .npy array, not an .npz archive)")
    with archive:
        try:
            return _load(archive, path, compile)
        except ModelFileError:
            raise
        except (ValueError, TypeError, KeyError, EOFError, OSError, OverflowError, RecursionError,
                zipfile.BadZipFile, zlib.error) as error:
            raise ModelFileError(f"{path}: damaged or invalid model file ({type(error).__name__}: "
                                 f"{error})") from None


def _load(archive, path, compile):
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

    model = _build_model(header, dtype, fail)
    expected = {f"weights/{name}": (p.data.shape, p.data.dtype) for name, p in model.named_parameters()}
    expected.update((f"weights/{name}", (np.shape(b), np.asarray(b).dtype)) for name, b in model.named_buffers())
    optimizer_keys = _optimizer_keys(header, model, fail)
    expected_keys = set(expected) | {f"optimizer/{key}" for key in optimizer_keys}
    present = set(sizes) - {HEADER}
    missing, unexpected = sorted(expected_keys - present), sorted(present - expected_keys)
    if missing or unexpected:
        raise fail(f"the arrays do not match the architecture: missing {missing[:10]}, "
                   f"unexpected {unexpected[:10]}")

    parameters = model.parameters()
    for key in sorted(expected_keys):
        if key.startswith("weights/"):
            allowed = [expected[key]]
        else:               # a per-parameter array, or a scalar such as Adam's step count
            parameter = parameters[int(key[len("optimizer/"):].split(".", 1)[0])].data
            allowed = [(parameter.shape, parameter.dtype), ((), None)]
        _check_member(archive, key, sizes[key], allowed, fail)

    # Everything matches: now read the arrays and copy them in.
    model.load_state_dict({key[len("weights/"):]: archive[key] for key in expected})
    model.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
    model.class_names = header["class_names"]
    if header["history"] is not None:
        model.history = History.from_dict(header["history"])
    if compile and header["compile"] is not None:
        _compile(model, header["compile"], {key: archive[f"optimizer/{key}"] for key in optimizer_keys},
                 fail)
    return model


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
    compiled = header["compile"]
    if compiled is not None and not (isinstance(compiled, dict)
                                     and set(compiled) == {"loss", "optimizer", "metrics"}):
        raise fail("compile must be null or {'loss': ..., 'optimizer': ..., 'metrics': [...]}")
    return header


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


def _build_model(header, dtype, fail):
    # Building draws fresh initial weights; they are overwritten, so leave the global generator as it was.
    state = rng.get_state()
    try:
        model = layer_from_config(header["architecture"], "architecture")
    except ValueError as error:
        raise fail(f"invalid architecture: {error}") from None
    finally:
        rng.set_state(state)
    if not isinstance(model, LAYER_CLASSES["Sequential"]):
        raise fail(f"the architecture must be a Sequential, got {type(model).__name__}")
    return model.astype(dtype) if dtype != np.float32 else model


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
    from . import losses, optim
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
