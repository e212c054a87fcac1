"""The layers' mathematics written plainly: convolution, pooling and dense, forward and backward.

The layers are fast: a convolution builds its columns one cache-sized block at a time, keeps
buffers from one call to the next, stores images batch-last and has two ways to its
gradients. These functions compute the same values as directly as the formulas, to read and to
test the layers against (``tests/test_reference.py``). Arrays are plain ``(N, C, H, W)`` and
every step takes the whole batch:

* :func:`im2col` copies the window of each output pixel ``(i, j)`` into a row, so that a
  convolution is one matrix product; :func:`col2im`, its adjoint, is the same loop with ``=``
  turned into ``+=``: each window's gradient flows back onto the pixels it was copied from.
* A convolution is ``y = cols @ W^T + b``; backward is two more products and a col2im.
* A pooling reduces each window's row of entries; backward builds the gradient of those rows
  and hands it to col2im.

The loops run over output pixels in Python, which is slow on real images: the layers are what
trains. Padding takes the layers' forms (an int, a pair, ``((top, bottom), (left, right))``,
``"valid"``, ``"same"`` or ``"full"``), resolved by the same helpers (:mod:`npconvnet.windows`).
"""

import numpy as np

from .windows import as_pair, check_padding, output_size, padded_shape, resolve_padding


def im2col(x_pad, kernel_size, stride):
    """``(N, C, H, W) -> (N, H', W', C, kh, kw)``: ``cols[n, i, j]`` is the window of output
    pixel ``(i, j)`` of image ``n``, ``x_pad[n, :, i*sh : i*sh + kh, j*sw : j*sw + kw]``."""
    (kh, kw), (sh, sw) = kernel_size, stride
    out_h, out_w = output_size(x_pad.shape[2:], kernel_size, stride, (0, 0, 0, 0))
    cols = np.empty((len(x_pad), out_h, out_w, x_pad.shape[1], kh, kw), x_pad.dtype)
    for i, j in np.ndindex(out_h, out_w):
        cols[:, i, j] = x_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
    return cols


def col2im(grad_cols, x_pad_shape, stride):
    """Adjoint of :func:`im2col`: ``(N, H', W', C, kh, kw) -> (N, C, H, W)`` of ``x_pad_shape``,
    the sum over the windows of each window's gradient, placed where the window was."""
    (sh, sw), (kh, kw) = stride, grad_cols.shape[-2:]
    grad_x_pad = np.zeros(x_pad_shape, grad_cols.dtype)
    for i, j in np.ndindex(grad_cols.shape[1:3]):
        grad_x_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += grad_cols[:, i, j]
    return grad_x_pad


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """``x (N, C, H, W)``, ``weight (F, C, kh, kw)``, ``bias (F,)`` -> ``y (N, F, H', W')``::

        y[n, f, i, j] = bias[f] + sum_{c, u, v} weight[f, c, u, v] * x_pad[n, c, i*sh + u, j*sw + v]

    that is ``y = cols @ W^T + b``, with one row of ``cols`` per output pixel of the batch
    ``(N*H'*W', C*kh*kw)`` and ``W`` the ``(F, C*kh*kw)`` matrix of the filters.
    """
    cols, _ = _windows(x, _kernel_size_of(weight, x), stride, padding)
    out = cols.reshape(-1, weight[0].size) @ weight.reshape(len(weight), -1).T
    if bias is not None:
        out = out + _checked_bias(bias, len(weight))
    return out.reshape(*cols.shape[:3], len(weight)).transpose(0, 3, 1, 2)


def conv2d_backward(x, weight, grad_output, stride=1, padding=0):
    """``(dL/dx, dL/dW, dL/db)`` of :func:`conv2d`: the chain rule through ``y = cols @ W^T + b``,
    with ``dL/dy`` as the ``(N*H'*W', F)`` matrix of one row per output pixel::

        dL/db = sum of the rows of dL/dy      dL/dW = dL/dy^T @ cols      dL/dx = col2im(dL/dy @ W)

    (col2im then cuts the padding's share away).
    """
    cols, to_input = _windows(x, _kernel_size_of(weight, x), stride, padding)
    grad_output = _checked(grad_output, (len(x), len(weight), *cols.shape[1:3]))
    grad_rows = grad_output.transpose(0, 2, 3, 1).reshape(-1, len(weight))        # (N*H'*W', F)
    grad_bias = grad_rows.sum(axis=0)
    grad_weight = (grad_rows.T @ cols.reshape(len(grad_rows), -1)).reshape(weight.shape)
    grad_x = to_input(grad_rows @ weight.reshape(len(weight), -1))
    return grad_x, grad_weight, grad_bias


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """``y[n, c, i, j] = max over the window (i, j) of x_pad[n, c]``, the padding counting as -inf."""
    windows, _ = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    return windows.max(axis=-1).transpose(0, 3, 1, 2)


def max_pool2d_backward(x, grad_output, kernel_size, stride=None, padding=0):
    """dL/dx of :func:`max_pool2d`: each window's ``dL/dy`` goes to its maximum (the first in
    row-major order where several tie, as in PyTorch), nothing to its other entries."""
    windows, to_input = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    is_max = np.arange(windows.shape[-1]) == windows.argmax(axis=-1)[..., None]
    return to_input(_pool_gradient(grad_output, windows) * is_max)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """``y[n, c, i, j] = mean over the window (i, j) of x_pad[n, c]``, the zero padding counting in
    the mean (PyTorch's ``count_include_pad=True``)."""
    windows, _ = _pool_windows(x, kernel_size, stride, padding, 0.0)
    return windows.mean(axis=-1).transpose(0, 3, 1, 2)


def avg_pool2d_backward(x, grad_output, kernel_size, stride=None, padding=0):
    """dL/dx of :func:`avg_pool2d`: every entry of a window gets ``dL/dy / (kh * kw)``."""
    windows, to_input = _pool_windows(x, kernel_size, stride, padding, 0.0)
    return to_input(np.broadcast_to(_pool_gradient(grad_output, windows) / windows.shape[-1], windows.shape))


def dense(x, weight, bias=None):
    """``x (N, in_features)``, ``weight (out_features, in_features)`` -> ``y = x @ W^T + b``."""
    _check_array(x, 2, "x", "(N, in_features)")
    _check_array(weight, 2, "weight", "(out_features, in_features)")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"npconvnet.reference.dense: x has {x.shape[1]} features, the weight of shape "
                         f"{weight.shape} expects {weight.shape[1]}")
    out = x @ weight.T
    return out if bias is None else out + _checked_bias(bias, len(weight))


def dense_backward(x, weight, grad_output):
    """``(dL/dx, dL/dW, dL/db)`` of :func:`dense`: ``dL/dy @ W``, ``dL/dy^T @ x``, ``sum_n dL/dy``."""
    grad_output = _checked(grad_output, dense(x, weight).shape)
    return grad_output @ weight, grad_output.T @ x, grad_output.sum(axis=0)


def _windows(x, kernel_size, stride, padding, pad_value=0.0):
    """``im2col`` of ``x`` padded with ``pad_value``, and the function that takes a gradient of
    those columns (any array of their size) back to dL/dx: col2im, then the padding cut off."""
    _check_array(x, 4, "x", "(N, C, H, W)")
    owner = f"npconvnet.reference (kernel_size={kernel_size})"
    stride = as_pair(stride, "stride", owner)
    if min(kernel_size) < 1 or min(stride) < 1:
        raise ValueError(f"{owner}: kernel_size and stride must be positive, got stride={stride}")
    top, bottom, left, right = padding = resolve_padding(check_padding(padding, owner), kernel_size, stride,
                                                         x.shape[2:])
    if min(output_size(x.shape[2:], kernel_size, stride, padding)) < 1:
        raise ValueError(f"{owner}: an input of size {x.shape[2]}x{x.shape[3]} with padding {padding} "
                         "is smaller than the kernel")
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    cols = im2col(x_pad, kernel_size, stride)

    def to_input(grad_cols):
        grad_x_pad = col2im(grad_cols.reshape(cols.shape), padded_shape(x.shape, padding), stride)
        return grad_x_pad[:, :, top:top + x.shape[2], left:left + x.shape[3]]

    return cols, to_input


def _pool_windows(x, kernel_size, stride, padding, pad_value):
    """The windows of a pooling as ``(N, H', W', C, kh*kw)``, one row of entries per window and
    channel, and :func:`_windows`'s way back to dL/dx."""
    kernel_size = as_pair(kernel_size, "kernel_size", "npconvnet.reference pooling")
    cols, to_input = _windows(x, kernel_size, kernel_size if stride is None else stride, padding, pad_value)
    return cols.reshape(*cols.shape[:4], -1), to_input


def _pool_gradient(grad_output, windows):
    """``dL/dy (N, C, H', W')`` as ``(N, H', W', C, 1)``, one value per row of ``windows``."""
    n, out_h, out_w, channels = windows.shape[:4]
    return _checked(grad_output, (n, channels, out_h, out_w)).transpose(0, 2, 3, 1)[..., None]


def _kernel_size_of(weight, x):
    """A convolution's kernel size, once its weight is known to fit ``x``."""
    _check_array(weight, 4, "weight", "(F, C, kh, kw)")
    if np.ndim(x) == 4 and weight.shape[1] != x.shape[1]:
        raise ValueError(f"npconvnet.reference.conv2d: x has {x.shape[1]} channels, the weight of shape "
                         f"{weight.shape} expects {weight.shape[1]}")
    return weight.shape[2:]


def _check_array(array, ndim, name, layout):
    if not isinstance(array, np.ndarray) or array.ndim != ndim or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"npconvnet.reference: {name} must be a {ndim}-D floating-point array {layout}, got "
                         f"{getattr(array, 'dtype', type(array).__name__)} of shape {np.shape(array)}")


def _checked_bias(bias, features):
    if np.shape(bias) != (features,):
        raise ValueError(f"npconvnet.reference: bias has shape {np.shape(bias)}, expected ({features},), "
                         "one value per output channel or feature")
    return bias


def _checked(grad_output, expected_shape):
    """``grad_output`` as an array, once it has the forward output's shape."""
    if np.shape(grad_output) != tuple(expected_shape):
        raise ValueError(f"npconvnet.reference: grad_output has shape {np.shape(grad_output)}, expected "
                         f"{tuple(expected_shape)}, the shape of the forward output")
    return np.asarray(grad_output)
