"""npconvnet.set_num_threads: every layer gives the same results on any number of threads, to
float32 rounding, and the same bits every time on the same number; batch normalization keeps
the statistics of the whole batch. The count is checked, and read from NPCONVNET_NUM_THREADS.

Float32 rounding: entries agree to a relative 1e-5, or to 1e-5 of the array's largest entry (a
sum of thousands of terms, such as dL/dW, is exact only to its terms' size, and the threads add
its terms in another order); weights after a few training steps to a relative 1e-4."""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import npconvnet
from npconvnet import parallel, processes, reference, regularizers, zoo
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Sequential, Sigmoid, Tanh, conv)
from npconvnet.layers import base
from npconvnet.layers.containers import EVAL_CHUNK
from npconvnet.parameter import Parameter
from npconvnet.losses import CrossEntropyLoss
from npconvnet.optim import Adam

THREAD_COUNTS = (1, 2, 3)
FLOAT64_ROUNDING = {"rtol": 1e-12, "atol": 1e-12}

LAYERS = {
    "conv, dL/dx by col2im": lambda: Conv2D(3, 5, 3, padding=1),
    "conv, dL/dx by convolution": lambda: Conv2D(3, 2, 3, padding=1),
    "conv, stride 2, relu": lambda: Conv2D(3, 4, (3, 2), stride=2, padding="same", activation="relu"),
    "conv 5x5 valid, no bias": lambda: Conv2D(3, 6, 5, bias=False),
    "max pool": lambda: MaxPool2D(2),
    "max pool, overlapping, padded": lambda: MaxPool2D(3, stride=2, padding=1),
    "average pool": lambda: AvgPool2D(2),
    "global average pool": GlobalAvgPool2D,
    "relu": ReLU,
    "leaky relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "batch norm": lambda: BatchNorm2D(3),
    "dropout": lambda: Dropout(0.3),
    "flatten": Flatten,
}


def run_layer(make_layer, x, upstream_seed=5):
    """Output, dL/dx and every parameter's gradient of a fresh, seeded layer on ``x``."""
    npconvnet.manual_seed(0)
    layer = make_layer()
    out = layer.forward(x)
    upstream = np.random.default_rng(upstream_seed).standard_normal(out.shape).astype(x.dtype)
    grad_input = layer.backward(upstream)
    return [out, grad_input] + [p.grad for p in layer.parameters()]


def assert_equal_to_float32_rounding(ours, expected, message="", rtol=1e-5):
    np.testing.assert_allclose(ours, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=message)


def images(rng, shape=(64, 3, 20, 18), dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def small_blocks(monkeypatch):
    """Convolutions cut into many blocks of columns, so that every thread has several."""
    monkeypatch.setattr(conv, "BLOCK_BYTES", 64 * 2**10)


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_gives_the_one_thread_results_on_two_and_three_threads(name, rng, threads, small_blocks):
    x = images(rng)
    results = {}
    for count in THREAD_COUNTS:
        threads(count)
        results[count] = run_layer(LAYERS[name], x)
    for count in THREAD_COUNTS[1:]:
        for ours, expected in zip(results[count], results[1]):
            assert_equal_to_float32_rounding(ours, expected, f"{count} threads")


@pytest.mark.parametrize("name", ["dense", "batch norm 1d", "relu on features"])
def test_layers_on_features_give_the_one_thread_results_on_three_threads(name, rng, threads):
    make_layer = {"dense": lambda: Dense(40, 30), "batch norm 1d": lambda: BatchNorm1D(40),
                  "relu on features": ReLU}[name]
    x = rng.standard_normal((256, 40)).astype(np.float32)
    threads(1)
    expected = run_layer(make_layer, x)
    threads(3)
    for ours, theirs in zip(run_layer(make_layer, x), expected):
        assert_equal_to_float32_rounding(ours, theirs)


@pytest.mark.parametrize("name", LAYERS)
def test_the_same_number_of_threads_gives_the_same_bits_twice(name, rng, threads, small_blocks):
    x = images(rng)
    threads(3)
    first, second = run_layer(LAYERS[name], x), run_layer(LAYERS[name], x)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("in_channels,out_channels,stride", [(2, 3, 1), (3, 2, 1), (2, 3, 2)])
def test_conv2d_on_several_threads_matches_the_reference(count, in_channels, out_channels, stride, rng, threads,
                                                         monkeypatch):
    # Blocks of one output pixel: many blocks for each thread, the overlapping windows of
    # neighbouring blocks landing in different threads' shares of dL/dx.
    monkeypatch.setattr(conv, "BLOCK_BYTES", 0)
    threads(count)
    layer = Conv2D(in_channels, out_channels, 3, stride, padding=1).astype(np.float64)
    layer.weight.data = rng.standard_normal(layer.weight.shape)
    layer.bias.data = rng.standard_normal(out_channels)
    x = rng.standard_normal((3, in_channels, 9, 8))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = layer.backward(upstream)
    np.testing.assert_allclose(out, reference.conv2d(x, layer.weight.data, layer.bias.data, stride, 1),
                               **FLOAT64_ROUNDING)
    expected = reference.conv2d_backward(x, layer.weight.data, upstream, stride, 1)
    for ours, theirs in zip((grad_input, layer.weight.grad, layer.bias.grad), expected):
        np.testing.assert_allclose(ours, theirs, **FLOAT64_ROUNDING)


def test_batch_norm_on_several_threads_normalises_with_the_statistics_of_the_whole_batch(rng, threads):
    threads(3)
    x = images(rng, (96, 7, 10, 10)) * 3 + 2
    layer = BatchNorm2D(7, momentum=1.0)
    out = layer.forward(x)
    mean, var = x.mean(axis=(0, 2, 3), dtype=np.float64), x.var(axis=(0, 2, 3), dtype=np.float64)
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + layer.eps)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    count = x.size // 7
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, var * count / (count - 1), rtol=1e-4)


def train(name, steps=3, batch=32):
    """The zoo model ``name`` after ``steps`` Adam steps on seeded noise; its state."""
    npconvnet.manual_seed(0)
    model = zoo.get(name, input_shape=(1, 28, 28), num_classes=10)
    data = np.random.default_rng(0)
    loss_fn, optimizer = CrossEntropyLoss(), Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x = data.random((batch, 1, 28, 28), dtype=np.float32)
        loss_fn(model.forward(x), data.integers(0, 10, batch))
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("name", ["convnet", "vgg-mini"])
def test_training_on_two_and_three_threads_agrees_with_one_thread(name, threads):
    threads(1)
    expected = train(name)
    for count in THREAD_COUNTS[1:]:
        threads(count)
        for key, value in train(name).items():
            assert_equal_to_float32_rounding(value, expected[key], f"{key} on {count} threads", rtol=1e-4)


def test_training_twice_on_the_same_number_of_threads_gives_identical_weights(threads):
    threads(3)
    first, second = train("vgg-mini"), train("vgg-mini")
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_fit_and_predict_on_three_threads_match_one_thread(threads):
    data = np.random.default_rng(0)
    x, y = data.random((300, 1, 28, 28), dtype=np.float32), data.integers(0, 10, 300)
    results = []
    for count in (1, 3):
        threads(count)
        npconvnet.manual_seed(0)
        model = zoo.get("lenet5", input_shape=(1, 28, 28), num_classes=10)
        model.compile(optimizer="adam", loss="cross_entropy")
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        results.append(model.predict(x))
    assert_equal_to_float32_rounding(results[1], results[0], rtol=1e-4)


@pytest.mark.parametrize("name", ["convnet", "resnet-mini"])
def test_a_large_batch_in_evaluation_gives_the_one_thread_output_on_two_and_three_threads(name, threads):
    """In evaluation a Sequential hands whole chunks of the batch to the threads, through twins of
    its layers: each chunk's output is that of one thread."""
    npconvnet.manual_seed(0)
    model = zoo.get(name, input_shape=(1, 28, 28), num_classes=10).eval()
    x = np.random.default_rng(1).standard_normal((3 * EVAL_CHUNK + 5, 1, 28, 28)).astype(np.float32)
    threads(1)
    expected = model.forward(x)
    for count in THREAD_COUNTS[1:]:
        threads(count)
        assert_equal_to_float32_rounding(model.forward(x), expected, f"on {count} threads")
        np.testing.assert_array_equal(model.forward(x), model.forward(x))


def test_the_chunks_threads_see_weights_replaced_since_their_last_call(threads):
    threads(2)
    model = Sequential(Conv2D(1, 4, 3), ReLU(), Flatten(), Dense(4 * 6 * 6, 3)).eval()
    x = np.random.default_rng(0).standard_normal((2 * EVAL_CHUNK + 2, 1, 8, 8)).astype(np.float32)
    model.forward(x)
    model[3].weight = Parameter(np.zeros_like(model[3].weight.data))     # a new array, not the old one changed
    model[3].bias.data[:] = 7.0                                          # changed in place
    np.testing.assert_array_equal(model.forward(x), np.full((len(x), 3), 7.0, np.float32))


def test_the_chunks_threads_see_a_layer_added_inside_the_model(threads):
    threads(2)
    inner = Sequential(Dense(4, 4), Dropout(0.5))
    model = Sequential(inner, Dense(4, 2)).eval()
    x = np.random.default_rng(0).standard_normal((2 * EVAL_CHUNK + 2, 4)).astype(np.float32)
    expected = model.forward(x)
    inner.add(ReLU())
    with_relu = Sequential(Sequential(inner[0], ReLU()), model[1]).eval()
    assert_equal_to_float32_rounding(model.forward(x), with_relu.forward(x))
    assert not np.allclose(model.forward(x), expected)


def test_a_twin_shares_the_parameters_and_keeps_workspaces_of_its_own():
    layer = Conv2D(8, 4, 3, padding=1, activation="relu")
    layer.forward(np.zeros((64, 8, 64, 64), np.float32))     # a padded copy large enough to keep
    twin = layer.twin()
    assert twin.weight is layer.weight and twin.bias is layer.bias
    assert twin.activation_layer is not layer.activation_layer
    assert layer._workspaces and not twin._workspaces and twin._cache is None


def test_a_twin_with_gradients_of_its_own_shares_the_weights_but_not_their_gradients():
    layer = Sequential(Conv2D(1, 4, 3), BatchNorm2D(4))
    twin = layer.twin(own_gradients=True)
    for mine, theirs in zip(layer.parameters(), twin.parameters()):
        assert theirs is not mine and theirs.data is mine.data and theirs.grad is not mine.grad
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    twin.backward(twin.forward(x) ** 2, input_grad=False)
    assert not layer[0].weight.grad.any() and twin[0].weight.grad.any()


def test_set_num_threads_changes_what_get_num_threads_returns(threads):
    threads(3)
    assert npconvnet.get_num_threads() == 3
    threads(np.int64(1))
    assert npconvnet.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, 2.0, "2", True, None])
def test_set_num_threads_refuses_anything_but_a_positive_int(bad, threads):
    threads(2)
    with pytest.raises(ValueError, match="set_num_threads: the number of threads must be a positive int"):
        npconvnet.set_num_threads(bad)
    assert npconvnet.get_num_threads() == 2


def test_a_failing_part_raises_in_the_caller_after_every_part_has_finished(threads):
    threads(3)
    finished = []

    def part(index):
        if index == 1:
            raise ArithmeticError("part 1 failed")
        finished.append(index)

    with pytest.raises(ArithmeticError, match="part 1 failed"):
        parallel.run(part, range(3))
    assert sorted(finished) == [0, 2]


def test_the_callers_floating_point_error_settings_hold_in_every_thread(threads, rng, small_blocks):
    threads(3)
    layer = Conv2D(3, 4, 3, padding=1)
    layer.weight.data[...] = 3e38
    x = np.full((64, 3, 20, 18), 3e38, np.float32)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        layer.forward(x)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not np.isfinite(layer.forward(x)).any()


def get_num_threads_in_a_new_process(value):
    environment = dict(os.environ)
    environment.pop(parallel.ENVIRONMENT_VARIABLE, None)
    if value is not None:
        environment[parallel.ENVIRONMENT_VARIABLE] = value
    return subprocess.run([sys.executable, "-c", "import npconvnet; print(npconvnet.get_num_threads())"],
                          capture_output=True, text=True, env=environment)


def test_the_default_is_every_core_the_process_may_run_on():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert get_num_threads_in_a_new_process(None).stdout.strip() == str(cores)


def test_the_environment_variable_sets_the_number_of_threads():
    assert get_num_threads_in_a_new_process("3").stdout.strip() == "3"


@pytest.mark.parametrize("bad", ["0", "many"])
def test_a_bad_environment_variable_is_a_clear_error(bad):
    done = get_num_threads_in_a_new_process(bad)
    assert done.returncode != 0
    assert f"NPCONVNET_NUM_THREADS must be a positive integer (a number of threads), got '{bad}'" in done.stderr


# Training steps in shards of the batch, one shard per thread (npconvnet.shards).
#
# Adam turns the tiny rounding differences of a gradient near zero into differences of the
# learning rate's size (its first steps are about lr * sign(g)), so the float32 comparisons
# train with SGD with momentum, whose weights follow the gradients; Adam is checked in float64.

def fit_model(make_model, x, y, count, optimizer="momentum", lr=0.05, dtype=np.float32, **options):
    """A model from ``make_model()`` (built after seeding) fitted on ``count`` threads; the model
    and its history."""
    npconvnet.set_num_threads(count)
    npconvnet.manual_seed(0)
    model = make_model().astype(dtype)
    model.compile(optimizer=optimizer, loss="cross_entropy")
    model.optimizer.lr = lr
    options = {"epochs": 1, "batch_size": 32, "seed": 0, "verbose": 0, **options}
    history = model.fit(x, y, **options)
    return model, history


def zoo_model(name):
    return lambda: zoo.get(name, input_shape=(1, 28, 28), num_classes=10)


def noise_images(count, seed=0):
    data = np.random.default_rng(seed)
    return data.random((count, 1, 28, 28), dtype=np.float32), data.integers(0, 10, count)


def assert_same_state(model, expected, rtol=1e-4, message=""):
    state, expected = model.state_dict(), expected.state_dict()
    assert state.keys() == expected.keys()
    for key, value in state.items():
        assert_equal_to_float32_rounding(value, expected[key], f"{key} {message}", rtol=rtol)


@pytest.fixture
def shard_steps(monkeypatch):
    """The training steps taken in shards so far, on threads or on processes: a list of each
    one's number of shards."""
    taken = []
    run_on_threads, run_on_processes = npconvnet.shards.ThreadGroup.run, processes.ProcessGroup.run

    def on_threads(group, function):
        taken.append(group.size)
        return run_on_threads(group, function)

    def on_processes(group, function, loss, shards, definition):
        taken.append(len(shards))
        return run_on_processes(group, function, loss, shards, definition)
    monkeypatch.setattr(npconvnet.shards.ThreadGroup, "run", on_threads)
    monkeypatch.setattr(processes.ProcessGroup, "run", on_processes)
    return taken


@pytest.fixture(params=["processes", "threads"])
def transport(request, monkeypatch):
    """fit's shards on worker processes (where Linux's fork is at hand) or on threads."""
    if request.param == "processes" and not processes.AVAILABLE:
        pytest.skip("worker processes need os.fork on Linux; elsewhere the shards run on threads")
    monkeypatch.setattr(processes, "AVAILABLE", request.param == "processes")
    return request.param


#: Batch normalization before ReLU centres the values on ReLU's kink, where float32 rounding may
#: flip a derivative, which no tolerance bounds: on 3 threads one value of vgg-mini's, 3.7e-7 on
#: one thread and 0 in shards, moved a layer's gradient by 8% of its largest entry, so vgg-mini
#: trains in float64 here (resnet-mini, in float32, agrees to 2e-6).
THREADED_TRAINING = [("convnet", np.float32, 1e-4), ("vgg-mini", np.float64, 1e-9), ("resnet-mini", np.float32, 1e-4)]


@pytest.mark.parametrize("name,dtype,rtol", THREADED_TRAINING)
def test_fit_on_two_and_three_threads_trains_the_one_thread_weights_in_shards_of_each_batch(name, dtype, rtol,
                                                                                           threads, shard_steps,
                                                                                           transport):
    x, y = noise_images(96)
    expected, expected_history = fit_model(zoo_model(name), x, y, 1, dtype=dtype)
    assert shard_steps == []
    for count in (2, 3):
        model, history = fit_model(zoo_model(name), x, y, count, dtype=dtype)
        assert_same_state(model, expected, rtol=rtol, message=f"on {count} threads")
        np.testing.assert_allclose(history.history["loss"], expected_history.history["loss"], rtol=1e-5)
        assert history.history["accuracy"] == expected_history.history["accuracy"]
    assert shard_steps == [2] * 3 + [3] * 3


@pytest.mark.parametrize("name", ["vgg-mini", "resnet-mini"])
def test_fit_with_adam_in_float64_on_two_and_three_threads_matches_one_thread_to_float64_rounding(name, threads):
    x, y = noise_images(64)
    expected, _ = fit_model(zoo_model(name), x, y, 1, optimizer="adam", lr=1e-3, dtype=np.float64)
    for count in (2, 3):
        model, _ = fit_model(zoo_model(name), x, y, count, optimizer="adam", lr=1e-3, dtype=np.float64)
        assert_same_state(model, expected, rtol=1e-9, message=f"on {count} threads")


def test_fit_on_the_same_number_of_threads_gives_the_same_bits_twice(threads):
    x, y = noise_images(96)
    first, first_history = fit_model(zoo_model("vgg-mini"), x, y, 3, optimizer="adam", lr=1e-3)
    second, second_history = fit_model(zoo_model("vgg-mini"), x, y, 3, optimizer="adam", lr=1e-3)
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(value, second.state_dict()[key], err_msg=key)
    assert first_history.history == second_history.history


def test_batch_normalization_in_shards_updates_the_running_statistics_once_with_the_whole_batch(threads):
    # Momentum 0.5 over two batches: running = 0.5 * (0.5 * initial + 0.5 * first) + 0.5 * second,
    # with the mean and the unbiased variance of each batch of x (the first layer's input).
    x = np.random.default_rng(0).random((64, 3, 6, 6), dtype=np.float32) * 4 + 1
    y = np.arange(64) % 2

    def make_model():
        return npconvnet.Sequential(BatchNorm2D(3, momentum=0.5), Flatten(), Dense(3 * 6 * 6, 2))
    for count in THREAD_COUNTS:
        model, _ = fit_model(make_model, x, y, count, shuffle=False)
        first, second = x[:32].astype(np.float64), x[32:].astype(np.float64)
        axes = (0, 2, 3)
        mean = 0.25 * 0 + 0.25 * first.mean(axis=axes) + 0.5 * second.mean(axis=axes)
        var = 0.25 * 1 + 0.25 * first.var(axis=axes, ddof=1) + 0.5 * second.var(axis=axes, ddof=1)
        np.testing.assert_allclose(model[0].running_mean, mean, rtol=1e-5, err_msg=f"on {count} threads")
        np.testing.assert_allclose(model[0].running_var, var, rtol=1e-5, err_msg=f"on {count} threads")


def test_batch_normalization_in_shards_of_unlike_means_far_from_zero_keeps_the_whole_batchs_variance(threads,
                                                                                                   transport):
    # Values near 1000 with a spread of 1, the first shard's below the second's: the shards'
    # own means differ, and the batch's variance is mostly the spread between them.
    x = np.sort(1000 + np.random.default_rng(0).standard_normal(64 * 3 * 6 * 6)).reshape(64, 3, 6, 6)
    x = x.astype(np.float32)
    y = np.arange(64) % 2

    def make_model():
        return npconvnet.Sequential(BatchNorm2D(3, momentum=1.0), Flatten(), Dense(3 * 6 * 6, 2))
    expected = x.astype(np.float64)
    for count in THREAD_COUNTS:
        model, _ = fit_model(make_model, x, y, count, batch_size=64, shuffle=False)
        np.testing.assert_allclose(model[0].running_mean, expected.mean(axis=(0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(model[0].running_var, expected.var(axis=(0, 2, 3), ddof=1), rtol=1e-4,
                                   err_msg=f"on {count} threads")


def test_batch_normalization_in_shards_after_a_batch_too_small_to_share_keeps_the_whole_batchs_statistics(
        threads, transport):
    # Batches of 32, 32 and 3 samples, for two epochs: the batch of 3 goes in one piece and moves
    # the running mean (momentum 0.9) of the network's own layers alone, not of the other shards'
    # twins; the statistics of the next batch in shards, taken about a running mean, are still
    # the whole batch's.
    x = (5 + np.random.default_rng(0).standard_normal((67, 3, 6, 6))).astype(np.float32)
    y = np.arange(67) % 2

    def make_model():
        return npconvnet.Sequential(BatchNorm2D(3, momentum=0.9), Flatten(), Dense(3 * 6 * 6, 2))
    expected, _ = fit_model(make_model, x, y, 1, epochs=2, shuffle=False)
    model, _ = fit_model(make_model, x, y, 2, epochs=2, shuffle=False)
    assert_same_state(model, expected, rtol=1e-5)


def test_batch_normalization_on_threads_near_its_running_mean_exchanges_once_in_forward_and_once_in_backward(
        threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(processes, "AVAILABLE", False)
    exchanges = []
    exchange = npconvnet.shards.ThreadGroup._exchange
    monkeypatch.setattr(npconvnet.shards.ThreadGroup, "_exchange",
                        lambda group, member, value: exchanges.append(member.index) or exchange(group, member, value))
    x = (5 + np.random.default_rng(0).standard_normal((64, 3, 6, 6))).astype(np.float32)
    model = npconvnet.Sequential(BatchNorm2D(3, momentum=1.0), Flatten(), Dense(3 * 6 * 6, 2)).train()
    for step in range(2):       # the first far from the running mean of 0, the second near the first's
        exchanges.clear()
        npconvnet.shards.forward_backward(model, npconvnet.losses.CrossEntropyLoss(), x, np.arange(64) % 2)
    assert sorted(exchanges) == [0, 0, 1, 1]


def test_the_dropout_masks_of_fit_do_not_depend_on_the_number_of_threads(threads, shard_steps):
    # Another mask for any sample would change the weights far beyond rounding.
    x = np.random.default_rng(0).random((96, 20), dtype=np.float32)
    y = np.arange(96) % 5

    def make_model():
        return npconvnet.Sequential(Dropout(0.5), Dense(20, 30), Dropout(0.3), Dense(30, 5))
    expected, _ = fit_model(make_model, x, y, 1, lr=0.5, epochs=2)
    for count in (2, 3):
        model, _ = fit_model(make_model, x, y, count, lr=0.5, epochs=2)
        assert_same_state(model, expected, message=f"on {count} threads")
    assert len(shard_steps) == 12


def test_uneven_shards_and_a_last_batch_too_small_to_share_train_the_one_thread_weights(threads, shard_steps,
                                                                                       transport):
    # Batches of 65, 65 and 3 samples: shards of 33 + 32 samples, then 3 samples in one piece
    # (fewer than two for each of the two threads). In float64: in float32 the rounding of the
    # first steps grows, at lr 0.05 through batch normalization, past float32 rounding.
    x, y = noise_images(133)
    expected, expected_history = fit_model(zoo_model("vgg-mini"), x, y, 1, batch_size=65, dtype=np.float64)
    model, history = fit_model(zoo_model("vgg-mini"), x, y, 2, batch_size=65, dtype=np.float64)
    assert_same_state(model, expected, rtol=1e-9)
    np.testing.assert_allclose(history.history["loss"], expected_history.history["loss"], rtol=1e-12)
    assert shard_steps == [2, 2]


class BatchMean(npconvnet.layers.Layer):
    """``y = x - mean(x over the batch)``: not samplewise (each output depends on every sample)."""

    def forward(self, x):
        return x - x.mean(axis=0)

    def backward(self, grad_output):
        return grad_output - grad_output.mean(axis=0)


def test_a_layer_that_is_not_samplewise_trains_on_the_whole_batch_in_one_piece(threads, shard_steps):
    x, y = noise_images(64)
    x = x.reshape(64, -1)

    def make_model():
        return npconvnet.Sequential(Dense(784, 16), BatchMean(), ReLU(), Dense(16, 10))
    expected, _ = fit_model(make_model, x, y, 1)
    model, _ = fit_model(make_model, x, y, 2)
    assert shard_steps == []
    assert_same_state(model, expected)


def test_sample_and_class_weights_and_weight_penalties_count_in_shards_as_on_one_thread(threads):
    data = np.random.default_rng(3)
    x, y = noise_images(100)
    sample_weight = data.random(100) * 2

    def make_model():
        return npconvnet.Sequential(Conv2D(1, 4, 3, kernel_regularizer=regularizers.l2(0.01)), ReLU(),
                                    MaxPool2D(2), Flatten(),
                                    Dense(4 * 13 * 13, 10, kernel_regularizer=regularizers.l1(0.001)))
    options = dict(sample_weight=sample_weight, class_weight={3: 4.0, 7: 0.5}, epochs=2, batch_size=25)
    expected, expected_history = fit_model(make_model, x, y, 1, **options)
    for count in (2, 3):
        model, history = fit_model(make_model, x, y, count, **options)
        assert_same_state(model, expected, message=f"on {count} threads")
        np.testing.assert_allclose(history.history["loss"], expected_history.history["loss"], rtol=1e-5)


class FailsOnOneThread(npconvnet.layers.Layer):
    """The identity, but forward raises ``error`` in the caller's shard (``in_caller``: the
    thread and process that made the layer) or in the others, while ``failing``."""

    samplewise = True

    def __init__(self, error, in_caller):
        super().__init__()
        self.error, self.in_caller, self.failing = error, in_caller, True
        self.caller = (os.getpid(), threading.get_ident())

    def forward(self, x):
        if self.failing and ((os.getpid(), threading.get_ident()) == self.caller) == self.in_caller:
            raise self.error
        return x

    def backward(self, grad_output):
        return grad_output


@pytest.mark.parametrize("error", [ArithmeticError("a shard failed"), KeyboardInterrupt()],
                         ids=["exception", "KeyboardInterrupt"])
@pytest.mark.parametrize("in_caller", [True, False], ids=["in the caller's shard", "in another shard"])
def test_a_failing_shard_raises_in_the_caller_and_the_next_fit_trains(error, in_caller, threads, monkeypatch,
                                                                     transport):
    # The other shards wait at batch normalization after the failing layer: they must be
    # released, not left at the barrier (which would time out after these few seconds).
    monkeypatch.setattr(npconvnet.shards, "BARRIER_TIMEOUT_SECONDS", 20)
    failing = FailsOnOneThread(error, in_caller)
    x, y = noise_images(64)
    x = x.reshape(64, -1)

    def make_model():
        return npconvnet.Sequential(Dense(784, 16, bias=False), failing, BatchNorm1D(16), ReLU(), Dropout(0.2),
                                    Dense(16, 10))
    with pytest.raises(type(error), match=str(error) or None):
        fit_model(make_model, x, y, 2)
    failing.failing = False
    model, _ = fit_model(make_model, x, y, 2)
    expected, _ = fit_model(make_model, x, y, 1)
    assert_same_state(model, expected)


def test_the_shards_see_weights_replaced_between_two_fits(threads):
    # In float64: halved weights before batch normalization make its steps four times larger,
    # and float32 rounding grows past 1e-4 within the second fit's two steps.
    x, y = noise_images(64)
    results = {}
    for count in (1, 2):
        model, _ = fit_model(zoo_model("vgg-mini"), x, y, count, dtype=np.float64)
        for parameter in model.parameters():
            parameter.data = parameter.data * 0.5          # a new array, not the old one changed
        model.fit(x.astype(np.float64), y, epochs=1, batch_size=32, seed=1, verbose=0)
        results[count] = model
    assert_same_state(results[2], results[1], rtol=1e-9)


def test_the_shards_twins_are_made_once_for_a_run_not_at_every_step(threads, monkeypatch):
    monkeypatch.setattr(processes, "AVAILABLE", False)
    made = []
    twin = npconvnet.layers.Layer.twin
    monkeypatch.setattr(npconvnet.layers.Layer, "twin", lambda layer, *args: made.append(layer) or twin(layer, *args))
    x, y = noise_images(128)
    model, _ = fit_model(zoo_model("vgg-mini"), x, y, 3)
    assert len(made) == 2 * len(model.layers)


class _ListedAffine(base.Layer):
    """A custom samplewise layer that keeps its Parameters in a list: y = x * scale + shift."""

    samplewise = True

    def __init__(self, features):
        super().__init__()
        self.params = [Parameter(np.ones(features, np.float32)), Parameter(np.zeros(features, np.float32))]

    def named_parameters(self, prefix=""):
        return [(prefix + "scale", self.params[0]), (prefix + "shift", self.params[1])]

    def forward(self, x):
        self._remember(x, x=x)
        return x * self.params[0].data + self.params[1].data

    def backward(self, grad_output):
        x = self._recall(grad_output).x
        self.params[0].grad, self.params[1].grad = (grad_output * x).sum(axis=0), grad_output.sum(axis=0)
        return grad_output * self.params[0].data


def test_twins_share_the_parameters_a_custom_layer_keeps_in_a_list(threads):
    threads(2)
    network = Sequential(Dense(4, 4), _ListedAffine(4)).eval()
    x = np.random.default_rng(0).standard_normal((2 * EVAL_CHUNK + 2, 4)).astype(np.float32)
    network.forward(x)                          # the twins are made
    for parameter in network.parameters():
        parameter.data += 1.0                   # in place, as an optimizer steps
    on_two = network.forward(x)
    threads(1)
    assert_equal_to_float32_rounding(on_two, network.forward(x))


def test_a_custom_layer_keeping_its_parameters_in_a_list_trains_on_two_threads_as_on_one():
    data = np.random.default_rng(1)
    x, y = data.standard_normal((64, 4)).astype(np.float32), data.integers(0, 4, 64)
    make_model = lambda: npconvnet.Sequential(Dense(4, 4), _ListedAffine(4))    # noqa: E731
    expected, _ = fit_model(make_model, x, y, 1, epochs=3)
    on_two, _ = fit_model(make_model, x, y, 2, epochs=3)
    npconvnet.set_num_threads(parallel._cores())
    for ours, theirs in zip(on_two.parameters(), expected.parameters()):
        assert_equal_to_float32_rounding(ours.data, theirs.data, rtol=1e-4)


class _ScaledInput(npconvnet.Sequential, register=False):
    """A model whose own forward divides its input by 255 before the layers."""

    def forward(self, x):
        return super().forward(x / 255.0)


def test_a_model_with_a_forward_of_its_own_trains_on_two_threads_as_on_one(shard_steps):
    data = np.random.default_rng(2)
    x, y = (data.random((64, 8)) * 255).astype(np.float32), data.integers(0, 3, 64)
    make_model = lambda: _ScaledInput(Dense(8, 16, activation="relu"), Dense(16, 3))    # noqa: E731
    expected, expected_history = fit_model(make_model, x, y, 1, epochs=3)
    on_two, history = fit_model(make_model, x, y, 2, epochs=3)
    npconvnet.set_num_threads(parallel._cores())
    assert not shard_steps                      # the whole batch in one piece, through its forward
    np.testing.assert_allclose(history.history["loss"], expected_history.history["loss"], rtol=1e-4)


def test_the_switch_interval_comes_back_after_calls_from_two_threads_overlapped(threads):
    """This thread's call ends while another thread's is still running: the interval of before
    comes back once both have ended, not the short one the second call found."""
    threads(2)
    before = sys.getswitchinterval()
    other_inside, first_ended = threading.Event(), threading.Event()

    def second(part):
        if part == 0:
            other_inside.set()
            assert first_ended.wait(timeout=10)
    other = threading.Thread(target=parallel.run, args=(second, [0, 1]))

    def first(part):
        if part == 0:                           # the other call starts inside this one
            other.start()
            assert other_inside.wait(timeout=10)

    parallel.run(first, [0, 1])
    first_ended.set()
    other.join(timeout=10)
    assert sys.getswitchinterval() == before
