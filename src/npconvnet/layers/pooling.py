"""Pooling: a reduction over each window that ``im2col`` lays out."""

import numpy as np

from ..windows import as_pair, col2im, im2col, output_size, resolve_padding
from .base import Layer


class _Pool2D(Layer):
    """Shared window handling of max and average pooling.

    ``(N, C, H, W) -> (N, C, H', W')``, ``H' = (H + 2 * pad_h - kh) // stride_h + 1``
    (windows that would run past the padded input are dropped, as in PyTorch's default).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        owner = f"{type(self).__name__}(kernel_size={kernel_size!r})"
        self.kernel_size = as_pair(kernel_size, "kernel_size", owner)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", owner)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{owner}: kernel_size and stride must be positive, got "
                             f"kernel_size={kernel_size!r}, stride={stride!r}")
        self.padding = as_pair(0 if padding == "valid" else padding, "padding", owner)
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{owner}: padding must be between 0 and half the kernel size, "
                             f"got padding={padding!r}")

    def output_shape(self, input_shape):
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, input_shape[-2:])
        return tuple(input_shape[:-2]) + output_size(input_shape[-2:], self.kernel_size, self.stride, padding)

    def _windows(self, x, pad_value):
        """``(N, C, H, W) -> (N, C, kh*kw, H', W')``, and the padding used."""
        self._check_input(x, 4)
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, x.shape[2:])
        out_h, out_w = output_size(x.shape[2:], self.kernel_size, self.stride, padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{self!r}: input of size {x.shape[2]}x{x.shape[3]} is smaller than "
                             f"the pooling window {self.kernel_size}")
        cols = im2col(x, self.kernel_size, self.stride, padding, pad_value)
        return cols.reshape(*x.shape[:2], -1, out_h, out_w), padding

    def _unwindow(self, grad_windows, input_shape, padding):
        """Send each window's gradient back onto the input pixels it came from."""
        n, c, _, out_h, out_w = grad_windows.shape
        grad_cols = grad_windows.reshape(n, c, *self.kernel_size, out_h, out_w)
        return col2im(grad_cols, input_shape, self.stride, padding)

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


class MaxPool2D(_Pool2D):
    """``y[n, c, i, j] = max over the window (i, j) of x[n, c]``.

    The gradient flows only to the entry that was the maximum (the first one in row-major order
    when several tie, as in PyTorch): ``dL/dx = dL/dy`` there, 0 elsewhere. Padding counts as -inf.
    """

    def forward(self, x):
        windows, padding = self._windows(x, pad_value=-np.inf)
        argmax = windows.argmax(axis=2)[:, :, None]                   # (N, C, 1, H', W')
        out = np.take_along_axis(windows, argmax, axis=2)[:, :, 0]
        self._remember(out, input_shape=x.shape, padding=padding, argmax=argmax,
                       window_shape=windows.shape)
        return out

    def backward(self, grad_output):
        saved = self._recall(grad_output)
        grad_windows = np.zeros(saved.window_shape, dtype=grad_output.dtype)
        np.put_along_axis(grad_windows, saved.argmax, grad_output[:, :, None], axis=2)
        return self._unwindow(grad_windows, saved.input_shape, saved.padding)


class AvgPool2D(_Pool2D):
    """``y[n, c, i, j] = mean over the window (i, j) of x[n, c]`` (zero padding counts in the mean,
    PyTorch's ``count_include_pad=True``). Each input pixel gets ``dL/dy / (kh * kw)`` from
    every window it belongs to."""

    def forward(self, x):
        windows, padding = self._windows(x, pad_value=0.0)
        out = windows.mean(axis=2)
        self._remember(out, input_shape=x.shape, padding=padding, window_shape=windows.shape)
        return out

    def backward(self, grad_output):
        saved = self._recall(grad_output)
        window_size = saved.window_shape[2]
        grad_windows = np.broadcast_to(grad_output[:, :, None] / window_size, saved.window_shape)
        return self._unwindow(grad_windows, saved.input_shape, saved.padding)


class GlobalAvgPool2D(Layer):
    """``(N, C, H, W) -> (N, C)``: ``y[n, c] = mean over (h, w) of x[n, c, h, w]``."""

    def output_shape(self, input_shape):
        return tuple(input_shape[:-2])

    def forward(self, x):
        self._check_input(x, 4)
        out = x.mean(axis=(2, 3))
        self._remember(out, input_shape=x.shape)
        return out

    def backward(self, grad_output):
        saved = self._recall(grad_output)
        height, width = saved.input_shape[2:]
        return np.broadcast_to(grad_output[:, :, None, None] / (height * width),
                               saved.input_shape).copy()
