"""Pictures: training curves, confusion matrices, image grids, filters, feature maps, and the
heat maps of what a network looks at (Grad-CAM and saliency, from ``npconvnet.explain``).

Every function draws on a matplotlib ``Figure`` of its own with the non-interactive Agg canvas
(no window, no pyplot state, works on servers), saves it when ``path`` is given (PNG at
``dpi``, default 100, so a 6x4-inch figure is 600x400 pixels, README-sized) and returns it.
Figures use matplotlib's constrained layout, so titles never overlap. A picture is written
atomically, as model files are (:func:`npconvnet.atomic.atomic_write`): a full disk or a crash
leaves the picture that was there before, never a truncated one.
matplotlib is imported only when a picture is drawn: the rest of npconvnet does not need it.
"""

import io
import math
from pathlib import Path

import numpy as np

from .atomic import atomic_write

__all__ = ["plot_history", "plot_confusion_matrix", "plot_image_grid", "plot_filters",
           "plot_feature_maps", "plot_misclassified", "plot_grad_cam", "plot_saliency", "save_figure",
           "png_bytes"]

DPI = 100


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f'drawing pictures needs matplotlib: pip install "npconvnet[all]" ({err})') from err
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure, dpi=DPI):
    """The figure as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(figure, path, dpi=DPI):
    """Write ``figure`` to ``path`` atomically, in the format its suffix names (PNG without
    one), creating the folder; returns the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: figure.savefig(file, format=path.suffix[1:] or "png", dpi=dpi))
    return figure


def _save(figure, path, dpi=DPI):
    return figure if path is None else save_figure(figure, path, dpi)


def _history_dict(history):
    """``{"loss": [...], ...}`` from a ``History``, its ``to_dict()``, or a plain dict."""
    if hasattr(history, "history"):
        history = history.history
    if isinstance(history, dict) and set(history) == {"epoch", "history"}:
        history = history["history"]
    if not isinstance(history, dict):
        raise TypeError(f"plot_history: expected a History or a dict of lists, got {type(history).__name__}")
    return history


def plot_history(history, path=None, title="Training curves", dpi=DPI):
    """Loss and accuracy per epoch, training and validation side by side.

    ``history``: a ``History`` (``fit``'s result) or ``{"loss": [...], "accuracy": [...],
    "val_loss": [...], "val_accuracy": [...]}``; the panels show the keys present (the accuracy
    panel only when accuracy was logged). Epochs are numbered from 1 on the x axis, with
    integer ticks; each epoch is a marker, so that a run of one epoch still shows its points.
    """
    history = _history_dict(history)
    if not history.get("loss"):
        raise ValueError("plot_history: the history has no 'loss' values to plot")
    panels = [("loss", "Loss")] + ([("accuracy", "Accuracy")] if history.get("accuracy") else [])
    figure = _figure(3.2 * len(panels) + 0.4, 3.6)
    from matplotlib.ticker import MaxNLocator     # optional, as _figure checked: imported on use
    epochs = np.arange(1, len(history["loss"]) + 1)
    # A lone point needs a larger marker to read as one; a line of many, a smaller one.
    markersize = 8 if len(epochs) == 1 else 5
    for index, (key, label) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for prefix, name, style in (("", "training", "o-"), ("val_", "validation", "s--")):
            values = history.get(prefix + key)
            if values and not np.all(np.isnan(np.asarray(values, dtype=float))):
                axes.plot(epochs[:len(values)], values, style, label=name, markersize=markersize)
        axes.set_title(label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label.lower())
        # Half an epoch of margin; min_n_ticks=1 keeps the ticks integers even for one epoch.
        axes.set_xlim(0.5, len(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    return _save(figure, path, dpi)


def plot_confusion_matrix(confusion, class_names=None, path=None, title="Confusion matrix",
                          dpi=DPI):
    """The confusion matrix (rows: true class, columns: predicted class) as a heatmap.

    Cells are shaded by the fraction of their row (so rare classes read as well as common
    ones) and labelled with their counts; the title gives the accuracy.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a square (K, K) matrix, got shape {confusion.shape}")
    classes = len(confusion)
    names = [str(k) for k in range(classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != classes:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {classes} classes")
    row_totals = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(confusion, row_totals, out=np.zeros(confusion.shape), where=row_totals > 0)
    size = min(max(4.0, 0.45 * classes + 2.5), 9.0)
    figure = _figure(size + 0.8, size)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if classes <= 30:
        font = 8 if classes <= 12 else 6
        for (row, column), count in np.ndenumerate(confusion):
            if count:
                axes.text(column, row, str(count), ha="center", va="center", fontsize=font,
                          color="white" if fractions[row, column] > 0.5 else "black")
    ticks = np.arange(classes)
    axes.set_xticks(ticks, names, rotation=45 if max(map(len, names)) > 2 else 0,
                    ha="right" if max(map(len, names)) > 2 else "center")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    total = confusion.sum()
    accuracy = f" (accuracy {np.trace(confusion) / total:.2%})" if total else ""
    axes.set_title(title + accuracy)
    return _save(figure, path, dpi)


def _as_displayable(image):
    """``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` or ``(H, W, 3)`` -> what ``imshow`` takes."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[2] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W), (C, H, W) or (H, W, C), got shape {image.shape}")
    return image


def _normalise(image):
    """Stretch to [0, 1]: a filter's or feature map's own range, so each one shows its pattern."""
    low, high = float(np.min(image)), float(np.max(image))
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def plot_image_grid(images, titles=None, path=None, title=None, ncols=None, cmap="gray",
                    normalise=False, cell=1.1, dpi=DPI):
    """Images in a grid, each with an optional small title.

    ``images``: a sequence or array of ``(H, W)`` / ``(C, H, W)`` / ``(H, W, 3)`` images with
    values in [0, 1]; ``normalise=True`` stretches each image to its own range first.
    ``ncols`` defaults to a near-square grid; ``cell`` is the size of one image in inches.
    """
    images = [_as_displayable(image) for image in images]
    if not images:
        raise ValueError("plot_image_grid: no images to draw")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"plot_image_grid: {len(titles)} titles for {len(images)} images")
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    header = 0.45 if title else 0.0
    label = 0.25 if titles is not None else 0.0
    figure = _figure(max(ncols * cell, 3.0), nrows * (cell + label) + header)
    for index, image in enumerate(images):
        axes = figure.add_subplot(nrows, ncols, index + 1)
        if normalise:
            image = _normalise(image)
        axes.imshow(np.clip(image, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        if titles is not None:
            axes.set_title(str(titles[index]), fontsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    return _save(figure, path, dpi)


def plot_filters(weight, path=None, title="Filters of the first convolution", filter_names=None,
                 cmap="RdBu_r", dpi=DPI):
    """Convolution kernels ``(F, C, kh, kw)``: one kh x kw square per filter and input channel
    (a filter's C channels side by side, up to 8 squares a row), titled with the filter's
    number (or its name from ``filter_names``), and ``: c`` for input channel c when there are
    several.

    The weights are drawn as they are, on one diverging scale centred on 0 for all squares
    (``cmap``: red positive, blue negative, white 0; the colour bar gives the values), so that
    the sign and strength of every weight compare across filters.
    """
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 4 or weight.size == 0:
        raise ValueError(f"plot_filters: expected a weight of shape (F, C, kh, kw), got {weight.shape}")
    if not np.isfinite(weight).all():
        raise ValueError("plot_filters: the weights hold NaN or infinite values")
    count, channels, kernel_height, kernel_width = weight.shape
    names = [str(index) for index in range(count)] if filter_names is None else list(filter_names)
    if len(names) != count:
        raise ValueError(f"plot_filters: {len(names)} filter names for {count} filters")
    per_row = max(1, 8 // channels)                 # filters per row
    ncols, nrows = min(count, per_row) * channels, math.ceil(count / per_row)
    limit = float(np.abs(weight).max()) or 1.0
    cell = 0.8 * max(1.0, kernel_width / kernel_height)
    figure = _figure(max(ncols * cell + 1.0, 3.5), nrows * (0.8 + 0.25) + 0.5)
    for index in range(count):
        for channel in range(channels):
            row, place = divmod(index, per_row)
            axes = figure.add_subplot(nrows, ncols, row * ncols + place * channels + channel + 1)
            image = axes.imshow(weight[index, channel], cmap=cmap, vmin=-limit, vmax=limit,
                                interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(names[index] if channels == 1 else f"{names[index]}: {channel}", fontsize=7)
    figure.colorbar(image, ax=figure.axes, shrink=0.8, label="weight")
    figure.suptitle(f"{title}: {count} filters of {channels}x{kernel_height}x{kernel_width}"
                    + (" (filter: input channel)" if channels > 1 else ""), fontsize=11)
    return _save(figure, path, dpi)


def plot_feature_maps(maps, path=None, title="Feature maps", max_maps=64, cmap="viridis", dpi=DPI):
    """One image's feature maps ``(C, H, W)`` as a grid of up to 8 columns, each map normalised
    to its own range.

    At most ``max_maps`` channels are drawn (the first ones), each titled with its index.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"plot_feature_maps: expected maps of shape (C, H, W), got {maps.shape}")
    shown = maps[:max_maps]
    more = f", first {len(shown)} shown" if len(maps) > len(shown) else ""
    return plot_image_grid([_normalise(m) for m in shown],
                           titles=[str(index) for index in range(len(shown))], path=path,
                           title=f"{title}: {maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}{more}",
                           ncols=min(len(shown), 8), cmap=cmap, cell=0.9, dpi=dpi)


def plot_misclassified(images, true_labels, predicted_labels, probabilities, class_names=None,
                       path=None, title="Most confident errors", dpi=DPI):
    """Wrongly classified images, each titled ``true: x / pred: y (p=0.97)``.

    ``probabilities`` is the predicted class's probability for each image.
    """
    names = class_names if class_names is not None else [str(k) for k in range(
        int(max(np.max(true_labels, initial=0), np.max(predicted_labels, initial=0))) + 1)]
    titles = [f"true: {names[t]}\npred: {names[p]} (p={prob:.2f})"
              for t, p, prob in zip(true_labels, predicted_labels, probabilities)]
    ncols = min(len(images), 8)
    return plot_image_grid(images, titles, path=path, title=title, ncols=ncols, cell=1.3,
                           dpi=dpi)


def _heat_map(heat, image, where):
    """A finite ``(H, W)`` map of ``image``'s height and width, stretched to [0, 1] by its
    maximum (its magnitude, for a signed one); an all-zero map stays 0."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"{where}: expected a map (H, W) of the image's size {image.shape[:2]}, "
                         f"got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError(f"{where}: the map holds NaN or infinite values")
    top = float(np.abs(heat).max())
    return np.abs(heat) / top if top > 0 else np.zeros_like(heat)


def _image_panel(axes, image, label):
    axes.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(label, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def _heat_panel(axes, heat, cmap, label, interpolation):
    """A heat map in [0, 1] on ``axes``, titled ``label``; the image drawn (for a colour bar)."""
    shown = axes.imshow(heat, cmap=cmap, vmin=0, vmax=1, interpolation=interpolation)
    axes.set_title(label, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    return shown


def _heat_figure_done(figure, panels, shown, title, path, dpi):
    """The colour bar of ``shown`` beside ``panels``, the title, and the figure saved."""
    figure.colorbar(shown, ax=list(panels), shrink=0.8, label="fraction of the maximum")
    figure.suptitle(title, fontsize=11)
    return _save(figure, path, dpi)


def plot_grad_cam(image, heat_map, path=None, title="Grad-CAM", alpha=0.5, cmap="jet", dpi=DPI):
    """Grad-CAM over its image: the image, the heat map, and the heat map laid over the image.

    ``image``: ``(H, W)``, ``(C, H, W)`` or ``(H, W, 3)`` with values in [0, 1] (the image as
    the model gets it, before its preprocessing); ``heat_map``: ``(H, W)``, e.g.
    ``explain.grad_cam(model, image)``, drawn divided by its maximum (``cmap``, red the most
    important; the colour bar reads in fractions of the maximum), over the image with opacity
    ``alpha``.
    """
    image = _as_displayable(image)
    heat = _heat_map(heat_map, image, "plot_grad_cam")
    figure = _figure(7.5, 2.9)
    panels = figure.subplots(1, 3)
    _image_panel(panels[0], image, "input")
    shown = _heat_panel(panels[1], heat, cmap, "Grad-CAM", "bilinear")
    _image_panel(panels[2], image, "Grad-CAM over the input")
    panels[2].imshow(heat, cmap=cmap, vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
    return _heat_figure_done(figure, panels, shown, title, path, dpi)


def plot_saliency(image, saliency_map, path=None, title="Saliency", cmap="hot", dpi=DPI):
    """A saliency map beside its image. ``saliency_map``: ``(H, W)``, e.g.
    ``explain.saliency_map(model, image)`` (``max_c |dS/dx|``), drawn divided by its maximum;
    ``image`` as in :func:`plot_grad_cam`."""
    image = _as_displayable(image)
    heat = _heat_map(saliency_map, image, "plot_saliency")
    figure = _figure(5.4, 2.9)
    panels = figure.subplots(1, 2)
    _image_panel(panels[0], image, "input")
    shown = _heat_panel(panels[1], heat, cmap, "|gradient|, largest over the channels", "nearest")
    return _heat_figure_done(figure, panels, shown, title, path, dpi)
