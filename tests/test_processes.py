"""npconvnet.processes: fit's shards on worker processes forked for each epoch. They give the
threads' bits, end with the epoch, see a network changed between steps, and report a failing
or dying worker in the caller. (That the results agree with one thread, and that a failing
shard leaves the next fit intact, is tested with the threads, on both: test_threads.py.)"""

import os
import threading

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
    with processes.on_processes(model, loss := CrossEntropyLoss()):
        shards.forward_backward(model, loss, x, y)
        shards.forward_backward(model, loss, x, y)
    assert len(groups) == 1


class _ChangeAfterFirstBatch(Callback):
    """Changes the model after the first batch of each epoch: ``change(model)``."""

    def __init__(self, change):
        super().__init__()
        self.change = change

    def on_batch_end(self, batch, logs=None):
        if batch == 0:
            self.change(self.model)


@pytest.mark.parametrize("change", [
    lambda model: setattr(model.layers[1], "negative_slope", 0.5),
    lambda model: setattr(model.layers[0].weight, "data", model.layers[0].weight.data * 0.5),
    lambda model: model.layers[0].weight.data.__imul__(0.5),
], ids=["an option", "a parameter's array replaced", "a parameter changed in place"])
def test_a_network_changed_between_two_steps_reaches_the_workers(change, groups, threads):
    x, y = noise(96, features=12)

    def make_model():
        return Sequential(Dense(12, 16), LeakyReLU(0.01), Dense(16, 10))
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
