"""The blocked matrix product equals NumPy's, whichever axis is long and however it divides."""

import numpy as np
import pytest

from npconvnet import products
from npconvnet.products import matmul, row_sums


def operands(shape_a, shape_b, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype)


def block_length(a, b):
    """The block length matmul uses for these operands (None: one plain product)."""
    (m, k), p = a.shape, b.shape[1]
    return products._block_length(m * k, p) if p >= k else products._block_length(m * p, k)


@pytest.mark.parametrize("columns", [100_000, 13_889 * 3, 13_889 * 3 + 5])
def test_long_columns_are_computed_block_by_block_and_equal_one_product(columns):
    a, b = operands((8, 9), (9, columns))
    assert block_length(a, b) is not None
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inner", [100_352, 25_088 + 7])
def test_a_long_shared_axis_is_a_sum_over_blocks_and_equals_one_product(inner):
    a, b = operands((9, inner), (inner, 8))
    assert block_length(a, b) is not None
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-10, atol=1e-10)


def test_small_and_square_products_are_left_whole():
    for shape_a, shape_b in (((4, 3), (3, 5)), ((300, 300), (300, 300)), ((576, 64), (64, 6272))):
        a, b = operands(shape_a, shape_b)
        assert block_length(a, b) is None
        np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape_a, shape_b", [((16, 72), (72, 25_088 + 3)), ((72, 25_088 + 3), (25_088 + 3, 16))])
def test_the_result_is_written_into_out_when_given(shape_a, shape_b):
    a, b = operands(shape_a, shape_b)
    out = np.full((shape_a[0], shape_b[1]), np.nan)
    result = matmul(a, b, out=out)
    assert result is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-10, atol=1e-10)


def test_transposed_views_are_accepted_as_operands():
    cols, grad = operands((27, 25_088), (16, 25_088))
    weight = grad[:, :27]
    # The weight gradient cols @ grad^T and the column gradient weight^T @ grad, as conv uses them.
    np.testing.assert_allclose(matmul(cols, grad.T), cols @ grad.T, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(matmul(weight.T, grad), weight.T @ grad, rtol=1e-12, atol=1e-12)


def test_float32_operands_give_a_float32_result_close_to_float64():
    a, b = operands((16, 144), (144, 50_000), dtype=np.float32)
    result = matmul(a, b)
    assert result.dtype == np.float32
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(result - exact).max() <= 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("strided", ["a longer row stride", "every other element"])
def test_a_strided_out_is_filled_in_place(strided):
    a, b = operands((8, 9), (9, 30_000))
    wide = np.full((8, 60_500), np.nan)
    out = wide[:, :30_000] if strided == "a longer row stride" else wide[:, :60_000:2]
    result = matmul(a, b, out=out)
    assert np.shares_memory(result, wide)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    assert np.isnan(wide).sum() == wide.size - out.size


@pytest.mark.parametrize("columns", [0, 1, 1000])
def test_row_sums_equal_numpys_sums(columns, rng):
    matrix = rng.standard_normal((5, columns))
    np.testing.assert_allclose(row_sums(matrix), matrix.sum(axis=1), rtol=1e-12, atol=1e-12)
    assert row_sums(matrix.astype(np.float32)).dtype == np.float32
