"""Fuzzing the loaders: random bytes and mutated valid files thrown at model files, checkpoints,
IDX files, images and .npy inputs. Every example must end in a correct result or the documented
error (ModelFileError, DatasetError, ImageError, or ValueError/TypeError for model inputs):
never another exception, a crash or a hang.

The examples are derandomised, so CI runs the same ones every time; run with
``NPCONVNET_FUZZ_EXAMPLES=2000`` (and optionally ``NPCONVNET_FUZZ_SEED``) for a longer hunt.
"""

import functools
import gzip
import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

import npconvnet
from npconvnet import datasets, imaging
from npconvnet.datasets import DatasetError, read_idx
from npconvnet.imaging import ImageError
from npconvnet.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.models import load_checkpoint, load_model
from npconvnet.serialization import ModelFileError
from idx_reference import read_idx_independently
from model_files import as_format_version, header_of, npy_bytes, npy_parts, read_members, sealed, set_header, zipped
from synthetic import png_declaring

EXAMPLES = int(os.environ.get("NPCONVNET_FUZZ_EXAMPLES", "0"))
SEED = os.environ.get("NPCONVNET_FUZZ_SEED")


def fuzz(examples):
    """Settings of one fuzz test: ``examples`` examples in CI, deterministic. No deadline: how long
    an example takes depends on the machine's load, and time belongs to the benchmarks."""
    return settings(max_examples=EXAMPLES or examples, deadline=None, derandomize=SEED is None,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def seeded(test):
    return test if SEED is None else seed(int(SEED))(test)


# Mutations

def hot_spots(content, markers, width=48):
    """Offsets within ``width`` bytes after each marker: the headers a mutation should hit."""
    spots = set(range(min(width, len(content))))
    for marker in markers:
        start = content.find(marker)
        while start != -1:
            spots.update(range(start, min(start + width, len(content))))
            start = content.find(marker, start + 1)
    return sorted(spots)


@st.composite
def mutated(draw, original, spots):
    """``original`` with 1 to 4 edits: bytes flipped or set, cut short, extended, deleted or
    inserted, mostly at the ``spots`` where headers and sizes live."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        position = draw(st.one_of(st.sampled_from(spots), st.integers(0, len(data) - 1))) % len(data)
        edit = draw(st.sampled_from(["flip", "set", "truncate", "append", "delete", "insert"]))
        if edit == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set":
            data[position] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif edit == "truncate":
            del data[position:]
        elif edit == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del data[position:position + draw(st.integers(1, 16))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


@st.composite
def edited_json(draw, document):
    """``document`` with one value somewhere in it replaced by random JSON, or one key deleted."""
    document = json.loads(json.dumps(document))
    parent, key = None, None
    node = document
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        parent = node
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    if parent is None:
        return draw(json_values)
    if isinstance(parent, dict) and draw(st.integers(0, 4)) == 0:
        del parent[key]
    else:
        parent[key] = draw(json_values)
    return document


# Model files and checkpoints

def build_model():
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 2, 3, padding=1), BatchNorm2D(2), ReLU(), MaxPool2D(2), Flatten(),
                       Dropout(0.2), Dense(2 * 4 * 4, 3))
    model.compile(optimizer="adam", metrics=["accuracy"])
    return model


class Corpus(dict):
    """The valid files that examples mutate, and the folder they write to (a short repr, so
    that a failing example prints only what was drawn)."""

    def __repr__(self):
        return "<fuzz corpus>"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model file and a checkpoint (with EarlyStopping's best weights) as bytes, the trained
    model, and a folder where each example writes its file."""
    folder = tmp_path_factory.mktemp("fuzz")
    model = build_model()
    x = np.random.default_rng(0).integers(0, 256, (24, 8, 8)).astype(np.uint8)
    y = np.arange(24) % 3
    model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, seed=0, verbose=0,
              checkpoint_dir=folder, callbacks=[npconvnet.callbacks.EarlyStopping(restore_best_weights=True)])
    model.save(folder / "model.npz")
    return Corpus(model=(folder / "model.npz").read_bytes(), trained=model,
                  checkpoint=(folder / "checkpoint.npz").read_bytes(), folder=folder,
                  checkpointed=load_checkpoint(folder / "checkpoint.npz")[0])


ZIP_MARKERS = [b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]


def members_of(content):
    return read_members(io.BytesIO(content))


def with_header(content, header):
    """``content`` with another header, sealed with a matching digest as a deliberate edit can be."""
    members = members_of(content)
    set_header(members, header)
    return zipped(sealed(members))


def saved_state(model):
    """What a model file holds of ``model``: weights, optimizer state and header entries."""
    optimizer = model.optimizer.state_dict()["buffers"] if model.optimizer is not None else None
    history = model.history.to_dict() if model.history is not None else None
    return (model.state_dict(), optimizer, history, model.input_shape, model.class_names,
            model.preprocessing)


def assert_same_saved_state(first, second):
    first, second = saved_state(first), saved_state(second)
    for arrays in (0, 1):
        assert (first[arrays] is None) == (second[arrays] is None)
        if first[arrays] is not None:
            assert first[arrays].keys() == second[arrays].keys()
            for name in first[arrays]:
                np.testing.assert_array_equal(first[arrays][name], second[arrays][name], err_msg=name)
                assert first[arrays][name].dtype == second[arrays][name].dtype
    assert first[2:] == second[2:]


def same_model(first, second):
    try:
        assert_same_saved_state(first, second)
    except AssertionError:
        return False
    return repr(first) == repr(second)


def check_model_file(path, checkpoint=False, original=None):
    """Load ``path``: a ModelFileError, or a model that runs on its input_shape (and, when
    ``path`` is a mutation of a file written now, the ``original`` model unchanged)."""
    try:
        model = load_checkpoint(path)[0] if checkpoint else load_model(path)
    except ModelFileError:
        return
    assert isinstance(model, Sequential)
    if original is not None:
        assert_same_saved_state(model, original)
    if model.input_shape is not None:
        outputs = model.predict(np.zeros((2, *model.input_shape), np.float32))
        assert outputs.shape[0] == 2


def write(files, name, content):
    path = files["folder"] / name
    path.write_bytes(content)
    return path


@seeded
@fuzz(100)
@given(content=st.binary(max_size=3000))
@example(content=b"")
@example(content=b"PK\x05\x06" + bytes(18))
def test_random_bytes_are_no_model(files, content):
    with pytest.raises(ModelFileError):
        load_model(write(files, "random.npz", content))


@seeded
@fuzz(200)
@given(data=st.data())
def test_mutated_model_files_load_or_raise_model_file_error(files, data):
    original = files["model"]
    content = data.draw(mutated(original, hot_spots(original, ZIP_MARKERS)))
    check_model_file(write(files, "mutated.npz", content), original=files["trained"])


@seeded
@fuzz(150)
@given(data=st.data())
def test_model_files_with_an_edited_header_load_or_raise_model_file_error(files, data):
    original = files["model"]
    header = data.draw(edited_json(header_of(members_of(original))))
    check_model_file(write(files, "edited.npz", with_header(original, header)))


@seeded
@fuzz(100)
@given(data=st.data())
def test_checkpoints_with_an_edited_training_state_load_or_raise_model_file_error(files, data):
    original = files["checkpoint"]
    header = header_of(members_of(original))
    header["training"] = data.draw(edited_json(header["training"]))
    check_model_file(write(files, "checkpoint.npz", with_header(original, header)), checkpoint=True)


@seeded
@fuzz(60)
@given(data=st.data())
def test_mutated_checkpoints_load_or_raise_model_file_error(files, data):
    original = files["checkpoint"]
    content = data.draw(mutated(original, hot_spots(original, ZIP_MARKERS)))
    check_model_file(write(files, "mutated-checkpoint.npz", content), checkpoint=True,
                     original=files["checkpointed"])


any_array = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
    st.sampled_from(["float32", "float64", "int8", "uint8", "int64", "bool", "complex64", "<U2"]),
    st.lists(st.integers(0, 5), max_size=4).map(tuple), st.integers(0, 3))


@seeded
@fuzz(100)
@given(data=st.data(), replacement=any_array)
def test_model_files_with_a_replaced_array_load_or_raise_model_file_error(files, data, replacement):
    members = members_of(files["checkpoint"])
    name = data.draw(st.sampled_from(sorted(name for name in members if name != "model.json.npy")))
    members[name] = npy_bytes(replacement)
    check_model_file(write(files, "replaced.npz", zipped(sealed(members))), checkpoint=data.draw(st.booleans()))


# IDX files

def idx_bytes(array):
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    header = bytes([0, 0, codes[array.dtype.str[1:]], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IDX_SAMPLES = [np.arange(60, dtype=np.uint8).reshape(5, 4, 3), np.arange(6, dtype=np.int16) - 3,
               np.linspace(-1, 1, 12).reshape(2, 2, 3).astype(np.float32)]


def check_idx(path, raw):
    """``read_idx(path)``, whose uncompressed content is ``raw``: the array, or DatasetError."""
    expected = read_idx_independently(raw)
    try:
        array = read_idx(path)
    except DatasetError:
        assert expected is None
        return
    assert expected is not None
    assert array.dtype == expected.dtype.newbyteorder("=") and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


@seeded
@fuzz(100)
@given(content=st.binary(max_size=300), compressed=st.booleans())
def test_random_bytes_read_as_idx_give_the_array_or_dataset_error(files, content, compressed):
    if compressed:
        try:
            raw = gzip.decompress(content)
        except (OSError, EOFError, zlib.error):
            with pytest.raises(DatasetError):
                read_idx(write(files, "random.gz", content))
            return
        check_idx(write(files, "random.gz", content), raw)
    else:
        check_idx(write(files, "random", content), content)


@seeded
@fuzz(200)
@given(data=st.data(), sample=st.sampled_from(IDX_SAMPLES), compressed=st.booleans())
def test_mutated_idx_files_give_the_array_or_dataset_error(files, data, sample, compressed):
    raw = data.draw(mutated(idx_bytes(sample), list(range(4 + 4 * sample.ndim))))
    if compressed:
        check_idx(write(files, "mutated.gz", gzip.compress(raw, mtime=0)), raw)
    else:
        check_idx(write(files, "mutated", raw), raw)


@seeded
@fuzz(80)
@given(data=st.data())
def test_mutated_gzip_streams_give_the_array_or_dataset_error(files, data):
    raw = idx_bytes(IDX_SAMPLES[0])
    content = data.draw(mutated(gzip.compress(raw, mtime=0), list(range(20))))
    try:
        unpacked = gzip.decompress(content)
    except (OSError, EOFError, zlib.error):
        with pytest.raises(DatasetError):
            read_idx(write(files, "mutated.gz", content))
        return
    check_idx(write(files, "mutated.gz", content), unpacked)


# Images

def image_bytes(format, mode):
    from PIL import Image
    pixels = np.arange(8 * 6 * 4, dtype=np.uint8).reshape(6, 8, 4) * 5
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


@functools.cache
def sample_images():
    """A small valid file in each format the image fuzzers mutate, made on first use: the tests
    that mutate them ask for the ``pillow`` fixture, which skips them without Pillow."""
    return [image_bytes("PNG", "L"), image_bytes("PNG", "RGBA"), image_bytes("PNG", "P"),
            image_bytes("JPEG", "RGB"), image_bytes("BMP", "RGB"), image_bytes("GIF", "P")]


IMAGE_MARKERS = [b"IHDR", b"PLTE", b"IDAT", b"\xff\xc0", b"\xff\xc4", b"\xff\xda", b"GIF8", b"BM"]


def image_contents():
    mutated_images = st.deferred(lambda: st.sampled_from(sample_images()).flatmap(
        lambda image: mutated(image, hot_spots(image, IMAGE_MARKERS))))
    return st.one_of(st.binary(max_size=400), mutated_images)


@seeded
@fuzz(200)
@given(content=image_contents())
@example(content=png_declaring(20_000, 20_000))
def test_random_and_mutated_images_load_or_raise_image_error(pillow, files, content):
    path = write(files, "image.png", content)
    try:
        image = imaging.load_image(path)
    except ImageError:
        return
    assert image.dtype == np.float32 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
    assert np.all((image >= 0) & (image <= 1))


@seeded
@fuzz(100)
@given(content=image_contents())
@example(content=png_declaring(20_000, 20_000))
def test_image_folders_with_random_and_mutated_images_load_or_raise_dataset_error(pillow, files,
                                                                                   content):
    (files["folder"] / "images" / "digit").mkdir(parents=True, exist_ok=True)
    (files["folder"] / "images" / "digit" / "image.png").write_bytes(content)
    try:
        x, y, class_names = datasets.load_image_folder(files["folder"] / "images")
    except DatasetError:
        return
    assert x.dtype == np.uint8 and x.shape[0] == 1 and list(y) == [0] and class_names == ["digit"]


# .npy inputs to predict

def npy_contents():
    sample = npy_bytes(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8))
    return st.one_of(st.binary(max_size=300), mutated(sample, hot_spots(sample, [b"\x93NUMPY", b"{"], 128)))


@seeded
@fuzz(100)
@given(content=npy_contents())
def test_random_and_mutated_npy_inputs_predict_or_raise_a_clear_error(files, content):
    path = write(files, "x.npy", content)
    try:
        probabilities = files["trained"].predict(path)
    except (ValueError, TypeError) as error:
        assert str(path) in str(error) or "predict" in str(error)
        return
    assert probabilities.shape[1:] == (3,)


# What fuzzing found, kept as fixed examples

def with_central_field(content, member, offset, value):
    """``content`` with a 2-byte field of ``member``'s zip central-directory entry set."""
    data = bytearray(content)
    entry = data.find(b"PK\x01\x02", 0)
    while entry != -1:
        name_length = int.from_bytes(data[entry + 28:entry + 30], "little")
        if data[entry + 46:entry + 46 + name_length] == member.encode():
            data[entry + offset:entry + offset + 2] = value.to_bytes(2, "little")
        entry = data.find(b"PK\x01\x02", entry + 4)
    return bytes(data)


@pytest.mark.parametrize("offset, value, what", [
    (10, 99, "NotImplementedError"),        # an unknown compression method
    (8, 1, "RuntimeError"),                 # the encrypted flag
])
def test_a_zip_member_that_cannot_be_unpacked_is_a_model_file_error(files, offset, value, what):
    content = with_central_field(files["model"], "model.json.npy", offset, value)
    with pytest.raises(ModelFileError, match=what):
        load_model(write(files, "unpackable.npz", content))


def test_a_zip_directory_entry_of_an_unknown_zip_version_is_a_model_file_error(files):
    content = with_central_field(files["checkpoint"], "model.json.npy", 6, 172)   # version 17.2
    with pytest.raises(ModelFileError, match=r"not a readable .npz archive: zip file version 17.2"):
        load_checkpoint(write(files, "version.npz", content))


def test_a_zip_member_with_invalid_lzma_options_is_a_model_file_error(files):
    members = members_of(files["model"])
    members["model.json.npy"] = b"\x09\x14\x05\x00" + b"\xff" * 5 + bytes(100)  # LZMA properties
    content = with_central_field(zipped(members), "model.json.npy", 10, 14)     # method: LZMA
    with pytest.raises(ModelFileError, match="LZMAError"):
        load_model(write(files, "lzma.npz", content))


def test_a_training_state_listing_absurdly_many_arrays_is_refused_before_listing_them(files):
    header = header_of(members_of(files["checkpoint"]))
    header["training"]["arrays"] = 10**20
    path = write(files, "many.npz", with_header(files["checkpoint"], header))
    with pytest.raises(ModelFileError, match="lists 100,000,000,000,000,000,000 arrays, but the file holds"):
        load_checkpoint(path)


def test_an_npy_header_numpy_cannot_tokenize_is_a_clear_error(files):
    content = (b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape':((2, 8, 8), }"
               + b" " * 55 + b"\n" + bytes(128))
    with pytest.raises(ValueError, match="is not a readable .npy array"):
        files["trained"].predict(write(files, "tokens.npy", content))


def test_a_png_with_a_broken_chunk_in_an_image_folder_is_a_dataset_error(pillow, files):
    image = bytearray(sample_images()[0])
    start = image.find(b"IDAT") - 4
    image[start:start + 4] = bytes(4)         # an empty IDAT: Pillow raises SyntaxError
    (files["folder"] / "broken" / "digit").mkdir(parents=True, exist_ok=True)
    (files["folder"] / "broken" / "digit" / "image.png").write_bytes(bytes(image))
    with pytest.raises(DatasetError, match="cannot read this image"):
        datasets.load_image_folder(files["folder"] / "broken")


# Files changed after they were written: the digest refuses each change, which a file without
# one (format versions 1 and 2) cannot tell from the real thing.

def swapped_npy_headers(members):
    """The .npy headers of Adam's step count for parameter 1 and its first moment exchanged,
    each member keeping its data: both still pass as a scalar and as a (2,) array."""
    step, moment = "optimizer/1.step.npy", "optimizer/1.exp_avg.npy"
    header_size = {name: len(members[name]) - len(npy_parts(members[name])[3]) for name in (step, moment)}
    members[step], members[moment] = (members[moment][:header_size[moment]] + members[step][header_size[step]:],
                                      members[step][:header_size[step]] + members[moment][header_size[moment]:])


def fortran_order_set(members):
    content = members["weights/6.weight.npy"]
    members["weights/6.weight.npy"] = content.replace(b"'fortran_order': False", b"'fortran_order': True ")


def flipped_data_byte(members):
    content = bytearray(members["weights/6.weight.npy"])
    content[-1] ^= 0x01
    members["weights/6.weight.npy"] = bytes(content)


def edited_dropout(members):
    header = header_of(members)
    header["architecture"]["config"]["layers"][5]["config"]["p"] = 0.5
    set_header(members, header)


CHANGES = [swapped_npy_headers, fortran_order_set, flipped_data_byte, edited_dropout]


@pytest.mark.parametrize("change", CHANGES)
def test_a_file_changed_after_it_was_written_is_refused_by_its_digest(files, change):
    members = members_of(files["model"])
    change(members)
    path = write(files, "changed.npz", zipped(members))
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value) == (f"{path}: the file was changed or damaged after it was written: "
                                 "its contents do not match the SHA-256 digest stored in it")


# Swapped optimizer headers no longer get through without a digest either: the optimizer's
# state is checked against its parameters (see the test below).
@pytest.mark.parametrize("change", [change for change in CHANGES if change is not swapped_npy_headers])
def test_the_same_change_to_a_file_without_digest_loads_as_another_model(files, change):
    members = as_format_version(members_of(files["model"]), 2)
    change(members)
    changed = load_model(write(files, "changed.npz", zipped(members)))
    assert not same_model(changed, files["trained"])


def test_swapped_optimizer_headers_in_a_file_without_digest_are_refused_by_the_state_check(files):
    members = as_format_version(members_of(files["model"]), 2)
    swapped_npy_headers(members)
    with pytest.raises(ModelFileError, match="buffer '1.exp_avg' has shape"):
        load_model(write(files, "changed.npz", zipped(members)))


def test_a_file_of_format_version_3_without_its_digest_is_refused(files):
    members = members_of(files["model"])
    del members["digest.npy"]
    with pytest.raises(ModelFileError, match="no digest member, which every file of format version 3"):
        load_model(write(files, "undigested.npz", zipped(members)))


def test_a_digest_in_a_file_whose_header_claims_an_older_version_is_refused(files):
    members = members_of(files["model"])
    header = header_of(members)
    header["format_version"] = 2
    set_header(members, header)
    with pytest.raises(ModelFileError, match="format version 2, which has no digest, but the file holds one"):
        load_model(write(files, "downgraded.npz", zipped(sealed(members))))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_files_of_format_versions_1_and_2_load_without_a_digest(files, version, kind):
    members = as_format_version(members_of(files[kind]), version)
    path = write(files, f"version-{version}.npz", zipped(members))
    if kind == "model":
        assert_same_saved_state(load_model(path), files["trained"])
    else:
        model, training = load_checkpoint(path)
        assert_same_saved_state(model, files["checkpointed"])
        assert training["next_epoch"] == 2
