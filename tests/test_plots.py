"""Pictures: each function writes a readable PNG of README size, titled and labelled."""

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


def test_plot_filters_draws_one_normalised_panel_per_filter(tmp_path):
    weight = np.random.default_rng(0).normal(size=(8, 1, 5, 5))
    figure = plots.plot_filters(weight, tmp_path / "filters.png")
    assert_png(tmp_path / "filters.png", min_size=(150, 150))
    images = [axes.get_images()[0].get_array() for axes in figure.axes]
    assert len(images) == 8
    np.testing.assert_allclose(images[2], (weight[2, 0] - weight[2, 0].min()) / np.ptp(weight[2, 0]),
                               rtol=1e-5, atol=1e-6)
    assert "8 filters of 1x5x5" in figure.texts[0].get_text()


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
