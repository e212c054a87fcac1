"""Trainable values."""

import numpy as np


class Parameter:
    """A trainable array and the gradient of the last loss with respect to it.

    ``data`` and ``grad`` always have the same shape and dtype; ``backward`` writes ``grad``.
    """

    def __init__(self, data):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        self.grad = np.zeros_like(self.data)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
