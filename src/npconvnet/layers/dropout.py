"""Dropout."""

import numpy as np

from .. import checks, parallel
from ..rng import default_rng
from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``,
    so that evaluation (``y = x``) needs no rescaling. Backward multiplies by the same mask.

    The masks come from the global generator (``npconvnet.manual_seed``; ``fit(seed=...)``
    seeds it for every epoch). In a data-parallel run (over MPI ranks, ``npconvnet.distributed``,
    or shards of the batch on threads, ``npconvnet.shards``) the noise of the whole batch is
    drawn, in the order one process would draw it, and each rank or shard keeps the slice of
    its own samples: a sample's mask does not depend on the number of ranks or threads. That
    order is the memory order of the samples, which a rank reads from its own shard: each
    shard needs two samples or more (one sample's array has no order along the batch).

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
    #: Set by ``fit`` while it trains data-parallel: a ``npconvnet.distributed.Communicator``, or
    #: a shard's member of a ``npconvnet.shards.ThreadGroup``. Its ``shard`` says which samples of
    #: the whole batch this layer holds, its ``shared(draw)`` gives the whole batch's noise (each
    #: rank draws it; the shards on threads share one draw: the global generator is one). None: all.
    process_group = None
    #: The fewest samples of each batch a rank may hold in a distributed run (see above).
    min_shard_size = 2

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
            shard = None if self.process_group is None else self.process_group.shard
            if shard is None:
                noise = self._workspace("noise", x.shape, x.dtype, lambda: np.empty_like(x))
                default_rng().random(out=noise.ravel(order="K"), dtype=noise.dtype)
            else:
                start, stop, total = shard
                if len(x) < self.min_shard_size <= total:
                    raise ValueError(f"{self!r}: in a distributed run every rank needs two samples or more "
                                     f"of each batch (the whole batch's noise is laid out as they are), "
                                     f"this rank has {len(x)} of {total}")
                batch_shape = (total,) + x.shape[1:]

                def draw():
                    batch_noise = self._workspace("noise", batch_shape, x.dtype,
                                                  lambda: np.empty_like(x, shape=batch_shape))
                    default_rng().random(out=batch_noise.ravel(order="K"), dtype=batch_noise.dtype)
                    return batch_noise
                noise = self.process_group.shared(draw)[start:stop]
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
