"""Worker processes for the shards of a training batch: every core, without the GIL.

Threads share the cores only as far as their Python code between NumPy calls lets them: the GIL
runs that code one thread at a time, and a training step of a small network is mostly such
code (convnet trained 1.1-1.4x faster on two threads than on one, where two processes reach
1.9x). Inside an :func:`on_processes` block (``fit`` opens one around its epochs), the shards of
each batch (``npconvnet.shards``) run on processes instead: the caller's process takes the
first shard on its own network, and each of the others goes to a worker process forked from it,
which holds a copy of the network and the loss as they were at the fork.

A :class:`ProcessGroup` offers the interface of a ``shards.ThreadGroup``, over pipes: at each
step the caller sends every worker the current weights, the state of the global generator
(``npconvnet.rng``) and its shard of the batch; at batch normalization each member's
``allreduce_sum`` goes through the caller, which adds the shards' arrays in shard order, as the
threads do (the same bits); at the end each worker sends its result back (its shard's loss,
outputs and gradients). Dropout's noise for the whole batch (``shared``) is drawn by every
shard alike, from the generator in the same state, as the ranks of an MPI run draw it: sending
it would cost more than drawing it (vgg-mini: 2.7 MB a step).

The workers are forked at the first step of the block that needs them and end with it; they are
forked again when the network has changed since (a layer, option, mode or parameter replaced:
``Layer.definition``, as the threads' twins are made again). The weights travel at every step;
other arrays a layer keeps are the fork's copies. An exception in a worker is raised in the
caller with the worker's traceback; a worker that dies, or an exception in the caller
(a KeyboardInterrupt included), ends the workers. A worker ignores Ctrl-C (its caller stops it)
and leaves when its caller does (its pipe closes).

Processes need ``os.fork`` as Linux has it (elsewhere the shards run on threads: macOS's and
Windows' processes are spawned, which would import everything again and copy the network and
data over).
"""

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from multiprocessing.connection import Pipe

import numpy as np

from . import distributed as dist
from . import parallel, rng
from .layers.base import same_definition

#: Where shards may run on worker processes: os.fork, on Linux.
AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "fork")

#: The caller waits this long for a worker's message: only a worker that skipped a collective
#: call (or hangs) keeps it waiting so long.
TIMEOUT_SECONDS = 300

#: A worker told to leave is killed if it is still there after this long.
EXIT_SECONDS = 5

#: A process waiting for a message polls for it this long before it sleeps: a sleeping process
#: is woken late (on a virtual machine a tenth of a millisecond to a millisecond), at every
#: message of a step of a few milliseconds, and the waiting core has nothing else to do
#: (convnet's fit at batch 64 on two cores: 10% faster).
SPIN_SECONDS = 0.005

_lock = threading.Lock()
_blocks = {}    # id(network) -> the _Block of the on_processes block open for that network


class _Block:
    def __init__(self, network, loss):
        self.network, self.loss, self.group = network, loss, None


@contextlib.contextmanager
def on_processes(network, loss):
    """Inside the block, :func:`group` gives the shards of ``network`` with ``loss`` worker
    processes; they end with the block. A block inside another one for the same network (or
    where processes are not :data:`AVAILABLE`) changes nothing."""
    key = id(network)
    with _lock:
        opened = AVAILABLE and key not in _blocks
        if opened:
            _blocks[key] = _Block(network, loss)
    try:
        yield
    finally:
        if opened:
            with _lock:
                block = _blocks.pop(key)
            if block.group is not None:
                block.group.close()


def group(network, loss, size):
    """The :class:`ProcessGroup` of at least ``size`` members for ``network`` and ``loss``
    inside their :func:`on_processes` block (forked now when there is none yet, or when the
    network has changed since its fork), or None outside such a block."""
    block = _blocks.get(id(network))
    if block is None or block.network is not network or block.loss is not loss:
        return None
    current = block.group
    if current is not None and (current.size < size or not current.made_from(network)):
        current.close()
        current = block.group = None
    if current is None:
        current = block.group = ProcessGroup(network, loss, size)
    return current


class ProcessGroup:
    """The caller's process and ``size - 1`` worker processes forked from it, each holding a
    copy of ``network`` and ``loss``: the shards of a batch, as a process group.

    :meth:`run` gives each shard's ``function(member, network, loss, *arguments)``; a
    ``member`` (the shard's ``process_group``, as a ``shards.ThreadGroup``'s) has ``shard``
    ``(start, stop, total)``, ``allreduce_sum(array)`` (the shards' arrays added in shard
    order), ``shared(function)`` (``function()``, which every shard computes alike from the
    global generator, in the caller's state at the start of the step) and
    ``barrier()``.
    """

    def __init__(self, network, loss, size):
        self.network, self.loss, self.size = network, loss, size
        self._definition = network.definition(buffers=False)
        self._parameters = network.parameters()
        self._workers = []
        try:
            for index in range(1, size):
                self._workers.append(_Worker.fork(index, network, loss, self._workers))
        except BaseException:
            self.close(kill=True)
            raise

    def made_from(self, network):
        """Whether ``network`` is still as it was when the workers were forked."""
        return same_definition(self._definition, network.definition(buffers=False))

    def run(self, function, shards):
        """``[function(member, network, loss, *arguments) for (shard, arguments) in shards]``: the
        first in the caller (on its network and loss, on one thread: the cores are the
        workers'), each other on a worker (on its copies, the caller's weights loaded first).
        ``shards`` holds ``((start, stop, total), arguments)`` for at most :attr:`size` shards;
        ``function`` is a module-level function (the workers find it by name)."""
        workers = self._workers[:len(shards) - 1]
        weights = [parameter.data for parameter in self._parameters]
        generator = rng.get_state()
        try:
            for worker, (shard, arguments) in zip(workers, shards[1:]):
                worker.send(("run", function, weights, generator, shard, arguments))
            shard, arguments = shards[0]
            member = _Caller(workers, shard)
            with parallel.one_thread_here():
                first = function(member, self.network, self.loss, *arguments)
            return [first] + [worker.receive("result")[0] for worker in workers]
        except BaseException:
            self.close(kill=True)       # a worker may be left inside the step: none is trusted again
            raise

    def close(self, kill=False):
        """End the workers: told to leave (killed if they have not after ``EXIT_SECONDS``), or
        killed at once."""
        for worker in self._workers:
            worker.leave()
        for worker in self._workers:
            worker.wait(timeout=0 if kill else EXIT_SECONDS)
        self._workers = []


class _Worker:
    """The caller's end of one worker process."""

    def __init__(self, index, pid, connection):
        self.index, self.pid, self.connection = index, pid, connection
        self.status = None

    @classmethod
    def fork(cls, index, network, loss, earlier):
        ours, theirs = Pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns of fork() in a process with threads (BLAS's, the thread pool's):
            # they are idle between calls, and the worker runs NumPy and npconvnet alone.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            status = 1
            try:
                ours.close()
                for worker in earlier:
                    worker.connection.close()
                _serve(theirs, index, network, loss)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        return cls(index, pid, ours)

    def send(self, message):
        try:
            self.connection.send(message)
        except (OSError, ValueError):
            raise self._ended() from None

    def receive(self, expected):
        """The payload of the worker's next message, which must be of kind ``expected``; the
        worker's exception if it failed."""
        try:
            if not _arrived(self.connection, TIMEOUT_SECONDS):
                raise RuntimeError(f"the worker process of shard {self.index} of the batch sent nothing for "
                                   f"{TIMEOUT_SECONDS} s: every shard must make the same collective calls "
                                   "(batch normalization, dropout) in the same order")
            kind, *payload = self.connection.recv()
        except (EOFError, OSError):
            raise self._ended() from None
        if kind == "error":
            error, text = payload
            error.add_note(f"(raised in the worker process of shard {self.index} of the batch)\n{text}")
            raise error
        if kind != expected:
            raise RuntimeError(f"the worker process of shard {self.index} of the batch sent a {kind!r} where the "
                               f"caller expected a {expected!r}: every shard must make the same collective "
                               "calls (batch normalization, dropout) in the same order")
        return payload

    def _ended(self):
        self.wait(timeout=1)
        how = ("ended" if self.status is None else f"was killed by signal {-self.status}" if self.status < 0
               else f"exited with status {self.status}")
        return RuntimeError(f"the worker process {self.pid} of shard {self.index} of the batch {how} in the "
                            "middle of a training step")

    def leave(self):
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)
        self.connection.close()

    def wait(self, timeout=EXIT_SECONDS):
        """Reap the worker, killing it if it is still there after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if not pid and time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                pid, status = os.waitpid(self.pid, 0)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.001)


def _arrived(connection, timeout):
    """Whether a message is there within ``timeout`` seconds, polled for at first
    (``SPIN_SECONDS``), then slept for."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        if connection.poll():
            return True
    return connection.poll(timeout)


def _serve(connection, index, network, loss):
    """A worker's life: run what the caller sends, until it says to leave or is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parallel.set_num_threads(1)
    parameters = network.parameters()
    while True:
        try:
            _arrived(connection, None)
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, function, weights, generator, shard, arguments = message
        try:
            for parameter, values in zip(parameters, weights):
                parameter.data[...] = values
            rng.set_state(generator)
            result = function(_InWorker(connection, index, shard), network, loss, *arguments)
            reply = ("result", result)
        except BaseException as error:
            reply = ("error", dist.picklable_error(error), "".join(traceback.format_exception(error)))
        connection.send(reply)


class _Member:
    def shared(self, function):
        """``function()``: every shard computes it alike (see :class:`ProcessGroup`)."""
        return function()

    def barrier(self):
        """Wait until every shard has come here."""
        self.allreduce_sum(np.zeros(1))


class _Caller(_Member):
    """The first shard's member: it gathers the workers' arrays and hands out the results."""

    index = 0

    def __init__(self, workers, shard):
        self.workers, self.shard = workers, shard

    def __repr__(self):
        return f"ProcessGroup member(shard 0 of {len(self.workers) + 1}: samples {self.shard})"

    def allreduce_sum(self, array):
        total = np.array(array, order="C")
        for worker in self.workers:
            total += worker.receive("sum")[0]
        for worker in self.workers:
            worker.send(total)
        return total


class _InWorker(_Member):
    """A worker's member: it sends its arrays to the caller and waits for the result."""

    def __init__(self, connection, index, shard):
        self.connection, self.index, self.shard = connection, index, shard

    def __repr__(self):
        return f"ProcessGroup member(shard {self.index}: samples {self.shard})"

    def allreduce_sum(self, array):
        self.connection.send(("sum", np.asarray(array)))
        return self._result()

    def _result(self):
        try:
            _arrived(self.connection, None)
            return self.connection.recv()
        except (EOFError, OSError):
            os._exit(1)         # the caller is gone
