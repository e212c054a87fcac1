"""atomic_write: a file is replaced whole or not at all, and a failed write names the file."""

import errno
import os

import pytest

from npconvnet.atomic import atomic_write


def test_atomic_write_writes_what_the_function_writes_and_returns_the_path(tmp_path):
    path = tmp_path / "notes.txt"
    assert atomic_write(path, lambda file: file.write(b"first")) == str(path)
    atomic_write(path, lambda file: file.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["notes.txt"]


def full_disk_halfway(file):
    file.write(b"half a pic")
    raise OSError(errno.EFBIG, "File too large")


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"the good picture")
    with pytest.raises(OSError) as raised:
        atomic_write(path, full_disk_halfway)
    assert path.read_bytes() == b"the good picture"
    assert os.listdir(tmp_path) == ["curves.png"]
    assert raised.value.errno == errno.EFBIG


def test_a_failed_write_names_the_file_it_was_writing_and_what_was_kept(tmp_path):
    path = tmp_path / "curves.png"
    with pytest.raises(OSError, match=f"cannot write {path}: File too large; nothing was written"):
        atomic_write(path, full_disk_halfway)
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="the file already there was left as it was"):
        atomic_write(path, full_disk_halfway)


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'missing' / 'a.png'}"):
        atomic_write(tmp_path / "missing" / "a.png", lambda file: file.write(b"x"))


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")

    def interrupted(file):
        file.write(b"new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.npz"]


def test_the_new_file_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "shared.txt"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write(path, lambda file: file.write(b"new"))
    assert path.stat().st_mode & 0o777 == 0o640
    atomic_write(tmp_path / "fresh.txt", lambda file: file.write(b"new"))
    assert (tmp_path / "fresh.txt").stat().st_mode & 0o777 == 0o644
