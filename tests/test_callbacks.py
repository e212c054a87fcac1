"""Callbacks: the hooks fit calls, early stopping, learning-rate changes and checkpoints."""

import numpy as np
import pytest

import npconvnet
from npconvnet import callbacks, schedulers
from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.optim import SGD, Adam
from npconvnet.parameter import Parameter
from npconvnet.models import load_model
from synthetic import bar_images


def compiled_convnet(lr=0.01):
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 2))
    model.compile(optimizer=Adam(lr=lr), loss="cross_entropy", metrics=["accuracy"])
    return model


def diverging_problem(count=64):
    """Training data, and validation data with every label flipped: the better the model
    learns, the worse its validation loss gets."""
    x, y = bar_images(count)
    return x, y, (x, 1 - y)


class RecordWeights(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.state_dict())


class StubModel:
    """Just enough of a model to drive a callback by hand."""

    def __init__(self, lr=0.1):
        self.stop_training = False
        self.optimizer = SGD([Parameter(np.zeros(1))], lr=lr)
        self.weights = {"w": np.zeros(1)}

    def state_dict(self):
        return {key: value.copy() for key, value in self.weights.items()}

    def load_state_dict(self, state):
        self.weights = state


def drive(callback, values, monitor="val_loss", model=None):
    """Feed ``values`` of ``monitor`` epoch by epoch, as fit does; returns the epochs run."""
    model = model or StubModel()
    callback.set_model(model)
    callback.on_train_begin()
    epochs = 0
    for epoch, value in enumerate(values):
        model.weights = {"w": np.array([float(epoch)])}
        callback.on_epoch_end(epoch, {monitor: value})
        epochs += 1
        if model.stop_training:
            break
    callback.on_train_end()
    return epochs


# The hooks

def test_fit_calls_the_hooks_in_order_with_epoch_and_batch_numbers():
    calls = []

    class Record(callbacks.Callback):
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(f"epoch_begin {epoch}")

        def on_batch_begin(self, batch, logs=None):
            calls.append(f"batch_begin {batch}")

        def on_batch_end(self, batch, logs=None):
            calls.append(f"batch_end {batch}")

        def on_epoch_end(self, epoch, logs=None):
            calls.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            calls.append("train_end")

    x, y = bar_images(20)
    compiled_convnet().fit(x, y, epochs=2, batch_size=16, callbacks=[Record()], verbose=0)
    keys = "['accuracy', 'loss', 'lr']"
    assert calls == ["train_begin",
                     "epoch_begin 0", "batch_begin 0", "batch_end 0", "batch_begin 1", "batch_end 1",
                     f"epoch_end 0 {keys}",
                     "epoch_begin 1", "batch_begin 0", "batch_end 0", "batch_begin 1", "batch_end 1",
                     f"epoch_end 1 {keys}", "train_end"]


def test_a_callback_setting_stop_training_ends_fit_after_that_batch():
    class StopAtSecondBatch(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    x, y = bar_images(64)
    history = compiled_convnet().fit(x, y, epochs=5, batch_size=16, callbacks=[StopAtSecondBatch()], verbose=0)
    assert history.epoch == [0]


def test_callbacks_see_the_fit_parameters():
    seen = {}

    class Record(callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.update(self.params)

    x, y = bar_images(40)
    compiled_convnet().fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), callbacks=[Record()],
                           verbose=0)
    assert seen["epochs"] == 3 and seen["steps"] == 3
    assert seen["metrics"] == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]


def test_objects_that_are_not_callbacks_are_rejected():
    x, y = bar_images(16)
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected a Callback"):
        compiled_convnet().fit(x, y, callbacks=[print], verbose=0)


# EarlyStopping

def test_early_stopping_stops_after_patience_epochs_without_improvement():
    early = callbacks.EarlyStopping(patience=2)
    assert drive(early, [1.0, 0.9, 0.95, 0.91, 0.5]) == 4
    assert early.stopped_epoch == 3 and early.best_epoch == 1 and early.best == 0.9


def test_early_stopping_with_patience_0_stops_at_the_first_epoch_without_improvement():
    assert drive(callbacks.EarlyStopping(patience=0), [1.0, 0.9, 0.9, 0.5]) == 3


def test_early_stopping_counts_only_improvements_larger_than_min_delta():
    assert drive(callbacks.EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.5]) == 2


def test_early_stopping_maximises_accuracy_in_auto_mode():
    early = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    assert early.mode == "max"
    assert drive(early, [0.5, 0.6, 0.55, 0.9], monitor="val_accuracy") == 3


def test_early_stopping_stops_fit_and_restores_the_best_weights():
    x, y, validation = diverging_problem()
    model = compiled_convnet()
    record = RecordWeights()
    early = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, batch_size=16, validation_data=validation,
                        callbacks=[record, early], seed=0, verbose=0)
    losses = history.history["val_loss"]
    assert history.epoch == [0, 1] and losses[1] > losses[0]
    assert early.best_epoch == 0 and early.stopped_epoch == 1
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, record.weights[0][name])


def test_early_stopping_without_restoring_keeps_the_last_weights():
    x, y, validation = diverging_problem()
    model = compiled_convnet()
    record = RecordWeights()
    model.fit(x, y, epochs=10, batch_size=16, validation_data=validation,
              callbacks=[record, callbacks.EarlyStopping(patience=1)], seed=0, verbose=0)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, record.weights[-1][name])


def test_a_monitor_that_is_not_logged_fails_before_training_naming_the_logged_values():
    x, y = bar_images(16)
    model = compiled_convnet()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"monitor='val_loss' is not logged \(validation.*"
                                         r"available: loss, accuracy, lr"):
        model.fit(x, y, epochs=2, callbacks=[callbacks.EarlyStopping()], verbose=0)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], before["0.weight"])


def test_a_monitored_value_missing_from_the_logs_is_named_with_the_available_ones():
    early = callbacks.EarlyStopping(monitor="val_f1_macro")
    with pytest.raises(ValueError, match="val_f1_macro.*available: val_loss"):
        drive(early, [1.0])


# ReduceLROnPlateau

def test_reduce_lr_on_plateau_drops_the_rate_at_the_patience_th_epoch_without_improvement():
    model = StubModel(lr=0.1)
    reduce = callbacks.ReduceLROnPlateau(factor=0.5, patience=2)
    reduce.set_model(model)
    reduce.on_train_begin()
    rates = []
    for epoch, value in enumerate([1.0, 1.0, 1.0, 1.0, 1.0]):
        reduce.on_epoch_end(epoch, {"val_loss": value})
        rates.append(model.optimizer.lr)
    assert rates == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_reduce_lr_on_plateau_never_goes_below_min_lr():
    model = StubModel(lr=0.1)
    reduce = callbacks.ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.005)
    drive(reduce, [1.0] * 5, model=model)
    assert model.optimizer.lr == pytest.approx(0.005)


def test_reduce_lr_on_plateau_lowers_the_rate_during_fit():
    x, y, validation = diverging_problem()
    model = compiled_convnet(lr=0.01)
    history = model.fit(x, y, epochs=4, batch_size=16, validation_data=validation, seed=0, verbose=0,
                        callbacks=[callbacks.ReduceLROnPlateau(factor=0.5, patience=1)])
    # epoch 0 sets the best value; each later epoch is worse and halves the next epoch's rate
    assert history.history["lr"] == pytest.approx([0.01, 0.01, 0.005, 0.0025])


# Learning-rate schedules

def test_a_scheduler_callback_steps_the_schedule_once_per_epoch():
    x, y = bar_images(32)
    model = compiled_convnet(lr=0.1)
    step = schedulers.StepLR(model.optimizer, step_size=2, gamma=0.5)
    history = model.fit(x, y, epochs=5, batch_size=16, callbacks=[callbacks.LearningRateScheduler(step)],
                        seed=0, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def restored_cosine(saved_state, t_max=4, lr=0.0):
    """A cosine schedule callback given ``saved_state`` back, on an optimizer at rate ``lr``."""
    model = compiled_convnet()
    model.optimizer.lr = lr
    callback = callbacks.LearningRateScheduler(schedulers.CosineAnnealingLR(model.optimizer, T_max=t_max))
    callback.set_model(model)
    callback.load_state_dict(saved_state)
    return model, callback


def test_a_schedule_restored_with_its_own_config_keeps_the_saved_rate():
    model, _ = restored_cosine({"last_epoch": 1, "base_lr": 0.01,
                                "config": {"T_max": 4, "eta_min": 0.0}}, lr=0.004)
    assert model.optimizer.lr == 0.004         # e.g. lowered by another callback: kept as saved


def test_a_schedule_restored_with_another_length_takes_its_rate_for_the_epoch_reached():
    model, callback = restored_cosine({"last_epoch": 1, "base_lr": 0.01,
                                       "config": {"T_max": 1, "eta_min": 0.0}}, t_max=4)
    assert callback.schedule.last_epoch == 1
    assert model.optimizer.lr == pytest.approx(0.01 * (1 + np.cos(np.pi / 4)) / 2)


def test_a_schedule_state_saved_without_its_config_still_loads_and_keeps_the_rate():
    model, callback = restored_cosine({"last_epoch": 1, "base_lr": 0.01})
    assert callback.schedule.last_epoch == 1 and model.optimizer.lr == 0.0


def test_a_schedule_config_that_is_no_dict_is_refused():
    with pytest.raises(ValueError, match="LearningRateScheduler: invalid 'config'"):
        restored_cosine({"last_epoch": 1, "base_lr": 0.01, "config": [4]})


def test_a_scheduler_may_be_listed_directly_as_a_callback():
    x, y = bar_images(32)
    model = compiled_convnet(lr=0.1)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0,
                        callbacks=[schedulers.ExponentialLR(model.optimizer, gamma=0.5)])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_a_plateau_scheduler_listed_directly_steps_on_the_validation_loss():
    x, y, validation = diverging_problem()
    model = compiled_convnet(lr=0.01)
    plateau = schedulers.ReduceLROnPlateau(model.optimizer, factor=0.5, patience=0)
    history = model.fit(x, y, epochs=4, batch_size=16, validation_data=validation, callbacks=[plateau],
                        seed=0, verbose=0)
    assert history.history["lr"] == pytest.approx([0.01, 0.01, 0.005, 0.0025])


def test_a_keras_style_schedule_function_sets_the_rate_at_each_epoch_start():
    x, y = bar_images(32)
    history = compiled_convnet().fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
        callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_a_schedule_function_returning_no_valid_rate_is_rejected():
    x, y = bar_images(16)
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: -lr)
    with pytest.raises(ValueError, match="returned -0.01 for epoch 0; expected a learning rate >= 0"):
        compiled_convnet().fit(x, y, callbacks=[schedule], verbose=0)


def test_a_scheduler_of_another_optimizer_is_rejected():
    x, y = bar_images(16)
    other = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="another optimizer than the model's"):
        compiled_convnet().fit(x, y, callbacks=[schedulers.StepLR(other, 1)], verbose=0)


# ModelCheckpoint

def test_model_checkpoint_writes_one_loadable_file_per_epoch(tmp_path):
    x, y = bar_images(32)
    model = compiled_convnet()
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "run" / "model-{epoch:02d}-{loss:.2f}.npz")
    history = model.fit(x, y, epochs=2, batch_size=16, callbacks=[checkpoint], seed=0, verbose=0)
    names = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert names == [f"model-{epoch + 1:02d}-{loss:.2f}.npz"
                     for epoch, loss in enumerate(history.history["loss"])]
    restored = load_model(tmp_path / "run" / names[-1])
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))


def test_model_checkpoint_with_save_best_only_skips_epochs_that_got_worse(tmp_path):
    x, y, validation = diverging_problem()
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "best-{epoch}.npz", save_best_only=True)
    compiled_convnet().fit(x, y, epochs=3, batch_size=16, validation_data=validation,
                           callbacks=[checkpoint], seed=0, verbose=0)
    assert [path.name for path in tmp_path.iterdir()] == ["best-1.npz"]


def test_model_checkpoint_names_the_available_fields_for_an_unknown_one(tmp_path):
    x, y = bar_images(16)
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "model-{val_acc}.npz")
    with pytest.raises(ValueError, match="available fields: epoch, loss, accuracy, lr"):
        compiled_convnet().fit(x, y, callbacks=[checkpoint], verbose=0)


# History

@pytest.mark.parametrize("state", [
    {"epoch": [0]},
    {"epoch": [0, 1], "history": {"loss": [0.5]}},
    {"epoch": ["0"], "history": {}},
    {"epoch": [0], "history": {"loss": ["high"]}},
])
def test_history_from_dict_rejects_malformed_state(state):
    with pytest.raises(ValueError, match="History"):
        callbacks.History.from_dict(state)


def test_history_pads_values_missing_in_some_epochs_with_nan():
    history = callbacks.History()
    history.append(0, {"loss": 1.0})
    history.append(1, {"loss": 0.5, "val_loss": 0.7})
    assert history.history["loss"] == [1.0, 0.5]
    assert np.isnan(history.history["val_loss"][0]) and history.history["val_loss"][1] == 0.7


# Constructor arguments

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("make,error,argument", [
    (lambda: callbacks.EarlyStopping(patience=-1), ValueError, "patience"),
    (lambda: callbacks.EarlyStopping(patience=2.5), TypeError, "patience"),
    (lambda: callbacks.EarlyStopping(patience=True), TypeError, "patience"),
    (lambda: callbacks.EarlyStopping(min_delta=NAN), ValueError, "min_delta"),
    (lambda: callbacks.EarlyStopping(min_delta=INF), ValueError, "min_delta"),
    (lambda: callbacks.EarlyStopping(min_delta="0.01"), TypeError, "min_delta"),
    (lambda: callbacks.EarlyStopping(restore_best_weights="yes"), TypeError, "restore_best_weights"),
    (lambda: callbacks.ReduceLROnPlateau(factor=1.0), ValueError, "factor"),
    (lambda: callbacks.ReduceLROnPlateau(factor=NAN), ValueError, "factor"),
    (lambda: callbacks.ReduceLROnPlateau(factor="0.5"), TypeError, "factor"),
    (lambda: callbacks.ReduceLROnPlateau(patience=-3), ValueError, "patience"),
    (lambda: callbacks.ReduceLROnPlateau(cooldown=-1), ValueError, "cooldown"),
    (lambda: callbacks.ReduceLROnPlateau(cooldown=1.5), TypeError, "cooldown"),
    (lambda: callbacks.ReduceLROnPlateau(min_lr=-1e-3), ValueError, "min_lr"),
    (lambda: callbacks.ReduceLROnPlateau(min_lr=INF), ValueError, "min_lr"),
    (lambda: callbacks.ReduceLROnPlateau(min_delta=NAN), ValueError, "min_delta"),
    (lambda: callbacks.ModelCheckpoint("model.npz", save_best_only="no"), TypeError, "save_best_only"),
    (lambda: callbacks.ModelCheckpoint("model.npz", include_optimizer=0), TypeError, "include_optimizer"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_callback_argument_that_cannot_work_is_refused_naming_it(make, error, argument):
    with pytest.raises(error, match=f"^[A-Za-z]+: {argument} must be"):
        make()


def test_a_negative_min_delta_counts_by_its_size_as_in_keras():
    assert callbacks.EarlyStopping(min_delta=-0.01).min_delta == 0.01
