"""Conv2D computes its products one block of output rows at a time (one block or many, down to
a single row), and its gradients in two ways: from the input's columns, dL/dx as col2im of the
column gradient, or, at stride 1 where the columns of dL/dy are at most twice the forward's,
both from those, dL/dx as a convolution of dL/dy with the flipped kernel. All must agree with
PyTorch, and no call may leak values into another."""

import itertools

import numpy as np
import pytest

from npconvnet.layers import Conv2D, conv

PADDINGS = [0, 1, 2, "same", "full", ((1, 0), (2, 1)), ((0, 2), (1, 0))]


def torch_gradients(torch, layer, x, upstream):
    from npconvnet.windows import resolve_padding
    top, bottom, left, right = resolve_padding(layer.padding, layer.kernel_size, layer.stride, x.shape[2:])
    x_torch = torch.tensor(x, requires_grad=True)
    weight = torch.tensor(layer.weight.data, requires_grad=True)
    padded = torch.nn.functional.pad(x_torch, (left, right, top, bottom))
    torch.nn.functional.conv2d(padded, weight, stride=layer.stride).backward(torch.tensor(upstream))
    return x_torch.grad.numpy(), weight.grad.numpy()


def assert_gradients_match_pytorch(torch, layer, x, rng):
    """One forward and backward with a random upstream gradient: dL/dx and dL/dW as PyTorch's."""
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)
    expected_input, expected_weight = torch_gradients(torch, layer, x, upstream)
    np.testing.assert_allclose(grad_input, expected_input, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, expected_weight, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("channels,kernel_size,padding",
                         list(itertools.product([(5, 3), (4, 4), (2, 6)], [1, 2, 3, (2, 3), (3, 1)], PADDINGS)))
@pytest.mark.parametrize("blocks,stride", [("one block", 1), ("one block", 2), ("one pixel each", 1), ("one pixel each", 2)])
def test_gradients_match_pytorch_for_every_method(channels, kernel_size, padding, blocks, stride, rng, torch,
                                                  monkeypatch):
    # At stride 1 the convolution path takes (5, 3) in 22 of these 35 cases, (4, 4) in 21 and (2, 6)
    # in 3 (padding 2 or "full"): padding of the kernel's size or more, or columns of dL/dy more
    # than twice the forward's, leave the others to col2im.
    in_channels, out_channels = channels
    monkeypatch.setattr(conv, "BLOCK_BYTES", 0 if blocks == "one pixel each" else 2**30)
    layer = Conv2D(in_channels, out_channels, kernel_size, stride, padding, bias=False).astype(np.float64)
    assert_gradients_match_pytorch(torch, layer, rng.standard_normal((3, in_channels, 7, 6)), rng)


@pytest.mark.parametrize("layer,input_size,by_convolution", [
    (Conv2D(16, 8, 3, padding=1), (14, 14), True),         # dL/dy's columns smaller than the forward's ...
    (Conv2D(8, 16, 3, padding=1), (14, 14), True),         # ... twice as large ...
    (Conv2D(2, 5, 3, padding="full"), (7, 6), True),       # ... or 1.7 times, with 2.5 times the channels
    (Conv2D(8, 17, 3, padding=1), (14, 14), False),        # larger
    (Conv2D(6, 16, 5), (14, 14), False),                   # 2.6 times: the valid border's pixels count
    (Conv2D(4, 4, 3, stride=2, padding=1), (14, 14), False),
    (Conv2D(4, 4, 3, padding=3), (14, 14), False),         # padding of the kernel's size
])
def test_the_gradients_come_from_the_columns_of_dl_dy_where_they_are_at_most_twice_the_forwards(
        layer, input_size, by_convolution, monkeypatch, rng):
    taken = []
    method = layer._gradients_by_convolution
    monkeypatch.setattr(layer, "_gradients_by_convolution", lambda *args: taken.append(True) or method(*args))
    out = layer.forward(rng.standard_normal((2, layer.in_channels, *input_size)).astype(np.float32))
    layer.backward(np.ones_like(out))
    assert bool(taken) == by_convolution


def test_float32_gradient_of_float32_layer_stays_float32(rng):
    layer = Conv2D(4, 2, 3, padding=1)
    out = layer.forward(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    assert layer.backward(np.ones_like(out)).dtype == np.float32


def test_repeated_calls_with_changing_batch_sizes_give_fresh_results(rng, torch):
    layer = Conv2D(3, 3, 3, padding=1).astype(np.float64)
    for batch in (4, 4, 2, 5, 4):
        assert_gradients_match_pytorch(torch, layer, rng.standard_normal((batch, 3, 6, 6)), rng)


def test_an_earlier_output_is_not_changed_by_later_calls(rng):
    layer = Conv2D(2, 3, 3, padding=1)
    first_input = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    first = layer.forward(first_input)
    kept = first.copy()
    layer.backward(np.ones_like(first))
    layer.forward(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, ((2, 0), (1, 1)))])
def test_blocks_of_two_rows_with_a_shorter_last_block_match_pytorch(stride, padding, rng, torch, monkeypatch):
    layer = Conv2D(3, 4, 3, stride, padding).astype(np.float64)
    x = rng.standard_normal((3, 3, 13, 6))
    out_w = layer.output_shape(x.shape[1:])[2]
    monkeypatch.setattr(conv, "BLOCK_BYTES", 2 * 3 * 9 * out_w * 3 * 8)     # two output rows of columns
    assert layer.output_shape(x.shape[1:])[1] % 2 == 1
    assert_gradients_match_pytorch(torch, layer, x, rng)


@pytest.mark.parametrize("in_channels,out_channels", [(2, 5), (4, 3)])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), ((1, 2), ((0, 1), (2, 1)))])
def test_blocks_of_two_pixels_of_a_row_with_a_shorter_last_block_match_pytorch(in_channels, out_channels, stride,
                                                                               padding, rng, torch, monkeypatch):
    layer = Conv2D(in_channels, out_channels, 3, stride, padding).astype(np.float64)
    x = rng.standard_normal((3, in_channels, 6, 9))
    out_w = layer.output_shape(x.shape[1:])[2]
    monkeypatch.setattr(conv, "BLOCK_BYTES", 2 * in_channels * 9 * 3 * 8)           # two output pixels of columns
    assert out_w % 2 == 1
    assert_gradients_match_pytorch(torch, layer, x, rng)


@pytest.mark.parametrize("in_channels,out_channels", [(1, 4), (4, 1)])
def test_an_input_without_pixels_gives_an_output_of_its_padding_and_zero_gradients(in_channels, out_channels):
    layer = Conv2D(in_channels, out_channels, 3, padding="full")
    out = layer.forward(np.zeros((2, in_channels, 0, 4), np.float32))
    grad_input = layer.backward(np.ones_like(out))
    assert out.shape == (2, out_channels, 2, 6) and grad_input.shape == (2, in_channels, 0, 4)
    assert not layer.weight.grad.any() and (layer.bias.grad == 2 * 2 * 6).all()


@pytest.mark.parametrize("in_channels,out_channels", [(2, 5), (3, 2)])
def test_an_empty_batch_gives_an_empty_output_and_zero_parameter_gradients(in_channels, out_channels):
    layer = Conv2D(in_channels, out_channels, 3, padding=1)
    out = layer.forward(np.zeros((0, in_channels, 5, 5), np.float32))
    grad_input = layer.backward(np.zeros_like(out))
    assert out.shape == (0, out_channels, 5, 5) and grad_input.shape == (0, in_channels, 5, 5)
    assert not layer.weight.grad.any() and not layer.bias.grad.any()
