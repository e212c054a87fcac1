"""Sliding windows: the one mechanism behind convolution and pooling.

A window operation visits, for each of the ``kh * kw`` kernel offsets ``(u, v)``, the strided
view of the input that holds entry ``(u, v)`` of every window (:func:`window`). Pooling reduces
over these views directly; ``im2col`` copies them into the rows of one matrix, so that a
convolution of the whole batch becomes a single matrix product; ``col2im`` is its adjoint: it
adds each row back onto the pixels it came from, which is exactly the backward pass of
``im2col`` (overlapping windows accumulate their gradients). The loops run over kernel offsets
only; each step moves a whole strided slice of the batch, never one sample, channel or pixel.

Memory layout: arrays are always indexed ``(N, C, H, W)``, but the layers store images
*batch-last*, as ``(C, H, W, N)`` in memory (an ``(N, C, H, W)`` view with permuted strides,
see :func:`batch_last`). In that order a channel of the whole batch is one contiguous block,
so the matrix product of a convolution reads and writes it without a transpose copy; and the
batch is the innermost axis, so a window view keeps rows of ``W' * N`` contiguous values
(instead of ``W'``): the copies of ``im2col``, the additions of ``col2im`` and the pooling
reductions run in long inner loops. Element-wise NumPy operations keep the order of their
inputs. Any other layout, such as a C-contiguous batch from the user, is accepted and simply
costs one copy.
"""

import itertools
import math

import numpy as np


def as_pair(value, name, owner):
    """``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``; a clear error for anything else."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")


def check_padding(padding, owner):
    """Validate a padding argument; return it in a canonical, JSON-friendly form.

    Accepted: ``"valid"``, ``"same"``, ``"full"``, an int, a pair ``(ph, pw)`` (both sides),
    or a pair of pairs ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        if padding not in ("valid", "same", "full"):
            raise ValueError(f"{owner}: padding must be 'valid', 'same', 'full', an int or a pair, "
                             f"got {padding!r}")
        return padding
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        sides = [as_pair(p, "padding", owner) for p in padding]
        padding = (sides[0], sides[1])
        flat = sides[0] + sides[1]
    else:
        padding = as_pair(padding, "padding", owner)
        flat = padding
    if min(flat) < 0:
        raise ValueError(f"{owner}: padding must not be negative, got {padding!r}")
    return padding


def resolve_padding(padding, kernel_size, stride, input_size):
    """The padding actually added, ``(top, bottom, left, right)``, for an input of ``(H, W)``.

    ``"same"`` pads so that the output size is ``ceil(input / stride)``, the odd pixel (if any)
    going to the bottom/right as in TensorFlow and PyTorch; ``"full"`` pads ``kernel - 1`` on
    every side; ``"valid"`` pads nothing.
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "full":
        return (kernel_size[0] - 1, kernel_size[0] - 1, kernel_size[1] - 1, kernel_size[1] - 1)
    if padding == "same":
        sides = []
        for size, kernel, step in zip(input_size, kernel_size, stride):
            total = max((math.ceil(size / step) - 1) * step + kernel - size, 0)
            sides += [total // 2, total - total // 2]
        return tuple(sides)
    if isinstance(padding[0], tuple):
        return padding[0] + padding[1]
    return (padding[0], padding[0], padding[1], padding[1])


def output_size(input_size, kernel_size, stride, padding):
    """``(H', W')`` of the windows over an ``(H, W)`` input with resolved ``padding``."""
    top, bottom, left, right = padding
    return ((input_size[0] + top + bottom - kernel_size[0]) // stride[0] + 1,
            (input_size[1] + left + right - kernel_size[1]) // stride[1] + 1)


def window(array, offset, stride, out_size):
    """One kernel entry of every window at once: the view ``array[..., i * sh + u, j * sw + v]``
    over all window positions ``(i, j)``, for the kernel offset ``(u, v)``; shape ``(..., H', W')``.

    Every sliding-window operation below is a short loop of this over the ``kh * kw`` offsets.
    """
    (u, v), (sh, sw), (out_h, out_w) = offset, stride, out_size
    return array[..., u:u + sh * (out_h - 1) + 1:sh, v:v + sw * (out_w - 1) + 1:sw]


def kernel_offsets(kernel_size):
    """``(u, v)`` for every entry of a ``kh x kw`` kernel, in row-major order."""
    return list(itertools.product(range(kernel_size[0]), range(kernel_size[1])))


def batch_last(shape, dtype, fill=0.0):
    """An ``(N, C, H, W)`` array stored as ``(C, H, W, N)``, filled with ``fill`` (None: left
    uninitialised, for an array that is about to be written over).

    The layers keep images in this order in memory (see the module docstring); the array is
    indexed as usual, only its strides differ.
    """
    n, c, h, w = shape
    array = np.empty((c, h, w, n), dtype) if fill is None else np.full((c, h, w, n), fill, dtype)
    return array.transpose(3, 0, 1, 2)


def is_batch_last(x):
    """Whether a 4-D array is stored as ``(C, H, W, N)``."""
    return x.ndim == 4 and x.transpose(1, 2, 3, 0).flags.c_contiguous


def has_batch_last_rows(x):
    """Whether each row of each channel of a 4-D array is one contiguous ``(W, N)`` run, as in a
    batch-last array or any block of its rows and columns (which is what a block of outputs reads)."""
    return x.ndim == 4 and x[:, 0, 0].T.flags.c_contiguous


def to_batch_last(x):
    """A batch-last copy of an ``(N, C, H, W)`` array (``x`` itself if it is one already)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def as_matrix(x):
    """``(N, C, H, W) -> (C, H * W * N)``: the matrix a convolution multiplies, with one row
    per channel and one column per pixel of the batch; a view of a batch-last array."""
    return x.transpose(1, 2, 3, 0).reshape(x.shape[1], -1)


def from_matrix(matrix, shape):
    """Inverse of :func:`as_matrix`: the ``(N, C, H, W)`` view of a ``(C, H * W * N)`` matrix."""
    n, c, h, w = shape
    return matrix.reshape(c, h, w, n).transpose(3, 0, 1, 2)


def padded_shape(shape, padding):
    """``(N, C, H, W)`` -> the shape after ``padding`` ``(top, bottom, left, right)``."""
    top, bottom, left, right = padding
    n, c, h, w = shape
    return n, c, h + top + bottom, w + left + right


def pad(x, padding, pad_value=0.0, out=None):
    """``(N, C, H, W) -> (N, C, H + top + bottom, W + left + right)``, batch-last.

    ``padding`` is ``(top, bottom, left, right)``; the border is filled with ``pad_value``.
    ``out``, if given, is the array of that shape to write into.
    """
    top, _, left, _ = padding
    _, _, h, w = x.shape
    if out is None:
        padded = batch_last(padded_shape(x.shape, padding), x.dtype, pad_value)
    else:
        padded = out
        padded.fill(pad_value)
    padded[:, :, top:top + h, left:left + w] = x
    return padded


def im2col(x, kernel_size, stride, padding, out=None):
    """Every window of ``x`` as a column: ``(N, C, H, W) -> (C, kh, kw, H', W', N)``.

    ``cols[c, u, v, i, j, n] = x_pad[n, c, i * sh + u, j * sw + v]``. Channels and kernel
    offsets come first, so that ``cols.reshape(C * kh * kw, H' * W' * N)`` is a single matrix
    whose columns are the windows of the whole batch. Each offset ``(u, v)`` is one strided
    copy of the :func:`window` view, with rows of ``W' * N`` values when ``x`` is batch-last
    (any other input is made batch-last first; a block of a batch-last array's rows and
    columns is used as it is). ``out``, if given, is an array of that shape and dtype to fill.
    """
    if any(padding):
        x = pad(x, padding)
    elif not has_batch_last_rows(x):
        x = to_batch_last(x)
    n, c, h, w = x.shape
    out_size = ((h - kernel_size[0]) // stride[0] + 1, (w - kernel_size[1]) // stride[1] + 1)
    cols = np.empty((c, *kernel_size, *out_size, n), dtype=x.dtype) if out is None else out
    windows = cols.transpose(5, 0, 1, 2, 3, 4)                       # indexed (N, C, kh, kw, H', W')
    for u, v in kernel_offsets(kernel_size):
        windows[:, :, u, v] = window(x, (u, v), stride, out_size)
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, out=None):
    """Adjoint of :func:`im2col`: ``(C, kh, kw, H', W', N) -> (N, C, H, W)``, batch-last.

    ``x[n, c, i * sh + u, j * sw + v] += cols[c, u, v, i, j, n]`` for every window (overlapping
    windows accumulate their gradients), then the padding is cut away (its gradient goes nowhere).
    ``out``, if given, is the padded ``(N, C, H + top + bottom, W + left + right)`` array to add
    into (else a new zero one).
    """
    height, width = input_shape[2:]
    top, _, left, _ = padding
    out_size = output_size((height, width), kernel_size, stride, padding)
    grad = batch_last(padded_shape(input_shape, padding), cols.dtype) if out is None else out
    for u, v in kernel_offsets(kernel_size):
        window(grad, (u, v), stride, out_size)[...] += cols[:, u, v].transpose(3, 0, 1, 2)
    return grad[:, :, top:top + height, left:left + width]


def windows_of_outputs(x_pad, rows, columns, kernel_size, stride):
    """The part of a padded input that the windows of output rows ``rows`` and columns
    ``columns`` (slices) cover: ``x_pad[:, :, rows.start * sh : (rows.stop - 1) * sh + kh,
    columns.start * sw : (columns.stop - 1) * sw + kw]``, a view."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return x_pad[:, :, rows.start * sh:(rows.stop - 1) * sh + kh, columns.start * sw:(columns.stop - 1) * sw + kw]
