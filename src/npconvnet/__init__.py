"""npconvnet: a convolutional neural network framework written from scratch in NumPy.

The public surface::

    npconvnet.layers       Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Dense, Flatten,
                           ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout,
                           BatchNorm1D, BatchNorm2D, Residual, Sequential
    npconvnet.losses       CrossEntropyLoss, MSELoss
    npconvnet.optim        SGD, Adam, AdamW, RMSprop
    npconvnet.schedulers   StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau
"""

from . import layers, losses, optim, schedulers
from .layers import Sequential
from .parameter import Parameter
from .rng import manual_seed

__version__ = "0.1.0"

__all__ = ["layers", "losses", "optim", "schedulers", "Sequential", "Parameter", "manual_seed"]
