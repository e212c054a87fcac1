"""The command line when things go wrong: training processes killed at any moment and resumed
with the options of the first run, and training that diverges.

Every failure ends with one line on stderr and a documented exit status (2 bad input, 3 training
diverged), never a traceback; a resumed run ends bit for bit as a run never stopped.
"""

import contextlib
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npconvnet import callbacks, cli, zoo
from npconvnet.serialization import load_checkpoint, load_model

pytest.importorskip("matplotlib", reason="npconvnet train draws its curves with matplotlib")

from test_cli import _environment, assert_one_line_error, run, write_dataset  # noqa: E402

# A small model and short training, in-process: each run takes well under a second.
FIRST_RUN = ["--model", "conv5", "--epochs", "3", "--batch-size", "16", "--optimizer", "adam",
             "--lr", "0.01", "--weight-decay", "0.0001", "--no-augment", "--seed", "5",
             "--validation-split", "0.2", "--verbose", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("strokes"))


def stop_after_first_epoch(folder, dataset):
    """Run FIRST_RUN in ``folder`` and stop it with Ctrl-C as its second epoch starts."""
    from npconvnet.training import Model
    original, calls = Model._train_epoch, []

    def interrupted_in_the_second_epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Model, "_train_epoch", interrupted_in_the_second_epoch)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["train", "--dataset", dataset, "--out", folder, *FIRST_RUN]) == 130
    return folder


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, dataset):
    """The folder of FIRST_RUN stopped after its first epoch (copy it before resuming)."""
    return stop_after_first_epoch(tmp_path_factory.mktemp("stopped"), dataset)


@pytest.fixture
def stopped(stopped_run, tmp_path):
    """A copy of the stopped run for one test: ``(folder, its checkpoint)``."""
    folder = shutil.copytree(stopped_run, tmp_path / "run")
    return folder, folder / "checkpoint.npz"


def assert_same_files(expected, actual):
    """Two model files hold the same arrays to the bit (the header's JSON included), in any order."""
    with np.load(expected) as first, np.load(actual) as second:
        assert sorted(first.files) == sorted(second.files)
        for name in first.files:
            np.testing.assert_array_equal(second[name], first[name], err_msg=name)


# ------------------------------------------------------------ resuming with the first run's options

def test_resume_with_the_options_of_the_first_run_ends_as_a_run_never_stopped(
        stopped, dataset, tmp_path, capsys, monkeypatch):
    assert run(capsys, "train", "--dataset", dataset, "--out", tmp_path / "whole", *FIRST_RUN)[0] == 0
    folder, checkpoint = stopped
    # The same options, spelled differently: the dataset relative to the working folder.
    monkeypatch.chdir(dataset.parent)
    respelled = [{"0.01": "1e-2", "0.0001": "1e-4", "0.2": ".2"}.get(arg, arg) for arg in FIRST_RUN]
    status, out, err = run(capsys, "train", "--dataset", dataset.name, "--out", folder, *respelled,
                           "--resume", checkpoint)
    assert status == 0, err
    assert "epochs 2-3" in out
    assert_same_files(tmp_path / "whole" / "model.npz", folder / "model.npz")
    assert (json.loads((folder / "history.json").read_text())
            == json.loads((tmp_path / "whole" / "history.json").read_text()))


def test_resume_without_options_takes_them_from_run_json(stopped, capsys):
    folder, checkpoint = stopped
    status, out, _ = run(capsys, "train", "--resume", checkpoint)
    assert status == 0
    assert "adam (lr 0.01, weight decay 0.0001), batch size 16, epochs 2-3" in out
    assert load_model(folder / "model.npz").history.epoch == [0, 1, 2]


@pytest.mark.parametrize("option, recorded", [
    (["--lr", "0.1"], "--lr 0.01"),
    (["--seed", "6"], "--seed 5"),
    (["--batch-size", "32"], "--batch-size 16"),
    (["--optimizer", "sgd"], "--optimizer adam"),
    (["--weight-decay", "0"], "--weight-decay 0.0001"),
    (["--augment"], "--no-augment"),
    (["--validation-split", "0.1"], "--validation-split 0.2"),
    (["--model", "tiny"], "--model conv5"),
])
def test_resume_with_another_value_of_an_option_names_it_and_the_recorded_value(
        option, recorded, stopped, capsys):
    folder, checkpoint = stopped
    before = checkpoint.read_bytes()
    status, _, err = run(capsys, "train", "--resume", checkpoint, *option)
    assert_one_line_error(status, err, f"cannot resume with {' '.join(option)}: the run in {folder} "
                                       f"was trained with {recorded} (run.json)")
    assert checkpoint.read_bytes() == before


def test_resume_on_another_dataset_is_refused(stopped, tmp_path, capsys):
    folder, checkpoint = stopped
    other = write_dataset(tmp_path / "other", seed=1)
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--dataset", other)
    assert_one_line_error(status, err, f"cannot resume with --dataset {other}: the run in {folder} "
                                       "was trained on")


def test_resume_finds_a_dataset_folder_that_was_moved(stopped, dataset, tmp_path, capsys):
    folder, checkpoint = stopped
    recorded = json.loads((folder / "run.json").read_text())
    recorded["dataset"] = str(tmp_path / "moved-away")
    (folder / "run.json").write_text(json.dumps(recorded))
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--dataset", dataset)
    assert status == 0, err
    assert json.loads((folder / "run.json").read_text())["dataset"] == str(dataset)


def test_resume_with_fewer_epochs_is_refused_and_more_epochs_train_longer(stopped, capsys):
    folder, checkpoint = stopped
    status, _, err = run(capsys, "train", "--resume", checkpoint, "--epochs", "2")
    assert_one_line_error(status, err, "cannot resume with --epochs 2", "trains for 3 epochs",
                          "--epochs may only be raised")
    status, out, _ = run(capsys, "train", "--resume", checkpoint, "--epochs", "4")
    assert status == 0 and "epochs 2-4" in out
    assert load_model(folder / "model.npz").history.epoch == [0, 1, 2, 3]


def test_resume_of_a_run_stopped_before_its_first_checkpoint_says_to_start_again(stopped, capsys):
    folder, checkpoint = stopped
    checkpoint.unlink()
    status, _, err = run(capsys, "train", "--resume", checkpoint)
    assert_one_line_error(status, err, f"{checkpoint}: no such checkpoint file",
                          "stopped before training started", "start it again without --resume")


def test_resume_from_a_model_file_explains_it_is_no_checkpoint(stopped, capsys):
    folder, checkpoint = stopped
    load_model(checkpoint).save(folder / "model.npz")
    status, _, err = run(capsys, "train", "--resume", folder / "model.npz")
    assert_one_line_error(status, err, "model.npz: a model file without training state")


def test_resume_without_the_run_settings_is_refused(stopped, capsys):
    folder, checkpoint = stopped
    (folder / "run.json").write_text(json.dumps({"model": "conv5"}))
    status, _, err = run(capsys, "train", "--resume", checkpoint)
    assert_one_line_error(status, err, "cannot resume", "run.json", "missing or incomplete")


# ---------------------------------------------------------------------------- stopped at any moment

# The quick recipe (convnet, Adam with a cosine schedule) with augmentation: the schedule, the
# optimizer's moments and the generators must all come back from the checkpoint.
KILLED_RUN = ["--epochs", "4", "--seed", "3", "--batch-size", "32", "--augment", "--verbose", "0"]


@pytest.fixture(scope="module")
def large_dataset(tmp_path_factory):
    """2,400 training images: an epoch takes about a second on one core."""
    return write_dataset(tmp_path_factory.mktemp("strokes-large"), train=2400)


def start_training(dataset, out, *extra):
    """``npconvnet train`` in a process of its own (BLAS on one thread, as two share the machine)."""
    command = [sys.executable, "-m", "npconvnet", "train", "--dataset", str(dataset),
               "--out", str(out), *KILLED_RUN, *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**_environment(), "OPENBLAS_NUM_THREADS": "1"})


def finish(process):
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def kill(process):
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def next_epoch(checkpoint):
    """The epoch (from 0) the checkpoint goes on from; None while there is no checkpoint."""
    return load_checkpoint(checkpoint)[1]["next_epoch"] if checkpoint.is_file() else None


def wait_for_checkpoint(checkpoint, epoch, process):
    """Wait until ``checkpoint`` goes on from ``epoch``; returns the time it was seen."""
    deadline = time.monotonic() + 120
    while True:
        saved = next_epoch(checkpoint)
        if saved is not None and saved >= epoch:
            return time.monotonic()
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} after two minutes"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(large_dataset, tmp_path_factory):
    """The reference run, never stopped. It trains in the background, beside the first killed
    run; calling the fixture's value waits for it and returns its folder."""
    out = tmp_path_factory.mktemp("uninterrupted")
    process = start_training(large_dataset, out)

    @functools.cache
    def folder():
        finish(process)
        return out

    yield folder
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.parametrize("killed_in_epoch", [1, 2])
def test_a_training_process_killed_mid_epoch_resumes_to_the_same_model_and_history(
        killed_in_epoch, uninterrupted, large_dataset, tmp_path):
    """Killed during the first epoch, the run goes on from the checkpoint written as training
    started; killed in the second, from the checkpoint of the first."""
    checkpoint = tmp_path / "checkpoint.npz"
    killed = start_training(large_dataset, tmp_path)
    started = wait_for_checkpoint(checkpoint, 0, killed)
    if killed_in_epoch == 2:
        epoch_time = wait_for_checkpoint(checkpoint, 1, killed) - started
        time.sleep(epoch_time / 3)
    else:
        time.sleep(0.1)
    kill(killed)
    assert next_epoch(checkpoint) == killed_in_epoch - 1     # it died before the epoch's end
    assert not (tmp_path / "model.npz").exists()

    finish(start_training(large_dataset, tmp_path, "--resume", str(checkpoint)))
    reference = uninterrupted()
    assert_same_files(reference / "model.npz", tmp_path / "model.npz")
    history = [json.loads((folder / "history.json").read_text()) for folder in (reference, tmp_path)]
    assert history[1] == history[0] and history[0]["epoch"] == [0, 1, 2, 3]


def test_a_training_process_killed_before_training_started_cannot_be_resumed(large_dataset, tmp_path):
    kill(start_training(large_dataset, tmp_path))       # still starting Python
    assert list(tmp_path.iterdir()) == []
    resumed = start_training(large_dataset, tmp_path, "--resume", str(tmp_path / "checkpoint.npz"))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 2
    assert err.strip() == f"npconvnet: error: {tmp_path / 'checkpoint.npz'}: no such checkpoint file"


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(dataset, tmp_path, capsys,
                                                                            monkeypatch):
    from npconvnet.training import Model

    def interrupted_as_it_starts(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Model, "fit", interrupted_as_it_starts)
    status, _, err = run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FIRST_RUN)
    assert status == 130
    assert err.strip() == "Interrupted before training started: no checkpoint was written."


# --------------------------------------------------------------------------------------- divergence

def test_a_diverging_run_exits_3_with_one_line_and_writes_no_model_file(dataset, tmp_path):
    command = [sys.executable, "-m", "npconvnet", "train", "--dataset", str(dataset), "--out",
               str(tmp_path), "--model", "conv5", "--epochs", "3", "--batch-size", "16",
               "--lr", "1e30", "--verbose", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**_environment(), "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("npconvnet: error: training diverged in epoch 1/3, batch ")
    checkpoint = tmp_path / "checkpoint.npz"
    for fragment in ("/17: the loss became nan (the last finite loss was ",
                     f"{checkpoint} keeps the model before training and model.npz was not written",
                     "Train again with a lower learning rate, e.g. --lr 1e+29 (this run had --lr 1e+30)"):
        assert fragment in lines[0]
    assert not (tmp_path / "model.npz").exists()
    saved, training = load_checkpoint(checkpoint)
    assert training["next_epoch"] == 0
    assert all(np.isfinite(value).all() for value in saved.state_dict().values())


def test_divergence_in_a_later_epoch_keeps_its_checkpoint_and_the_model_file_already_there(
        dataset, tmp_path, capsys, monkeypatch):
    options = ["--dataset", dataset, *FIRST_RUN]
    assert run(capsys, "train", "--out", tmp_path / "one-epoch", *options, "--epochs", "1")[0] == 0
    assert run(capsys, "train", "--out", tmp_path, *options)[0] == 0
    good_model = (tmp_path / "model.npz").read_bytes()
    # The same run again, its learning rate exploding from the second epoch on.
    monkeypatch.setattr(zoo, "build_scheduler", lambda recipe, optimizer: callbacks.LearningRateScheduler(
        lambda epoch, lr: 1e30 if epoch >= 1 else lr))
    status, _, err = run(capsys, "train", "--out", tmp_path, *options)
    assert status == 3 and len(err.strip().splitlines()) == 1
    assert "training diverged in epoch 2/3" in err and "keeps the model after epoch 1" in err
    assert (tmp_path / "model.npz").read_bytes() == good_model
    saved = load_checkpoint(tmp_path / "checkpoint.npz")[0].state_dict()
    for name, value in load_model(tmp_path / "one-epoch" / "model.npz").state_dict().items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [0]
