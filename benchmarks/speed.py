"""Training and inference speed of npconvnet against PyTorch on the CPU, side by side.

    NPCONVNET_DATA_DIR=/work/shared/datasets python benchmarks/speed.py [--threads 1] [--clock cpu]

Without ``--threads`` each library runs on its own default number of threads, as a user's program
does: npconvnet on every core (``npconvnet.get_num_threads()``), PyTorch on
``torch.get_num_threads()``. ``--threads N`` gives both N threads (and BLAS and OpenMP N).

For the zoo models ``convnet``, ``lenet5`` and ``vgg-mini`` (1x28x28 inputs, 10 classes) the same
network is built in both libraries (the PyTorch twin is converted layer by layer from the
npconvnet model, weights copied, outputs checked equal), in float32, on MNIST training images (random noise if MNIST is not found), each
library in a worker process of its own (in one shared process each library's allocations
changed how often the other's memory was faulted in again, see ``Worker``). The libraries take
turns of five calls, so that both see the same background load and each runs several calls in
a row, as in a training loop. The training steps go through 50
batches of randomly drawn training images (seeded, the same for both), so that no batch comes
back more than a few times, and inference runs on another random sample. Training on one batch
over and over, as an earlier version of this benchmark did, measures a regime no training loop
is in: as the model memorises the batch PyTorch's step became 20-30% slower (npconvnet's did
not), which flattered npconvnet. Reported, as medians after a warm-up:

- training step (forward, cross-entropy, backward, Adam update) at batch 128, images per second;
- inference (evaluation mode) at batch 1000 in images per second, and at batch 1 in milliseconds;
- peak memory of training: each library trains the model for three steps in a fresh subprocess;
  the increase of the peak resident set size (VmHWM, reset just before the first step) over the
  resident size at that point, the allocator's free memory handed back to the system first; for
  npconvnet also the peak that tracemalloc sees;
- the GFLOP/s of npconvnet's convolutions (forward, weight gradient and input gradient of each
  Conv2D at batch 128), next to the float32 matrix-product peak measured with ``np.matmul``;
- one epoch of ``convnet`` on the 60,000 MNIST training images (batch 128, Adam), both libraries
  on the same shuffled batches from the same weights, each in a fresh process, as seconds and
  as a ratio.

npconvnet keeps the memory a step frees for the next one (``npconvnet.allocator``, set when it is
imported); PyTorch's processes, which import npconvnet to build the twin, are left as a PyTorch
user's program is, unless ``--torch-keeps-freed-memory`` gives them the same setting.

Both wall-clock and CPU time are recorded in the JSON file; the table shows ``--clock``. On a
shared machine the process's CPU time is the steadier measure of the work done (with one
thread; with more it adds the threads up, so wall-clock time is the default there). Ratios are
npconvnet / PyTorch. The default run also measures each library's training and inference on
one thread, in two more worker processes that take their turns with the others, and ends with
the scaling table: throughput on one thread and on the default threads, from the same minutes
of the same machine (two separate runs on this shared machine differed by up to 2x).
"""

import argparse
import contextlib
import ctypes
import itertools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time

MODELS = ("convnet", "lenet5", "vgg-mini")
TRAIN_BATCH, INFER_BATCH, TRAIN_BATCHES = 128, 1000, 50


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both libraries (default: each library's own default, every core)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=6,
                        help="turns per measurement, each of 5 calls per library (halved for vgg-mini)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="the time the table shows: the process's CPU time (default with one "
                             "thread: steadier on a shared machine) or wall-clock time (default "
                             "with more threads, where CPU time would add the threads up)")
    parser.add_argument("--torch-keeps-freed-memory", action="store_true",
                        help="give PyTorch's processes npconvnet's allocator setting too (npconvnet.allocator: "
                             "freed memory kept for the next step); by default PyTorch runs as a user has it")
    parser.add_argument("--no-epoch", action="store_true", help="skip the full MNIST epoch")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", default=None,
                        help="JSON file (default benchmarks/results/speed-<threads>thread.json, "
                             "speed-default.json without --threads)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("LIBRARY", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--epoch-probe", metavar="LIBRARY", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- models


def build_model(name):
    """The zoo model ``name`` for 1x28x28 images and 10 classes, float32, seeded."""
    import npconvnet
    from npconvnet import zoo
    npconvnet.manual_seed(0)
    return zoo.get(name, input_shape=(1, 28, 28), num_classes=10)


def to_torch(layer):
    """The PyTorch twin of an npconvnet layer (a Sequential recursively), weights copied."""
    import torch
    from npconvnet import layers as L
    nn = torch.nn
    if isinstance(layer, L.Sequential):
        return nn.Sequential(*[to_torch(child) for child in layer])
    if isinstance(layer, L.Conv2D):
        padding = {"valid": 0, "same": "same"}.get(layer.padding, layer.padding)
        if padding == "full" or (padding != "same" and isinstance(padding[0], tuple)):
            raise NotImplementedError(f"no PyTorch twin for {layer!r}")
        twin = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         padding, bias=layer.bias is not None)
    elif isinstance(layer, L.Dense):
        twin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    elif isinstance(layer, (L.BatchNorm1D, L.BatchNorm2D)):
        kind = nn.BatchNorm2d if isinstance(layer, L.BatchNorm2D) else nn.BatchNorm1d
        twin = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    elif isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
        kind = nn.MaxPool2d if isinstance(layer, L.MaxPool2D) else nn.AvgPool2d
        twin = kind(layer.kernel_size, layer.stride, layer.padding)
    elif isinstance(layer, L.Dropout):
        twin = nn.Dropout(layer.p)
    elif type(layer) in (L.ReLU, L.Tanh, L.Sigmoid, L.Flatten):
        twin = getattr(nn, type(layer).__name__)()
    else:
        raise NotImplementedError(f"no PyTorch twin for {layer!r}")
    with torch.no_grad():
        for name, value in layer.state_dict().items():
            getattr(twin, name).copy_(torch.from_numpy(value))
    return twin


def check_twins(model, twin, x):
    """Both networks compute the same function (evaluation mode); a wrong converter fails loudly."""
    import numpy as np
    import torch
    model.eval(), twin.eval()
    with torch.inference_mode():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-3, atol=1e-4)
    model.train(), twin.train()


def numpy_training_step(model, batches, stack):
    """npconvnet's training step: forward, cross-entropy, backward, Adam update; returns the loss.
    ``step(x, y)`` trains on that batch, ``step()`` on the next of ``batches`` (in a cycle).
    Forward and backward are fit's (``npconvnet.shards.forward_backward``): on several threads,
    the shards of a batch go to worker processes, as in fit, which live until ``stack`` (a
    ``contextlib.ExitStack``) closes."""
    from npconvnet import processes, shards
    from npconvnet.losses import CrossEntropyLoss
    from npconvnet.optim import Adam
    loss_fn, optimizer = CrossEntropyLoss(), Adam(model.parameters(), lr=1e-3)
    stack.enter_context(processes.on_processes(model))
    cycle = itertools.cycle(batches)

    def step(x=None, y=None):
        if x is None:
            x, y = next(cycle)
        loss, _ = shards.forward_backward(model, loss_fn, x, y)   # backward without dL/dx, as PyTorch
        optimizer.step()
        return loss
    return step


def torch_training_step(twin, batches):
    """The same step in PyTorch (gradients reset to None first, as its training loops do)."""
    import torch
    loss_fn, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.Adam(twin.parameters(), lr=1e-3)
    cycle = itertools.cycle([(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches])

    def step(x=None, y=None):
        if x is None:
            x, y = next(cycle)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(twin(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


# --------------------------------------------------------------------------- timing


def timed(function):
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def median_times(samples):
    """``{"wall": median, "cpu": median}`` of a list of ``timed`` results."""
    return {clock: sorted(sample[i] for sample in samples)[len(samples) // 2]
            for i, clock in enumerate(("wall", "cpu"))}


def compare(workers, task, repeats, block=5, warmup=2):
    """Median times per call of ``task`` in each of the :class:`Worker` processes.

    The workers take turns in blocks of ``block`` calls (the one going first changes from turn
    to turn), so that all see the same background load on a shared machine while each runs
    several calls in a row with its own data in the caches, as in a training loop.
    """
    for worker in workers:
        worker.run(task, warmup)
    samples = [[] for _ in workers]
    for index in range(repeats):
        for which in range(len(workers)):
            which = (which + index) % len(workers)
            samples[which].extend(workers[which].run(task, block))
    return [median_times(times) for times in samples]


class Worker:
    """One library's side of the comparison for one model, in a process of its own.

    Each library runs in its own process, as in a user's program: in a shared process each
    one's allocations decide whether the other's memory is handed back to the system and
    faulted in again, and PyTorch's training step then varied between 3,000 and 13,000 page
    faults (5 to 23 ms of system time) depending on what npconvnet had run before it.
    ``run(task, count)`` times ``count`` calls of ``train`` (a training step), ``infer_1000``
    or ``infer_1`` there and returns their ``timed`` results; only one process runs at a time.
    """

    def __init__(self, library, name, threads, torch_keeps_freed_memory=False):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, library, name, threads), daemon=True)
        with environment(allocator_setting(library, torch_keeps_freed_memory)):    # the child's, from the start
            self.process.start()
        self.connection.recv()

    def run(self, task, count):
        self.connection.send((task, count))
        return self.connection.recv()

    def close(self):
        self.connection.send(None)
        self.process.join()


def _serve(connection, library, name, threads):
    """The worker process: builds the model (PyTorch's twin from the same weights), the same 50
    training batches and inference inputs as every other run, then answers ``run`` requests."""
    x_all, y_all, _ = mnist_or_noise()
    model = build_model(name)
    stack = contextlib.ExitStack()
    batches = random_batches(x_all, y_all, TRAIN_BATCHES, TRAIN_BATCH)
    inputs = {"infer_1000": random_batches(x_all, y_all, 1, INFER_BATCH, seed=1)[0][0],
              "infer_1": random_batches(x_all, y_all, 1, 1, seed=1)[0][0]}
    set_threads(library, threads)
    if library == "torch":
        import torch
        twin = to_torch(model)
        tasks = {"train": (twin.train, torch_training_step(twin, batches))}
        for key, x in inputs.items():
            def infer(x_torch=torch.from_numpy(x)):
                with torch.inference_mode():
                    twin(x_torch)
            tasks[key] = (twin.eval, infer)
    else:
        tasks = {"train": (model.train, numpy_training_step(model, batches, stack))}
        for key, x in inputs.items():
            tasks[key] = (model.eval, lambda x=x: model.forward(x))
    connection.send("ready")
    while (request := connection.recv()) is not None:
        task, count = request
        set_mode, function = tasks[task]
        set_mode()
        connection.send([timed(function) for _ in range(count)])
    stack.close()


def allocator_setting(library, torch_keeps_freed_memory=False):
    """The environment of ``library``'s processes as to the C allocator: npconvnet keeps freed
    memory for the next step (``npconvnet.allocator``, at its import); PyTorch's processes,
    which import npconvnet to build the twin, are left as a PyTorch user's program is, unless
    ``torch_keeps_freed_memory``."""
    keep = library == "numpy" or torch_keeps_freed_memory
    return {"NPCONVNET_KEEP_FREED_MEMORY": "1" if keep else "0"}


@contextlib.contextmanager
def environment(variables):
    """``os.environ`` updated with ``variables`` inside the block (for the processes started there)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def set_threads(library, threads):
    """Give ``library`` ("numpy" for npconvnet, or "torch") ``threads`` threads; None leaves its default."""
    if threads is None:
        return
    if library == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import npconvnet
        npconvnet.set_num_threads(threads)


def thread_counts():
    """The threads each library runs on in this process: ``{"npconvnet": n, "torch": m}``."""
    import npconvnet
    import torch
    return {"npconvnet": npconvnet.get_num_threads(), "torch": torch.get_num_threads()}


def median_time(function, repeats, warmup=2):
    for _ in range(warmup):
        function()
    return median_times([timed(function) for _ in range(repeats)])


def matmul_peak_gflops(clock, repeats=5):
    """The machine's float32 matrix-product speed through NumPy's BLAS, best of a few sizes."""
    import numpy as np
    rng = np.random.default_rng(0)
    best = 0.0
    for size in (512, 1024, 2048):
        a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
        seconds = median_time(lambda: a @ b, repeats)[clock]
        best = max(best, 2 * size ** 3 / seconds / 1e9)
    return best


def conv_gflops(model, x, clock, repeats):
    """Achieved GFLOP/s of the model's Conv2D layers on the batch ``x``: forward, weight gradient
    and input gradient (three products of ``2 N F C kh kw H' W'`` flops each), all the data
    movement (im2col, col2im) included."""
    import numpy as np
    from npconvnet.layers import Conv2D
    flops, seconds = 0, 0.0
    model.train()
    for layer in _leaves(model):
        if isinstance(layer, Conv2D):
            out = layer.forward(x)
            upstream = np.ones_like(out) / out.size
            kh, kw = layer.kernel_size
            flops += 3 * 2 * out.size * layer.in_channels * kh * kw

            def step(layer=layer, x=x, upstream=upstream):
                layer.forward(x)
                layer.backward(upstream)
            seconds += median_time(step, repeats)[clock]
        x = layer.forward(x)
    return flops / seconds / 1e9


def _leaves(layer):
    children = layer.children()
    if not children:
        return [layer]
    return [leaf for _, child in children for leaf in _leaves(child)]


# --------------------------------------------------------------------------- data


def random_batches(x_all, y_all, count, batch_size, seed=0):
    """``count`` batches of distinct training images drawn at random (seeded)."""
    import numpy as np
    chosen = np.random.default_rng(seed).permutation(len(x_all))[:count * batch_size]
    return [(x_all[part], y_all[part]) for part in np.split(chosen, count)]


def mnist_or_noise():
    """MNIST training images (float32 in [0, 1], (N, 1, 28, 28)) and labels, or, when the data
    set is not found, standard-normal noise with random labels; and the name of the source."""
    import numpy as np
    from npconvnet.datasets import DatasetError, load_mnist
    try:
        (images, labels), _ = load_mnist()
        return (images.astype(np.float32) / np.float32(255))[:, None], labels.astype(np.int64), "MNIST"
    except DatasetError:
        rng = np.random.default_rng(0)
        return (rng.standard_normal((2000, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 2000),
                "random noise (MNIST not found: set NPCONVNET_DATA_DIR)")


# --------------------------------------------------------------------------- memory


def memory_probe(library, name, threads):
    """Run in a fresh process: memory added by three training steps, in MiB. The peak resident
    set size (VmHWM, reset just before the first step) minus the resident size at that point;
    for NumPy also the peak of the allocations that tracemalloc sees (NumPy reports its arrays
    to it), which is immune to the allocator's caching."""
    import tracemalloc
    x_all, y_all, _ = mnist_or_noise()
    batches = random_batches(x_all, y_all, 3, TRAIN_BATCH)
    model = build_model(name)
    set_threads(library, threads)
    with contextlib.ExitStack() as stack:
        if library == "torch":
            step = torch_training_step(to_torch(model), batches)
        else:
            step = numpy_training_step(model, batches, stack)
            tracemalloc.start()
        _give_back_freed_memory()
        baseline = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:     # "5" resets the peak RSS (VmHWM) to now
            f.write("5")
        for _ in range(3):
            step()
        result = {"rss_peak_mib": (_status_kib("VmHWM") - baseline + _children_private_kib()) / 1024}
    if tracemalloc.is_tracing():
        result["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
    print(json.dumps(result))


def _give_back_freed_memory():
    """Hand the memory the C allocator holds free back to the system (glibc's ``malloc_trim``), so
    that the steps' memory is counted from the memory in use, whichever allocator setting the
    process has (npconvnet's keeps what it frees)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _children_private_kib():
    """The memory this process's children (npconvnet's worker processes) hold of their own,
    not shared with it: what they add (after three steps their layers still hold the last
    step's arrays, near their peak)."""
    pid = os.getpid()
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = f.read().split()
    total = 0
    for child in children:
        with open(f"/proc/{child}/smaps_rollup") as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))
    return total


def peak_memory(library, name, threads, torch_keeps_freed_memory=False):
    return _probe(["--memory-probe", library, name], threads, allocator_setting(library, torch_keeps_freed_memory))


def _probe(arguments, threads, variables):
    """Run this script with ``arguments`` in a fresh process, with the environment ``variables``
    added; the JSON it prints last."""
    command = [sys.executable, os.path.abspath(__file__), *arguments]
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **variables})
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- epoch


def epoch_probe(library, threads):
    """Run in a fresh process: one epoch of convnet over the MNIST training images in ``library``
    (batch 128, Adam, the same shuffled batches and starting weights in both): wall and CPU
    seconds, and the mean training loss as a sanity check (the two runs should agree)."""
    import numpy as np
    x_all, y_all, _ = mnist_or_noise()
    order = np.random.default_rng(0).permutation(len(x_all))
    batches = [(x_all[order[i:i + TRAIN_BATCH]], y_all[order[i:i + TRAIN_BATCH]])
               for i in range(0, len(x_all), TRAIN_BATCH)]
    model = build_model("convnet")
    set_threads(library, threads)
    if library == "torch":
        import torch
        step = torch_training_step(to_torch(model), batches[:1])
        batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    losses = []
    with contextlib.ExitStack() as stack:
        if library != "torch":
            step = numpy_training_step(model, batches[:1], stack)
        wall, cpu = timed(lambda: losses.extend(step(x, y) for x, y in batches))
    print(json.dumps({"wall": wall, "cpu": cpu, "mean_loss": float(np.mean(losses))}))


def mnist_epoch(x_all, threads, torch_keeps_freed_memory=False):
    """The epoch of :func:`epoch_probe` in each library, each in a fresh process (PyTorch first)."""
    results = {"images": len(x_all)}
    for library, key in (("torch", "pytorch"), ("numpy", "npconvnet")):
        results[key] = _probe(["--epoch-probe", library], threads, allocator_setting(library, torch_keeps_freed_memory))
    return results


# --------------------------------------------------------------------------- report


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(args.threads)       # before NumPy and PyTorch load their BLAS
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.threads)
        return
    if args.epoch_probe:
        epoch_probe(args.epoch_probe, args.threads)
        return

    import numpy as np
    import torch
    import npconvnet

    set_threads("torch", args.threads), set_threads("numpy", args.threads)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    started = time.perf_counter()
    x_all, y_all, source = mnist_or_noise()
    report = {"command": "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "threads": args.threads, "thread_counts": thread_counts(), "clock": clock, "data": source,
              "numpy": np.__version__, "torch": torch.__version__, "npconvnet": npconvnet.__version__,
              "blas": _blas_name(np), "cpu": _cpu_name(), "python": platform.python_version(),
              "matmul_peak_gflops": matmul_peak_gflops(clock),
              "os_threads": len(os.listdir("/proc/self/task")),
              "torch_keeps_freed_memory": args.torch_keeps_freed_memory, "models": {}}
    for name in args.models:
        model = build_model(name)
        check_twins(model, to_torch(model), x_all[:4])
        repeats = args.repeats if name != "vgg-mini" else max(3, args.repeats // 2)
        batches = random_batches(x_all, y_all, TRAIN_BATCHES, TRAIN_BATCH)
        same = args.torch_keeps_freed_memory
        workers = [Worker("numpy", name, args.threads), Worker("torch", name, args.threads, same)]
        if args.threads is None:        # the scaling: both libraries on one thread too, in turn with the others
            workers += [Worker("numpy", name, 1), Worker("torch", name, 1, same)]
        try:
            times = {task: compare(workers if task != "infer_1" else workers[:2], task, count)
                     for task, count in (("train", repeats), ("infer_1000", repeats), ("infer_1", 40))}
        finally:
            for worker in workers:
                worker.close()
        results = {"seconds": {task: pair[:2] for task, pair in times.items()},
                   "train_images_per_s": [TRAIN_BATCH / t[clock] for t in times["train"][:2]],
                   "infer_1000_images_per_s": [INFER_BATCH / t[clock] for t in times["infer_1000"][:2]],
                   "infer_1_ms": [t[clock] * 1e3 for t in times["infer_1"]],
                   "conv_gflops": conv_gflops(model, batches[0][0], clock, repeats)}
        if args.threads is None:
            results["one_thread"] = {"train_images_per_s": [TRAIN_BATCH / t[clock] for t in times["train"][2:]],
                                     "infer_1000_images_per_s": [INFER_BATCH / t[clock]
                                                                 for t in times["infer_1000"][2:]]}
        if not args.no_memory:
            memory = [peak_memory(library, name, args.threads, same) for library in ("numpy", "torch")]
            results["train_peak_mib"] = [memory[0]["rss_peak_mib"], memory[1]["rss_peak_mib"]]
            results["numpy_tracemalloc_peak_mib"] = memory[0]["tracemalloc_peak_mib"]
        report["models"][name] = results
        print(f"  {name} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if not args.no_epoch:
        if source == "MNIST":
            report["mnist_epoch"] = mnist_epoch(x_all, args.threads, args.torch_keeps_freed_memory)
        else:
            report["mnist_epoch"] = {"skipped": source}
    report["total_seconds"] = time.perf_counter() - started

    print(format_table(report))
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    out = args.out or os.path.join(results, "speed-default.json" if args.threads is None
                                   else f"speed-{args.threads}thread.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten to {os.path.relpath(out)}")
    if args.threads is None:
        print("\n" + scaling_table(report))


def scaling_table(report):
    """Each library's throughput on one thread and on its default threads, measured in the same
    run, taking turns, with the speed-up between them."""
    counts = report["thread_counts"]
    rows = [("model", "metric", "npconvnet 1 -> {} threads".format(counts["npconvnet"]),
             "PyTorch 1 -> {} threads".format(counts["torch"]))]
    for name, results in report["models"].items():
        for key, label in (("train_images_per_s", "train img/s"), ("infer_1000_images_per_s", "infer img/s")):
            cells = []
            for library in range(2):
                before, after = results["one_thread"][key][library], results[key][library]
                cells.append(f"{before:,.0f} -> {after:,.0f} ({after / before:.2f}x)")
            rows.append((name, label, *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["Scaling: each library on one thread and on its default threads (the same run, in turns)", ""]
    for index, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(report):
    clock = report["clock"]
    rows = [("model", "metric", "npconvnet", "PyTorch", "ratio")]
    metrics = [("train_images_per_s", "train img/s (batch 128)", "{:,.0f}"),
               ("infer_1000_images_per_s", "infer img/s (batch 1000)", "{:,.0f}"),
               ("infer_1_ms", "infer latency ms (batch 1)", "{:.3f}"),
               ("train_peak_mib", "train peak MiB (RSS)", "{:.1f}")]
    for name, results in report["models"].items():
        for key, label, form in metrics:
            if key in results:
                ours, theirs = results[key]
                rows.append((name, label, form.format(ours), form.format(theirs), f"{ours / theirs:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"npconvnet {report['npconvnet']} (NumPy {report['numpy']}, {report['blas']}) vs "
             f"PyTorch {report['torch']}; {report['cpu']}; float32, {_threads_label(report)}; "
             f"data: {report['data']}; medians of {'CPU' if clock == 'cpu' else 'wall-clock'} time", ""]
    for index, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    allocator = ("PyTorch given npconvnet's allocator setting too (--torch-keeps-freed-memory)"
                 if report.get("torch_keeps_freed_memory") else
                 "npconvnet keeps freed memory for the next step (npconvnet.allocator), PyTorch runs as it is")
    lines += ["", "ratio = npconvnet / PyTorch (throughput: above 1 is faster; latency and memory: "
              "below 1 is better)", allocator,
              "float32 matmul peak (np.matmul, best of 512/1024/2048): "
              f"{report['matmul_peak_gflops']:.1f} GFLOP/s"]
    for name, results in report["models"].items():
        extra = (f"; NumPy tracemalloc peak of training {results['numpy_tracemalloc_peak_mib']:.1f} MiB"
                 if "numpy_tracemalloc_peak_mib" in results else "")
        lines.append(f"  {name}: Conv2D forward+backward {results['conv_gflops']:.1f} GFLOP/s "
                     f"({results['conv_gflops'] / report['matmul_peak_gflops']:.0%} of peak){extra}")
    epoch = report.get("mnist_epoch")
    if epoch and "skipped" in epoch:
        lines.append(f"MNIST epoch skipped: {epoch['skipped']}")
    elif epoch:
        ours, theirs = epoch["npconvnet"][clock], epoch["pytorch"][clock]
        lines.append(f"MNIST epoch of convnet ({epoch['images']:,} images, batch 128, Adam): "
                     f"npconvnet {ours:.1f} s, PyTorch {theirs:.1f} s, speed ratio {theirs / ours:.2f}x "
                     f"(mean training loss {epoch['npconvnet']['mean_loss']:.4f} vs "
                     f"{epoch['pytorch']['mean_loss']:.4f})")
    lines.append(f"total benchmark time {report['total_seconds']:.0f} s")
    return "\n".join(lines)


def _threads_label(report):
    if report["threads"] is not None:
        return f"{report['threads']} thread(s) each"
    counts = report.get("thread_counts", {})
    return (f"default threads (npconvnet {counts.get('npconvnet', '?')}, "
            f"PyTorch {counts.get('torch', '?')})")


def _blas_name(np):
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{config['name']} {config['version']}"
    except Exception:                                  # older NumPy: no dict mode
        return "unknown BLAS"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
