"""Convolution."""

import numpy as np

from ..parameter import Parameter
from ..windows import as_pair, check_padding, col2im, im2col, output_size, resolve_padding
from .base import Layer, init_weight


class Conv2D(Layer):
    """2-D convolution over many channels (a cross-correlation, as PyTorch's ``conv2d``).

    ``(N, C, H, W) -> (N, F, H', W')``, ``H' = (H + pad_top + pad_bottom - kh) // stride_h + 1``::

        y[n, f, i, j] = bias[f] + sum_{c, u, v} weight[f, c, u, v] * x_pad[n, c, i*sh + u, j*sw + v]

    With the windows of the whole batch laid out as the columns of one matrix (``im2col``),
    this is a single matrix product ``y = W @ cols``, ``W`` of shape ``(F, C*kh*kw)`` and
    ``cols`` of shape ``(C*kh*kw, N*H'*W')``; the backward pass is two more:
    ``dL/dW = dL/dy @ cols^T`` and ``dL/dcols = W^T @ dL/dy``, then ``col2im``.

    ``padding``: an int, a pair, ``((top, bottom), (left, right))``, ``"valid"`` (none),
    ``"same"`` (output size ``ceil(input / stride)``) or ``"full"`` (``kernel - 1`` each side).
    ``weight_init="auto"`` draws He-normal weights; a ``Sequential`` switches them to
    Glorot-uniform when no ReLU follows the layer.
    """

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
        # One matrix product for the whole batch: (F, C*kh*kw) @ (C*kh*kw, N*H'*W').
        cols = im2col(x, self.kernel_size, self.stride, padding,
                      out=self._columns((self.in_channels, *self.kernel_size, n, out_h, out_w), x.dtype))
        cols = cols.reshape(-1, n * out_h * out_w)
        out = self.weight.data.reshape(self.out_channels, -1) @ cols            # (F, N*H'*W')
        if self.bias is not None:
            out += self.bias.data[:, None]
        # Handed on channel-major: an (N, F, H', W') view of the (F, N, H', W') product.
        out = out.reshape(self.out_channels, n, out_h, out_w).transpose(1, 0, 2, 3)
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

    def backward(self, grad_output):
        saved = self._recall(grad_output)
        n, _, out_h, out_w = grad_output.shape
        # (F, N*H'*W'), the layout of the forward product (no copy for a channel-major gradient).
        grad_output = grad_output.transpose(1, 0, 2, 3).reshape(self.out_channels, -1)
        weight = self.weight.data.reshape(self.out_channels, -1)                # (F, C*kh*kw)
        # dL/dW[f, k] = sum over every image and output pixel p of dL/dy[f, p] * cols[k, p],
        # computed as (cols @ dL/dy^T)^T: BLAS runs this orientation faster.
        self.weight.grad = (saved.cols @ grad_output.T).T.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = grad_output.sum(axis=1)
        # dL/dcols = W^T @ dL/dy, written over the columns, which are not needed any more (a
        # fresh array this size costs as much again in page faults); each column then flows
        # back onto the window it came from.
        grad_cols = np.matmul(weight.T, grad_output, out=saved.cols)
        grad_cols = grad_cols.reshape(self.in_channels, *self.kernel_size, n, out_h, out_w)
        return col2im(grad_cols, saved.input_shape, self.stride, saved.padding)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "bias": self.bias is not None, "weight_init": self.weight_init}
