"""Numerical stability: softmax, log-softmax, cross-entropy and sigmoid stay finite and exact for
logits of magnitude 1e4 and far beyond, in float32 and float64, checked against mpmath at 60
significant digits (the exact value of each float input, rounded once to the dtype)."""

import warnings

import numpy as np
import pytest

from npconvnet.layers import Sigmoid, Softmax
from npconvnet.layers.activations import log_softmax, sigmoid, softmax
from npconvnet.losses import CrossEntropyLoss

mpmath = pytest.importorskip("mpmath", reason="mpmath computes the exact references (pip install mpmath; "
                                              "it is in the test extra)")
mpmath.mp.dps = 60

DTYPES = [np.float32, np.float64]
SCALES = {np.float32: [1e4, 1e6, 1e30, 1e37], np.float64: [1e4, 1e6, 1e30, 1e300]}
CASES = [(dtype, scale) for dtype in DTYPES for scale in SCALES[dtype]]


def logits(dtype, scale):
    """Rows that break a naive exp(x) / sum(exp(x)): far apart, tied, all very negative, and
    close together at a huge offset (their differences exactly representable)."""
    step = max(1.0, float(np.spacing(dtype(scale))))
    rows = [[scale, 0, -scale],
            [scale, scale, -scale],
            [-scale, -scale, -scale],
            [scale, scale + step, scale - 3 * step],
            [-scale, -scale - 2 * step, -scale + step]]
    array = np.array(rows, dtype)
    assert np.all(np.isfinite(array))
    return array


def exact(x):
    return [mpmath.mpf(float(value)) for value in x]


def reference_log_softmax(row):
    """``(x - max) - log(sum(exp(x - max)))``: the differences are exact at any magnitude,
    where ``x - logsumexp(x)`` would need 300 digits for logits of 1e300."""
    shifted = [v - max(exact(row)) for v in exact(row)]
    log_sum = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in shifted))
    return [v - log_sum for v in shifted]


def rounded(values, dtype):
    return np.array([float(v) for v in values], dtype)


def check(actual, expected, dtype):
    """Within 4 units of the dtype's precision (relative), or of 1 for results near 0."""
    eps = np.finfo(dtype).eps
    assert actual.dtype == dtype
    assert np.all(np.isfinite(actual)) == np.all(np.isfinite(expected))
    np.testing.assert_allclose(actual, expected, rtol=4 * eps, atol=4 * eps)


@pytest.fixture(autouse=True)
def no_overflow_warnings():
    """Stable formulas never overflow on the way: any NumPy warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("dtype, scale", CASES)
def test_log_softmax_is_exact_for_huge_logits(dtype, scale):
    x = logits(dtype, scale)
    expected = np.stack([rounded(reference_log_softmax(row), dtype) for row in x])
    check(log_softmax(x, axis=1), expected, dtype)


@pytest.mark.parametrize("dtype, scale", CASES)
def test_softmax_is_exact_for_huge_logits(dtype, scale):
    x = logits(dtype, scale)
    expected = np.stack([rounded([mpmath.exp(v) for v in reference_log_softmax(row)], dtype) for row in x])
    check(softmax(x, axis=1), expected, dtype)
    check(Softmax().forward(x), expected, dtype)


@pytest.mark.parametrize("dtype, scale", CASES)
def test_cross_entropy_and_its_gradient_are_exact_for_huge_logits(dtype, scale):
    x = logits(dtype, scale)
    for label in range(x.shape[1]):
        labels = np.full(len(x), label)
        log_probabilities = [reference_log_softmax(row) for row in x]
        expected_loss = -mpmath.fsum(row[label] for row in log_probabilities) / len(x)
        one_hot = np.eye(x.shape[1])[labels]
        expected_grad = np.stack([rounded([(mpmath.exp(v) - t) / len(x) for v, t in zip(row, target)], dtype)
                                  for row, target in zip(log_probabilities, one_hot)])
        loss_fn = CrossEntropyLoss()
        loss = loss_fn(x, labels)
        assert loss == pytest.approx(float(expected_loss), rel=4 * float(np.finfo(dtype).eps), abs=4 * float(np.finfo(dtype).eps))
        check(loss_fn.backward(), expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_the_right_class_by_a_huge_margin_is_zero_not_nan(dtype):
    x = np.array([[1e30, -1e30], [-1e4, 1e4]], dtype)
    loss_fn = CrossEntropyLoss()
    assert loss_fn(x, np.array([0, 1])) == 0
    np.testing.assert_array_equal(loss_fn.backward(), np.zeros((2, 2), dtype))


def sigmoid_inputs(dtype):
    """Both tails out to the largest float, the region where exp(-x) leaves the normal range
    (about 87 in float32, 708 in float64), and ordinary values."""
    largest = float(np.finfo(dtype).max)
    tail = [-87.3, -87.4, -103.5] if dtype == np.float32 else [-708.3, -709.1, -745.0]
    values = [-largest, -1e30, -1e4, -100.0, -50.0, -20.3, -5.7, -1.0, 0.0, 0.3, 1.0, 5.7, 20.3,
              50.0, 100.0, 1e4, 1e30, largest] + tail
    return np.array(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_is_exact_out_to_the_largest_float(dtype):
    """Relative error within 4 eps times max(1, |x|): |x| is sigmoid's condition number in its
    negative tail, so this is the accuracy of the exact sigmoid of x rounded to the dtype."""
    x = sigmoid_inputs(dtype)
    expected = rounded([1 / (1 + mpmath.exp(-v)) for v in exact(x)], dtype)
    for actual in (sigmoid(x), Sigmoid().forward(x)):
        assert actual.dtype == dtype and np.all(np.isfinite(actual))
        tolerance = 4 * np.finfo(dtype).eps * np.maximum(1, np.abs(x.astype(np.float64)))
        error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        smallest = float(np.finfo(dtype).smallest_subnormal)
        assert np.all(error <= tolerance * expected + smallest), x[error > tolerance * expected + smallest]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_gradient_stays_finite_in_both_tails(dtype):
    layer = Sigmoid()
    x = sigmoid_inputs(dtype)
    layer.forward(x)
    grad = layer.backward(np.ones_like(x))
    assert grad.dtype == dtype and np.all(np.isfinite(grad)) and np.all(grad >= 0)
    assert grad[x == 0] == 0.25
