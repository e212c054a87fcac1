"""npconvnet: a convolutional neural network framework written from scratch in NumPy.

The public surface::

    npconvnet.layers       Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Dense, Flatten,
                           ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout,
                           BatchNorm1D, BatchNorm2D, Residual, Sequential
    npconvnet.losses       CrossEntropyLoss, MSELoss
    npconvnet.optim        SGD, Adam, AdamW, RMSprop
    npconvnet.schedulers   StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau
    npconvnet.datasets     load_mnist, load_fashion_mnist, load_dataset, read_idx, write_idx, ...
    npconvnet.data         scale, to_nchw, one_hot, train_val_split, batches, Augmenter
"""

from . import data, datasets, layers, losses, optim, schedulers
from .layers import Sequential
from .parameter import Parameter
from .rng import manual_seed

__version__ = "0.1.0"

__all__ = ["data", "datasets", "layers", "losses", "optim", "schedulers", "Sequential", "Parameter",
           "manual_seed"]
