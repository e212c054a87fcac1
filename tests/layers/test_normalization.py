import numpy as np
import pytest

from gradcheck import check_layer_gradients
from npconvnet.layers import BatchNorm1D, BatchNorm2D


def randomised(layer, rng):
    layer.weight.data = rng.uniform(0.5, 1.5, layer.weight.shape)
    layer.bias.data = rng.standard_normal(layer.bias.shape)
    return layer


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_gradients_match_finite_differences(training, rng):
    layer = randomised(BatchNorm2D(3).astype(np.float64), rng).train(training)
    layer.running_mean, layer.running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    check_layer_gradients(layer, rng.standard_normal((4, 3, 3, 2)))


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3)])
def test_batchnorm1d_gradients_match_finite_differences(shape, rng):
    check_layer_gradients(randomised(BatchNorm1D(4).astype(np.float64), rng), rng.standard_normal(shape))


@pytest.mark.parametrize("layer_class,shape", [(BatchNorm2D, (8, 3, 5, 4)), (BatchNorm1D, (16, 3)), (BatchNorm1D, (8, 3, 5))])
def test_batchnorm_matches_pytorch_in_both_modes(layer_class, shape, rng, torch):
    layer = randomised(layer_class(3, momentum=0.2).astype(np.float64), rng)
    reference = (torch.nn.BatchNorm2d if layer_class is BatchNorm2D else torch.nn.BatchNorm1d)(3, momentum=0.2).double()
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(layer.weight.data))
        reference.bias.copy_(torch.tensor(layer.bias.data))
    for training in (True, True, False):            # two training steps move the running statistics
        layer.train(training), reference.train(training)
        x = rng.standard_normal(shape) * 2 + 1
        out = layer.forward(x)
        upstream = rng.standard_normal(out.shape)
        grad_input = layer.backward(upstream)
        x_torch = torch.tensor(x, requires_grad=True)
        reference.zero_grad()
        expected = reference(x_torch)
        expected.backward(torch.tensor(upstream))
        np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.weight.grad, reference.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(layer.bias.grad, reference.bias.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(layer.running_mean, reference.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, reference.running_var.numpy(), rtol=1e-12)


def test_batchnorm_training_output_is_normalised_per_channel(rng):
    x = (rng.standard_normal((64, 3, 4, 4)) * 5 + 2).astype(np.float32)
    out = BatchNorm2D(3).forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)


def test_batchnorm_refuses_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm1D(3).forward(np.zeros((1, 3), np.float32))


def test_batchnorm_refuses_a_channel_mismatch():
    with pytest.raises(ValueError, match="expected 3 channels"):
        BatchNorm2D(3).forward(np.zeros((2, 4, 2, 2), np.float32))


def test_running_statistics_are_buffers_not_parameters():
    layer = BatchNorm2D(3)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in layer.named_buffers()] == ["running_mean", "running_var"]


@pytest.mark.parametrize("arguments, message", [
    ({"eps": -1}, "eps must be a finite number > 0"),
    ({"eps": float("nan")}, "eps must be a finite number > 0"),
    ({"momentum": 1.5}, r"momentum must be a finite number in \[0, 1\]"),
    ({"num_features": True}, "num_features must be an int >= 1"),
])
def test_batch_norm_refuses_settings_that_cannot_work(arguments, message):
    with pytest.raises((ValueError, TypeError), match=message):
        BatchNorm2D(**{"num_features": 2, **arguments})


class TwinShards:
    """A process group of two shards holding the same samples: every sum is twice this shard's,
    so the whole batch's statistics are this shard's own. Counts the exchanges.
    ``identical_sums``: every member gets the same bits from a sum, as fit's shards do (MPI's
    ranks are not promised it)."""

    def __init__(self, identical_sums=True):
        self.identical_sums = identical_sums
        self.exchanges = 0

    def allreduce_sum(self, array):
        self.exchanges += 1
        return 2 * np.asarray(array)


def shard_layer(running_mean, identical_sums=True):
    """A BatchNorm2D on three channels whose shard of the batch is one of :class:`TwinShards`,
    its running mean given and a momentum of 1 (the running variance is the batch's)."""
    layer = BatchNorm2D(3, momentum=1.0)
    layer.running_mean = np.asarray(running_mean, np.float32)
    layer.process_group = TwinShards(identical_sums)
    return layer


def values_near(means, rng, spread=1.0):
    values = np.asarray(means, np.float64)[:, None, None] + spread * rng.standard_normal((16, 3, 5, 5))
    return values.astype(np.float32)


def whole_batch(x):
    """The batch of the two shards, in float64."""
    return np.concatenate([x, x]).astype(np.float64)


def assert_same_results(layer, other, x, upstream):
    np.testing.assert_array_equal(layer.forward(x), other.forward(x))
    np.testing.assert_array_equal(layer.backward(upstream), other.backward(upstream))
    np.testing.assert_array_equal(layer.running_mean, other.running_mean)
    np.testing.assert_array_equal(layer.running_var, other.running_var)


def test_batchnorm_in_shards_near_its_running_mean_takes_mean_and_variance_in_one_exchange(rng):
    # A spread of 1 about 1000, 2 and 1000.5: float32 cancellation would show at once.
    x = values_near([1000, 2, 1000.5], rng)
    layer = shard_layer(x.astype(np.float64).mean(axis=(0, 2, 3)) + 0.3)
    out = layer.forward(x)
    assert layer.process_group.exchanges == 1
    whole = whole_batch(x)
    np.testing.assert_allclose(layer.running_mean, whole.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(layer.running_var, whole.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    mean, var = whole.mean(axis=(0, 2, 3))[:, None, None], whole.var(axis=(0, 2, 3))[:, None, None]
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5), atol=1e-4)


def test_batchnorm_in_shards_in_one_exchange_agrees_with_the_two_passes_in_float64_forward_and_backward(rng):
    x = values_near([1000, 2, 1000.5], rng)
    near = x.astype(np.float64).mean(axis=(0, 2, 3)) - 0.2
    one, exact = shard_layer(near), shard_layer(near, identical_sums=False).astype(np.float64)
    np.testing.assert_allclose(one.forward(x), exact.forward(x.astype(np.float64)), atol=2e-5)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(one.backward(upstream), exact.backward(upstream.astype(np.float64)), atol=2e-5)
    np.testing.assert_allclose(one.weight.grad, exact.weight.grad, rtol=1e-5)
    assert (one.process_group.exchanges, exact.process_group.exchanges) == (2, 3)     # forward and backward


@pytest.mark.parametrize("running_mean", [[0, 0, 0], [3e4, -3e4, 1e37]], ids=["zero", "huge"])
def test_batchnorm_in_shards_far_from_its_running_mean_gives_the_two_passes_bits(running_mean, rng):
    # Far from the running mean, one pass about it would lose the variance (and the mean) to
    # float32 cancellation: the two passes are taken, after the exchange that showed it.
    x = values_near([1000, 2, 0], rng, spread=0.1)
    layer, two_pass = shard_layer(running_mean), shard_layer(running_mean, identical_sums=False)
    assert_same_results(layer, two_pass, x, rng.standard_normal(x.shape).astype(np.float32))
    assert layer.process_group.exchanges == 3 + 1


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")       # the running mean's own update
def test_batchnorm_in_shards_takes_zero_for_a_non_finite_running_mean(rng):
    x = values_near([0.2, -0.1, 0.5], rng)
    layer = shard_layer([np.nan, np.inf, 0.4])
    out = layer.forward(x)
    assert layer.process_group.exchanges == 1
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_batchnorm_over_ranks_whose_sums_may_differ_takes_the_two_passes(rng):
    # MPI does not promise every rank the same bits of a sum: a rank choosing one exchange where
    # another chose two would leave their collective calls unpaired.
    x = values_near([0.2, -0.1, 0.5], rng)
    layer = shard_layer([0.2, -0.1, 0.5], identical_sums=False)
    layer.forward(x)
    assert layer.process_group.exchanges == 2


def test_batchnorm_in_shards_whose_squares_overflow_takes_the_two_passes(rng):
    # Values near 1e18: their squares about a running mean of 0 overflow float32 in the sums,
    # those about the mean (1e34 each) do not.
    x = values_near([1e18, 1e18, 1e18], rng, spread=1e17)
    layer, two_pass = shard_layer(np.zeros(3)), shard_layer(np.zeros(3), identical_sums=False)
    assert_same_results(layer, two_pass, x, rng.standard_normal(x.shape).astype(np.float32))
    assert np.isfinite(layer.running_var).all()
