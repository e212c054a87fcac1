"""Layers: each one a small class with ``forward`` and ``backward`` side by side."""

from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .containers import Residual, Sequential
from .conv import Conv2D
from .dense import Dense, Flatten
from .dropout import Dropout
from .normalization import BatchNorm1D, BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dense", "Flatten",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "BatchNorm1D",
           "BatchNorm2D", "Residual", "Sequential"]
