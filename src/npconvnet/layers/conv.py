"""Convolution."""

import math

import numpy as np

from .. import checks, parallel
from ..parameter import Parameter
from ..products import matmul, row_sums
from ..windows import (as_matrix, as_pair, batch_last, check_padding, col2im, from_matrix, im2col, output_size, pad,
                       padded_shape, resolve_padding, to_batch_last, windows_of_outputs)
from .affine import _AffineLayer
from .base import init_weight


#: The outputs are processed in blocks whose columns take about this many bytes: small enough
#: to stay in the processor's cache from im2col to the products that read them.
BLOCK_BYTES = 2 * 2**20


class Conv2D(_AffineLayer):
    """2-D convolution over many channels (a cross-correlation, as PyTorch's ``conv2d``).

    ``(N, C, H, W) -> (N, F, H', W')``, ``H' = (H + pad_top + pad_bottom - kh) // stride_h + 1``::

        y[n, f, i, j] = bias[f] + sum_{c, u, v} weight[f, c, u, v] * x_pad[n, c, i*sh + u, j*sw + v]

    With the windows of the whole batch laid out as the columns of one matrix (``im2col``),
    this is a single matrix product ``y = W @ cols``, ``W`` of shape ``(F, C*kh*kw)`` and
    ``cols`` of shape ``(C*kh*kw, H'*W'*N)``; the backward pass is two more:
    ``dL/dW = dL/dy @ cols^T`` and ``dL/dcols = W^T @ dL/dy``, then ``col2im`` (at stride 1,
    where the columns of dL/dy are at most twice the forward's, both come from those instead,
    dL/dx as a convolution of dL/dy).

    ``cols`` is ``kh * kw`` times larger than the input, so it is never built whole: the
    products are taken one block of outputs at a time (``BLOCK_BYTES`` of columns: a few output
    rows, or part of a row for a large batch), each block's columns built by im2col just before
    and read while they are still in the cache; backward builds them again from the saved input
    rather than keeping them. On several threads (``npconvnet.set_num_threads``) each thread
    takes a share of the blocks, with a buffer of columns of its own (``npconvnet.parallel``).

    The same convolution written as plainly as the formula, for the whole batch at once and
    without blocks or buffers, is :func:`npconvnet.reference.conv2d` (and ``conv2d_backward``);
    the tests hold this layer to it.

    Args:
        in_channels: C, the channels of the input, an int >= 1.
        out_channels: F, the number of filters (the channels of the output), an int >= 1.
        kernel_size: ``(kh, kw)``, or one int for both.
        stride: ``(sh, sw)``, or one int for both; default 1.
        padding: zeros around the input: an int or a pair ``(ph, pw)`` (as much on both sides),
            ``((top, bottom), (left, right))``, ``"valid"`` (none, as the default 0), ``"same"``
            (output size ``ceil(input / stride)``, an odd pixel going to the bottom/right) or
            ``"full"`` (``kernel - 1`` on each side).
        bias: whether to add a learned bias per filter (starting at 0); default True.
        weight_init: how the weights are drawn, once, here: ``"auto"`` (the default: He-normal
            before a ``"relu"`` or ``"leaky_relu"`` activation, Glorot-uniform otherwise),
            ``"he_normal"``, ``"he_uniform"``, ``"glorot_uniform"`` or ``"glorot_normal"``.
        activation: None (the default), or ``"relu"``, ``"leaky_relu"``, ``"sigmoid"``,
            ``"tanh"`` or ``"softmax"``, applied to the output: ``activation="relu"`` computes
            what ``Conv2D(...), ReLU()`` does.
        kernel_regularizer: None (the default), or a weight penalty from
            ``npconvnet.regularizers`` (``l2(1e-4)``), which ``fit`` adds to the loss.

    Shape:
        - Input: ``(N, C, H, W)``, floating point.
        - Output: ``(N, F, H', W')``, ``H' = (H + pad_top + pad_bottom - kh) // sh + 1`` and
          ``W' = (W + pad_left + pad_right - kw) // sw + 1``.

    Attributes:
        weight: a :class:`~npconvnet.parameter.Parameter` of shape ``(F, C, kh, kw)``.
        bias: a Parameter of shape ``(F,)``, or None.

    Example::

        >>> layer = Conv2D(1, 8, kernel_size=3, padding="same", activation="relu")
        >>> layer.forward(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 8, 28, 28)
        >>> layer.backward(np.ones((2, 8, 28, 28), np.float32)).shape
        (2, 1, 28, 28)
        >>> layer.weight.shape
        (8, 1, 3, 3)
        >>> Conv2D(3, 16, 5, stride=2).forward(np.zeros((4, 3, 32, 32), np.float32)).shape
        (4, 16, 14, 14)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str = 0,
                 bias: bool = True, weight_init: str = "auto", activation: str | None = None,
                 kernel_regularizer: "regularizers.L1L2 | None" = None):
        super().__init__()
        owner = f"Conv2D({in_channels!r:.20}, {out_channels!r:.20})"
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
        bias = checks.boolean(owner, "bias", bias)
        self._set_options(owner, activation, weight_init, kernel_regularizer)
        self.reset_parameters(self._initial_method())
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None

    def reset_parameters(self, method: str) -> None:
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Parameter(init_weight(method, shape, self.in_channels * kh * kw,
                                            self.out_channels * kh * kw))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(C, H, W) -> (F, H', W')`` without computing anything."""
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, input_shape[-2:])
        return (self.out_channels,) + output_size(input_shape[-2:], self.kernel_size, self.stride, padding)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, 4, self.in_channels)
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, x.shape[2:])
        out_h, out_w = output_size(x.shape[2:], self.kernel_size, self.stride, padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{self!r}: input of size {x.shape[2]}x{x.shape[3]} (padding "
                             f"{padding}) is smaller than the kernel {self.kernel_size}")
        x_pad = self._padded("x_pad", x, padding) if any(padding) else to_batch_last(x)
        out = self._convolve(x_pad, self.weight.data.reshape(self.out_channels, -1), self.stride,
                             (out_h, out_w), None if self.bias is None else self.bias.data)  # (F, H'*W'*N)
        # Handed on batch-last: the (N, F, H', W') view of the product.
        out = from_matrix(out, (x.shape[0], self.out_channels, out_h, out_w))
        self._remember(out, x_pad=x_pad, input_shape=x.shape, padding=padding)
        return self._activate(out)

    def _padded(self, name, x, padding):
        """``x`` padded with zeros, batch-last, in the layer's workspace ``name``."""
        shape = padded_shape(x.shape, padding)
        return pad(x, padding, out=self._workspace(name, shape, x.dtype, lambda: batch_last(shape, x.dtype, fill=None)))

    def _convolve(self, x_pad, weight_matrix, stride, out_size, bias=None):
        """``weight_matrix @ im2col(x_pad) + bias``, ``(F, C*kh*kw) @ (C*kh*kw, H'*W'*N)``, one
        block of outputs at a time, each thread taking its share of the blocks."""
        (out_h, out_w), n = out_size, x_pad.shape[0]
        out = np.empty((weight_matrix.shape[0], out_h, out_w * n), np.result_type(weight_matrix, x_pad))

        def convolve(blocks):
            for rows, columns, cols in blocks:
                block = matmul(weight_matrix, cols, out=_block_of(out, rows, columns, n))
                if bias is not None:                # while the block is still in the cache
                    block += bias[:, None]
        parallel.run(convolve, self._shares(x_pad, stride, out_size))
        return out.reshape(len(out), -1)

    def _blocks(self, x_pad, out_size):
        """The blocks of outputs, ``[(rows, columns), ...]`` (slices): a few whole output rows
        each or, when one row's columns exceed ``BLOCK_BYTES`` (a large batch), part of one
        row; at least one block per thread (unless the columns are too small to share out, see
        ``parallel.MIN_PART_BYTES``), evened out."""
        (out_h, out_w), n = out_size, x_pad.shape[0]
        window_size = x_pad.shape[1] * math.prod(self.kernel_size)
        pixel_bytes = window_size * n * x_pad.itemsize
        pixels = max(1, BLOCK_BYTES // max(1, pixel_bytes))                         # output pixels a block
        threads = min(parallel.threads_here(), out_h * out_w * pixel_bytes // parallel.MIN_PART_BYTES)
        pixels = min(pixels, -(-out_h * out_w // max(1, threads)))
        if pixels >= out_w:
            block_h, block_w = _evened(out_h, pixels // out_w), out_w
        else:
            block_h, block_w = 1, _evened(out_w, pixels)
        return [(slice(row, min(row + block_h, out_h)), slice(column, min(column + block_w, out_w)))
                for row in range(0, out_h, block_h) for column in range(0, out_w, block_w)]

    def _shares(self, x_pad, stride, out_size):
        """Each thread's share of the blocks of outputs: an iterator of ``(rows, columns, cols)``
        for each of its blocks, ``cols`` being the ``(C*kh*kw, rows*columns*N)`` columns of the
        block's windows, built just before in a buffer of the share's own."""
        blocks = self._blocks(x_pad, out_size)
        block_size = max((rows.stop - rows.start) * (columns.stop - columns.start) for rows, columns in blocks)
        shape = (x_pad.shape[1], *self.kernel_size)
        buffer_size = math.prod(shape) * block_size * x_pad.shape[0]
        return [self._column_blocks(x_pad, stride, share, self._workspace(
                    f"columns of {math.prod(shape)}, share {index}", (buffer_size,), x_pad.dtype,
                    lambda: np.empty(buffer_size, x_pad.dtype)))
                for index, share in enumerate(parallel.shares(blocks))]

    def _column_blocks(self, x_pad, stride, blocks, buffer):
        """``(rows, columns, cols)`` for each of ``blocks``, the columns built in ``buffer``."""
        n, shape = x_pad.shape[0], (x_pad.shape[1], *self.kernel_size)
        window_size = math.prod(shape)
        for rows, columns in blocks:
            extent = (rows.stop - rows.start, columns.stop - columns.start)
            cols = buffer[:window_size * extent[0] * extent[1] * n].reshape(*shape, *extent, n)
            im2col(windows_of_outputs(x_pad, rows, columns, self.kernel_size, stride), self.kernel_size, stride,
                   (0, 0, 0, 0), out=cols)
            yield rows, columns, cols.reshape(window_size, -1)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """The chain rule through ``y = W @ cols + b``, one block of outputs at a time::

            dL/db = sum over pixels of dL/dy      dL/dW = dL/dy @ cols^T      dL/dx = col2im(W^T @ dL/dy)

        Each block's columns are built once, for both of its products. Where it is faster, both
        gradients come from the columns of dL/dy instead (``_gradients_by_convolution``).
        ``input_grad=False``: the parameters' gradients only, and None. With an ``activation``,
        dL/dy first goes back through it. The same steps for the
        whole batch at once, without blocks: :func:`npconvnet.reference.conv2d_backward`.
        """
        grad_output = self._through_activation(grad_output)
        saved = self._recall(grad_output)
        n, _, out_h, out_w = grad_output.shape
        # (F, H', W'*N): the rows of the forward product (no copy for a batch-last gradient).
        grad_rows = as_matrix(grad_output).reshape(self.out_channels, out_h, -1)
        if self.bias is not None:
            self.bias.grad = self._bias_gradient(grad_rows)
        if self._takes_gradients_by_convolution(saved.padding, saved.input_shape[2:], (out_h, out_w)):
            # Taken with input_grad=False too, so that dL/dW has the same bits either way.
            self.weight.grad, grad_input = self._gradients_by_convolution(grad_output, saved, input_grad)
            return grad_input

        def gradients(blocks):
            # Each thread's share of the blocks sums its own dL/dW and adds its dL/dx into an
            # array of its own (neighbouring blocks' windows overlap); the shares add up in order.
            grad_x_pad = batch_last(saved.x_pad.shape, grad_output.dtype) if input_grad else None
            grad_weight = 0
            for rows, columns, cols in blocks:
                grad_block = _block_of(grad_rows, rows, columns, n)
                grad_weight = grad_weight + self._weight_gradient(grad_block, cols)
                if input_grad:
                    self._input_gradient(grad_block, cols, grad_x_pad, rows, columns)
            return grad_weight, grad_x_pad

        shares = parallel.run(gradients, self._shares(saved.x_pad, self.stride, (out_h, out_w)))
        self.weight.grad = sum(grad_weight for grad_weight, _ in shares).reshape(self.weight.data.shape)
        if not input_grad:
            return None
        grad_x_pad = shares[0][1]
        for _, share in shares[1:]:
            grad_x_pad += share
        top, _, left, _ = saved.padding
        height, width = saved.input_shape[2:]
        return grad_x_pad[:, :, top:top + height, left:left + width]

    def _bias_gradient(self, grad_rows):
        """``dL/db[f]``: the sum of ``dL/dy[f]`` over every image and output pixel."""
        return row_sums(grad_rows.reshape(self.out_channels, -1))

    def _weight_gradient(self, grad_block, cols):
        """A block's share of ``dL/dW = dL/dy @ cols^T``, ``(F, C*kh*kw)``: the sum over its images
        and output pixels ``p`` of ``dL/dy[f, p] * cols[k, p]``, computed as
        ``(cols @ dL/dy^T)^T`` (BLAS runs this orientation faster)."""
        return matmul(cols, grad_block.T).T

    def _input_gradient(self, grad_block, cols, grad_x_pad, rows, columns):
        """Adds a block's share of dL/dx to the padded ``grad_x_pad``: ``dL/dcols = W^T @ dL/dy``,
        written over the block's columns (read for the last time by ``_weight_gradient``), then
        each column flows back onto the window it came from (col2im)."""
        grad_cols = matmul(self.weight.data.reshape(self.out_channels, -1).T, grad_block, out=cols)
        target = windows_of_outputs(grad_x_pad, rows, columns, self.kernel_size, self.stride)
        col2im(grad_cols.reshape(self.in_channels, *self.kernel_size, rows.stop - rows.start,
                                 columns.stop - columns.start, len(grad_x_pad)),
               target.shape, self.kernel_size, self.stride, (0, 0, 0, 0), out=target)

    def _takes_gradients_by_convolution(self, padding, input_size, output_size):
        """At stride 1, with no more than ``kernel - 1`` padding on a side, both gradients can
        come from the columns of dL/dy (``_gradients_by_convolution``). That is faster while
        those columns, F*kh*kw for each input pixel, are at most twice the forward's, C*kh*kw
        for each output pixel: their one im2col then replaces the input's and the kh*kw
        read-modify-write passes of col2im (3x3 'same', one core: 8 -> 16 channels 11% faster,
        16 -> 16 7%; 5x5 'valid' 6 -> 16, whose columns are 2.6 times the forward's, 2.3 times
        slower)."""
        kh, kw = self.kernel_size
        return (self.stride == (1, 1) and max(padding[:2]) < kh and max(padding[2:]) < kw
                and 0 < self.out_channels * math.prod(input_size) <= 2 * self.in_channels * math.prod(output_size))

    def _gradients_by_convolution(self, grad_output, saved, input_grad=True):
        """``(dL/dW, dL/dx or None)`` from the columns of dL/dy padded by ``kernel - 1 - padding``, one
        block of input pixels at a time. dL/dx is the convolution of dL/dy with the kernel
        flipped and its channel axes swapped (the transposed convolution), and dL/dW pairs the
        same columns with the input (with ``q = (y, x)`` an input pixel, ``dL/dy_pad`` zero
        outside dL/dy)::

            dL/dx[n, c, q] = sum_{f, u, v} W[f, c, kh-1-u, kw-1-v] * dL/dy_pad[n, f, q + (u, v)]
            dL/dW[f, c, kh-1-u, kw-1-v] = sum_{n, q} x[n, c, q] * dL/dy_pad[n, f, q + (u, v)]

        (the second is the forward's ``sum over n, i, j of dL/dy[n, f, i, j] * x_pad[n, c, i + a,
        j + b]`` with ``q = (i, j) + (a, b) - padding`` and ``(u, v) = kernel - 1 - (a, b)``). One
        im2col a block serves both products, instead of one of the input and one of dL/dy.
        """
        (kh, kw), (top, bottom, left, right) = self.kernel_size, saved.padding
        n, _, height, width = saved.input_shape
        grad_padding = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
        grad_pad = self._padded("grad_pad", grad_output, grad_padding)
        flipped = self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(self.in_channels, -1)
        # (C, H, W*N): the input's rows, as the columns' blocks of input pixels cut them.
        x_rows = as_matrix(to_batch_last(saved.x_pad[:, :, top:top + height, left:left + width]))
        x_rows = x_rows.reshape(self.in_channels, height, -1)
        grad_input = (np.empty((self.in_channels, height, width * n), np.result_type(flipped, grad_pad))
                      if input_grad else None)

        def gradients(blocks):
            grad_flipped = 0                # (F*kh*kw, C): dL/dW with its kernel flipped
            for rows, columns, cols in blocks:
                if grad_input is not None:
                    matmul(flipped, cols, out=_block_of(grad_input, rows, columns, n))
                grad_flipped = grad_flipped + matmul(cols, _block_of(x_rows, rows, columns, n).T)
            return grad_flipped

        shares = parallel.run(gradients, self._shares(grad_pad, (1, 1), (height, width)))
        grad_flipped = sum(shares).reshape(self.out_channels, kh, kw, self.in_channels)
        grad_weight = np.ascontiguousarray(grad_flipped[:, ::-1, ::-1].transpose(0, 3, 1, 2))
        if grad_input is None:
            return grad_weight, None
        return grad_weight, from_matrix(grad_input.reshape(self.in_channels, -1), saved.input_shape)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "bias": self.bias is not None, **self._options_config()}


def _evened(length, block):
    """A block length (at least 1, at most ``block``) that cuts ``length`` into as few blocks as
    ``block`` does, of nearly equal lengths."""
    block = max(1, block)
    return -(-length // -(-length // block))


def _block_of(matrix, rows, columns, n):
    """The ``(F, rows * columns * N)`` view of a block of outputs in an ``(F, H', W' * N)``
    matrix: whole rows, or part of one row (either is a view)."""
    return matrix[:, rows, columns.start * n:columns.stop * n].reshape(len(matrix), -1)
