import itertools

import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import AvgPool2D, GlobalAvgPool2D, MaxPool2D

# (kernel_size, stride, padding): tiling, overlapping (stride < kernel), uneven sizes, padding
CONFIGS = [(2, None, 0), (3, None, 0), (2, 1, 0), (3, 2, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (3, 3, 1)]


@pytest.mark.parametrize("pool,config", list(itertools.product([MaxPool2D, AvgPool2D], CONFIGS)))
def test_pool_gradients_match_finite_differences(pool, config, rng):
    kernel_size, stride, padding = config
    check_layer_gradients(pool(kernel_size, stride, padding), rng.standard_normal((2, 3, 7, 6)))


@pytest.mark.parametrize("pool,config", list(itertools.product([MaxPool2D, AvgPool2D], CONFIGS)))
def test_pool_matches_pytorch_output_and_gradient(pool, config, rng, torch):
    kernel_size, stride, padding = config
    layer = pool(kernel_size, stride, padding)
    x = rng.standard_normal((4, 3, 9, 7))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)

    reference = torch.nn.functional.max_pool2d if pool is MaxPool2D else torch.nn.functional.avg_pool2d
    x_torch = torch.tensor(x, requires_grad=True)
    expected = reference(x_torch, kernel_size, stride if stride is not None else kernel_size, padding)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 1), (2, 1)])
def test_max_pool_sends_a_tied_window_gradient_to_one_entry_as_pytorch_does(kernel_size, stride, torch):
    x = np.array(np.random.default_rng(0).integers(0, 2, (2, 2, 6, 6)), dtype=np.float64)
    layer = MaxPool2D(kernel_size, stride)
    out = layer.forward(x)
    grad_input = layer.backward(np.ones_like(out))
    assert grad_input.sum() == out.size          # each window's gradient lands exactly once
    x_torch = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(x_torch, kernel_size, stride).sum().backward()
    np.testing.assert_array_equal(grad_input, x_torch.grad.numpy())


def test_max_pool_hand_computed():
    x = np.array([[1, 2, 5, 0], [3, 4, 1, 1], [0, 0, 9, 8], [7, 0, 8, 9]], np.float32)[None, None]
    layer = MaxPool2D(2)
    np.testing.assert_array_equal(layer.forward(x), [[[[4, 5], [7, 9]]]])
    grad = layer.backward(np.array([[[[1, 2], [3, 4]]]], np.float32))
    np.testing.assert_array_equal(grad[0, 0], [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 4, 0], [3, 0, 0, 0]])


def test_avg_pool_hand_computed():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(AvgPool2D(2).forward(x), [[[[2.5, 4.5], [10.5, 12.5]]]])


def test_stride_defaults_to_kernel_size():
    assert MaxPool2D(3).stride == (3, 3)


def test_uneven_sizes_drop_the_last_partial_window():
    assert MaxPool2D(2).forward(np.zeros((1, 1, 7, 5), np.float32)).shape == (1, 1, 3, 2)


def test_global_average_pool_gradients_and_shape(rng):
    layer = GlobalAvgPool2D()
    assert layer.forward(rng.standard_normal((2, 3, 4, 5))).shape == (2, 3)
    check_layer_gradients(layer, rng.standard_normal((2, 3, 4, 5)))


def test_global_average_pool_matches_mean():
    x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(GlobalAvgPool2D().forward(x), [[5.5, 17.5]])


@pytest.mark.parametrize("arguments,message", [
    ({"kernel_size": 2, "stride": 0}, "must be positive"),
    ({"kernel_size": 2, "padding": 2}, "half the kernel size"),
    ({"kernel_size": 2, "padding": "same"}, "padding must be an int or a pair"),
])
def test_bad_pool_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        MaxPool2D(**arguments)


def test_pool_on_a_too_small_input_raises():
    with pytest.raises(ValueError, match="smaller than the pooling window"):
        MaxPool2D(3).forward(np.zeros((1, 1, 2, 2), np.float32))


def test_pool_on_a_3d_input_raises():
    with pytest.raises(ValueError, match="4-D"):
        AvgPool2D(2).forward(np.zeros((1, 4, 4), np.float32))
