import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import Dense, Flatten


def test_dense_gradients_match_finite_differences(rng):
    check_layer_gradients(Dense(5, 3), rng.standard_normal((4, 5)))


def test_dense_without_bias_gradients_match_finite_differences(rng):
    check_layer_gradients(Dense(5, 3, bias=False), rng.standard_normal((4, 5)))


def test_dense_matches_pytorch_linear(rng, torch):
    layer = Dense(6, 4).astype(np.float64)
    layer.bias.data = rng.standard_normal(4)
    x = rng.standard_normal((3, 6))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)

    x_torch = torch.tensor(x, requires_grad=True)
    weight = torch.tensor(layer.weight.data, requires_grad=True)
    bias = torch.tensor(layer.bias.data, requires_grad=True)
    expected = torch.nn.functional.linear(x_torch, weight, bias)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, bias.grad.numpy(), rtol=1e-12)


def test_dense_weight_has_pytorch_layout():
    assert Dense(784, 10).weight.shape == (10, 784)


def test_dense_refuses_the_wrong_number_of_features():
    with pytest.raises(ValueError, match="expected 5 channels|expected 5"):
        Dense(5, 3).forward(np.zeros((2, 4), np.float32))


def test_dense_refuses_an_image_batch():
    with pytest.raises(ValueError, match="2-D input"):
        Dense(5, 3).forward(np.zeros((2, 5, 1, 1), np.float32))


def test_flatten_is_c_order_like_pytorch_view():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(Flatten().forward(x), x.reshape(2, 12))


def test_flatten_gradients_match_finite_differences(rng):
    check_layer_gradients(Flatten(), rng.standard_normal((2, 3, 2, 2)))


def test_flatten_takes_an_empty_batch():
    layer = Flatten()
    out = layer.forward(np.zeros((0, 3, 4, 5), np.float32))
    assert out.shape == (0, 60)
    assert layer.backward(out).shape == (0, 3, 4, 5)
