"""Checkpoints: fit(checkpoint_dir=...) saves the whole run every epoch, and fit(resume_from=...)
goes on from it, bit for bit as if the run had never stopped, wherever it was killed."""

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import npconvnet
from npconvnet import callbacks, rng, schedulers, serialization
from npconvnet.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.optim import SGD, Adam
from npconvnet.models import load_checkpoint, load_model
from npconvnet.serialization import ModelFileError
from npconvnet.training import unfinished_checkpoint
from model_files import edit_header, read_members, write_members
from synthetic import bar_images


X, Y = bar_images(160)
# Validation labels flipped: the validation loss rises while training improves, so that
# EarlyStopping and ReduceLROnPlateau have something to track (and weights to restore).
VALIDATION = (X[:40], 1 - Y[:40])


def build(optimizer=None):
    """A model with every kind of training state: BatchNorm statistics, dropout, Adam moments."""
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2), Flatten(),
                       Dropout(0.3), Dense(100, 2))
    model.compile(optimizer=optimizer or Adam(lr=0.01), metrics=["accuracy"])
    return model


def stateful_callbacks(model, folder):
    """A schedule, early stopping restoring the best weights, a plateau rule and a best-only
    model file: every callback that carries state from epoch to epoch."""
    return [schedulers.StepLR(model.optimizer, step_size=2, gamma=0.5),
            callbacks.EarlyStopping(patience=10, restore_best_weights=True),
            callbacks.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5),
            callbacks.ModelCheckpoint(folder / "best.npz", monitor="val_loss", save_best_only=True)]


def train(model, folder, **options):
    """The run under test: 5 epochs of 10 steps, checkpoints in ``folder``."""
    settings = dict(epochs=5, batch_size=16, validation_data=VALIDATION, augment=True, seed=3,
                    verbose=0, callbacks=stateful_callbacks(model, folder), checkpoint_dir=folder)
    settings.update(options)
    return model.fit(X, Y, **settings)


class Killed(Exception):
    """Stands for the process being killed."""


def kill_at_step(model, step):
    """Make the ``step``-th optimizer step (from 1) raise, like a kill in the middle of an epoch."""
    original, count = model.optimizer.step, itertools.count(1)

    def step_or_die():
        if next(count) == step:
            raise Killed
        original()

    model.optimizer.step = step_or_die


def assert_same_run(first, second):
    assert first.state_dict().keys() == second.state_dict().keys()
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[name], value, err_msg=name)
    assert second.history.epoch == first.history.epoch
    assert second.history.history == first.history.history
    assert second.optimizer.lr == first.optimizer.lr
    for mine, theirs in zip(first.optimizer.state, second.optimizer.state):
        assert mine["step"] == theirs["step"]
        np.testing.assert_array_equal(mine["exp_avg"], theirs["exp_avg"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never stopped (and the global generator after it)."""
    model = build()
    train(model, tmp_path_factory.mktemp("uninterrupted"))
    return model, rng.get_state()


# Resuming

@pytest.mark.parametrize("killed_at_step", [1, 7, 10, 11, 23, 40, 50])
def test_a_run_killed_at_any_step_resumes_to_the_same_weights_and_history(
        killed_at_step, uninterrupted, tmp_path):
    """10 steps per epoch: killed in the first step, mid-epoch, at the first and last step of
    an epoch, and in the last epoch."""
    model = build()
    kill_at_step(model, killed_at_step)
    with pytest.raises(Killed):
        train(model, tmp_path)
    resumed = build()
    train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert_same_run(uninterrupted[0], resumed)


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(
        uninterrupted, tmp_path, monkeypatch):
    original, renames = os.replace, itertools.count(1)

    def killed_before_the_third_checkpoint_is_in_place(source, target):
        if str(target).endswith("checkpoint.npz") and next(renames) == 3:
            raise Killed
        original(source, target)

    monkeypatch.setattr(serialization.os, "replace", killed_before_the_third_checkpoint_is_in_place)
    with pytest.raises(Killed):
        train(build(), tmp_path)
    monkeypatch.setattr(serialization.os, "replace", original)
    # The checkpoints written: at the start, after epoch 1, then (killed) after epoch 2.
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["next_epoch"] == 1
    resumed = build()
    train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert_same_run(uninterrupted[0], resumed)


def test_a_resumed_run_can_be_killed_and_resumed_again(uninterrupted, tmp_path):
    for step in (8, 25):
        model = build()
        kill_at_step(model, step)
        checkpoint = tmp_path / "checkpoint.npz"
        with pytest.raises(Killed):
            train(model, tmp_path, resume_from=checkpoint if checkpoint.exists() else None)
    resumed = build()
    train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert_same_run(uninterrupted[0], resumed)


def test_resuming_restores_the_callback_states(uninterrupted, tmp_path):
    model = build()
    kill_at_step(model, 33)
    with pytest.raises(Killed):
        train(model, tmp_path)
    resumed = build()
    resumed_callbacks = stateful_callbacks(resumed, tmp_path)
    history = train(resumed, tmp_path, callbacks=resumed_callbacks, resume_from=tmp_path / "checkpoint.npz")
    step, early, plateau, best_only = resumed_callbacks
    assert history.epoch == [3, 4]
    assert early.best_epoch == 0 and early.wait == 4      # validation got worse after epoch 0
    assert plateau.scheduler.last_epoch == 5
    assert best_only.best == pytest.approx(uninterrupted[0].history.history["val_loss"][0])


def test_resuming_leaves_the_global_generator_where_the_uninterrupted_run_left_it(
        uninterrupted, tmp_path):
    model = build()
    kill_at_step(model, 15)
    with pytest.raises(Killed):
        train(model, tmp_path)
    npconvnet.manual_seed(99)           # whatever the new process starts with
    train(build(), tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert rng.get_state() == uninterrupted[1]


def test_a_run_without_a_seed_resumes_with_the_seed_it_drew(tmp_path):
    first = build()
    first.fit(X, Y, epochs=3, batch_size=16, verbose=0, checkpoint_dir=tmp_path / "whole")
    drawn = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")[1]["seed"]
    split = build()
    kill_at_step(split, 15)
    with pytest.raises(Killed):
        split.fit(X, Y, epochs=3, batch_size=16, verbose=0, checkpoint_dir=tmp_path / "split")
    resumed = build()
    resumed.fit(X, Y, epochs=3, batch_size=16, verbose=0, resume_from=tmp_path / "split" / "checkpoint.npz")
    assert load_checkpoint(tmp_path / "split" / "checkpoint.npz")[1]["seed"] == drawn
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)


def test_a_model_loaded_from_the_checkpoint_resumes_like_a_new_one(uninterrupted, tmp_path):
    model = build()
    kill_at_step(model, 27)
    with pytest.raises(Killed):
        train(model, tmp_path)
    resumed = load_model(tmp_path / "checkpoint.npz")
    train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert_same_run(uninterrupted[0], resumed)


def test_resuming_a_finished_run_trains_nothing_and_ends_it_as_it_ended(uninterrupted, tmp_path):
    train(build(), tmp_path)
    resumed = build()
    history = train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz")
    assert history.epoch == []
    assert_same_run(uninterrupted[0], resumed)


def test_resuming_with_more_epochs_trains_on(tmp_path):
    train(build(), tmp_path, epochs=2)
    resumed = build()
    history = train(resumed, tmp_path, resume_from=tmp_path / "checkpoint.npz", epochs=4)
    assert history.epoch == [2, 3] and resumed.history.epoch == [0, 1, 2, 3]


def cosine_run(folder, epochs, t_max, **options):
    """A run whose cosine schedule spans ``t_max`` epochs; returns the model."""
    model = build()
    schedule = schedulers.CosineAnnealingLR(model.optimizer, T_max=t_max)
    model.fit(X, Y, epochs=epochs, batch_size=16, seed=3, verbose=0, callbacks=[schedule],
              checkpoint_dir=folder, **options)
    return model


def test_a_cosine_stretched_on_resume_goes_on_as_if_the_run_had_started_with_it(tmp_path):
    """One epoch of a one-epoch cosine ends at lr 0; resumed with a three-epoch cosine, it trains
    on at the rates of the longer schedule and ends as a three-epoch run never stopped."""
    whole = cosine_run(tmp_path / "whole", epochs=3, t_max=3)
    cosine_run(tmp_path / "short", epochs=1, t_max=1)
    resumed = cosine_run(tmp_path / "short", epochs=3, t_max=3,
                         resume_from=tmp_path / "short" / "checkpoint.npz")
    np.testing.assert_allclose(resumed.history.history["lr"], [0.01, 0.0075, 0.0025])
    assert_same_run(whole, resumed)


def test_a_stretched_cosine_resumed_later_takes_the_new_schedules_rate_from_the_epoch_reached(tmp_path):
    cosine_run(tmp_path, epochs=2, t_max=2)          # epochs at 0.01, 0.005; ends at 0
    resumed = cosine_run(tmp_path, epochs=4, t_max=4, resume_from=tmp_path / "checkpoint.npz")
    lr = 0.01 * (1 + np.cos(np.pi * np.arange(4) / 4)) / 2
    np.testing.assert_allclose(resumed.history.history["lr"], [0.01, 0.005, lr[2], lr[3]])


def test_a_run_stopped_early_stays_stopped_when_resumed(tmp_path):
    def stopping(model):
        return [callbacks.EarlyStopping(patience=0)]

    stopped = build()
    history = train(stopped, tmp_path, callbacks=stopping(stopped), epochs=10)
    resumed = build()
    again = train(resumed, tmp_path, callbacks=stopping(resumed), resume_from=tmp_path / "checkpoint.npz",
                  epochs=10)
    assert len(history.epoch) < 10 and again.epoch == []
    assert resumed.history.epoch == stopped.history.epoch


# Starting a new run where a checkpoint already is

def test_a_new_run_refuses_to_replace_the_checkpoint_of_an_unfinished_run(tmp_path):
    killed = build()
    kill_at_step(killed, 23)
    with pytest.raises(Killed):
        train(killed, tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(FileExistsError) as error:
        train(build(), tmp_path)
    message = str(error.value)
    for fragment in (f"{tmp_path / 'checkpoint.npz'} holds an unfinished run (2 of 5 epochs trained)",
                     "resume_from=", "another checkpoint_dir", "overwrite=True"):
        assert fragment in message
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_unfinished_checkpoint_gives_the_state_of_a_run_with_epochs_left(tmp_path):
    killed = build()
    kill_at_step(killed, 23)
    with pytest.raises(Killed):
        train(killed, tmp_path)
    checkpoint = tmp_path / "checkpoint.npz"
    read = functools.partial(unfinished_checkpoint, model_class=Sequential)
    assert read(checkpoint, epochs=5)["next_epoch"] == 2
    assert read(checkpoint)["next_epoch"] == 2                        # epochs not known
    assert read(checkpoint, epochs=2) is None                         # it trained them all
    assert read(tmp_path / "none.npz", epochs=5) is None


def test_overwrite_replaces_the_checkpoint_of_an_unfinished_run(uninterrupted, tmp_path):
    killed = build()
    kill_at_step(killed, 23)
    with pytest.raises(Killed):
        train(killed, tmp_path)
    model = build()
    train(model, tmp_path, overwrite=True)
    assert_same_run(uninterrupted[0], model)
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["next_epoch"] == 5


def test_a_finished_run_is_replaced_when_the_same_call_runs_again(uninterrupted, tmp_path):
    train(build(), tmp_path)
    again = build()
    history = train(again, tmp_path)
    assert history.epoch == [0, 1, 2, 3, 4]
    assert_same_run(uninterrupted[0], again)


def test_a_new_run_refuses_to_replace_a_file_it_cannot_read(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(FileExistsError, match="exists but is not a readable checkpoint"):
        train(build(), tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"not a checkpoint"


# What a checkpoint holds

def test_a_checkpoint_is_written_when_training_starts_and_after_every_epoch(tmp_path):
    seen = []

    class Record(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(load_checkpoint(tmp_path / "checkpoint.npz")[1]["next_epoch"])

    model = build()
    model.fit(X, Y, epochs=3, batch_size=16, seed=0, verbose=0, callbacks=[Record()],
              checkpoint_dir=tmp_path)
    assert seen == [0, 1, 2]
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["next_epoch"] == 3
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_a_checkpoint_holds_the_documented_training_state(tmp_path):
    model = build()
    train(model, tmp_path / "new" / "folder")
    saved, training = load_checkpoint(tmp_path / "new" / "folder" / "checkpoint.npz")
    assert training["next_epoch"] == 5 and training["seed"] == 3
    assert training["batch_size"] == 16 and training["samples"] == 160 and training["shuffle"] is True
    assert training["stop_training"] is False
    assert [entry["class"] for entry in training["callbacks"]] == [
        "LearningRateScheduler", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"]
    assert training["callbacks"][0]["state"] == {"last_epoch": 5, "base_lr": 0.01,
                                                 "config": {"step_size": 2, "gamma": 0.5}}
    best_weights = training["callbacks"][1]["state"]["best_weights"]
    assert best_weights.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():      # the best weights, restored at the end
        np.testing.assert_array_equal(best_weights[name], value)
    assert saved.history.history == model.history.history


def test_a_checkpoint_loads_as_a_model(tmp_path):
    model = build()
    model.fit(X, Y, epochs=1, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path)
    restored = load_model(tmp_path / "checkpoint.npz")
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


# Resuming something else than the saved run

def killed_run(tmp_path):
    """The checkpoint of a run killed in its third epoch."""
    model = build()
    kill_at_step(model, 25)
    with pytest.raises(Killed):
        train(model, tmp_path)
    return tmp_path / "checkpoint.npz"


@pytest.mark.parametrize("options, message", [
    ({"seed": 4}, "run with seed=3, this call has seed=4"),
    ({"batch_size": 32}, "batch_size=16, this call has batch_size=32"),
    ({"shuffle": False}, "shuffle=True, this call has shuffle=False"),
    ({"epochs": 1}, "already trained 2 epochs, more than epochs=1"),
    ({"initial_epoch": 1}, "resume_from or initial_epoch, not both"),
])
def test_resuming_with_other_settings_is_refused(options, message, tmp_path):
    checkpoint = killed_run(tmp_path)
    with pytest.raises(ValueError, match=message):
        train(build(), tmp_path, resume_from=checkpoint, **options)


def test_resuming_on_other_data_is_refused(tmp_path):
    checkpoint = killed_run(tmp_path)
    model = build()
    with pytest.raises(ValueError, match="160 training samples, but x has 100"):
        model.fit(X[:100], Y[:100], epochs=5, batch_size=16, seed=3,
                  callbacks=stateful_callbacks(model, tmp_path), resume_from=checkpoint, verbose=0)


def test_resuming_another_architecture_is_refused(tmp_path):
    checkpoint = killed_run(tmp_path)
    other = Sequential(Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(200, 2))
    other.compile(optimizer=Adam(lr=0.01))
    with pytest.raises(ValueError, match="another architecture"):
        other.fit(X, Y, epochs=5, batch_size=16, seed=3, resume_from=checkpoint, verbose=0)


@pytest.mark.parametrize("optimizer, message", [
    (SGD(lr=0.01), "trained with the optimizer Adam"),
    (Adam(lr=0.01, betas=(0.8, 0.999)), r"'betas': \[0.9, 0.999\].*'betas': \[0.8, 0.999\]"),
])
def test_resuming_with_another_optimizer_is_refused(optimizer, message, tmp_path):
    checkpoint = killed_run(tmp_path)
    with pytest.raises(ValueError, match=message):
        train(build(optimizer), tmp_path, resume_from=checkpoint)


def test_resuming_with_other_callbacks_is_refused(tmp_path):
    checkpoint = killed_run(tmp_path)
    with pytest.raises(ValueError, match=r"callbacks \['LearningRateScheduler', 'EarlyStopping', "
                                         r"'ReduceLROnPlateau', 'ModelCheckpoint'\], but this fit has \[\]"):
        train(build(), tmp_path, callbacks=[], resume_from=checkpoint)


def test_resuming_from_a_model_file_explains_what_a_checkpoint_is(tmp_path):
    model = build()
    model.save(tmp_path / "model.npz")
    with pytest.raises(ModelFileError, match="not a checkpoint.*checkpoint_dir"):
        train(build(), tmp_path, resume_from=tmp_path / "model.npz")


def test_resuming_from_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        train(build(), tmp_path, resume_from=tmp_path / "nothing.npz")


def test_a_damaged_training_state_raises_model_file_error(tmp_path):
    checkpoint = killed_run(tmp_path)
    members = read_members(checkpoint)
    edit_header(members, lambda header: header["training"].update(rng_state={"bit_generator": "MT19937"}))
    write_members(checkpoint, members)          # with a recomputed digest
    with pytest.raises(ModelFileError, match="rng_state must be a state of the global random generator"):
        train(build(), tmp_path, resume_from=checkpoint)


# A real process, really killed

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import npconvnet
    from npconvnet import callbacks, schedulers
    from npconvnet.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
    from npconvnet import Sequential

    folder, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None

    class Announce(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print("epoch", epoch, flush=True)

    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 8, 3, padding=1), BatchNorm2D(8), ReLU(), MaxPool2D(2), Flatten(),
                       Dropout(0.3), Dense(800, 2))
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(f"{folder}/x.npy", f"{folder}/y.npy", epochs=5, batch_size=32, seed=7,
              validation_split=0.1, augment=True, verbose=0, checkpoint_dir=out, resume_from=resume,
              callbacks=[schedulers.StepLR(model.optimizer, 2, 0.5), Announce()])
    np.savez(f"{out}/final.npz", **model.state_dict())
    with open(f"{out}/history.json", "w") as file:
        json.dump(model.history.to_dict(), file)
""")


def start(tmp_path, out, *arguments):
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(tmp_path / "train.py"), str(tmp_path), str(out), *arguments],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def finish(process):
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def test_a_training_process_killed_with_sigkill_mid_epoch_resumes_to_the_same_weights(tmp_path):
    x, y = bar_images(3000, size=20)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "train.py").write_text(SCRIPT)

    uninterrupted = start(tmp_path, tmp_path / "uninterrupted")
    killed = start(tmp_path, tmp_path / "killed")
    assert killed.stdout.readline() == "epoch 0\n"
    started = time.perf_counter()
    assert killed.stdout.readline() == "epoch 1\n"     # epoch 0 is done and checkpointed
    time.sleep((time.perf_counter() - started) / 2)     # about half way through epoch 1
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    checkpoint = tmp_path / "killed" / "checkpoint.npz"
    assert 1 <= load_checkpoint(checkpoint)[1]["next_epoch"] < 5

    finish(start(tmp_path, tmp_path / "killed", str(checkpoint)))
    finish(uninterrupted)
    with np.load(tmp_path / "uninterrupted" / "final.npz") as expected, \
            np.load(tmp_path / "killed" / "final.npz") as resumed:
        assert expected.files == resumed.files
        for name in expected.files:
            np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("uninterrupted", "killed")]
    assert history[0] == history[1] and history[0]["epoch"] == [0, 1, 2, 3, 4]
