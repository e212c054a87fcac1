import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

ACTIVATIONS = [ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), Softmax()]


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda layer: type(layer).__name__)
def test_activation_gradients_match_finite_differences(layer, rng):
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5                # keep finite differences away from ReLU's kink
    check_layer_gradients(layer, x)


@pytest.mark.parametrize("layer,reference", [
    (ReLU(), lambda t, x: t.relu(x)),
    (LeakyReLU(0.2), lambda t, x: t.nn.functional.leaky_relu(x, 0.2)),
    (Sigmoid(), lambda t, x: t.sigmoid(x)),
    (Tanh(), lambda t, x: t.tanh(x)),
    (Softmax(), lambda t, x: t.softmax(x, dim=1)),
], ids=["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax"])
def test_activation_matches_pytorch(layer, reference, rng, torch):
    x = rng.standard_normal((4, 5, 3)) * 3
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad = layer.backward(upstream)
    x_torch = torch.tensor(x, requires_grad=True)
    expected = reference(torch, x_torch)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, x_torch.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_activations_work_on_images(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    for layer in ACTIVATIONS:
        assert layer.forward(x).shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_softmax_stay_finite_for_huge_logits(dtype):
    x = np.array([[-1e4, 0.0, 1e4], [3e38 if dtype == np.float32 else 1e300, 0.0, -1e5]], dtype)
    sigmoid = Sigmoid().forward(x)
    softmax = Softmax().forward(x)
    assert np.all(np.isfinite(sigmoid)) and np.all(np.isfinite(softmax))
    np.testing.assert_array_equal(sigmoid[0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(softmax[0], [0.0, 0.0, 1.0])
    assert sigmoid.dtype == dtype and softmax.dtype == dtype


SPECIAL_VALUES = [-np.inf, -2.0, -0.0, 0.0, 3.0, np.inf, np.nan]


@pytest.mark.parametrize("slope", [0.1, -0.5, -0.999, 1.0, 2.5, 2.001, 3e7])
def test_leaky_relu_matches_pytorch_for_any_slope_and_special_values(slope, torch):
    x = np.array([SPECIAL_VALUES], np.float32)
    layer = LeakyReLU(slope)
    out = layer.forward(x)
    grad = layer.backward(np.full_like(x, 3.0))
    x_torch = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.leaky_relu(x_torch, slope)
    expected.backward(torch.full_like(x_torch, 3.0))
    np.testing.assert_array_equal(out, expected.detach().numpy())
    np.testing.assert_array_equal(grad, x_torch.grad.numpy())


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.0)], ids=["ReLU", "LeakyReLU(0)"])
def test_relu_keeps_nan_and_infinity_and_sends_minus_infinity_to_zero(layer, torch):
    x = np.array([SPECIAL_VALUES], np.float32)
    np.testing.assert_array_equal(layer.forward(x), torch.relu(torch.tensor(x)).numpy())


@pytest.mark.parametrize("training", [True, False])
def test_relu_gradient_at_special_values_matches_pytorch(training, torch):
    x = np.array([SPECIAL_VALUES], np.float32)
    layer = ReLU().train(training)
    grad = layer.backward(np.full_like(layer.forward(x), 3.0))
    x_torch = torch.tensor(x, requires_grad=True)
    torch.relu(x_torch).backward(torch.full_like(x_torch, 3.0))
    np.testing.assert_array_equal(grad, x_torch.grad.numpy())


def test_leaky_relu_hand_computed():
    out = LeakyReLU(0.1).forward(np.array([[-2.0, 0.0, 3.0]]))
    np.testing.assert_allclose(out, [[-0.2, 0.0, 3.0]])


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda layer: type(layer).__name__)
def test_integer_inputs_are_refused_rather_than_truncated(layer):
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.array([[1, 2], [3, 4]]))


def test_a_list_input_is_refused_with_the_layer_named():
    with pytest.raises(TypeError, match="Sigmoid.*NumPy array"):
        Sigmoid().forward([[1.0, 2.0]])


@pytest.mark.parametrize("slope", [float("nan"), float("inf"), "0.1", None])
def test_leaky_relu_refuses_a_slope_that_is_not_a_finite_number(slope):
    with pytest.raises((ValueError, TypeError), match="negative_slope must be a finite number"):
        LeakyReLU(slope)
