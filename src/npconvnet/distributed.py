"""Data-parallel training over MPI: ``mpirun -n K ...`` runs K processes (ranks), each training
on its own shard of every global batch, with the same weights on every rank after every step.

``fit(..., distributed=True)`` (``npconvnet train --distributed``) makes a :class:`Communicator`
over ``MPI.COMM_WORLD`` and trains through it:

* Batches: the shuffled order of the samples is drawn from the same seeded generator on every
  rank, so every rank knows every global batch; rank r reads only its part of it,
  :meth:`Communicator.split` (contiguous, sizes differing by at most one: a batch of 64 on
  K = 3 ranks is 22 + 21 + 21), from the array or the memory-mapped ``.npy`` file.
* Gradients: the loss of a batch is the mean over its B samples. Rank r computes the mean
  over its own b_r samples and multiplies the loss gradient by its share ``b_r / B`` before
  backward, so that its parameter gradients are its part of the whole batch's; the
  :meth:`~Communicator.allreduce_gradients` sum over the ranks (``MPI.Allreduce`` on a few
  contiguous buckets, as PyTorch's DDP packs them, not one call per parameter) is then the
  gradient one process computes on the whole batch, uneven shards included. Every rank takes
  the same optimizer step.
* Batch normalization (sync BN): ``BatchNorm1D``/``BatchNorm2D`` get the communicator as
  ``process_group`` and sum their statistics over the ranks: the count and the per-channel
  sums give the whole batch's mean, then the sums of squares about that mean its variance
  (the one-process formula, two passes); backward sums ``sum(dL/dy)`` and
  ``sum(dL/dy * (x - mean))`` likewise. The statistics are those of the whole batch.
* Dropout: every rank draws the whole batch's noise from the shared generator and keeps its
  slice (:attr:`Communicator.shard`), so the mask of a sample does not depend on K.
* Validation: each rank scores its part of the validation data; the loss sums and confusion
  matrices are summed over the ranks, so every rank logs the same whole-set scores and the
  callbacks (early stopping, schedules) decide alike.
* Files and output: rank 0 alone prints progress and writes checkpoints (the file a single
  process writes: a run may be resumed with another K) and, in ``npconvnet train``, the
  model, history and pictures.
* Faults: a rank that raises inside a distributed ``fit`` prints the error and calls
  ``MPI.COMM_WORLD.Abort``: mpirun then stops every rank (within seconds) and exits with a
  non-zero status, rather than leaving the others waiting for it forever; a rank killed
  outright is noticed by mpirun itself, which stops the others likewise. Checkpoints are
  written atomically, so the last one stays good.

Equivalence: K ranks with a global batch B give the weights of one process with batch B up
to float32 rounding (the sums are added in another order); on one rank the result is the
same bits. Augmentation is the exception: its random draws are made per batch, so rank r > 0
augments its shard with a generator of its own (seeded from the run's seed, the epoch and r),
which makes a run with augmentation depend on K (it is still reproducible for a given K).

mpi4py is an optional dependency (``pip install "npconvnet[mpi]"``, over an MPI library such
as Open MPI); it is imported when a :class:`Communicator` is made.
"""

import contextlib
import pickle
import sys
import time
import traceback

import numpy as np

#: Gradients are all-reduced in buckets of about this many bytes: few calls, as PyTorch's DDP
#: (whose default bucket is 25 MiB), without one buffer as large as the whole model.
BUCKET_BYTES = 25 * 2**20

#: The exit status of a job a failing rank stops with MPI_Abort.
EXIT_ABORTED = 1


def _mpi():
    """mpi4py's ``MPI`` module, or a ModuleNotFoundError naming the extra to install."""
    try:
        # An optional dependency, imported when needed (not an import cycle being dodged).
        from mpi4py import MPI
    except ModuleNotFoundError as error:
        if error.name != "mpi4py" and not str(error.name).startswith("mpi4py."):
            raise
        raise ModuleNotFoundError('distributed training needs mpi4py over an MPI library: pip install '
                                  '"npconvnet[mpi]" (Debian/Ubuntu: apt-get install openmpi-bin '
                                  'libopenmpi-dev first)', name="mpi4py") from None
    return MPI


class Communicator:
    """The ranks of one data-parallel run and the collective operations training needs.

    Args:
        comm: an mpi4py communicator; default ``MPI.COMM_WORLD`` (every process mpirun started).

    Attributes:
        rank, size: this process's rank and the number of ranks, K.
        is_root: whether this is rank 0, the one that prints and writes files.
        shard: ``(start, stop, total)`` during a training step: this rank holds samples
            ``start:stop`` of a global batch of ``total`` (Dropout draws the whole batch's
            noise and keeps that slice); None outside one.
        gradient_bytes, gradient_seconds: the bytes all-reduced by
            :meth:`allreduce_gradients` and the seconds it took, summed over its calls.
    """

    def __init__(self, comm=None):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.shard = None
        self.gradient_bytes, self.gradient_seconds = 0, 0.0
        self._guards = 0            # abort_on_error blocks entered: the outermost one reports

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"Communicator(rank={self.rank}, size={self.size})"

    def local_size(self) -> int:
        """How many ranks run on this rank's machine (a collective call: every rank calls it)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()

    # Sharding.
    def split(self, count: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's part of ``count`` items: contiguous parts in rank
        order, the first ``count % size`` ranks holding one item more than the others."""
        small, extra = divmod(count, self.size)
        start = self.rank * small + min(self.rank, extra)
        return start, start + small + (self.rank < extra)

    # Collectives.
    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``array`` over the ranks (a new contiguous array of its
        dtype and shape; every rank passes the same shape and dtype)."""
        total = np.array(array, order="C")
        self.comm.Allreduce(self.MPI.IN_PLACE, total, op=self.MPI.SUM)
        return total

    def allreduce_gradients(self, parameters) -> None:
        """Replace every parameter's ``.grad`` by its sum over the ranks.

        The gradients are copied into contiguous buckets of one dtype and at most about
        :data:`BUCKET_BYTES` each and summed in place with one ``MPI.Allreduce`` per bucket;
        each ``.grad`` is then a view of its bucket. (Training scales each rank's gradients by its share of the batch first,
        so the sum is the mean gradient of the whole batch; see the module docstring.)
        """
        started = time.perf_counter()
        for bucket in _buckets(parameters):
            flat = np.concatenate([parameter.grad.ravel() for parameter in bucket])
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            self.gradient_bytes += flat.nbytes
            offset = 0
            for parameter in bucket:
                size = parameter.grad.size
                parameter.grad = flat[offset:offset + size].reshape(parameter.grad.shape)
                offset += size
        self.gradient_seconds += time.perf_counter() - started

    def shared(self, function):
        """``function()``, a value of the whole batch that every rank computes alike (Dropout's
        noise, from the generator each rank holds in the same state): here each rank calls it."""
        return function()

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object), on every rank."""
        return self.comm.bcast(value, root=0)

    def broadcast_arrays(self, arrays) -> None:
        """Overwrite each array, in place, with rank 0's (every rank passes arrays of the same
        shapes and dtypes, in the same order): the weights every rank starts from."""
        for array in arrays:
            buffer = np.ascontiguousarray(array)
            self.comm.Bcast(buffer, root=0)
            if buffer is not array:
                array[...] = buffer

    def root_call(self, function, *args):
        """``function(*args)`` called on rank 0 alone (to read or write a file), its result
        returned on every rank; an exception it raises is raised on every rank, so that the
        ranks go on, or stop, together."""
        outcome = None
        if self.is_root:
            try:
                outcome = (True, function(*args))
            except Exception as error:
                outcome = (False, picklable_error(error))
        succeeded, value = self.broadcast(outcome)
        if not succeeded:
            raise value
        return value

    # Faults.
    @contextlib.contextmanager
    def abort_on_error(self, passing=(), exit_status=EXIT_ABORTED, describe=None):
        """Inside the block, an exception on this rank prints the error on stderr and calls
        ``Abort``, which ends every rank of the job, instead of leaving the others waiting
        forever in their next collective. ``describe(error)`` gives the message and exit
        status to use (default: the traceback, and ``exit_status``). Exceptions of the types
        in ``passing`` (raised by every rank alike) go through, and so do KeyboardInterrupt
        and SystemExit: mpirun is then stopping the job already. Inside another such block
        (``npconvnet train`` around ``fit``) the outer one reports and aborts."""
        self._guards += 1
        try:
            yield self
        except passing:
            raise
        except Exception as error:
            if self._guards > 1:
                raise
            if describe is None:
                message = "".join(traceback.format_exception(error)).rstrip()
                status = exit_status
            else:
                message, status = describe(error)
            print(f"npconvnet (rank {self.rank} of {self.size}): {message}\n"
                  f"npconvnet (rank {self.rank} of {self.size}): stopping every rank (MPI_Abort)",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            self.comm.Abort(status)
            raise       # Abort does not return; this only keeps the exception if it ever did
        finally:
            self._guards -= 1


def communicator(distributed) -> Communicator | None:
    """``fit``'s ``distributed`` argument as a Communicator: False or None for none, True for
    one over ``MPI.COMM_WORLD``, or a Communicator as it is."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        return Communicator()
    if isinstance(distributed, Communicator):
        return distributed
    raise TypeError(f"fit: distributed must be True, False or a npconvnet.distributed.Communicator, "
                    f"got {type(distributed).__name__}")


@contextlib.contextmanager
def attached(network, communicator):
    """Inside the block, every layer of ``network`` that works on the whole batch (one with a
    ``process_group`` attribute: batch normalization, dropout) has ``communicator`` as its
    ``process_group``; afterwards they have none again. None: nothing changes."""
    layers = [] if communicator is None else [layer for layer in _layers(network)
                                              if hasattr(layer, "process_group")]
    for layer in layers:
        layer.process_group = communicator
    try:
        yield
    finally:
        for layer in layers:
            del layer.process_group         # back to the class's None


def backward_shard(network, loss, share) -> None:
    """Backward of ``network`` for a shard of a batch that holds ``share`` (b / B) of its
    samples, from the last call of ``loss`` (on that shard). The shard's loss is its own mean;
    its gradient times ``share`` is the shard's part of the gradient of the whole batch's mean,
    so that the parameters' gradients summed over the shards are that gradient, for shards of
    any sizes. (The weight penalties' gradients are for the caller to add, once.)"""
    grad_output = loss.backward()
    network.backward(grad_output if share == 1 else grad_output * grad_output.dtype.type(share),
                     input_grad=False)


def min_shard_size(network) -> int:
    """The fewest samples of a batch that each rank must hold to train ``network``: the largest
    ``min_shard_size`` of its layers (Dropout needs 2), 1 without any."""
    return max((getattr(layer, "min_shard_size", 1) for layer in _layers(network)), default=1)


def _layers(layer):
    """``layer`` and every layer inside it, depth first."""
    yield layer
    for _, child in layer.children():
        yield from _layers(child)


def _buckets(parameters):
    """The parameters with a gradient, grouped into buckets of one dtype and about
    :data:`BUCKET_BYTES` each, in order."""
    buckets, open_buckets = [], {}          # open_buckets: dtype -> (parameters, bytes)
    for parameter in parameters:
        if parameter.grad is None:
            continue
        dtype, size = parameter.grad.dtype, parameter.grad.nbytes
        members, filled = open_buckets.get(dtype, (None, 0))
        if members is None or (members and filled + size > BUCKET_BYTES):
            members, filled = [], 0
            buckets.append(members)
        members.append(parameter)
        open_buckets[dtype] = (members, filled + size)
    return buckets


def picklable_error(error):
    """``error``, or a RuntimeError with its message when it cannot be pickled (sent to another process)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
