"""Architectures as JSON, and whole models as one ``.npz`` file.

An architecture is a tree of ``{"class": layer name, "config": constructor arguments}``.

A model file (``model.save(path)``, ``load_model(path)``) is an uncompressed NumPy ``.npz``
(zip) archive of plain numeric arrays::

    model.json             the header: UTF-8 JSON, stored as a uint8 array
    weights/<name>         every parameter and buffer, named as in state_dict() ("0.weight")
    optimizer/<i>.<name>   the optimizer's buffers, as in optimizer.state_dict() (optional)
    digest                 the integrity digest of all the others: SHA-256, 32 uint8

The header::

    {"format": "npconvnet-model", "format_version": 3, "npconvnet_version": "0.1.0",
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

A weights file (:func:`save_weights`, :func:`load_weights`, as Keras's ``model.save_weights``)
is the same archive with only ``model.json``, ``weights/<name>`` and ``digest``, its header
``{"format": "npconvnet-weights", "format_version": 3, "npconvnet_version": "0.1.0"}``.
``load_weights`` takes the weights of a model file or a checkpoint too.

The digest (format version 3 on) is SHA-256 over every other member of the archive, the header
included, in the order of their names as Python sorts them ("model.json" < "optimizer/..." <
"weights/..."). Each member adds one line of JSON naming it and giving the dtype, memory order
and shape of its ``.npy`` header, then its data bytes as stored::

    {"descr": "<f4", "fortran_order": false, "name": "weights/0.weight", "shape": [4, 1, 3, 3]}\n

(``json.dumps`` of that dict with ``sort_keys=True``, UTF-8, and a newline). Loading checks it
as soon as the header's format and version are read, before anything else in the header is used
or any array is taken, reading each member in chunks of at most 1 MiB: any change to a file,
however it came about, is refused in one line saying so. The digest guards against damage, not
against an author: a deliberately edited file can carry a recomputed one, so everything below
is checked all the same. Files of versions 1 and 2, written before the digest existed, have none
and load without that check; npconvnet older than version 3 refuses version 3 files.

Saving writes a temporary file beside the target, flushes it to disk, then renames it over
the target: a crash never leaves a half-written model under the real name. Weights holding
NaN or infinity are refused (``allow_nonfinite=True`` writes them anyway), so that a diverged
run never replaces a good model file; loading refuses them the same way.

Loading never unpickles and trusts nothing in the file. Before any array is read it checks
the format and version, the sizes the zip directory declares (against the file size and
against the parameters the architecture declares), the architecture (known layers, each
rebuilt by its own ``from_config``, whose constructor checks every argument's type and range:
see ``layers.base.layer_from_config``), that the rebuilt model runs on one sample of ``input_shape`` without absurdly large
activations, and the name, shape and dtype of every array against the rebuilt model; only then
are the arrays read and copied in.
Any problem raises :class:`ModelFileError` naming the file.
"""

import hashlib
import inspect
import json
import lzma
import math
import os
import tokenize
import zipfile
import zlib

import numpy as np

from . import losses, optim, rng
from .atomic import atomic_write
from .callbacks import History
from .data import PREPROCESSING, check_preprocessing
from .layers.base import LAYER_CLASSES, ConfigError, Layer, layer_from_config, layer_to_config
from .version import __version__

FORMAT = "npconvnet-model"
WEIGHTS_FORMAT = "npconvnet-weights"
#: The format this module writes, and the newest it reads. Version 2 added "preprocessing",
#: version 3 the digest and weights files; versions 1 and 2 still load (without a digest).
FORMAT_VERSION = 3
#: The first version whose files carry a digest.
DIGEST_VERSION = 3
HEADER = "model.json"
DIGEST = "digest"
_MAX_HEADER_BYTES = 16 * 2**20
# An .npy member is its header (numpy reads at most 10,000 bytes of it) and then the data.
_MAX_NPY_HEADER_BYTES = 16 * 2**10
# Deflate cannot expand data more than ~1032 times: a larger declared size is a lie.
_MAX_EXPANSION = 1100
# The digest reads a member this much at a time, however large the member says it is.
_DIGEST_CHUNK_BYTES = 2**20
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
        "format": FORMAT, "format_version": FORMAT_VERSION, "npconvnet_version": __version__,
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
        _refuse_nonfinite(weights, path, "save_model")
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
    _write_file(path, header, arrays)
    return path


def save_weights(model, path, allow_nonfinite=False):
    """Write the weights of ``model`` (every parameter and buffer, as in ``state_dict()``) to
    the ``.npz`` file ``path``, atomically and with a digest; returns ``path``. As Keras's
    ``model.save_weights``: no architecture, optimizer or history (:func:`save_model` keeps
    those); :func:`load_weights` reads them into a model built the same way. Weights holding
    NaN or infinity raise ``ValueError`` and leave any file at ``path`` as it was, unless
    ``allow_nonfinite=True``.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"save_weights: expected a layer or model, got {type(model).__name__}")
    path = os.fspath(path)
    weights = model.state_dict()
    if not allow_nonfinite:
        _refuse_nonfinite(weights, path, "save_weights")
    header = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION,
              "npconvnet_version": __version__}
    _write_file(path, header, {f"weights/{name}": value for name, value in weights.items()})
    return path


def _nonfinite(arrays):
    """The names of the arrays in ``arrays`` holding NaN or infinity, as a phrase, or None."""
    bad = [name for name, value in arrays.items() if not np.isfinite(value).all()]
    return f"{', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''}" if bad else None


def _refuse_nonfinite(weights, path, caller):
    bad = _nonfinite(weights)
    if bad:
        kept = "the file already there is left as it was" if os.path.exists(path) else "nothing was written"
        raise ValueError(f"{caller}: refusing to write {path}: {bad} hold NaN or infinite values "
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


def _write_file(path, header, arrays):
    """Write ``arrays``, the ``header`` and their digest as one archive at ``path``, atomically."""
    # C order throughout, so that every .npy header says fortran_order false, as the digest does.
    arrays = {name: np.asarray(value, order="C") for name, value in arrays.items()}
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    arrays[DIGEST] = _digest(arrays)
    _write_atomically(path, arrays)


def _digest(arrays):
    """The digest of ``{name: C-ordered array}`` (defined in the module docstring)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(_digest_line(name, array.dtype, False, array.shape))
        digest.update(array.reshape(-1).view(np.uint8))
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _digest_line(name, dtype, fortran_order, shape):
    """What the digest reads of a member before its data: its name and .npy header as JSON."""
    line = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": bool(fortran_order),
            "name": name, "shape": [int(n) for n in shape]}
    return json.dumps(line, sort_keys=True).encode("utf-8") + b"\n"


def _write_atomically(path, arrays):
    """The arrays as an .npz archive at ``path``, written whole or not at all (``atomic_write``)."""
    atomic_write(path, lambda file: np.savez(file, allow_pickle=False, **arrays))


# Loading.

def load_model(path, compile=True, allow_nonfinite=False, *, model_class):
    """Rebuild the model saved in ``path``: same architecture and weights (predictions match
    to the bit), ``input_shape``, ``class_names``, ``preprocessing`` and ``history``; compiled
    with the saved loss, optimizer (with its state, when saved) and metrics unless
    ``compile=False``. A training checkpoint loads as the model it holds.

    ``model_class``: the class of the model to rebuild, a ``layers.Sequential`` with the
    training methods (``npconvnet.load_model`` passes ``npconvnet.Sequential``).

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for a file that
    is not a valid model, has changed since it was written (its digest), or holds NaN or
    infinite weights (unless ``allow_nonfinite=True``, e.g. to look into a diverged run).
    """
    model, _ = _open(path, "load_model", "model", lambda archive, fail: _load(
        archive, path, fail, compile, read_training=False, model_class=model_class,
        allow_nonfinite=allow_nonfinite))
    return model


def load_checkpoint(path, allow_nonfinite=False, *, model_class):
    """``(model, training)`` from a checkpoint written by ``fit(checkpoint_dir=...)``: the
    compiled model with its optimizer state and history, and the training state (see the
    module docstring) with its arrays back in the callback states.

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for a file that
    is not a valid checkpoint (a model file without training state included), has changed since
    it was written, or holds NaN or infinite weights (unless ``allow_nonfinite=True``).
    """
    model, training = _open(path, "load_checkpoint", "model", lambda archive, fail: _load(
        archive, path, fail, compile=True, read_training=True, model_class=model_class,
        allow_nonfinite=allow_nonfinite))
    if training is None:
        raise ModelFileError(f"{os.fspath(path)}: a model file without training state, not a "
                             "checkpoint (fit(checkpoint_dir=...) writes checkpoints; to train a "
                             "saved model further, use load_model(path).fit(..., initial_epoch=...))")
    if model.optimizer is None:
        raise ModelFileError(f"{os.fspath(path)}: a checkpoint without its compile configuration")
    return model, training


def load_weights(model, path, allow_nonfinite=False):
    """Copy the weights saved in ``path`` into ``model`` and return it, as Keras's
    ``model.load_weights``: a weights file from :func:`save_weights`, or the weights of a model
    file or a checkpoint (its architecture, optimizer and history are left unused).

    Every array's name, shape and dtype is checked against ``model`` before any is read, and
    the first that does not fit is named; NaN or infinite weights are refused unless
    ``allow_nonfinite=True``. A failed load leaves ``model`` as it was. Raises
    ``FileNotFoundError`` for a missing file and :class:`ModelFileError` otherwise.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"load_weights: expected a layer or model, got {type(model).__name__}")
    return _open(path, "load_weights", "weights or model",
                 lambda archive, fail: _load_weights(model, archive, path, fail, allow_nonfinite))


def _open(path, caller, kind, read):
    """``read(archive, fail)`` on the archive at ``path``, a ``kind`` file for ``caller``;
    whatever a damaged file makes the zip and .npy readers raise becomes a ModelFileError
    naming the file, as ``fail(message)`` does."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{caller}: no such file: {path!r}")
    # Checked first: for any other bytes np.load's own message speaks of pickles.
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            single_array = file.read(6) == b"\x93NUMPY"
        what = ("a single .npy array, not an .npz archive" if single_array else
                "not an .npz archive, as model.save, save_weights and npconvnet train write")
        raise ModelFileError(f"{path}: not an npconvnet {kind} file ({what})")
    try:
        archive = np.load(path, allow_pickle=False)
    # zipfile raises NotImplementedError for a directory entry of a newer zip version.
    except (ValueError, EOFError, OSError, NotImplementedError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path}: not an npconvnet {kind} file (not a readable .npz archive: "
                             f"{error})") from None

    def fail(message):
        return ModelFileError(f"{path}: {message}")

    with archive:
        try:
            return read(archive, fail)
        except ModelFileError:
            raise
        # What the zip and .npy readers raise for damaged data: NumPy lets tokenize.TokenError
        # through from some malformed .npy headers; zipfile raises NotImplementedError for an
        # unknown compression method, RuntimeError for an encrypted member, and the LZMA error
        # of a member that claims LZMA compression.
        except (ValueError, TypeError, KeyError, EOFError, OSError, OverflowError, RecursionError,
                NotImplementedError, RuntimeError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
                tokenize.TokenError) as error:
            raise ModelFileError(f"{path}: damaged or invalid {kind} file ({type(error).__name__}: "
                                 f"{error})") from None


def _read_archive(archive, path, fail, formats, kind):
    """``(member sizes, header)`` of an archive of one of ``formats``, its digest checked
    before the header is used; the sizes leave the digest out."""
    sizes = _member_sizes(archive, path, fail, kind)
    header = _read_header(archive, sizes, fail, formats, kind)
    version = header["format_version"]
    if version >= DIGEST_VERSION:
        _check_digest(archive, sizes, fail)
    elif DIGEST in sizes:
        raise fail(f"the header says format version {version}, which has no digest, but the file "
                   f"holds one (digests came with version {DIGEST_VERSION}): the header was changed")
    sizes.pop(DIGEST, None)
    return sizes, header


def _load(archive, path, fail, compile, read_training, model_class, allow_nonfinite):
    sizes, header = _read_archive(archive, path, fail, (FORMAT,), "model")
    _check_model_header(header, fail)
    dtype = np.dtype(header["dtype"])
    declared = _declared_parameter_count(header["architecture"]) * dtype.itemsize
    stored = sum(size for key, size in sizes.items() if key.startswith("weights/"))
    if declared > stored:
        raise fail(f"the architecture declares at least {declared:,} bytes of weights, but the file "
                   f"holds only {stored:,}")

    model = _build_model(header, dtype, fail, model_class)
    if header["input_shape"] is not None:
        _check_input_shape(model, tuple(header["input_shape"]), fail)
    expected = _expected_weights(model)
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
    model.load_state_dict(_read_weights(archive, expected, fail, allow_nonfinite))
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


def _load_weights(model, archive, path, fail, allow_nonfinite):
    sizes, header = _read_archive(archive, path, fail, (FORMAT, WEIGHTS_FORMAT), "weights or model")
    stored = [key for key in sizes if key.startswith("weights/")]
    if header["format"] == FORMAT:
        _check_model_header(header, fail)
    else:
        others = sorted(set(sizes) - set(stored) - {HEADER})
        if others:
            raise fail(f"unexpected members {others[:5]} (a weights file holds only weights/ arrays)")

    def mismatch(message):
        return fail(f"the weights do not fit this model (saved from another architecture?): {message}")

    # In the model's order, so that the first difference between two architectures is named.
    expected = _expected_weights(model)
    for key, (shape, dtype) in expected.items():
        if key not in sizes:
            raise mismatch(f"the model's {key[len('weights/'):]} (shape {shape}, {dtype}) is not in "
                           f"the file")
        _check_member(archive, key, sizes[key], [(shape, dtype)], mismatch)
    extra = [key for key in stored if key not in expected]
    if extra:
        raise mismatch(f"{extra[0]} is not in the model (the file holds {len(stored)} weight arrays, "
                       f"the model {len(expected)})")
    model.load_state_dict(_read_weights(archive, expected, fail, allow_nonfinite))
    return model


def _expected_weights(model):
    """``{"weights/<name>": (shape, dtype)}`` for every parameter and buffer of ``model``, in order."""
    expected = {f"weights/{name}": (p.data.shape, p.data.dtype) for name, p in model.named_parameters()}
    expected.update((f"weights/{name}", (np.shape(b), np.asarray(b).dtype)) for name, b in model.named_buffers())
    return expected


def _read_weights(archive, expected, fail, allow_nonfinite):
    """The ``weights/`` arrays named in ``expected`` (checked already), as a state_dict; NaN or
    infinity refused unless ``allow_nonfinite``."""
    weights = {key: archive[key] for key in expected}
    bad = None if allow_nonfinite else _nonfinite(weights)
    if bad:
        raise fail(f"{bad} hold NaN or infinite values (saved from a diverged run?); pass "
                   "allow_nonfinite=True to load them anyway")
    return {key[len("weights/"):]: value for key, value in weights.items()}


def _member_sizes(archive, path, fail, kind):
    """``{array name: declared uncompressed size}`` from the zip directory, checked for sanity."""
    infos = archive.zip.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise fail("the archive holds the same member twice")
    if HEADER + ".npy" not in names:
        raise fail(f"not an npconvnet {kind} file (no {HEADER} header; members: {names[:5]})")
    strange = [name for name in names if not name.endswith(".npy")]
    if strange:
        raise fail(f"unexpected members {strange[:5]} (an npconvnet file holds only .npy arrays)")
    total, file_size = sum(info.file_size for info in infos), os.path.getsize(path)
    if total > _MAX_EXPANSION * file_size:
        raise fail(f"the archive declares {total:,} bytes of content in a file of {file_size:,} bytes")
    return {info.filename[:-len(".npy")]: info.file_size for info in infos}


def _read_header(archive, sizes, fail, formats, kind):
    """The header, checked as far as every format shares it: its format and version."""
    if sizes[HEADER] > _MAX_HEADER_BYTES:
        raise fail(f"the {HEADER} header declares {sizes[HEADER]:,} bytes (at most "
                   f"{_MAX_HEADER_BYTES:,} expected)")
    shape, dtype = _peek(archive, HEADER, fail)
    if dtype != np.uint8 or len(shape) != 1:
        raise fail(f"the {HEADER} header must be a 1-D uint8 array, got {dtype} of shape {shape}")
    # NumPy allocates the array its .npy header declares before reading a byte of it.
    if shape[0] > sizes[HEADER]:
        raise fail(f"the {HEADER} header declares {shape[0]:,} bytes in a member of {sizes[HEADER]:,}")
    raw = archive[HEADER]
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(f"the {HEADER} header is not valid UTF-8 JSON ({error})") from None
    found = header.get("format") if isinstance(header, dict) else None
    if found == WEIGHTS_FORMAT and found not in formats:
        raise fail("a weights file (written by save_weights) holds no architecture: build the model "
                   "and call load_weights(model, path)")
    if found not in formats:
        raise fail(f"not an npconvnet {kind} file (the header's format is not "
                   f"{' or '.join(map(repr, formats))})")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"invalid format_version {version!r:.100}")
    if version > FORMAT_VERSION:
        raise fail(f"written in model format version {version}, newer than this npconvnet reads "
                   f"({FORMAT_VERSION}); upgrade npconvnet")
    if found == WEIGHTS_FORMAT and version < DIGEST_VERSION:
        raise fail(f"invalid format_version {version} (weights files begin at {DIGEST_VERSION})")
    return header


def _check_digest(archive, sizes, fail):
    """Recompute the digest from the stored members, each read in chunks, and compare."""
    if DIGEST not in sizes:
        raise fail(f"no {DIGEST} member, which every file of format version {DIGEST_VERSION} or "
                   "newer carries: the file was changed or damaged after it was written")
    _check_member(archive, DIGEST, sizes[DIGEST], [((32,), np.dtype(np.uint8))], fail)
    digest = hashlib.sha256()
    for name in sorted(set(sizes) - {DIGEST}):
        with archive.zip.open(name + ".npy") as stream:
            shape, fortran_order, dtype = _read_npy_header(stream, name, fail)
            digest.update(_digest_line(name, dtype, fortran_order, shape))
            remaining = math.prod(shape) * dtype.itemsize
            while remaining > 0:
                chunk = stream.read(min(remaining, _DIGEST_CHUNK_BYTES))
                if not chunk:
                    break               # cut short: the digest cannot match
                digest.update(chunk)
                remaining -= len(chunk)
    if digest.digest() != archive[DIGEST].tobytes():
        raise fail("the file was changed or damaged after it was written: its contents do not "
                   "match the SHA-256 digest stored in it")


def _check_model_header(header, fail):
    """The entries of a model file's header that loading uses before building the model."""
    required = ("architecture", "dtype", "input_shape", "class_names", "compile", "optimizer_state",
                "history")
    missing = [key for key in required if key not in header]
    if missing:
        raise fail(f"the header lacks {missing}")
    if header["dtype"] not in _DTYPES:
        raise fail(f"dtype must be one of {_DTYPES}, got {header['dtype']!r:.100}")
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
        shape, _, dtype = _read_npy_header(stream, key, fail)
    return shape, dtype


def _read_npy_header(stream, key, fail):
    """``(shape, fortran_order, dtype)`` from the .npy header at the start of ``stream``."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise fail(f"{key} uses .npy format version {version}, expected 1.0 or 2.0")


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
