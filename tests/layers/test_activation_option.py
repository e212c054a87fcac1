"""Conv2D(..., activation="relu") and Dense(..., activation="softmax"): Keras's shorthand."""

import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet import Sequential, load_model
from npconvnet.layers import Conv2D, Dense, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

PAIRS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_dense_with_an_activation_computes_dense_then_that_layer(name, rng):
    fused = Dense(4, 3, activation=name).astype(np.float64)
    plain = Dense(4, 3).astype(np.float64)
    plain.load_state_dict(fused.state_dict())
    pair = Sequential(plain, PAIRS[name]())
    x, upstream = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(fused.forward(x), pair.forward(x))
    np.testing.assert_array_equal(fused.backward(upstream), pair.backward(upstream))
    np.testing.assert_array_equal(fused.weight.grad, plain.weight.grad)


def test_conv_with_relu_matches_finite_differences(rng):
    check_layer_gradients(Conv2D(2, 3, 3, padding=1, activation="relu"), rng.standard_normal((2, 2, 5, 5)))


def test_the_activation_shows_in_the_layer_list_and_the_model_file(tmp_path):
    model = Sequential(Conv2D(1, 2, 3, activation="relu"))
    assert "activation='relu'" in repr(model)
    model.save(tmp_path / "model.npz")
    assert load_model(tmp_path / "model.npz")[0].activation == "relu"


def test_an_unknown_activation_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"activation must be None or one of \['leaky_relu', 'relu'"):
        Dense(2, 2, activation="swish")


def test_predict_applies_no_second_softmax_after_a_softmax_activation(rng):
    model = Sequential(Dense(4, 3, activation="softmax"))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), model.eval().forward(x))
