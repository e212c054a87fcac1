"""Class balancing: data.oversample / data.undersample and fit(class_weight="balanced")."""

import numpy as np
import pytest

import npconvnet
from npconvnet import Sequential, data, datasets, metrics
from npconvnet.layers import Dense, Flatten


def imbalanced(rng):
    y = np.repeat([0, 1, 2], [6, 2, 1])
    return rng.standard_normal((9, 2)), y


@pytest.mark.parametrize("balance, per_class", [(data.oversample, 6), (data.undersample, 1)])
def test_balancing_gives_every_class_the_same_count(balance, per_class, rng):
    x, y = imbalanced(rng)
    x_balanced, y_balanced = balance(x, y, seed=3)
    assert np.bincount(y_balanced).tolist() == [per_class] * 3
    # Every sample drawn is one of the originals, with its own label.
    originals = {tuple(row): label for row, label in zip(x, y)}
    assert all(originals[tuple(row)] == label for row, label in zip(x_balanced, y_balanced))


def test_oversampling_keeps_every_original_sample(rng):
    x, y = imbalanced(rng)
    x_balanced, _ = data.oversample(x, y, seed=0)
    assert {tuple(row) for row in x} <= {tuple(row) for row in x_balanced}


def test_balancing_is_seeded(rng):
    x, y = imbalanced(rng)
    first, second = data.undersample(x, y, seed=5), data.undersample(x, y, seed=5)
    np.testing.assert_array_equal(first[0], second[0])


def test_balancing_takes_one_hot_labels(rng):
    x, y = imbalanced(rng)
    _, y_balanced = data.oversample(x, np.eye(3)[y], seed=0)
    assert np.bincount(y_balanced.argmax(axis=1)).tolist() == [6, 6, 6]


def test_balancing_refuses_float_labels(rng):
    with pytest.raises(ValueError, match="y must be integer labels"):
        data.oversample(np.zeros((3, 2)), np.array([0.0, 1.0, 1.0]))


@pytest.mark.slow
@pytest.mark.parametrize("balancing", ["class_weight", "oversample"])
def test_balancing_raises_the_recall_of_a_rare_digit(balancing, mnist_dir):
    """Digit 3 at 2.5% of its share: a plain fit never predicts it; balanced training does."""
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist(data_dir=mnist_dir)
    keep = np.concatenate([np.flatnonzero(y_train != 3)[:10000], np.flatnonzero(y_train == 3)[:25]])
    x, y = x_train[keep], y_train[keep].astype(np.int64)
    y_test = y_test.astype(np.int64)

    def recall_and_macro_f1(balanced):
        npconvnet.manual_seed(0)
        model = Sequential(Flatten(), Dense(784, 10))
        model.compile(optimizer="adam", loss="cross_entropy")
        options = {}
        if balanced and balancing == "class_weight":
            options["class_weight"] = "balanced"
        x_fit, y_fit = data.oversample(x, y, seed=0) if balanced and balancing == "oversample" else (x, y)
        model.fit(x_fit, y_fit, epochs=3, batch_size=128, seed=0, verbose=0, **options)
        predicted = model.predict_classes(x_test)
        return (metrics.recall(y_test, predicted, average=None)[3],
                metrics.f1_score(y_test, predicted, average="macro"))

    plain_recall, plain_f1 = recall_and_macro_f1(False)
    balanced_recall, balanced_f1 = recall_and_macro_f1(True)
    assert balanced_recall > plain_recall + 0.4
    assert balanced_f1 > plain_f1
