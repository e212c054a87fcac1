"""Threads: one layer call's work shared among the processor's cores.

NumPy releases the GIL inside its array operations and inside BLAS, so Python threads run them
at the same time. A layer cuts its work into independent parts (the blocks of a convolution's
outputs, the channels of an element-wise operation) and hands them to :func:`run`, which runs
them on :func:`get_num_threads` threads: the calling thread and the workers of one pool that
every layer shares. The parts, and the order their results are added in, depend on the number
of threads alone, so that the same number of threads gives the same bits every time; with one
thread the parts are plain calls, one after the other, in the caller. In training, ``fit``
hands out larger parts than a layer's: whole shards of the batch (``npconvnet.shards``), on
worker processes (``npconvnet.processes``: the GIL is not shared), inside which every layer's
own parts run inline.

While the parts run, and for the whole of a pass through a ``Sequential``
(:func:`blas_on_one_thread`), BLAS is held to one thread (with threadpoolctl), one thread of
npconvnet's included: the cores are npconvnet's then, and a BLAS pool beside its threads would
only fight them for the cores. OpenBLAS's threads spin for a while after each product they
share, so one product of a Dense layer left to BLAS's pool between two convolutions kept both
cores spinning while npconvnet's threads waited for them (vgg-mini trained 15% slower on two
threads than with BLAS held for the whole pass; on a busy machine, spinning threads once made a
one-thread convolution ten times slower). Outside npconvnet's calls BLAS keeps its own setting.

The number of threads is, as for PyTorch's ``torch.set_num_threads``, the cores this process may
run on, unless the environment variable ``NPCONVNET_NUM_THREADS`` or :func:`set_num_threads`
says otherwise.
"""

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

ENVIRONMENT_VARIABLE = "NPCONVNET_NUM_THREADS"

#: While parts run, a thread that waits this long for the GIL asks its holder to hand it over
#: (Python's default is 5 ms): a part back from a NumPy call then waits less for the other
#: parts' Python code (training on two threads: vgg-mini 4% faster, convnet 10%).
SWITCH_INTERVAL_SECONDS = 0.0005

#: An element-wise pass over fewer bytes than this for each thread runs in one thread: handing
#: it out would cost more (some 50 microseconds) than it saves.
MIN_PART_BYTES = 128 * 2**10


def _cores():
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _checked(value, where):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: the number of threads must be a positive int, got {value!r:.100}")
    return int(value)


def _from_environment():
    text = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        return _cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"the environment variable {ENVIRONMENT_VARIABLE} must be a positive integer "
                         f"(a number of threads), got {text!r:.100}")
    return value


_num_threads = _from_environment()
_pool = None                 # created at the first parallel call, for _num_threads - 1 workers
_blas = None                 # threadpoolctl's controllers of the loaded BLAS libraries
_worker = threading.local()  # .inside: this thread is running a part (nested calls run inline)
_holding = threading.local()  # .depth: blas_on_one_thread blocks this thread is inside
_switch_lock = threading.Lock()  # guards the two below: run's callers on several threads
_switch_users = 0                # run calls inside _short_switch_interval now
_saved_switch_interval = None    # the interval before the first of them


def get_num_threads():
    """The number of threads a layer call runs on (``torch.get_num_threads``)."""
    return _num_threads


def set_num_threads(num_threads):
    """Run each layer call on ``num_threads`` threads from now on (``torch.set_num_threads``).

    ``1`` runs everything in the calling thread. A ``ValueError`` for anything but a positive int.
    """
    global _num_threads, _pool
    num_threads = _checked(num_threads, "set_num_threads")
    if num_threads != _num_threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _num_threads = num_threads


def threads_here():
    """The threads a call made here may share its work among: :func:`get_num_threads` in the
    caller's thread, 1 inside a part (whose own parts run inline, one after the other)."""
    return 1 if getattr(_worker, "inside", False) else _num_threads


def split(length):
    """``range(length)`` cut into at most :func:`threads_here` slices of nearly equal
    lengths (fewer when ``length`` is short), one for each thread."""
    count = max(1, min(threads_here(), length))
    bounds = [length * part // count for part in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def shares(items):
    """The list ``items`` cut into at most :func:`threads_here` runs in order, one for each thread."""
    return [items[part] for part in split(len(items))]


def run(function, parts):
    """``[function(part) for part in parts]``, the parts running at the same time on the threads.

    The caller's thread runs the first part; an exception in any part is raised here once
    every part has finished (none is left writing into arrays the caller goes on to use).
    """
    parts = list(parts)
    if getattr(_worker, "inside", False):
        return [function(part) for part in parts]
    with blas_on_one_thread():
        if len(parts) < 2 or _num_threads == 1:
            return [_run_inside(function, part) for part in parts]
        # NumPy's floating-point error handling (np.errstate) belongs to each thread: the
        # caller's goes with the parts, so that an overflow warns, raises or stays quiet alike.
        errors = {"call": np.geterrcall(), **np.geterr()}
        with _short_switch_interval():
            futures = [_thread_pool().submit(_run_inside, function, part, errors) for part in parts[1:]]
            try:
                first = _run_inside(function, parts[0])
            finally:
                rest = [future.exception() for future in futures]     # waits for every part
        for error in rest:
            if error is not None:
                raise error
        return [first] + [future.result() for future in futures]


def channel_parts(array):
    """The channels (axis 1) of ``array`` cut into one slice for each thread, or into a single
    slice when the array is too small to share out (``MIN_PART_BYTES`` for each thread)."""
    channels = array.shape[1] if array.ndim > 1 else 1
    count = max(1, min(threads_here(), channels, array.nbytes // MIN_PART_BYTES))
    bounds = [channels * part // count for part in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def channelwise(function, *arrays):
    """``function(*arrays)`` for arrays whose entries depend on their own channel (axis 1)
    alone, run as ``function(*(a[:, part] for a in arrays))`` for each of the
    :func:`channel_parts` of the first array, one part on each thread (in a batch-last array,
    one contiguous run of memory). When ``function`` works entry by entry, the results are the
    same on any number of threads."""
    parts = channel_parts(arrays[0])
    if len(parts) == 1:
        function(*arrays)
        return
    run(lambda part: function(*(array[:, part] for array in arrays)), parts)


@contextlib.contextmanager
def _short_switch_interval():
    """``SWITCH_INTERVAL_SECONDS`` inside the block; the interval of before once the last of the
    blocks that callers on several threads may be inside at once has ended."""
    global _switch_users, _saved_switch_interval
    with _switch_lock:
        if _switch_users == 0:
            _saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved_switch_interval, SWITCH_INTERVAL_SECONDS))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_saved_switch_interval)


@contextlib.contextmanager
def one_thread_here():
    """Inside the block, calls made in this thread run their parts one after the other, in it:
    other processes have the cores (``npconvnet.processes``)."""
    inside = getattr(_worker, "inside", False)
    _worker.inside = True
    try:
        yield
    finally:
        _worker.inside = inside


def _run_inside(function, part, errors=None):
    _worker.inside = True
    try:
        with contextlib.nullcontext() if errors is None else np.errstate(**errors):
            return function(part)
    finally:
        _worker.inside = False


def _thread_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_num_threads - 1, thread_name_prefix="npconvnet")
    return _pool


@contextlib.contextmanager
def blas_on_one_thread():
    """BLAS on one thread inside the block, its own setting back after it; blocks inside it
    (a layer's parts inside a Sequential's pass) change nothing. Only the libraries not on one
    thread already are changed: that costs a microsecond a call (threadpoolctl's ``limit``
    some tens), which matters at batch 1."""
    global _blas
    if getattr(_holding, "depth", 0):
        yield
        return
    if _blas is None:
        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    changed = [(library, count) for library in _blas if (count := library.get_num_threads()) != 1]
    for library, _ in changed:
        library.set_num_threads(1)
    _holding.depth = 1
    try:
        yield
    finally:
        _holding.depth = 0
        for library, count in changed:
            library.set_num_threads(count)


def _forget_pool():
    """A forked child has none of its parent's threads: it starts a pool of its own."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
