"""Tests for npconvnet.data: preprocessing, splitting, mini-batches and augmentation."""

import json

import numpy as np
import pytest

from npconvnet import rng as global_rng
from npconvnet.data import (
    Augmenter,
    affine_matrices,
    apply_affine,
    batches,
    default_augmenter,
    one_hot,
    scale,
    standardize,
    to_nchw,
    train_val_split,
)


def random_images(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.fixture
def restore_global_rng():
    """Leave the global generator as it was for the tests that reseed it."""
    state = global_rng.get_state()
    yield
    global_rng.set_state(state)


# ---------------------------------------------------------------------------
# to_nchw
# ---------------------------------------------------------------------------

def test_to_nchw_adds_a_channel_axis_to_grayscale_batches():
    x = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    out = to_nchw(x)
    assert out.shape == (2, 1, 4, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], x)


def test_to_nchw_transposes_channels_last_images():
    x = random_images((2, 6, 5, 3), dtype=np.float64)
    out = to_nchw(x)
    assert out.shape == (2, 3, 6, 5) and out.dtype == np.float32
    assert out.flags.c_contiguous
    assert out[1, 2, 3, 4] == np.float32(x[1, 3, 4, 2])


def test_to_nchw_keeps_channels_first_images():
    x = random_images((2, 3, 6, 5))
    np.testing.assert_array_equal(to_nchw(x), x)


def test_to_nchw_follows_explicit_channels_last_for_ambiguous_shapes():
    x = random_images((2, 3, 5, 3))
    np.testing.assert_array_equal(to_nchw(x, channels_last=True), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_nchw(x, channels_last=False), x)


def test_to_nchw_rejects_ambiguous_shapes_without_channels_last():
    with pytest.raises(ValueError, match="channels_last"):
        to_nchw(np.zeros((2, 3, 5, 3)))


@pytest.mark.parametrize("shape", [(28, 28 * 28), (2, 1, 1, 4, 4), (5,)])
def test_to_nchw_rejects_arrays_that_are_not_3d_or_4d(shape):
    with pytest.raises(ValueError, match="to_nchw"):
        to_nchw(np.zeros(shape))


def test_to_nchw_rejects_channels_last_for_3d_arrays():
    with pytest.raises(ValueError, match="3-D"):
        to_nchw(np.zeros((28, 28, 3)), channels_last=True)


# ---------------------------------------------------------------------------
# scale and standardize
# ---------------------------------------------------------------------------

def test_scale_maps_uint8_to_float32_unit_interval():
    out = scale(np.array([0, 51, 255], dtype=np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.2, 1.0], rtol=1e-7)


def test_scale_accepts_other_integer_types_holding_8_bit_values():
    np.testing.assert_allclose(scale(np.array([0, 255], dtype=np.int64)), [0.0, 1.0])


def test_scale_leaves_floats_unchanged():
    x = np.array([0.25, 3.0], dtype=np.float64)
    out = scale(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x)


def test_scale_rejects_integers_outside_0_to_255():
    with pytest.raises(ValueError, match="0..255"):
        scale(np.array([0, 256]))


def test_scale_rejects_non_numeric_arrays():
    with pytest.raises(TypeError, match="dtype"):
        scale(np.array(["a", "b"]))


def test_standardize_gives_each_channel_zero_mean_and_unit_std():
    x = random_images((10, 3, 4, 4)) * np.array([1, 5, 20], np.float32)[:, None, None] + 7
    x_std, mean, std = standardize(x)
    assert x_std.dtype == np.float32 and mean.shape == std.shape == (3,)
    np.testing.assert_allclose(x_std.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x_std.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)


def test_standardize_applies_given_statistics_to_new_data():
    _, mean, std = standardize(random_images((10, 2, 4, 4), seed=0))
    x_test = random_images((3, 2, 4, 4), seed=1)
    x_std, mean_out, std_out = standardize(x_test, mean, std)
    expected = (x_test - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(x_std, expected, rtol=1e-6)
    np.testing.assert_array_equal(mean_out, mean)
    np.testing.assert_array_equal(std_out, std)


def test_standardize_accepts_scalar_statistics():
    x = random_images((2, 1, 3, 3))
    x_std, _, _ = standardize(x, 0.5, 0.25)
    np.testing.assert_allclose(x_std, (x - 0.5) / 0.25, rtol=1e-6)


def test_standardize_only_centres_a_constant_channel():
    x = np.full((4, 1, 3, 3), 2.0, dtype=np.float32)
    x_std, mean, std = standardize(x)
    np.testing.assert_array_equal(x_std, 0.0)
    assert mean[0] == 2.0 and std[0] == 1.0


def test_standardize_rejects_statistics_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        standardize(random_images((2, 3, 4, 4)), np.zeros(2), np.ones(2))


def test_standardize_rejects_mean_without_std():
    with pytest.raises(ValueError, match="both"):
        standardize(random_images((2, 3, 4, 4)), mean=np.zeros(3))


def test_standardize_rejects_non_positive_std():
    with pytest.raises(ValueError, match="positive"):
        standardize(random_images((2, 1, 4, 4)), 0.0, 0.0)


def test_standardize_rejects_non_nchw_input():
    with pytest.raises(ValueError, match="to_nchw"):
        standardize(random_images((2, 4, 4)))


# ---------------------------------------------------------------------------
# one_hot
# ---------------------------------------------------------------------------

def test_one_hot_encodes_labels_as_float32_rows():
    expected = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    out = one_hot(np.array([2, 0, 2]), num_classes=4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_one_hot_infers_num_classes_from_the_largest_label():
    assert one_hot([0, 3, 1]).shape == (3, 4)


def test_one_hot_rejects_negative_labels():
    with pytest.raises(ValueError, match="non-negative"):
        one_hot([0, -1, 2])


def test_one_hot_rejects_labels_not_below_num_classes():
    with pytest.raises(ValueError, match="out of range"):
        one_hot([0, 10], num_classes=10)


def test_one_hot_rejects_non_integer_labels():
    with pytest.raises(ValueError, match="integers"):
        one_hot(np.array([0.0, 1.5]))


def test_one_hot_rejects_labels_that_are_not_1d():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        one_hot(np.zeros((3, 2), dtype=int))


def test_one_hot_rejects_non_positive_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        one_hot([0], num_classes=0)


# ---------------------------------------------------------------------------
# train_val_split
# ---------------------------------------------------------------------------

def test_train_val_split_sizes_cover_all_samples_without_overlap():
    x = np.arange(100)
    (x_train, _), (x_val, _) = train_val_split(x, x, val_fraction=0.2, seed=0)
    assert len(x_val) == 20 and len(x_train) == 80
    assert set(x_train).isdisjoint(x_val)
    np.testing.assert_array_equal(np.sort(np.concatenate([x_train, x_val])), x)


def test_train_val_split_keeps_samples_and_labels_paired():
    x = np.arange(50)[:, None] * np.ones((1, 3))
    y = np.arange(50) * 10
    (x_train, y_train), (x_val, y_val) = train_val_split(x, y, val_fraction=0.3, seed=1)
    np.testing.assert_array_equal(x_train[:, 0] * 10, y_train)
    np.testing.assert_array_equal(x_val[:, 0] * 10, y_val)


def test_train_val_split_is_deterministic_for_a_seed():
    x = np.arange(100)
    first = train_val_split(x, x, seed=3)
    second = train_val_split(x, x, seed=3)
    other = train_val_split(x, x, seed=4)
    np.testing.assert_array_equal(first[1][0], second[1][0])
    assert not np.array_equal(first[1][0], other[1][0])


def test_train_val_split_stratify_keeps_class_proportions():
    y = np.repeat([0, 1, 2], [100, 50, 10])
    (_, y_train), (_, y_val) = train_val_split(np.arange(160), y, val_fraction=0.2, stratify=True)
    np.testing.assert_array_equal(np.bincount(y_val), [20, 10, 2])
    np.testing.assert_array_equal(np.bincount(y_train), [80, 40, 8])


def test_train_val_split_stratifies_one_hot_labels_by_class():
    labels = np.repeat([0, 1], [30, 10])
    (_, _), (_, y_val) = train_val_split(
        np.arange(40), one_hot(labels), val_fraction=0.5, stratify=True)
    np.testing.assert_array_equal(y_val.sum(axis=0), [15, 5])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.arange(10), np.arange(10), val_fraction=fraction)


def test_train_val_split_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same number of samples"):
        train_val_split(np.arange(10), np.arange(9))


def test_train_val_split_rejects_an_empty_validation_set():
    with pytest.raises(ValueError, match="at least one"):
        train_val_split(np.arange(4), np.arange(4), val_fraction=0.1)


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------

def test_batches_visit_every_sample_exactly_once_per_epoch():
    x = np.arange(103)
    seen = np.concatenate([xb for xb, _ in batches(x, x, batch_size=10, seed=0)])
    np.testing.assert_array_equal(np.sort(seen), x)


def test_batches_keep_samples_and_labels_paired():
    x = np.arange(30)
    for xb, yb in batches(x, x * 2, batch_size=7, seed=0):
        np.testing.assert_array_equal(yb, xb * 2)


def test_batches_end_with_a_partial_batch():
    sizes = [len(xb) for xb in batches(np.zeros((103, 2)), batch_size=10)]
    assert sizes == [10] * 10 + [3]


def test_batches_drop_last_skips_the_partial_batch():
    sizes = [len(xb) for xb in batches(np.zeros((103, 2)), batch_size=10, drop_last=True)]
    assert sizes == [10] * 10


def test_batches_without_shuffle_keep_the_original_order():
    out = list(batches(np.arange(7), batch_size=3, shuffle=False))
    assert [b.tolist() for b in out] == [[0, 1, 2], [3, 4, 5], [6]]


def test_batches_with_an_int_seed_repeat_the_same_order():
    first = np.concatenate(list(batches(np.arange(50), batch_size=8, seed=5)))
    second = np.concatenate(list(batches(np.arange(50), batch_size=8, seed=5)))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, np.arange(50))


def test_batches_with_a_generator_give_a_new_reproducible_order_each_epoch():
    def two_epochs(seed):
        rng = np.random.default_rng(seed)
        return [np.concatenate(list(batches(np.arange(50), batch_size=8, seed=rng)))
                for _ in range(2)]

    epoch1, epoch2 = two_epochs(0)
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(two_epochs(0)[1], epoch2)


def test_batches_without_a_seed_follow_the_global_seed(restore_global_rng):
    global_rng.manual_seed(11)
    first = np.concatenate(list(batches(np.arange(50), batch_size=8)))
    global_rng.manual_seed(11)
    second = np.concatenate(list(batches(np.arange(50), batch_size=8)))
    np.testing.assert_array_equal(first, second)


def test_batches_read_memmap_arrays(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(20, 3))
    data[:] = np.arange(20)[:, None]
    seen = np.concatenate([xb[:, 0] for xb in batches(data, batch_size=6, seed=0)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(20))


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, True])
def test_batches_reject_invalid_batch_size_when_called(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.zeros(10), batch_size=batch_size)


def test_batches_reject_length_mismatch_when_called():
    with pytest.raises(ValueError, match="same number of samples"):
        batches(np.zeros(10), np.zeros(9))


# ---------------------------------------------------------------------------
# Augmentation: geometry against hand-computed results and scipy
# ---------------------------------------------------------------------------

def test_identity_augmenter_returns_the_batch_unchanged():
    x = random_images((8, 2, 6, 7))
    out = Augmenter(seed=0)(x)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_integer_shift_moves_content_and_fills_the_uncovered_part():
    x = random_images((1, 1, 5, 6))
    out = apply_affine(x, affine_matrices(5, 6, shift_x=2, shift_y=1), fill_value=-1.0)
    expected = np.full((5, 6), -1.0, dtype=np.float32)
    expected[1:, 2:] = x[0, 0, :-1, :-2]      # right by 2, down by 1
    np.testing.assert_array_equal(out[0, 0], expected)


def test_rotation_by_90_degrees_is_counter_clockwise_like_rot90():
    x = random_images((2, 1, 5, 5))
    out = apply_affine(x, affine_matrices(5, 5, angle=90), fill_value=0.0)
    np.testing.assert_allclose(out, np.rot90(x, k=1, axes=(2, 3)), atol=1e-6)


def test_rotation_by_minus_90_degrees_is_clockwise():
    x = random_images((1, 1, 5, 5))
    out = apply_affine(x, affine_matrices(5, 5, angle=-90))
    np.testing.assert_allclose(out, np.rot90(x, k=-1, axes=(2, 3)), atol=1e-6)


def test_flip_matrix_mirrors_left_right():
    x = random_images((2, 1, 4, 5))
    out = apply_affine(x, affine_matrices(4, 5, flip=True))
    np.testing.assert_array_equal(out, x[..., ::-1])


def test_horizontal_flip_augmenter_flips_some_images_and_keeps_the_others():
    x = random_images((32, 1, 4, 5))
    out = Augmenter(horizontal_flip=True, seed=0)(x)
    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    unchanged = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | unchanged)
    assert 0 < flipped.sum() < 32


def test_zoom_by_2_matches_scipy_zoom_on_the_central_part(ndimage):
    x = random_images((1, 1, 8, 8))
    out = apply_affine(x, affine_matrices(8, 8, zoom=2.0))
    zoomed = ndimage.zoom(x[0, 0].astype(np.float64), 2, order=1,
                          grid_mode=True, mode="grid-constant")   # (16, 16)
    np.testing.assert_allclose(out[0, 0], zoomed[4:12, 4:12], atol=1e-6)


def test_random_transforms_match_scipy_affine_transform_per_image(ndimage):
    # The fill border is interpolated (scipy's "grid-constant"), not cut off ("constant").
    x = random_images((6, 2, 9, 7))
    augmenter = Augmenter(width_shift_range=0.2, height_shift_range=2, rotation_range=45,
                          zoom_range=(0.7, 1.4), horizontal_flip=True, fill_value=0.3)
    matrices = augmenter.sample_transforms(6, 9, 7, np.random.default_rng(1))
    out = apply_affine(x, matrices, fill_value=0.3)
    expected = np.array([[ndimage.affine_transform(
        x[i, c].astype(np.float64), matrices[i], order=1, mode="grid-constant", cval=0.3)
        for c in range(2)] for i in range(6)])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_apply_affine_float64_matches_scipy_to_double_precision(ndimage):
    x = random_images((3, 1, 6, 6), dtype=np.float64)
    matrices = affine_matrices(6, 6, angle=[10, -30, 75], zoom=[0.8, 1.0, 1.3],
                               shift_x=[0.5, -1.2, 2])
    out = apply_affine(x, matrices, fill_value=0.0)
    expected = np.array([ndimage.affine_transform(x[i, 0], matrices[i], order=1,
                                                  mode="grid-constant") for i in range(3)])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-12)


def test_affine_matrices_reject_non_positive_zoom():
    with pytest.raises(ValueError, match="zoom"):
        affine_matrices(5, 5, zoom=[1.0, 0.0])


def test_affine_matrices_broadcast_scalar_and_per_image_parameters():
    matrices = affine_matrices(5, 5, angle=[0, 90, 180], zoom=2.0)
    assert matrices.shape == (3, 3, 3)
    np.testing.assert_array_equal(matrices[:, 2], [[0, 0, 1]] * 3)


# ---------------------------------------------------------------------------
# Augmenter: randomness, shapes and configuration
# ---------------------------------------------------------------------------

def test_sampled_parameters_stay_within_the_configured_ranges():
    augmenter = Augmenter(width_shift_range=0.1, height_shift_range=3, rotation_range=20,
                          zoom_range=0.2)
    matrices = augmenter.sample_transforms(500, 28, 30, np.random.default_rng(0))
    linear = matrices[:, :2, :2]
    zoom = 1 / np.sqrt(np.linalg.det(linear))
    angle = np.degrees(np.arctan2(linear[:, 0, 1], linear[:, 0, 0]))
    # The offset is centre - L @ (centre + shift), so shift = L^-1 (centre - offset) - centre.
    centre = np.array([13.5, 14.5])
    shift = np.linalg.solve(linear, (centre - matrices[:, :2, 2])[..., None])[..., 0] - centre
    assert np.all(np.abs(angle) <= 20) and np.abs(angle).max() > 18
    assert np.all((zoom >= 0.8 - 1e-9) & (zoom <= 1.2 + 1e-9))
    assert np.all(np.abs(shift[:, 1]) <= 3.0 + 1e-9) and np.abs(shift[:, 1]).max() > 2.5  # 0.1 * 30
    assert np.all(np.abs(shift[:, 0]) <= 3 + 1e-9) and np.abs(shift[:, 0]).max() > 2.5    # pixels


def test_each_image_in_a_batch_gets_its_own_transform():
    x = np.repeat(random_images((1, 1, 10, 10)), 16, axis=0)
    out = default_augmenter(seed=0)(x)
    flat = out.reshape(16, -1)
    assert len(np.unique(flat, axis=0)) == 16


def test_the_same_seed_gives_the_same_output():
    x = random_images((8, 1, 10, 10))
    np.testing.assert_array_equal(default_augmenter(seed=7)(x), default_augmenter(seed=7)(x))
    assert not np.array_equal(default_augmenter(seed=7)(x), default_augmenter(seed=8)(x))


def test_a_passed_rng_takes_the_place_of_the_augmenters_own():
    x = random_images((8, 1, 10, 10))
    first = default_augmenter(seed=1)(x, rng=np.random.default_rng(3))
    second = default_augmenter(seed=2)(x, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)


def test_an_unseeded_augmenter_follows_the_global_seed(restore_global_rng):
    x = random_images((4, 1, 10, 10))
    global_rng.manual_seed(5)
    first = default_augmenter()(x)
    global_rng.manual_seed(5)
    np.testing.assert_array_equal(default_augmenter()(x), first)


def test_successive_calls_draw_new_transforms():
    augmenter = default_augmenter(seed=0)
    x = random_images((4, 1, 10, 10))
    assert not np.array_equal(augmenter(x), augmenter(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augmenter_preserves_shape_and_dtype(dtype):
    x = random_images((5, 3, 12, 9), dtype=dtype)
    out = default_augmenter(seed=0)(x)
    assert out.shape == x.shape and out.dtype == dtype


def test_all_channels_of_an_image_get_the_same_transform():
    image = random_images((4, 1, 10, 10))
    x = np.concatenate([image, 2 * image, image], axis=1)
    out = default_augmenter(seed=0)(x)
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    np.testing.assert_allclose(out[:, 1], 2 * out[:, 0], rtol=1e-6, atol=1e-7)


def test_augmenter_handles_an_empty_batch():
    assert default_augmenter(seed=0)(np.zeros((0, 1, 5, 5), np.float32)).shape == (0, 1, 5, 5)


@pytest.mark.parametrize("config", [
    {"width_shift_range": -0.1},
    {"height_shift_range": -1},
    {"rotation_range": -5},
    {"rotation_range": float("inf")},
    {"zoom_range": -0.1},
    {"zoom_range": 1.0},
    {"zoom_range": (0.0, 1.2)},
    {"zoom_range": (1.2, 0.8)},
    {"zoom_range": (0.5, 1.0, 1.5)},
    {"horizontal_flip": "yes"},
    {"fill_value": float("nan")},
    {"seed": 1.5},
])
def test_bad_augmenter_configurations_raise_value_error(config):
    with pytest.raises(ValueError, match=next(iter(config))):
        Augmenter(**config)


@pytest.mark.parametrize("shape", [(28, 28), (4, 28, 28), (1, 1, 1, 28, 28)])
def test_augmenter_rejects_input_that_is_not_4d(shape):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        default_augmenter()(np.zeros(shape, np.float32))


def test_augmenter_rejects_integer_images():
    with pytest.raises(ValueError, match="float"):
        default_augmenter()(np.zeros((2, 1, 5, 5), np.uint8))


def test_augmenter_rejects_an_rng_that_is_not_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        default_augmenter()(np.zeros((2, 1, 5, 5), np.float32), rng=3)


def test_apply_affine_uses_a_single_matrix_for_every_image():
    x = random_images((3, 1, 4, 5))
    np.testing.assert_array_equal(apply_affine(x, affine_matrices(4, 5, flip=True)), x[..., ::-1])


def test_apply_affine_rejects_matrices_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        apply_affine(np.zeros((2, 1, 5, 5)), np.zeros((3, 3, 3)))


def test_apply_affine_rejects_non_finite_matrices():
    with pytest.raises(ValueError, match="NaN"):
        apply_affine(np.zeros((1, 1, 5, 5)), np.full((1, 3, 3), np.nan))


def test_config_round_trips_through_json():
    augmenter = Augmenter(width_shift_range=0.1, height_shift_range=2, rotation_range=15,
                          zoom_range=(0.9, 1.2), horizontal_flip=True, fill_value=0.5, seed=3)
    config = json.loads(json.dumps(augmenter.get_config()))
    restored = Augmenter.from_config(config)
    assert restored.get_config() == augmenter.get_config()
    x = random_images((4, 1, 8, 8))
    np.testing.assert_array_equal(restored(x), augmenter(x))


def test_from_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="shear_range"):
        Augmenter.from_config({"shear_range": 0.2})


def test_repr_shows_the_configuration():
    text = repr(Augmenter(rotation_range=10, horizontal_flip=True))
    assert text.startswith("Augmenter(") and "rotation_range=10.0" in text
    assert "horizontal_flip=True" in text


def test_default_augmenter_is_mild_and_does_not_flip():
    config = default_augmenter().get_config()
    assert config["rotation_range"] == 10.0 and config["zoom_range"] == 0.1
    assert config["width_shift_range"] == config["height_shift_range"] == 0.1
    assert config["horizontal_flip"] is False
