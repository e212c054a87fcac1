"""Data parallelism inside one training step: each thread's share of the cores takes a shard of
the batch.

In training a layer's own parts (``npconvnet.parallel``) are small, a tenth of a millisecond to
ten milliseconds, and the threads hand them over and wait for each other at every layer:
vgg-mini trained only 1.3x faster on two threads than on one (batch 128).
:func:`forward_backward` hands over whole shards of the batch instead (``parallel.split``:
contiguous, of nearly equal sizes, one for each of :func:`parallel.get_num_threads`). Each
shard goes through forward, the loss and backward (:func:`_shard_step`), and the layers' own
calls run inline inside it. Where they run:

* Inside ``fit`` (an ``npconvnet.processes.on_processes`` block), on processes: the first
  shard in the caller, on the network itself, each other one in a worker process forked from
  it, on its copy of the network. No GIL is shared, so the small networks gain from the cores
  too (two cores, batch 128: convnet and lenet5 trained 1.35-1.4x faster than on one thread,
  where threads gave them 0.9-1.1x; benchmarks/speed.py).
* Elsewhere (a training loop of one's own, or where processes are not available), on threads:
  the first shard on the network, each other one on a twin of its layers
  (``Layer.twin(own_gradients=True)``: the same weights, a ``.grad`` of its own).

The shards meet only where the whole batch is needed, as the ranks of a distributed run do
(``npconvnet.distributed``), through a group that offers the same interface: a
:class:`ThreadGroup` here, a ``processes.ProcessGroup`` there:

* Batch normalization: each shard's BatchNorm layers have the shard's member of the group as
  their ``process_group``, whose ``allreduce_sum`` adds the shards' arrays in shard order: the
  statistics are those of the whole batch, and so are the running statistics, which the
  network's own layers (the first shard's) keep.
* Dropout: the global generator is one, so the first shard draws the whole batch's noise from
  it, as one thread would, while the others wait (``shared``); each shard keeps its slice. The
  masks, and the generator after them, do not depend on the number of threads.
* Gradients: a shard's loss is the mean over its own samples, its gradient scaled by its share
  of the batch (``distributed.backward_shard``); the parameters' gradients are then summed over
  the shards in shard order (the first shard's first) into the network's own Parameters (on
  threads each thread sums a share of the parameters).

The same number of threads gives the same bits every time, on threads and on processes alike;
other numbers agree with one thread to float32 rounding (the sums are added in another order).
An exception in any shard (a KeyboardInterrupt in the caller's included) stops the others; it
is raised in the caller once every shard has stopped.
"""

import copy
import threading

import numpy as np

from . import distributed as dist
from . import parallel, processes
from .layers import Sequential

#: The fewest samples of a batch each shard holds; a smaller batch trains as one shard.
MIN_SHARD_SAMPLES = 2

#: A shard that waits this long for the others at a barrier stops the step: only a shard that
#: skipped a collective call can keep the others waiting so long.
BARRIER_TIMEOUT_SECONDS = 300


#: Groups started by two threads at once (two fits) share the pool's workers: each could hold a
#: worker that the other's barrier waits for. One group runs at a time.
_one_group_at_a_time = threading.Lock()


class ThreadGroup:
    """The shards of one batch, each run on a thread of its own, as a process group.

    Args:
        slices: each shard's slice of the batch, in order (``parallel.split(total)``).
        total: the samples of the whole batch.

    Attributes:
        members: one member per shard, the ``process_group`` of that shard's layers:
            ``member.shard`` is ``(start, stop, total)``, ``member.allreduce_sum(array)`` the
            sum of every shard's ``array`` (added in shard order: every shard gets the same
            bits), ``member.shared(function)`` the first shard's ``function()`` for every shard.
    """

    def __init__(self, slices, total):
        self.size = len(slices)
        self.members = [_Member(self, index, (part.start, part.stop, total)) for index, part in enumerate(slices)]
        self._barrier = threading.Barrier(self.size, timeout=BARRIER_TIMEOUT_SECONDS)
        # Two sets of slots, for calls of even and odd number: a shard may write the next
        # call's value while another still reads this call's.
        self._slots = [[None] * self.size, [None] * self.size]
        self._failure = None
        self._lock = threading.Lock()

    def run(self, function):
        """``[function(member) for member in members]``, each on a thread of its own, at once
        (``parallel.run``: the caller's thread runs the first). The first exception in any of
        them is raised here, once every one has stopped."""
        def guarded(member):
            try:
                return function(member)
            except BaseException as error:
                self._fail(error)
                raise
        try:
            with _one_group_at_a_time:
                return parallel.run(guarded, self.members)
        except BaseException as error:
            self._barrier.abort()           # a KeyboardInterrupt outside the shards' calls, too
            failure = self._failure
            if failure is None or failure is error:
                raise
            raise failure from None

    def _fail(self, error):
        with self._lock:
            if self._failure is None and not isinstance(error, threading.BrokenBarrierError):
                self._failure = error
        self._barrier.abort()

    def _wait(self):
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            if self._failure is None:
                raise RuntimeError(f"a shard of the batch waited {BARRIER_TIMEOUT_SECONDS} s for the others at a "
                                   "barrier: every shard must make the same collective calls (batch "
                                   "normalization, dropout) in the same order") from None
            raise

    def _exchange(self, member, value):
        """Every shard's ``value`` of this call, in shard order, once every shard has given its."""
        slots = self._slots[member.calls % 2]
        member.calls += 1
        slots[member.index] = value
        self._wait()
        return slots


class _Member:
    """One shard's view of a :class:`ThreadGroup` (see there)."""

    #: Every member's ``allreduce_sum`` gives the same bits, and every shard's layers hold the
    #: first shard's buffers at the start of a step (batch normalization may then choose its
    #: exchanges by the sums, taken about its running mean).
    identical_sums = True

    def __init__(self, group, index, shard):
        self.group, self.index, self.shard = group, index, shard
        self.calls = 0

    def __repr__(self):
        return f"ThreadGroup member(shard {self.index} of {self.group.size}: samples {self.shard})"

    def allreduce_sum(self, array):
        """The element-wise sum of ``array`` over the shards (a new contiguous array of its
        dtype and shape), added in shard order."""
        arrays = self.group._exchange(self, np.asarray(array))
        total = np.array(arrays[0], order="C")
        for other in arrays[1:]:
            total += other
        return total

    def shared(self, function):
        """The first shard's ``function()`` (called in its thread alone), for every shard."""
        return self.group._exchange(self, function() if self.index == 0 else None)[0]

    def barrier(self):
        """Wait until every shard has come here."""
        self.group._wait()


def shard_slices(network, length):
    """The shards :func:`forward_backward` cuts a batch of ``length`` samples into, one per
    thread (``parallel.split``), or None for the whole batch in one piece: on one thread, for a
    network other than a ``Sequential``, when a shard would hold fewer than
    ``MIN_SHARD_SAMPLES`` samples (or than a layer's ``min_shard_size``), or when a layer may
    mix the samples: one neither ``samplewise`` nor meeting the other shards through a
    ``process_group`` (a custom layer that does not say so; a custom layer drawing from the
    global generator in training needs a ``process_group`` too, as Dropout has)."""
    if parallel.threads_here() < 2 or not isinstance(network, Sequential):
        return None
    # The other shards run the layers in a plain Sequential: a model of its own forward or backward
    # (a subclass's) would be skipped there.
    if type(network).forward is not Sequential.forward or type(network).backward is not Sequential.backward:
        return None
    if not all(layer.samplewise or hasattr(layer, "process_group") for layer in network.walk()):
        return None
    slices = parallel.split(length)
    if len(slices) < 2 or length < len(slices) * max(MIN_SHARD_SAMPLES, dist.min_shard_size(network)):
        return None
    return slices


def forward_backward(network, loss, x, target, sample_weight=None):
    """``(loss value, outputs)`` of a training step's forward and backward on the batch ``x``:
    ``loss(network.forward(x), target, sample_weight)`` and ``network.backward`` of its gradient
    (``input_grad=False``), which leaves in every parameter's ``.grad`` the gradient of the
    batch's loss; the weight penalties are the caller's. On several threads the batch goes in
    shards, one per thread (see the module docstring, and :func:`shard_slices`), on worker
    processes inside an ``npconvnet.processes.on_processes(network)`` block, else on
    threads; on one thread these are the calls made.

    Args:
        network: a ``Sequential`` in training mode (a model).
        loss: a loss object (``npconvnet.losses``), called on each shard's outputs.
        x: the batch ``(N, ...)``, as the network's first layer takes it.
        target, sample_weight: the loss's targets and the samples' weights (None: all 1),
            arrays of N rows.
    """
    slices = shard_slices(network, len(x))
    if slices is None:
        outputs = network.forward(x)
        value = _loss(loss, outputs, target, sample_weight)
        network.backward(loss.backward(), input_grad=False)
        return value, outputs
    total = len(x)
    shards = [((part.start, part.stop, total),
               (x[part], target[part], None if sample_weight is None else sample_weight[part],
                (part.stop - part.start) / total)) for part in slices]
    results = processes.run_shards(network, _shard_step, loss, shards)
    if results is None:
        results = _on_threads(network, loss, slices, shards)
    else:
        for parameter, grads in zip(network.parameters(), zip(*(grads for _, _, grads in results))):
            if not any(grad is None for grad in grads):
                parameter.grad = _sum(grads)
    value = 0.0
    for part, (shard_value, _, _) in zip(slices, results):
        value += shard_value * (part.stop - part.start) / total
    return value, np.concatenate([outputs for _, outputs, _ in results])


def _shard_step(member, network, loss, x, target, sample_weight, share):
    """One shard's forward, loss and backward (its ``share`` of the batch's gradient), with
    ``member`` as the ``process_group`` of its layers: ``(loss value, outputs, the parameters'
    gradients)``."""
    with dist.attached(network, member):
        outputs = network.forward(x)
        value = _loss(loss, outputs, target, sample_weight)
        dist.backward_shard(network, loss, share)
    return value, outputs, [parameter.grad for parameter in network.parameters()]


def _on_threads(network, loss, slices, shards):
    """The shards' :func:`_shard_step` results, each shard on a thread and on a twin of the
    network; the gradients summed into the network's own Parameters."""
    networks = [network] + [Sequential(twins) for twins in network._layer_twins(len(slices) - 1, own_gradients=True)]
    for twin_network in networks[1:]:       # the network's buffers, as the worker processes have them
        for layer, twin in zip(network.walk(), twin_network.walk()):
            for name in layer.buffer_names:
                setattr(twin, name, getattr(layer, name))
    shard_losses = [loss] + [copy.deepcopy(loss) for _ in slices[1:]]
    parameters = [shard_network.parameters() for shard_network in networks]
    owners = _owners([parameter.size for parameter in parameters[0]], len(slices))

    def step(member):
        index = member.index
        result = _shard_step(member, networks[index], shard_losses[index], *shards[index][1])
        member.barrier()
        for position in owners[index]:
            grads = [shard_parameters[position].grad for shard_parameters in parameters]
            if not any(grad is None for grad in grads):
                parameters[0][position].grad = _sum(grads)
        return result

    return ThreadGroup(slices, shards[0][0][2]).run(step)


def _sum(arrays):
    """The arrays added in order (the first shard's first): the same bits on threads and
    processes."""
    total = arrays[0] + arrays[1]
    for other in arrays[2:]:
        total += other
    return total


def _loss(loss, outputs, target, sample_weight):
    return loss(outputs, target) if sample_weight is None else loss(outputs, target, sample_weight=sample_weight)


def _owners(sizes, count):
    """The positions of the parameters each of ``count`` threads sums: contiguous runs of
    nearly equal numbers of entries."""
    total = max(1, sum(sizes))
    owners = [[] for _ in range(count)]
    before = 0
    for position, size in enumerate(sizes):
        owners[min(count - 1, (2 * before + size) * count // (2 * total))].append(position)
        before += size
    return owners
