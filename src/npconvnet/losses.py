"""Loss functions: ``loss_fn(output, target)`` returns a float, ``loss_fn.backward()`` dL/doutput.

``loss_fn(output, target, sample_weight=w)`` weighs sample n's loss by ``w[n]`` (finite, >= 0)
and divides by the batch size, as Keras does: ``L = sum_n w_n * loss_n / N``, the plain mean
when every weight is 1. ``fit(sample_weight=..., class_weight=...)`` passes each batch's weights.
"""

import numpy as np

from . import checks
from .layers.activations import log_softmax

# How far a row of probability targets may sum from 1: rounding in float32 (or float16) soft
# targets stays well inside it, while any real mistake (logits or counts passed as targets,
# a weighted row) is far outside. The gradient (softmax - t) / N is only right for sums of 1.
_PROBABILITY_SUM_TOLERANCE = 1e-3


class Loss:
    """Common protocol: the call computes and remembers, ``backward`` returns the gradient."""

    def __init__(self):
        self._grad = None

    def __call__(self, output, target, sample_weight=None):
        return self.forward(output, target, sample_weight)

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before the loss was computed")
        grad, self._grad = self._grad, None
        return grad

    def _check_output(self, output):
        if not isinstance(output, np.ndarray) or not np.issubdtype(output.dtype, np.floating):
            raise TypeError(f"{type(self).__name__}: expected the model output as a floating-point "
                            f"array, got {getattr(output, 'dtype', type(output).__name__)}")

    def _sample_weights(self, sample_weight, count, dtype):
        """None, or the ``(N,)`` weights as an array of ``dtype``, checked."""
        if sample_weight is None:
            return None
        weights = np.asarray(sample_weight)
        if weights.shape != (count,) or not (np.issubdtype(weights.dtype, np.floating)
                                             or np.issubdtype(weights.dtype, np.integer)):
            raise ValueError(f"{type(self).__name__}: sample_weight must hold one number per sample, "
                             f"shape ({count},), got {weights.dtype} of shape {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"{type(self).__name__}: sample_weight must be finite and >= 0")
        return weights.astype(dtype, copy=False)

    def get_config(self):
        return {}


class CrossEntropyLoss(Loss):
    """Cross-entropy of softmax(logits) against integer labels or target distributions.

    ``(N, K)`` logits and ``(N,)`` integer labels in ``[0, K)``, or ``(N, K)`` one-hot /
    probability targets (finite, >= 0, each row summing to 1; anything else raises ValueError)::

        L = -(1/N) sum_n sum_k t[n, k] * log_softmax(logits)[n, k]
        dL/dlogits = (softmax(logits) - t) / N

    ``label_smoothing`` mixes the targets with the uniform distribution, as PyTorch does:
    ``t = (1 - e) * t + e / K``. Log-softmax is shifted by the row maximum, so logits of any
    magnitude give a finite, exact loss.
    """

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = checks.number("CrossEntropyLoss", "label_smoothing", label_smoothing,
                                             at_least=0, at_most=1)

    def forward(self, logits, target, sample_weight=None):
        self._check_output(logits)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, classes), got {logits.shape}")
        target = self._target_distribution(np.asarray(target), logits)
        if self.label_smoothing:
            target = (1 - self.label_smoothing) * target + self.label_smoothing / logits.shape[1]
        log_probabilities = log_softmax(logits, axis=1)
        count = logits.shape[0]
        weights = self._sample_weights(sample_weight, count, logits.dtype)
        self._grad = ((np.exp(log_probabilities) - target) / count).astype(logits.dtype)
        # Classes with zero target weight are skipped, so a log-probability of -inf (a logit
        # far below the others) cannot turn the loss into 0 * -inf = nan.
        picked = np.multiply(target, log_probabilities, out=np.zeros_like(log_probabilities),
                             where=target > 0)
        if weights is None:
            return float(-picked.sum(dtype=np.float64) / count)
        self._grad *= weights[:, None]
        return float(-(picked.sum(axis=1, dtype=np.float64) * weights).sum() / count)

    @staticmethod
    def _target_distribution(target, logits):
        count, classes = logits.shape
        if target.ndim == 1:
            if not np.issubdtype(target.dtype, np.integer):
                raise TypeError("CrossEntropyLoss: integer class labels expected, got dtype "
                                f"{target.dtype} (or pass one-hot targets of shape {logits.shape})")
            if target.shape[0] != count:
                raise ValueError(f"CrossEntropyLoss: {target.shape[0]} labels for {count} outputs")
            if count and (target.min() < 0 or target.max() >= classes):
                raise ValueError(f"CrossEntropyLoss: labels must be in [0, {classes}), got values "
                                 f"from {target.min()} to {target.max()}")
            one_hot = np.zeros(logits.shape, dtype=logits.dtype)
            one_hot[np.arange(count), target] = 1
            return one_hot
        if target.shape != logits.shape:
            raise ValueError(f"CrossEntropyLoss: targets of shape {target.shape} do not match logits "
                             f"{logits.shape}; give (N,) labels or (N, classes) probabilities")
        if target.dtype.kind not in "biuf":
            raise TypeError(f"CrossEntropyLoss: targets must be numbers, got dtype {target.dtype}")
        target = target.astype(logits.dtype, copy=False)
        _check_probabilities(target)
        return target

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}


class MSELoss(Loss):
    """Mean squared error over every element: ``L = mean((y - t)^2)``, ``dL/dy = 2 (y - t) / size``."""

    def forward(self, output, target, sample_weight=None):
        self._check_output(output)
        target = np.asarray(target)
        if target.shape != output.shape:
            raise ValueError(f"MSELoss: target shape {target.shape} does not match output shape {output.shape}")
        if target.dtype.kind not in "biuf":
            raise TypeError(f"MSELoss: targets must be numbers, got dtype {target.dtype}")
        finite = np.isfinite(target)
        if not finite.all():
            raise ValueError(f"MSELoss: targets must be finite numbers, but {finite.size - np.count_nonzero(finite)} "
                             f"of the {finite.size} are NaN or infinite")
        difference = output - target.astype(output.dtype, copy=False)
        self._grad = (2 * difference / difference.size).astype(output.dtype)
        weights = self._sample_weights(sample_weight, len(output), output.dtype)
        if weights is None:
            return float(np.mean(np.square(difference, dtype=np.float64)))
        # Sample n's loss is the mean over its own values: sum_n w_n * mean_n / N.
        per_sample = weights.reshape((-1,) + (1,) * (output.ndim - 1))
        self._grad *= per_sample
        return float(np.sum(np.square(difference, dtype=np.float64) * per_sample) / difference.size)


def _check_probabilities(target):
    """``(N, K)`` targets as rows of probabilities: finite, >= 0, each summing to 1.

    Two passes over the batch (its minimum and its row sums), so every batch can afford it."""
    expected = ("must be probabilities (one-hot rows or distributions: finite numbers >= 0, each "
                "row summing to 1; integer classes go as labels of shape (N,))")
    if not target.size:
        return
    if not target.min() >= 0:              # NaN fails this too
        row = int(np.flatnonzero(~(target >= 0).all(axis=1))[0])
        raise ValueError(f"CrossEntropyLoss: targets {expected}, but row {row} holds "
                         f"{np.array2string(target[row], threshold=8)}")
    sums = target.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1) > _PROBABILITY_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"CrossEntropyLoss: targets {expected}, but row {row} sums to {sums[row]:.6g}")


LOSSES = {"cross_entropy": CrossEntropyLoss, "categorical_crossentropy": CrossEntropyLoss,
          "sparse_categorical_crossentropy": CrossEntropyLoss, "mse": MSELoss,
          "mean_squared_error": MSELoss}


def get(loss):
    """A loss object from an object or a name (``"cross_entropy"``, ``"mse"``, Keras' names too)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]()
    raise ValueError(f"unknown loss {loss!r}: expected a Loss object or one of {sorted(LOSSES)}")
