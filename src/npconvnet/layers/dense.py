"""Fully connected layers and the reshape in front of them."""

import numpy as np

from .. import checks
from ..parameter import Parameter
from ..windows import is_batch_last, to_batch_last
from .affine import _AffineLayer
from .base import Layer, init_weight


class Dense(_AffineLayer):
    """``(N, in_features) -> (N, out_features)``: ``y = x @ weight.T + bias``, as
    :func:`npconvnet.reference.dense`, which the tests hold the layer to.

    Backward: ``dL/dx = dL/dy @ weight``, ``dL/dweight = dL/dy.T @ x``, ``dL/dbias = sum_n dL/dy``.
    ``activation``: None, or the name of an activation applied to the output
    (``activation="softmax"`` computes what ``Dense(...), Softmax()`` does). ``weight_init="auto"``:
    He-normal for a ReLU activation, Glorot-uniform otherwise. ``kernel_regularizer``: a weight
    penalty from ``npconvnet.regularizers``, added to the loss by ``fit``.
    """

    def __init__(self, in_features, out_features, bias=True, weight_init="auto", activation=None,
                 kernel_regularizer=None):
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

    def reset_parameters(self, method):
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init_weight(method, shape, self.in_features, self.out_features))

    def output_shape(self, input_shape):
        return (self.out_features,)

    def forward(self, x):
        self._check_input(x, 2, self.in_features, layout="(N, in_features)")
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        self._remember(out, x=x)
        return self._activate(out)

    def backward(self, grad_output, input_grad=True):
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
    """``(N, C, H, W) -> (N, C*H*W)`` in C order, as PyTorch's ``x.view(N, -1)``."""

    samplewise = True

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x):
        self._check_input(x, layout="(N, ...)")
        if x.ndim < 2:
            raise ValueError(f"{self!r}: expected an input with a batch axis, got shape {x.shape}")
        out = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))      # -1 is ambiguous for an empty batch
        self._remember(out, input_shape=x.shape, batch_last=is_batch_last(x))
        return out

    def backward(self, grad_output):
        saved = self._recall(grad_output)
        grad_input = grad_output.reshape(saved.input_shape)
        # Handed back in the memory order the input had (batch-last after a convolution or
        # a pooling): a layer whose arrays all share one order runs several times faster.
        return to_batch_last(grad_input) if saved.batch_last else grad_input
