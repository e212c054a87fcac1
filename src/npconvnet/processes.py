"""Worker processes for the shards of a training batch: every core, without the GIL.

Threads share the cores only as far as their Python code between NumPy calls lets them: the GIL
runs that code one thread at a time, and a training step of a small network is mostly such
code (convnet trained 0.9-1.4x faster on two threads than on one, where two processes, each
training on its own, reach 1.8x together). Inside an :func:`on_processes` block (``fit`` opens one around each epoch), the shards of
each batch (``npconvnet.shards``) run on processes instead: the caller's process takes the
first shard on its own network, and each of the others goes to a worker process forked from it,
which holds a copy of the network as it was at the fork.

A :class:`ProcessGroup` offers the interface of a ``shards.ThreadGroup``, over pipes: at each
step the caller sends every worker the loss, the values of the network's arrays (weights,
buffers, any array a layer keeps), the state of the global generator (``npconvnet.rng``) and
its shard of the batch, the arrays' memory through a buffer shared with the worker; at batch
normalization each member's ``allreduce_sum`` goes through the caller, which adds the shards'
arrays in shard order, as the threads do (the same bits); at the end each worker sends its
result back through another shared buffer (its shard's loss, outputs and gradients) with the
warnings it raised, which the caller raises again. Dropout's noise for the whole batch
(``shared``) is drawn by every shard alike, from the generator in the same state, as the ranks
of an MPI run draw it: sending it would cost more than drawing it (vgg-mini: 2.7 MB a step).

The workers are forked at the first step of the block that needs them and end with it; they are
forked again when the network's layers have changed since (a layer or option replaced, a mode
switched, an array added: ``Layer.definition``; arrays replaced by others are not a change, their
values travel at every step). An exception in a worker
is raised in the caller with the worker's traceback; a worker that dies, or an exception in the
caller (a KeyboardInterrupt included), ends the workers. A worker ignores Ctrl-C (its caller
stops it) and leaves when its caller does (its pipe closes, or its parent is gone). Where a
fork fails (a limit on processes, say), the block's shards run on threads, with a warning.

Processes need ``os.fork`` as Linux has it (elsewhere the shards run on threads: macOS's and
Windows' processes are spawned, which would import everything again and copy the network and
data over).
"""

import collections
import contextlib
import mmap
import os
import pickle
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
from .parameter import Parameter

#: Where shards may run on worker processes: os.fork, on Linux.
AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "fork")

#: The caller waits this long for a worker's message: only a worker that skipped a collective
#: call (or hangs) keeps it waiting so long.
TIMEOUT_SECONDS = 300

#: A worker told to leave is killed if it is still there after this long.
EXIT_SECONDS = 5

#: A process waiting for a message polls for it this long before it sleeps: a sleeping process
#: is woken late (on a virtual machine a tenth of a millisecond to a millisecond), at every
#: message of a step of a few milliseconds. Between two polls it yields its core to any other
#: process that wants it. Two cores, training steps at batch 128: convnet 10% faster than
#: without polling on idle cores, vgg-mini as fast with another process busy on one of them
#: (polling 5 ms made it 8% slower there).
SPIN_SECONDS = 0.001

#: A waiting worker checks this often that its caller is still there.
PARENT_CHECK_SECONDS = 1.0

#: What every error of shards out of step says.
_SAME_CALLS = "every shard must make the same collective calls (batch normalization, dropout) in the same order"

#: Each worker's two shared buffers hold a step's arrays (the network's and its shard's; the
#: gradients back) with this much room to spare; what does not fit goes through the pipe.
BUFFER_MARGIN = 0.25

# Python 3.12 warns of fork() in a process with threads (BLAS's, the thread pool's): they are
# idle between calls, and a worker runs NumPy and npconvnet alone.
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning,
                        module=__name__)

_lock = threading.Lock()
_blocks = {}        # id(network) -> the _Block of the on_processes block open for that network
_connections = set()  # the caller's ends of every live worker's pipe: a new worker closes them all
_buffers = set()      # every live worker's shared buffers: a new worker closes the others' too
_raised_in_workers = {}  # the warnings registry of those raised again in the caller: each is shown once


class _Block:
    def __init__(self, network):
        self.network, self.group, self.failed = network, None, False


@contextlib.contextmanager
def on_processes(network):
    """Inside the block, :func:`run_shards` runs the shards of ``network`` on worker processes; they
    end with the block. A block inside another one for the same network (or where processes
    are not :data:`AVAILABLE`) changes nothing."""
    key = id(network)
    with _lock:
        opened = AVAILABLE and key not in _blocks
        if opened:
            _blocks[key] = _Block(network)
    try:
        yield
    finally:
        if opened:
            with _lock:
                block = _blocks.pop(key)
            if block.group is not None:
                block.group.close()


def run_shards(network, function, loss, shards):
    """:meth:`ProcessGroup.run` of ``function`` on the ``shards`` of a batch, on the workers of
    ``network``'s :func:`on_processes` block (forked now when there are none yet, too few, or
    when the network has changed since their fork), or None: outside such a block, or where
    forking failed in it."""
    block = _blocks.get(id(network))
    if block is None or block.network is not network or block.failed:
        return None
    definition = _definition(network)
    current = block.group
    if current is not None and (current.closed or current.size < len(shards) or not current.made_from(definition)):
        current.close()
        current = block.group = None
    if current is None:
        try:
            current = block.group = ProcessGroup(network, len(shards), definition, *_buffer_bytes(definition, shards))
        except OSError as error:
            block.failed = True
            warnings.warn(f"npconvnet: could not fork the worker processes for the shards of a training batch "
                          f"({error}); they run on threads until the end of the epoch", RuntimeWarning,
                          stacklevel=3)
            return None
    return current.run(function, loss, shards, definition)


class ProcessGroup:
    """The caller's process and ``size - 1`` worker processes forked from it, each holding a
    copy of ``network``: the shards of a batch, as a process group.

    :meth:`run` gives each shard's ``function(member, network, loss, *arguments)``; a
    ``member`` (the shard's ``process_group``, as a ``shards.ThreadGroup``'s) has ``shard``
    ``(start, stop, total)``, ``allreduce_sum(array)`` (the shards' arrays added in shard order,
    by the caller: every shard gets the same bits), ``shared(function)`` (``function()``, which
    every shard computes alike from the global generator, in the caller's state at the start of
    the step, and from the network's arrays, the caller's) and ``barrier()``.
    """

    def __init__(self, network, size, definition, steps_bytes, results_bytes):
        self.network, self.size, self.closed = network, size, False
        self._definition = definition
        self._workers = []
        try:
            for index in range(1, size):
                self._workers.append(_Worker.fork(index, network, steps_bytes, results_bytes))
        except BaseException:
            self.close(kill=True)
            raise

    def made_from(self, now):
        """Whether the network's layers, whose definition is ``now`` (:func:`_definition`), are
        still as they were when the workers were forked: the same layers, attributes and
        options, and arrays where there were arrays (their values are sent at every step)."""
        return len(now) == len(self._definition) and all(
            owner is other_owner and name == other_name
            and (value is other_value or isinstance(value, np.ndarray) and isinstance(other_value, np.ndarray))
            for (owner, name, value), (other_owner, other_name, other_value) in zip(self._definition, now))

    def run(self, function, loss, shards, definition):
        """``[function(member, network, loss, *arguments) for (shard, arguments) in shards]``: the
        first in the caller (on its network and ``loss``, on one thread: the cores are the
        workers'), each other on a worker (on its copy of the network, the caller's arrays in
        the network's ``definition`` now loaded first, and on a copy of ``loss``). ``shards``
        holds ``((start, stop, total), arguments)`` for at most :attr:`size` shards; ``function``
        is a module-level function (the workers find it by name)."""
        workers = self._workers[:len(shards) - 1]
        step = ("run", function, loss, [array for _, _, array in _arrays(definition)], rng.get_state())
        try:
            for worker, (shard, arguments) in zip(workers, shards[1:]):
                worker.send(step + (shard, arguments), shared=True)
            shard, arguments = shards[0]
            with parallel.one_thread_here():
                first = function(_Caller(workers, shard), self.network, loss, *arguments)
            results = [first]
            for worker in workers:
                result, raised = worker.receive("result")
                for message, category, filename, lineno in raised:
                    warnings.warn_explicit(message, category, filename, lineno, registry=_raised_in_workers)
                results.append(result)
            return results
        except BaseException:
            self.close(kill=True)       # a worker may be left inside the step: none is trusted again
            raise

    def close(self, kill=False):
        """End the workers: told to leave (killed if they have not after ``EXIT_SECONDS``), or
        killed at once; killed at once, too, when the wait is interrupted."""
        workers, self._workers, self.closed = self._workers, [], True
        try:
            for worker in workers:
                worker.leave()
            for worker in workers:
                worker.wait(timeout=0 if kill else EXIT_SECONDS)
        except BaseException:
            for worker in workers:
                worker.wait(timeout=0)
            raise


def _definition(network):
    """The definition of ``network``'s layers (``Layer.definition``, buffers included)."""
    return [entry for layer in network.layers for entry in layer.definition()]


def _buffer_bytes(definition, shards):
    """The sizes of a worker's two shared buffers, for its steps and its results:
    ``BUFFER_MARGIN`` more than a step's arrays (the network's and those of the largest shard's
    arguments) and than the parameters' gradients, at least a mebibyte each."""
    arrays = _arrays(definition)
    arguments = max(sum(value.nbytes for value in arguments if isinstance(value, np.ndarray))
                    for _, arguments in shards)
    steps = sum(array.nbytes for _, _, array in arrays) + arguments
    gradients = sum(array.nbytes for owner, _, array in arrays if isinstance(owner, Parameter))
    return tuple(max(2**20, int(size * (1 + BUFFER_MARGIN))) for size in (steps, gradients))


#: A message whose arrays' memory is in a shared buffer: ``data`` is its pickle (protocol 5),
#: ``placed`` for each of its out-of-band buffers, in order, ``(offset, size)`` in the shared
#: buffer or, for one that did not fit, its bytes.
_OutOfBand = collections.namedtuple("_OutOfBand", "data placed")


def _send_through(connection, shared, message):
    """Send ``message`` on ``connection``, the memory of its contiguous arrays (pickle's
    out-of-band buffers) copied into ``shared`` where it fits, rather than through the pipe: a
    step's 800 KB of arrays took 2.9 ms to go through the pipe and come back, 0.05 ms to be
    copied. The receiver copies them out at once (:func:`_received`), before it answers, and
    the next message is sent only after its answer."""
    buffers, placed, offset = [], [], 0
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    for buffer in buffers:
        raw = buffer.raw()
        if offset + raw.nbytes <= len(shared):
            shared[offset:offset + raw.nbytes] = raw
            placed.append((offset, raw.nbytes))
            offset += -(-raw.nbytes // 64) * 64         # the next array starts aligned
        else:
            placed.append(raw.tobytes())
    connection.send(_OutOfBand(data, placed))


def _received(message, shared):
    """``message``, or the message an :class:`_OutOfBand` holds, its arrays copied out of
    ``shared``: none of them is a view of it (a layer may keep its input), and an array sent
    read-only arrives read-only."""
    if not isinstance(message, _OutOfBand):
        return message
    with memoryview(shared) as memory:
        buffers = [bytearray(memory[part[0]:part[0] + part[1]]) if isinstance(part, tuple) else bytearray(part)
                   for part in message.placed]
    return pickle.loads(message.data, buffers=buffers)


def _arrays(definition):
    """``(owner, name, array)`` for every array a network's layers hold as an attribute, from
    their ``definition`` (weights as their Parameters' ``.data``, buffers, arrays a layer
    keeps), in order: what a worker's copy takes over at each step."""
    arrays = []
    for owner, name, value in definition:
        if isinstance(owner, Parameter):
            arrays.append((owner, "data", value))
        elif isinstance(value, np.ndarray) and vars(owner).get(name) is value:
            arrays.append((owner, name, value))
    return arrays


class _Worker:
    """The caller's end of one worker process."""

    def __init__(self, index, pid, connection, steps, results):
        self.index, self.pid, self.connection = index, pid, connection
        self.steps, self.results = steps, results      # the shared buffers (see _send_through)
        self.status = None

    @classmethod
    def fork(cls, index, network, steps_bytes, results_bytes):
        caller = os.getpid()
        for stream in (sys.stdout, sys.stderr):     # or the worker would write the buffered text too
            with contextlib.suppress(Exception):
                stream.flush()
        # Ctrl-C waits until the worker ignores it: none may unwind the caller's stack in the worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        pid = None
        try:
            # Under the lock, so that no other thread's worker is forked holding this pipe's ends.
            with _lock:
                ours, theirs = Pipe()
                steps, results = mmap.mmap(-1, steps_bytes), mmap.mmap(-1, results_bytes)     # shared with the fork
                pid = os.fork()
                if pid == 0:
                    _worker_life(theirs, ours, index, network, caller, steps, results)
                _connections.add(ours)
                _buffers.update((steps, results))
                theirs.close()
            return cls(index, pid, ours, steps, results)
        except BaseException:
            if pid:             # a KeyboardInterrupt right after the fork: no worker is left behind
                cls(index, pid, ours, steps, results).wait(timeout=0)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def send(self, message, shared=False):
        """Send ``message`` to the worker; with ``shared``, its arrays through the shared
        buffer of its steps."""
        try:
            if shared:
                _send_through(self.connection, self.steps, message)
            else:
                self.connection.send(message)
        except (OSError, ValueError):
            raise self._ended() from None

    def receive(self, expected):
        """The payload of the worker's next message, which must be of kind ``expected``; the
        worker's exception if it failed."""
        try:
            if not _arrived(self.connection, TIMEOUT_SECONDS):
                raise RuntimeError(f"the worker process of shard {self.index} of the batch sent nothing for "
                                   f"{TIMEOUT_SECONDS} s: {_SAME_CALLS}")
            kind, *payload = _received(self.connection.recv(), self.results)
        except (EOFError, OSError):
            raise self._ended() from None
        if kind == "error":
            error, text = payload
            error.add_note(f"(raised in the worker process of shard {self.index} of the batch)\n{text}")
            raise error
        if kind != expected:
            raise RuntimeError(f"the worker process of shard {self.index} of the batch sent a {kind!r} where the "
                               f"caller expected a {expected!r}: {_SAME_CALLS}")
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
        with _lock:
            _connections.discard(self.connection)
            _buffers.difference_update((self.steps, self.results))
        self.connection.close()
        self.steps.close()
        self.results.close()

    def wait(self, timeout=EXIT_SECONDS):
        """Reap the worker, killing it if it is still there after ``timeout`` seconds. Its exit
        status stays None where someone else reaped it (SIGCHLD ignored, say)."""
        deadline = time.monotonic() + timeout
        try:
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
        except ChildProcessError:
            pass                # reaped already: gone


def _arrived(connection, timeout):
    """Whether a message is there within ``timeout`` seconds, polled for at first
    (``SPIN_SECONDS``), then slept for."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        if connection.poll():
            return True
        os.sched_yield()
    return connection.poll(timeout)


def _from_caller(connection, caller, steps=None):
    """The caller's next message (a step's arrays come through the shared buffer ``steps``);
    the worker leaves if its caller is gone."""
    try:
        while not _arrived(connection, PARENT_CHECK_SECONDS):
            if os.getppid() != caller:
                _leave(1)
        return _received(connection.recv(), steps)
    except (EOFError, OSError):
        _leave(0)


def _leave(status):
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _worker_life(connection, callers_end, index, network, caller, steps, results):
    """The forked worker, from the fork to its exit: it never returns into the caller's code."""
    global _lock, AVAILABLE
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        callers_end.close()
        for other in _connections:      # other workers' pipes: they must see their caller leave
            other.close()
        for other in _buffers - {steps, results}:
            other.close()
        # The caller's lock (held at the fork) and blocks are not the worker's: inside it, shards
        # run on threads.
        _lock, AVAILABLE = threading.Lock(), False
        _blocks.clear()
        _connections.clear()
        _buffers.clear()
        _serve(connection, index, network, caller, steps, results)
        status = 0
    except (BrokenPipeError, ConnectionResetError):
        pass                    # the caller closed the pipe: it has given up on this worker
    except BaseException:
        traceback.print_exc()
    finally:
        _leave(status)


def _serve(connection, index, network, caller, steps, results):
    """A worker's life: run what the caller sends, until it says to leave or is gone. The
    steps come through the shared buffer ``steps``, the results go back through ``results``."""
    parallel.set_num_threads(1)
    while (message := _from_caller(connection, caller, steps)) is not None:
        _, function, loss, arrays, generator, shard, arguments = message
        try:
            for (owner, name, target), values in zip(_arrays(_definition(network)), arrays, strict=True):
                # In place where it can be (a layer's workspaces may hold views of it).
                if target.shape == values.shape and target.dtype == values.dtype and target.flags.writeable:
                    target[...] = values
                else:
                    setattr(owner, name, values)
            rng.set_state(generator)
            with warnings.catch_warnings(record=True) as raised:
                warnings.simplefilter("always")     # the caller's filters decide which to show
                result = function(_InWorker(connection, index, shard, caller), network, loss, *arguments)
            reply = ("result", result, [(str(caught.message), _sendable(caught.category), caught.filename,
                                         caught.lineno) for caught in raised])
        except BaseException as error:
            reply = _error_reply(error)
        try:
            if reply[0] == "result":
                _send_through(connection, results, reply)
            else:
                connection.send(reply)
        except Exception as error:          # a result or warning that cannot be pickled
            connection.send(_error_reply(RuntimeError(f"the worker could not send its result back: {error}")))


def _sendable(category):
    """A warning's category, or UserWarning for one that cannot be pickled (a class defined in a
    function)."""
    try:
        pickle.dumps(category)
        return category
    except Exception:
        return UserWarning


def _error_reply(error):
    return ("error", dist.picklable_error(error), "".join(traceback.format_exception(error)))


class _Member:
    #: Every member's ``allreduce_sum`` gives the same bits (the caller's sum), and every
    #: worker's layers hold the caller's buffers (sent at every step).
    identical_sums = True

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
            dtype, shape, data = worker.receive("sum")
            if (dtype, shape) != (total.dtype.str, total.shape):
                raise RuntimeError(f"the worker process of shard {worker.index} of the batch sent an array of "
                                   f"{np.dtype(dtype)} {shape} to add to this shard's {total.dtype} {total.shape}: "
                                   f"{_SAME_CALLS}")
            total += np.frombuffer(data, total.dtype).reshape(shape)
        for worker in self.workers:
            worker.send(total.tobytes())
        return total


class _InWorker(_Member):
    """A worker's member: it sends its arrays to the caller and waits for the result."""

    def __init__(self, connection, index, shard, caller):
        self.connection, self.index, self.shard, self.caller = connection, index, shard, caller

    def __repr__(self):
        return f"ProcessGroup member(shard {self.index}: samples {self.shard})"

    def allreduce_sum(self, array):
        # Raw bytes both ways, with the dtype and shape to check them by: pickling the arrays
        # themselves tripled the round trip of 64 floats between two processes (80 against 27
        # microseconds).
        array = np.asarray(array, order="C")
        self.connection.send(("sum", array.dtype.str, array.shape, array.tobytes()))
        total = _from_caller(self.connection, self.caller)
        if total is None:
            _leave(0)           # told to leave in the middle of the step: the caller has given up on it
        return np.frombuffer(total, array.dtype).reshape(array.shape).copy()
