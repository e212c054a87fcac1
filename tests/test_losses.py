import numpy as np
import pytest

from gradcheck import check_loss_gradient
from npconvnet import Sequential
from npconvnet.layers import Dense, Flatten
from npconvnet.losses import CrossEntropyLoss, MSELoss, get


def test_cross_entropy_gradient_with_labels(rng):
    check_loss_gradient(CrossEntropyLoss(), rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2]))


def test_cross_entropy_gradient_with_probability_targets(rng):
    targets = rng.dirichlet(np.ones(4), size=5)
    check_loss_gradient(CrossEntropyLoss(), rng.standard_normal((5, 4)), targets)


def test_cross_entropy_gradient_with_label_smoothing(rng):
    check_loss_gradient(CrossEntropyLoss(label_smoothing=0.1), rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2]))


def test_mse_gradient(rng):
    check_loss_gradient(MSELoss(), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_pytorch(label_smoothing, rng, torch):
    logits, labels = rng.standard_normal((8, 5)) * 4, rng.integers(0, 5, 8)
    loss_fn = CrossEntropyLoss(label_smoothing=label_smoothing)
    loss = loss_fn(logits, labels)
    logits_torch = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(logits_torch, torch.tensor(labels), label_smoothing=label_smoothing)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), logits_torch.grad.numpy(), rtol=1e-12)


def test_cross_entropy_with_one_hot_targets_equals_labels(rng):
    logits, labels = rng.standard_normal((6, 3)), np.array([0, 1, 2, 2, 1, 0])
    assert CrossEntropyLoss()(logits, np.eye(3)[labels]) == pytest.approx(CrossEntropyLoss()(logits, labels), rel=1e-14)


def test_cross_entropy_with_probabilities_matches_pytorch(rng, torch):
    logits, targets = rng.standard_normal((4, 3)), rng.dirichlet(np.ones(3), size=4)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets))
    assert CrossEntropyLoss()(logits, targets) == pytest.approx(expected.item(), rel=1e-12)


def test_mse_matches_pytorch(rng, torch):
    output, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    output_torch = torch.tensor(output, requires_grad=True)
    expected = torch.nn.functional.mse_loss(output_torch, torch.tensor(target))
    expected.backward()
    loss_fn = MSELoss()
    assert loss_fn(output, target) == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), output_torch.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e4, 1e6, 1e30])
def test_cross_entropy_is_finite_and_exact_for_huge_logits(dtype, scale):
    logits = np.array([[scale, 0.0, -scale], [0.0, scale, scale]], dtype)
    loss_fn = CrossEntropyLoss()
    # Row 1: the right class wins by `scale` -> loss 0. Row 2: label 0 is `scale` below two tied
    # classes -> loss = scale + log 2. Mean of both.
    expected = (scale + np.log(2)) / 2
    loss = loss_fn(logits, np.array([0, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(expected, rel=1e-6)
    grad = loss_fn.backward()
    assert np.all(np.isfinite(grad)) and grad.dtype == dtype
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-7)


def test_loss_returns_a_python_float():
    assert type(CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0, 1]))) is float


def test_mse_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))


def test_backward_before_the_loss_raises():
    with pytest.raises(RuntimeError, match="before the loss"):
        MSELoss().backward()


def test_losses_by_name():
    assert isinstance(get("cross_entropy"), CrossEntropyLoss)
    assert isinstance(get("sparse_categorical_crossentropy"), CrossEntropyLoss)
    assert isinstance(get("mse"), MSELoss)
    with pytest.raises(ValueError, match="unknown loss"):
        get("hinge")


@pytest.mark.parametrize("dtype,huge", [(np.float32, 3e38), (np.float64, 1e308)])
def test_cross_entropy_is_exact_when_logit_differences_overflow(dtype, huge):
    logits = np.array([[huge, -huge, 0]], dtype)
    loss_fn = CrossEntropyLoss()
    assert loss_fn(logits, np.array([0])) == 0.0
    assert loss_fn(logits, np.array([1])) == np.inf
    np.testing.assert_array_equal(loss_fn.backward(), [[1, -1, 0]])


ONE_HOT = np.eye(3)[[0, 2, 1, 1]]


def _with_row(row, values):
    targets = ONE_HOT.copy()
    targets[row] = values
    return targets


@pytest.mark.parametrize("targets,message", [
    (np.full((4, 3), np.nan), "row 0 holds"),
    (_with_row(2, [np.nan, 1, 0]), "row 2 holds"),
    (_with_row(1, [1.5, -0.5, 0]), "row 1 holds"),
    (_with_row(3, [np.inf, 0, 0]), "row 3 sums to inf"),
    (_with_row(0, [-np.inf, 1, 1]), "row 0 holds"),
    (ONE_HOT * 2, "row 0 sums to 2"),
    (_with_row(1, [0.3, 0.3, 0.3]), "row 1 sums to 0.9"),
    (np.random.default_rng(0).random((4, 3)) + 1, "row 0 sums to"),
], ids=["all NaN", "a NaN", "negative", "infinite", "minus infinity", "doubled", "short of 1", "scores"])
def test_targets_that_are_not_probabilities_are_refused_naming_the_row(targets, message):
    with pytest.raises(ValueError, match=f"^CrossEntropyLoss: targets must be probabilities .*{message}"):
        CrossEntropyLoss()(np.zeros((4, 3), np.float32), targets)


@pytest.mark.parametrize("targets", [np.eye(4)[[0, 1, 2, 3]], np.eye(2)[[0, 1, 1, 0]], np.zeros((4, 3, 1))])
def test_targets_of_the_wrong_width_or_rank_are_refused(targets):
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: targets of shape .* do not match logits \(4, 3\)"):
        CrossEntropyLoss()(np.zeros((4, 3)), targets)


def test_targets_that_are_not_numbers_are_refused():
    with pytest.raises(TypeError, match="^CrossEntropyLoss: targets must be numbers, got dtype <U1"):
        CrossEntropyLoss()(np.zeros((2, 2)), np.array([["a", "b"], ["c", "d"]]))


def test_rounded_float32_distributions_over_many_classes_are_accepted(rng):
    logits = rng.standard_normal((8, 1000)).astype(np.float32)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert abs(soft.sum(axis=1, dtype=np.float64) - 1).max() > 0       # rounding, not exactness
    loss = CrossEntropyLoss()(logits, soft)
    assert np.isfinite(loss)


@pytest.mark.parametrize("labels,error,message", [
    (np.array([0, 3]), ValueError, r"labels must be in \[0, 3\), got values from 0 to 3"),
    (np.array([-1, 0]), ValueError, r"labels must be in \[0, 3\), got values from -1 to 0"),
    (np.array([0.0, 1.0]), TypeError, "integer class labels expected"),
    (np.array([True, False]), TypeError, "integer class labels expected"),
    (np.array([0, 1, 2]), ValueError, "3 labels for 2 outputs"),
])
def test_label_targets_that_cannot_be_classes_are_refused(labels, error, message):
    with pytest.raises(error, match=f"^CrossEntropyLoss: {message}"):
        CrossEntropyLoss()(np.zeros((2, 3)), labels)


@pytest.mark.parametrize("label_smoothing,error", [(np.nan, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                                   ("0.1", TypeError)])
def test_a_label_smoothing_outside_0_1_is_refused(label_smoothing, error):
    with pytest.raises(error, match="^CrossEntropyLoss: label_smoothing must be a finite number in \\[0, 1\\]"):
        CrossEntropyLoss(label_smoothing=label_smoothing)


@pytest.mark.parametrize("targets,error,message", [
    (np.full((2, 3), np.nan), ValueError, "targets must be finite numbers, but 6 of the 6 are NaN or infinite"),
    (np.array([[0, 1, np.inf], [0, 0, 0]]), ValueError, "targets must be finite numbers, but 1 of the 6"),
    (np.array([["0", "1", "2"]] * 2), TypeError, "targets must be numbers"),
])
def test_mse_targets_that_are_not_finite_numbers_are_refused(targets, error, message):
    with pytest.raises(error, match=f"^MSELoss: {message}"):
        MSELoss()(np.zeros((2, 3)), targets)


def test_fit_on_nan_one_hot_targets_names_the_targets_instead_of_diverging():
    model = Sequential(Flatten(), Dense(4, 3))
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="^CrossEntropyLoss: targets must be probabilities"):
        model.fit(np.zeros((4, 2, 2), np.float32), np.full((4, 3), np.nan), epochs=1, verbose=0)
