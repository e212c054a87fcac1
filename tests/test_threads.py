"""npconvnet.set_num_threads: every layer gives the same results on any number of threads, to
float32 rounding, and the same bits every time on the same number; batch normalization keeps
the statistics of the whole batch. The count is checked, and read from NPCONVNET_NUM_THREADS.

Float32 rounding: entries agree to a relative 1e-5, or to 1e-5 of the array's largest entry (a
sum of thousands of terms, such as dL/dW, is exact only to its terms' size, and the threads add
its terms in another order); weights after a few training steps to a relative 1e-4."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import npconvnet
from npconvnet import parallel, reference, zoo
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Sequential, Sigmoid, Tanh, conv)
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
