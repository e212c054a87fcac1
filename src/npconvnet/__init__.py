"""npconvnet: a convolutional neural network framework written from scratch in NumPy.

The public surface::

    npconvnet.Sequential   the model: layers in order, with compile, fit, evaluate, predict, save
    npconvnet.layers       Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Dense, Flatten,
                           ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout,
                           BatchNorm1D, BatchNorm2D, Residual, Sequential (the container)
    npconvnet.losses       CrossEntropyLoss, MSELoss
    npconvnet.optim        SGD, Adam, AdamW, RMSprop
    npconvnet.regularizers l1, l2, l1_l2: per-layer weight penalties (kernel_regularizer=...)
    npconvnet.schedulers   StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau
    npconvnet.datasets     load_mnist, load_fashion_mnist, load_dataset, read_idx, write_idx, ...
    npconvnet.data         scale, to_nchw, one_hot, train_val_split, batches, Augmenter
    npconvnet.callbacks    EarlyStopping, ReduceLROnPlateau, LearningRateScheduler, ModelCheckpoint
    npconvnet.metrics      accuracy, precision, recall, f1_score, confusion_matrix
    npconvnet.zoo          get(name), names(), recipe(name): tiny ... resnet-mini
    npconvnet.imaging      load_image, decode_image, prepare_digit (a photo of a digit made to look like MNIST)
    npconvnet.plots        training curves, confusion matrices, filters, feature maps, heat maps
    npconvnet.explain      saliency, saliency_map, grad_cam: what the network looks at
    npconvnet.reference    conv2d, max_pool2d, avg_pool2d, dense (+ _backward): the layers' math, plainly
    npconvnet.load_model   rebuild a model saved with model.save(path)
    npconvnet.export_onnx  write a model as an ONNX graph (needs the onnx extra)
    npconvnet.to_torch, from_torch   a model as a torch.nn.Sequential and back, weights included
                           (needs the torch extra)
    npconvnet.set_num_threads, get_num_threads   the threads a layer call runs on (all cores by default)

The modules import one way: ``layers`` at the bottom (with ``windows``, ``products``,
``parameter``, ``rng``; ``allocator``, imported first, sets the C allocator's thresholds), then
``losses``, ``optim``, ``schedulers``, ``callbacks``, ``metrics`` and ``data``; then
``serialization`` (model files), ``training`` (fit and friends) and ``models`` (the trainable
Sequential); then ``zoo``, ``explain`` (saliency and Grad-CAM) and
the exporters (``export``, ``onnx_export``, ``torch_interop``); the command line (``cli``) on top.
"""

from . import allocator     # first: freed memory is kept for the next training step (see there)
from . import (callbacks, data, datasets, explain, imaging, layers, losses, metrics, models, optim, plots,
               reference, regularizers, schedulers, zoo)
from .export import export_onnx, from_torch, to_torch
from .models import Sequential, load_model
from .parallel import get_num_threads, set_num_threads
from .parameter import Parameter
from .rng import manual_seed
from .serialization import ModelFileError, save_model

from .version import __version__

__all__ = ["callbacks", "data", "datasets", "explain", "imaging", "layers", "plots", "losses", "metrics", "models", "optim",
           "reference", "regularizers", "schedulers", "zoo",
           "Sequential", "Parameter", "manual_seed", "load_model", "save_model", "ModelFileError", "export_onnx",
           "from_torch", "to_torch",
           "get_num_threads", "set_num_threads"]
