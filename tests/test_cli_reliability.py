"""The command line when things go wrong: a training run stopped and resumed with the options
of the first run.

Every failure ends with one line on stderr and exit status 2, never a traceback; a resumed run
ends bit for bit as a run never stopped.
"""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from npconvnet import cli
from npconvnet.serialization import load_model

pytest.importorskip("matplotlib", reason="npconvnet train draws its curves with matplotlib")

from test_cli import assert_one_line_error, run, write_dataset  # noqa: E402

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
