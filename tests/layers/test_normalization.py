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
    """A process group of two shards holding the same samples: every sum is twice this
    shard's, so the whole batch's statistics are this shard's own. Records each exchange."""

    size = 2

    def __init__(self):
        self.exchanges = 0

    def allreduce_sum(self, array):
        self.exchanges += 1
        return 2 * np.asarray(array)


def shard_layer(running_mean):
    """A BatchNorm2D on three channels whose shard of the batch is one of :class:`TwinShards`,
    its running mean given and a momentum of 1 (the running variance is the batch's)."""
    layer = BatchNorm2D(3, momentum=1.0)
    layer.running_mean = np.asarray(running_mean, np.float32)
    layer.process_group = TwinShards()
    return layer


def values_near_1000(rng):
    # A spread of 1 about 1000, 2 and 1000.5: float32 cancellation would show at once.
    return (np.array([1000, 2, 1000.5])[:, None, None] + rng.standard_normal((16, 3, 5, 5))).astype(np.float32)


def test_batchnorm_in_shards_near_its_running_mean_exchanges_once_in_forward(rng):
    x = values_near_1000(rng)
    layer = shard_layer(x.astype(np.float64).mean(axis=(0, 2, 3)) + 0.3)
    out = layer.forward(x)
    assert layer.process_group.exchanges == 1
    whole = np.concatenate([x, x]).astype(np.float64)            # the batch of the two shards
    np.testing.assert_allclose(layer.running_mean, whole.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(layer.running_var, whole.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    mean, var = whole.mean(axis=(0, 2, 3))[:, None, None], whole.var(axis=(0, 2, 3))[:, None, None]
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5), atol=1e-4)


def test_batchnorm_in_shards_far_from_its_running_mean_takes_the_variance_about_the_mean(rng):
    # The running mean at 0, 1000 standard deviations from the mean: one pass about it would
    # lose the variance in float32 cancellation; the sums of squares about the mean keep it.
    x = values_near_1000(rng)
    layer = shard_layer(np.zeros(3))
    out = layer.forward(x)
    assert layer.process_group.exchanges == 2
    whole = np.concatenate([x, x]).astype(np.float64)
    np.testing.assert_allclose(layer.running_var, whole.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")       # the running mean's own update
def test_batchnorm_in_shards_with_a_non_finite_running_mean_still_normalises_the_batch(rng):
    x = values_near_1000(rng)
    layer = shard_layer([np.nan, np.inf, 0.0])
    out = layer.forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-3)       # float32 rounding at 1000
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_batchnorm_on_one_rank_gives_the_one_process_statistics_bit_for_bit(rng):
    x = values_near_1000(rng)
    alone = BatchNorm2D(3)
    expected = alone.forward(x)
    layer = BatchNorm2D(3)
    layer.process_group = TwinShards()
    layer.process_group.size = 1
    layer.process_group.allreduce_sum = lambda array: np.array(array)       # one rank: the sum is its own
    np.testing.assert_array_equal(layer.forward(x), expected)
    np.testing.assert_array_equal(layer.running_var, alone.running_var)
