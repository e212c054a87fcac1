"""The model zoo: ready-made networks, each with the training recipe it is known to work with.

::

    model = zoo.get("lenet5")                                   # 1x28x28 input, 10 classes
    model = zoo.get("vgg-mini", input_shape=(3, 32, 32), num_classes=5)
    zoo.names()                     # ['tiny', 'conv5', 'convnet', 'lenet5', 'vgg-mini', 'resnet-mini']
    recipe = zoo.recipe("lenet5")   # {"optimizer": "adam", "lr": 0.002, "epochs": 12, ...}
    print(zoo.describe("lenet5"))

Every model is a fresh :class:`npconvnet.Sequential` (new weights on each call) whose
``input_shape`` is set, and it outputs **logits**, one score per class: the softmax is left to
``CrossEntropyLoss`` (which applies log-softmax) and to ``model.predict``.

A recipe is a plain JSON-serialisable dict::

    description      what the recipe does, in a sentence
    optimizer        a name for npconvnet.optim.get: sgd, momentum, nesterov, adam, adamw, rmsprop
    optimizer_kwargs further optimizer arguments (momentum, weight_decay, ...), lr aside
    lr               the (initial) learning rate
    batch_size, epochs
    schedule         None, or {"name": "cosine" | "step" | "exponential", ...arguments}: a scheduler
                     from npconvnet.schedulers stepped once per epoch (cosine's T_max defaults
                     to the number of epochs)
    augment          False, or the config of an npconvnet.data.Augmenter (Augmenter.get_config())
    label_smoothing  for CrossEntropyLoss
    preprocessing    "scale" (pixels / 255, in [0, 1]) or "center" (pixels / 255 - 0.5): what
                     model.preprocessing is set to (None for "scale"; build_preprocessing)
    subset           None (all data), or {"train": n, "test": m}: train on the first n training
                     images and test on the first m test images

:func:`build_optimizer`, :func:`build_scheduler`, :func:`build_augmenter`, :func:`build_loss` and
:func:`build_preprocessing` turn a recipe into the objects ``compile`` and ``fit`` take and the
model's ``preprocessing``, which the model applies itself and keeps in its file::

    model.preprocessing = zoo.build_preprocessing(recipe)      # "center" for tiny
"""

import copy
import inspect

import numpy as np

from . import data, layers, losses, optim, rng, schedulers
from .layers import (BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D,
                     ReLU, Residual)
from .models import Sequential

#: The digit augmentation of the strong recipes: shifts up to 10%, rotations up to 10 degrees,
#: zoom 0.9-1.1 (``data.default_augmenter()``); no flips, a mirrored digit is another symbol.
DIGIT_AUGMENTATION = data.default_augmenter().get_config()
#: Fashion-MNIST: garments may be mirrored. Flips only: they move no pixel off the grid, while
#: shifts by fractions of a pixel blur the fabric textures the classes differ by.
FASHION_AUGMENTATION = data.Augmenter(horizontal_flip=True).get_config()


# ---------------------------------------------------------------------------- architectures
# Layers that feed a ReLU (directly or through batch normalization) start He-normal; the
# others keep the layers' default for no activation, Glorot-uniform.

def _tiny(channels, height, width, num_classes):
    """The classic one-layer NumPy CNN tutorial network (as in Victor Zhou's "CNNs from scratch"):

    ``(C, 28, 28) -conv 3x3, 8 filters, valid-> (8, 26, 26) -max pool 2-> (8, 13, 13)
    -flatten-> 1352 -dense-> 10`` logits (the tutorial's "softmax layer" is this dense layer;
    the softmax is applied by the loss). As in the tutorial, the convolution has no bias and
    no nonlinearity follows it.
    """
    conv = Conv2D(channels, 8, 3, padding="valid", bias=False)
    flat = _flat_size([conv, MaxPool2D(2)], (channels, height, width))
    return Sequential(conv, MaxPool2D(2), Flatten(), Dense(flat, num_classes))


def _conv5(channels, height, width, num_classes):
    """``(C, 28, 28) -conv 5x5, 8 filters, same-> (8, 28, 28) -ReLU, max pool 2-> (8, 14, 14)
    -flatten-> 1568 -dense-> 10``."""
    features = [Conv2D(channels, 8, 5, padding="same", weight_init="he_normal"), ReLU(), MaxPool2D(2)]
    flat = _flat_size(features, (channels, height, width))
    return Sequential(*features, Flatten(), Dense(flat, num_classes))


def _convnet(channels, height, width, num_classes):
    """The two-layer PyTorch MNIST ConvNet::

        conv 3x3 C->8 (padding 1), ReLU, max pool 2, conv 3x3 8->16 (padding 1), ReLU,
        max pool 2, flatten, dense 16*7*7 = 784 -> 10

    Weights drawn from N(0, 0.01^2) (standard deviation 0.01) and zero biases, as the
    original initialises them.
    """
    features = [Conv2D(channels, 8, 3, padding=1), ReLU(), MaxPool2D(2),
                Conv2D(8, 16, 3, padding=1), ReLU(), MaxPool2D(2)]
    flat = _flat_size(features, (channels, height, width))
    model = Sequential(*features, Flatten(), Dense(flat, num_classes))
    generator = rng.default_rng()
    for name, parameter in model.named_parameters():
        if name.endswith("weight"):
            parameter.data[...] = generator.normal(0.0, 0.01, parameter.data.shape)
        else:
            parameter.data[...] = 0
    return model


def _lenet5(channels, height, width, num_classes):
    """LeNet-5 as usually adapted to 28x28 input (Keras' and PyTorch's tutorials)::

        conv 5x5 C->6 (padding 2), ReLU, max pool 2      (6, 28, 28) -> (6, 14, 14)
        conv 5x5 6->16 (valid), ReLU, max pool 2         (16, 10, 10) -> (16, 5, 5)
        flatten 400, dense 120, ReLU, dense 84, ReLU, dense 10

    ReLU and max pooling replace LeCun's scaled tanh and subsampling; 61,706 parameters.
    """
    features = [Conv2D(channels, 6, 5, padding=2, weight_init="he_normal"), ReLU(), MaxPool2D(2),
                Conv2D(6, 16, 5, weight_init="he_normal"), ReLU(), MaxPool2D(2)]
    flat = _flat_size(features, (channels, height, width))
    return Sequential(*features, Flatten(), Dense(flat, 120, weight_init="he_normal"), ReLU(),
                      Dense(120, 84, weight_init="he_normal"), ReLU(), Dense(84, num_classes))


VGG_CHANNELS = (16, 32, 64)
VGG_HIDDEN = 128


def _vgg_mini(channels, height, width, num_classes):
    """A small VGG-style network with batch normalization::

        3 blocks of (conv 3x3 - BN - ReLU, conv 3x3 - BN - ReLU, max pool 2, dropout 0.1),
        with 16, 32 and 64 filters: (C, 28, 28) -> (16, 14, 14) -> (32, 7, 7) -> (64, 3, 3)
        flatten 576, dense 128, BN, ReLU, dropout 0.4, dense 10

    Convolutions followed by batch normalization have no bias (BN's shift replaces it).
    """
    features, in_channels = [], channels
    for out_channels in VGG_CHANNELS:
        features += [Conv2D(in_channels, out_channels, 3, padding=1, bias=False, weight_init="he_normal"),
                   BatchNorm2D(out_channels), ReLU(),
                   Conv2D(out_channels, out_channels, 3, padding=1, bias=False, weight_init="he_normal"),
                   BatchNorm2D(out_channels), ReLU(), MaxPool2D(2), Dropout(0.1)]
        in_channels = out_channels
    flat = _flat_size(features, (channels, height, width))
    return Sequential(*features, Flatten(), Dense(flat, VGG_HIDDEN, bias=False, weight_init="he_normal"),
                      BatchNorm1D(VGG_HIDDEN), ReLU(), Dropout(0.4), Dense(VGG_HIDDEN, num_classes))


def _basic_block(in_channels, out_channels, stride):
    """ResNet's basic block, ``ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))``: an identity
    shortcut when the shape stays, else a projection (1x1 convolution with the stride, BN)."""
    block = layers.Sequential(
        Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, weight_init="he_normal"),
        BatchNorm2D(out_channels), ReLU(),
        Conv2D(out_channels, out_channels, 3, padding=1, bias=False), BatchNorm2D(out_channels))
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = layers.Sequential(Conv2D(in_channels, out_channels, 1, stride=stride, bias=False),
                                     BatchNorm2D(out_channels))
    return [Residual(block, shortcut), ReLU()]


def _resnet_mini(channels, height, width, num_classes):
    """A small ResNet::

        stem: conv 3x3 C->16 - BN - ReLU, max pool 2        (16, 14, 14)
        basic block 16 -> 16, identity shortcut             (16, 14, 14)
        basic block 16 -> 32, stride 2, projection          (32, 7, 7)
        basic block 32 -> 64, stride 2, projection          (64, 4, 4)
        global average pooling 64, dense 10
    """
    return Sequential(Conv2D(channels, 16, 3, padding=1, bias=False, weight_init="he_normal"),
                      BatchNorm2D(16), ReLU(),
                      MaxPool2D(2), *_basic_block(16, 16, 1), *_basic_block(16, 32, 2),
                      *_basic_block(32, 64, 2), GlobalAvgPool2D(), Dense(64, num_classes))


def _flat_size(features, input_shape):
    """The number of values the list of layers ``features`` makes of one sample."""
    return int(np.prod(layers.Sequential(features).output_shape(input_shape)))


# ---------------------------------------------------------------------------- recipes

def _recipe(description, optimizer, lr, batch_size, epochs, optimizer_kwargs=None, schedule=None,
            augment=False, label_smoothing=0.0, preprocessing="scale", subset=None, datasets=None):
    return {"description": description, "optimizer": optimizer,
            "optimizer_kwargs": optimizer_kwargs or {}, "lr": lr, "batch_size": batch_size,
            "epochs": epochs, "schedule": schedule, "augment": augment,
            "label_smoothing": label_smoothing, "preprocessing": preprocessing, "subset": subset,
            "datasets": datasets or {}}


_MODELS = {
    "tiny": (_tiny, 4, _recipe(
        "The classic tutorial: plain SGD at lr 0.005 on single images (batch size 1), on the first "
        "1,000 training images for 3 epochs, inputs centred to [-0.5, 0.5]; tested on the first "
        "1,000 test images.",
        "sgd", 0.005, batch_size=1, epochs=3, preprocessing="center",
        subset={"train": 1000, "test": 1000})),
    "conv5": (_conv5, 2, _recipe(
        "Adam at lr 0.001, batch size 64, 5 epochs.",
        "adam", 0.001, batch_size=64, epochs=5)),
    "convnet": (_convnet, 4, _recipe(
        "The PyTorch original's recipe: plain SGD at lr 0.05, batch size 128, 10 epochs.",
        "sgd", 0.05, batch_size=128, epochs=10)),
    "lenet5": (_lenet5, 12, _recipe(
        "Adam at lr 0.002 with cosine annealing, batch size 128, 12 epochs.",
        "adam", 0.002, batch_size=128, epochs=12, schedule={"name": "cosine"})),
    "vgg-mini": (_vgg_mini, 8, _recipe(
        "Adam at lr 0.003 with cosine annealing, batch size 128, 12 epochs, random shifts, "
        "rotations and zooms, label smoothing 0.1.",
        "adam", 0.003, batch_size=128, epochs=12, schedule={"name": "cosine"},
        augment=DIGIT_AUGMENTATION, label_smoothing=0.1,
        datasets={"fashion-mnist": {
            "augment": FASHION_AUGMENTATION,
            "description": "Adam at lr 0.003 with cosine annealing, batch size 128, 12 epochs, random "
                           "horizontal flips, label smoothing 0.1."}})),
    "resnet-mini": (_resnet_mini, 2, _recipe(
        "SGD with Nesterov momentum 0.9 at lr 0.1, weight decay 5e-4, cosine annealing, batch size "
        "128, 12 epochs, random shifts, rotations and zooms.",
        "nesterov", 0.1, batch_size=128, epochs=12, optimizer_kwargs={"weight_decay": 5e-4},
        schedule={"name": "cosine"}, augment=DIGIT_AUGMENTATION,
        datasets={"fashion-mnist": {
            "augment": FASHION_AUGMENTATION,
            "description": "SGD with Nesterov momentum 0.9 at lr 0.1, weight decay 5e-4, cosine "
                           "annealing, batch size 128, 12 epochs, random horizontal flips."}})),
}


# ---------------------------------------------------------------------------- public API

def names():
    """The zoo's model names, simplest first."""
    return list(_MODELS)


def _entry(name, where):
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _MODELS:
        raise ValueError(f"zoo.{where}: unknown model {name!r}; known models: {', '.join(_MODELS)}")
    return key, _MODELS[key]


def _check_shape(key, input_shape, num_classes, minimum):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(
            isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1
            for size in shape):
        raise ValueError(f"zoo.get({key!r}): input_shape must be three positive ints (channels, "
                         f"height, width), e.g. (1, 28, 28), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"zoo.get({key!r}): num_classes must be an int >= 2, got {num_classes!r}")
    channels, height, width = (int(size) for size in shape)
    if height < minimum or width < minimum:
        raise ValueError(f"zoo.get({key!r}): the model needs images of at least {minimum}x{minimum} "
                         f"pixels, got {height}x{width} (input_shape={tuple(shape)})")
    return channels, height, width


def get(name, input_shape=(1, 28, 28), num_classes=10):
    """A freshly initialised model: ``(N, *input_shape) -> (N, num_classes)`` logits.

    ``input_shape`` is one sample's ``(channels, height, width)``; every model takes any number
    of channels and any image size down to its minimum (a ValueError names it), and the dense
    layers are sized for the given shape. Weights come from the global generator
    (``npconvnet.manual_seed`` makes them repeatable).
    """
    key, (build, minimum, _) = _entry(name, "get")
    channels, height, width = _check_shape(key, input_shape, num_classes, minimum)
    model = build(channels, height, width, int(num_classes))
    model.input_shape = (channels, height, width)
    return model


def recipe(name, dataset=None):
    """The recommended training recipe of a model, a JSON-serialisable dict (a fresh copy).

    ``dataset`` (e.g. ``"fashion-mnist"``) applies that dataset's overrides, where the recipe has
    any (Fashion-MNIST garments may be mirrored, digits not). The result has no ``datasets`` key.
    """
    key, (_, _, entry) = _entry(name, "recipe")
    result = copy.deepcopy(entry)
    overrides = result.pop("datasets")
    if dataset is not None:
        result.update(copy.deepcopy(overrides.get(str(dataset).lower().replace("_", "-"), {})))
    return result


def describe(name):
    """A few lines on a model: its architecture's docstring summary and its recipe."""
    key, (build, minimum, _) = _entry(name, "describe")
    state = rng.get_state()             # counting parameters must not move the global generator
    try:
        count = get(key).num_parameters()
    finally:
        rng.set_state(state)
    architecture = inspect.cleandoc(build.__doc__).replace("::", ":").splitlines()
    lines = [f"{key}: {count:,} parameters for 1x28x28 input and 10 classes "
             f"(inputs of at least {minimum}x{minimum} pixels)",
             *("  " + line for line in architecture if line.strip()),
             "recipe: " + recipe(key)["description"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- recipe -> objects

def build_optimizer(recipe):
    """The recipe's optimizer, not yet bound to parameters (``compile`` binds it)."""
    return optim.get(recipe["optimizer"], lr=recipe["lr"], **recipe.get("optimizer_kwargs", {}))


_SCHEDULES = {"cosine": schedulers.CosineAnnealingLR, "step": schedulers.StepLR,
              "exponential": schedulers.ExponentialLR}


def build_scheduler(recipe, optimizer):
    """The recipe's learning-rate scheduler on ``optimizer`` (stepped per epoch), or None."""
    schedule = recipe.get("schedule")
    if not schedule:
        return None
    arguments = dict(schedule)
    name = arguments.pop("name", None)
    if name not in _SCHEDULES:
        raise ValueError(f"zoo recipe: unknown schedule {name!r}; expected one of {', '.join(_SCHEDULES)}")
    if name == "cosine":
        arguments.setdefault("T_max", recipe["epochs"])
    return _SCHEDULES[name](optimizer, **arguments)


def build_augmenter(recipe, seed=None):
    """The recipe's :class:`~npconvnet.data.Augmenter`, or None without augmentation."""
    augment = recipe.get("augment")
    if not augment:
        return None
    config = dict(data.default_augmenter().get_config() if augment is True else augment)
    config["seed"] = seed
    return data.Augmenter.from_config(config)


def build_loss(recipe):
    """Cross-entropy with the recipe's label smoothing."""
    return losses.CrossEntropyLoss(label_smoothing=recipe.get("label_smoothing", 0.0))


def build_preprocessing(recipe):
    """The recipe's ``model.preprocessing``: None for ``"scale"``, ``"center"`` for ``"center"``."""
    mode = recipe.get("preprocessing", "scale")
    if mode not in ("scale", "center"):
        raise ValueError(f"zoo recipe: preprocessing must be 'scale' or 'center', got {mode!r}")
    return None if mode == "scale" else mode


def preprocess(recipe, x):
    """Images as the recipe's model takes them, computed up front: float32 pixels / 255, minus
    0.5 for ``"center"``; layout is kept. Only for a model whose ``preprocessing`` is None: one
    given :func:`build_preprocessing`'s value shifts its inputs itself, batch by batch."""
    return data.scaled_pixels(x, build_preprocessing(recipe))
