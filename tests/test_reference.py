"""npconvnet.reference, the layers' mathematics written plainly, holds the fast layers to it
without PyTorch: Conv2D with every size of column block and both ways to its gradients, the pools with
and without overlapping windows and padding, and Dense agree with it to float64 rounding. The
reference itself follows the formulas and finite differences."""

import itertools

import numpy as np
import pytest

from gradcheck import numerical_gradient
from npconvnet import reference
from npconvnet.layers import AvgPool2D, Conv2D, Dense, MaxPool2D, conv
from npconvnet.windows import resolve_padding

FLOAT64_ROUNDING = {"rtol": 1e-12, "atol": 1e-12}

KERNEL_SIZE = (3, 2)
#: Every padding form, each below the kernel size (the transposed convolution can take them all) ...
PADDINGS = [0, 1, (2, 1), "valid", "same", "full", ((2, 0), (0, 1))]
#: ... and padding as large as the kernel or larger, which only col2im takes.
LARGE_PADDINGS = [3, ((0, 4), (2, 0))]

#: Output pixels per block of columns, for an output of out_h x out_w pixels.
BLOCKS = {
    "one block": lambda out_h, out_w: out_h * out_w,
    "two blocks": lambda out_h, out_w: -(-out_h // 2) * out_w,
    "blocks of two rows": lambda out_h, out_w: 2 * out_w,
    "blocks of one row": lambda out_h, out_w: out_w,
    "blocks of two pixels": lambda out_h, out_w: 2,
    "blocks of one pixel": lambda out_h, out_w: 1,
}


def set_block_size(monkeypatch, blocks, layer, x):
    """Sets ``conv.BLOCK_BYTES`` to the size of the columns of ``blocks`` for this layer and input."""
    _, out_h, out_w = layer.output_shape(x.shape[1:])
    window_bytes = layer.in_channels * np.prod(layer.kernel_size) * len(x) * x.itemsize
    monkeypatch.setattr(conv, "BLOCK_BYTES", int(BLOCKS[blocks](out_h, out_w) * window_bytes))


def conv_layer(in_channels, out_channels, kernel_size, stride, padding, rng):
    layer = Conv2D(in_channels, out_channels, kernel_size, stride, padding).astype(np.float64)
    layer.weight.data = rng.standard_normal(layer.weight.shape)
    layer.bias.data = rng.standard_normal(out_channels)
    return layer


def assert_conv_matches_reference(layer, x, rng):
    """One forward and backward: y, dL/dx, dL/dW and dL/db as the reference's."""
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)
    weight, bias = layer.weight.data, layer.bias.data
    np.testing.assert_allclose(out, reference.conv2d(x, weight, bias, layer.stride, layer.padding),
                               **FLOAT64_ROUNDING)
    expected = reference.conv2d_backward(x, weight, upstream, layer.stride, layer.padding)
    for name, ours, theirs in zip(("dL/dx", "dL/dW", "dL/db"), (grad_input, layer.weight.grad, layer.bias.grad),
                                  expected):
        np.testing.assert_allclose(ours, theirs, **FLOAT64_ROUNDING, err_msg=name)


def conv_cases():
    """(stride, method, padding): both methods at stride 1 with every padding below the kernel,
    col2im also at strides 2 and 3 and with padding of kernel size or more."""
    cases = [(1, "transposed convolution", padding) for padding in PADDINGS]
    return cases + list(itertools.product([1, 2, 3, (1, 3)], ["col2im"], PADDINGS + LARGE_PADDINGS))


@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("stride,method,padding", conv_cases())
def test_conv2d_matches_the_reference_for_every_block_size_input_gradient_method_stride_and_padding(
        stride, method, padding, blocks, rng, monkeypatch):
    # The layer takes its gradients from the columns of dL/dy, dL/dx as a transposed convolution,
    # when those columns are at most twice the forward's (at stride 1, with padding below the
    # kernel size), else dL/dx as col2im of W^T @ dL/dy.
    in_channels, out_channels = (3, 2) if method == "transposed convolution" else (2, 6)
    layer = conv_layer(in_channels, out_channels, KERNEL_SIZE, stride, padding, rng)
    x = rng.standard_normal((3, in_channels, 9, 8))
    resolved = resolve_padding(layer.padding, layer.kernel_size, layer.stride, x.shape[2:])
    chosen = layer._takes_gradients_by_convolution(resolved, x.shape[2:], layer.output_shape(x.shape[1:])[1:])
    assert chosen == (method == "transposed convolution")
    set_block_size(monkeypatch, blocks, layer, x)
    assert_conv_matches_reference(layer, x, rng)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("channels", [(4, 2), (2, 4)])
@pytest.mark.parametrize("kernel_size,stride,padding", [
    (1, 1, 0), (1, 2, 1), (2, 1, "same"), (3, 1, 1), (3, 2, "same"), ((1, 3), 1, "full"), (5, 1, 2), (5, 3, "valid"),
])
def test_conv2d_matches_the_reference_for_every_kernel_shape(kernel_size, stride, padding, channels, rng):
    layer = conv_layer(*channels, kernel_size, stride, padding, rng)
    assert_conv_matches_reference(layer, rng.standard_normal((2, channels[0], 7, 10)), rng)


@pytest.mark.parametrize("blocks", BLOCKS)
def test_conv2d_without_the_input_gradient_gives_the_reference_parameter_gradients(blocks, rng, monkeypatch):
    layer = conv_layer(2, 3, KERNEL_SIZE, 1, "same", rng)
    x = rng.standard_normal((3, 2, 9, 8))
    set_block_size(monkeypatch, blocks, layer, x)
    upstream = rng.standard_normal(layer.forward(x).shape)
    assert layer.backward(upstream, input_grad=False) is None
    _, grad_weight, grad_bias = reference.conv2d_backward(x, layer.weight.data, upstream, 1, "same")
    np.testing.assert_allclose(layer.weight.grad, grad_weight, **FLOAT64_ROUNDING)
    np.testing.assert_allclose(layer.bias.grad, grad_bias, **FLOAT64_ROUNDING)


@pytest.mark.parametrize("blocks,expected_count", [
    ("one block", lambda out_h, out_w: 1), ("two blocks", lambda out_h, out_w: 2),
    ("blocks of two rows", lambda out_h, out_w: -(-out_h // 2)), ("blocks of one row", lambda out_h, out_w: out_h),
    ("blocks of two pixels", lambda out_h, out_w: out_h * -(-out_w // 2)),
    ("blocks of one pixel", lambda out_h, out_w: out_h * out_w),
])
def test_each_block_size_cuts_the_outputs_into_the_blocks_it_names(blocks, expected_count, rng, monkeypatch,
                                                                     threads):
    threads(1)                  # more threads cut the outputs into at least one block each
    layer = conv_layer(2, 3, KERNEL_SIZE, 1, 1, rng)
    x = rng.standard_normal((3, 2, 9, 8))
    set_block_size(monkeypatch, blocks, layer, x)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    _, out_h, out_w = layer.output_shape(x.shape[1:])
    assert len(layer._blocks(x_pad, (out_h, out_w))) == expected_count(out_h, out_w)


#: (kernel_size, stride, padding): windows that tile the input, overlap (stride < kernel), leave
#: pixels out (stride > kernel) or run over padding.
POOLS = [(2, None, 0), (3, None, 0), (2, 1, 0), (3, 2, 0), (2, 3, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0))]


def assert_pool_matches_reference(layer, forward, backward, x, rng):
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)
    arguments = (layer.kernel_size, layer.stride, layer.padding)
    np.testing.assert_allclose(out, forward(x, *arguments), **FLOAT64_ROUNDING)
    np.testing.assert_allclose(grad_input, backward(x, upstream, *arguments), **FLOAT64_ROUNDING)


@pytest.mark.parametrize("mode", ["training", "evaluation"])
@pytest.mark.parametrize("size", [(8, 6), (9, 7)])
@pytest.mark.parametrize("kernel_size,stride,padding", POOLS)
def test_max_pool_matches_the_reference(kernel_size, stride, padding, size, mode, rng):
    layer = MaxPool2D(kernel_size, stride, padding).train(mode == "training")
    assert_pool_matches_reference(layer, reference.max_pool2d, reference.max_pool2d_backward,
                                  rng.standard_normal((2, 3, *size)), rng)


@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 1), (2, 1), (3, 2)])
def test_max_pool_sends_a_tied_window_gradient_where_the_reference_does(kernel_size, stride, rng):
    x = rng.integers(0, 2, (2, 2, 7, 6)).astype(np.float64)
    assert_pool_matches_reference(MaxPool2D(kernel_size, stride), reference.max_pool2d,
                                  reference.max_pool2d_backward, x, rng)


@pytest.mark.parametrize("size", [(8, 6), (9, 7)])
@pytest.mark.parametrize("kernel_size,stride,padding", POOLS)
def test_avg_pool_matches_the_reference(kernel_size, stride, padding, size, rng):
    assert_pool_matches_reference(AvgPool2D(kernel_size, stride, padding), reference.avg_pool2d,
                                  reference.avg_pool2d_backward, rng.standard_normal((2, 3, *size)), rng)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_the_reference(bias, rng):
    layer = Dense(5, 3, bias=bias).astype(np.float64)
    x = rng.standard_normal((4, 5))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)
    expected_out = reference.dense(x, layer.weight.data, layer.bias.data if bias else None)
    grad_x, grad_weight, grad_bias = reference.dense_backward(x, layer.weight.data, upstream)
    np.testing.assert_allclose(out, expected_out, **FLOAT64_ROUNDING)
    np.testing.assert_allclose(grad_input, grad_x, **FLOAT64_ROUNDING)
    np.testing.assert_allclose(layer.weight.grad, grad_weight, **FLOAT64_ROUNDING)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, grad_bias, **FLOAT64_ROUNDING)


# The reference itself.

def test_reference_conv2d_follows_the_formula_entry_by_entry(rng):
    # y[n, f, i, j] = b[f] + sum_{c, u, v} W[f, c, u, v] * x_pad[n, c, i*sh + u, j*sw + v]
    x, weight, bias = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 2, 3)), rng.standard_normal(3)
    out = reference.conv2d(x, weight, bias, stride=(2, 1), padding=((1, 0), (0, 2)))
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 2)))
    assert out.shape == (2, 3, 3, 6)
    for n, f, i, j in np.ndindex(out.shape):
        expected = bias[f] + sum(weight[f, c, u, v] * x_pad[n, c, i * 2 + u, j + v]
                                 for c, u, v in np.ndindex(weight.shape[1:]))
        assert out[n, f, i, j] == pytest.approx(expected, rel=1e-12)


def test_reference_pools_hand_computed():
    x = np.array([[1, 2, 5, 0], [3, 4, 1, 1], [0, 0, 9, 8], [7, 0, 8, 9]], np.float64)[None, None]
    np.testing.assert_array_equal(reference.max_pool2d(x, 2), [[[[4, 5], [7, 9]]]])
    np.testing.assert_array_equal(reference.avg_pool2d(x, 2), [[[[2.5, 1.75], [1.75, 8.5]]]])
    # ties (9 and 9 in the last window) send the gradient to the first in row-major order
    grad = reference.max_pool2d_backward(x, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 2)
    np.testing.assert_array_equal(grad[0, 0], [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 4, 0], [3, 0, 0, 0]])


def assert_gradients_match_finite_differences(forward, arrays, gradients, upstream):
    """Each of ``gradients`` is the finite-difference gradient of ``sum(forward() * upstream)``
    with respect to the array of ``arrays`` in its place."""
    def loss():
        return float(np.sum(forward() * upstream))

    for index, (array, gradient) in enumerate(zip(arrays, gradients)):
        np.testing.assert_allclose(gradient, numerical_gradient(loss, array), rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient {index}")


@pytest.mark.parametrize("kernel_size,stride,padding", [
    ((2, 3), 1, "same"), (3, 2, 1), ((3, 2), 3, ((2, 0), (0, 1))), (2, (1, 2), "full"), (2, 1, 3),
])
def test_reference_conv2d_gradients_match_finite_differences(kernel_size, stride, padding, rng):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    x, weight, bias = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, kh, kw)), rng.standard_normal(3)
    upstream = rng.standard_normal(reference.conv2d(x, weight, bias, stride, padding).shape)
    assert_gradients_match_finite_differences(lambda: reference.conv2d(x, weight, bias, stride, padding),
                                              (x, weight, bias),
                                              reference.conv2d_backward(x, weight, upstream, stride, padding), upstream)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("kernel_size,stride,padding", [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_reference_pool_gradients_match_finite_differences(pool, kernel_size, stride, padding, rng):
    forward, backward = ((reference.max_pool2d, reference.max_pool2d_backward) if pool == "max"
                         else (reference.avg_pool2d, reference.avg_pool2d_backward))
    x = rng.standard_normal((2, 2, 6, 5))
    upstream = rng.standard_normal(forward(x, kernel_size, stride, padding).shape)
    assert_gradients_match_finite_differences(lambda: forward(x, kernel_size, stride, padding), (x,),
                                              (backward(x, upstream, kernel_size, stride, padding),), upstream)


def test_reference_dense_gradients_match_finite_differences(rng):
    x, weight, bias = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    upstream = rng.standard_normal((4, 3))
    assert_gradients_match_finite_differences(lambda: reference.dense(x, weight, bias), (x, weight, bias),
                                              reference.dense_backward(x, weight, upstream), upstream)


@pytest.mark.parametrize("call,message", [
    (lambda: reference.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 4, 3, 3))), "x has 2 channels"),
    (lambda: reference.conv2d(np.zeros((2, 5, 5)), np.zeros((3, 2, 3, 3))), "4-D floating-point array"),
    (lambda: reference.conv2d(np.zeros((1, 2, 2, 2)), np.zeros((3, 2, 3, 3))), "smaller than the kernel"),
    (lambda: reference.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), padding="half"), "padding must be"),
    (lambda: reference.conv2d_backward(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), np.zeros((1, 3, 5, 5))),
     r"grad_output has shape \(1, 3, 5, 5\), expected \(1, 3, 3, 3\)"),
    (lambda: reference.max_pool2d(np.zeros((1, 1, 4, 4), np.uint8), 2), "floating-point"),
    (lambda: reference.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, stride=0), "must be positive"),
    (lambda: reference.dense(np.zeros((2, 4)), np.zeros((3, 5))), "x has 4 features"),
    (lambda: reference.dense(np.zeros((2, 5)), np.zeros((3, 5)), np.zeros(1)), r"bias has shape \(1,\)"),
])
def test_reference_refuses_bad_input_with_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
