"""Convolution."""

import math

import numpy as np

from ..parameter import Parameter
from ..products import matmul
from ..windows import as_matrix, as_pair, check_padding, col2im, from_matrix, im2col, output_size, resolve_padding
from .base import Layer, init_weight


#: Arrays up to this size are taken to stay in the processor's cache between two operations
#: (a conservative share of a laptop or server L3 cache).
CACHE_BYTES = 8 * 2**20


class Conv2D(Layer):
    """2-D convolution over many channels (a cross-correlation, as PyTorch's ``conv2d``).

    ``(N, C, H, W) -> (N, F, H', W')``, ``H' = (H + pad_top + pad_bottom - kh) // stride_h + 1``::

        y[n, f, i, j] = bias[f] + sum_{c, u, v} weight[f, c, u, v] * x_pad[n, c, i*sh + u, j*sw + v]

    With the windows of the whole batch laid out as the columns of one matrix (``im2col``),
    this is a single matrix product ``y = W @ cols``, ``W`` of shape ``(F, C*kh*kw)`` and
    ``cols`` of shape ``(C*kh*kw, H'*W'*N)``; the backward pass is two more:
    ``dL/dW = dL/dy @ cols^T`` and ``dL/dcols = W^T @ dL/dy``, then ``col2im`` (at stride 1,
    when F <= C, dL/dx is computed as a convolution of dL/dy instead). These products are
    thin (a few dozen rows, ``H'*W'*N`` columns); ``products.matmul`` runs them in blocks.

    ``padding``: an int, a pair, ``((top, bottom), (left, right))``, ``"valid"`` (none),
    ``"same"`` (output size ``ceil(input / stride)``) or ``"full"`` (``kernel - 1`` each side).
    ``weight_init="auto"`` draws He-normal weights; a ``Sequential`` built with the layer switches
    them to Glorot-uniform when no ReLU follows it.
    """

    can_skip_input_grad = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 weight_init="auto"):
        super().__init__()
        owner = f"Conv2D({in_channels}, {out_channels})"
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = as_pair(kernel_size, "kernel_size", owner)
        self.stride = as_pair(stride, "stride", owner)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{owner}: kernel_size and stride must be positive, got "
                             f"kernel_size={kernel_size!r}, stride={stride!r}")
        self.padding = check_padding(padding, owner)
        self.weight_init = weight_init
        self.reset_parameters("he_normal" if weight_init == "auto" else weight_init)
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None

    def reset_parameters(self, method):
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Parameter(init_weight(method, shape, self.in_channels * kh * kw,
                                            self.out_channels * kh * kw))

    def output_shape(self, input_shape):
        """``(C, H, W) -> (F, H', W')`` without computing anything."""
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, input_shape[-2:])
        return (self.out_channels,) + output_size(input_shape[-2:], self.kernel_size, self.stride, padding)

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, x.shape[2:])
        out_h, out_w = output_size(x.shape[2:], self.kernel_size, self.stride, padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{self!r}: input of size {x.shape[2]}x{x.shape[3]} (padding "
                             f"{padding}) is smaller than the kernel {self.kernel_size}")
        n = x.shape[0]
        # One matrix product for the whole batch: (F, C*kh*kw) @ (C*kh*kw, H'*W'*N).
        cols = im2col(x, self.kernel_size, self.stride, padding,
                      out=self._columns((self.in_channels, *self.kernel_size, out_h, out_w, n), x.dtype))
        cols = cols.reshape(-1, out_h * out_w * n)
        out = matmul(self.weight.data.reshape(self.out_channels, -1), cols)      # (F, H'*W'*N)
        if self.bias is not None:
            out += self.bias.data[:, None]
        # Handed on batch-last: the (N, F, H', W') view of the product.
        out = from_matrix(out, (n, self.out_channels, out_h, out_w))
        self._remember(out, input_shape=x.shape, padding=padding, cols=cols)
        return out

    def _columns(self, shape, dtype):
        """The array ``im2col`` fills: the previous call's when the shape matches. The columns
        are the largest array of a convolution (``kh * kw`` times its input), and a fresh one
        costs as much again in page faults as filling it. Only the last forward's backward
        reads them, so overwriting them on the next forward is safe."""
        columns = getattr(self, "_column_buffer", None)
        if columns is None or columns.shape != shape or columns.dtype != dtype:
            columns = self._column_buffer = np.empty(shape, dtype)
        return columns

    def backward(self, grad_output, input_grad=True):
        saved = self._recall(grad_output)
        n, _, out_h, out_w = grad_output.shape
        # (F, H'*W'*N), the layout of the forward product (no copy for a batch-last gradient).
        grad_matrix = as_matrix(grad_output)
        # dL/dW[f, k] = sum over every image and output pixel p of dL/dy[f, p] * cols[k, p],
        # computed as (cols @ dL/dy^T)^T: BLAS runs this orientation faster.
        self.weight.grad = matmul(saved.cols, grad_matrix.T).T.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = grad_matrix.sum(axis=1)
        if not input_grad:
            return None
        if self._input_gradient_is_a_convolution(saved.padding):
            return self._input_gradient_by_convolution(grad_output, saved)
        # dL/dcols = W^T @ dL/dy, and each column flows back onto the window it came from (col2im).
        weight_matrix = self.weight.data.reshape(self.out_channels, -1)
        shape = (weight_matrix.shape[1], grad_matrix.shape[1])                 # (C*kh*kw, H'*W'*N)
        if math.prod(shape) * grad_matrix.itemsize <= CACHE_BYTES:
            # One product, written over the forward's columns (read for the last time above).
            grad_cols = matmul(weight_matrix.T, grad_matrix,
                               out=_reuse(saved.cols, shape, grad_matrix.dtype))
            return col2im(grad_cols.reshape(self.in_channels, *self.kernel_size, out_h, out_w, n),
                          saved.input_shape, self.kernel_size, self.stride, saved.padding)
        # Larger than the cache: the rows of kernel offset (u, v), W[:, :, u, v]^T @ dL/dy, are
        # computed one offset at a time and each is added while it is still in the cache.
        def grad_cols(u, v):
            rows = matmul(self.weight.data[:, :, u, v].T, grad_matrix)         # (C, H'*W'*N)
            return from_matrix(rows, (n, self.in_channels, out_h, out_w))
        return col2im(grad_cols, saved.input_shape, self.kernel_size, self.stride, saved.padding)

    def _input_gradient_is_a_convolution(self, padding):
        """At stride 1, with no more than ``kernel - 1`` padding on a side, dL/dx can also be
        computed as a convolution of dL/dy. That is faster when F <= C: its columns are no
        larger than the forward's, and one im2col and one product replace the kh*kw products
        and read-modify-write passes of col2im."""
        kh, kw = self.kernel_size
        return (self.stride == (1, 1) and self.out_channels <= self.in_channels
                and max(padding[:2]) < kh and max(padding[2:]) < kw)

    def _input_gradient_by_convolution(self, grad_output, saved):
        """dL/dx as the convolution of dL/dy, padded by ``kernel - 1 - padding``, with the kernel
        flipped and its channel axes swapped (the transposed convolution)::

            dL/dx[n, c, y, x] = sum_{f, u, v} W[f, c, kh-1-u, kw-1-v] * dL/dy_pad[n, f, y + u, x + v]
        """
        (kh, kw), (top, bottom, left, right) = self.kernel_size, saved.padding
        n, channels, height, width = saved.input_shape
        grad_padding = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
        shape = (self.out_channels, kh, kw, height, width, n)
        cols = im2col(grad_output, self.kernel_size, (1, 1), grad_padding,
                      out=_reuse(saved.cols, shape, grad_output.dtype))
        flipped = self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(channels, -1)
        grad_input = matmul(flipped, cols.reshape(flipped.shape[1], -1))        # (C, H*W*N)
        return from_matrix(grad_input, saved.input_shape)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "bias": self.bias is not None, "weight_init": self.weight_init}


def _reuse(buffer, shape, dtype):
    """An array of ``shape`` in ``buffer``'s memory (a contiguous scratch array that is free
    now), or a new one when the buffer is too small or of another dtype."""
    size = math.prod(shape)
    if buffer.dtype == dtype and buffer.size >= size:
        return buffer.reshape(-1)[:size].reshape(shape)
    return np.empty(shape, dtype)
