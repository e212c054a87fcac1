"""``npconvnet evaluate``: loss, accuracy, per-class scores and pictures on a test set."""

from pathlib import Path

import numpy as np

from .. import plots
from ..datasets import FASHION_MNIST_CLASSES
from ..losses import CrossEntropyLoss
from ..metrics import confusion_matrix, scores_from_confusion
from .common import (EXIT_OK, CliError, class_names, dataset, load_model_file, nchw, predict,
                     read_settings, sample_shape, skip_pictures)


def _default_dataset(model_path, model):
    settings = read_settings(Path(model_path).parent)
    if settings and "dataset" in settings:
        return settings["dataset"]
    return "fashion-mnist" if model.class_names == FASHION_MNIST_CLASSES else "mnist"


def _check_model_fits_data(model, images, num_classes, data, model_path):
    shape = sample_shape(images)
    if model.input_shape is not None and tuple(model.input_shape) != shape:
        raise CliError(f"{model_path} takes images of shape {'x'.join(map(str, model.input_shape))} "
                       f"but {data} has images of shape {'x'.join(map(str, shape))}")
    outputs = model.output_shape(shape)
    if len(outputs) != 1 or outputs[0] < num_classes:
        raise CliError(f"{model_path} outputs {outputs} scores per image but {data} has "
                       f"{num_classes} classes")


def _loss_name(loss):
    """``cross-entropy``, ``cross-entropy, label smoothing 0.1``, or the loss's class name."""
    if not isinstance(loss, CrossEntropyLoss):
        return type(loss).__name__
    smoothing = loss.get_config()["label_smoothing"]
    return "cross-entropy" + (f", label smoothing {smoothing:g}" if smoothing else "")


def classification_report(confusion, class_names):
    """Per-class precision, recall, F1 and support, then the macro and weighted averages."""
    precision, recall, f1, support = scores_from_confusion(confusion)
    width = max(12, *(len(name) + 2 for name in class_names))
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, p, r, f, s in zip(class_names, precision, recall, f1, support):
        lines.append(f"{name:<{width}}{p:>10.4f}{r:>10.4f}{f:>10.4f}{s:>10d}")
    lines.append("")
    for average in ("macro", "weighted"):
        p, r, f, s = scores_from_confusion(confusion, average)
        lines.append(f"{average + ' avg':<{width}}{p:>10.4f}{r:>10.4f}{f:>10.4f}{s:>10d}")
    return "\n".join(lines)


def cmd_evaluate(args):
    model = load_model_file(args.model_file)
    data = args.dataset or _default_dataset(args.model_file, model)
    _, (x_test, y_test), dataset_classes = dataset(data, args.data_dir)
    _check_model_fits_data(model, x_test, len(dataset_classes), data, args.model_file)
    probabilities = predict(model, x_test, args.model_file, f"test images of {data}", args.batch_size)
    names = class_names(model, probabilities.shape[1])
    predicted = probabilities.argmax(axis=1)
    labels = y_test.astype(np.int64)
    confusion = confusion_matrix(labels, predicted, num_classes=len(names))
    if model.loss is None or model.optimizer is None:       # a model file saved uncompiled
        model.compile(loss=model.loss or "cross_entropy", metrics=[])
    loss = model.evaluate(x_test, labels, batch_size=args.batch_size)["loss"]
    out = Path(args.out) if args.out is not None else Path(args.model_file).parent
    out.mkdir(parents=True, exist_ok=True)

    print(f"{args.model_file} on the {len(x_test):,} test images of {data}")
    print(f"Loss ({_loss_name(model.loss)}): {loss:.4f}")
    print(f"Accuracy: {np.trace(confusion) / confusion.sum():.2%}")
    print()
    print(classification_report(confusion, names))
    pictures = ["confusion.png"]
    wrong = np.flatnonzero(predicted != labels)
    if args.misclassified and len(wrong):
        pictures.append("misclassified.png")
    elif args.misclassified:
        print("No misclassified images: misclassified.png not written.")
    try:
        plots.plot_confusion_matrix(confusion, names, out / "confusion.png",
                                    title=f"Confusion matrix, {data} test set")
        if "misclassified.png" in pictures:
            confidence = probabilities[wrong, predicted[wrong]]
            worst = wrong[np.argsort(-confidence, kind="stable")][:args.misclassified]
            plots.plot_misclassified(nchw(x_test[worst]), labels[worst], predicted[worst],
                                     probabilities[worst, predicted[worst]], names,
                                     out / "misclassified.png",
                                     title=f"The {len(worst)} most confident errors")
    except ImportError as error:        # matplotlib is optional: the scores are what matters
        skip_pictures(pictures, error)
        return EXIT_OK
    print(f"\nWrote {', '.join(str(out / name) for name in pictures)}")
    return EXIT_OK
