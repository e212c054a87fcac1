"""Dropout."""

import numpy as np

from .. import checks, parallel
from ..rng import default_rng
from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``,
    so that evaluation (``y = x``) needs no rescaling. Backward multiplies by the same mask.

    The masks come from the global generator (``npconvnet.manual_seed``; ``fit(seed=...)``
    seeds it for every epoch).

    Args:
        p: the probability that an element is zeroed, in [0, 1]; default 0.5.

    Shape:
        - Input: ``(N, *)``, floating point.
        - Output: ``(N, *)``, the input's shape.

    Example::

        >>> dropout = Dropout(p=0.5)
        >>> y = dropout.forward(np.ones((4, 100), np.float32))
        >>> sorted(set(y.ravel().tolist()))                 # dropped, or kept and scaled by 1/(1-p)
        [0.0, 2.0]
        >>> bool((dropout.backward(np.ones((4, 100), np.float32)) == y).all())   # the same mask
        True
        >>> dropout.eval().forward(np.ones((1, 3), np.float32))                 # evaluation: y = x
        array([[1., 1., 1.]], dtype=float32)
    """

    samplewise = True

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = checks.number("Dropout", "p", p, at_least=0, at_most=1)

    def forward(self, x: np.ndarray) -> np.ndarray:
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
        out = x if scale is None else _times(x, scale)
        self._remember(out, scale=scale)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        scale = self._recall(grad_output).scale
        return grad_output if scale is None else _times(grad_output, scale)

    def get_config(self):
        return {"p": self.p}


def _times(x, scale):
    """``x * scale``, the channels shared among the threads."""
    out = np.empty_like(x, np.result_type(x, scale))
    parallel.channelwise(np.multiply, x, scale, out)
    return out
