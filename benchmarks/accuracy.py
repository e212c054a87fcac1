"""The accuracy record: every zoo model trained with its recipe on MNIST (the stronger ones on
Fashion-MNIST too), test accuracy and training time written to a results table.

    NPCONVNET_DATA_DIR=/work/shared/datasets python benchmarks/accuracy.py \\
        [--models tiny convnet ...] [--datasets mnist fashion-mnist] [--seed 0] \\
        [--out benchmarks/results/accuracy.json]

Each run: ``npconvnet.manual_seed(seed)``, ``zoo.get(model)``, then ``compile`` and ``fit`` with
the model's recipe (``zoo.recipe(model, dataset)``: optimizer, learning rate and schedule, batch
size, epochs, augmentation, label smoothing, preprocessing, subset), then ``evaluate`` on the
test set. Without ``--datasets``, every model runs on MNIST and the models of ``FASHION_MODELS``
on Fashion-MNIST as well.

The training time is the wall-clock time of ``fit``, minus the time spent measuring the
test accuracy after each epoch (a learning curve for the record only: nothing is selected on
it; ``--no-curve`` skips it). The machine (CPU model, core count) and its load average at the
start and the end are recorded, since the machine may be shared; so is the CPU time of the
training (all threads of the process), which a busy machine does not inflate as it does the
wall-clock time.

Results accumulate: the JSON file (``--out``) keeps one entry per (model, dataset, seed), and
re-running a model with the same seed replaces its entry; the Markdown table next to it (same name, ``.md``) is
rewritten from all entries.
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "accuracy.json"
DATASETS = ("mnist", "fashion-mnist")
FASHION_MODELS = ("vgg-mini", "resnet-mini")


def parse_args(argv=None):
    from npconvnet import zoo
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=zoo.names(), choices=zoo.names(), metavar="MODEL",
                        help=f"zoo models to train (default: all of {', '.join(zoo.names())})")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None,
                        help="datasets to train on (default: MNIST for every model, Fashion-MNIST for "
                             f"{', '.join(FASHION_MODELS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, shuffling, augmentation")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the recipe's epoch count (for quick trials; such rows say so)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: on a shared machine a second thread mostly spins)")
    parser.add_argument("--no-curve", action="store_true",
                        help="skip the test accuracy after every epoch")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding mnist/ and fashion-mnist/ (default: $NPCONVNET_DATA_DIR, "
                             "else ../shared/datasets next to the repository)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    return parser.parse_args(argv)


def data_dir(argument):
    if argument:
        return argument
    if os.environ.get("NPCONVNET_DATA_DIR"):
        return os.environ["NPCONVNET_DATA_DIR"]
    return str(ROOT.parent / "shared" / "datasets")


def machine():
    """The CPU model and core count, e.g. ``"Intel Xeon ... (x86_64), 2 CPUs"``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def load(dataset, directory, subset):
    """Train and test images (uint8, (N, H, W) or (N, H, W, C)) and labels, cut to the subset."""
    from npconvnet.datasets import load_dataset
    (x_train, y_train), (x_test, y_test), class_names = load_dataset(dataset, directory)
    subset = subset or {}
    return ((x_train[:subset.get("train")], y_train[:subset.get("train")].astype(int)),
            (x_test[:subset.get("test")], y_test[:subset.get("test")].astype(int)), class_names)


def run(model_name, dataset, args):
    """Train one zoo model on one dataset with its recipe; returns the result entry."""
    import numpy as np

    import npconvnet
    from npconvnet import zoo
    from npconvnet.callbacks import Callback

    recipe = zoo.recipe(model_name, dataset)
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    (x_train, y_train), (x_test, y_test), class_names = load(dataset, data_dir(args.data_dir),
                                                             recipe["subset"])
    channels = 1 if x_train.ndim == 3 else x_train.shape[3]
    input_shape = (channels,) + x_train.shape[1:3]

    npconvnet.manual_seed(args.seed)
    model = zoo.get(model_name, input_shape=input_shape, num_classes=len(class_names))
    model.preprocessing = zoo.build_preprocessing(recipe)     # tiny: pixels centred to [-0.5, 0.5]
    model.compile(optimizer=zoo.build_optimizer(recipe), loss=zoo.build_loss(recipe), metrics=["accuracy"])
    callbacks = [scheduler] if (scheduler := zoo.build_scheduler(recipe, model.optimizer)) else []

    curve = []

    class TestCurve(Callback):
        """Test accuracy after every epoch, timed apart from training."""
        seconds = cpu_seconds = 0.0

        def on_epoch_end(self, epoch, logs=None):
            start, cpu_start = time.perf_counter(), time.process_time()
            accuracy = model.evaluate(x_test, y_test, batch_size=500)["accuracy"]
            TestCurve.seconds += time.perf_counter() - start
            TestCurve.cpu_seconds += time.process_time() - cpu_start
            curve.append(round(accuracy, 4))
            print(f"  {model_name} / {dataset}: epoch {epoch + 1}/{recipe['epochs']} - train loss "
                  f"{logs['loss']:.4f} - test accuracy {100 * accuracy:.2f}% - lr {logs['lr']:.3g} - "
                  f"{time.perf_counter() - fit_start - TestCurve.seconds:.0f} s training", flush=True)

    if not args.no_curve:
        callbacks.append(TestCurve())
    print(f"{model_name} on {dataset}: {len(x_train):,} training images, {recipe['epochs']} epochs; "
          f"{recipe['description']}", flush=True)
    load_start = os.getloadavg()
    fit_start, fit_cpu_start = time.perf_counter(), time.process_time()
    model.fit(x_train, y_train, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
              augment=zoo.build_augmenter(recipe, seed=args.seed), callbacks=callbacks,
              seed=args.seed, verbose=0 if not args.no_curve else 2)
    train_seconds = time.perf_counter() - fit_start - TestCurve.seconds
    train_cpu_seconds = time.process_time() - fit_cpu_start - TestCurve.cpu_seconds
    scores = model.evaluate(x_test, y_test, batch_size=500)
    errors = int(round((1 - scores["accuracy"]) * len(x_test)))
    print(f"{model_name} on {dataset}: test accuracy {100 * scores['accuracy']:.2f}% ({errors} errors "
          f"in {len(x_test):,}), trained in {train_seconds / 60:.1f} min ({train_cpu_seconds / 60:.1f} min "
          f"of CPU time)", flush=True)
    return {"model": model_name, "dataset": dataset, "epochs": recipe["epochs"],
            "train_images": len(x_train), "test_images": len(x_test),
            "test_accuracy": round(float(scores["accuracy"]), 4), "test_errors": errors,
            "test_loss": round(float(scores["loss"]), 4), "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(train_cpu_seconds, 1),
            "test_accuracy_per_epoch": curve, "parameters": model.num_parameters(),
            "recipe": recipe, "recipe_overridden": args.epochs is not None, "seed": args.seed,
            "machine": machine(), "threads": args.threads, "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
            "numpy": np.__version__, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/accuracy.py --models " + model_name + " --datasets " + dataset
                       + (f" --seed {args.seed}" if args.seed else "")
                       + (f" --epochs {args.epochs}" if args.epochs is not None else "")
                       + (f" --threads {args.threads}" if args.threads != 1 else "")}


def minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(entries):
    """The results table, MNIST first, then by model in zoo order."""
    from npconvnet import zoo
    order = {name: index for index, name in enumerate(zoo.names())}
    entries = sorted(entries, key=lambda e: (DATASETS.index(e["dataset"]) if e["dataset"] in DATASETS
                                             else len(DATASETS), order.get(e["model"], len(order)),
                                             e["seed"]))
    lines = ["| model | dataset | epochs | seed | test accuracy | training time | CPU time | machine |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for e in entries:
        images = "" if e["test_images"] == 10000 else f" on {e['test_images']:,} test images"
        trained = "" if e["train_images"] in (60000,) else f" ({e['train_images']:,} training images)"
        epochs = f"{e['epochs']}{trained}" + (" (overridden)" if e.get("recipe_overridden") else "")
        lines.append(f"| {e['model']} | {e['dataset']} | {epochs} | {e['seed']} "
                     f"| {100 * e['test_accuracy']:.2f}%{images} "
                     f"| {minutes(e['train_seconds'])} | {minutes(e['train_cpu_seconds'])} "
                     f"| {e['machine']}, {e['threads']} thread{'s' if e['threads'] > 1 else ''} |")
    return "\n".join(lines) + "\n"


def set_threads(argv):
    """Fix the BLAS thread count from --threads before NumPy is first imported."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=1)
    threads = early.parse_known_args(argv)[0].threads
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)


def main(argv=None):
    set_threads(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    pairs = [(model, dataset) for dataset in (args.datasets or DATASETS) for model in args.models
             if args.datasets or dataset == "mnist" or model in FASHION_MODELS]
    out = args.out
    for model_name, dataset in pairs:
        entry = run(model_name, dataset, args)
        # Read the file again just before writing: another run may have added rows meanwhile.
        results = json.loads(out.read_text()) if out.exists() else {"results": []}
        results["results"] = [e for e in results["results"] if (e["model"], e["dataset"], e["seed"])
                              != (model_name, dataset, args.seed)] + [entry]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(results["results"]))
        print(markdown(results["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
