import itertools
import math

import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import Conv2D
from npconvnet.windows import resolve_padding

KERNELS = [1, 2, 3, (2, 3)]
STRIDES = [1, 2, 3]
PADDINGS = [0, 1, "valid", "same", "full", ((1, 0), (2, 1))]


def torch_conv(torch, layer, x):
    """PyTorch's conv2d on the input padded exactly as the layer pads it."""
    top, bottom, left, right = resolve_padding(layer.padding, layer.kernel_size, layer.stride, x.shape[2:])
    x_torch = torch.tensor(x, requires_grad=True)
    weight = torch.tensor(layer.weight.data, requires_grad=True)
    bias = torch.tensor(layer.bias.data, requires_grad=True)
    padded = torch.nn.functional.pad(x_torch, (left, right, top, bottom))
    out = torch.nn.functional.conv2d(padded, weight, bias, stride=layer.stride)
    return out, x_torch, weight, bias


@pytest.mark.parametrize("kernel_size,stride,padding", list(itertools.product(KERNELS, STRIDES, PADDINGS)))
def test_conv_gradients_match_finite_differences(kernel_size, stride, padding, rng):
    layer = Conv2D(3, 2, kernel_size, stride=stride, padding=padding)
    check_layer_gradients(layer, rng.standard_normal((2, 3, 7, 6)))


@pytest.mark.parametrize("kernel_size,stride,padding", list(itertools.product(KERNELS, STRIDES, PADDINGS)))
def test_conv_matches_pytorch_output_and_gradients(kernel_size, stride, padding, rng, torch):
    layer = Conv2D(3, 4, kernel_size, stride=stride, padding=padding).astype(np.float64)
    layer.bias.data = rng.standard_normal(4)
    x = rng.standard_normal((5, 3, 9, 8))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)

    expected, x_torch, weight, bias = torch_conv(torch, layer, x)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, (2, 5)])
def test_same_padding_at_stride_one_matches_pytorch_same(kernel_size, rng, torch):
    layer = Conv2D(2, 3, kernel_size, padding="same").astype(np.float64)
    x = rng.standard_normal((2, 2, 7, 8))
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(layer.weight.data),
                                          torch.tensor(layer.bias.data), padding="same")
    np.testing.assert_allclose(layer.forward(x), expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size,kernel_size,stride", list(itertools.product([5, 6, 7, 28], [1, 2, 3, 5], [1, 2, 3])))
def test_same_padding_gives_output_size_input_over_stride_rounded_up(size, kernel_size, stride):
    layer = Conv2D(1, 1, kernel_size, stride=stride, padding="same")
    out = layer.forward(np.zeros((1, 1, size, size + 1), np.float32))
    assert out.shape[2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))


def test_full_padding_grows_output_by_kernel_minus_one():
    out = Conv2D(1, 1, (3, 5), padding="full").forward(np.zeros((1, 1, 6, 7), np.float32))
    assert out.shape == (1, 1, 8, 11)


def test_hand_computed_convolution():
    layer = Conv2D(1, 1, 2, bias=True)
    layer.weight.data[...] = [[[[1, 2], [3, 4]]]]
    layer.bias.data[...] = 10
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    # top-left window [[0, 1], [3, 4]] -> 0*1 + 1*2 + 3*3 + 4*4 + 10 = 37
    np.testing.assert_array_equal(layer.forward(x), [[[[37, 47], [67, 77]]]])


def test_float32_in_float32_out(rng):
    layer = Conv2D(3, 4, 3, padding=1)
    out = layer.forward(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    assert out.dtype == np.float32
    assert layer.backward(np.ones_like(out)).dtype == np.float32
    assert layer.weight.grad.dtype == np.float32


def test_weights_have_pytorch_layout():
    layer = Conv2D(3, 8, (2, 5))
    assert layer.weight.shape == (8, 3, 2, 5)
    assert layer.bias.shape == (8,)


def test_no_bias():
    layer = Conv2D(3, 8, 3, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


@pytest.mark.parametrize("shape,message", [
    ((3, 5, 5), "4-D"),
    ((2, 2, 5, 5), "expected 3 channels"),
    ((2, 3, 2, 2), "smaller than the kernel"),
])
def test_bad_input_shape_raises_value_error_naming_the_layer(shape, message):
    with pytest.raises(ValueError, match=message) as error:
        Conv2D(3, 4, 3).forward(np.zeros(shape, np.float32))
    assert "Conv2D" in str(error.value)


@pytest.mark.parametrize("arguments,message", [
    ({"padding": "half"}, "padding must be 'valid', 'same', 'full'"),
    ({"padding": -1}, "must not be negative"),
    ({"stride": 0}, "must be positive"),
    ({"stride": -2}, "must be positive"),
    ({"kernel_size": 0}, "must be positive"),
    ({"kernel_size": 2.5}, "kernel_size must be an int or a pair"),
])
def test_bad_arguments_raise_value_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(3, 4, **{"kernel_size": 3, **arguments})


def test_integer_images_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="floating-point"):
        Conv2D(1, 1, 3).forward(np.zeros((1, 1, 5, 5), np.uint8))


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before it"):
        Conv2D(1, 1, 3).backward(np.zeros((1, 1, 3, 3), np.float32))


def test_gradient_of_the_wrong_shape_raises(rng):
    layer = Conv2D(1, 2, 3)
    layer.forward(rng.standard_normal((1, 1, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="grad_output has shape"):
        layer.backward(np.zeros((1, 2, 4, 4), np.float32))
