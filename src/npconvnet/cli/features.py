"""``npconvnet features``: pictures of what a network sees, for one image file.

A model's first filters, the image as the model gets it, and the feature maps of every
convolution, activation and pooling layer; or, with ``--filters edges``, two hand-made edge
filters run through Conv2D, ReLU and max pooling, as the classic NumPy CNN walkthroughs do.
The pictures go to ``features/MODEL-IMAGE/`` unless ``--out`` says otherwise. A picture already
there is only replaced by the same picture (the same model, image and options draw the same
pixels); a different one needs ``--overwrite``, so that no earlier run's pictures are lost.
"""

from pathlib import Path

import numpy as np

from .. import plots
from ..imaging import load_image, resize_image, to_grayscale
from ..layers import (AvgPool2D, Conv2D, LeakyReLU, MaxPool2D, ReLU, Residual, Sequential, Sigmoid,
                      Tanh)
from ..training import layer_outputs
from .common import (DIGIT_SHAPE, EXIT_OK, IMAGE_MAX_SIZE, CliError, class_names, load_model_file,
                     model_images, model_label, predict, prepared_images, write_pictures)

#: The hand-made filters of the classic NumPy-CNN walkthroughs: vertical and horizontal edges.
EDGE_FILTERS = np.array([[[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
                         [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]], dtype=np.float32)
EDGE_NAMES = ("vertical", "horizontal")
#: The layers whose outputs are drawn as feature maps (when they are images).
FEATURE_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, ReLU, LeakyReLU, Sigmoid, Tanh, Residual)
#: --prepare raw shrinks larger images to this many pixels a side: the edges read the same.
RAW_MAX_SIZE = 256


def _default_folder(args):
    """``features/MODEL-IMAGE``: a model file named model.npz or checkpoint.npz is named after
    its folder (runs/convnet-mnist/model.npz: convnet-mnist); ``features/edges-IMAGE``."""
    image = Path(args.paths[-1]).stem
    if args.filters == "edges":
        return Path("features") / f"edges-{image}"
    return Path("features") / f"{model_label(args.paths[0])}-{image}"


def _first_kernel(model):
    """The first convolution's kernel ``(F, C, kh, kw)``: its first 4-D parameter (parameters
    come in the order the layers run), or None without a convolution."""
    return next((parameter.data for _, parameter in model.named_parameters()
                 if parameter.data.ndim == 4), None)


def _edge_input(path, how):
    """The image file as the edge filters' input ``(1, H, W)``: the 28x28 digit ``predict``
    prepares (or resized to 28x28), or with ``how="raw"`` the image itself in grayscale."""
    if how != "raw":
        return prepared_images([path], DIGIT_SHAPE, how, digits=True)[0]
    gray = to_grayscale(load_image(path, max_size=IMAGE_MAX_SIZE))
    height, width = gray.shape
    factor = min(1.0, RAW_MAX_SIZE / max(height, width))
    return resize_image(gray, 1, max(3, round(height * factor)), max(3, round(width * factor)))


def _edge_figures(args):
    image_path = args.paths[0]
    image = _edge_input(image_path, args.prepare).astype(np.float32)
    network = Sequential(Conv2D(1, 2, 3, bias=False), ReLU(), MaxPool2D(2))
    network.layers[0].weight.data[...] = EDGE_FILTERS[:, None]
    (_, edges), _, (_, pooled) = layer_outputs(network, image[None])
    panels = [image[0], edges[0, 0], edges[0, 1], pooled[0, 0], pooled[0, 1]]
    titles = ["input", "vertical edges", "horizontal edges", "vertical: ReLU, max-pool",
              "horizontal: ReLU, max-pool"]
    return {"edges.png": plots.plot_image_grid(panels, titles, ncols=5, normalise=True, cell=1.8,
                                               title="Hand-made 3x3 edge filters through Conv2D: "
                                                     f"{Path(image_path).name}"),
            "filters.png": plots.plot_filters(EDGE_FILTERS[:, None], title="Edge filters",
                                              filter_names=EDGE_NAMES)}


def _model_figures(args):
    """The model's pictures and the line that says what it predicts."""
    model_path, image_path = args.paths
    if args.prepare == "raw":
        raise CliError("--prepare raw is for --filters edges: a model takes images of its own input "
                       "size (use --prepare digit or resize)")
    model = load_model_file(model_path)
    image = model_images(model, [image_path], args.prepare)
    probabilities = predict(model, image, model_path, [image_path])
    figures = {"input.png": plots.plot_image_grid([image[0]], ["model input"], cell=2.5,
                                                  title=f"{Path(image_path).name} as the model sees it")}
    kernel = _first_kernel(model)
    if kernel is not None:
        figures["filters.png"] = plots.plot_filters(kernel)
    for index, (layer, maps) in enumerate(layer_outputs(model, model.preprocess_input(image))):
        if isinstance(layer, FEATURE_LAYERS) and maps.ndim == 4:
            name = f"layer{index:02d}_{type(layer).__name__.lower()}.png"
            figures[name] = plots.plot_feature_maps(maps[0], title=f"Layer {index}, {type(layer).__name__}",
                                                    max_maps=args.max_maps)
    names = class_names(model, probabilities.shape[1])
    best = int(probabilities[0].argmax())
    return figures, f"{image_path}: predicted {names[best]} ({probabilities[0, best]:.1%})"


def cmd_features(args):
    if args.filters == "edges":
        if len(args.paths) != 1:
            raise CliError("with --filters edges give one IMAGE (no model file)")
        figures, line = _edge_figures(args), None
    elif len(args.paths) != 2:
        raise CliError("expected MODEL_FILE IMAGE (or --filters edges IMAGE)")
    else:
        figures, line = _model_figures(args)
    out = Path(args.out) if args.out is not None else _default_folder(args)
    write_pictures(out, figures, args.overwrite)
    if line is None:
        print(f"Wrote {', '.join(str(out / name) for name in figures)}")
    else:
        print(line)
        print(f"Wrote {len(figures)} pictures to {out}: {', '.join(figures)}")
    return EXIT_OK
