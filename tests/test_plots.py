"""Pictures: each function writes a readable PNG of README size, titled and labelled."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="pictures need matplotlib")
Image = pytest.importorskip("PIL.Image", reason="the PNGs are checked with Pillow")

from npconvnet import plots  # noqa: E402
from npconvnet.callbacks import History  # noqa: E402
from npconvnet.datasets import FASHION_MNIST_CLASSES  # noqa: E402


def assert_png(path, min_size=(200, 150), max_size=(1400, 1400)):
    """A valid PNG of a sensible size that is not blank; returns its pixels."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1]
    assert pixels.std() > 5, "the picture is blank"
    return pixels


def _axes_labels(figure):
    return [(axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) for axes in figure.axes]


HISTORY = {"loss": [1.2, 0.6, 0.4], "accuracy": [0.6, 0.8, 0.9],
           "val_loss": [0.9, 0.7, 0.5], "val_accuracy": [0.7, 0.78, 0.86], "lr": [0.1, 0.1, 0.1]}


def test_plot_history_draws_loss_and_accuracy_for_training_and_validation(tmp_path):
    figure = plots.plot_history(HISTORY, tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    assert _axes_labels(figure) == [("Loss", "epoch", "loss"), ("Accuracy", "epoch", "accuracy")]
    for axes, key in zip(figure.axes, ("loss", "accuracy")):
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert set(lines) == {"training", "validation"}
        np.testing.assert_allclose(lines["training"].get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(lines["training"].get_ydata(), HISTORY[key])
        np.testing.assert_allclose(lines["validation"].get_ydata(), HISTORY["val_" + key])


def test_plot_history_accepts_a_history_object_and_skips_missing_validation(tmp_path):
    history = History()
    for epoch, loss in enumerate([0.9, 0.5]):
        history.append(epoch, {"loss": loss, "accuracy": 1 - loss})
    figure = plots.plot_history(history, tmp_path / "curves.png")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["training"]


def test_plot_history_without_accuracy_draws_the_loss_only():
    figure = plots.plot_history({"loss": [1.0, 0.5]})
    assert len(figure.axes) == 1


def test_plot_history_rejects_a_history_without_loss():
    with pytest.raises(ValueError, match="no 'loss' values"):
        plots.plot_history({"accuracy": [0.5]})


def test_plot_confusion_matrix_names_the_classes_and_shows_the_counts(tmp_path):
    confusion = np.diag(np.arange(10, 20))
    confusion[3, 5] = 7
    figure = plots.plot_confusion_matrix(confusion, FASHION_MNIST_CLASSES, tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == FASHION_MNIST_CLASSES
    assert [t.get_text() for t in axes.get_yticklabels()] == FASHION_MNIST_CLASSES
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    cell_texts = [t.get_text() for t in axes.texts]
    assert "7" in cell_texts and "19" in cell_texts
    accuracy = np.trace(confusion) / confusion.sum()
    assert f"{accuracy:.2%}" in axes.get_title()


def test_plot_confusion_matrix_numbers_the_classes_without_names():
    figure = plots.plot_confusion_matrix(np.eye(3, dtype=int))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["0", "1", "2"]


def test_plot_confusion_matrix_rejects_a_wrong_number_of_names():
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        plots.plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"])


@pytest.fixture
def imshow_arrays(monkeypatch):
    """The arrays handed to matplotlib's imshow, in order, with the colour limits of each."""
    from matplotlib.axes import Axes
    drawn, original = [], Axes.imshow

    def recording(axes, array, *args, **kwargs):
        image = original(axes, array, *args, **kwargs)
        drawn.append((np.array(array), image.norm.vmin, image.norm.vmax))
        return image

    monkeypatch.setattr(Axes, "imshow", recording)
    return drawn


def test_plot_filters_draws_each_single_channel_filter_as_one_kh_by_kw_square(tmp_path, imshow_arrays):
    weight = np.random.default_rng(0).normal(size=(8, 1, 3, 5)).astype(np.float32)
    figure = plots.plot_filters(weight, tmp_path / "filters.png")
    assert_png(tmp_path / "filters.png", min_size=(150, 100))
    assert len(imshow_arrays) == 8
    for index, (array, _, _) in enumerate(imshow_arrays):
        assert array.shape == (3, 5)
        np.testing.assert_array_equal(array, weight[index, 0])      # the weights as they are
    assert [axes.get_title() for axes in figure.axes[:8]] == [str(index) for index in range(8)]
    assert "8 filters of 1x3x5" in figure.texts[0].get_text()


def test_plot_filters_draws_every_input_channel_of_a_filter_as_its_own_square(imshow_arrays):
    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    figure = plots.plot_filters(weight)
    assert [array.shape for array, _, _ in imshow_arrays] == [(3, 3)] * 12
    for index in range(4):
        for channel in range(3):
            np.testing.assert_array_equal(imshow_arrays[3 * index + channel][0], weight[index, channel])
    assert figure.axes[4].get_title() == "1: 1"


def test_plot_filters_uses_one_scale_centred_on_zero_for_all_filters(imshow_arrays):
    weight = np.zeros((2, 1, 3, 3), np.float32)
    weight[0, 0, 0, 0], weight[1, 0, 2, 2] = 0.5, -2.0
    plots.plot_filters(weight)
    assert {(vmin, vmax) for _, vmin, vmax in imshow_arrays} == {(-2.0, 2.0)}


def test_plot_filters_names_the_filters_it_is_given(imshow_arrays):
    figure = plots.plot_filters(np.ones((2, 1, 3, 3)), filter_names=["vertical", "horizontal"])
    assert [axes.get_title() for axes in figure.axes[:2]] == ["vertical", "horizontal"]


@pytest.mark.parametrize("weight, message", [
    (np.ones((3, 3)), "expected a weight of shape"),
    (np.full((1, 1, 3, 3), np.nan), "NaN or infinite"),
])
def test_plot_filters_rejects_what_is_no_kernel(weight, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_filters(weight)


def test_plot_history_of_one_epoch_has_integer_ticks_and_a_visible_point():
    figure = plots.plot_history({"loss": [0.3], "val_loss": [0.2]})
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
    assert ticks == [1.0]
    for line in axes.get_lines():
        assert line.get_marker() in ("o", "s") and line.get_markersize() >= 6


def test_plot_history_ticks_are_whole_epochs():
    figure = plots.plot_history({"loss": list(np.linspace(1, 0.1, 7))})
    ticks = figure.axes[0].get_xticks()
    assert np.array_equal(ticks, np.round(ticks))


def _overlap(first, second):
    return not (first.x1 <= second.x0 or second.x1 <= first.x0 or
                first.y1 <= second.y0 or second.y1 <= first.y0)


@pytest.mark.parametrize("draw", [
    lambda: plots.plot_image_grid([np.eye(28)], ["model input"], title="seven.png as the model sees it",
                                  cell=2.5),
    lambda: plots.plot_image_grid([np.eye(28)] * 5, list("abcde"), ncols=5, cell=1.8,
                                  title="Hand-made 3x3 edge filters through Conv2D: a-long-name.png"),
    lambda: plots.plot_filters(np.ones((16, 1, 3, 3))),
    lambda: plots.plot_history(HISTORY, title="convnet on mnist"),
])
def test_the_figure_title_never_overlaps_a_panel_title(draw):
    figure = draw()
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    title = figure.texts[0].get_window_extent(renderer)
    for axes in figure.axes:
        if axes.get_title():
            assert not _overlap(title, axes.title.get_window_extent(renderer)), axes.get_title()


def test_a_picture_that_cannot_be_written_leaves_the_one_before_and_names_its_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    path = tmp_path / "curves.png"
    plots.plot_history(HISTORY, path)
    before = path.read_bytes()

    def disk_full_halfway(figure, file, **options):
        file.write(before[:100])
        raise OSError(27, "File too large")

    monkeypatch.setattr(Figure, "savefig", disk_full_halfway)
    with pytest.raises(OSError, match=f"cannot write {path}: File too large"):
        plots.plot_history(HISTORY, path)
    assert path.read_bytes() == before
    assert [item.name for item in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                    reason="RLIMIT_FSIZE stands for a full disk on Linux")
def test_a_file_size_limit_hit_while_saving_keeps_the_previous_picture(tmp_path):
    path = tmp_path / "curves.png"
    plots.plot_history(HISTORY, path)
    before = path.read_bytes()
    # The figure is drawn before the limit (matplotlib may write its font cache), then saved.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from npconvnet import plots
        figure = plots.plot_history({HISTORY!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            plots.save_figure(figure, sys.argv[1])
        except OSError as error:
            print(error)
    """)
    source = str(Path(plots.__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": source, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    assert f"cannot write {path}: File too large" in result.stdout
    assert path.read_bytes() == before
    assert [item.name for item in tmp_path.iterdir()] == ["curves.png"]


def test_plot_feature_maps_titles_the_grid_with_the_layer_and_shape(tmp_path):
    maps = np.random.default_rng(0).random((6, 12, 12))
    figure = plots.plot_feature_maps(maps, tmp_path / "maps.png", title="Layer 0, Conv2D")
    assert_png(tmp_path / "maps.png", min_size=(150, 100))
    assert len(figure.axes) == 6
    assert figure.texts[0].get_text() == "Layer 0, Conv2D: 6 maps of 12x12"


def test_plot_feature_maps_draws_at_most_max_maps(tmp_path):
    figure = plots.plot_feature_maps(np.random.default_rng(0).random((100, 4, 4)), max_maps=16)
    assert len(figure.axes) == 16
    assert "first 16 shown" in figure.texts[0].get_text()


def test_plot_misclassified_titles_each_image_with_true_and_predicted_labels(tmp_path):
    images = np.random.default_rng(0).random((3, 1, 28, 28))
    figure = plots.plot_misclassified(images, [0, 1, 2], [1, 2, 0], [0.91, 0.5, 0.75],
                                      FASHION_MNIST_CLASSES, tmp_path / "errors.png")
    assert_png(tmp_path / "errors.png")
    assert [axes.get_title() for axes in figure.axes] == [
        "true: T-shirt/top\npred: Trouser (p=0.91)", "true: Trouser\npred: Pullover (p=0.50)",
        "true: Pullover\npred: T-shirt/top (p=0.75)"]


def test_plot_image_grid_rejects_a_wrong_number_of_titles():
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plots.plot_image_grid(np.zeros((3, 4, 4)), titles=["a", "b"])


def test_plots_do_not_touch_pyplot_state():
    import matplotlib.pyplot as pyplot
    before = pyplot.get_fignums()
    plots.plot_history(HISTORY)
    assert pyplot.get_fignums() == before
