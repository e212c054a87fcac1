"""Forward + backward of one Conv2D -> ReLU -> MaxPool2D -> Dense stack, npconvnet vs PyTorch.

    python benchmarks/conv_stack.py [--batch-size 128] [--repeats 30] [--threads 1]

Both libraries run on the CPU in the same process, with the same number of threads, on a
batch of MNIST-sized images (1x28x28); the median time of repeated runs after a warm-up is
reported, and the ratio npconvnet / PyTorch (above 1 means npconvnet is slower).
"""

import argparse
import os
import time


def median_seconds(step, repeats):
    step()                                         # warm-up: allocations, BLAS start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)     # before NumPy and PyTorch load their BLAS

    import numpy as np
    import torch

    import npconvnet
    from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from npconvnet import Sequential

    torch.set_num_threads(args.threads)
    npconvnet.manual_seed(0)
    x = np.random.default_rng(0).random((args.batch_size, 1, 28, 28), dtype=np.float32)
    model = Sequential(Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(8 * 14 * 14, 10))
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                    torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10))
    upstream = np.ones((args.batch_size, 10), np.float32)
    x_torch, upstream_torch = torch.from_numpy(x), torch.from_numpy(upstream)

    def ours():
        model.forward(x)
        model.backward(upstream, input_grad=False)   # the data needs no gradient, as in PyTorch

    def theirs():
        reference.zero_grad(set_to_none=True)
        reference(x_torch).backward(upstream_torch)

    ours_seconds = median_seconds(ours, args.repeats)
    theirs_seconds = median_seconds(theirs, args.repeats)
    print(f"Conv2D(1->8, 3x3)-ReLU-MaxPool2D(2)-Dense(1568->10), batch {args.batch_size}, "
          f"{args.threads} thread(s), forward+backward, median of {args.repeats}")
    print(f"  npconvnet {ours_seconds * 1e3:8.2f} ms   ({args.batch_size / ours_seconds:9.0f} images/s)")
    print(f"  PyTorch   {theirs_seconds * 1e3:8.2f} ms   ({args.batch_size / theirs_seconds:9.0f} images/s)")
    print(f"  ratio npconvnet / PyTorch time: {ours_seconds / theirs_seconds:.2f}x")


if __name__ == "__main__":
    main()
