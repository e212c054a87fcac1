"""Divergence: a NaN or infinite loss stops fit with a clear error, and no NaN weights ever
replace a good model file or checkpoint."""

import os

import numpy as np
import pytest

import npconvnet
from npconvnet import callbacks
from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.optim import SGD
from npconvnet.models import load_checkpoint, load_model
from npconvnet.training import TrainingDivergedError
from synthetic import bar_images

# Diverging on purpose overflows on the way; NumPy's warnings about it are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


X, Y = bar_images(64)


def build():
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 2))
    model.compile(optimizer=SGD(lr=0.05, momentum=0.9), metrics=["accuracy"])
    return model


def huge_rate_from_epoch(epoch):
    """Train sensibly, then from ``epoch`` on with a learning rate of 1e12: the loss explodes."""
    return callbacks.LearningRateScheduler(lambda current, lr: 1e12 if current >= epoch else 0.05)


class CheckpointAtEpochStart(callbacks.Callback):
    """Keeps the bytes of the checkpoint file as each epoch starts."""

    def __init__(self, path):
        super().__init__()
        self.path, self.contents = path, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.contents[epoch] = self.path.read_bytes()


def diverge(tmp_path, epoch=2):
    model = build()
    recorder = CheckpointAtEpochStart(tmp_path / "checkpoint.npz")
    with pytest.raises(TrainingDivergedError) as caught:
        model.fit(X, Y, epochs=5, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path,
                  callbacks=[huge_rate_from_epoch(epoch), recorder,
                             callbacks.ModelCheckpoint(tmp_path / "model-{epoch}.npz")])
    return model, caught.value, recorder


def test_a_diverging_loss_stops_fit_naming_the_epoch_batch_and_last_finite_loss(tmp_path):
    _, error, _ = diverge(tmp_path)
    message = str(error)
    assert message.startswith(f"fit: training diverged in epoch 3/5, batch {error.batch + 1}/4: the loss is ")
    assert f"the last finite loss was {error.last_finite_loss:.6g}" in message
    assert "Lower the learning rate (now 1e+12), e.g. to 1e+11" in message
    assert f"{tmp_path / 'checkpoint.npz'} still holds the model after epoch 2" in message
    assert error.epoch == 2 and not np.isfinite(error.loss) and np.isfinite(error.last_finite_loss)
    assert error.lr == 1e12 and error.checkpoint == str(tmp_path / "checkpoint.npz")
    assert isinstance(error, RuntimeError)


def test_at_learning_rate_0_the_message_suggests_no_lower_rate():
    npconvnet.manual_seed(0)
    model = Sequential(Flatten(), Dense(4, 2))
    model.compile(optimizer=SGD(lr=0.0))
    x = np.ones((8, 4), np.float32)
    x[3, 0] = np.nan
    with pytest.raises(TrainingDivergedError, match="The learning rate is 0: check that the inputs") as caught, \
            pytest.warns(UserWarning, match="learning rate 0"):
        model.fit(x, np.arange(8) % 2, epochs=1, batch_size=4, verbose=0)
    assert "Lower the learning rate" not in str(caught.value)


def test_the_error_tells_how_far_the_run_was_and_what_its_checkpoint_holds(tmp_path):
    _, error, _ = diverge(tmp_path)
    assert (error.epochs, error.steps, error.checkpoint_epoch) == (5, 4, 2)
    assert error.last_loss() == f"the last finite loss was {error.last_finite_loss:.6g}"


def test_the_error_without_a_checkpoint_says_so_in_its_fields():
    with pytest.raises(TrainingDivergedError) as caught:
        build().fit(X, Y, epochs=3, batch_size=16, seed=0, verbose=0, callbacks=[huge_rate_from_epoch(1)])
    assert caught.value.checkpoint is None and caught.value.checkpoint_epoch is None


def test_the_checkpoint_keeps_the_last_good_epoch_bit_for_bit(tmp_path):
    _, _, recorder = diverge(tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == recorder.contents[2]
    saved, training = load_checkpoint(tmp_path / "checkpoint.npz")
    assert training["next_epoch"] == 2 and saved.history.epoch == [0, 1]
    assert all(np.isfinite(value).all() for value in saved.state_dict().values())


def test_no_file_is_written_for_the_diverged_epoch(tmp_path):
    diverge(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "model-1.npz", "model-2.npz"]


def test_the_history_holds_only_the_good_epochs(tmp_path):
    model, _, _ = diverge(tmp_path)
    assert model.history.epoch == [0, 1]
    assert all(np.isfinite(model.history.history["loss"]))


def test_divergence_in_the_first_batch_says_no_loss_was_finite(tmp_path):
    x = X.astype(np.float32) / 255
    x[0, 0, 0] = np.nan
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/3, batch 1/4: the loss is nan \(no batch had a "
                                                    r"finite loss\).*hold no NaN.*holds the model before training"):
        build().fit(x, Y, epochs=3, batch_size=16, shuffle=False, verbose=0, checkpoint_dir=tmp_path)


def test_without_checkpoint_dir_the_error_says_nothing_was_kept():
    with pytest.raises(TrainingDivergedError, match=r"No checkpoint was kept \(pass checkpoint_dir=\.\.\."):
        build().fit(X, Y, epochs=3, batch_size=16, seed=0, verbose=0, callbacks=[huge_rate_from_epoch(1)])


def test_weights_overflowing_in_the_last_step_of_an_epoch_are_caught_before_saving(tmp_path):
    model = build()
    original, steps = model.optimizer.step, []

    def step_overflowing_at_the_end_of_epoch_two():
        original()
        steps.append(1)
        if len(steps) == 8:
            model.parameters()[0].data[0, 0, 0, 0] = np.inf

    model.optimizer.step = step_overflowing_at_the_end_of_epoch_two
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3, batch 4/4: the weights became NaN or "
                                                    r"infinite in the last step.*after epoch 1"):
        model.fit(X, Y, epochs=3, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["next_epoch"] == 1


# Saving refuses NaN weights

def nan_model():
    model = build()
    model.parameters()[1].data[0] = np.nan
    return model


def test_saving_nan_weights_raises_and_keeps_the_good_file(tmp_path):
    path = tmp_path / "model.npz"
    build().save(path)
    good = path.read_bytes()
    with pytest.raises(ValueError, match=r"refusing to write .*model.npz: 0.bias hold NaN or infinite "
                                         r"values.*the file already there is left as it was.*allow_nonfinite=True"):
        nan_model().save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.npz"]


def test_saving_nan_weights_to_a_new_path_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="nothing was written"):
        nan_model().save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_allow_nonfinite_saves_nan_weights_anyway(tmp_path):
    nan_model().save(tmp_path / "model.npz", allow_nonfinite=True)
    assert np.isnan(load_model(tmp_path / "model.npz", allow_nonfinite=True).parameters()[1].data[0])


def test_model_checkpoint_never_writes_nan_weights(tmp_path):
    model = nan_model()
    model.stop_training = False
    checkpoint = callbacks.ModelCheckpoint(tmp_path / "model.npz")
    checkpoint.set_model(model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert os.listdir(tmp_path) == []
