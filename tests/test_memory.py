"""Memory: fit, evaluate and predict read memory-mapped datasets batch by batch, so a dataset
larger than memory trains, and 100,000 images are scored in bounded memory."""

import tracemalloc

import numpy as np
import pytest

import npconvnet
from npconvnet import data
from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.layers.activations import softmax
from npconvnet.optim import Adam


def write_images(path, count, size=28):
    """A uint8 ``(count, size, size)`` .npy file written slice by slice (never whole in memory),
    with labels: images whose first pixel is odd are class 1."""
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size))
    for start in range(0, count, 10_000):
        rows = np.arange(start, min(start + 10_000, count), dtype=np.uint32)
        images[start:start + len(rows)] = (rows[:, None, None] * 7 + np.arange(size)) % 256
    images.flush()
    del images
    labels = ((np.arange(count, dtype=np.uint32) * 7) % 256 % 2).astype(np.int64)
    return labels


def peak_memory(function):
    """``(result, peak bytes allocated while it ran)``."""
    tracemalloc.start()
    try:
        result = function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def dense_model():
    npconvnet.manual_seed(0)
    model = Sequential(Flatten(), Dense(28 * 28, 2))
    model.compile(optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def hundred_thousand(tmp_path_factory):
    """100,000 MNIST-sized images as an .npy file (78 MB; 314 MB as float32) and their labels."""
    path = tmp_path_factory.mktemp("memory") / "images.npy"
    labels = write_images(path, 100_000)
    np.save(path.with_name("labels.npy"), labels)
    return path, labels


FLOAT_COPY = 100_000 * 28 * 28 * 4


def test_evaluate_on_100000_memory_mapped_images_stays_in_bounded_memory(hundred_thousand):
    path, labels = hundred_thousand
    model = dense_model()
    scores, peak = peak_memory(lambda: model.evaluate(str(path), labels, batch_size=500))
    assert peak < FLOAT_COPY / 40            # below 8 MB, where a float copy takes 314 MB
    # The same scores as the first 2,000 images scored in memory, scaled by hand, on their own.
    images = np.load(path, mmap_mode="r")
    head = data.scale(np.asarray(images[:2000])).reshape(2000, -1)
    expected = np.mean(model.forward(head).argmax(axis=1) == labels[:2000])
    assert model.evaluate(images[:2000], labels[:2000])["accuracy"] == expected
    assert 0 <= scores["accuracy"] <= 1 and np.isfinite(scores["loss"])


def test_predict_on_100000_images_from_an_npy_path_stays_in_bounded_memory(hundred_thousand):
    path, _ = hundred_thousand
    model = dense_model()
    probabilities, peak = peak_memory(lambda: model.predict(path, batch_size=500))
    result_size = 100_000 * 2 * 4
    assert peak < result_size + FLOAT_COPY / 40
    last = data.scale(np.asarray(np.load(path, mmap_mode="r")[-3:])).reshape(3, -1)
    np.testing.assert_allclose(probabilities[-3:], softmax(model.forward(last), axis=1), rtol=1e-6)


def test_fit_reads_a_memory_mapped_dataset_batch_by_batch(tmp_path):
    count = 5_000
    labels = write_images(tmp_path / "images.npy", count)
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4 * 14 * 14, 2))
    model.compile(optimizer=Adam(lr=1e-3))
    history, peak = peak_memory(lambda: model.fit(images, labels, epochs=1, batch_size=32,
                                                     validation_split=0.1, seed=0, verbose=0))
    float_copy = count * 28 * 28 * 4                 # 15.7 MB
    assert peak < float_copy / 4
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["val_loss"][0])


def test_fit_on_npy_paths_trains_exactly_as_on_the_arrays(tmp_path):
    labels = write_images(tmp_path / "images.npy", 300, size=12)
    np.save(tmp_path / "labels.npy", labels)
    runs = []
    for x, y in [(np.load(tmp_path / "images.npy"), labels),
                 (str(tmp_path / "images.npy"), tmp_path / "labels.npy")]:
        npconvnet.manual_seed(0)
        model = Sequential(Flatten(), Dense(144, 2))
        model.compile(optimizer=Adam(lr=1e-2))
        model.fit(x, y, epochs=2, batch_size=32, validation_data=(x, y), seed=0, verbose=0)
        runs.append(model.state_dict())
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[0][name])


# Bad .npy paths

def test_a_missing_npy_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"predict: x: no such file: .*nothing.npy"):
        dense_model().predict(tmp_path / "nothing.npy")


def test_an_npz_archive_is_not_taken_for_an_array(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"data.npz is an .npz archive; give one .npy file per array"):
        dense_model().predict(tmp_path / "data.npz")


@pytest.mark.parametrize("content", [b"not an array at all", b"\x93NUMPY\x01\x00{'descr': '<u1'"])
def test_a_file_that_is_not_an_npy_array_is_refused(content, tmp_path):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(ValueError, match=r"evaluate: x: .*x.npy is not a readable .npy array"):
        dense_model().evaluate(tmp_path / "x.npy", np.zeros(2, int))


def test_an_npy_file_declaring_more_data_than_it_holds_is_refused_unread(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|u1", "fortran_order": False,
                                                   "shape": (10**9, 28, 28)})
        file.write(bytes(1000))
    with pytest.raises(ValueError, match="is not a readable .npy array"):
        dense_model().predict(path)


def test_a_pickled_npy_file_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npy array"):
        dense_model().predict(tmp_path / "x.npy")
