"""``npconvnet explain``: what the network looks at in one image file, as pictures.

``grad_cam.png``: the image as the model gets it, its Grad-CAM heat map for the explained
class, and the map laid over the image; ``saliency.png``: the image and its saliency map (the
largest absolute gradient of the class score over the channels). The image is prepared as
``npconvnet predict`` prepares it; the class is the predicted one unless ``--target`` says
otherwise (a class index or name), and the layer the last convolution unless ``--layer`` names
another (see ``npconvnet.explain``). The pictures go to ``explain/MODEL-IMAGE/`` unless
``--out`` says otherwise, and replace different pictures there only with ``--overwrite``, as
``npconvnet features`` does.
"""

from pathlib import Path

from .. import explain, plots
from .common import (EXIT_OK, CliError, class_names, load_model_file, model_images, model_label, predict,
                     write_pictures)


def _target(text, names):
    """``--target``: a class name of the model, or a class index."""
    if text is None:
        return None
    if text in names:
        return names.index(text)
    try:
        index = int(text)
    except ValueError:
        raise CliError(f"--target {text!r}: not a class of the model (its classes: {', '.join(names)}) "
                       "nor a class index") from None
    if not 0 <= index < len(names):
        raise CliError(f"--target {index}: the model has {len(names)} classes, indices 0 to {len(names) - 1}")
    return index


def _layer(text):
    """``--layer``: an index into the model's layers, or a layer's name (``4.block.0``)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def cmd_explain(args):
    model = load_model_file(args.model_file)
    image = model_images(model, [args.image], args.prepare)
    probabilities = predict(model, image, args.model_file, [args.image])[0]
    names = class_names(model, len(probabilities))
    predicted = int(probabilities.argmax())
    target = _target(args.target, names)
    target = predicted if target is None else target
    layer_name, layer = explain.find_layer(model, _layer(args.layer), "--layer")
    cam = explain.grad_cam(model, image, target, layer)[0]
    saliency = explain.saliency_map(model, image, target)[0]
    about = f"{Path(args.image).name}: class {names[target]} ({probabilities[target]:.1%})"
    figures = {"grad_cam.png": plots.plot_grad_cam(image[0], cam, title=f"{about}, Grad-CAM of layer "
                                                   f"{layer_name} ({type(layer).__name__})"),
               "saliency.png": plots.plot_saliency(image[0], saliency, title=f"{about}, saliency")}
    out = Path(args.out) if args.out is not None else (
        Path("explain") / f"{model_label(args.model_file)}-{Path(args.image).stem}")
    write_pictures(out, figures, args.overwrite)
    print(f"{args.image}: predicted {names[predicted]} ({probabilities[predicted]:.1%}); explained class "
          f"{names[target]} with Grad-CAM of layer {layer_name} ({type(layer).__name__})")
    print(f"Wrote {len(figures)} pictures to {out}: {', '.join(figures)}")
    return EXIT_OK
