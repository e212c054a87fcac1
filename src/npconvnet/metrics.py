"""Classification metrics: accuracy, the confusion matrix, precision, recall and F1.

Labels are integer class indices ``(N,)``; an ``(N, K)`` array (one-hot rows, probabilities
or logits, such as ``model.predict`` returns) stands for its row-wise ``argmax``.

All scores come from the confusion matrix ``C`` (rows = true class, columns = predicted
class, as in sklearn). For class ``k``::

    tp = C[k, k],   predicted = sum_i C[i, k],   true (support) = sum_j C[k, j]
    precision = tp / predicted,   recall = tp / true,   F1 = 2 tp / (predicted + true)

(``F1 = 2 P R / (P + R)`` written with counts, as sklearn computes it.) A ratio with a zero
denominator is ``zero_division`` (0.0 by default, or 1.0 or ``np.nan``). Averages, as in
sklearn with its default ``labels=None``, are over the classes that occur in ``y_true`` or
``y_pred``:

* ``"macro"``: the plain mean of the per-class values;
* ``"weighted"``: the mean weighted by each class's support;
* ``"micro"``: the ratio of the summed counts (for single-label data this equals accuracy).

With ``zero_division=np.nan`` the averages leave the undefined classes out, as sklearn does.
"""

import math
import numbers

import numpy as np

from . import checks

AVERAGES = ("macro", "micro", "weighted")

#: The most classes ``confusion_matrix`` infers from the labels when ``num_classes`` is not
#: given (a matrix of 10,000 x 10,000 counts is 800 MB): a larger label is far more often a
#: mistake than a class. Pass ``num_classes`` for more.
MAX_INFERRED_CLASSES = 10_000


def _labels(values, name, num_classes):
    """``values`` as a 1-D integer label array (``argmax`` of 2-D scores), checked."""
    try:
        values = np.asarray(values)
    except ValueError as error:           # ragged nested lists
        raise ValueError(f"{name}: expected labels of shape (N,) or scores of shape (N, K) ({error})") from None
    if values.ndim == 2:
        values = _argmax(values, name)
    if values.ndim != 1:
        raise ValueError(f"{name}: expected labels of shape (N,) or scores of shape (N, K), "
                         f"got shape {values.shape}")
    if values.size == 0 and values.dtype == np.float64:
        values = values.astype(np.int64)  # np.asarray([]): no labels, not float ones
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class labels, got dtype {values.dtype} "
                        "(use .astype(int) for whole numbers)")
    if values.size and values.min() < 0:
        raise ValueError(f"{name}: class labels must be >= 0, got {values.min()}")
    if num_classes is not None and values.size and values.max() >= num_classes:
        raise ValueError(f"{name}: label {values.max()} is out of range for "
                         f"num_classes={num_classes} (labels must be in [0, {num_classes}))")
    return values


def _argmax(scores, name):
    """The class of each row of ``(N, K)`` scores, refusing what has no class to give."""
    if scores.shape[1] < 2:
        raise ValueError(f"{name}: scores of shape {scores.shape} need at least 2 columns, one per "
                         "class (for labels of shape (N, 1), pass labels.ravel())")
    if scores.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric scores, got dtype {scores.dtype}")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError(f"{name}: scores hold NaN or infinite values, which have no argmax class")
    return scores.argmax(axis=1)


def confusion_matrix(y_true, y_pred, num_classes=None):
    """``(K, K)`` int64 counts: entry ``[i, j]`` is the number of samples of true class ``i``
    predicted as class ``j`` (sklearn's layout).

    ``K`` is ``num_classes``, or one more than the largest label seen, at most
    :data:`MAX_INFERRED_CLASSES` (a larger label raises ValueError: pass ``num_classes`` if it
    is meant). Unlike sklearn, classes are indexed by their label, so a class that occurs
    nowhere still has its (zero) row.
    """
    if num_classes is not None:
        num_classes = checks.integer("confusion_matrix", "num_classes", num_classes, at_least=1)
        if num_classes > math.isqrt(np.iinfo(np.int64).max):     # the cell index would overflow
            raise ValueError(f"confusion_matrix: num_classes={num_classes} makes a matrix of "
                             f"{num_classes ** 2:.3g} cells, more than an int64 index reaches")
    y_true = _labels(y_true, "y_true", num_classes)
    y_pred = _labels(y_pred, "y_pred", num_classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"confusion_matrix: y_true has {len(y_true)} samples, y_pred {len(y_pred)}")
    if num_classes is None:
        # initial=0, not -1: unsigned labels (MNIST's are uint8) cannot hold -1.
        num_classes = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1 if len(y_true) else 0
        if num_classes > MAX_INFERRED_CLASSES:
            raise ValueError(f"confusion_matrix: the largest label, {num_classes - 1}, would make a "
                             f"{num_classes:,} x {num_classes:,} matrix; labels above "
                             f"{MAX_INFERRED_CLASSES - 1} need num_classes=... given explicitly")
    # Each (true, pred) pair is one cell of the flattened matrix: one bincount counts them all.
    cells = y_true.astype(np.int64) * num_classes + y_pred
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(y_true, y_pred):
    """The fraction of samples whose predicted class is the true class."""
    y_true, y_pred = _labels(y_true, "y_true", None), _labels(y_pred, "y_pred", None)
    if len(y_true) != len(y_pred):
        raise ValueError(f"accuracy: y_true has {len(y_true)} samples, y_pred {len(y_pred)}")
    if not len(y_true):
        raise ValueError("accuracy: no samples")
    return float(np.mean(y_true == y_pred))


def _checked_confusion(confusion, where):
    """``confusion`` as a square array of finite counts >= 0."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"{where}: expected a square (K, K) confusion matrix, got shape {confusion.shape}")
    if confusion.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected a confusion matrix of counts, got dtype {confusion.dtype}")
    if confusion.size and not (confusion.min() >= 0 and np.isfinite(confusion.max())):   # NaN fails too
        raise ValueError(f"{where}: a confusion matrix holds counts >= 0, got negative, NaN or "
                         "infinite entries")
    return confusion


def accuracy_from_confusion(confusion):
    """``trace(C) / sum(C)`` (NaN for an empty matrix)."""
    confusion = _checked_confusion(confusion, "accuracy_from_confusion")
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else math.nan


def _divide(numerator, denominator, zero_division):
    """``numerator / denominator`` element-wise, ``zero_division`` where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    result = np.full(numerator.shape, zero_division, dtype=float)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def _average(values, weights=None):
    """Mean (weighted when ``weights`` is given) that skips NaN entries, as sklearn's."""
    keep = ~np.isnan(values)
    if weights is not None:
        weights = weights[keep]
    if not keep.any() or (weights is not None and not weights.sum()):
        return math.nan
    return float(np.average(values[keep], weights=weights))


def scores_from_confusion(confusion, average=None, zero_division=0.0):
    """``(precision, recall, f1, support)`` from a confusion matrix.

    ``average=None`` gives ``(K,)`` arrays, one entry per class; ``"macro"``, ``"micro"`` or
    ``"weighted"`` give floats (and ``support`` the number of samples), see the module docstring.
    """
    if average not in (None,) + AVERAGES:
        raise ValueError(f"average must be None, 'macro', 'micro' or 'weighted', got {average!r}")
    if isinstance(zero_division, bool) or not isinstance(zero_division, numbers.Real) \
            or not (zero_division in (0, 1) or math.isnan(zero_division)):
        raise ValueError(f"zero_division must be 0.0, 1.0 or np.nan, got {zero_division!r:.100}")
    confusion = _checked_confusion(confusion, "scores_from_confusion")
    true_positive = np.diag(confusion)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    if average is None:
        return (_divide(true_positive, predicted, zero_division),
                _divide(true_positive, support, zero_division),
                _divide(2 * true_positive, predicted + support, zero_division),
                support)
    present = (predicted + support) > 0
    true_positive, predicted, support = true_positive[present], predicted[present], support[present]
    if average == "micro":
        true_positive, predicted, support = true_positive.sum(), predicted.sum(), support.sum()
        return (float(_divide(true_positive, predicted, zero_division)),
                float(_divide(true_positive, support, zero_division)),
                float(_divide(2 * true_positive, predicted + support, zero_division)),
                int(support))
    weights = support.astype(float) if average == "weighted" else None
    return (_average(_divide(true_positive, predicted, zero_division), weights),
            _average(_divide(true_positive, support, zero_division), weights),
            _average(_divide(2 * true_positive, predicted + support, zero_division), weights),
            int(support.sum()))


def precision_recall_f1(y_true, y_pred, average=None, num_classes=None, zero_division=0.0):
    """``(precision, recall, f1, support)``, like sklearn's ``precision_recall_fscore_support``
    (per class, ``(K,)`` arrays, when ``average`` is None)."""
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    return scores_from_confusion(confusion, average, zero_division)


def precision(y_true, y_pred, average=None, num_classes=None, zero_division=0.0):
    """``tp / (tp + fp)`` per class, or averaged (``"macro"``, ``"micro"``, ``"weighted"``)."""
    return precision_recall_f1(y_true, y_pred, average, num_classes, zero_division)[0]


def recall(y_true, y_pred, average=None, num_classes=None, zero_division=0.0):
    """``tp / (tp + fn)`` per class, or averaged (``"macro"``, ``"micro"``, ``"weighted"``)."""
    return precision_recall_f1(y_true, y_pred, average, num_classes, zero_division)[1]


def f1_score(y_true, y_pred, average=None, num_classes=None, zero_division=0.0):
    """``2 tp / (2 tp + fp + fn)`` per class, or averaged (``"macro"``, ``"micro"``, ``"weighted"``)."""
    return precision_recall_f1(y_true, y_pred, average, num_classes, zero_division)[2]


_SCORE_INDEX = {"precision": 0, "recall": 1, "f1": 2}
#: The names ``compile(metrics=[...])`` accepts (sklearn's scorer names for the averages).
METRIC_NAMES = ("accuracy",) + tuple(f"{score}_{average}" for score in _SCORE_INDEX
                                     for average in AVERAGES)


def get(name):
    """The metric called ``name`` as a function of an epoch's confusion matrix.

    ``"accuracy"``, and ``"precision_macro"``, ``"recall_weighted"``,
    ``"f1_micro"``, ... (any of precision / recall / f1 with macro / micro / weighted).
    """
    if name == "accuracy":
        return accuracy_from_confusion
    score, _, average = name.partition("_") if isinstance(name, str) else (None, None, None)
    if score not in _SCORE_INDEX or average not in AVERAGES:
        raise ValueError(f"unknown metric {name!r}: expected one of {', '.join(METRIC_NAMES)}")
    index = _SCORE_INDEX[score]
    return lambda confusion: scores_from_confusion(confusion, average)[index]
