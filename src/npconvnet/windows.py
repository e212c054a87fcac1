"""Sliding windows: the one mechanism behind convolution and pooling.

``im2col`` copies every kernel-sized window of a padded image into its own column, so that a
convolution becomes one matrix product and a pooling becomes a reduction over one axis.
``col2im`` is its adjoint: it adds each column back onto the window it came from, which is
exactly the backward pass of ``im2col`` (overlapping windows accumulate their gradients).

Both loop over the ``kh * kw`` kernel offsets only; each step moves a whole strided slice of
the batch, so no Python loop ever runs over samples, channels or pixels.
"""

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


def im2col(x, kernel_size, stride, padding, pad_value=0.0):
    """Every window of ``x``: ``(N, C, H, W) -> (N, C, kh, kw, H', W')``.

    ``cols[n, c, u, v, i, j] = x_pad[n, c, i * sh + u, j * sw + v]``.
    """
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    if any(padding):
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    n, c, h, w = x.shape
    out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = np.empty((n, c, kh, kw, out_h, out_w), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = x[:, :, u:u + sh * (out_h - 1) + 1:sh, v:v + sw * (out_w - 1) + 1:sw]
    return cols


def col2im(cols, input_shape, stride, padding):
    """Adjoint of :func:`im2col`: ``(N, C, kh, kw, H', W') -> (N, C, H, W)``.

    ``x[n, c, i * sh + u, j * sw + v] += cols[n, c, u, v, i, j]`` for every window, then the
    padding is cut away (its gradient goes nowhere).
    """
    n, c, kh, kw, out_h, out_w = cols.shape
    sh, sw = stride
    top, bottom, left, right = padding
    height, width = input_shape[2], input_shape[3]
    x = np.zeros((n, c, height + top + bottom, width + left + right), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            x[:, :, u:u + sh * (out_h - 1) + 1:sh, v:v + sw * (out_w - 1) + 1:sw] += cols[:, :, u, v]
    return x[:, :, top:top + height, left:left + width]
