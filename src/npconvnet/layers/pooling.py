"""Pooling: a reduction over the kernel offsets of every window (see ``windows``)."""

import numpy as np

from .. import parallel
from ..windows import as_pair, batch_last, kernel_offsets, output_size, pad, resolve_padding, window
from .base import Layer


class _Pool2D(Layer):
    """Shared window handling of max and average pooling.

    ``(N, C, H, W) -> (N, C, H', W')``, ``H' = (H + 2 * pad_h - kh) // stride_h + 1``
    (windows that would run past the padded input are dropped, as in PyTorch's default).
    """

    samplewise = True

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] | str = 0):
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

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, input_shape[-2:])
        return tuple(input_shape[:-2]) + output_size(input_shape[-2:], self.kernel_size, self.stride, padding)

    def _padded(self, x, pad_value):
        """The input padded with ``pad_value``, the padding ``(top, bottom, left, right)`` and
        the size ``(H', W')`` of the grid of windows."""
        self._check_input(x, 4)
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, x.shape[2:])
        out_size = output_size(x.shape[2:], self.kernel_size, self.stride, padding)
        if min(out_size) < 1:
            raise ValueError(f"{self!r}: input of size {x.shape[2]}x{x.shape[3]} is smaller than "
                             f"the pooling window {self.kernel_size}")
        return (pad(x, padding, pad_value) if any(padding) else x), padding, out_size

    def _windows_overlap(self):
        return any(step < size for step, size in zip(self.stride, self.kernel_size))

    def _unpad(self, grad_padded, input_shape, padding):
        top, _, left, _ = padding
        return grad_padded[:, :, top:top + input_shape[2], left:left + input_shape[3]]

    def get_config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}


class MaxPool2D(_Pool2D):
    """``y[n, c, i, j] = max over the window (i, j) of x[n, c]``.

    The gradient flows only to the entry that was the maximum (the first one in row-major order
    when several tie, as in PyTorch): ``dL/dx = dL/dy`` there, 0 elsewhere. Padding counts as -inf.

    Forward keeps a running maximum over the kernel offsets and remembers, for every window,
    the offset ``k`` it came from; backward sends ``dL/dy`` to offset ``k`` of each window.
    The same written plainly, window by window: :func:`npconvnet.reference.max_pool2d` (and
    ``max_pool2d_backward``).

    Args:
        kernel_size: the window ``(kh, kw)``, or one int for both.
        stride: ``(sh, sw)``, or one int for both; None (the default) takes ``kernel_size``, so
            that the windows tile the input.
        padding: the rows and columns of padding (counting as -inf) on each side, an int or a
            pair ``(ph, pw)`` from 0 to half the kernel size; 0 (the default) or ``"valid"``
            add none.

    Shape:
        - Input: ``(N, C, H, W)``, floating point.
        - Output: ``(N, C, H', W')``, ``H' = (H + 2 * ph - kh) // sh + 1`` and
          ``W' = (W + 2 * pw - kw) // sw + 1``.

    Example::

        >>> pool = MaxPool2D(2)
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> pool.forward(x)
        array([[[[ 5.,  7.],
                 [13., 15.]]]], dtype=float32)
        >>> pool.backward(np.ones((1, 1, 2, 2), np.float32))[0, 0]
        array([[0., 0., 0., 0.],
               [0., 1., 0., 1.],
               [0., 0., 0., 0.],
               [0., 1., 0., 1.]], dtype=float32)
        >>> MaxPool2D(3, stride=2, padding=1).forward(np.zeros((2, 8, 28, 28), np.float32)).shape
        (2, 8, 14, 14)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x_pad, padding, out_size = self._padded(x, pad_value=-np.inf)
        if self.training:
            out, argmax = self._max_and_argmax(x_pad, out_size)
        else:
            # Evaluation: the maximum only; a backward pass, rare here, finds the argmax again.
            out, argmax = self._max(x_pad, out_size), None
        self._remember(out, input_shape=x.shape, padded_shape=x_pad.shape, padding=padding,
                       argmax=argmax, x_pad=None if self.training else x_pad)
        return out

    def _max(self, x_pad, out_size):
        out = np.empty_like(window(x_pad, (0, 0), self.stride, out_size))
        parallel.channelwise(self._running_max, x_pad, out)
        return out

    def _max_and_argmax(self, x_pad, out_size):
        out = np.empty_like(window(x_pad, (0, 0), self.stride, out_size))
        dtype = np.min_scalar_type(np.prod(self.kernel_size) - 1)
        argmax = self._workspace("argmax", out.shape, dtype, lambda: np.empty_like(out, dtype))
        parallel.channelwise(self._running_max, x_pad, out, argmax)
        return out, argmax

    def _running_max(self, x_pad, out, argmax=None):
        """``out``: the maximum over the kernel offsets of the windows of ``x_pad``, and
        ``argmax`` (if given) the first offset it was found at. Each channel on its own."""
        offsets = kernel_offsets(self.kernel_size)
        out[...] = window(x_pad, offsets[0], self.stride, out.shape[2:])
        if argmax is not None:
            argmax.fill(0)
        # Arithmetic instead of masked assignment (np.where, where=), which is several times
        # slower: k exceeds every earlier offset, so max(argmax, k * (candidate > out)) is k
        # exactly where the candidate beats the running maximum (strictly: the first maximum
        # wins ties), and the old argmax elsewhere.
        for k, offset in enumerate(offsets[1:], start=1):
            candidate = window(x_pad, offset, self.stride, out.shape[2:])
            if argmax is not None:
                np.maximum(argmax, np.multiply(candidate > out, k, dtype=argmax.dtype), out=argmax)
            np.maximum(out, candidate, out=out)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        argmax = saved.argmax
        if argmax is None:
            argmax = self._max_and_argmax(saved.x_pad, grad_output.shape[2:])[1]
        grad = batch_last(saved.padded_shape, grad_output.dtype, fill=None)
        parallel.channelwise(self._route_to_max, grad, grad_output, argmax)
        return self._unpad(grad, saved.input_shape, saved.padding)

    def _route_to_max(self, grad, grad_output, argmax):
        """``grad``: ``dL/dy`` sent to the offset ``argmax`` of each window, 0 elsewhere."""
        # When the windows tile the input exactly, every pixel is written below: no zeros first.
        tiled = self.stride == self.kernel_size and grad.shape[2:] == tuple(
            size * kernel for size, kernel in zip(grad_output.shape[2:], self.kernel_size))
        if not tiled:
            grad.fill(0)
        for k, offset in enumerate(kernel_offsets(self.kernel_size)):
            target = window(grad, offset, self.stride, grad_output.shape[2:])
            if self._windows_overlap():
                target += grad_output * (argmax == k)
            else:                     # each pixel is in one window: write, no need to read
                np.multiply(grad_output, argmax == k, out=target)


class AvgPool2D(_Pool2D):
    """``y[n, c, i, j] = mean over the window (i, j) of x[n, c]`` (zero padding counts in the mean,
    PyTorch's ``count_include_pad=True``). Each input pixel gets ``dL/dy / (kh * kw)`` from
    every window it belongs to. The same written plainly, window by window:
    :func:`npconvnet.reference.avg_pool2d` (and ``avg_pool2d_backward``).

    Args:
        kernel_size: the window ``(kh, kw)``, or one int for both.
        stride: ``(sh, sw)``, or one int for both; None (the default) takes ``kernel_size``, so
            that the windows tile the input.
        padding: the rows and columns of zeros on each side, an int or a pair ``(ph, pw)``
            from 0 to half the kernel size; 0 (the default) or ``"valid"`` add none.

    Shape:
        - Input: ``(N, C, H, W)``, floating point.
        - Output: ``(N, C, H', W')``, ``H' = (H + 2 * ph - kh) // sh + 1`` and
          ``W' = (W + 2 * pw - kw) // sw + 1``.

    Example::

        >>> pool = AvgPool2D(2)
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> pool.forward(x)
        array([[[[ 2.5,  4.5],
                 [10.5, 12.5]]]], dtype=float32)
        >>> pool.backward(np.ones((1, 1, 2, 2), np.float32))[0, 0]
        array([[0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25]], dtype=float32)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x_pad, padding, out_size = self._padded(x, pad_value=0.0)
        offsets = kernel_offsets(self.kernel_size)
        out = window(x_pad, offsets[0], self.stride, out_size).copy(order="K")
        for offset in offsets[1:]:
            out += window(x_pad, offset, self.stride, out_size)
        out /= len(offsets)
        self._remember(out, input_shape=x.shape, padded_shape=x_pad.shape, padding=padding)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        offsets = kernel_offsets(self.kernel_size)
        share = grad_output / len(offsets)
        grad = batch_last(saved.padded_shape, grad_output.dtype)
        for offset in offsets:
            window(grad, offset, self.stride, grad_output.shape[2:])[...] += share
        return self._unpad(grad, saved.input_shape, saved.padding)


class GlobalAvgPool2D(Layer):
    """``(N, C, H, W) -> (N, C)``: ``y[n, c] = mean over (h, w) of x[n, c, h, w]``; each
    pixel gets ``dL/dy[n, c] / (H * W)``. Takes no arguments.

    Shape:
        - Input: ``(N, C, H, W)``, floating point.
        - Output: ``(N, C)``.

    Example::

        >>> pool = GlobalAvgPool2D()
        >>> pool.forward(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
        array([[1.5, 5.5]], dtype=float32)
        >>> pool.backward(np.ones((1, 2), np.float32))[0, 0]
        array([[0.25, 0.25],
               [0.25, 0.25]], dtype=float32)
    """

    samplewise = True

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape[:-2])

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, 4)
        out = x.mean(axis=(2, 3))
        self._remember(out, input_shape=x.shape)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        height, width = saved.input_shape[2:]
        grad = batch_last(saved.input_shape, grad_output.dtype)
        grad[...] = (grad_output / (height * width))[:, :, None, None]
        return grad
