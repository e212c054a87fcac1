"""Argument checks shared by the public constructors and functions, so that a bad value gets the
same kind of message everywhere::

    SGD: lr must be a finite number >= 0, got inf
    StepLR: step_size must be an int >= 1, got 2.5 (float)
    SGD: nesterov must be True or False, got 'no' (str)

Every check takes ``where`` (who asks: a class or function name, printed first), ``name`` (the
argument as the caller spells it, e.g. ``"lr"`` or ``"betas[0]"``) and ``value``. It returns
the value as a plain Python ``float``, ``int``, ``bool`` or ``tuple``, or raises

* ``TypeError`` when the value is of the wrong kind (a string where a number belongs, ``1``
  where a boolean belongs; ``bool`` is not accepted as a number), or
* ``ValueError`` when it is of the right kind but out of range, NaN, or infinite.

Bounds are keywords: ``at_least`` / ``at_most`` (inclusive), ``greater_than`` / ``less_than``
(exclusive), at most one of each side (told as a TypeError when a message is built). A passing
value costs a microsecond or two, so optimizers check their settings at every step.

This module imports only NumPy, so that every other module, the layers included, may use it.
"""

import math
import numbers

import numpy as np


def _shown(value):
    """``value`` for a message: numbers as they print (``inf``, not ``np.float64(inf)``)."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value)
    return f"{value!r:.100}"


def _wrong_type(where, name, expected, value):
    return TypeError(f"{where}: {name} must be {expected}, got {_shown(value)} "
                     f"({type(value).__name__})")


def _range(at_least, greater_than, at_most, less_than):
    """The range as a message shows it: ``>= 0``, ``> 0``, ``in [0, 1)``, or ``""`` (none)."""
    if at_least is not None and greater_than is not None or at_most is not None and less_than is not None:
        raise TypeError("give at most one lower bound (at_least or greater_than) and one upper bound "
                        "(at_most or less_than)")
    low = (f"[{at_least}", f">= {at_least}") if at_least is not None else \
        (f"({greater_than}", f"> {greater_than}") if greater_than is not None else None
    high = (f"{at_most}]", f"<= {at_most}") if at_most is not None else \
        (f"{less_than})", f"< {less_than}") if less_than is not None else None
    if low and high:
        return f" in {low[0]}, {high[0]}"
    return f" {(low or high)[1]}" if low or high else ""


def _in_range(value, at_least, greater_than, at_most, less_than):
    return ((at_least is None or value >= at_least) and (greater_than is None or value > greater_than)
            and (at_most is None or value <= at_most) and (less_than is None or value < less_than))


def number(where, name, value, *, at_least=None, greater_than=None, at_most=None, less_than=None,
           finite=True):
    """``value`` as a ``float``: a real number (an int, a float, a NumPy scalar; not a bool or a
    string), never NaN, finite unless ``finite=False``, and within the bounds given."""
    # Optimizers check their settings at every step: the message is built only on failure.
    if type(value) is not float and (isinstance(value, (bool, np.bool_))
                                     or not isinstance(value, numbers.Real)):
        raise _wrong_type(where, name, _number(finite, at_least, greater_than, at_most, less_than), value)
    result = float(value)
    if math.isnan(result) or (finite and math.isinf(result)) or \
            not _in_range(result, at_least, greater_than, at_most, less_than):
        raise ValueError(f"{where}: {name} must be "
                         f"{_number(finite, at_least, greater_than, at_most, less_than)}, got {_shown(value)}")
    return result


def _number(finite, *bounds):
    return ("a finite number" if finite else "a number") + _range(*bounds)


def integer(where, name, value, *, at_least=None, at_most=None):
    """``value`` as an ``int``: a Python or NumPy integer (not a bool, not a float such as
    ``3.0``), within the bounds given."""
    if type(value) is not int and (isinstance(value, (bool, np.bool_))
                                   or not isinstance(value, numbers.Integral)):
        raise _wrong_type(where, name, "an int" + _range(at_least, None, at_most, None), value)
    if not _in_range(value, at_least, None, at_most, None):
        raise ValueError(f"{where}: {name} must be an int{_range(at_least, None, at_most, None)}, "
                         f"got {_shown(value)}")
    return int(value)


def boolean(where, name, value):
    """``value`` as a ``bool``: ``True`` or ``False`` (or a NumPy bool), not ``1`` or ``"no"``."""
    if not isinstance(value, (bool, np.bool_)):
        raise _wrong_type(where, name, "True or False", value)
    return bool(value)


def one_of(where, name, value, choices):
    """``value`` if it is one of ``choices`` (strings, for example), else a ValueError listing them."""
    if not any(isinstance(value, type(choice)) and value == choice for choice in choices):
        raise ValueError(f"{where}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {_shown(value)}")
    return value


def sequence(where, name, value, length):
    """``value`` as a ``tuple`` of ``length`` items: a tuple or a list (the items are the caller's
    to check), else a TypeError; of another length, a ValueError."""
    if not isinstance(value, (tuple, list)):
        raise _wrong_type(where, name, f"a tuple of {length} values", value)
    if len(value) != length:
        raise ValueError(f"{where}: {name} must be a tuple of {length} values, got {_shown(value)}")
    return tuple(value)
