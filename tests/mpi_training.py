"""A small training run for tests/test_distributed.py, started by it as a subprocess: in one
process (``python tests/mpi_training.py OUT ...``) or on K ranks (``mpirun -n K python
tests/mpi_training.py OUT --distributed ...``).

A convnet with batch normalization (2-D and 1-D) and dropout trains for a few steps on
synthetic bar images, from seeded weights. Every rank writes what it ended with to ``OUT``:
``weights-rank{r}.npz`` (the state dict) and ``history-rank{r}.json``, so that the test can
compare the ranks with each other and with the one-process run.

``--fail-rank R --fail-epoch E``: rank R raises (``--fail-how raise``) or kills itself
(``kill``) as epoch E (from 0) begins, to test what the other ranks do.
"""

import argparse
import json
import os
import signal
import sys

import numpy as np

import npconvnet
from npconvnet import Sequential, callbacks, optim, regularizers
from npconvnet.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic import bar_images  # noqa: E402  (a helper beside this script)

OPTIMIZERS = {"momentum": lambda: optim.SGD(lr=0.05, momentum=0.9), "adam": lambda: optim.Adam(lr=0.01)}


class FailAt(callbacks.Callback):
    """Rank ``rank`` raises, or kills itself with SIGKILL, when epoch ``epoch`` begins."""

    def __init__(self, rank, epoch, how):
        super().__init__()
        self.rank, self.epoch, self.how = rank, epoch, how

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and self.params.get("rank", 0) == self.rank:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"rank {self.rank} fails on purpose in epoch {epoch + 1}")


def build_model(optimizer, penalty=None):
    npconvnet.manual_seed(1)
    model = Sequential(Conv2D(1, 4, 3, padding=1, bias=False), BatchNorm2D(4), ReLU(), MaxPool2D(2), Dropout(0.25),
                       Flatten(), Dense(4 * 5 * 5, 8, bias=False), BatchNorm1D(8), ReLU(), Dropout(0.5),
                       Dense(8, 2, kernel_regularizer=penalty))
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="cross_entropy", metrics=["accuracy"])
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="momentum")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--validation-split", type=float, default=0.25)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--npy", action="store_true", help="pass the images as a memory-mapped .npy file")
    parser.add_argument("--weighted", action="store_true",
                        help="sample weights, balanced class weights and an L1/L2 penalty on the last layer")
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--fail-epoch", type=int, default=1)
    parser.add_argument("--fail-how", choices=("raise", "kill"), default="raise")
    args = parser.parse_args()

    images, labels = bar_images(args.samples, seed=3)
    x = images
    if args.npy:
        x = os.path.join(args.out, "images.npy")
        if not os.path.exists(x):
            np.save(x, images)
    model = build_model(args.optimizer, regularizers.l1_l2(l1=1e-3, l2=1e-2) if args.weighted else None)
    weights = dict(sample_weight=np.linspace(0.5, 2, args.samples), class_weight="balanced") if args.weighted else {}
    extra = [] if args.fail_rank is None else [FailAt(args.fail_rank, args.fail_epoch, args.fail_how)]
    checkpoint = None if args.checkpoint_dir is None else os.path.join(args.checkpoint_dir, "checkpoint.npz")
    model.fit(x, labels, epochs=args.epochs, batch_size=args.batch_size, seed=5,
              validation_split=args.validation_split, verbose=2, callbacks=extra,
              checkpoint_dir=args.checkpoint_dir, resume_from=checkpoint if args.resume else None,
              distributed=args.distributed, **weights)
    rank = 0
    if args.distributed:
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
    np.savez(os.path.join(args.out, f"weights-rank{rank}.npz"), **model.state_dict())
    with open(os.path.join(args.out, f"history-rank{rank}.json"), "w") as file:
        json.dump(model.history.to_dict(), file)


if __name__ == "__main__":
    main()
