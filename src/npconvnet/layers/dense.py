"""Fully connected layers and the reshape in front of them."""

import math

import numpy as np

from .. import checks, regularizers
from ..parameter import Parameter
from ..windows import is_batch_last, to_batch_last
from .affine import _AffineLayer
from .base import Layer, init_weight


class Dense(_AffineLayer):
    """``(N, in_features) -> (N, out_features)``: ``y = x @ weight.T + bias``, as
    :func:`npconvnet.reference.dense`, which the tests hold the layer to.

    Backward: ``dL/dx = dL/dy @ weight``, ``dL/dweight = dL/dy.T @ x``, ``dL/dbias = sum_n dL/dy``.

    Args:
        in_features: D, the size of each input sample, an int >= 1.
        out_features: K, the size of each output sample, an int >= 1.
        bias: whether to add a learned bias (starting at 0); default True.
        weight_init: how the weights are drawn, once, here: ``"auto"`` (the default: He-normal
            before a ``"relu"`` or ``"leaky_relu"`` activation, Glorot-uniform otherwise),
            ``"he_normal"``, ``"he_uniform"``, ``"glorot_uniform"`` or ``"glorot_normal"``.
        activation: None (the default), or ``"relu"``, ``"leaky_relu"``, ``"sigmoid"``,
            ``"tanh"`` or ``"softmax"``, applied to the output: ``activation="softmax"`` computes
            what ``Dense(...), Softmax()`` does.
        kernel_regularizer: None (the default), or a weight penalty from
            ``npconvnet.regularizers`` (``l2(1e-4)``), which ``fit`` adds to the loss.

    Shape:
        - Input: ``(N, D)``, floating point.
        - Output: ``(N, K)``.

    Attributes:
        weight: a :class:`~npconvnet.parameter.Parameter` of shape ``(K, D)``, as PyTorch's.
        bias: a Parameter of shape ``(K,)``, or None.

    Example::

        >>> layer = Dense(4, 3)
        >>> layer.weight.data[:] = 1.0
        >>> layer.forward(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))
        array([[10., 10., 10.]], dtype=float32)
        >>> layer.backward(np.ones((1, 3), np.float32))
        array([[3., 3., 3., 3.]], dtype=float32)
        >>> layer.weight.grad
        array([[1., 2., 3., 4.],
               [1., 2., 3., 4.],
               [1., 2., 3., 4.]], dtype=float32)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_init: str = "auto",
                 activation: str | None = None, kernel_regularizer: regularizers.L1L2 | None = None):
        super().__init__()
        owner = f"Dense({in_features!r:.20}, {out_features!r:.20})"
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{owner}: {name} must be a positive int, got {value!r:.100}")
        bias = checks.boolean(owner, "bias", bias)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._set_options(owner, activation, weight_init, kernel_regularizer)
        self.reset_parameters(self._initial_method())
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None

    def reset_parameters(self, method: str) -> None:
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init_weight(method, shape, self.in_features, self.out_features))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (self.out_features,)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, 2, self.in_features, layout="(N, in_features)")
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        self._remember(out, x=x)
        return self._activate(out)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        grad_output = self._through_activation(grad_output)
        x = self._recall(grad_output).x
        self.weight.grad = grad_output.T @ x
        if self.bias is not None:
            self.bias.grad = grad_output.sum(axis=0)
        return grad_output @ self.weight.data if input_grad else None

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, **self._options_config()}


class Flatten(Layer):
    """``(N, C, H, W) -> (N, C*H*W)`` in C order, as PyTorch's ``x.view(N, -1)``.

    Backward reshapes dL/dy back to the input's shape. Takes no arguments.

    Shape:
        - Input: ``(N, *)``, any number of dimensions after the batch axis.
        - Output: ``(N, prod(*))``.

    Example::

        >>> layer = Flatten()
        >>> layer.forward(np.zeros((2, 8, 5, 5), np.float32)).shape
        (2, 200)
        >>> layer.backward(np.ones((2, 200), np.float32)).shape
        (2, 8, 5, 5)
    """

    samplewise = True

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x, layout="(N, ...)")
        if x.ndim < 2:
            raise ValueError(f"{self!r}: expected an input with a batch axis, got shape {x.shape}")
        out = x.reshape(x.shape[0], math.prod(x.shape[1:]))      # -1 is ambiguous for an empty batch
        self._remember(out, input_shape=x.shape, batch_last=is_batch_last(x))
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._recall(grad_output)
        grad_input = grad_output.reshape(saved.input_shape)
        # Handed back in the memory order the input had (batch-last after a convolution or
        # a pooling): a layer whose arrays all share one order runs several times faster.
        return to_batch_last(grad_input) if saved.batch_last else grad_input
