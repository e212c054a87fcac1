"""Callbacks hook into ``fit``, as in Keras: early stopping, learning-rate changes, checkpoints.

``fit`` calls, on every callback::

    on_train_begin(logs)
      on_epoch_begin(epoch, logs)
        on_batch_begin(batch, logs) / on_batch_end(batch, logs)   (running averages so far)
      on_epoch_end(epoch, logs)        logs = {"loss", "accuracy", "val_loss", ..., "lr"}
    on_train_end(logs)

``epoch`` counts from 0. A callback reaches the model as ``self.model`` and stops training by
setting ``self.model.stop_training = True``; ``self.params`` holds ``epochs``, ``steps``
(batches per epoch) and ``metrics`` (the keys ``on_epoch_end`` will find in ``logs``).

A callback that learns something during training (the best value so far, a schedule's epoch
count) returns it from ``state_dict()``; ``fit(checkpoint_dir=...)`` saves it with every
checkpoint, and ``fit(resume_from=...)`` gives it back through ``load_state_dict(state)``
right after ``on_train_begin``, so that a resumed run continues exactly where it stopped.
"""

import math
import numbers
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from . import checks, schedulers

try:
    from tqdm.auto import tqdm
except ImportError:                     # tqdm is optional: fall back to one line per epoch
    tqdm = None


class History:
    """What ``fit`` logged, epoch by epoch (Keras' ``History``).

    ``history``: ``{"loss": [...], "accuracy": [...], "val_loss": [...], "lr": [...], ...}``,
    one value per epoch; ``epoch``: the epoch numbers (from 0). A value missing in some epoch
    (validation in one ``fit`` call but not in another) is NaN, so all lists stay aligned.

    ``fit`` returns one (and keeps it as ``model.history``); it takes no arguments.

    Example::

        >>> history = History()
        >>> history.append(0, {"loss": 0.9, "lr": 0.1})
        >>> history.append(1, {"loss": 0.5, "val_loss": 0.7, "lr": 0.1})
        >>> history, history.history["val_loss"]
        (History(epochs=2, keys=['loss', 'lr', 'val_loss']), [nan, 0.7])
        >>> History.from_dict(history.to_dict()).history["loss"]
        [0.9, 0.5]
    """

    def __init__(self) -> None:
        self.epoch = []
        self.history = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the values logged at the end of ``epoch``."""
        for key in logs:
            self.history.setdefault(key, [math.nan] * len(self.epoch))
        for key, values in self.history.items():
            values.append(float(logs.get(key, math.nan)))
        self.epoch.append(int(epoch))

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict:
        """``{"epoch": [...], "history": {...}}``: plain lists, JSON-serialisable."""
        return {"epoch": list(self.epoch), "history": {key: list(values) for key, values in self.history.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> "History":
        """Rebuild a History from :meth:`to_dict`'s output, checking its structure."""
        if not isinstance(state, dict) or set(state) != {"epoch", "history"}:
            raise ValueError("a History must be a dict with the keys 'epoch' and 'history'")
        epochs, history = state["epoch"], state["history"]
        if not isinstance(epochs, list) or not all(isinstance(e, int) and not isinstance(e, bool)
                                                   for e in epochs):
            raise ValueError("History: 'epoch' must be a list of ints")
        if not isinstance(history, dict):
            raise ValueError("History: 'history' must be a dict of lists")
        for key, values in history.items():
            if not isinstance(values, list) or len(values) != len(epochs) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(f"History: {key!r} must be a list of {len(epochs)} numbers, one per epoch")
        restored = cls()
        restored.epoch = list(epochs)
        restored.history = {key: [float(v) for v in values] for key, values in history.items()}
        return restored

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class Callback:
    """Base class: every hook does nothing. Subclasses override the ones they need.

    The constructor takes no arguments; ``fit`` hands the callback its model and parameters
    (see the module's docstring for the hooks and their ``logs``).

    Attributes:
        model: the model being trained (``set_model``); None before ``fit``.
        params: ``{"epochs", "steps", "metrics"}`` of the ``fit`` call (``set_params``); in a
            distributed ``fit`` also ``"rank"`` and ``"world_size"``. The callbacks run on every
            rank, with the same logs, so that they decide alike; the built-in ones print and
            write files on rank 0 alone (:attr:`is_root`).

    Example::

        >>> import npconvnet
        >>> from npconvnet import Sequential
        >>> from npconvnet.layers import Dense
        >>> from npconvnet.optim import SGD
        >>> class StopBelow(Callback):        # stop once the training loss is small enough
        ...     def __init__(self, threshold):
        ...         super().__init__()
        ...         self.threshold = threshold
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         if logs["loss"] < self.threshold:
        ...             self.model.stop_training = True
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> npconvnet.manual_seed(0)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer=SGD(lr=0.5), loss="cross_entropy")
        >>> history = model.fit(x, y, epochs=20, batch_size=16, callbacks=[StopBelow(0.3)], verbose=0)
        >>> len(history), history.history["loss"][-1] < 0.3      # stopped after epoch 3 of 20
        (3, True)
    """

    def __init__(self) -> None:
        self.model = None
        self.params = {}

    def set_model(self, model: "npconvnet.training.Model") -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    @property
    def is_root(self) -> bool:
        """Whether this process prints and writes files: always, except on the ranks after
        the first of a distributed ``fit``."""
        return self.params.get("rank", 0) == 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        pass

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        pass

    def state_dict(self) -> dict:
        """What this callback has learned so far, for checkpoints: a dict of JSON values
        (numbers, strings, lists, None) and NumPy arrays. Nothing here: ``{}``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back :meth:`state_dict`'s output (``fit`` calls it after ``on_train_begin``)."""
        _checked_state(self, state, {})


# Checking saved states: checkpoints come from files, so every field is checked before use.

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_optional_int(value):
    return value is None or _is_int(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_state(owner, state, fields):
    """``state`` if it holds exactly the keys of ``fields`` (``{name: check}``) and each value
    passes its check; otherwise a ValueError naming the callback and the field."""
    name = type(owner).__name__
    if not isinstance(state, dict) or set(state) != set(fields):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{name}: a saved state must hold {sorted(fields)}, got {found}")
    for key, check in fields.items():
        if not check(state[key]):
            raise ValueError(f"{name}: invalid {key!r} in the saved state: {state[key]!r:.100}")
    return state


# The fields of a scheduler that change during training; the others are its configuration.
_SCHEDULER_FIELDS = {"last_epoch": _is_int, "base_lr": _is_number}
_PLATEAU_FIELDS = {"last_epoch": _is_int, "best": _is_number, "num_bad_epochs": _is_int,
                   "cooldown_counter": _is_int}


def _scheduler_fields(scheduler):
    return _PLATEAU_FIELDS if isinstance(scheduler, schedulers.ReduceLROnPlateau) else _SCHEDULER_FIELDS


def _scheduler_state(scheduler):
    return {key: getattr(scheduler, key) for key in _scheduler_fields(scheduler)}


def _load_scheduler_state(owner, scheduler, state):
    vars(scheduler).update(_checked_state(owner, state, _scheduler_fields(scheduler)))


def _is_scheduler(value):
    return isinstance(value, (schedulers.LRScheduler, schedulers.ReduceLROnPlateau))


class CallbackList:
    """The callbacks of one ``fit`` call, each hook forwarded to all of them in order.

    A learning-rate scheduler from ``npconvnet.schedulers`` may be listed directly; it is
    wrapped in a :class:`LearningRateScheduler`.

    Args:
        callbacks: the callbacks (and schedulers), in the order their hooks run; None for none.
        model: the model being trained, given to every callback.
        params: ``{"epochs", "steps", "metrics"}`` of the ``fit`` call, given to every callback.

    Example::

        >>> from npconvnet import Sequential, schedulers
        >>> from npconvnet.layers import Dense
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer="sgd", loss="cross_entropy")
        >>> step = schedulers.StepLR(model.optimizer, step_size=2)
        >>> callback_list = CallbackList([EarlyStopping(patience=3), step], model, {"epochs": 10})
        >>> [type(callback).__name__ for callback in callback_list.callbacks]
        ['EarlyStopping', 'LearningRateScheduler']
    """

    def __init__(self, callbacks: list | None, model: "npconvnet.training.Model", params: dict) -> None:
        self.callbacks = []
        for index, callback in enumerate(callbacks or []):
            if _is_scheduler(callback):
                callback = LearningRateScheduler(callback)
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks[{index}]: expected a Callback or a learning-rate "
                                f"scheduler, got {type(callback).__name__}")
            callback.set_model(model)
            callback.set_params(params)
            self.callbacks.append(callback)

    def on_train_begin(self, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            callback.on_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_batch_end(batch, logs)

    def _stateful(self):
        # The progress display has nothing to restore, and whether it is shown (verbose) may
        # change between a run and its resumption.
        return [callback for callback in self.callbacks if not isinstance(callback, ProgressBar)]

    def state_dict(self) -> list[dict]:
        """``[{"class": name, "state": callback.state_dict()}, ...]`` in order (no progress bar)."""
        return [{"class": type(callback).__name__, "state": callback.state_dict()}
                for callback in self._stateful()]

    def load_state_dict(self, states: list[dict]) -> None:
        """Give each callback its state back; the callbacks must be those of the saved run."""
        callbacks = self._stateful()
        saved = [state.get("class") if isinstance(state, dict) else None for state in states]
        if saved != [type(callback).__name__ for callback in callbacks]:
            raise ValueError(f"the checkpoint was written with the callbacks {saved}, but this fit "
                             f"has {[type(callback).__name__ for callback in callbacks]}; resume "
                             "with the same callbacks, in the same order")
        for callback, state in zip(callbacks, states):
            callback.load_state_dict(state.get("state"))


def _format_logs(logs):
    return " - ".join(f"{key}: {value:.4g}" if key == "lr" else f"{key}: {value:.4f}"
                      for key, value in logs.items())


def _is_terminal(stream):
    """Whether a progress bar on ``stream`` redraws in place: a terminal, or a notebook's output."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):       # no isatty, or a closed file
        return False


class ProgressBar(Callback):
    """What ``fit(verbose=...)`` shows on standard output.

    ``verbose=1``: a progress bar per epoch with the running loss and metrics (tqdm) when
    standard output is a terminal or a notebook; otherwise (a log file, a pipe, CI, nohup) or
    without tqdm, one line per epoch, as ``verbose=2``, since a bar would write hundreds of
    carriage-return updates per epoch into the log. ``verbose=2``: one line per epoch,
    ``Epoch 2/10 - 3.1s - loss: 0.1234 - accuracy: 0.9650 - val_loss: ...``. ``verbose=0``:
    nothing. ``"auto"``, Keras's default, is 1.

    ``fit(verbose=...)`` adds one itself; list one in ``callbacks`` only to print elsewhere.

    Args:
        verbose: 0, 1, 2 or ``"auto"`` (as 1), as above; default 1.
        print_fn: the function given each epoch's line, a callable taking one string; default
            ``print``. (The bar itself always goes to standard output.)

    Example::

        >>> from npconvnet import Sequential
        >>> from npconvnet.layers import Dense
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
        >>> lines = []
        >>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
        ...                     callbacks=[ProgressBar(verbose=2, print_fn=lines.append)])
        >>> for line in lines:
        ...     print(line)
        Epoch 1/2 - ...s - loss: ... - accuracy: ... - lr: 0.01
        Epoch 2/2 - ...s - loss: ... - accuracy: ... - lr: 0.01
    """

    def __init__(self, verbose: int | str = 1, print_fn: Callable[[str], None] = print) -> None:
        super().__init__()
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar on a terminal), 2 (one "
                             f"line per epoch) or 'auto' (1), got {verbose!r}")
        self.verbose = 1 if verbose == "auto" else int(verbose)
        self.print_fn = print_fn
        self.use_bar = False
        self.bar = None
        self.started = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Decided when training starts: standard output may have been redirected since.
        self.use_bar = self.verbose == 1 and tqdm is not None and _is_terminal(sys.stdout)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()
        if self.use_bar:
            self.bar = tqdm(total=self.params.get("steps"), unit="batch", dynamic_ncols=True,
                            file=sys.stdout, desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}")

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.set_postfix({key: f"{value:.4f}" for key, value in (logs or {}).items()},
                                 refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(_format_logs(logs or {}))
            self.bar.close()
            self.bar = None
            return
        if not self.verbose:
            return
        seconds = time.perf_counter() - self.started
        self.print_fn(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {seconds:.1f}s - "
                      + _format_logs(logs or {}))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:     # training stopped in the middle of an epoch
            self.bar.close()
            self.bar = None


# Monitoring a logged value.

def _resolve_mode(owner, mode, monitor):
    """``"min"`` or ``"max"``; ``"auto"`` maximises accuracy, precision, recall and F1 (as Keras)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    return "max" if name.startswith(("acc", "precision", "recall", "f1")) else "min"


class _Monitor(Callback):
    """Shared by the callbacks that watch one logged value (``monitor``)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"{type(self).__name__}: monitor must be the name of a logged value, "
                            f"e.g. 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.mode = _resolve_mode(type(self).__name__, mode, monitor)
        # Keras takes the size of min_delta, whatever its sign.
        self.min_delta = abs(checks.number(type(self).__name__, "min_delta", min_delta))

    def _check_monitor_is_logged(self):
        """Fail before the first epoch when the monitored value will never be logged."""
        logged = self.params.get("metrics")
        if logged is not None and self.monitor not in logged:
            raise ValueError(self._missing_message(logged))

    def _missing_message(self, available):
        hint = (" (validation values need validation_data or validation_split in fit)"
                if self.monitor.startswith("val_") else "")
        return (f"{type(self).__name__}: monitor={self.monitor!r} is not logged{hint}; "
                f"available: {', '.join(available)}")

    def _current(self, logs):
        if not logs or self.monitor not in logs:
            raise ValueError(self._missing_message(list(logs or {})))
        return float(logs[self.monitor])

    def _is_improvement(self, value, best):
        """``value < best - min_delta`` (mode "min") or ``value > best + min_delta`` ("max")."""
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def _worst(self):
        return math.inf if self.mode == "min" else -math.inf


class EarlyStopping(_Monitor):
    """Stop training once ``monitor`` has not improved for ``patience`` epochs in a row (Keras).

    An epoch improves when the value beats the best so far by more than ``min_delta``
    (lower for ``mode="min"``, higher for ``"max"``; ``"auto"`` picks ``"max"`` for accuracy-like
    names). With ``patience=0`` the first epoch without improvement stops training.
    ``restore_best_weights=True`` puts back the parameters and buffers of the best epoch when
    training ends, whether it stopped early or not. After training, ``best``, ``best_epoch``
    and ``stopped_epoch`` (None when it ran to the end) tell what happened.

    Args:
        monitor: the logged value to watch, e.g. ``"val_loss"`` (the default), ``"loss"`` or
            ``"val_accuracy"``; ``fit`` refuses a name it will not log.
        min_delta: the least change that counts as an improvement, a finite number (its size:
            the sign is ignored); default 0.
        patience: epochs in a row without improvement before training stops, an int >= 0;
            default 0.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default), as above.
        restore_best_weights: put back the best epoch's weights at the end (True or False);
            default False.
        verbose: 1 to print a line when it stops or restores weights, 0 (the default) for none.

    Example::

        >>> import npconvnet
        >>> from npconvnet import Sequential
        >>> from npconvnet.layers import Dense
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> npconvnet.manual_seed(0)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer="sgd", loss="cross_entropy")
        >>> stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        >>> history = model.fit(x, y, epochs=20, batch_size=16, callbacks=[stop], verbose=0,
        ...                     validation_data=(x, 1 - y))   # flipped labels: val_loss only rises
        >>> len(history), stop.best_epoch, stop.stopped_epoch
        (3, 0, 2)
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False, verbose: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = checks.integer("EarlyStopping", "patience", patience, at_least=0)
        self.restore_best_weights = checks.boolean("EarlyStopping", "restore_best_weights",
                                                   restore_best_weights)
        self.verbose = verbose

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._check_monitor_is_logged()
        self.wait = 0
        self.best = self._worst()
        self.best_epoch = self.stopped_epoch = self.last_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        current = self._current(logs)
        self.last_epoch = epoch
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose and self.is_root:
                print(f"EarlyStopping: {self.monitor} has not improved for {self.wait} epochs; "
                      f"stopping after epoch {epoch + 1}")

    def state_dict(self) -> dict:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "last_epoch": self.last_epoch,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict) -> None:
        expected = {name: (value.shape, value.dtype) for name, value in self.model.state_dict().items()}

        def is_weights(value):
            return value is None or (
                isinstance(value, dict) and set(value) == set(expected) and all(
                    isinstance(array, np.ndarray) and (array.shape, array.dtype) == expected[name]
                    for name, array in value.items()))

        vars(self).update(_checked_state(self, state, {
            "wait": _is_int, "best": _is_number, "best_epoch": _is_optional_int,
            "stopped_epoch": _is_optional_int, "last_epoch": _is_optional_int,
            "best_weights": is_weights}))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.load_state_dict(self.best_weights)
            if self.verbose and self.is_root:
                print(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1} "
                      f"({self.monitor} = {self.best:.4f})")


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras).

    The rate drops at the ``patience``-th epoch in a row without an improvement larger than
    ``min_delta`` (absolute), never below ``min_lr``; after a drop, ``cooldown`` epochs pass
    before epochs without improvement count again. Wraps
    :class:`npconvnet.schedulers.ReduceLROnPlateau`, created on the model's optimizer when
    training begins (``self.scheduler``).

    Args:
        monitor: the logged value to watch, e.g. ``"val_loss"`` (the default) or ``"loss"``;
            ``fit`` refuses a name it will not log.
        factor: the factor applied to the rate at each drop, a finite number in (0, 1);
            default 0.1.
        patience: epochs in a row without improvement before the rate drops, an int >= 0;
            default 10.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default: ``"max"`` for accuracy-like
            names, as in :class:`EarlyStopping`).
        min_delta: the least change that counts as an improvement, a finite number (its size);
            default 1e-4.
        cooldown: epochs after a drop before epochs without improvement count again, an
            int >= 0; default 0.
        min_lr: the rate never drops below this, a finite number >= 0; default 0.
        verbose: 1 to print a line at every drop, 0 (the default) for none.

    Example::

        >>> import npconvnet
        >>> from npconvnet import Sequential
        >>> from npconvnet.layers import Dense
        >>> from npconvnet.optim import SGD
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> npconvnet.manual_seed(0)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer=SGD(lr=0.5), loss="cross_entropy")
        >>> history = model.fit(x, y, epochs=4, batch_size=16, verbose=0,
        ...                     callbacks=[ReduceLROnPlateau(factor=0.5, patience=1)],
        ...                     validation_data=(x, 1 - y))   # flipped labels: val_loss only rises
        >>> history.history["lr"]
        [0.5, 0.5, 0.25, 0.125]
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 verbose: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.factor = checks.number("ReduceLROnPlateau", "factor", factor, greater_than=0, less_than=1)
        self.patience = checks.integer("ReduceLROnPlateau", "patience", patience, at_least=0)
        self.cooldown = checks.integer("ReduceLROnPlateau", "cooldown", cooldown, at_least=0)
        self.min_lr = checks.number("ReduceLROnPlateau", "min_lr", min_lr, at_least=0)
        self.verbose = verbose
        self.scheduler = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._check_monitor_is_logged()
        # The scheduler drops the rate once more than `patience` epochs were bad; Keras once
        # `patience` epochs were: hence patience - 1.
        self.scheduler = schedulers.ReduceLROnPlateau(
            self.model.optimizer, mode=self.mode, factor=self.factor,
            patience=max(self.patience - 1, 0), threshold=self.min_delta, threshold_mode="abs",
            cooldown=self.cooldown, min_lr=self.min_lr)

    def state_dict(self) -> dict:
        return _scheduler_state(self.scheduler)

    def load_state_dict(self, state: dict) -> None:
        _load_scheduler_state(self, self.scheduler, state)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        previous = self.model.optimizer.lr
        self.scheduler.step(self._current(logs))
        if self.verbose and self.is_root and self.model.optimizer.lr != previous:
            print(f"ReduceLROnPlateau: learning rate {previous:.4g} -> {self.model.optimizer.lr:.4g} "
                  f"after epoch {epoch + 1}")


class LearningRateScheduler(Callback):
    """Change the learning rate every epoch.

    ``schedule`` is either a scheduler from :mod:`npconvnet.schedulers` created on the model's
    optimizer (``StepLR(model.optimizer, 5)``), stepped at the end of every epoch
    (``ReduceLROnPlateau`` gets the value of ``monitor``), or, as in Keras, a function
    ``schedule(epoch, lr) -> new lr`` called at the start of every epoch.

    Args:
        schedule: a scheduler on the model's optimizer, or a function taking the epoch (an int,
            from 0) and the current rate and returning the new rate, a number >= 0.
        monitor: the logged value given to a ``ReduceLROnPlateau`` scheduler; unused by the
            others; default ``"val_loss"``.

    Example::

        >>> from npconvnet import Sequential, schedulers
        >>> from npconvnet.layers import Dense
        >>> from npconvnet.optim import SGD
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer=SGD(lr=0.1), loss="cross_entropy")
        >>> halve = LearningRateScheduler(lambda epoch, lr: lr / 2 if epoch else lr)
        >>> model.fit(x, y, epochs=4, batch_size=16, callbacks=[halve], verbose=0).history["lr"]
        [0.1, 0.05, 0.025, 0.0125]
        >>> model.compile(optimizer=SGD(lr=0.1), loss="cross_entropy")
        >>> step = LearningRateScheduler(schedulers.StepLR(model.optimizer, step_size=2, gamma=0.5))
        >>> model.fit(x, y, epochs=4, batch_size=16, callbacks=[step], verbose=0).history["lr"]
        [0.1, 0.1, 0.05, 0.05]
    """

    def __init__(self,
                 schedule: schedulers.LRScheduler | schedulers.ReduceLROnPlateau | Callable[[int, float], float],
                 monitor: str = "val_loss") -> None:
        super().__init__()
        if not (_is_scheduler(schedule) or callable(schedule)):
            raise TypeError("LearningRateScheduler: expected an npconvnet.schedulers scheduler or a "
                            f"function (epoch, lr) -> lr, got {type(schedule).__name__}")
        self.schedule = schedule
        self.monitor = monitor

    def on_train_begin(self, logs: dict | None = None) -> None:
        if _is_scheduler(self.schedule) and self.schedule.optimizer is not self.model.optimizer:
            raise ValueError(f"LearningRateScheduler: {type(self.schedule).__name__} changes the "
                             "learning rate of another optimizer than the model's; create it "
                             "after compile(), on model.optimizer")
        if isinstance(self.schedule, schedulers.ReduceLROnPlateau):
            logged = self.params.get("metrics")
            if logged is not None and self.monitor not in logged:
                raise ValueError(f"LearningRateScheduler: monitor={self.monitor!r} is not logged; "
                                 f"available: {', '.join(logged)}")

    def state_dict(self) -> dict:
        """The scheduler's epoch count and base rate, and for a closed-form schedule (``StepLR``,
        ``CosineAnnealingLR``, ...) its configuration; nothing for a schedule function, which
        gets the epoch and the current rate (saved with the optimizer) as arguments."""
        if not _is_scheduler(self.schedule):
            return {}
        state = _scheduler_state(self.schedule)
        if isinstance(self.schedule, schedulers.LRScheduler):
            state["config"] = self.schedule.get_config()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Take the saved state back. A closed-form schedule configured differently from the
        saved one (``CosineAnnealingLR`` with a larger ``T_max``, to train longer) goes on from
        the epoch reached as if the run had been started with the new configuration: the
        learning rate becomes the new schedule's rate for that epoch, instead of the one the old
        schedule ended on (0, for a cosine that ran its course). A run stopped after its first
        epoch therefore ends exactly as one started with the new configuration."""
        if not _is_scheduler(self.schedule):
            _checked_state(self, state, {})
            return
        saved_config = None
        if isinstance(self.schedule, schedulers.LRScheduler) and isinstance(state, dict) and "config" in state:
            state = dict(state)             # checkpoints written before the config was saved lack it
            saved_config = state.pop("config")
            if not isinstance(saved_config, dict):
                raise ValueError(f"LearningRateScheduler: invalid 'config' in the saved state: "
                                 f"{saved_config!r:.100}")
        _load_scheduler_state(self, self.schedule, state)
        if saved_config is not None and saved_config != self.schedule.get_config() and self.schedule.last_epoch:
            self.model.optimizer.lr = self.schedule.get_lr()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not _is_scheduler(self.schedule):
            lr = self.schedule(epoch, self.model.optimizer.lr)
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr >= 0:
                raise ValueError(f"LearningRateScheduler: the schedule returned {lr!r} for epoch "
                                 f"{epoch}; expected a learning rate >= 0")
            self.model.optimizer.lr = float(lr)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if isinstance(self.schedule, schedulers.ReduceLROnPlateau):
            if self.monitor not in (logs or {}):
                raise ValueError(f"LearningRateScheduler: monitor={self.monitor!r} is not logged; "
                                 f"available: {', '.join(logs or {})}")
            self.schedule.step(logs[self.monitor])
        elif _is_scheduler(self.schedule):
            self.schedule.step()


class ModelCheckpoint(_Monitor):
    """Save the model (``model.save``, atomic) after every epoch, or only when it improved.

    ``filepath`` may hold format fields: ``{epoch}`` (counted from 1, as Keras names files) and
    any logged value, e.g. ``"checkpoints/model-{epoch:02d}-{val_loss:.3f}.npz"``. Folders are
    created as needed. ``save_best_only=True`` saves only when ``monitor`` beats the best value
    so far (``mode`` as in :class:`EarlyStopping`). ``include_optimizer`` keeps the optimizer's
    state, so that training can resume from the file. ``saved`` lists the files written.

    Args:
        filepath: the file to write (a str or path, ``.npz``), with format fields as above.
        monitor: the logged value ``save_best_only`` watches; default ``"val_loss"``.
        save_best_only: save only when ``monitor`` improved (True or False); default False.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default), as in :class:`EarlyStopping`.
        include_optimizer: save the optimizer's state too (True or False); default True.
        verbose: 1 to print a line for every file saved, 0 (the default) for none.

    Example::

        >>> import os, tempfile
        >>> from npconvnet import Sequential, load_model
        >>> from npconvnet.layers import Dense
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> model = Sequential(Dense(4, 2))
        >>> model.compile(optimizer="sgd", loss="cross_entropy")
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     checkpoint = ModelCheckpoint(os.path.join(folder, "model-{epoch:02d}.npz"))
        ...     history = model.fit(x, y, epochs=2, batch_size=16, callbacks=[checkpoint], verbose=0)
        ...     names = [os.path.basename(path) for path in checkpoint.saved]
        ...     restored = load_model(checkpoint.saved[-1])
        >>> names, bool((restored.predict(x) == model.predict(x)).all())
        (['model-01.npz', 'model-02.npz'], True)
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", include_optimizer: bool = True, verbose: int = 0) -> None:
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = checks.boolean("ModelCheckpoint", "save_best_only", save_best_only)
        self.include_optimizer = checks.boolean("ModelCheckpoint", "include_optimizer", include_optimizer)
        self.verbose = verbose
        self.best = self._worst()
        self.saved = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.save_best_only:
            self._check_monitor_is_logged()

    def state_dict(self) -> dict:
        return {"best": self.best, "saved": list(self.saved)}

    def load_state_dict(self, state: dict) -> None:
        def is_paths(value):
            return isinstance(value, list) and all(isinstance(path, str) for path in value)

        state = _checked_state(self, state, {"best": _is_number, "saved": is_paths})
        self.best, self.saved = state["best"], list(state["saved"])

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            current = self._current(logs)
            if not self._is_improvement(current, self.best):
                return
            self.best = current
        path = self._path(epoch, logs)
        if self.is_root:                # every rank holds the same model: one file is enough
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self.model.save(path, include_optimizer=self.include_optimizer)
        self.saved.append(path)
        if self.verbose and self.is_root:
            print(f"ModelCheckpoint: saved {path}")

    def _path(self, epoch, logs):
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill in filepath {self.filepath!r} ({error!r}); "
                             f"available fields: epoch, {', '.join(logs)}") from None
