"""The sliding-window mechanics shared by convolution and pooling, and the memory layout the
layers hand on (batch-last: (N, C, H, W) arrays stored as (C, H, W, N))."""

import itertools

import numpy as np
import pytest

from npconvnet.layers import AvgPool2D, BatchNorm2D, Conv2D, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.windows import (as_matrix, batch_last, col2im, from_matrix, has_batch_last_rows, im2col, is_batch_last,
                               kernel_offsets, output_size, pad, to_batch_last, window, windows_of_outputs)

GEOMETRIES = [((3, 3), (1, 1), (1, 1, 1, 1)), ((2, 3), (2, 1), (0, 1, 2, 0)), ((3, 2), (3, 2), (0, 0, 0, 0))]


@pytest.mark.parametrize("kernel_size,stride,padding", GEOMETRIES)
def test_im2col_entries_follow_the_window_formula(kernel_size, stride, padding, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    cols = im2col(x, kernel_size, stride, padding)
    top, bottom, left, right = padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = output_size(x.shape[2:], kernel_size, stride, padding)
    assert cols.shape == (3, *kernel_size, out_h, out_w, 2)
    for c, u, v, n, i, j in itertools.product(range(3), range(kernel_size[0]), range(kernel_size[1]),
                                              range(2), range(out_h), range(out_w)):
        assert cols[c, u, v, i, j, n] == x_pad[n, c, i * stride[0] + u, j * stride[1] + v]


@pytest.mark.parametrize("kernel_size,stride,padding", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(kernel_size, stride, padding, rng):
    # <im2col(x), cols> == <x, col2im(cols)> for every x and cols: col2im is im2col's transpose
    x = rng.standard_normal((2, 3, 7, 6))
    cols = rng.standard_normal(im2col(x, kernel_size, stride, padding).shape)
    back = col2im(cols, x.shape, kernel_size, stride, padding)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(im2col(x, kernel_size, stride, padding) * cols), np.sum(x * back))


def test_col2im_adds_into_a_given_padded_array(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    padding = (1, 0, 1, 1)
    cols = rng.standard_normal(im2col(x, (3, 2), (2, 1), padding).shape)
    earlier = to_batch_last(rng.standard_normal((2, 3, 7, 7)))
    target = earlier.copy()
    result = col2im(cols, x.shape, (3, 2), (2, 1), padding, out=target)
    assert np.shares_memory(result, target)
    expected = earlier[:, :, 1:7, 1:6] + col2im(cols, x.shape, (3, 2), (2, 1), padding)
    np.testing.assert_allclose(result, expected)


@pytest.mark.parametrize("rows,columns", [(slice(1, 3), slice(0, 6)), (slice(2, 3), slice(1, 4)),
                                          (slice(3, 4), slice(5, 6))])
def test_the_windows_of_a_block_of_outputs_are_those_of_the_whole_input(rows, columns, rng):
    x_pad = to_batch_last(rng.standard_normal((2, 3, 9, 7)))
    kernel_size, stride = (3, 2), (2, 1)
    whole = im2col(x_pad, kernel_size, stride, (0, 0, 0, 0))            # (C, kh, kw, 4, 6, N)
    block = windows_of_outputs(x_pad, rows, columns, kernel_size, stride)
    assert has_batch_last_rows(block) and np.shares_memory(block, x_pad)
    np.testing.assert_array_equal(im2col(block, kernel_size, stride, (0, 0, 0, 0)), whole[:, :, :, rows, columns])


def test_only_arrays_whose_image_rows_are_contiguous_runs_of_the_batch_count_as_batch_last_rows(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert has_batch_last_rows(to_batch_last(x)) and not has_batch_last_rows(x)
    assert not has_batch_last_rows(to_batch_last(x)[:1])               # part of the batch: rows have gaps


def test_window_picks_one_kernel_entry_of_every_window():
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    # kernel entry (1, 0) of the 2x2 windows at stride 2: rows 1, 3, 5 and columns 0, 2, 4
    np.testing.assert_array_equal(window(x, (1, 0), (2, 2), (3, 3))[0, 0], x[0, 0, 1::2, 0::2])


def test_kernel_offsets_are_row_major():
    assert kernel_offsets((2, 3)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_batch_last_arrays_store_each_channel_of_the_batch_contiguously_with_the_batch_innermost():
    array = batch_last((4, 3, 5, 6), np.float32)
    assert array.shape == (4, 3, 5, 6)
    assert array.transpose(1, 2, 3, 0).flags.c_contiguous


def test_a_convolution_matrix_has_a_row_per_channel_and_a_column_per_pixel_of_the_batch(rng):
    x = to_batch_last(rng.standard_normal((4, 3, 5, 6)))
    matrix = as_matrix(x)
    assert matrix.shape == (3, 5 * 6 * 4) and np.shares_memory(matrix, x)
    np.testing.assert_array_equal(matrix[2].reshape(5, 6, 4)[1, 4], x[:, 2, 1, 4])
    np.testing.assert_array_equal(from_matrix(matrix, x.shape), x)


def test_pad_fills_the_border_and_keeps_the_values(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    padded = pad(x, (1, 2, 0, 3), pad_value=-7.0)
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 3)), constant_values=-7.0))


def layers_under_test():
    return [Conv2D(3, 4, 3, padding=1), Conv2D(3, 2, (2, 3), stride=2, padding=((1, 0), (0, 2))),
            MaxPool2D(2), MaxPool2D(3, 1, 1), AvgPool2D(2), AvgPool2D(3, 2, 1), ReLU(), BatchNorm2D(3)]


@pytest.mark.parametrize("layer_index", range(len(layers_under_test())))
def test_layers_give_the_same_results_for_any_memory_layout(layer_index, rng):
    x = rng.standard_normal((4, 3, 8, 7))
    upstream = None
    results = []
    layouts = [x, np.asfortranarray(x), x.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3), to_batch_last(x),
               np.pad(x, 1)[1:-1, 1:-1, 1:-1, 1:-1]]
    layer = layers_under_test()[layer_index].astype(np.float64)
    for array in layouts:
        out = layer.forward(array)
        if upstream is None:
            upstream = rng.standard_normal(out.shape)
        results.append((out, layer.backward(upstream),
                        [p.grad.copy() for p in layer.parameters()]))
    for out, grad, grads in results[1:]:
        np.testing.assert_allclose(out, results[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-12, atol=1e-12)
        for ours, reference in zip(grads, results[0][2]):
            np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [Conv2D(2, 5, 3, padding=1), Conv2D(2, 1, 3, padding=1), Conv2D(2, 3, 2, 2),
                                   MaxPool2D(2), AvgPool2D(3, 1, 1)])
def test_outputs_and_input_gradients_keep_the_batch_innermost(layer, rng):
    x = to_batch_last(rng.standard_normal((3, 2, 6, 6)).astype(np.float32))
    out = layer.forward(x)
    assert is_batch_last(out)
    grad = layer.backward(to_batch_last(np.ones_like(out)))
    assert grad.strides[0] == grad.itemsize     # a batch-last array or a window of one


def test_a_network_keeps_float64_everywhere(rng):
    network = Sequential(Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2), AvgPool2D(2)).astype(np.float64)
    out = network.forward(rng.standard_normal((2, 1, 8, 8)))
    assert out.dtype == np.float64
    assert network.backward(np.ones_like(out)).dtype == np.float64


def test_max_pool_with_more_than_256_window_entries_keeps_the_right_argmax(rng):
    x = rng.standard_normal((2, 1, 17, 17)).astype(np.float32)
    layer = MaxPool2D(17)
    out = layer.forward(x)
    grad = layer.backward(np.ones_like(out))
    np.testing.assert_array_equal(out[:, 0, 0, 0], x.reshape(2, -1).max(axis=1))
    expected = np.zeros_like(x).reshape(2, -1)
    expected[np.arange(2), x.reshape(2, -1).argmax(axis=1)] = 1
    np.testing.assert_array_equal(grad.reshape(2, -1), expected)


def test_to_batch_last_copies_only_when_needed(rng):
    x = rng.standard_normal((3, 2, 4, 5))
    converted = to_batch_last(x)
    np.testing.assert_array_equal(converted, x)
    assert is_batch_last(converted) and not is_batch_last(x)
    assert np.shares_memory(to_batch_last(converted), converted)


def test_flatten_hands_the_gradient_back_in_the_input_layout(rng):
    x = to_batch_last(rng.standard_normal((3, 2, 4, 5)))
    layer = Flatten()
    out = layer.forward(x)
    np.testing.assert_array_equal(out, x.reshape(3, -1))
    grad = layer.backward(np.arange(out.size, dtype=np.float64).reshape(out.shape))
    assert is_batch_last(grad)
    np.testing.assert_array_equal(grad, np.arange(out.size, dtype=np.float64).reshape(x.shape))
