"""An independent reading of an uncompressed IDX file, from the format's definition alone: what
npconvnet.datasets must read from the same bytes (the tests and benchmarks/fuzz_files.py)."""

import math
import struct

import numpy as np

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_independently(raw):
    """The array the IDX bytes ``raw`` hold, or None when they are not a valid IDX file."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES or not 1 <= raw[3] <= 4:
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(shape) * dtype.itemsize:
        return None
    return np.frombuffer(body, dtype).reshape(shape)
