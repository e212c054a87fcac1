"""In evaluation mode some layers skip the bookkeeping for a backward pass (MaxPool2D's argmax,
ReLU's mask, BatchNorm's x_hat); a backward pass after such a forward must still be exact."""

import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import BatchNorm1D, BatchNorm2D, MaxPool2D, ReLU


@pytest.mark.parametrize("layer", [MaxPool2D(2), MaxPool2D(3, 1, 1), ReLU()], ids=repr)
def test_backward_after_an_evaluation_forward_equals_the_training_one(layer, rng):
    x = rng.integers(-2, 3, (2, 3, 6, 6)).astype(np.float64)       # ties included
    upstream = rng.standard_normal(layer.train().forward(x).shape)
    expected = layer.backward(upstream)
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x), layer.train().forward(x))
    layer.eval().forward(x)
    np.testing.assert_array_equal(layer.backward(upstream), expected)


@pytest.mark.parametrize("layer", [MaxPool2D(2), ReLU()], ids=repr)
def test_evaluation_gradients_match_finite_differences(layer, rng):
    x = rng.standard_normal((2, 2, 4, 4))
    check_layer_gradients(layer.eval(), x)


@pytest.mark.parametrize("layer,shape", [(BatchNorm2D(3), (4, 3, 5, 4)), (BatchNorm1D(3), (6, 3))], ids=repr)
def test_batchnorm_evaluation_output_is_the_normalised_affine_map(layer, shape, rng):
    layer = layer.astype(np.float64).eval()
    layer.weight.data, layer.bias.data = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    layer.running_mean, layer.running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    x = rng.standard_normal(shape)
    channel = (1, -1) + (1,) * (len(shape) - 2)
    expected = ((x - layer.running_mean.reshape(channel)) / np.sqrt(layer.running_var.reshape(channel) + layer.eps)
                * layer.weight.data.reshape(channel) + layer.bias.data.reshape(channel))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
