"""Per-layer weight penalties: kernel_regularizer=l2(...), added to the loss fit minimises and reports."""

import numpy as np
import pytest

from npconvnet import Sequential, regularizers
from npconvnet.layers import Conv2D, Dense, Flatten, ReLU
from npconvnet.layers.base import layer_from_config, layer_to_config
from npconvnet.optim import SGD


def test_l1_l2_penalty_and_its_gradient_are_keras_formulas():
    weight = np.array([[1.0, -2.0], [0.5, 0.0]])
    reg = regularizers.l1_l2(l1=0.1, l2=0.3)
    assert reg(weight) == pytest.approx(0.1 * 3.5 + 0.3 * 5.25)
    np.testing.assert_allclose(reg.gradient(weight), 0.1 * np.sign(weight) + 2 * 0.3 * weight)


def test_fit_reports_the_loss_plus_the_penalty_and_evaluate_agrees(rng):
    x, y = rng.standard_normal((16, 3)), rng.integers(0, 2, 16)
    model = Sequential(Dense(3, 4, kernel_regularizer=regularizers.l2(0.5)), ReLU(), Dense(4, 2)).astype(np.float64)
    model.compile(optimizer=SGD(lr=0.0), loss="cross_entropy")
    plain = Sequential(*model.layers)
    with pytest.warns(UserWarning, match="learning rate 0"):      # lr 0 keeps the weights fixed
        history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    penalty = 0.5 * float(np.sum(model[0].weight.data ** 2))
    from npconvnet.losses import CrossEntropyLoss
    unpenalised = CrossEntropyLoss()(plain.eval().forward(x), y)
    assert history.history["loss"][0] == pytest.approx(unpenalised + penalty, rel=1e-12)
    assert model.evaluate(x, y)["loss"] == pytest.approx(unpenalised + penalty, rel=1e-12)


def test_a_training_step_follows_the_gradient_of_loss_plus_penalty(rng):
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    model = Sequential(Dense(3, 2, kernel_regularizer=regularizers.l1_l2(0.01, 0.2))).astype(np.float64)
    model.compile(optimizer=SGD(lr=1.0), loss="cross_entropy")
    before = model[0].weight.data.copy()

    def objective(weight):
        probe = Sequential(Dense(3, 2)).astype(np.float64)
        probe.load_state_dict({"0.weight": weight, "0.bias": model[0].bias.data})
        model.loss(probe.forward(x), y)
        return model.loss(probe.forward(x), y) + model[0].kernel_regularizer(weight)

    numeric = np.zeros_like(before)
    for index in np.ndindex(before.shape):
        step = np.zeros_like(before)
        step[index] = 1e-6
        numeric[index] = (objective(before + step) - objective(before - step)) / 2e-6
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(before - model[0].weight.data, numeric, rtol=1e-6, atol=1e-9)


def test_only_the_layers_given_a_regularizer_are_penalised():
    model = Sequential(Conv2D(1, 2, 3, kernel_regularizer=regularizers.l2(0.1)), Flatten(), Dense(2, 2))
    assert [parameter for parameter, _ in model.regularization_terms()] == [model[0].weight]


def test_a_regularizer_survives_the_layer_config():
    layer = Dense(3, 2, kernel_regularizer=regularizers.l1(0.25))
    rebuilt = layer_from_config(layer_to_config(layer))
    assert rebuilt.kernel_regularizer.get_config() == {"l1": 0.25, "l2": 0.0}


@pytest.mark.parametrize("factor", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_a_factor_that_cannot_work_is_refused(factor):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        regularizers.l2(factor)
