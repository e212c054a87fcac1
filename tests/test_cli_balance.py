"""``npconvnet train --class-weight`` and ``--balance``: class balancing from the command line,
recorded in run.json and held to on resume."""

import json

import numpy as np
import pytest

from npconvnet.datasets import write_idx
from npconvnet.models import load_model

pytest.importorskip("PIL.Image", reason="the command line reads images with Pillow")
pytest.importorskip("matplotlib", reason="npconvnet train draws its curves with matplotlib")

from test_cli import FAST, assert_one_line_error, make_strokes, run  # noqa: E402

# 40 images of class 0 against about 100 of each other class; no validation split, so that the
# counts printed are those of the whole training set.
COUNTS = [40, 100, 100]
QUICK = [*FAST, "--epochs", "1", "--validation-split", "0"]


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """An IDX folder of strokes whose training images hold COUNTS images of each class."""
    folder = tmp_path_factory.mktemp("imbalanced")
    images, labels = make_strokes(1000, np.random.default_rng(0))
    keep = np.concatenate([np.flatnonzero(labels == label)[:count] for label, count in enumerate(COUNTS)])
    keep.sort()
    write_idx(folder / "train-images-idx3-ubyte.gz", images[keep])
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels[keep])
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images[-60:])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[-60:])
    return folder


@pytest.mark.parametrize("balance, count", [("over", 3 * 100), ("under", 3 * 40)])
def test_balance_resamples_the_training_images_to_the_same_count_per_class(
        balance, count, imbalanced, tmp_path, capsys):
    status, out, err = run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK,
                           "--balance", balance)
    assert status == 0, err
    assert f"{count:,} training" in out
    assert f"{balance}sampled to the same count per class" in out
    assert json.loads((tmp_path / "run.json").read_text())["balance"] == balance


def test_class_weight_is_recorded_in_run_json_and_changes_the_training(imbalanced, tmp_path, capsys):
    assert run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path / "plain", *QUICK)[0] == 0
    status, out, err = run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path / "weighted",
                           *QUICK, "--class-weight", "0:2.5,2:0.5")
    assert status == 0, err
    assert "class weights 0:2.5,2:0.5" in out
    assert json.loads((tmp_path / "weighted" / "run.json").read_text())["class_weight"] == {"0": 2.5, "2": 0.5}
    plain = load_model(tmp_path / "plain" / "model.npz").state_dict()
    weighted = load_model(tmp_path / "weighted" / "model.npz").state_dict()
    assert plain.keys() == weighted.keys()
    assert any(not np.array_equal(plain[name], weighted[name]) for name in plain)


def test_class_weight_balanced_weighs_like_fit(imbalanced, tmp_path, capsys):
    status, out, err = run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK,
                           "--class-weight", "balanced")
    assert status == 0, err
    assert "class weights balanced" in out
    assert json.loads((tmp_path / "run.json").read_text())["class_weight"] == "balanced"


@pytest.mark.parametrize("text", ["heavy", "3", "3:x", "-1:2", "3:-1", "3:nan", "3:1,3:2"])
def test_a_malformed_class_weight_is_one_line_and_exit_2(text, imbalanced, tmp_path, capsys):
    status, _, err = run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK,
                         "--class-weight", text)
    assert_one_line_error(status, err, "--class-weight")


def test_a_class_weight_for_a_class_the_dataset_lacks_is_refused_before_the_run_starts(imbalanced, tmp_path, capsys):
    status, _, err = run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK,
                         "--class-weight", "7:2")
    assert_one_line_error(status, err, "--class-weight gives a weight to class 7", "has 3 classes (labels 0-2)")
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("first, again, recorded", [
    (["--class-weight", "0:2"], ["--class-weight", "0:3"], "--class-weight 0:2"),
    (["--class-weight", "balanced"], ["--class-weight", "0:2"], "--class-weight balanced"),
    ([], ["--class-weight", "balanced"], "no --class-weight"),
    (["--balance", "over"], ["--balance", "under"], "--balance over"),
    ([], ["--balance", "over"], "no --balance"),
])
def test_resume_with_other_balancing_names_the_recorded_one(first, again, recorded, imbalanced, tmp_path, capsys):
    assert run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK, *first)[0] == 0
    status, _, err = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", "2", *again)
    assert_one_line_error(status, err, f"cannot resume with {' '.join(again)}", f"was trained with {recorded}")


def test_resume_keeps_the_recorded_balancing(imbalanced, tmp_path, capsys):
    options = ["--class-weight", "0:2", "--balance", "over"]
    assert run(capsys, "train", "--dataset", imbalanced, "--out", tmp_path, *QUICK, *options)[0] == 0
    status, out, err = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", "2")
    assert status == 0, err
    assert "300 training" in out and "oversampled" in out and "class weights 0:2" in out
