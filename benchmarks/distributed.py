"""Data-parallel training over MPI: images per second on K = 1 and 2 ranks of this machine, the
all-reduce time per step against the step time, and what 8 and 64 machines would give.

    python benchmarks/distributed.py [--steps 12] [--batch-size 128] [--bandwidth-gbit 10]

Each configuration is one ``mpirun -n K`` (loopback TCP) of this script in worker mode: vgg-mini
(1x28x28 inputs, 10 classes, Adam) trains for ``--steps`` steps on random uint8 images through
``fit(distributed=...)``, every rank on one thread (this machine's cores are shared out among
the ranks). A callback times every step on rank 0 and reads the communicator's clocks: the
gradient all-reduce (``Communicator.allreduce_gradients``, the gradient buckets) and the small
all-reduces of the batch-normalization statistics and the step's loss and confusion matrix.
The first two steps are warm-up; medians of the rest are reported. Two ways to use K ranks:

- the same global batch (``--batch-size``) cut into K shards: the run trains the weights one
  process trains (strong scaling);
- ``--batch-size`` on every rank, a global batch K times larger (weak scaling).

The projection to 8 and 64 machines takes the measured bytes all-reduced per step and the
number of small all-reduces per step, a network of ``--bandwidth-gbit`` Gbit/s with
``--latency-us`` microseconds per message, and the compute time of one step measured at K = 1:
a ring all-reduce of B bytes on K machines takes ``2 (K - 1) / K * B / bandwidth + 2 (K - 1) *
latency``, a small one ``log2(K) * latency`` (recursive doubling), and the all-reduce does not
overlap backward (npconvnet reduces after backward). The results go to
``benchmarks/results/distributed.json``; the machine is shared with other work, so the
timings are noisy.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "distributed.json"
MPIRUN_OPTIONS = ["--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,tcp",
                  "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
WARM_UP_STEPS = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps per configuration (default 12)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, or per rank when weak (128)")
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="network of the projection (10)")
    parser.add_argument("--latency-us", type=float, default=50.0, help="per message, in the projection (50)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--per-rank-batch", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args):
    """One rank of one configuration: train, time every step, print rank 0's JSON line."""
    import npconvnet
    from npconvnet import callbacks, optim, zoo
    from npconvnet.distributed import Communicator

    communicator = Communicator()
    npconvnet.set_num_threads(1)
    small = {"seconds": 0.0, "calls": 0}
    reduce = communicator.allreduce_sum

    def timed_allreduce_sum(array):
        started = time.perf_counter()
        try:
            return reduce(array)
        finally:
            small["seconds"] += time.perf_counter() - started
            small["calls"] += 1
    communicator.allreduce_sum = timed_allreduce_sum

    class StepClock(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = []

        def on_batch_begin(self, batch, logs=None):
            self.started = (time.perf_counter(), communicator.gradient_seconds, communicator.gradient_bytes,
                            small["seconds"], small["calls"])

        def on_batch_end(self, batch, logs=None):
            now = (time.perf_counter(), communicator.gradient_seconds, communicator.gradient_bytes,
                   small["seconds"], small["calls"])
            self.steps.append([after - before for after, before in zip(now, self.started)])

    batch = args.per_rank_batch * communicator.size
    generator = np.random.default_rng(0)
    x = generator.integers(0, 256, (batch * args.steps, 28, 28), dtype=np.uint8)
    y = generator.integers(0, 10, batch * args.steps)
    npconvnet.manual_seed(0)
    model = zoo.get("vgg-mini", (1, 28, 28), 10)
    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    clock = StepClock()
    model.fit(x, y, epochs=1, batch_size=batch, seed=0, verbose=0, callbacks=[clock], distributed=communicator)
    if communicator.is_root:
        measured = np.array(clock.steps[WARM_UP_STEPS:])
        step, gradient, gradient_bytes, small_seconds, small_calls = np.median(measured, axis=0)
        print(json.dumps({"ranks": communicator.size, "global_batch": batch, "per_rank_batch": args.per_rank_batch,
                          "steps_timed": len(measured), "step_seconds": step,
                          "gradient_allreduce_seconds": gradient, "gradient_bytes": int(gradient_bytes),
                          "small_allreduce_seconds": small_seconds, "small_allreduces": int(small_calls),
                          "images_per_second": batch / step, "parameters": model.num_parameters()}))


def run_configuration(ranks, per_rank_batch, steps):
    command = [shutil.which("mpirun") or "mpirun", "-n", str(ranks), *MPIRUN_OPTIONS, "-x", "PYTHONPATH",
               sys.executable, __file__, "--worker", "--per-rank-batch", str(per_rank_batch),
               "--steps", str(steps)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"mpirun -n {ranks} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def project(single, machines, per_machine_batch, bandwidth_gbit, latency_us):
    """A step of vgg-mini on ``machines`` machines of this one's speed, on paper."""
    bandwidth = bandwidth_gbit * 1e9 / 8                      # bytes per second
    latency = latency_us * 1e-6
    compute = (single["step_seconds"] - single["gradient_allreduce_seconds"] - single["small_allreduce_seconds"]) \
        * per_machine_batch / single["global_batch"]          # taken to scale with the batch
    ring = 2 * (machines - 1) / machines * single["gradient_bytes"] / bandwidth + 2 * (machines - 1) * latency
    small = single["small_allreduces"] * math.log2(machines) * latency
    step = compute + ring + small
    return {"machines": machines, "per_machine_batch": per_machine_batch, "global_batch": machines * per_machine_batch,
            "compute_seconds": compute, "gradient_allreduce_seconds": ring, "small_allreduce_seconds": small,
            "step_seconds": step, "images_per_second": machines * per_machine_batch / step,
            "communication_share": (ring + small) / step}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    measured = {
        "1 rank": run_configuration(1, args.batch_size, args.steps),
        "2 ranks, same global batch": run_configuration(2, args.batch_size // 2, args.steps),
        "2 ranks, batch per rank": run_configuration(2, args.batch_size, args.steps),
    }
    print(f"vgg-mini, Adam, {args.steps} steps ({WARM_UP_STEPS} warm-up), one thread per rank, loopback TCP")
    print(f"{'configuration':<28} | global batch | images/s | step ms | gradient all-reduce ms | "
          "small all-reduces ms (count)")
    for name, row in measured.items():
        print(f"{name:<28} | {row['global_batch']:>12} | {row['images_per_second']:>8.0f} | "
              f"{row['step_seconds'] * 1e3:>7.1f} | {row['gradient_allreduce_seconds'] * 1e3:>22.2f} | "
              f"{row['small_allreduce_seconds'] * 1e3:>8.2f} ({row['small_allreduces']})")
    single = measured["1 rank"]
    print(f"bytes all-reduced per step: {single['gradient_bytes']:,} ({single['parameters']:,} float32 "
          "parameters)")
    # Weak scaling (the batch per machine kept), then 64 machines sharing 8 machines' global batch.
    shapes = [(8, args.batch_size), (64, args.batch_size), (64, max(1, args.batch_size // 8))]
    projections = [project(single, machines, batch, args.bandwidth_gbit, args.latency_us)
                   for machines, batch in shapes]
    print(f"On paper, {args.bandwidth_gbit:g} Gbit/s and {args.latency_us:g} us per message, machines as this one "
          f"(compute per step at batch {args.batch_size}: "
          f"{projections[0]['compute_seconds'] * 1e3:.0f} ms):")
    print("machines | batch per machine | global batch | images/s | step ms | all-reduce ms (gradients + small) "
          "| communication")
    for row in projections:
        print(f"{row['machines']:>8} | {row['per_machine_batch']:>17} | {row['global_batch']:>12} | "
              f"{row['images_per_second']:>8.0f} | {row['step_seconds'] * 1e3:>7.1f} | "
              f"{row['gradient_allreduce_seconds'] * 1e3:>6.2f} + {row['small_allreduce_seconds'] * 1e3:.2f} | "
              f"{row['communication_share']:.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared: noisy timings)",
        "numpy": np.__version__, "measured": measured,
        "projection": {"bandwidth_gbit": args.bandwidth_gbit, "latency_us": args.latency_us, "rows": projections},
    }, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
