"""fit(sample_weight=..., class_weight=...): Keras's per-sample loss weights, one mechanism for both."""

import numpy as np
import pytest

from npconvnet import Sequential
from npconvnet.layers import Dense
from npconvnet.losses import CrossEntropyLoss, MSELoss
from npconvnet.optim import SGD


def test_a_weighted_cross_entropy_is_the_weighted_sum_of_sample_losses_over_the_batch_size(rng):
    logits, labels, weights = rng.standard_normal((5, 3)), rng.integers(0, 3, 5), rng.uniform(0, 2, 5)
    per_sample = [CrossEntropyLoss()(logits[n:n + 1], labels[n:n + 1]) for n in range(5)]
    assert CrossEntropyLoss()(logits, labels, sample_weight=weights) == pytest.approx(
        float(np.dot(per_sample, weights) / 5), rel=1e-12)


def test_a_weighted_loss_gradient_matches_finite_differences(rng):
    for loss, target in ((CrossEntropyLoss(label_smoothing=0.1), rng.integers(0, 3, 4)),
                         (MSELoss(), rng.standard_normal((4, 3)))):
        output, weights = rng.standard_normal((4, 3)), rng.uniform(0, 2, 4)
        loss(output, target, sample_weight=weights)
        analytic = loss.backward()
        numeric = np.zeros_like(output)
        for index in np.ndindex(output.shape):
            step = np.zeros_like(output)
            step[index] = 1e-6
            numeric[index] = (loss(output + step, target, sample_weight=weights)
                              - loss(output - step, target, sample_weight=weights)) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_weights_of_one_give_the_unweighted_loss(rng):
    logits, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    assert CrossEntropyLoss()(logits, labels, sample_weight=np.ones(6)) == pytest.approx(
        CrossEntropyLoss()(logits, labels), rel=1e-12)


def test_a_weighted_mse_matches_pytorch(rng, torch):
    output, target, weights = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.uniform(0, 2, 4)
    expected = (torch.nn.functional.mse_loss(torch.tensor(output), torch.tensor(target), reduction="none")
                .mean(dim=1) * torch.tensor(weights)).mean()
    assert MSELoss()(output, target, sample_weight=weights) == pytest.approx(expected.item(), rel=1e-12)


def small_model(dtype=np.float64):
    model = Sequential(Dense(2, 2)).astype(dtype)
    model.compile(optimizer=SGD(lr=0.5), loss="cross_entropy", metrics=["accuracy"])
    return model


def test_fit_with_integer_sample_weights_equals_fit_on_repeated_samples(rng):
    x, y = rng.standard_normal((6, 2)), np.array([0, 1, 0, 1, 1, 0])
    counts = np.array([1, 2, 1, 3, 1, 2])
    weighted, repeated = small_model(), small_model()
    repeated.load_state_dict(weighted.state_dict())
    # One full batch each: the repeated data has more samples, so its mean is over more of them.
    weighted.fit(x, y, epochs=3, batch_size=6, shuffle=False, verbose=0, sample_weight=counts * 6 / counts.sum())
    repeated.fit(np.repeat(x, counts, axis=0), np.repeat(y, counts), epochs=3, batch_size=counts.sum(),
                 shuffle=False, verbose=0)
    for name, value in weighted.state_dict().items():
        np.testing.assert_allclose(value, repeated.state_dict()[name], rtol=1e-12, err_msg=name)


def test_class_weight_gives_each_sample_its_label_weight(rng):
    x, y = rng.standard_normal((8, 2)), rng.integers(0, 2, 8)
    by_class, by_sample = small_model(), small_model()
    by_sample.load_state_dict(by_class.state_dict())
    by_class.fit(x, y, epochs=2, batch_size=3, seed=1, verbose=0, class_weight={0: 0.5, 1: 2.0})
    by_sample.fit(x, y, epochs=2, batch_size=3, seed=1, verbose=0, sample_weight=np.where(y == 0, 0.5, 2.0))
    for name, value in by_class.state_dict().items():
        np.testing.assert_array_equal(value, by_sample.state_dict()[name])


def test_balanced_class_weight_is_samples_over_classes_times_count(rng):
    x, y = rng.standard_normal((8, 2)), np.array([0, 0, 0, 0, 0, 0, 1, 1])
    balanced, by_sample = small_model(), small_model()
    by_sample.load_state_dict(balanced.state_dict())
    balanced.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0, class_weight="balanced")
    by_sample.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0,
                  sample_weight=np.where(y == 0, 8 / (2 * 6), 8 / (2 * 2)))
    for name, value in balanced.state_dict().items():
        np.testing.assert_array_equal(value, by_sample.state_dict()[name])


@pytest.mark.parametrize("options, message", [
    ({"sample_weight": np.ones(3)}, r"one weight per training sample, shape \(4,\)"),
    ({"sample_weight": np.array([1, -1, 1, 1.0])}, "finite and >= 0"),
    ({"sample_weight": np.array([1, np.nan, 1, 1])}, "finite and >= 0"),
    ({"sample_weight": np.zeros(4)}, "every sample weighs 0"),
    ({"class_weight": "even"}, "class_weight must be a dict"),
    ({"class_weight": {5: 1.0}}, r"labels must be ints in \[0, 2\), got 5"),
    ({"class_weight": {0: float("inf")}}, r"class_weight\[0\] must be a finite number >= 0"),
])
def test_bad_weights_are_refused_with_a_clear_error(options, message, rng):
    with pytest.raises(ValueError, match=message):
        small_model().fit(rng.standard_normal((4, 2)), np.array([0, 1, 0, 1]), verbose=0, **options)
