"""``npconvnet train``: the run's settings (a recipe, the command line, or run.json when
resuming), training through ``fit`` with a checkpoint after every epoch, and the run's files.
With ``--distributed`` (in every process of ``mpirun -n K``) ``fit`` trains data-parallel and
rank 0 alone prints and writes the files."""

import contextlib
import csv
import io
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .. import __version__, parallel, plots, zoo
from ..atomic import atomic_write
from ..callbacks import Callback
from ..data import oversample, train_val_split, undersample
from ..distributed import Communicator
from ..rng import manual_seed
from ..models import Sequential, load_checkpoint
from ..training import CHECKPOINT_FILE, TrainingDivergedError, unfinished_checkpoint
from .common import (EXIT_DIVERGED, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EXPECTED_ERRORS,
                     MODEL_FILE, SETTINGS_FILE, CliError, TrainingDiverged, dataset, dataset_label, one_line,
                     read_settings, sample_shape, skip_pictures, write_json)

#: What ``npconvnet train`` does without --model: the zoo's convnet with a recipe (in the
#: zoo's recipe format) short enough to run in a couple of minutes on two CPU cores.
DEFAULT_MODEL = "convnet"
QUICK_RECIPE = {"description": "The quick recipe: Adam at lr 0.005 with cosine annealing, batch "
                               "size 64, 3 epochs.",
                "optimizer": "adam", "optimizer_kwargs": {}, "lr": 0.005, "batch_size": 64,
                "epochs": 3, "schedule": {"name": "cosine"}, "augment": False, "label_smoothing": 0.0,
                "preprocessing": "scale", "subset": None}
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "rmsprop")
CURVES_FILE = "curves.png"


class HistoryFiles(Callback):
    """Writes ``history.csv`` and ``history.json`` of all epochs in ``model.history`` (those of
    earlier, resumed runs included) after every epoch, atomically. Epochs count from 0, as in
    Keras."""

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        if self.is_root:            # rank 0 alone writes, in a distributed run
            self.write(self.model.history)

    def write(self, history):
        if history is None or not len(history):
            return
        state = history.to_dict()
        write_json(self.folder / "history.json", state)
        keys = list(state["history"])
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["epoch"] + keys)
        for row, epoch in enumerate(state["epoch"]):
            writer.writerow([epoch] + [repr(state["history"][key][row]) for key in keys])
        atomic_write(self.folder / "history.csv", lambda file: file.write(table.getvalue().encode()))


# ---------------------------------------------------------------------------- the run's settings

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


def resolve_run(args):
    """The run's settings: ``{"model", "dataset", "seed", "validation_split", "recipe"}``.

    A new run takes the quick recipe (no --model) or the zoo's recipe of --model, then the
    command-line options; a resumed run takes run.json beside the checkpoint, and only --epochs
    from the command line (the other options must say what run.json says).
    """
    if args.resume is not None:
        return _recorded_run(args)
    data = args.dataset or "mnist"
    model = args.model or DEFAULT_MODEL
    recipe = QUICK_RECIPE if args.model is None else zoo.recipe(model, dataset_label(data))
    run = {"model": model, "dataset": _dataset_key(data), "seed": 0, "validation_split": 0.1,
           "class_weight": None, "balance": None, "recipe": recipe}
    for option in ("seed", "validation_split", "class_weight", "balance"):
        if getattr(args, option) is not None:
            run[option] = getattr(args, option)
    run["recipe"] = _apply_overrides(run["recipe"], args)
    return run


def _dataset_key(data):
    """A dataset as run.json records it: a known name, or a folder's absolute path (so that
    --resume works from anywhere)."""
    name = str(data).lower().replace("_", "-")
    if name in ("mnist", "fashion-mnist"):
        return name
    return str(Path(data).resolve()) if Path(data).is_dir() else str(data)


def _class_weight_setting(value):
    """--class-weight as run.json records it (JSON keys are text), or as fit takes it back."""
    if isinstance(value, dict):
        return {str(label): weight for label, weight in value.items()}
    return value


def _fit_class_weight(value):
    return {int(label): weight for label, weight in value.items()} if isinstance(value, dict) else value


def _class_weight_text(value):
    """``balanced`` or ``3:5,7:2``: class weights as --class-weight takes them."""
    if isinstance(value, dict):
        return ",".join(f"{label}:{weight:.12g}" for label, weight in value.items())
    return value


def _check_class_weight(run, class_names):
    """A CliError when --class-weight names a class the dataset does not have."""
    weights = _fit_class_weight(run.get("class_weight"))
    if not isinstance(weights, dict):
        return
    unknown = sorted(label for label in weights if label >= len(class_names))
    if unknown:
        raise CliError(f"--class-weight gives a weight to class {unknown[0]}, but {run['dataset']} has "
                       f"{len(class_names)} classes (labels 0-{len(class_names) - 1})")


def _recorded_options(run):
    """What each train option was in the recorded ``run``, as argparse would give it (runs
    recorded before --class-weight and --balance existed had neither)."""
    recipe = run["recipe"]
    return {"model": run["model"], "seed": run["seed"], "validation_split": run["validation_split"],
            "class_weight": _fit_class_weight(run.get("class_weight")), "balance": run.get("balance"),
            "batch_size": recipe["batch_size"], "optimizer": recipe["optimizer"], "lr": recipe["lr"],
            "weight_decay": (recipe.get("optimizer_kwargs") or {}).get("weight_decay", 0),
            "augment": bool(recipe.get("augment"))}


def _option_text(option, value):
    """``--lr 0.005``, ``--no-augment``: an option as it is typed."""
    flag = "--" + option.replace("_", "-")
    if option == "augment":
        return flag if value else "--no-augment"
    if value is None:
        return f"no {flag}"
    if option == "class_weight":
        return f"{flag} {_class_weight_text(value)}"
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
    run = read_settings(folder) or {}
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
    (x_train, y_train), (x_test, y_test), class_names = dataset(run["dataset"], data_dir)
    subset = run["recipe"].get("subset") or {}
    x_train, y_train = x_train[:subset.get("train")], y_train[:subset.get("train")]
    x_test, y_test = x_test[:subset.get("test")], y_test[:subset.get("test")]
    if not run["validation_split"]:
        return _balanced((x_train, y_train), run), None, (x_test, y_test), class_names
    fit, validation = train_val_split(x_train, y_train, val_fraction=run["validation_split"],
                                      seed=run["seed"], stratify=True)
    return _balanced(fit, run), validation, (x_test, y_test), class_names


def _balanced(fit, run):
    """The training images resampled as --balance asks (validation and test images never are)."""
    resample = {"over": oversample, "under": undersample, None: None}[run.get("balance")]
    return fit if resample is None else resample(*fit, seed=run["seed"])


# ---------------------------------------------------------------------------- checkpoints

def _load_checkpoint(path):
    """``(model, training state)`` of a checkpoint written by ``fit(checkpoint_dir=...)``."""
    if not Path(path).is_file():
        raise CliError(f"{path}: no such checkpoint file")
    return load_checkpoint(path)


def _resume(path, run):
    """The checkpoint's model and the epoch to continue from."""
    model, training = _load_checkpoint(path)
    initial_epoch = training["next_epoch"]
    epochs = run["recipe"]["epochs"]
    if initial_epoch >= epochs:
        raise CliError(f"{path} has already trained {initial_epoch} of {epochs} epochs; pass "
                       f"--epochs N with N > {initial_epoch} to train further")
    return model, initial_epoch


def _refuse_unfinished_run(out):
    """A CliError if ``out`` holds a run that a new one must not replace: a checkpoint that
    cannot be read, or one with fewer epochs than its run.json plans (and not stopped early)."""
    checkpoint = out / CHECKPOINT_FILE
    if not checkpoint.exists():
        return
    try:
        recipe = (read_settings(out) or {}).get("recipe")
        planned = recipe.get("epochs") if isinstance(recipe, dict) else None
        planned = planned if isinstance(planned, int) else None
        training = unfinished_checkpoint(checkpoint, planned, model_class=Sequential)
    except (OSError, ValueError, CliError) as error:
        raise CliError(f"{out} holds a run that cannot be read ({error}); it was left as it is: "
                       "choose another --out, or add --overwrite to replace it") from None
    if training is None:
        return
    progress = (f"{training['next_epoch']} of {planned} epochs" if planned is not None
                else f"{training['next_epoch']} epochs trained")
    raise CliError(f"{out} holds an unfinished run ({progress}): resume it with --resume {checkpoint}, "
                   "or choose another --out, or add --overwrite")


def _divergence_message(error, run):
    """One line for a TrainingDivergedError of npconvnet train: where, what was kept, what to try."""
    lr = run["recipe"]["lr"]
    what = (f"the loss became {error.loss}" if error.loss is not None
            else "the weights became NaN or infinite")
    kept = f"after epoch {error.checkpoint_epoch}" if error.checkpoint_epoch else "before training"
    return (f"training diverged in epoch {error.epoch + 1}/{error.epochs}, batch {error.batch + 1}/"
            f"{error.steps}: {what} ({error.last_loss()}); {error.checkpoint} keeps the model {kept} "
            f"and {MODEL_FILE} was not written. Train again with a lower learning rate, e.g. "
            f"--lr {lr / 10:g} (this run had --lr {lr:g})")


# ---------------------------------------------------------------------------- the command

def _format_duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


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
          f"augmentation {'on' if recipe.get('augment') else 'off'}, seed {run['seed']}"
          + (f", {run['balance']}sampled to the same count per class" if run.get("balance") else "")
          + (f", class weights {_class_weight_text(run['class_weight'])}" if run.get("class_weight") else ""))


def _describe_stretch(recipe, planned):
    """Say how a schedule goes on when --epochs raises the epochs a resumed run planned."""
    schedule = recipe.get("schedule") or {}
    if schedule.get("name") == "cosine" and "T_max" not in schedule and recipe["epochs"] != planned:
        print(f"The cosine schedule now spans {recipe['epochs']} epochs instead of {planned}: it goes "
              f"on as if the run had been started with --epochs {recipe['epochs']}")


def _abort_message(error):
    """What a rank prints before it stops a distributed run, and the exit status: one line for
    bad input, as ``main`` prints it, the traceback for a bug."""
    if isinstance(error, EXPECTED_ERRORS):
        return f"error: {one_line(error)}", getattr(error, "exit_status", EXIT_USAGE)
    return "internal error: " + "".join(traceback.format_exception(error)).rstrip(), EXIT_INTERNAL_ERROR


def cmd_train(args):
    run = resolve_run(args)
    if not args.distributed:
        return _train(args, run, None)
    communicator = Communicator()
    if args.threads is None and parallel.ENVIRONMENT_VARIABLE not in os.environ:
        # The ranks on one machine share its cores (main restores the count afterwards).
        parallel.set_num_threads(max(1, parallel.get_num_threads() // communicator.local_size()))
    # An error on one rank would leave the others waiting for it in their next collective: it
    # stops them all. A divergence is seen by every rank alike, and reported by rank 0.
    with communicator.abort_on_error(passing=(TrainingDiverged,), describe=_abort_message):
        try:
            with contextlib.ExitStack() as stack:
                if not communicator.is_root:        # rank 0 alone prints
                    stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
                return _train(args, run, communicator)
        except TrainingDiverged:
            if communicator.is_root:
                raise
            return EXIT_DIVERGED


def _train(args, run, communicator):
    """The run, in this process alone (``communicator`` None) or as one of its ranks."""
    is_root = communicator is None or communicator.is_root
    recipe = run["recipe"]
    out = Path(args.out if args.out is not None else
               Path(args.resume).parent if args.resume is not None else
               Path("runs") / f"{run['model']}-{dataset_label(run['dataset'])}")
    if args.resume is None and not args.overwrite:
        if communicator is None:
            _refuse_unfinished_run(out)
        else:
            communicator.root_call(_refuse_unfinished_run, out)
    (x_fit, y_fit), validation, (x_test, y_test), class_names = _training_data(run, args.data_dir)
    _check_class_weight(run, class_names)
    shape = sample_shape(x_fit)
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
        planned = read_settings(Path(args.resume).parent)["recipe"]["epochs"]
    else:
        manual_seed(run["seed"])
        model = zoo.get(run["model"], shape, len(class_names))
        model.class_names = list(class_names)
        model.preprocessing = preprocessing
        model.compile(optimizer=zoo.build_optimizer(recipe), loss=zoo.build_loss(recipe),
                      metrics=["accuracy"])
        initial_epoch = 0
        planned = recipe["epochs"]
    # A resumed run gets its schedule's state (and the learning rate) back from the checkpoint;
    # a cosine stretched over more epochs goes on with the rate it gives the next epoch.
    scheduler = zoo.build_scheduler(recipe, model.optimizer)
    augmenter = zoo.build_augmenter(recipe, seed=run["seed"])

    if is_root:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SETTINGS_FILE, {**run, "class_weight": _class_weight_setting(run.get("class_weight")),
                                         "version": __version__})
    checkpoint = out / CHECKPOINT_FILE
    history_files = HistoryFiles(out)
    _describe_run(run, model, initial_epoch, x_fit, validation, x_test, shape, class_names)
    _describe_stretch(recipe, planned)

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
                      resume_from=args.resume, overwrite=True,    # checked above, with run.json
                      class_weight=_fit_class_weight(run.get("class_weight")),
                      distributed=communicator or False)
    except TrainingDivergedError as error:
        raise TrainingDiverged(_divergence_message(error, run)) from error
    except KeyboardInterrupt:
        if not is_root:
            return EXIT_INTERRUPTED
        history_files.write(model.history)
        if not checkpoint.is_file():
            print("\nInterrupted before training started: no checkpoint was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        _, saved = _load_checkpoint(checkpoint)     # the file, in case Ctrl-C hit its writing
        print(f"\nInterrupted. {checkpoint} holds the run after epoch {saved['next_epoch']}; "
              f"continue with:\n  npconvnet train --resume {checkpoint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - started
    if not is_root:
        return EXIT_OK

    model.save(out / MODEL_FILE)
    history_files.write(model.history)
    written = [MODEL_FILE, "history.csv", "history.json"]
    try:
        plots.plot_history(model.history, out / CURVES_FILE,
                           title=f"{run['model']} on {dataset_label(run['dataset'])}")
        written.append(CURVES_FILE)
    except ImportError as error:        # matplotlib is optional: the model is what matters
        skip_pictures([CURVES_FILE], error)
    scores = model.evaluate(x_test, y_test)
    print(f"Trained in {_format_duration(seconds)}. Files in {out}: "
          f"{', '.join(written + [CHECKPOINT_FILE, SETTINGS_FILE])}")
    print(f"Test accuracy: {scores['accuracy']:.2%} (loss {scores['loss']:.4f}) on {len(x_test):,} test images")
    return EXIT_OK
