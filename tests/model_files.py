"""Taking model files apart and putting them back together, for the tests that damage them.

``seal`` recomputes a file's digest from the module docstring's definition, independently of
the library: a test of what loading checks beyond the digest seals its edited file, as anyone
editing a file on purpose could.
"""

import hashlib
import io
import json
import math
import zipfile

import numpy as np

DIGEST = "digest.npy"


def read_members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def zipped(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def write_members(path, members, seal=True):
    """Write ``members`` as the archive ``path``, with a recomputed digest unless ``seal=False``
    (or the members hold none, as files before format version 3)."""
    if seal and DIGEST in members:
        members = sealed(members)
    with open(path, "wb") as file:
        file.write(zipped(members))


def npy_bytes(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def header_of(members):
    return json.loads(np.load(io.BytesIO(members["model.json.npy"])).tobytes())


def set_header(members, header):
    members["model.json.npy"] = npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))


def edit_header(members, change):
    header = header_of(members)
    change(header)
    set_header(members, header)


def npy_parts(content):
    """``(shape, fortran_order, dtype, data)`` of a .npy file's bytes."""
    stream = io.BytesIO(content)
    major, _ = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(stream)
    return shape, fortran_order, dtype, stream.read(math.prod(shape) * dtype.itemsize)


def digest_of(members):
    """SHA-256 over every member but the digest, in the order of their names without ".npy":
    a line of JSON with the name, descr, fortran_order and shape, then the data bytes."""
    digest = hashlib.sha256()
    names = sorted(member[:-len(".npy")] for member in members if member != DIGEST)
    for name in names:
        shape, fortran_order, dtype, data = npy_parts(members[name + ".npy"])
        line = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
                "name": name, "shape": list(shape)}
        digest.update(json.dumps(line, sort_keys=True).encode() + b"\n")
        digest.update(data)
    return digest.digest()


def sealed(members):
    return {**members, DIGEST: npy_bytes(np.frombuffer(digest_of(members), np.uint8))}


def as_format_version(members, version):
    """The members as a file of format ``version`` 1 or 2 was written: no digest, that version."""
    members = {name: content for name, content in members.items() if name != DIGEST}
    edit_header(members, lambda header: header.update(format_version=version))
    return members
