"""Fuzz the file readers: mutated model files, checkpoints, weights files and IDX files.

    python benchmarks/fuzz_files.py [--count 10000] [--seed 0] [--jobs 1] [--time-limit 10]
    python benchmarks/fuzz_files.py --case 1234 [--seed 0] [--save-dir DIR]    (one case, in full)

Each case takes a valid file written by this npconvnet, changes it and loads it
(``load_model``, ``load_checkpoint``, ``load_weights`` into a model of the same architecture,
or ``read_idx`` on a raw or gzip-compressed IDX file) under a time limit. The changes: byte
flips, truncation and cut-outs, zip members swapped, renamed, deleted or doubled, two members'
.npy headers swapped, the JSON header edited, a .npy header edited, the archive rezipped with
its content unchanged, and (as a deliberate editor could) JSON or array edits sealed with a
recomputed digest; for IDX files, flips, truncation, extension and header edits of the raw
bytes, and flips and cuts of the gzip stream. The counts by outcome are printed for each kind
of file and change:

    refused      a clean ModelFileError (DatasetError for IDX files)
    identical    loaded, and the same as what was saved: the change did not touch the content
    as-stored    (IDX) loaded, not what was saved but what an independent reading of the
                 changed bytes gives: IDX files carry no checksum
    accepted     (sealed edits) loaded a deliberately edited file whose digest matches it
    silent       loaded something other than was saved, or than the file holds; or a refused
                 load_weights that changed the model: must be 0
    leak         any other exception: must be 0
    hang         over the time limit: must be 0

The exit status is 1 when any case is silent, leaked or hung; each is listed with the
command that replays it. Cases depend only on --seed and their number, not on --jobs.
"""

import argparse
import ast
import collections
import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib

# One BLAS thread per process, set before NumPy loads: the loads are small, --jobs spreads them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import npconvnet  # noqa: E402
from npconvnet import Sequential, datasets, serialization  # noqa: E402
from npconvnet.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU  # noqa: E402
from npconvnet.models import load_checkpoint, load_model  # noqa: E402

# The tests' independent IDX reader is the reference here too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from idx_reference import read_idx_independently  # noqa: E402

OUTCOMES = ("refused", "identical", "as-stored", "accepted", "silent", "leak", "hang")
BAD = ("silent", "leak", "hang")
# How the cases are shared among the kinds of file, and the changes made to each kind.
KINDS = {"model": 30, "checkpoint": 25, "weights": 15, "idx": 15, "idx.gz": 15}
NPZ_CHANGES = ("flip", "truncate", "member", "npy-header-swap", "json-edit", "npy-header-edit",
               "rezip", "sealed-json-edit", "sealed-array-edit")
IDX_CHANGES = ("flip", "truncate", "extend", "header-edit")
GZ_CHANGES = ("flip", "truncate", "extend", "header-edit", "gzip-flip", "gzip-truncate")


class Hang(BaseException):
    """Raised by the alarm when a load runs over the time limit (a BaseException, so that no
    ``except Exception`` in the code under test can swallow it)."""


def on_alarm(signum, frame):
    raise Hang()


# The valid files, and what loading them gives

def canonical(value):
    """``value`` as nested tuples that compare equal exactly when the values are the same
    (arrays by dtype, shape and bytes; floats by repr, so that NaN equals NaN)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value)
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(key), canonical(item)) for key, item in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canonical(item) for item in value))
    return (type(value).__name__, repr(value))


def model_content(model, training=None):
    """Everything a model file or checkpoint restores, canonical."""
    optimizer = loss = None
    if model.optimizer is not None:
        optimizer = (type(model.optimizer).__name__, model.optimizer.get_config(),
                     model.optimizer.state_dict()["buffers"])
    if model.loss is not None:
        loss = (type(model.loss).__name__, model.loss.get_config())
    return canonical({
        "class": type(model).__name__, "config": model.get_config(), "state": model.state_dict(),
        "optimizer": optimizer, "loss": loss, "metrics": list(model.metric_names),
        "history": None if model.history is None else model.history.to_dict(),
        "input_shape": model.input_shape, "class_names": model.class_names,
        "preprocessing": model.preprocessing, "training": training})


def build_model():
    return Sequential(Conv2D(1, 2, 3, padding=1), BatchNorm2D(2), ReLU(), MaxPool2D(2), Flatten(),
                      Dropout(0.2), Dense(2 * 4 * 4, 3))


def make_corpus(folder):
    """The valid files (as bytes) and what loading each gives."""
    npconvnet.manual_seed(0)
    model = build_model()
    model.compile(optimizer="adam", metrics=["accuracy"])
    x = np.random.default_rng(0).integers(0, 256, (24, 8, 8)).astype(np.uint8)
    model.fit(x, np.arange(24) % 3, epochs=2, batch_size=8, validation_split=0.25, seed=0, verbose=0,
              checkpoint_dir=folder, callbacks=[npconvnet.callbacks.EarlyStopping(restore_best_weights=True)])
    model.class_names = ["zero", "one", "two"]
    model.preprocessing = "center"
    model.save(os.path.join(folder, "model.npz"))
    serialization.save_weights(model, os.path.join(folder, "weights.npz"))

    target = build_model()             # load_weights' target: another draw of the same architecture
    pristine = target.state_dict()
    checkpoint, training = load_checkpoint(os.path.join(folder, "checkpoint.npz"))
    serialization.load_weights(target, os.path.join(folder, "weights.npz"))
    corpus = {
        "model": (read(folder, "model.npz"),
                  model_content(load_model(os.path.join(folder, "model.npz")))),
        "checkpoint": (read(folder, "checkpoint.npz"), model_content(checkpoint, training)),
        "weights": (read(folder, "weights.npz"), canonical(target.state_dict())),
        "target": (target, pristine),
    }
    samples = [np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3), np.arange(10, dtype=np.uint8) % 3,
               (np.arange(6, dtype=np.int16) - 3) * 1000, np.linspace(-1, 1, 12).reshape(2, 2, 3).astype(np.float32),
               np.arange(4, dtype=np.int32).reshape(2, 2) - 2, np.array([0.5, -2.0]), np.arange(3, dtype=np.int8)]
    idx_files = []
    for index, sample in enumerate(samples):
        datasets.write_idx(os.path.join(folder, f"{index}.idx"), sample)
        idx_files.append((read(folder, f"{index}.idx"), sample))
    corpus["idx"] = idx_files
    return corpus


def read(folder, name):
    with open(os.path.join(folder, name), "rb") as file:
        return file.read()


# Taking archives apart

def members_of(content):
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


def zipped(members, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def npy_split(content):
    """``(header bytes, data bytes)`` of a valid .npy file."""
    major = content[6]
    end = 10 + int.from_bytes(content[8:10], "little") if major == 1 else 12 + int.from_bytes(content[8:12], "little")
    return content[:end], content[end:]


def npy_header(fields):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, fields)
    return buffer.getvalue()


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def sealed(members):
    """``members`` with the digest recomputed, as the module docstring of serialization defines
    it: what someone editing a file on purpose could do."""
    digest = hashlib.sha256()
    rest = sorted((name[:-len(".npy")], content) for name, content in members if name != "digest.npy")
    for name, content in rest:
        stream = io.BytesIO(content)
        try:
            major, _ = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(stream)
        except Exception:       # whatever NumPy raises for a broken .npy header
            continue            # left out of the digest: the loader refuses it anyway
        line = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
                "name": name, "shape": list(shape)}
        digest.update(json.dumps(line, sort_keys=True).encode() + b"\n")
        digest.update(stream.read(math.prod(shape) * dtype.itemsize))
    value = npy_bytes(np.frombuffer(digest.digest(), np.uint8))
    return [(name, content) for name, content in members if name != "digest.npy"] + [("digest.npy", value)]


# Changes

def hot_spots(content, markers, width=64):
    """Offsets at and just after each marker: where zip and .npy headers live."""
    spots = set(range(min(width, len(content))))
    for marker in markers:
        start = content.find(marker)
        while start != -1:
            spots.update(range(start, min(start + width, len(content))))
            start = content.find(marker, start + 1)
    return sorted(spots)


ZIP_MARKERS = [b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b'{"format"']


def flip(content, rng, spots):
    data = bytearray(content)
    for _ in range(rng.integers(1, 5)):
        position = int(rng.choice(spots)) if rng.random() < 0.6 else int(rng.integers(len(data)))
        if rng.random() < 0.5:
            data[position] ^= 1 << int(rng.integers(8))
        else:
            data[position] = int(rng.choice([0, 1, 0x20, 0x7F, 0x80, 0xFF, int(rng.integers(256))]))
    return bytes(data), f"{len(data)} bytes, flips"


def truncate(content, rng, spots):
    cut = int(rng.choice(spots)) if rng.random() < 0.5 else int(rng.integers(len(content)))
    if rng.random() < 0.5:
        return content[:cut], f"cut at {cut}"
    length = int(rng.integers(1, 64))
    return content[:cut] + content[cut + length:], f"{length} bytes cut out at {cut}"


def extend(content, rng, spots):
    extra = bytes(rng.integers(0, 256, int(rng.integers(1, 32)), dtype="uint8"))
    position = int(rng.choice(spots)) if rng.random() < 0.5 else len(content)
    return content[:position] + extra + content[position:], f"{len(extra)} bytes inserted at {position}"


def change_member(content, rng):
    members = members_of(content)
    names = [name for name, _ in members]
    first, second = (int(i) for i in rng.choice(len(members), 2, replace=False))
    how = rng.choice(["swap", "rename", "delete", "double"])
    if how == "swap":
        members[first], members[second] = (names[first], members[second][1]), (names[second], members[first][1])
    elif how == "rename":
        new = names[first].replace("0", "9", 1) if "0" in names[first] else "weights/" + names[first]
        members[first] = (new, members[first][1])
    elif how == "delete":
        del members[first]
    else:
        members.append(members[first] if rng.random() < 0.5 else (names[first], members[second][1]))
    return zipped(members), f"{how} {names[first]} {names[second] if how == 'swap' else ''}".strip()


def swap_npy_headers(content, rng):
    """Two members' .npy headers exchanged, each keeping its data; mostly members whose data
    are of the same size, so that the swap can pass every size check."""
    members = members_of(content)
    parts = [npy_split(data) for _, data in members]
    pairs = [(i, j) for i in range(len(members)) for j in range(i + 1, len(members))
             if parts[i][0] != parts[j][0] and len(parts[i][1]) == len(parts[j][1])]
    if pairs and rng.random() < 0.8:
        first, second = pairs[int(rng.integers(len(pairs)))]
    else:
        first, second = (int(i) for i in rng.choice(len(members), 2, replace=False))
    (name_1, _), (name_2, _) = members[first], members[second]
    members[first] = (name_1, parts[second][0] + parts[first][1])
    members[second] = (name_2, parts[first][0] + parts[second][1])
    return zipped(members), f"headers of {name_1} and {name_2}"


JSON_VALUES = [None, True, False, 0, 1, -1, 2, 3, 7, 2**31, 2**63, 10**20, -10**20, 0.5, 1e-7, 1e308,
               float("nan"), float("inf"), "", "x", "center", "relu", "Conv2D", "Adam", "valid", "same",
               [], [1], [1, 2], [[1, 1], [1, 1]], {}, {"a": 1}, {"class": "ReLU", "config": {}}]


def edit_json(document, rng):
    """``document`` with one value somewhere in it replaced, tweaked or deleted."""
    document = json.loads(json.dumps(document))
    parent, key, node, path = None, None, document, []
    while isinstance(node, (dict, list)) and node and (parent is None or rng.random() < 0.75):
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, keys[int(rng.integers(len(keys)))]
        node = node[key]
        path.append(key)
    if parent is None:
        return JSON_VALUES[int(rng.integers(len(JSON_VALUES)))], "the whole header replaced"
    how = rng.choice(["replace", "tweak", "delete"])
    if how == "delete":
        del parent[key]
    elif how == "tweak" and isinstance(node, bool):
        parent[key] = not node
    elif how == "tweak" and isinstance(node, (int, float)):
        parent[key] = [node + 1, node - 1, node * 2, -node, 0][int(rng.integers(5))]
    elif how == "tweak" and isinstance(node, str):
        parent[key] = [node + "x", node[:-1], node.upper(), ""][int(rng.integers(4))]
    elif how == "tweak" and isinstance(node, list):
        parent[key] = node[:-1] if rng.random() < 0.5 else node + node[-1:]
    else:
        parent[key] = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
    return document, f"{how} at {path}"


def with_edited_json(content, rng, seal):
    members = members_of(content)
    index = [name for name, _ in members].index("model.json.npy")
    header = json.loads(np.load(io.BytesIO(members[index][1])).tobytes())
    header, what = edit_json(header, rng)
    members[index] = ("model.json.npy", npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8)))
    return zipped(sealed(members) if seal else members), what


DESCRS = ["<f4", ">f4", "<f8", "<f2", "<i4", "<i8", "|u1", "|i1", "|b1", "<c8", "|O", "<U2", "|V4", "<M8[s]"]


def edit_npy_header(content, rng, seal):
    """A member's .npy header rewritten with another dtype, shape or order, or its text
    flipped; its data kept (or, sealed, sometimes the whole member replaced)."""
    members = members_of(content)
    index = int(rng.integers(len(members)))
    name, data = members[index]
    header, body = npy_split(data)
    fields = ast.literal_eval(header[10:].decode("latin1").strip()) if header[6] == 1 else None
    how = rng.choice(["descr", "shape", "order", "text", "replace"] if seal else ["descr", "shape", "order", "text"])
    if how == "text" or fields is None:
        spot = int(rng.integers(10, len(header)))
        header = header[:spot] + bytes([int(rng.integers(32, 127))]) + header[spot + 1:]
        new = header + body
    elif how == "replace":
        dtype = DESCRS[int(rng.integers(len(DESCRS) - 2))]      # no void or datetime
        shape = tuple(int(n) for n in rng.integers(0, 6, int(rng.integers(0, 4))))
        value = [0, 1, -1, 1e30, float("nan"), float("inf")][int(rng.integers(6))]
        with np.errstate(all="ignore"):
            new = npy_bytes(np.full(shape, value).astype(dtype))
    else:
        shape = list(fields["shape"])
        if how == "descr":
            fields["descr"] = DESCRS[int(rng.integers(len(DESCRS)))]
        elif how == "order":
            fields["fortran_order"] = not fields["fortran_order"]
        else:
            choice = rng.choice(["dim", "reverse", "flat", "add", "drop"])
            if choice == "dim" and shape:
                shape[int(rng.integers(len(shape)))] = [0, 1, 2, 3, 2**40, shape[0] + 1][int(rng.integers(6))]
            elif choice == "reverse":
                shape = shape[::-1]
            elif choice == "flat":
                shape = [math.prod(shape)]
            elif choice == "add":
                shape.insert(int(rng.integers(len(shape) + 1)), 1)
            elif shape:
                shape = shape[1:]
            fields["shape"] = tuple(shape)
        new = npy_header(fields) + body
    members[index] = (name, new)
    return zipped(sealed(members) if seal else members), f"{how} of {name}"


def rezip(content, rng):
    """The same members, deflated or in another order: the content is unchanged."""
    members = members_of(content)
    if rng.random() < 0.5:
        return zipped(members, zipfile.ZIP_DEFLATED), "deflated"
    order = rng.permutation(len(members))
    return zipped([members[int(i)] for i in order]), "reordered"


def change_npz(content, change, rng):
    spots = hot_spots(content, ZIP_MARKERS)
    if change == "flip":
        return flip(content, rng, spots)
    if change == "truncate":
        return truncate(content, rng, spots)
    if change == "member":
        return change_member(content, rng)
    if change == "npy-header-swap":
        return swap_npy_headers(content, rng)
    if change == "json-edit":
        return with_edited_json(content, rng, seal=False)
    if change == "npy-header-edit":
        return edit_npy_header(content, rng, seal=False)
    if change == "rezip":
        return rezip(content, rng)
    if change == "sealed-json-edit":
        return with_edited_json(content, rng, seal=True)
    return edit_npy_header(content, rng, seal=True)


def edit_idx_header(raw, rng):
    data = bytearray(raw)
    ndim = data[3]
    how = rng.choice(["type", "ndim", "dim"])
    if how == "type":
        data[2] = int(rng.choice([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]))
    elif how == "ndim":
        data[3] = int(rng.choice([0, 1, 2, 3, 4, 5, 255]))
    else:
        dim = int(rng.integers(ndim))
        old = struct.unpack(">I", data[4 + 4 * dim:8 + 4 * dim])[0]
        new = [0, 1, old + 1, max(old - 1, 0), 2**32 - 1, 2**31][int(rng.integers(6))]
        data[4 + 4 * dim:8 + 4 * dim] = struct.pack(">I", new)
    return bytes(data), f"header {how}"


def change_idx(raw, change, rng):
    spots = list(range(min(len(raw), 24)))
    if change == "flip":
        return flip(raw, rng, spots)
    if change == "truncate":
        return truncate(raw, rng, spots)
    if change == "extend":
        return extend(raw, rng, spots)
    return edit_idx_header(raw, rng)



# One case

def make_case(corpus, seed, index):
    """``(kind, change, description, content, expected)`` of case ``index``; ``expected`` is,
    for an IDX file, the array it was made from and its changed raw bytes (None if not gzip)."""
    rng = np.random.default_rng([seed, index])
    kinds, weights = list(KINDS), np.array(list(KINDS.values()), float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    if kind in ("model", "checkpoint", "weights"):
        change = NPZ_CHANGES[int(rng.integers(len(NPZ_CHANGES)))]
        content, what = change_npz(corpus[kind][0], change, rng)
        return kind, change, what, content, None
    raw, sample = corpus["idx"][int(rng.integers(len(corpus["idx"])))]
    changes = IDX_CHANGES if kind == "idx" else GZ_CHANGES
    change = changes[int(rng.integers(len(changes)))]
    if change.startswith("gzip-"):
        compressed = gzip.compress(raw, mtime=0)
        content, what = (flip if change == "gzip-flip" else truncate)(compressed, rng, list(range(20)))
        try:
            stored = gzip.decompress(content)
        except (OSError, EOFError, zlib.error):
            stored = None
        return kind, change, what, content, (sample, stored)
    stored, what = change_idx(raw, change, rng)
    return kind, change, what, gzip.compress(stored, mtime=0) if kind == "idx.gz" else stored, (sample, stored)


def run_case(corpus, folder, kind, change, content, expected, time_limit):
    """``(outcome, detail)`` of loading ``content`` as a ``kind`` file."""
    path = os.path.join(folder, {"idx": "case.idx", "idx.gz": "case.idx.gz"}.get(kind, "case.npz"))
    with open(path, "wb") as file:
        file.write(content)
    target, pristine = corpus["target"]
    target.load_state_dict(pristine)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        if kind == "model":
            loaded = model_content(load_model(path))
        elif kind == "checkpoint":
            loaded = model_content(*load_checkpoint(path))
        elif kind == "weights":
            serialization.load_weights(target, path)
            loaded = canonical(target.state_dict())
        else:
            array = datasets.read_idx(path)
    except (serialization.ModelFileError, datasets.DatasetError) as error:
        if kind == "weights" and canonical(target.state_dict()) != canonical(pristine):
            return "silent", f"refused, but the model changed: {error}"
        return "refused", str(error)
    except Hang:
        return "hang", f"over {time_limit} s"
    except Exception as error:
        return "leak", "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if kind in ("idx", "idx.gz"):
        sample, stored = expected
        if same_array(array, sample):
            return "identical", ""
        holds = None if stored is None else read_idx_independently(stored)
        if holds is not None and same_array(array, holds.astype(holds.dtype.newbyteorder("="))):
            return "as-stored", ""
        return "silent", f"read {array.dtype} {array.shape}; the bytes hold {holds!r:.200}"
    if loaded == corpus[kind][1]:
        return "identical", ""
    if change.startswith("sealed-"):
        return "accepted", ""
    return "silent", "loaded, but not what was saved"


def same_array(first, second):
    return (first.dtype == second.dtype and first.shape == second.shape
            and np.array_equal(first, second, equal_nan=first.dtype.kind == "f"))


def run_range(arguments):
    """Counts and bad cases of cases ``start`` to ``stop``."""
    start, stop, seed, time_limit = arguments
    counts, bad = collections.Counter(), []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(start, stop):
            kind, change, what, content, expected = make_case(CORPUS, seed, index)
            outcome, detail = run_case(CORPUS, folder, kind, change, content, expected, time_limit)
            counts[kind, change, outcome] += 1
            if outcome in BAD:
                bad.append((index, kind, change, what, outcome, detail))
    return counts, bad


CORPUS = None


def report(counts, elapsed, count):
    rows = sorted({(kind, change) for kind, change, _ in counts}, key=lambda row: (list(KINDS).index(row[0]), row[1]))
    print(f"{'file':<11} {'change':<18}" + "".join(f"{outcome:>10}" for outcome in OUTCOMES))
    totals = collections.Counter()
    for kind, change in rows:
        line = [counts[kind, change, outcome] for outcome in OUTCOMES]
        totals.update(dict(zip(OUTCOMES, line)))
        print(f"{kind:<11} {change:<18}" + "".join(f"{n:>10}" for n in line))
    print(f"{'all':<11} {'':<18}" + "".join(f"{totals[outcome]:>10}" for outcome in OUTCOMES))
    print(f"{count} cases in {elapsed:.0f} s ({count / elapsed:.0f} a second)")
    return totals


def main():
    global CORPUS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="how many cases (default 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per load (default 10)")
    parser.add_argument("--memory-limit", type=float, default=4.0, help="GiB of address space (default 4)")
    parser.add_argument("--case", type=int, help="run only this case and show it in full")
    parser.add_argument("--save-dir", help="with --case: write the changed file there")
    args = parser.parse_args()
    warnings.simplefilter("ignore")          # zipfile warns of the doubled members made here

    with tempfile.TemporaryDirectory() as folder:
        CORPUS = make_corpus(folder)
    signal.signal(signal.SIGALRM, on_alarm)
    limit = int(args.memory_limit * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    if args.case is not None:
        kind, change, what, content, expected = make_case(CORPUS, args.seed, args.case)
        with tempfile.TemporaryDirectory() as folder:
            outcome, detail = run_case(CORPUS, folder, kind, change, content, expected, args.time_limit)
        print(f"case {args.case}: {kind}, {change} ({what}): {outcome}\n{detail}")
        if args.save_dir:
            suffix = {"idx": ".idx", "idx.gz": ".idx.gz"}.get(kind, ".npz")
            name = os.path.join(args.save_dir, f"case-{args.case}{suffix}")
            with open(name, "wb") as file:
                file.write(content)
            print(f"written to {name}")
        return

    started = time.perf_counter()
    bounds = [args.count * part // (args.jobs * 8) for part in range(args.jobs * 8 + 1)]
    ranges = [(start, stop, args.seed, args.time_limit) for start, stop in zip(bounds, bounds[1:])]
    if args.jobs == 1:
        results = [run_range(item) for item in ranges]
    else:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(run_range, ranges)
    counts, bad = collections.Counter(), []
    for part_counts, part_bad in results:
        counts.update(part_counts)
        bad += part_bad
    totals = report(counts, time.perf_counter() - started, args.count)
    for index, kind, change, what, outcome, detail in bad[:20]:
        print(f"\n{outcome}: case {index}, {kind}, {change} ({what}); replay: "
              f"python benchmarks/fuzz_files.py --case {index} --seed {args.seed}\n{detail}")
    sys.exit(1 if any(totals[outcome] for outcome in BAD) else 0)


if __name__ == "__main__":
    main()
