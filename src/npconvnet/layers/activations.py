"""Element-wise nonlinearities and softmax. Each backward multiplies by the local derivative."""

import numpy as np

from .. import checks, parallel
from .base import Layer


class ReLU(Layer):
    """``y = max(x, 0)``; ``dy/dx = 0 where x <= 0, else 1`` (a NaN passes its gradient on, as in
    PyTorch). The mask is read off the output: ``y != 0`` exactly where not ``x <= 0``.

    Takes no arguments.

    Shape:
        - Input: ``(N, *)``, floating point.
        - Output: ``(N, *)``, the input's shape.

    Example::

        >>> relu = ReLU()
        >>> relu.forward(np.array([[-2.0, 0.0, 3.0]], np.float32))
        array([[0., 0., 3.]], dtype=float32)
        >>> relu.backward(np.array([[5.0, 5.0, 5.0]], np.float32))
        array([[0., 0., 5.]], dtype=float32)
    """

    samplewise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        out = np.empty_like(x)
        # Evaluation skips the mask, which a rare backward pass then computes.
        if self.training:
            passes = self._workspace("passes", x.shape, bool, lambda: np.empty_like(x, bool))
            parallel.channelwise(_relu_and_mask, x, out, passes)
            self._remember(out, passes=passes, out=None)
        else:
            parallel.channelwise(_relu, x, out)
            self._remember(out, passes=None, out=out)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        passes = saved.out != 0 if saved.passes is None else saved.passes
        grad_input = np.empty_like(grad_output, np.result_type(grad_output, passes))
        parallel.channelwise(np.multiply, grad_output, passes, grad_input)
        return grad_input


def _relu(x, out):
    # max(x, 0) as a clip: NumPy's maximum has no vectorised loop against a scalar, clip does
    # (3x faster); both keep NaN and send -inf to 0.
    np.clip(x, 0, np.inf, out=out)


def _relu_and_mask(x, out, passes):
    _relu(x, out)
    np.not_equal(out, 0, out=passes)


class LeakyReLU(Layer):
    """``y = x if x > 0 else negative_slope * x``; ``dy/dx = 1 where x > 0, else negative_slope``.

    For a slope up to 1 that is ``max(x, slope * x)``, for a larger one ``min(x, slope * x)``:
    two vectorised passes, where ``np.where`` on a random sign pattern is some thirty times slower.
    A slope of 0 is ReLU (computed as ReLU, so that infinities give no ``inf * 0``).

    Args:
        negative_slope: the slope for ``x <= 0``, a finite number; default 0.01 (PyTorch's).

    Shape:
        - Input: ``(N, *)``, floating point.
        - Output: ``(N, *)``, the input's shape.

    Example::

        >>> leaky = LeakyReLU(negative_slope=0.1)
        >>> leaky.forward(np.array([[-2.0, 0.0, 3.0]], np.float32))
        array([[-0.2,  0. ,  3. ]], dtype=float32)
        >>> leaky.backward(np.ones((1, 3), np.float32))
        array([[0.1, 0.1, 1. ]], dtype=float32)
    """

    samplewise = True

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = checks.number("LeakyReLU", "negative_slope", negative_slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        if self.negative_slope == 0:
            out = np.clip(x, 0, np.inf)
        else:
            out = x * self.negative_slope
            (np.maximum if self.negative_slope < 1 else np.minimum)(x, out, out=out)
        # The local derivative as one array, exactly 1 or slope: slope where not x > 0, plus 1
        # where x > 0 (one of the two terms is always 0).
        positive = x > 0
        derivative = np.multiply(~positive, self.negative_slope, dtype=x.dtype)
        derivative += positive
        self._remember(out, derivative=derivative)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output * self._recall(grad_output).derivative

    def get_config(self):
        return {"negative_slope": self.negative_slope}


def sigmoid(x):
    """``1 / (1 + exp(-x))``, finite and exact for any magnitude: ``exp(-log(1 + exp(-x)))``."""
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``.

    Takes no arguments.

    Shape:
        - Input: ``(N, *)``, floating point.
        - Output: ``(N, *)``, the input's shape, values in [0, 1].

    Example::

        >>> sigmoid_layer = Sigmoid()
        >>> sigmoid_layer.forward(np.array([[0.0, 1000.0, -1000.0]], np.float32))
        array([[0.5, 1. , 0. ]], dtype=float32)
        >>> sigmoid_layer.backward(np.ones((1, 3), np.float32))
        array([[0.25, 0.  , 0.  ]], dtype=float32)
    """

    samplewise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        out = sigmoid(x)
        self._remember(out, out=out)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        out = self._recall(grad_output).out
        return grad_output * out * (1 - out)


class Tanh(Layer):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``.

    Takes no arguments.

    Shape:
        - Input: ``(N, *)``, floating point.
        - Output: ``(N, *)``, the input's shape, values in [-1, 1].

    Example::

        >>> tanh = Tanh()
        >>> tanh.forward(np.array([[0.0, 20.0]], np.float32))
        array([[0., 1.]], dtype=float32)
        >>> tanh.backward(np.ones((1, 2), np.float32))
        array([[1., 0.]], dtype=float32)
    """

    samplewise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        out = np.tanh(x)
        self._remember(out, out=out)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        out = self._recall(grad_output).out
        return grad_output * (1 - out * out)


def log_softmax(x, axis=1):
    """``x - logsumexp(x)``, shifted by the maximum so that no exponential overflows."""
    with np.errstate(over="ignore"):      # a logit ~1e38 below the maximum: -inf is exact
        shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x, axis=1):
    """``exp(x) / sum(exp(x))`` over ``axis``, computed stably."""
    exp = np.exp(x - x.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


class Softmax(Layer):
    """Softmax over axis 1, ``(N, K) -> (N, K)``.

    Backward (Jacobian-vector product): ``dL/dx = y * (dL/dy - sum_k dL/dy_k * y_k)``.

    Takes no arguments. For training with ``loss="cross_entropy"`` leave it out: the loss takes
    the logits and applies a stable log-softmax itself.

    Shape:
        - Input: ``(N, K, *)``, floating point; the softmax runs over axis 1.
        - Output: ``(N, K, *)``, the input's shape, each ``y[n, :, ...]`` summing to 1.

    Example::

        >>> softmax_layer = Softmax()
        >>> softmax_layer.forward(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]))
        array([[0.5 , 0.5 ],
               [0.25, 0.75]])
        >>> softmax_layer.backward(np.array([[1.0, 1.0], [1.0, 1.0]]))   # the outputs sum to 1
        array([[0., 0.],
               [0., 0.]])
    """

    samplewise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        if np.ndim(x) < 2:
            raise ValueError(f"{self!r}: expected an input of shape (N, K, ...), got {np.shape(x)}")
        out = softmax(x, axis=1)
        self._remember(out, out=out)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        out = self._recall(grad_output).out
        return out * (grad_output - (grad_output * out).sum(axis=1, keepdims=True))
