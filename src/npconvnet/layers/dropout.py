"""Dropout."""

import numpy as np

from .. import checks
from ..rng import default_rng
from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``,
    so that evaluation (``y = x``) needs no rescaling. Backward multiplies by the same mask."""

    samplewise = True

    def __init__(self, p=0.5):
        super().__init__()
        self.p = checks.number("Dropout", "p", p, at_least=0, at_most=1)

    def forward(self, x):
        self._check_input(x, layout="(N, ...)")
        if not self.training or self.p == 0:
            scale = None
        elif self.p == 1:
            scale = np.zeros_like(x)
        else:
            # The noise is drawn straight into x's memory order (batch-last after a convolution),
            # so that every pass below, x * scale and dL/dy * scale run in one order.
            noise = self._workspace("noise", x.shape, x.dtype, lambda: np.empty_like(x))
            default_rng().random(out=noise.ravel(order="K"), dtype=noise.dtype)
            scale = np.multiply(noise >= self.p, x.dtype.type(1 / (1 - self.p)), out=noise)
        out = x if scale is None else x * scale
        self._remember(out, scale=scale)
        return out

    def backward(self, grad_output):
        scale = self._recall(grad_output).scale
        return grad_output if scale is None else grad_output * scale

    def get_config(self):
        return {"p": self.p}
