"""Metrics against hand-computed values (the conventions are sklearn's)."""

import math

import numpy as np
import pytest

from npconvnet import metrics

# sklearn's documentation example: classes 0, 1, 2 with two samples each.
Y_TRUE = [0, 1, 2, 0, 1, 2]
Y_PRED = [0, 2, 1, 0, 0, 1]
#   confusion (rows true, columns predicted):  [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
#   class 0: tp 2, predicted 3, true 2 -> P 2/3, R 1, F1 2*2/(3+2) = 0.8; classes 1, 2: all 0


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    expected = [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
    np.testing.assert_array_equal(metrics.confusion_matrix(Y_TRUE, Y_PRED), expected)


def test_confusion_matrix_keeps_rows_of_absent_classes_up_to_num_classes():
    confusion = metrics.confusion_matrix([0, 2], [0, 0], num_classes=4)
    np.testing.assert_array_equal(confusion, [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_accuracy_is_the_fraction_of_correct_predictions():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(2 / 6)


def test_scores_of_shape_n_by_k_stand_for_their_argmax():
    scores = np.eye(3)[Y_PRED] * 0.7 + 0.1
    assert metrics.accuracy(np.eye(3)[Y_TRUE], scores) == pytest.approx(2 / 6)
    np.testing.assert_array_equal(metrics.confusion_matrix(Y_TRUE, scores),
                                  metrics.confusion_matrix(Y_TRUE, Y_PRED))


def test_per_class_precision_recall_f1():
    precision, recall, f1, support = metrics.precision_recall_f1(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(precision, [2 / 3, 0, 0])
    np.testing.assert_allclose(recall, [1, 0, 0])
    np.testing.assert_allclose(f1, [0.8, 0, 0])
    np.testing.assert_array_equal(support, [2, 2, 2])


def test_macro_micro_weighted_f1_match_sklearn_documentation():
    assert metrics.f1_score(Y_TRUE, Y_PRED, average="macro") == pytest.approx(0.26666666)
    assert metrics.f1_score(Y_TRUE, Y_PRED, average="micro") == pytest.approx(0.33333333)
    assert metrics.f1_score(Y_TRUE, Y_PRED, average="weighted") == pytest.approx(0.26666666)
    assert metrics.precision(Y_TRUE, Y_PRED, average="macro") == pytest.approx(0.22222222)
    assert metrics.recall(Y_TRUE, Y_PRED, average="macro") == pytest.approx(0.33333333)


def test_weighted_average_weighs_classes_by_support():
    # class 0: P 1, R 2/3, F1 0.8 (support 3); class 1: P 1/2, R 1, F1 2/3 (support 1)
    y_true, y_pred = [0, 0, 0, 1], [0, 0, 1, 1]
    assert metrics.f1_score(y_true, y_pred, average="weighted") == pytest.approx((3 * 0.8 + 2 / 3) / 4)
    assert metrics.f1_score(y_true, y_pred, average="macro") == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics.precision(y_true, y_pred, average="weighted") == pytest.approx((3 * 1 + 0.5) / 4)


def test_micro_average_equals_accuracy_for_single_label_data():
    for name in ("precision", "recall", "f1_score"):
        assert getattr(metrics, name)(Y_TRUE, Y_PRED, average="micro") == pytest.approx(2 / 6)


def test_zero_division_sets_undefined_precision_and_leaves_defined_f1_alone():
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 0, 0]          # class 1 is never predicted
    np.testing.assert_allclose(metrics.precision(y_true, y_pred), [0.5, 0.0])
    np.testing.assert_allclose(metrics.precision(y_true, y_pred, zero_division=1.0), [0.5, 1.0])
    # F1 = 2 tp / (predicted + true) = 0 / 2 for class 1: defined, whatever zero_division says
    np.testing.assert_allclose(metrics.f1_score(y_true, y_pred, zero_division=1.0), [2 / 3, 0.0])
    assert metrics.precision(y_true, y_pred, average="macro", zero_division=1.0) == pytest.approx(0.75)


def test_zero_division_nan_is_left_out_of_averages():
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 0, 0]
    per_class = metrics.precision(y_true, y_pred, zero_division=np.nan)
    assert per_class[0] == 0.5 and math.isnan(per_class[1])
    assert metrics.precision(y_true, y_pred, average="macro", zero_division=np.nan) == pytest.approx(0.5)


def test_averages_skip_classes_absent_from_both_true_and_predicted_labels():
    # class 1 occurs nowhere: its per-class precision is zero_division, the average ignores it
    assert metrics.precision([0, 2], [0, 2])[1] == 0.0
    assert metrics.precision([0, 2], [0, 2], average="macro") == 1.0
    assert metrics.f1_score([0, 2], [0, 2], average="macro", num_classes=5) == 1.0


def test_metric_by_name_computes_from_a_confusion_matrix():
    confusion = metrics.confusion_matrix(Y_TRUE, Y_PRED)
    assert metrics.get("accuracy")(confusion) == pytest.approx(2 / 6)
    assert metrics.get("f1_macro")(confusion) == pytest.approx(metrics.f1_score(Y_TRUE, Y_PRED, "macro"))
    assert metrics.get("recall_weighted")(confusion) == pytest.approx(1 / 3)


def test_unknown_metric_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric 'f2_macro'.*f1_macro"):
        metrics.get("f2_macro")


LABEL_FUNCTIONS = [metrics.confusion_matrix, metrics.accuracy, metrics.precision, metrics.recall,
                   metrics.f1_score, metrics.precision_recall_f1]


@pytest.mark.parametrize("function", LABEL_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("y_true, y_pred, error, message", [
    ([0, 1, 1], [0, 1], ValueError, "y_true has 3 samples, y_pred 2"),
    ([0, -1], [0, 1], ValueError, "y_true: class labels must be >= 0"),
    ([0, 1], [-5, 1], ValueError, "y_pred: class labels must be >= 0"),
    ([0.0, 1.0], [0, 1], TypeError, "y_true: expected integer class labels"),
    ([0, 1], [True, False], TypeError, "y_pred: expected integer class labels"),
    (["a", "b"], [0, 1], TypeError, "y_true: expected integer class labels"),
    ([[[0]]], [0], ValueError, "y_true: expected labels of shape"),
    ([0, [1, 2]], [0, 1], ValueError, "y_true: expected labels of shape"),
    ([[0], [1]], [0, 1], ValueError, r"y_true: scores of shape \(2, 1\) need at least 2 columns"),
    ([0, 1], [[0.9, np.nan], [0.1, 0.9]], ValueError, "y_pred: scores hold NaN"),
    ([0, 1], [[0.9, np.inf], [0.1, 0.9]], ValueError, "y_pred: scores hold NaN or infinite"),
], ids=["lengths", "negative true", "negative pred", "float", "bool", "str", "3-D", "ragged",
        "column", "NaN scores", "inf scores"])
def test_labels_that_cannot_be_classes_are_refused_by_every_metric(function, y_true, y_pred, error, message):
    with pytest.raises(error, match=message):
        function(y_true, y_pred)


@pytest.mark.parametrize("function", [metrics.confusion_matrix] + LABEL_FUNCTIONS[2:], ids=lambda f: f.__name__)
def test_a_huge_label_without_num_classes_is_refused_instead_of_allocating_its_matrix(function):
    with pytest.raises(ValueError, match="the largest label, 100000000000000, would make a .* need num_classes"):
        function([0], [10**14])


def test_accuracy_needs_no_matrix_for_a_huge_label():
    assert metrics.accuracy([0, 10**14], [0, 1]) == 0.5


@pytest.mark.parametrize("function", LABEL_FUNCTIONS[2:], ids=lambda f: f.__name__)
def test_labels_beyond_num_classes_are_rejected(function):
    with pytest.raises(ValueError, match="y_true: label 3 is out of range for num_classes=3"):
        function([0, 3], [0, 1], num_classes=3)


def test_confusion_matrix_rejects_labels_beyond_num_classes():
    with pytest.raises(ValueError, match="y_pred: label 10 is out of range for num_classes=3"):
        metrics.confusion_matrix([0], [10], num_classes=3)


@pytest.mark.parametrize("num_classes,error", [(0, ValueError), (-2, ValueError), (2.0, TypeError),
                                               (True, TypeError), ("3", TypeError),
                                               (10**14, ValueError)])
def test_a_number_of_classes_that_cannot_work_is_refused(num_classes, error):
    with pytest.raises(error, match="^confusion_matrix: num_classes"):
        metrics.confusion_matrix([0], [1], num_classes=num_classes)


def test_labels_above_the_inference_limit_need_num_classes(monkeypatch):
    monkeypatch.setattr(metrics, "MAX_INFERRED_CLASSES", 5)
    assert metrics.confusion_matrix([0], [4]).shape == (5, 5)
    with pytest.raises(ValueError, match="labels above 4 need num_classes"):
        metrics.confusion_matrix([0], [5])
    assert metrics.confusion_matrix([0], [5], num_classes=6).shape == (6, 6)


def test_no_samples_give_an_empty_matrix_or_zeros_of_num_classes():
    assert metrics.confusion_matrix([], []).shape == (0, 0)
    np.testing.assert_array_equal(metrics.confusion_matrix([], [], num_classes=2), np.zeros((2, 2)))


def test_accuracy_of_no_samples_is_refused():
    with pytest.raises(ValueError, match="accuracy: no samples"):
        metrics.accuracy([], [])


@pytest.mark.parametrize("function", [metrics.accuracy_from_confusion, metrics.scores_from_confusion],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("confusion,error,message", [
    (np.array([1, 2, 3]), ValueError, r"square \(K, K\) confusion matrix, got shape \(3,\)"),
    (np.ones((2, 3), np.int64), ValueError, r"square \(K, K\) confusion matrix, got shape \(2, 3\)"),
    (np.array([[1, -1], [0, 2]]), ValueError, "counts >= 0"),
    (np.array([[1.0, np.nan], [0, 2]]), ValueError, "counts >= 0"),
    (np.array([[1.0, np.inf], [0, 2]]), ValueError, "counts >= 0"),
    (np.array([["1", "0"], ["0", "1"]]), TypeError, "confusion matrix of counts"),
])
def test_a_confusion_matrix_that_cannot_hold_counts_is_refused(function, confusion, error, message):
    with pytest.raises(error, match=f"^{function.__name__}: .*{message}"):
        function(confusion)


def test_unknown_average_is_rejected():
    with pytest.raises(ValueError, match="average must be"):
        metrics.f1_score(Y_TRUE, Y_PRED, average="samples")


def test_unsigned_labels_such_as_mnists_uint8_ones_are_counted():
    y_true, y_pred = np.array([0, 1, 2, 2], np.uint8), np.array([0, 2, 2, 1], np.uint8)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred),
                                  metrics.confusion_matrix(y_true.astype(int), y_pred.astype(int)))
