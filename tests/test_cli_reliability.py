"""The command line when things go wrong: training processes killed at any moment and resumed
with the options of the first run, training that diverges, and random, damaged and odd files
given to predict and the other commands.

Every failure ends with one line on stderr and a documented exit status (2 bad input, 3 training
diverged), never a traceback; a resumed run ends bit for bit as a run never stopped.
"""

import contextlib
import functools
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npconvnet import callbacks, cli, zoo
from npconvnet.models import load_checkpoint, load_model

Image = pytest.importorskip("PIL.Image", reason="the command line reads images with Pillow")
ImageFile = pytest.importorskip("PIL.ImageFile")
pytest.importorskip("matplotlib", reason="npconvnet train draws its curves with matplotlib")

from test_cli import (_environment, assert_one_line_error, ctrl_c_in_the_second_epoch, run,  # noqa: E402
                      write_dataset)
from synthetic import png_declaring  # noqa: E402

# A small model and short training, in-process: each run takes well under a second.
FIRST_RUN = ["--model", "conv5", "--epochs", "3", "--batch-size", "16", "--optimizer", "adam",
             "--lr", "0.01", "--weight-decay", "0.0001", "--no-augment", "--seed", "5",
             "--validation-split", "0.2", "--verbose", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("strokes"))


def stop_after_first_epoch(folder, dataset):
    """Run FIRST_RUN in ``folder`` and stop it with Ctrl-C as its second epoch starts."""
    with ctrl_c_in_the_second_epoch():
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


def test_resume_with_more_epochs_stretches_the_cosine_as_if_the_run_had_started_with_them(
        dataset, tmp_path, capsys):
    # The quick recipe: convnet, Adam at lr 0.005 with a cosine schedule over --epochs.
    quick = ["--dataset", dataset, "--batch-size", "32", "--verbose", "0"]
    assert run(capsys, "train", *quick, "--epochs", "2", "--out", tmp_path / "whole")[0] == 0
    assert run(capsys, "train", *quick, "--epochs", "1", "--out", tmp_path / "r1")[0] == 0
    status, out, err = run(capsys, "train", "--epochs", "2", "--out", tmp_path / "r1",
                           "--resume", tmp_path / "r1" / "checkpoint.npz", "--verbose", "0")
    assert status == 0 and err == ""                    # no warning of an epoch at lr 0
    assert ("The cosine schedule now spans 2 epochs instead of 1: it goes on as if the run had been "
            "started with --epochs 2") in out
    history = json.loads((tmp_path / "r1" / "history.json").read_text())
    assert history["history"]["lr"] == [0.005, 0.0025]
    assert_same_files(tmp_path / "whole" / "model.npz", tmp_path / "r1" / "model.npz")


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


# ------------------------------------------------------------ a new run where an old one is

def test_a_new_run_into_the_folder_of_an_unfinished_run_is_refused(stopped, dataset, capsys):
    folder, checkpoint = stopped
    before = {name: (folder / name).read_bytes() for name in ("checkpoint.npz", "run.json")}
    status, _, err = run(capsys, "train", "--dataset", dataset, "--out", folder, *FIRST_RUN)
    assert_one_line_error(status, err, f"npconvnet: error: {folder} holds an unfinished run (1 of 3 "
                          f"epochs): resume it with --resume {checkpoint}, or choose another --out, "
                          "or add --overwrite")
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_overwrite_starts_afresh_in_the_folder_of_an_unfinished_run(stopped, dataset, capsys):
    folder, checkpoint = stopped
    status, out, err = run(capsys, "train", "--dataset", dataset, "--out", folder, *FIRST_RUN,
                           "--overwrite")
    assert status == 0, err
    assert "epochs 1-3" in out
    assert load_checkpoint(checkpoint)[1]["next_epoch"] == 3


def test_a_finished_run_is_replaced_when_the_same_command_runs_again(dataset, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = ["train", "--dataset", dataset, *FIRST_RUN]
    assert run(capsys, *command)[0] == 0
    model_file = tmp_path / "runs" / f"conv5-{dataset.name}" / "model.npz"
    first = model_file.read_bytes()
    status, _, err = run(capsys, *command)
    assert status == 0, err
    assert model_file.read_bytes() == first


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


# ------------------------------------------------------------------------ files that are not models

def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


NOT_MODELS = {
    "text.npz": b"shopping list: eggs, flour\n",
    "random.npz": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "empty.npz": b"",
    "zip-of-junk.npz": b"PK\x03\x04" + bytes(200),
    "array.npy": npy_bytes(np.arange(3.0)),
}


@pytest.mark.parametrize("name", NOT_MODELS)
@pytest.mark.parametrize("command", ["evaluate", "predict", "summary", "features"])
def test_a_file_that_is_no_model_is_one_line_and_exit_2_for_every_command(command, name, tmp_path, capsys):
    (tmp_path / name).write_bytes(NOT_MODELS[name])
    Image.new("L", (28, 28)).save(tmp_path / "image.png")
    extra = [tmp_path / "image.png"] if command in ("predict", "features") else []
    status, _, err = run(capsys, command, tmp_path / name, *extra)
    assert_one_line_error(status, err, str(tmp_path / name))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(content=st.binary(max_size=2000))
def test_random_bytes_as_a_model_file_are_one_line_and_exit_2(content, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "random-model.npz"
    path.write_bytes(content)
    status, _, err = call("summary", path)
    assert_one_line_error(status, err, str(path))


# ---------------------------------------------------------------- predict on odd and damaged images

def call(*argv):
    """``main(argv)`` in-process, its output captured: ``(status, stdout, stderr)``. (capsys
    cannot serve the many examples of one hypothesis test.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory, dataset):
    """A 1x28x28 model trained for one epoch on the strokes, and an untrained 3x16x16 one."""
    out = tmp_path_factory.mktemp("model")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", "--dataset", str(dataset), "--out", str(out), *FIRST_RUN,
                         "--epochs", "1"]) == 0
    colour = zoo.get("conv5", (3, 16, 16), 2)
    colour.compile()
    colour.input_shape, colour.class_names = (3, 16, 16), ["blue", "red"]
    colour.save(out / "colour.npz")
    return {"gray": out / "model.npz", "colour": out / "colour.npz"}


def assert_predicts_or_refuses(model, image, prepare):
    """predict ends with a prediction and nothing on stderr (exit 0), or with one line on stderr
    naming the image (exit 2); returns the prediction or the line."""
    status, out, err = call("predict", model, image, "--prepare", prepare, "--json")
    if status == 0:
        assert err == ""
        (result,) = json.loads(out)
        probabilities = [entry["probability"] for entry in result["top"]]
        assert np.all(np.isfinite(probabilities)) and result["prediction"] == result["top"][0]["class"]
        return result
    assert_one_line_error(status, err, str(image))
    return err.strip()


def encoded(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def stroke_image(mode="L", size=(28, 28)):
    """A white stroke on black, converted to ``mode``."""
    pixels = np.zeros(size[::-1], np.uint8)
    pixels[size[1] // 4:3 * size[1] // 4, size[0] // 2] = 255
    return Image.fromarray(pixels).convert(mode)


def odd_images():
    """Files that are valid images, but odd ones: ``{name: bytes}``."""
    thin = np.full((1, 10000), 255, np.uint8)
    thin[0, 4000:4100] = 0
    deep = np.zeros((28, 28), np.uint16)
    deep[10:18, 13:15] = 65535
    wide_range = np.zeros((28, 28), np.int32)
    wide_range[10:18, 13:15] = 10 ** 7
    floats = np.zeros((28, 28), np.float32)
    floats[10:18, 13:15] = [np.nan, np.inf]
    palette = stroke_image("RGB").convert("P")
    exif = Image.Exif()
    exif[0x0112] = 6                    # orientation: rotated 90 degrees
    return {
        "1x1.png": encoded(Image.new("L", (1, 1), 0), "PNG"),
        "1x1-white.png": encoded(Image.new("L", (1, 1), 255), "PNG"),
        "thin-10000x1.png": encoded(Image.fromarray(thin), "PNG"),
        "thin-1x10000.png": encoded(Image.fromarray(thin.T.copy()), "PNG"),
        "16-bit.png": encoded(Image.fromarray(deep), "PNG"),
        "32-bit.tiff": encoded(Image.fromarray(wide_range), "TIFF"),
        "float-nan-inf.tiff": encoded(Image.fromarray(floats), "TIFF"),
        "palette.png": encoded(palette, "PNG"),
        "palette-transparent.gif": encoded(palette, "GIF", transparency=0),
        "transparent.png": encoded(Image.new("RGBA", (28, 28), (0, 0, 0, 0)), "PNG"),
        "gray-alpha.png": encoded(stroke_image("LA"), "PNG"),
        "white.png": encoded(Image.new("L", (40, 40), 255), "PNG"),
        "black.jpg": encoded(Image.new("RGB", (40, 40)), "JPEG"),
        "cmyk.jpg": encoded(stroke_image("CMYK"), "JPEG"),
        "one-bit.bmp": encoded(stroke_image("1"), "BMP"),
        "rotated.jpg": encoded(stroke_image("RGB", (30, 20)), "JPEG", exif=exif.tobytes()),
        "large.png": encoded(stroke_image("L", (3000, 2000)), "PNG"),
    }


ODD_IMAGES = odd_images()


@pytest.mark.parametrize("prepare", ["digit", "resize"])
@pytest.mark.parametrize("name", ODD_IMAGES)
def test_predict_on_an_odd_image_predicts_or_refuses_in_one_line(name, prepare, models, tmp_path):
    path = tmp_path / name
    path.write_bytes(ODD_IMAGES[name])
    for model in models.values():
        if prepare == "digit" and model == models["colour"]:
            continue                    # digits are 28x28: the colour model takes 16x16
        assert_predicts_or_refuses(model, path, prepare)


@pytest.mark.parametrize("name", ["white.png", "transparent.png", "1x1-white.png", "black.jpg"])
def test_an_image_without_ink_is_no_digit_but_can_be_resized(name, models, tmp_path):
    path = tmp_path / name
    path.write_bytes(ODD_IMAGES[name])
    assert "no digit found" in assert_predicts_or_refuses(models["gray"], path, "digit")
    assert isinstance(assert_predicts_or_refuses(models["gray"], path, "resize"), dict)


VALID_IMAGES = [encoded(stroke_image("L"), "PNG"), encoded(stroke_image("RGBA"), "PNG"),
                encoded(stroke_image("RGB"), "JPEG"), encoded(stroke_image("RGB"), "BMP"),
                encoded(stroke_image("P"), "GIF"), ODD_IMAGES["16-bit.png"]]


@st.composite
def damaged(draw, images):
    """A valid image file cut short, or with a few bytes changed (mostly in the header)."""
    data = bytearray(draw(st.sampled_from(images)))
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.one_of(st.integers(0, min(64, len(data) - 1)), st.integers(0, len(data) - 1)))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.binary(max_size=500), damaged(VALID_IMAGES)),
       prepare=st.sampled_from(["digit", "resize"]))
def test_predict_on_random_and_damaged_files_predicts_or_refuses_in_one_line(content, prepare, models,
                                                                             tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "fuzzed-image"
    path.write_bytes(content)
    assert_predicts_or_refuses(models["gray"], path, prepare)


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 10_000)])
def test_a_decompression_bomb_is_refused_from_its_header_without_allocating_its_pixels(
        width, height, models, tmp_path, monkeypatch):
    """100000x100000 is beyond twice Pillow's MAX_IMAGE_PIXELS (an error there), 10000x10000
    beyond it (only a warning there): both refused before any pixel is decoded or allocated."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(width, height))
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or load(image))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = assert_predicts_or_refuses(models["gray"], path, "digit")
    assert decoded == []
    assert "too large to read safely" in message and f"{width * height} pixels" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50_000   # KiB
