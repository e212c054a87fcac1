"""Matrix products cut into blocks that BLAS runs with its small-matrix kernels.

A convolution's products are thin: the forward ``(F, C*kh*kw) @ (C*kh*kw, H'*W'*N)`` has a few
dozen rows and a hundred thousand columns, and the weight gradient
``(C*kh*kw, H'*W'*N) @ (H'*W'*N, F)`` sums over those hundred thousand. OpenBLAS hands a product
of at most a million multiply-adds to separate small-matrix kernels, which on such thin shapes
are two to six times faster than its general path (86-107 against 20-78 GFLOP/s on an AVX-512
CPU). :func:`matmul` therefore cuts the long axis into blocks that each stay under that size and
runs them all in one stacked NumPy ``matmul`` call. With another BLAS the blocks are simply a
batched product of the same total size. Long row sums (bias gradients, batch statistics) are
matrix-vector products too.
"""

import numpy as np

#: The largest product, in multiply-adds, that OpenBLAS runs with its small-matrix kernels.
SMALL_PRODUCT = 10**6

#: Blocks shorter than this would cost more in calls than the kernels gain: no blocking then.
MIN_BLOCK = 128


def matmul(a, b, out=None):
    """``a @ b`` for ``a`` of shape ``(M, K)`` and ``b`` of shape ``(K, P)`` where the longest
    of ``K`` and ``P`` is much longer than the others.

    Long ``P`` (a convolution's forward pass and its column gradient): blocks of columns,
    ``out[:, j] = a @ b[:, j]``. Long ``K`` (the weight gradient): blocks of the shared axis,
    ``a @ b = sum over j of a[:, j] @ b[j, :]``. ``out``, if given, is filled in place
    (cutting its columns into blocks only splits an axis, which is always a view).
    """
    (m, k), p = a.shape, b.shape[1]
    if p >= k:
        block = _block_length(m * k, p)
        if out is None:
            out = np.empty((m, p), np.result_type(a, b))
        if block is None:
            return np.matmul(a, b, out=out)
        full = p - p % block
        # (count, K, block) @ ... -> (count, M, block): views of the blocks of b's and out's columns.
        np.matmul(a, b[:, :full].reshape(k, -1, block).transpose(1, 0, 2),
                  out=out[:, :full].reshape(m, -1, block).transpose(1, 0, 2))
        if full < p:
            np.matmul(a, b[:, full:], out=out[:, full:])
        return out
    block = _block_length(m * p, k)
    if block is None:
        return np.matmul(a, b, out=out)
    full = k - k % block
    # (count, M, block) @ (count, block, P) -> (count, M, P), summed over the blocks.
    partial = np.matmul(a[:, :full].reshape(m, -1, block).transpose(1, 0, 2),
                        b[:full].reshape(-1, block, p))
    result = partial.sum(axis=0, out=out)
    if full < k:
        result += a[:, full:] @ b[full:]
    return result


def row_sums(matrix):
    """``matrix.sum(axis=1)`` as one matrix-vector product with a vector of ones: BLAS sums long
    rows two to three times faster than NumPy's reduction."""
    return matrix @ np.ones(matrix.shape[1], matrix.dtype)


def _block_length(short_product, length):
    """How many entries of the long axis fit in one small product, or None when blocking
    does not pay (the product is small already, or the blocks would be too short)."""
    block = SMALL_PRODUCT // max(short_product, 1)
    return block if MIN_BLOCK <= block < length else None
