"""Weight penalties added to the loss, per layer (Keras's ``kernel_regularizer``)::

    Dense(128, 10, kernel_regularizer=regularizers.l2(0.01))    # loss + 0.01 * sum(weight ** 2)

``fit`` adds every layer's penalty to the loss it minimises and reports (and ``evaluate`` to the
loss it reports, as Keras does), and the penalty's gradient to the weight's gradient after
backward. Unlike an optimizer's ``weight_decay``, which shrinks every parameter, a regularizer
acts on the layers it is given to.
"""

import math
import numbers

import numpy as np


class L1L2:
    """``penalty(w) = l1 * sum(|w|) + l2 * sum(w ** 2)``;
    ``d penalty / dw = l1 * sign(w) + 2 * l2 * w``.

    Args:
        l1: the factor of the L1 penalty, a finite number >= 0; default 0 (none).
        l2: the factor of the L2 penalty, a finite number >= 0; default 0 (none).

    Example::

        >>> reg = L1L2(l2=0.5)
        >>> reg(np.array([1.0, -2.0]))
        2.5
        >>> reg.gradient(np.array([1.0, -2.0]))
        array([ 1., -2.])
        >>> L1L2(l1=0.1, l2=0.5).gradient(np.array([1.0, -2.0]))
        array([ 1.1, -2.1])
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        for name, value in (("l1", l1), ("l2", l2)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{type(self).__name__}: {name} must be a finite number >= 0, got {value!r:.100}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, weight: np.ndarray) -> float:
        """The penalty of ``weight``, a Python float."""
        penalty = 0.0
        if self.l1:
            penalty += self.l1 * float(np.abs(weight).sum(dtype=np.float64))
        if self.l2:
            penalty += self.l2 * float(np.vdot(weight, weight))
        return penalty

    def gradient(self, weight: np.ndarray) -> np.ndarray:
        """``d penalty / d weight``, an array of the weight's shape and dtype."""
        grad = np.zeros_like(weight)
        if self.l1:
            grad += weight.dtype.type(self.l1) * np.sign(weight)
        if self.l2:
            grad += weight.dtype.type(2 * self.l2) * weight
        return grad

    def get_config(self) -> dict[str, float]:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"L1L2(l1={self.l1!r}, l2={self.l2!r})"


def l1(factor: float = 0.01) -> L1L2:
    """``factor * sum(|w|)``.

    Example::

        >>> l1(0.5)(np.array([1.0, -2.0]))
        1.5
    """
    return L1L2(l1=factor)


def l2(factor: float = 0.01) -> L1L2:
    """``factor * sum(w ** 2)`` (Keras's ``l2``: the gradient is ``2 * factor * w``).

    Example::

        >>> l2(0.5)(np.array([1.0, -2.0]))
        2.5
    """
    return L1L2(l2=factor)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``.

    Example::

        >>> l1_l2(l1=0.5, l2=0.5)(np.array([1.0, -2.0]))
        4.0
    """
    return L1L2(l1=l1, l2=l2)


def get(value: L1L2 | dict | None, owner: str) -> L1L2 | None:
    """A regularizer from None, an :class:`L1L2`, or its config ``{"l1": ..., "l2": ...}``
    (as a layer's ``get_config`` stores it); ``owner`` names the layer in errors."""
    if value is None or isinstance(value, L1L2):
        return value
    if isinstance(value, dict) and set(value) <= {"l1", "l2"}:
        return L1L2(**value)
    raise TypeError(f"{owner}: kernel_regularizer must be None or a regularizer such as "
                    f"npconvnet.regularizers.l2(0.01), got {value!r:.100}")
