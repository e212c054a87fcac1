import numpy as np

from gradcheck import check_layer_gradients
from npconvnet.layers import Dropout


def test_dropout_is_identity_in_evaluation_mode(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    layer = Dropout(0.5).eval()
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_zeroes_about_p_and_scales_the_rest_by_one_over_keep():
    x = np.ones((200, 500), np.float32)
    out = Dropout(0.3).forward(x)
    assert abs((out == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(np.unique(out[out != 0]), [1 / 0.7], rtol=1e-6)
    assert abs(out.mean() - 1) < 0.01            # inverted dropout keeps the expectation


def test_dropout_gradient_uses_the_same_mask(rng):
    check_layer_gradients(Dropout(0.4), rng.standard_normal((6, 7)))


def test_dropout_with_p_zero_and_one():
    x = np.ones((3, 3), np.float32)
    np.testing.assert_array_equal(Dropout(0.0).forward(x), x)
    np.testing.assert_array_equal(Dropout(1.0).forward(x), np.zeros_like(x))


def test_dropout_rejects_probabilities_outside_zero_one():
    import pytest
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(1.5)


def test_dropout_refuses_integer_inputs():
    import pytest
    with pytest.raises(TypeError, match="floating-point"):
        Dropout(0.5).forward(np.ones((2, 2), np.int64))
