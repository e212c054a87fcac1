"""npconvnet.processes: fit's shards on worker processes forked for each epoch. They give the
threads' bits, end with the epoch, see a network changed between steps, and report a failing
or dying worker in the caller. (That the results agree with one thread, and that a failing
shard leaves the next fit intact, is tested with the threads, on both: test_threads.py.)"""

import os
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import npconvnet
from npconvnet import Sequential, processes, shards, zoo
from npconvnet.callbacks import Callback
from npconvnet.layers import BatchNorm1D, Dense, Dropout, LeakyReLU, ReLU
from npconvnet.losses import CrossEntropyLoss

pytestmark = pytest.mark.skipif(not processes.AVAILABLE,
                                reason="worker processes need os.fork on Linux; elsewhere the shards run on threads")


@pytest.fixture
def groups(monkeypatch, threads):
    """The ProcessGroups made so far (two threads from here on)."""
    threads(2)
    made = []
    init = processes.ProcessGroup.__init__

    def recorded(group, *args):
        init(group, *args)
        made.append((group, [worker.pid for worker in group._workers]))
    monkeypatch.setattr(processes.ProcessGroup, "__init__", recorded)
    return made


def noise(count, features=None, seed=0):
    data = np.random.default_rng(seed)
    shape = (count, 1, 28, 28) if features is None else (count, features)
    return data.random(shape, dtype=np.float32), data.integers(0, 10, count)


def fitted(make_model, x, y, epochs=1, callbacks=None, batch_size=32):
    npconvnet.manual_seed(0)
    model = make_model()
    model.compile(optimizer="adam", loss="cross_entropy")
    model.fit(x, y, epochs=epochs, batch_size=batch_size, seed=0, verbose=0, callbacks=callbacks)
    return model


def assert_gone(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)        # reaped already: no child of that number is left


def test_the_shards_on_processes_give_the_bits_of_the_shards_on_threads(threads, monkeypatch):
    threads(2)
    x, y = noise(96)
    on_processes = fitted(lambda: zoo.get("vgg-mini"), x, y)
    monkeypatch.setattr(processes, "AVAILABLE", False)
    on_threads = fitted(lambda: zoo.get("vgg-mini"), x, y)
    for key, value in on_processes.state_dict().items():
        np.testing.assert_array_equal(value, on_threads.state_dict()[key], err_msg=key)


def test_the_workers_are_forked_once_an_epoch_and_gone_after_it(groups):
    x, y = noise(128)
    fitted(lambda: zoo.get("convnet"), x, y, epochs=2)
    assert len(groups) == 2
    for _, pids in groups:
        assert len(pids) == 1
        assert_gone(pids[0])


def test_three_threads_fork_two_workers(groups, threads):
    threads(3)
    x, y = noise(96)
    fitted(lambda: zoo.get("convnet"), x, y)
    assert [len(pids) for _, pids in groups] == [2]


def test_one_thread_or_batches_too_small_to_share_fork_nothing(groups, threads):
    x, y = noise(8)
    fitted(lambda: zoo.get("convnet"), x, y, batch_size=1)
    threads(1)
    fitted(lambda: zoo.get("convnet"), x, y)
    assert groups == []


def test_forward_backward_outside_a_block_runs_on_threads(groups):
    x, y = noise(64)
    model = zoo.get("convnet").train()
    shards.forward_backward(model, CrossEntropyLoss(), x, y)
    assert groups == []
    with processes.on_processes(model):
        shards.forward_backward(model, CrossEntropyLoss(), x, y)
        shards.forward_backward(model, CrossEntropyLoss(), x, y)
    assert len(groups) == 1


def test_a_step_whose_arrays_outgrow_the_workers_shared_buffers_gives_the_bits_of_the_threads(groups, monkeypatch):
    # The buffers are sized at the fork, by a first batch of 64 samples (a mebibyte at least);
    # the second batch's shards hold 2.4 MB each, which travel through the pipe instead.
    def two_steps():
        npconvnet.manual_seed(0)
        model = Sequential(Dense(30, 20), ReLU(), Dense(20, 10)).train()
        gradients = []
        with processes.on_processes(model):
            for count in (64, 40_000):
                x, y = noise(count, features=30, seed=count)
                shards.forward_backward(model, CrossEntropyLoss(), x, y)
                gradients.append([parameter.grad.copy() for parameter in model.parameters()])
        return gradients
    on_processes = two_steps()
    assert len(groups) == 1
    monkeypatch.setattr(processes, "AVAILABLE", False)
    for step, expected in zip(on_processes, two_steps()):
        for grad, other in zip(step, expected):
            np.testing.assert_array_equal(grad, other)


class _SquareKeepingItsInput(npconvnet.layers.Layer):
    """``y = x ** 2``, keeping its input ``x`` itself (not a copy) as an attribute for backward."""

    samplewise = True

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad_output):
        return 2 * self.x * grad_output


def test_a_layer_keeping_its_input_itself_gives_the_bits_of_the_threads_step_after_step(groups, monkeypatch):
    # The worker's layer holds the last step's input, an array the next step's values are
    # loaded into: it must not be the memory the next step's shard arrives in.
    def losses():
        npconvnet.manual_seed(0)
        model = Sequential(_SquareKeepingItsInput(), Dense(30, 10))
        model.compile(optimizer="sgd", loss="cross_entropy")
        x, y = noise(128, features=30)
        return model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0).history["loss"]
    on_processes = losses()
    assert len(groups) == 1
    monkeypatch.setattr(processes, "AVAILABLE", False)
    assert on_processes == losses()


class _ChangeAfterFirstBatch(Callback):
    """Changes the model after the first batch of each epoch: ``change(model)``."""

    def __init__(self, change):
        super().__init__()
        self.change = change

    def on_batch_end(self, batch, logs=None):
        if batch == 0:
            self.change(self.model)


class _Scaled(npconvnet.layers.Layer):
    """``y = x * scale``, ``scale`` an array of the layer's own (not a Parameter)."""

    samplewise = True

    def __init__(self, features):
        super().__init__()
        self.scale = np.ones(features, np.float32)

    def forward(self, x):
        return x * self.scale

    def backward(self, grad_output):
        return grad_output * self.scale


@pytest.mark.parametrize("change", [
    lambda model: setattr(model.layers[1], "negative_slope", 0.5),
    lambda model: setattr(model.layers[0].weight, "data", model.layers[0].weight.data * 0.5),
    lambda model: model.layers[0].weight.data.__imul__(0.5),
    lambda model: model.layers[2].scale.__imul__(2.0),
    lambda model: setattr(model.loss, "label_smoothing", 0.5),
], ids=["an option", "a parameter's array replaced", "a parameter changed in place",
        "a layer's own array changed in place", "a loss option"])
def test_a_network_changed_between_two_steps_reaches_the_workers(change, groups, threads):
    x, y = noise(96, features=12)

    def make_model():
        return Sequential(Dense(12, 16), LeakyReLU(0.01), _Scaled(16), Dense(16, 10))
    on_two = fitted(make_model, x, y, callbacks=[_ChangeAfterFirstBatch(change)])
    threads(1)
    expected = fitted(make_model, x, y, callbacks=[_ChangeAfterFirstBatch(change)])
    for ours, theirs in zip(on_two.parameters(), expected.parameters()):
        np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-5, atol=1e-6)


class _DrawsBetweenBatches(Callback):
    def on_batch_end(self, batch, logs=None):
        npconvnet.rng.default_rng().random(7)


def test_the_workers_draw_the_dropout_noise_of_one_thread_even_after_other_draws_between_steps(groups, threads):
    # Every shard draws the whole batch's noise from the generator in the caller's state; a
    # callback drawing from it between two steps moves that state on in the caller alone.
    x, y = noise(96, features=12)

    def make_model():
        return Sequential(Dense(12, 16), Dropout(0.5), Dense(16, 10))
    on_two = fitted(make_model, x, y, epochs=2, callbacks=[_DrawsBetweenBatches()])
    threads(1)
    expected = fitted(make_model, x, y, epochs=2, callbacks=[_DrawsBetweenBatches()])
    for ours, theirs in zip(on_two.parameters(), expected.parameters()):
        np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-5, atol=1e-6)


class _InWorkers(npconvnet.layers.Layer):
    """The identity, but ``action()`` runs in the worker processes' forward (not the caller's)."""

    samplewise = True

    def __init__(self, action):
        super().__init__()
        self.action, self.caller = action, (os.getpid(), threading.get_ident())

    def forward(self, x):
        if (os.getpid(), threading.get_ident()) != self.caller:
            self.action(self)
        return x

    def backward(self, grad_output):
        return grad_output


def _raise(layer):
    raise ArithmeticError("overflow in a worker")


def test_an_exception_in_a_worker_is_raised_in_the_caller_with_the_workers_traceback(groups):
    x, y = noise(64, features=10)
    with pytest.raises(ArithmeticError, match="overflow in a worker") as raised:
        fitted(lambda: Sequential(Dense(10, 10), _InWorkers(_raise), Dense(10, 10)), x, y)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "worker process of shard 1" in notes and "_raise" in notes
    assert_gone(groups[0][1][0])


def test_a_worker_that_dies_is_a_clear_error_and_the_next_fit_trains(groups):
    x, y = noise(64, features=10)
    dies = _InWorkers(lambda layer: os._exit(3))
    with pytest.raises(RuntimeError, match=r"worker process \d+ of shard 1 of the batch exited with status 3"):
        fitted(lambda: Sequential(Dense(10, 10), dies, BatchNorm1D(10), ReLU(), Dense(10, 10)), x, y)
    dies.action = lambda layer: None
    fitted(lambda: Sequential(Dense(10, 10), dies, BatchNorm1D(10), ReLU(), Dense(10, 10)), x, y)
    for _, pids in groups:
        assert_gone(pids[0])


class _SumsInWorkersOnly(_InWorkers):
    process_group = None

    def __init__(self):
        super().__init__(lambda layer: layer.process_group.allreduce_sum(np.zeros(1)))


def test_a_worker_making_a_collective_call_the_caller_does_not_is_a_clear_error(groups):
    x, y = noise(64, features=10)
    with pytest.raises(RuntimeError, match="sent a 'sum' where the caller expected a 'result'.*same collective"):
        fitted(lambda: Sequential(Dense(10, 10), _SumsInWorkersOnly(), Dropout(0.2), Dense(10, 10)), x, y)


class _SumsOfAnotherSizeInWorkers(_InWorkers):
    process_group = None

    def __init__(self):
        super().__init__(None)

    def forward(self, x):
        if self.process_group is not None:
            in_worker = (os.getpid(), threading.get_ident()) != self.caller
            self.process_group.allreduce_sum(np.zeros(2 if in_worker else 1))
        return x


def test_a_worker_adding_an_array_of_another_shape_than_the_callers_is_a_clear_error(groups):
    x, y = noise(64, features=10)
    with pytest.raises(RuntimeError, match=r"shard 1 .* sent an array of float64 \(2,\) to add to this shard's "
                                           r"float64 \(1,\).*same collective"):
        fitted(lambda: Sequential(Dense(10, 10), _SumsOfAnotherSizeInWorkers(), Dense(10, 10)), x, y)


def _warn(layer):
    warnings.warn("a warning in a worker", UserWarning)


def test_a_warning_in_a_worker_is_raised_in_the_caller(groups):
    x, y = noise(64, features=10)
    with pytest.warns(UserWarning, match="a warning in a worker"):
        fitted(lambda: Sequential(Dense(10, 10), _InWorkers(_warn), Dense(10, 10)), x, y)


def test_a_fork_that_fails_leaves_the_epoch_to_the_threads_with_a_warning(groups, monkeypatch):
    x, y = noise(96)
    expected = fitted(lambda: zoo.get("convnet"), x, y)

    def fails():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", fails)
    with pytest.warns(RuntimeWarning, match="could not fork the worker processes.*run on threads"):
        model = fitted(lambda: zoo.get("convnet"), x, y)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected.state_dict()[key], err_msg=key)


def test_fit_trains_where_the_children_are_reaped_by_someone_else(groups):
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)     # the system reaps them at once
    try:
        x, y = noise(96)
        fitted(lambda: zoo.get("convnet"), x, y, epochs=2)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert len(groups) == 2


def test_a_step_after_a_failed_one_forks_new_workers(groups):
    x, y = noise(64, features=10)
    fails = _InWorkers(_raise)
    model = Sequential(Dense(10, 10), fails, Dense(10, 10)).train()
    with processes.on_processes(model):
        with pytest.raises(ArithmeticError):
            shards.forward_backward(model, CrossEntropyLoss(), x, y)
        fails.action = lambda layer: None
        shards.forward_backward(model, CrossEntropyLoss(), x, y)
    assert len(groups) == 2


def test_what_a_worker_prints_reaches_the_callers_output_when_it_is_a_pipe(tmp_path):
    script = tmp_path / "prints.py"
    script.write_text(
        "import numpy as np, npconvnet\n"
        "from npconvnet.layers import Dense, Layer\n"
        "class Prints(Layer):\n"
        "    samplewise = True\n"
        "    def forward(self, x):\n"
        "        print('a forward pass')\n"
        "        return x\n"
        "    def backward(self, grad_output):\n"
        "        return grad_output\n"
        "import sys\n"
        "npconvnet.processes.AVAILABLE = sys.argv[1] == 'processes'\n"
        "npconvnet.set_num_threads(2)\n"
        "model = npconvnet.Sequential(Dense(4, 4), Prints(), Dense(4, 2))\n"
        "model.compile(optimizer='sgd', loss='cross_entropy')\n"
        "x = np.random.default_rng(0).random((64, 4), dtype=np.float32)\n"
        "model.fit(x, np.arange(64) % 2, epochs=1, batch_size=32, verbose=0)\n")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    printed = {}
    for transport in ("processes", "threads"):
        done = subprocess.run([sys.executable, str(script), transport], capture_output=True, text=True,
                              env=environment, timeout=120, check=True)
        printed[transport] = done.stdout.count("a forward pass")
    assert printed["processes"] == printed["threads"] >= 4      # two batches, two shards each


class _RecordsTheBatch(Callback):
    def on_batch_end(self, batch, logs=None):
        self.model.last_batch = batch           # an attribute of the model, not of its layers


def test_the_workers_are_not_forked_again_for_an_attribute_of_the_model_set_at_every_step(groups):
    x, y = noise(128)
    fitted(lambda: zoo.get("convnet"), x, y, callbacks=[_RecordsTheBatch()])
    assert len(groups) == 1


class _KeepsItsInput(npconvnet.layers.Layer):
    """The identity, keeping a copy of its last input: a new array at every step."""

    samplewise = True

    def forward(self, x):
        self.last_input = x.copy()
        return x

    def backward(self, grad_output):
        return grad_output


def test_the_workers_are_not_forked_again_for_a_layers_array_replaced_at_every_step(groups):
    x, y = noise(128, features=10)
    fitted(lambda: Sequential(Dense(10, 10), _KeepsItsInput(), Dense(10, 10)), x, y)
    assert len(groups) <= 2         # once more after the first step, which added the attribute


def test_a_warning_of_a_class_defined_in_a_function_reaches_the_caller(groups):
    class LocalWarning(UserWarning):
        pass

    def warn_locally(layer):
        warnings.warn("a local kind of warning", LocalWarning)
    x, y = noise(64, features=10)
    with pytest.warns(UserWarning, match="a local kind of warning"):
        fitted(lambda: Sequential(Dense(10, 10), _InWorkers(warn_locally), Dense(10, 10)), x, y)
