"""The Keras workflow: ``compile``, ``fit``, ``evaluate``, ``predict`` and ``save`` on a model::

    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=128, validation_split=0.1, seed=0)
    model.evaluate(x_test, y_test)          # {"loss": 0.04, "accuracy": 0.987}
    model.predict(x_test)                   # (N, classes) probabilities

Inputs: images as uint8 pixels or floats, shaped ``(N, H, W)``, ``(N, H, W, C)`` or
``(N, C, H, W)``, or feature rows ``(N, D)``; arrays, or the paths of ``.npy`` files, which
are memory-mapped (``np.load(path, mmap_mode="r")``). Each batch is read and converted on its
own (uint8 scaled to [0, 1], then NCHW in the model's dtype), so a dataset larger than memory
works. Floats are taken as pixels already scaled to [0, 1]. Targets: integer class labels
``(N,)`` or one-hot rows ``(N, classes)``.

Preprocessing: ``model.preprocessing`` says how the model wants its pixels, and is saved with
it: None takes them in [0, 1]; ``"center"`` takes ``pixels / 255 - 0.5`` in [-0.5, 0.5] (the
classic NumPy-CNN tutorial's inputs), and the shift is applied batch by batch, to uint8
pixels and [0, 1] floats alike, by ``fit``, ``evaluate``, ``predict`` and ``preprocess_input``.

Randomness: ``fit(seed=s)`` derives one generator per epoch from ``(s, epoch)``; it shuffles,
augments and (through ``npconvnet.rng.manual_seed``) draws the dropout masks of that epoch.
The same seed therefore gives bit-identical training. The global generator is left as it was
before ``fit`` (after one draw for the seed, when none is given).

Checkpoints: ``fit(..., checkpoint_dir=d)`` writes ``d/checkpoint.npz`` when training starts
and at the end of every epoch, atomically (a temporary file renamed over the old one), with
everything the run needs to go on: weights, optimizer state, learning rate, history, the
epoch, the seed, the global generator's state, and the state of every callback (schedulers,
EarlyStopping, ReduceLROnPlateau, ...). A run killed at any moment goes on with the same call
plus ``resume_from``::

    model.fit(x, y, epochs=10, seed=0, callbacks=cb, checkpoint_dir="run")       # killed
    model.fit(x, y, epochs=10, seed=0, callbacks=cb, checkpoint_dir="run",
              resume_from="run/checkpoint.npz")

on a model of the same architecture, compiled with the same loss and optimizer class (a new
one, or ``load_model("run/checkpoint.npz")``), with new callbacks of the same kinds, in the same
order. Everything is restored from the checkpoint, the learning rate included, and the weights
and history at the end are bit-for-bit those of a run never interrupted. Settings that would
change the result (seed, batch size, number of samples, shuffle) must be those of the saved
run. To go on with other settings, e.g. a lower learning rate, use ``load_model(path)``, change
them, and ``fit(..., initial_epoch=k)``.

A checkpoint already in ``checkpoint_dir`` is never lost by accident: without ``resume_from``,
``fit`` raises ``FileExistsError`` when it holds an unfinished run (fewer epochs than this
call's ``epochs``, and not stopped early) or cannot be read; ``overwrite=True`` replaces it.
A finished run's checkpoint is replaced, so that the same call can be run again.

Data parallelism: ``fit(..., distributed=True)``, in every process of ``mpirun -n K``, trains
on K ranks, each on its shard of every batch, with the gradients and the batch-normalization
statistics summed over the ranks: the weights are those of one process with the same batch
size, up to float32 rounding. Rank 0 alone prints and writes the checkpoint; see
``npconvnet.distributed``.

Threads: on several threads (``npconvnet.set_num_threads``) each training step gives each
thread a shard of the batch in the same way, with the same results to float32 rounding (see
``npconvnet.shards``).

Divergence: a batch loss that is NaN or infinite (or weights that became so) stops ``fit``
with :class:`TrainingDivergedError` before anything is saved; the checkpoint keeps the last
good epoch, and ``save_model`` refuses non-finite weights anyway.
"""

import json
import math
import numbers
import os
import tokenize
import warnings
from types import SimpleNamespace

import numpy as np

from . import data, losses, optim, processes, rng, serialization, shards
from . import distributed as dist
from . import metrics as metric_functions
from .callbacks import CallbackList, History, ProgressBar
from .layers.activations import Softmax, softmax
from .layers.base import layer_to_config

#: The file ``fit(checkpoint_dir=...)`` writes in that folder.
CHECKPOINT_FILE = "checkpoint.npz"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite during ``fit``: the weights are no longer usable.

    Attributes: ``epoch`` and ``batch`` (from 0) where it happened, of ``epochs`` and ``steps``
    (batches per epoch), ``loss`` (the bad value, None when the weights became non-finite at
    the end of an epoch), ``last_finite_loss`` (the last finite batch loss, None if there was
    none), ``lr`` (the learning rate), ``checkpoint`` (the checkpoint file holding the last good
    epoch, None without one) and ``checkpoint_epoch`` (how many epochs that file holds: 0 is
    the model before training; None without a checkpoint).
    """

    def __init__(self, message, epoch, batch, loss, last_finite_loss, lr, checkpoint, epochs=None,
                 steps=None, checkpoint_epoch=None):
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss
        self.last_finite_loss, self.lr, self.checkpoint = last_finite_loss, lr, checkpoint
        self.epochs, self.steps, self.checkpoint_epoch = epochs, steps, checkpoint_epoch

    def last_loss(self):
        """``"the last finite loss was 0.312"``, or ``"no batch had a finite loss"``."""
        return _last_loss(self.last_finite_loss)


def _last_loss(last_finite_loss):
    return (f"the last finite loss was {last_finite_loss:.6g}" if last_finite_loss is not None
            else "no batch had a finite loss")


def _as_array(value, where, name):
    """An ndarray as it is (a ``np.memmap`` stays one), the path of a ``.npy`` file memory-mapped,
    anything else through ``np.asarray``."""
    if value is None:
        raise TypeError(f"{where}: {name} is None; expected an array")
    if isinstance(value, (str, os.PathLike)):
        return _open_npy(value, where, name)
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _open_npy(path, where, name):
    """The array in the ``.npy`` file ``path``, memory-mapped: batches are read when used."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: {name}: no such file: {path!r}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    # NumPy lets tokenize.TokenError through from some malformed .npy headers.
    except (ValueError, OSError, EOFError, tokenize.TokenError) as error:
        raise ValueError(f"{where}: {name}: {path} is not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise ValueError(f"{where}: {name}: {path} is an .npz archive; give one .npy file per array")
    return array


def _check_count(where, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_verbose(where, verbose):
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"{where}: verbose must be 0, 1 or 2, got {verbose!r:.100}")
    return verbose


def _labels(y):
    """Class labels ``(N,)`` of integer labels or of one-hot / probability rows (their argmax)."""
    return np.asarray(y) if y.ndim == 1 else np.asarray(y).argmax(axis=1)


def _sample_weights(y, sample_weight, class_weight, num_classes):
    """fit's weight of every training sample, ``(N,)`` float64, or None when all weigh 1."""
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(len(y))
    if sample_weight is not None:
        if sample_weight.shape != (len(y),):
            raise ValueError(f"fit: sample_weight must hold one weight per training sample, shape "
                             f"({len(y)},), got shape {sample_weight.shape}")
        if not (np.issubdtype(sample_weight.dtype, np.floating) or np.issubdtype(sample_weight.dtype, np.integer)) \
                or np.issubdtype(sample_weight.dtype, np.bool_):
            raise TypeError(f"fit: sample_weight must hold numbers, got dtype {sample_weight.dtype}")
        if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
            raise ValueError("fit: sample_weight must be finite and >= 0 (NaN, infinite or negative "
                             "weights found)")
        weights *= sample_weight
    if class_weight is not None:
        weights *= _class_weights(class_weight, num_classes, _labels(y))
    if not weights.any():
        raise ValueError("fit: every sample weighs 0 (sample_weight and class_weight leave nothing to learn from)")
    return weights


def _class_weights(class_weight, num_classes, labels):
    """The weight of every sample from ``class_weight`` (see ``fit``)."""
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"fit: class_weight must be a dict {{label: weight}} or 'balanced', "
                             f"got {class_weight!r:.100}")
        counts = np.bincount(labels, minlength=num_classes)
        per_class = len(labels) / (num_classes * np.maximum(counts, 1))
        return per_class[labels]
    if not isinstance(class_weight, dict):
        raise TypeError(f"fit: class_weight must be a dict {{label: weight}} or 'balanced', got "
                        f"{type(class_weight).__name__}")
    per_class = np.ones(num_classes)
    for label, weight in class_weight.items():
        if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < num_classes:
            raise ValueError(f"fit: class_weight's labels must be ints in [0, {num_classes}), got {label!r:.100}")
        if (isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight)
                or weight < 0):
            raise ValueError(f"fit: class_weight[{label}] must be a finite number >= 0, got {weight!r:.100}")
        per_class[label] = weight
    return per_class[labels]


def _check_shards(samples, batch_size, ranks, per_rank):
    """A ValueError unless every batch of ``samples`` in batches of ``batch_size`` has
    ``per_rank`` samples for each of ``ranks`` ranks (the last batch is the smallest)."""
    smallest = samples - (math.ceil(samples / batch_size) - 1) * batch_size
    if ranks > 1 and smallest < ranks * per_rank:       # one rank holds every batch whole
        reason = "one per rank" if per_rank == 1 else f"{per_rank} per rank, for the model's Dropout layers"
        raise ValueError(f"fit: distributed training on {ranks} ranks needs at least {ranks * per_rank} "
                         f"samples in every batch ({reason}), but {samples} training samples in batches "
                         f"of {batch_size} end with a batch of {smallest}; choose another batch_size, "
                         "or fewer ranks")


def _augmenter(augment):
    """None, the default augmenter (``augment=True``), or the given callable ``f(batch, rng=...)``."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return data.default_augmenter()
    if callable(augment):
        return augment
    raise TypeError(f"fit: augment must be None, True, or an Augmenter, got {type(augment).__name__}")


def unfinished_checkpoint(path, epochs=None, *, model_class):
    """The training state in the checkpoint ``path`` when it holds a run that a new run must
    not replace: one not stopped early that trained fewer than ``epochs`` epochs (with
    ``epochs=None``, any not stopped early; the checkpoint does not record the epochs its run
    planned). None when there is no such file or its run is finished. A file that is not a
    readable checkpoint raises its ``ValueError`` or ``OSError``. ``model_class``: the class
    the checkpoint's model is read as (see ``serialization.load_checkpoint``)."""
    if not os.path.exists(path):
        return None
    _, training = serialization.load_checkpoint(path, model_class=model_class)
    finished = training["stop_training"] or (epochs is not None and training["next_epoch"] >= epochs)
    return None if finished else training


def _refuse_unfinished_checkpoint(path, epochs, model_class):
    """FileExistsError if ``path`` holds a checkpoint that a new run must not replace: one
    that cannot be read, or one of an unfinished run (:func:`unfinished_checkpoint`)."""
    ways = (f"pass resume_from={path!r} to go on with it, choose another checkpoint_dir, "
            "or pass overwrite=True to replace it")
    try:
        training = unfinished_checkpoint(path, epochs, model_class=model_class)
    except (OSError, ValueError) as error:
        raise FileExistsError(f"fit: {path} exists but is not a readable checkpoint ({error}); it "
                              "was left as it is: move it away, choose another checkpoint_dir, or "
                              "pass overwrite=True to replace it") from None
    if training is not None:
        raise FileExistsError(f"fit: {path} holds an unfinished run ({training['next_epoch']} of "
                              f"{epochs} epochs trained): {ways}")


def layer_outputs(network, x):
    """The output of every layer of ``network`` (a ``Sequential``) for the model input ``x``,
    computed in evaluation mode: ``[(layer, output), ...]`` in order, the last output being the
    network's. For looking inside a network, e.g. at feature maps; ``x`` is what the first
    layer takes (``model.preprocess_input(images)`` makes it from images). The network's mode
    is restored afterwards."""
    previous = network.training
    network.eval()
    try:
        outputs = []
        for layer in network.layers:
            x = layer.forward(x)
            outputs.append((layer, x))
        return outputs
    finally:
        network.train(previous)


class Model:
    """Training methods for a layer that holds a whole network (``npconvnet.Sequential`` is a
    ``layers.Sequential`` with these added; see ``npconvnet.models``).

    After ``compile``: ``optimizer``, ``loss`` (objects) and ``metric_names``. ``history`` is a
    :class:`~npconvnet.callbacks.History` of every epoch trained so far, kept across ``fit``
    calls and model files. ``input_shape`` (one sample's shape, set by the first ``fit``),
    ``class_names`` and ``preprocessing`` (set them yourself; see the module docstring) are
    saved with the model.
    """

    optimizer = None
    loss = None
    metric_names = ()
    history = None
    input_shape = None
    class_names = None
    preprocessing = None
    stop_training = False

    # Setup.
    def compile(self, optimizer: optim.Optimizer | str = "adam", loss: losses.Loss | str = "cross_entropy",
                metrics: str | list[str] | tuple[str, ...] | None = ("accuracy",)) -> None:
        """Choose the optimizer, the loss and the metrics logged during training.

        Args:
            optimizer: an ``npconvnet.optim`` object or a name (``"adam"``, the default,
                ``"sgd"``, ``"momentum"``, ...); one created without parameters is bound to
                this model's.
            loss: a loss object or a name (``"cross_entropy"``, the default, ``"mse"``).
            metrics: names from :data:`npconvnet.metrics.METRIC_NAMES` (``"accuracy"``, the
                default, ``"f1_macro"``, ...), computed over each whole epoch; one name, or
                None for none.

        Raises:
            ValueError: an unknown name, or an optimizer created for other parameters.
        """
        loss = losses.get(loss)
        metric_names = [metrics] if isinstance(metrics, str) else list(metrics or [])
        for name in metric_names:
            metric_functions.get(name)
        optimizer = optim.get(optimizer)
        parameters = self.parameters()
        if optimizer.params is None:
            optimizer.bind(parameters)
        elif len(optimizer.params) != len(parameters) or any(
                mine is not theirs for mine, theirs in zip(parameters, optimizer.params)):
            raise ValueError("compile: the optimizer was created for other parameters than this "
                             "model's; create it without parameters (e.g. optim.Adam(lr=1e-3)) "
                             "or with model.parameters()")
        self.optimizer, self.loss, self.metric_names = optimizer, loss, metric_names

    def _require_compiled(self, where):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"{where}: the model is not compiled; call model.compile(optimizer=..., "
                               f"loss=..., metrics=[...]) before model.{where}()")

    # Inputs and targets.
    def _expected_channels(self):
        """``in_channels`` of the first convolution, depth-first (None without one)."""
        pending = [self]
        while pending:
            layer = pending.pop(0)
            if hasattr(layer, "in_channels"):
                return layer.in_channels
            pending = [child for _, child in layer.children()] + pending
        return None

    def _channels_last(self, x, where):
        """Whether 4-D images ``x`` are ``(N, H, W, C)`` rather than ``(N, C, H, W)``."""
        if self.input_shape is not None and len(self.input_shape) == 3:
            channels, height, width = self.input_shape
            if x.shape[1:] == (channels, height, width):
                return False
            if x.shape[1:] == (height, width, channels):
                return True
            raise ValueError(f"{where}: images of shape {x.shape[1:]} per sample do not match the "
                             f"model's input_shape {tuple(self.input_shape)} (C, H, W), nor (H, W, C)")
        channels = self._expected_channels()
        fits = (1, 3, 4) if channels is None else (channels,)
        first, last = x.shape[1] in fits, x.shape[3] in fits
        if first and last:
            raise ValueError(f"{where}: cannot tell whether x of shape {x.shape} is (N, C, H, W) or "
                             "(N, H, W, C); set model.input_shape = (C, H, W) first")
        if channels is not None and not (first or last):
            raise ValueError(f"{where}: the model's first convolution expects {channels} channels, "
                             f"but neither axis 1 nor axis 3 of x (shape {x.shape}) has that size")
        return last

    def _input_converter(self, x, where):
        """A function turning batches of ``x`` into model input; the layout is decided once."""
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"{where}: x must hold pixel values (uint8) or floats, got dtype {x.dtype}")
        dtype = self.dtype
        preprocessing = data.check_preprocessing(self.preprocessing, f"{where}: model.preprocessing")
        # Each batch goes straight to the model's dtype: a float64 model sees no float32 rounding.
        if x.ndim == 2:
            return lambda batch: data.scaled_pixels(batch, preprocessing, dtype)
        if x.ndim not in (3, 4):
            raise ValueError(f"{where}: x must be images (N, H, W), (N, H, W, C) or (N, C, H, W), "
                             f"or features (N, D); got shape {x.shape}")
        channels_last = x.ndim == 4 and self._channels_last(x, where)
        return lambda batch: data.to_nchw(data.scaled_pixels(batch, preprocessing, dtype), channels_last, dtype)

    def preprocess_input(self, x: np.ndarray | str | os.PathLike) -> np.ndarray:
        """``x`` (images or feature rows, as ``predict`` takes them) as the model's first layer
        gets it: NCHW in the model's dtype, scaled and preprocessed (see the module docstring)."""
        x = _as_array(x, "preprocess_input", "x")
        return self._input_converter(x, "preprocess_input")(x)

    def _check_fits(self, x, convert, where):
        """Run one sample through the model in evaluation mode (nothing changes) to check that
        ``x`` fits it; returns one sample's input shape and the output's shape."""
        if len(x) == 0:
            raise ValueError(f"{where}: x holds no samples")
        sample = convert(x[:1])
        if self.input_shape is not None and sample.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"{where}: x has samples of shape {sample.shape[1:]} (after conversion), "
                             f"but the model's input_shape is {tuple(self.input_shape)}")
        previous = self.training
        self.eval()
        try:
            output = self.forward(sample)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: samples of shape {x.shape[1:]} (model input "
                             f"{sample.shape[1:]}) do not fit the model: {error}") from None
        finally:
            self.train(previous)
        return sample.shape[1:], output.shape[1:]

    def _num_classes(self, output_shape, where):
        if len(output_shape) != 1:
            raise ValueError(f"{where}: the model outputs samples of shape {output_shape}; training "
                             "needs one score per class, (N, classes) (end the model with a Dense layer)")
        return output_shape[0]

    @staticmethod
    def _check_targets(y, count, num_classes, where):
        if len(y) != count:
            raise ValueError(f"{where}: x has {count} samples but y has {len(y)}")
        if y.ndim == 1:
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"{where}: class labels y must be integers, got dtype {y.dtype} (use "
                                f"y.astype(int), or pass one-hot targets of shape (N, {num_classes}))")
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(f"{where}: labels must be in [0, {num_classes}) for a model with "
                                 f"{num_classes} outputs, got values from {y.min()} to {y.max()}")
        elif y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"{where}: y must be class labels (N,) or one-hot targets "
                             f"(N, {num_classes}), got shape {y.shape}")

    def _prepare(self, x, y, where):
        """Checked arrays, their batch converter and the number of classes."""
        x, y = _as_array(x, where, "x"), _as_array(y, where, "y")
        convert = self._input_converter(x, where)
        _, output_shape = self._check_fits(x, convert, where)
        num_classes = self._num_classes(output_shape, where)
        self._check_targets(y, len(x), num_classes, where)
        return x, y, convert, num_classes

    def _loss_targets(self, y_batch, num_classes, dtype):
        """Labels as they are for cross-entropy; one-hot rows for losses that need them (MSE)."""
        if y_batch.ndim == 1 and not isinstance(self.loss, losses.CrossEntropyLoss):
            return data.one_hot(y_batch, num_classes).astype(dtype, copy=False)
        return y_batch

    def _logs(self, loss, confusion):
        logs = {"loss": loss}
        logs.update((name, metric_functions.get(name)(confusion)) for name in self.metric_names)
        return logs

    @staticmethod
    def _batch_confusion(y_batch, outputs, num_classes):
        true = y_batch if y_batch.ndim == 1 else y_batch.argmax(axis=1)
        return metric_functions.confusion_matrix(true, outputs.argmax(axis=1), num_classes)

    # Training.
    def fit(self, x: np.ndarray | str | os.PathLike, y: np.ndarray | str | os.PathLike, epochs: int = 1,
            batch_size: int = 32, validation_data: tuple | None = None, validation_split: float = 0.0,
            augment: bool | data.Augmenter | None = None, callbacks: list | None = None, seed: int | None = None,
            shuffle: bool = True, verbose: int = 1, initial_epoch: int = 0,
            checkpoint_dir: str | os.PathLike | None = None, resume_from: str | os.PathLike | None = None,
            overwrite: bool = False, sample_weight: np.ndarray | str | os.PathLike | None = None,
            class_weight: dict[int, float] | str | None = None,
            distributed: "bool | dist.Communicator" = False) -> History:
        """Train for ``epochs - initial_epoch`` epochs (``epochs`` is the index of the last
        epoch, as in Keras). Every layer's ``kernel_regularizer`` penalty is added to the loss
        minimised and reported.

        Args:
            x: the training inputs: an array, or the path of a ``.npy`` file (see the module
                docstring for the layouts and dtypes taken).
            y: the targets: integer labels ``(N,)`` or one-hot rows ``(N, classes)``, an array
                or a ``.npy`` path.
            epochs: the index of the last epoch to train, an int >= 1; default 1.
            batch_size: samples per gradient step, an int >= 1; default 32.
            validation_data: ``(x_val, y_val)``, scored after every epoch (``val_`` logs).
            validation_split: the last fraction of ``x``/``y``, in [0, 1), held out for
                validation instead (taken before shuffling, as in Keras); default 0.
            augment: True for ``data.default_augmenter()``, or an ``Augmenter`` (any callable
                ``f(batch, rng=...)``) applied to every training batch; default None, none.
            callbacks: Callback objects or ``npconvnet.schedulers`` schedulers.
            seed: an int >= 0 that makes the run bit-identical (see the module docstring);
                default None, drawn from the global generator.
            shuffle: whether to shuffle the training samples every epoch; default True.
            verbose: 0 silent, 1 (the default) a progress bar per epoch on a terminal (one line
                per epoch when standard output is a file or a pipe), 2 one line per epoch,
                ``"auto"`` (Keras's default) as 1.
            initial_epoch: the epoch to start at, to go on training a loaded model; default 0.
            checkpoint_dir: a folder for ``checkpoint.npz``, written when training starts and
                after every epoch; default None, no checkpoint.
            resume_from: a checkpoint to go on from, at the epoch after the last one it holds
                (instead of ``initial_epoch``).
            overwrite: replace a checkpoint of an unfinished run in ``checkpoint_dir`` (by
                default ``FileExistsError``).
            sample_weight: one weight per training sample, ``(N,)``, finite and >= 0: each
                sample's loss counts that many times, ``loss = sum_n w_n * loss_n / batch size``
                (Keras's rule; the metrics are not weighted).
            class_weight: ``{label: weight}`` (labels left out weigh 1) or ``"balanced"``
                (``N / (classes * count of the label)``, as scikit-learn and Keras compute it),
                which gives every sample of a label that weight; with ``sample_weight``, the
                two weights multiply.
            distributed: True to train data-parallel over MPI, in every process that
                ``mpirun -n K`` started (or a ``npconvnet.distributed.Communicator``): each rank
                reads and trains on its shard of every batch (every batch must hold at least
                K samples), the gradients and batch-normalization statistics are summed over
                the ranks, and validation is scored in parts and summed. Rank 0 alone prints
                and writes the checkpoint; an exception on any rank stops the whole job
                (``MPI_Abort``). Needs mpi4py (``pip install "npconvnet[mpi]"``). Default
                False, one process. See ``npconvnet.distributed``.

        Returns:
            A :class:`~npconvnet.callbacks.History` of these epochs (``model.history`` holds
            every epoch trained so far).

        Raises:
            TrainingDivergedError: when the loss becomes NaN or infinite (on every rank alike,
                in a distributed run).
        """
        communicator = dist.communicator(distributed)
        arguments = dict(x=x, y=y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                         validation_split=validation_split, augment=augment, callbacks=callbacks, seed=seed,
                         shuffle=shuffle, verbose=verbose, initial_epoch=initial_epoch,
                         checkpoint_dir=checkpoint_dir, resume_from=resume_from, overwrite=overwrite,
                         sample_weight=sample_weight, class_weight=class_weight)
        if communicator is None:
            return self._fit(None, **arguments)
        # A divergence is seen by every rank alike (the loss is the whole batch's): it is
        # raised as usual. Anything else may have hit this rank alone, and stops the job.
        with communicator.abort_on_error(passing=(TrainingDivergedError,)):
            return self._fit(communicator, **arguments)

    def _fit(self, communicator, x, y, epochs, batch_size, validation_data, validation_split, augment,
             callbacks, seed, shuffle, verbose, initial_epoch, checkpoint_dir, resume_from, overwrite,
             sample_weight, class_weight):
        """``fit``, on the ranks of ``communicator`` (None: in this process alone)."""
        is_root = communicator is None or communicator.is_root
        self._require_compiled("fit")
        epochs = _check_count("fit", "epochs", epochs, 1)
        batch_size = _check_count("fit", "batch_size", batch_size, 1)
        initial_epoch = _check_count("fit", "initial_epoch", initial_epoch, 0)
        if seed is not None:
            seed = _check_count("fit", "seed", seed, 0)
        saved = training = None
        if resume_from is not None:
            if initial_epoch:
                raise ValueError("fit: give resume_from or initial_epoch, not both (the checkpoint "
                                 "knows the epoch to go on from)")
            saved, training = self._read_checkpoint(resume_from, epochs, batch_size, seed, shuffle)
            initial_epoch, seed = training["next_epoch"], training["seed"]
        elif initial_epoch >= epochs:
            raise ValueError(f"fit: initial_epoch={initial_epoch} leaves no epoch to train with "
                             f"epochs={epochs} (epochs is the index of the last epoch, as in Keras)")
        if resume_from is None and checkpoint_dir is not None and not overwrite:
            path = os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_FILE)
            if communicator is None:
                _refuse_unfinished_checkpoint(path, epochs, type(self))
            else:
                communicator.root_call(_refuse_unfinished_checkpoint, path, epochs, type(self))
        x, y = _as_array(x, "fit", "x"), _as_array(y, "fit", "y")
        x, y, validation = self._split_validation(x, y, validation_data, validation_split)
        if training is not None:
            if len(x) != training["samples"]:
                raise ValueError(f"fit: {resume_from} was written by a run on {training['samples']} "
                                 f"training samples, but x has {len(x)}; resume with the same data")
            self._restore(saved)
        if sample_weight is not None:
            sample_weight = _as_array(sample_weight, "fit", "sample_weight")
            if validation_split:
                sample_weight = sample_weight[:len(x)]
        x, y, convert, num_classes = self._prepare(x, y, "fit")
        weights = _sample_weights(y, sample_weight, class_weight, num_classes)
        if validation is not None:
            validation = self._prepare(*validation, "fit (validation data)")
        augmenter = _augmenter(augment)
        if augmenter is not None and convert(x[:1]).ndim != 4:
            raise ValueError(f"fit: augment needs images, but x has shape {x.shape}")
        if self.input_shape is None:
            self.input_shape = tuple(convert(x[:1]).shape[1:])
        if seed is None:
            seed = int(rng.default_rng().integers(2**63))
        if communicator is not None:
            _check_shards(len(x), batch_size, communicator.size, dist.min_shard_size(self))
            seed = communicator.broadcast(seed)
            # Every rank starts from rank 0's weights, as PyTorch's DDP does.
            communicator.broadcast_arrays([parameter.data for parameter in self.parameters()]
                                          + [buffer for _, buffer in self.named_buffers()])

        logged = ["loss", *self.metric_names]
        logged += [f"val_{name}" for name in logged] if validation is not None else []
        params = {"epochs": epochs, "steps": math.ceil(len(x) / batch_size), "samples": len(x),
                  "batch_size": batch_size, "metrics": logged + ["lr"]}
        if communicator is not None:
            params.update(rank=communicator.rank, world_size=communicator.size)
        callback_list = CallbackList(([ProgressBar(verbose)] if verbose and is_root else [])
                                     + list(callbacks or []), self, params)
        history = History()
        if self.history is None:
            self.history = History()
        previous_mode = self.training
        # What fit leaves the global generator at; a resumed run ends where the first one would.
        global_rng_state = rng.get_state() if training is None else training["rng_state"]
        run = SimpleNamespace(
            epochs=epochs, steps=params["steps"], last_finite_loss=None, saved_epochs=None,
            checkpoint=None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir),
                                                                        CHECKPOINT_FILE),
            training={"seed": seed, "rng_state": global_rng_state, "batch_size": batch_size,
                      "samples": len(x), "shuffle": bool(shuffle)})
        self.stop_training = False
        logs = {}
        try:
            callback_list.on_train_begin()
            if training is not None:
                callback_list.load_state_dict(training["callbacks"])
                self.stop_training = training["stop_training"]
            self._write_checkpoint(run, initial_epoch, callback_list, communicator)
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:
                    break
                epoch_rng = np.random.default_rng([seed, epoch])
                rng.manual_seed(int(epoch_rng.integers(2**63)))      # this epoch's dropout masks
                # Augmentation draws per batch, for the samples at hand: the ranks after the
                # first draw their own (see npconvnet.distributed).
                augment_rng = (epoch_rng if communicator is None or communicator.is_root
                               else np.random.default_rng([seed, epoch, communicator.rank]))
                callback_list.on_epoch_begin(epoch)
                lr = self.optimizer.lr
                if lr == 0 and is_root:
                    warnings.warn(f"fit: epoch {epoch + 1}/{epochs} starts with learning rate 0, so it "
                                  "will not change the weights (does a learning-rate schedule end "
                                  "before the last epoch? e.g. CosineAnnealingLR with T_max < epochs)",
                                  stacklevel=3)   # the caller of fit
                self.train()
                # On several cores the shards of each batch go to worker processes forked for the epoch.
                with dist.attached(self, communicator), processes.on_processes(self):
                    logs = self._train_epoch((x, y, convert, num_classes, weights), batch_size, shuffle,
                                             augmenter, epoch, epoch_rng, callback_list, run, communicator,
                                             augment_rng)
                self._check_weights_are_finite(epoch, run)
                if validation is not None:
                    self.eval()
                    scores = self._evaluate_batches(*validation, batch_size=batch_size, communicator=communicator)
                    logs.update((f"val_{name}", value) for name, value in scores.items())
                logs["lr"] = lr
                history.append(epoch, logs)
                self.history.append(epoch, logs)
                callback_list.on_epoch_end(epoch, logs)
                self._write_checkpoint(run, epoch + 1, callback_list, communicator)
            callback_list.on_train_end(logs)
        finally:
            rng.set_state(global_rng_state)
            self.train(previous_mode)
        return history

    # Checkpoints.
    def _write_checkpoint(self, run, next_epoch, callback_list, communicator=None):
        """Write the checkpoint (on rank 0 alone in a distributed run: every rank holds the same
        state; a failure to write is raised on every rank)."""
        if run.checkpoint is None:
            return

        def write():
            os.makedirs(os.path.dirname(run.checkpoint), exist_ok=True)
            serialization.save_checkpoint(self, run.checkpoint, {**run.training, "next_epoch": next_epoch,
                                                   "stop_training": bool(self.stop_training),
                                                   "callbacks": callback_list.state_dict()})
        if communicator is None:
            write()
        else:
            communicator.root_call(write)
        run.saved_epochs = next_epoch

    def _read_checkpoint(self, path, epochs, batch_size, seed, shuffle):
        """The checkpoint's model and training state, checked against this model and fit call."""
        saved, training = serialization.load_checkpoint(path, model_class=type(self))

        def normalised(value):
            return json.loads(json.dumps(value))

        if normalised(layer_to_config(saved)) != normalised(layer_to_config(self)):
            raise ValueError(f"fit: {path} holds another architecture than this model's; resume on "
                             f"the model of the saved run (npconvnet.load_model({str(path)!r}))")
        if saved.dtype != self.dtype:
            raise ValueError(f"fit: {path} holds {saved.dtype} weights, this model has {self.dtype}")
        if saved.preprocessing != self.preprocessing:
            raise ValueError(f"fit: {path} was trained with preprocessing={saved.preprocessing!r}, "
                             f"this model has preprocessing={self.preprocessing!r}; set it as the "
                             "saved run had it")
        for kind, mine, theirs in (("optimizer", self.optimizer, saved.optimizer),
                                   ("loss", self.loss, saved.loss)):
            # The learning rate is part of the saved state (schedules change it); the rest is not.
            wanted, found = ({key: value for key, value in item.get_config().items() if key != "lr"}
                             for item in (theirs, mine))
            if type(mine) is not type(theirs) or wanted != found:
                raise ValueError(f"fit: {path} was trained with the {kind} {type(theirs).__name__}"
                                 f"({wanted}), this model is compiled with {type(mine).__name__}"
                                 f"({found}); compile it as the saved run was")
        settings = {"seed": seed, "batch_size": batch_size, "shuffle": bool(shuffle)}
        for name, value in settings.items():
            if value is not None and value != training[name]:
                raise ValueError(f"fit: {path} was written by a run with {name}={training[name]}, "
                                 f"this call has {name}={value}; a resumed run must use the same "
                                 "settings (load_model and initial_epoch train on with new ones)")
        if training["next_epoch"] > epochs:
            raise ValueError(f"fit: {path} has already trained {training['next_epoch']} epochs, "
                             f"more than epochs={epochs}")
        return saved, training

    def _restore(self, saved):
        """Take over the weights, optimizer state, history and input description of ``saved``."""
        self.load_state_dict(saved.state_dict())
        self.optimizer.load_state_dict(saved.optimizer.state_dict())
        self.history = saved.history
        self.input_shape, self.class_names = saved.input_shape, saved.class_names

    # Divergence.
    def _diverged(self, run, epoch, batch, loss, what):
        """The TrainingDivergedError for ``what`` went wrong in ``epoch``/``batch`` (from 0)."""
        lr = self.optimizer.lr
        last = _last_loss(run.last_finite_loss)
        if run.checkpoint is None:
            kept = "No checkpoint was kept (pass checkpoint_dir=... to keep one)"
        elif run.saved_epochs:
            kept = f"{run.checkpoint} still holds the model after epoch {run.saved_epochs}"
        else:
            kept = f"{run.checkpoint} still holds the model before training"
        # The optimizer keeps lr finite, so lr / 10 is a real suggestion; below 0 there is none.
        advice = (f"Lower the learning rate (now {lr:g}), e.g. to {lr / 10:g}, and check" if lr > 0
                  else "The learning rate is 0: check")
        message = (f"fit: training diverged in epoch {epoch + 1}/{run.epochs}, batch {batch + 1}/"
                   f"{run.steps}: {what} ({last}). {advice} that the inputs are scaled (e.g. to "
                   f"[0, 1]) and hold no NaN or huge values. {kept}; the weights in memory are not usable.")
        return TrainingDivergedError(message, epoch, batch, loss, run.last_finite_loss, lr, run.checkpoint,
                                     epochs=run.epochs, steps=run.steps, checkpoint_epoch=run.saved_epochs)

    def _check_weights_are_finite(self, epoch, run):
        """The last step of an epoch can overflow the weights even after a finite loss."""
        arrays = [p.data for p in self.parameters()] + [buffer for _, buffer in self.named_buffers()]
        if not all(np.isfinite(array).all() for array in arrays):
            raise self._diverged(run, epoch, run.steps - 1, None,
                                 "the weights became NaN or infinite in the last step")

    @staticmethod
    def _split_validation(x, y, validation_data, validation_split):
        """``(x, y, (x_val, y_val) or None)``; a split takes the last samples, as views (no copy)."""
        if not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("fit: give validation_data or validation_split, not both")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            return x, y, tuple(validation_data)
        if not validation_split:
            return x, y, None
        if len(x) != len(y):
            raise ValueError(f"fit: x has {len(x)} samples but y has {len(y)}")
        split_at = int(len(x) * (1 - validation_split))
        if split_at in (0, len(x)):
            raise ValueError(f"fit: validation_split={validation_split} of {len(x)} samples leaves "
                             f"{split_at} for training and {len(x) - split_at} for validation")
        return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])

    def _train_epoch(self, prepared, batch_size, shuffle, augmenter, epoch, epoch_rng, callback_list, run,
                     communicator=None, augment_rng=None):
        """One pass over the training data; returns the epoch's logs (sample-weighted means).

        A NaN or infinite batch loss raises :class:`TrainingDivergedError` before its
        gradients reach the weights. With a ``communicator``, this rank reads and trains on
        its shard of each batch (see :meth:`_distributed_backward`)."""
        x, y, convert, num_classes, weights = prepared
        x = np.asarray(x)           # a memmap stays on disk: each batch reads its rows alone
        total_loss, seen = 0.0, 0
        confusion = np.zeros((num_classes, num_classes), np.int64)
        logs = {}
        # The batches are drawn as sorted sample indices (sequential reads from a memmap), so
        # that labels and weights follow the images.
        for batch, index in enumerate(data.batches(np.arange(len(x)), batch_size=batch_size, shuffle=shuffle,
                                                   seed=epoch_rng)):
            callback_list.on_batch_begin(batch)
            batch_length = len(index)
            if communicator is not None:
                start, stop = communicator.split(batch_length)
                communicator.shard = (start, stop, batch_length)
                index = index[start:stop]
            y_batch = y[index]
            inputs = convert(x[index])
            if augmenter is not None:
                inputs = augmenter(inputs, rng=epoch_rng if augment_rng is None else augment_rng)
            batch_weights = None if weights is None else weights[index]
            if communicator is None:
                # On several threads each takes a shard of the batch (npconvnet.shards); on one,
                # the batch goes through whole.
                loss, outputs = shards.forward_backward(self, self.loss, inputs,
                                                        self._loss_targets(y_batch, num_classes, self.dtype),
                                                        batch_weights)
                loss += self.regularization_loss()
                if not math.isfinite(loss):
                    raise self._diverged(run, epoch, batch, loss, f"the loss is {loss}")
                batch_confusion = self._batch_confusion(y_batch, outputs, num_classes)
            else:
                outputs = self.forward(inputs)
                loss = self._loss(outputs, y_batch, num_classes, batch_weights)
                loss, batch_confusion = self._distributed_backward(
                    communicator, loss, len(y_batch) / batch_length,
                    self._batch_confusion(y_batch, outputs, num_classes))
                if not math.isfinite(loss):
                    raise self._diverged(run, epoch, batch, loss, f"the loss is {loss}")
            run.last_finite_loss = loss
            self._add_regularization_gradients()
            self.optimizer.step()       # backward overwrote every .grad: no zero_grad needed
            total_loss += loss * batch_length
            seen += batch_length
            confusion += batch_confusion
            logs = self._logs(total_loss / seen, confusion)
            callback_list.on_batch_end(batch, logs)
            if self.stop_training:
                break
        if communicator is not None:
            communicator.shard = None
        return logs

    def _distributed_backward(self, communicator, loss, share, confusion):
        """Backward for this rank's shard, holding ``share`` (b_r / B) of the batch, and the sums
        over the ranks; returns the whole batch's loss and confusion matrix, and leaves in
        every ``.grad`` the whole batch's gradient, on every rank.

        The shard's loss is its own mean, its gradient scaled by ``share``
        (:func:`npconvnet.distributed.backward_shard`). The weight penalties' gradients are
        added afterwards, once."""
        dist.backward_shard(self, self.loss, share)
        communicator.allreduce_gradients(self.parameters())
        totals = communicator.allreduce_sum(np.append(loss * share, confusion.ravel()))
        return float(totals[0]), totals[1:].astype(np.int64).reshape(confusion.shape)

    # Evaluation and prediction.
    def _evaluate_batches(self, x, y, convert, num_classes, batch_size, communicator=None):
        """The logs over all of ``x``; with a ``communicator``, each rank scores its part
        (:meth:`~npconvnet.distributed.Communicator.split`) and the sums are added up."""
        count = len(x)
        if communicator is not None:
            start, stop = communicator.split(count)
            x, y = x[start:stop], y[start:stop]
        total_loss = 0.0
        confusion = np.zeros((num_classes, num_classes), np.int64)
        for x_batch, y_batch in data.batches(x, y, batch_size, shuffle=False):
            outputs = self.forward(convert(x_batch))
            total_loss += self._loss(outputs, y_batch, num_classes) * len(y_batch)
            confusion += self._batch_confusion(y_batch, outputs, num_classes)
        if communicator is not None:
            totals = communicator.allreduce_sum(np.append(total_loss, confusion.ravel()))
            total_loss, confusion = float(totals[0]), totals[1:].astype(np.int64).reshape(confusion.shape)
        return self._logs(total_loss / count, confusion)

    def _loss(self, outputs, y_batch, num_classes, sample_weight=None):
        """The loss of a batch, its gradient kept for backward, plus the layers' weight penalties."""
        targets = self._loss_targets(y_batch, num_classes, outputs.dtype)
        loss = self.loss(outputs, targets) if sample_weight is None else \
            self.loss(outputs, targets, sample_weight=sample_weight)
        return loss + self.regularization_loss()

    def regularization_loss(self) -> float:
        """The sum of every layer's ``kernel_regularizer`` penalty (0.0 without any), as fit
        adds it to the loss (Keras's ``sum(model.losses)``)."""
        return sum((regularizer(parameter.data) for parameter, regularizer in self.regularization_terms()), 0.0)

    def _add_regularization_gradients(self):
        for parameter, regularizer in self.regularization_terms():
            parameter.grad += regularizer.gradient(parameter.data)

    def evaluate(self, x: np.ndarray | str | os.PathLike, y: np.ndarray | str | os.PathLike,
                 batch_size: int = 256, verbose: int = 0) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ..., ...}`` over all of ``x`` (evaluation mode, batched).

        The loss includes the layers' weight penalties, as in ``fit`` and Keras.

        Args:
            x, y: inputs and targets, as ``fit`` takes them.
            batch_size: samples per forward pass, an int >= 1; default 256.
            verbose: 0 (the default) prints nothing, 1 or 2 one line with the scores, as Keras
                ends with.
        """
        self._require_compiled("evaluate")
        batch_size = _check_count("evaluate", "batch_size", batch_size, 1)
        verbose = _check_verbose("evaluate", verbose)
        prepared = self._prepare(x, y, "evaluate")
        previous = self.training
        self.eval()
        try:
            scores = self._evaluate_batches(*prepared, batch_size=batch_size)
        finally:
            self.train(previous)
        if verbose:
            print(f"{len(prepared[0])}/{len(prepared[0])} - " +
                  " - ".join(f"{name}: {value:.4f}" for name, value in scores.items()))
        return scores

    def _outputs_logits(self):
        """Whether outputs are logits to turn into probabilities: cross-entropy (or no loss yet)
        trains logits, unless the network already ends with a softmax: a Softmax layer, or a
        layer built with ``activation="softmax"``."""
        layers = getattr(self, "layers", None)
        last = layers[-1] if layers else None
        ends_with_softmax = isinstance(last, Softmax) or getattr(last, "activation", None) == "softmax"
        return not ends_with_softmax and (self.loss is None or isinstance(self.loss, losses.CrossEntropyLoss))

    def predict(self, x: np.ndarray | str | os.PathLike, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """Class probabilities ``(N, classes)``, computed batch by batch in evaluation mode.

        The softmax of the outputs when the model outputs logits (see ``compile``), the outputs
        themselves otherwise. Memory stays bounded by ``batch_size``: only the result is
        allocated for all of ``x``.

        Args:
            x: inputs, as ``fit`` takes them.
            batch_size: samples per forward pass, an int >= 1; default 256.
            verbose: 0 (the default) prints nothing, 1 or 2 one line when done.
        """
        batch_size = _check_count("predict", "batch_size", batch_size, 1)
        verbose = _check_verbose("predict", verbose)
        x = _as_array(x, "predict", "x")
        convert = self._input_converter(x, "predict")
        _, output_shape = self._check_fits(x, convert, "predict")
        apply_softmax = self._outputs_logits()
        result = np.empty((len(x),) + output_shape, dtype=self.dtype)
        previous = self.training
        self.eval()
        try:
            start = 0
            for x_batch in data.batches(x, batch_size=batch_size, shuffle=False):
                outputs = self.forward(convert(x_batch))
                result[start:start + len(outputs)] = softmax(outputs, axis=1) if apply_softmax else outputs
                start += len(outputs)
        finally:
            self.train(previous)
        if verbose:
            print(f"{len(x)}/{len(x)} samples predicted")
        return result

    def predict_classes(self, x: np.ndarray | str | os.PathLike, batch_size: int = 256) -> np.ndarray:
        """The most probable class of every sample, ``(N,)`` integers."""
        return self.predict(x, batch_size).argmax(axis=1)

    # Files.
    def save_weights(self, path: str | os.PathLike, allow_nonfinite: bool = False) -> str:
        """Write the weights alone to one ``.npz`` file, as Keras's ``save_weights`` (see
        ``npconvnet.serialization.save_weights``); returns the path."""
        return serialization.save_weights(self, path, allow_nonfinite=allow_nonfinite)

    def load_weights(self, path: str | os.PathLike, allow_nonfinite: bool = False) -> "Model":
        """Copy the weights of a weights file, a model file or a checkpoint into this model, as
        Keras's ``load_weights``; every array is checked first, and a failed load changes nothing
        (see ``npconvnet.serialization.load_weights``). Returns the model."""
        return serialization.load_weights(self, path, allow_nonfinite=allow_nonfinite)

    def save(self, path: str | os.PathLike, include_optimizer: bool = True, include_history: bool = True,
             allow_nonfinite: bool = False) -> str:
        """Write the model to one ``.npz`` file (see ``npconvnet.serialization.save_model``);
        returns the path.

        Args:
            path: the file to write, atomically: a file already there is replaced only by a
                complete new one.
            include_optimizer: also the optimizer's buffers (momentum, Adam's moments), so that
                training resumes exactly; default True.
            include_history: also ``model.history``; default True.
            allow_nonfinite: write NaN or infinite weights too; by default (False) they raise
                ``ValueError`` and leave any file at ``path`` as it was.
        """
        return serialization.save_model(self, path, include_optimizer=include_optimizer,
                          include_history=include_history, allow_nonfinite=allow_nonfinite)
