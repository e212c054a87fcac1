"""Models moved between npconvnet and PyTorch, with their weights and running statistics::

    module = npconvnet.to_torch(model)          # a torch.nn.Sequential computing model.forward
    model = npconvnet.from_torch(module)        # a trainable npconvnet.Sequential, not compiled

Each layer maps onto its PyTorch module (classes matched exactly, both ways)::

    Conv2D            nn.Conv2d: stride, padding as ints, pairs, "same" (stride 1, as PyTorch
                      allows) or "valid"; "full" becomes kernel - 1 on each side. Zero padding,
                      dilation 1 and groups 1 only. Unequal padding on the two sides of an axis
                      and "same" at a larger stride have no nn.Conv2d equivalent: refused
    MaxPool2D         nn.MaxPool2d (dilation 1, ceil_mode=False, return_indices=False)
    AvgPool2D         nn.AvgPool2d with count_include_pad=True, as npconvnet counts the zero
                      padding in the mean (count_include_pad=False is taken without padding
                      only); ceil_mode=False, no divisor_override
    GlobalAvgPool2D   nn.AdaptiveAvgPool2d(1) followed by nn.Flatten() (the pair: npconvnet's
                      layer outputs (N, C), PyTorch's pool (N, C, 1, 1))
    Dense, Flatten    nn.Linear, nn.Flatten() (start_dim=1, end_dim=-1)
    ReLU, LeakyReLU, Sigmoid, Tanh, Dropout    their nn namesakes (negative_slope, p)
    Softmax           nn.Softmax(dim=1)
    BatchNorm1D/2D    nn.BatchNorm1d/2d: weight, bias, running_mean, running_var, eps, momentum
    Residual          npconvnet.torch_interop.Residual, ``block(x) + shortcut(x)`` (torch.nn
                      has no such module; this one is a plain nn.Module that from_torch reads back)
    layers.Sequential nn.Sequential, nested as it is

A Conv2D or Dense with ``activation=`` becomes the PyTorch layer followed by the activation's
module, and comes back from PyTorch as those two layers. ``from_torch`` names the layers by
their place (a Sequential built from an OrderedDict gets indices), and a layer that converts to
two modules (``activation=``, GlobalAvgPool2D) shifts the indices of the modules after it.

Batch normalization: npconvnet follows PyTorch's momentum convention, ``running = (1 - momentum)
* running + momentum * batch`` with the unbiased batch variance (Keras's ``momentum=0.99`` is
0.01 in both), so momentum carries over as it is. ``momentum=None`` (PyTorch's cumulative
average) and ``track_running_stats=False`` (batch statistics in evaluation too) compute what
npconvnet's layers do not and are refused; ``affine=False`` comes in as weight 1 and bias 0 (the
same outputs and gradients; npconvnet then trains them as any other parameter).
``num_batches_tracked``, read by PyTorch only for ``momentum=None``, is not carried over:
``to_torch`` sets it to 0.

The values are copied bit for bit, in the dtype they have: float32 (npconvnet's and PyTorch's
default) or float64, one dtype for the whole network. Each layer keeps its training or
evaluation mode. ``from_torch`` takes a module on any device; ``to_torch`` gives one on the
CPU (``module.to("cuda")`` moves it).

What a Sequential of layers does not hold is left behind: ``model.preprocessing`` (the module
takes what ``model.forward`` takes, preprocessed floats, and gives what it gives, logits for
the zoo), ``input_shape``, ``class_names``, ``weight_init`` and ``kernel_regularizer`` (a
weight penalty in PyTorch is the optimizer's ``weight_decay``).

This module needs ``torch``, an optional dependency (``pip install "npconvnet[torch]"``, which
installs torch==2.13.0, the version the tests check against), and ``import npconvnet`` does not
load it: ``npconvnet.from_torch`` and ``npconvnet.to_torch`` (in ``npconvnet.export``) import it
when called.
"""

import numpy as np
import torch
from torch import nn

from . import layers, models, rng
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)
from .parameter import Parameter

#: The dtypes npconvnet computes in, and PyTorch's names for them.
DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class Residual(nn.Module):
    """``block(x) + x``, or ``block(x) + shortcut(x)`` with a shortcut: npconvnet's
    :class:`~npconvnet.layers.Residual` as a PyTorch module, for ``to_torch`` to write and
    ``from_torch`` to read. Its state_dict names are npconvnet's (``block.0.weight``)."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


# ---------------------------------------------------------------------------- npconvnet -> PyTorch

def to_torch(model):
    """A ``torch.nn.Sequential`` computing what ``model.forward`` computes, with a copy of its
    weights and running statistics, in its dtype, each module in its layer's mode.

    ``model``: an ``npconvnet.Sequential`` (or ``npconvnet.layers.Sequential``) of the layers in
    the module docstring's table. A layer of another class (a subclass included, whose forward
    may differ) or with settings PyTorch's module lacks gets a ValueError naming it and its
    place in the model. The model is left as it was.
    """
    if not isinstance(model, layers.Sequential):
        raise TypeError(f"to_torch: expected an npconvnet Sequential, got {type(model).__name__}")
    _check_model_dtype(model)
    return _moded(nn.Sequential(*_sequential_modules(model, prefix="")), model)


def _check_model_dtype(model):
    """Every parameter and buffer of ``model`` is float32, or every one float64."""
    named = [(name, p.data.dtype) for name, p in model.named_parameters()]
    named += [(name, np.asarray(value).dtype) for name, value in model.named_buffers()]
    dtypes = _first_of_each_dtype(named)
    if len(dtypes) > 1 or not set(dtypes) <= set(DTYPES):
        raise ValueError(f"to_torch: the parameters and buffers must be all float32 or all float64 "
                         f"(model.astype converts them), got {_dtypes_found(dtypes)}")


def _first_of_each_dtype(named):
    """``{dtype: the name of the first array of that dtype}`` of ``[(name, dtype), ...]``."""
    first = {}
    for name, dtype in named:
        first.setdefault(dtype, name)
    return first


def _dtypes_found(first):
    return ", ".join(f"{name} {dtype}" for dtype, name in first.items())


def _moded(module, layer):
    """``module`` in ``layer``'s training or evaluation mode (its own flag only: the modules
    inside it carry their own layers' modes)."""
    module.training = layer.training
    return module


def _torch_modules(layer, where):
    """The PyTorch modules, in order, that compute what ``layer`` (at ``where`` in the model)
    does."""
    convert = _TO_TORCH.get(type(layer))
    if convert is None:
        raise ValueError(f"to_torch: layer {where} ({type(layer).__name__}) has no PyTorch module here: only "
                         f"npconvnet's own layers convert, matched by exact class "
                         f"({', '.join(sorted({cls.__name__ for cls in _TO_TORCH}))})")
    return [_moded(module, layer) for module in convert(layer, where)]


def _single_module(layer, where):
    modules = _torch_modules(layer, where)
    return modules[0] if len(modules) == 1 else _moded(nn.Sequential(*modules), layer)


def _sequential_modules(sequential, prefix):
    return [module for index, layer in enumerate(sequential.layers)
            for module in _torch_modules(layer, f"{prefix}{index}")]


def _tensor(array):
    return torch.from_numpy(np.array(array, copy=True))


def _filled(module, values):
    """``module`` (built by ``torch.nn.utils.skip_init``: uninitialised, and PyTorch's generator
    left alone) with ``values``, ``{name: array}``, copied into its parameters and buffers."""
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(_tensor(value))
    return module


def _weights(layer):
    values = {"weight": layer.weight.data}
    if layer.bias is not None:
        values["bias"] = layer.bias.data
    return values


def _with_activation(module, layer, where):
    """The affine layer's module, then its ``activation=`` as the module of that layer."""
    if layer.activation_layer is None:
        return [module]
    return [module, *_torch_modules(layer.activation_layer, f"{where}.activation")]


def _conv_padding(layer, where):
    """Conv2D's padding as nn.Conv2d takes it: the same on both sides of each axis."""
    padding = layer.padding
    if padding == "same" and layer.stride != (1, 1):
        raise ValueError(f"to_torch: layer {where} (Conv2D) has padding='same' with stride {layer.stride}: "
                         "nn.Conv2d takes 'same' at stride 1 only (the padding depends on the input size); "
                         "give the padding as numbers")
    if padding in ("same", "valid"):
        return padding
    if padding == "full":
        return tuple(size - 1 for size in layer.kernel_size)
    if isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        if top != bottom or left != right:
            raise ValueError(f"to_torch: layer {where} (Conv2D) has padding {padding}, unequal on the two sides "
                             "of an axis: nn.Conv2d pads both sides alike")
        return (top, left)
    return padding


def _conv_to_torch(layer, where):
    module = torch.nn.utils.skip_init(
        nn.Conv2d, layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
        padding=_conv_padding(layer, where), bias=layer.bias is not None, dtype=DTYPES[layer.dtype])
    return _with_activation(_filled(module, _weights(layer)), layer, where)


def _dense_to_torch(layer, where):
    module = torch.nn.utils.skip_init(nn.Linear, layer.in_features, layer.out_features,
                                      bias=layer.bias is not None, dtype=DTYPES[layer.dtype])
    return _with_activation(_filled(module, _weights(layer)), layer, where)


def _batch_norm_to_torch(module_class):
    def convert(layer, where):
        module = torch.nn.utils.skip_init(module_class, layer.num_features, eps=layer.eps,
                                          momentum=layer.momentum, dtype=DTYPES[layer.dtype])
        _filled(module, {**_weights(layer), "running_mean": layer.running_mean,
                         "running_var": layer.running_var})
        module.num_batches_tracked.zero_()
        return [module]
    return convert


def _residual_to_torch(layer, where):
    shortcut = None if layer.shortcut is None else _single_module(layer.shortcut, f"{where}.shortcut")
    return [Residual(_single_module(layer.block, f"{where}.block"), shortcut)]


_TO_TORCH = {
    Conv2D: _conv_to_torch,
    Dense: _dense_to_torch,
    MaxPool2D: lambda layer, where: [nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)],
    AvgPool2D: lambda layer, where: [nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                                  ceil_mode=False, count_include_pad=True)],
    GlobalAvgPool2D: lambda layer, where: [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
    Flatten: lambda layer, where: [nn.Flatten()],
    ReLU: lambda layer, where: [nn.ReLU()],
    LeakyReLU: lambda layer, where: [nn.LeakyReLU(layer.negative_slope)],
    Sigmoid: lambda layer, where: [nn.Sigmoid()],
    Tanh: lambda layer, where: [nn.Tanh()],
    Softmax: lambda layer, where: [nn.Softmax(dim=1)],
    Dropout: lambda layer, where: [nn.Dropout(layer.p)],
    BatchNorm1D: _batch_norm_to_torch(nn.BatchNorm1d),
    BatchNorm2D: _batch_norm_to_torch(nn.BatchNorm2d),
    layers.Residual: _residual_to_torch,
    layers.Sequential: lambda layer, where: [nn.Sequential(*_sequential_modules(layer, f"{where}."))],
    models.Sequential: lambda layer, where: [nn.Sequential(*_sequential_modules(layer, f"{where}."))],
}


# ---------------------------------------------------------------------------- PyTorch -> npconvnet

def from_torch(module):
    """An ``npconvnet.Sequential`` computing what ``module`` computes, with a copy of its
    weights and running statistics, in their dtype, each layer in its module's mode.

    ``module``: a ``torch.nn.Sequential`` of the modules in the module docstring's table,
    nested Sequentials and :class:`Residual` blocks included. Any other module (a class of its
    own, with a forward of its own, a subclass included), settings npconvnet's layers do not
    compute, forward hooks, and parameters shared between layers get a ValueError naming the
    module and its place (``layer 3.block.1``); anything but an nn.Sequential at the top a
    TypeError. The model is not compiled; PyTorch's module and npconvnet's global generator
    are left as they were.
    """
    if type(module) is not nn.Sequential:
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}: a module "
                        "with a forward of its own computes what its code says, which cannot be read; write it "
                        "as an nn.Sequential of the supported layers")
    _refuse_shared_parameters(module)
    _check_module_dtype(module)
    state = rng.get_state()             # the layers draw initial weights, replaced at once
    try:
        model = models.Sequential(_layers_of_sequential(module, prefix=""))
    finally:
        rng.set_state(state)
    model.training = module.training
    return model


def _refuse_shared_parameters(module):
    seen = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            raise ValueError(f"from_torch: {name} is the same tensor as {seen[id(parameter)]} (shared weights, "
                             "or one module placed twice): npconvnet's layers cannot share parameters")
        seen[id(parameter)] = name


def _check_module_dtype(module):
    """Every floating-point parameter and buffer of ``module`` is float32, or every one float64."""
    named = [(name, tensor.dtype) for name, tensor in module.named_parameters()]
    named += [(name, buffer.dtype) for name, buffer in module.named_buffers() if buffer.is_floating_point()]
    dtypes = _first_of_each_dtype(named)
    if len(dtypes) > 1 or not set(dtypes) <= set(DTYPES.values()):
        raise ValueError(f"from_torch: the parameters and buffers must be all float32 or all float64 "
                         f"(module.float() or module.double() converts them), got {_dtypes_found(dtypes)}")


def _layers_of_sequential(sequential, prefix):
    """npconvnet's layers for the modules of ``sequential``, in order. The modules come from
    ``_modules``, as nn.Sequential's forward runs them: ``named_children`` would skip a module
    placed twice, such as one ReLU used after every convolution."""
    children = list(sequential._modules.items())
    converted, index = [], 0
    while index < len(children):
        name, child = children[index]
        where = f"{prefix}{name}"
        if type(child) is nn.AdaptiveAvgPool2d:
            converted.append(_global_avg_pool(child, children[index + 1:index + 2], where))
            index += 2
        else:
            converted.append(_layer(child, where))
            index += 1
    return converted


def _layer(module, where):
    """The npconvnet layer computing what ``module`` (at ``where`` in the network) does, in
    its training or evaluation mode."""
    convert = _FROM_TORCH.get(type(module))
    if convert is None:
        found = "nothing (None)" if module is None else type(module).__name__
        raise ValueError(f"from_torch: layer {where} ({found}) has no npconvnet counterpart; supported "
                         f"(matched by exact class): {SUPPORTED}")
    _refuse_hooks(module, where)
    try:
        layer = convert(module, where)
    except (TypeError, ValueError) as error:
        if str(error).startswith("from_torch: "):
            raise
        raise ValueError(f"from_torch: layer {where} ({type(module).__name__}): {error}") from None
    layer.training = module.training
    return layer


def _refuse_hooks(module, where):
    if module._forward_hooks or module._forward_pre_hooks:
        raise ValueError(f"from_torch: layer {where} ({type(module).__name__}) has forward hooks, which may change "
                         "what it computes; remove them first")


def _refuse(module, where, setting, reason):
    raise ValueError(f"from_torch: layer {where} ({type(module).__name__}) has {setting}: {reason}")


def _parameter(tensor):
    return Parameter(tensor.detach().cpu().numpy().copy())


def _filled_layer(layer, module):
    """``layer`` with ``module``'s weight and bias."""
    layer.weight = _parameter(module.weight)
    if module.bias is not None:
        layer.bias = _parameter(module.bias)
    return layer


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv(module, where):
    if module.groups != 1:
        _refuse(module, where, f"groups={module.groups}",
                "npconvnet's Conv2D convolves every input channel with every filter (groups=1)")
    if _pair(module.dilation) != (1, 1):
        _refuse(module, where, f"dilation={module.dilation}", "npconvnet's Conv2D takes dilation 1 only")
    if module.padding_mode != "zeros":
        _refuse(module, where, f"padding_mode={module.padding_mode!r}", "npconvnet pads with zeros only")
    layer = Conv2D(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                   padding=module.padding, bias=module.bias is not None)
    return _filled_layer(layer, module)


def _linear(module, where):
    return _filled_layer(Dense(module.in_features, module.out_features, bias=module.bias is not None), module)


def _check_pool(module, where):
    if module.ceil_mode:
        _refuse(module, where, "ceil_mode=True", "npconvnet drops the windows that run past the padded input "
                "(ceil_mode=False)")
    if _pair(getattr(module, "dilation", 1)) != (1, 1):
        _refuse(module, where, f"dilation={module.dilation}", "npconvnet's pools take dilation 1 only")


def _max_pool(module, where):
    _check_pool(module, where)
    if module.return_indices:
        _refuse(module, where, "return_indices=True", "npconvnet's MaxPool2D returns the maxima only")
    return MaxPool2D(module.kernel_size, module.stride, module.padding)


def _avg_pool(module, where):
    _check_pool(module, where)
    if module.divisor_override is not None:
        _refuse(module, where, f"divisor_override={module.divisor_override}",
                "npconvnet divides by the window's size")
    if not module.count_include_pad and _pair(module.padding) != (0, 0):
        _refuse(module, where, "count_include_pad=False with padding",
                "npconvnet counts the zero padding in the mean (count_include_pad=True)")
    return AvgPool2D(module.kernel_size, module.stride, module.padding)


def _global_avg_pool(module, following, where):
    """nn.AdaptiveAvgPool2d(1) and the nn.Flatten() after it: one GlobalAvgPool2D."""
    if _pair(module.output_size) != (1, 1):
        _refuse(module, where, f"output_size={module.output_size}",
                "npconvnet has global average pooling only (output_size=1), as GlobalAvgPool2D")
    if not following or type(following[0][1]) is not nn.Flatten or _flatten_dims(following[0][1]) != (1, -1):
        raise ValueError(f"from_torch: layer {where} (AdaptiveAvgPool2d) must be followed by nn.Flatten(): "
                         "npconvnet's GlobalAvgPool2D gives (N, C), where the pool gives (N, C, 1, 1)")
    for part in (module, following[0][1]):
        _refuse_hooks(part, where)
    layer = GlobalAvgPool2D()
    layer.training = module.training
    return layer


def _flatten_dims(module):
    return (module.start_dim, module.end_dim)


def _flatten(module, where):
    if _flatten_dims(module) != (1, -1):
        _refuse(module, where, f"start_dim={module.start_dim}, end_dim={module.end_dim}",
                "npconvnet's Flatten flattens every axis after the batch axis (start_dim=1, end_dim=-1)")
    return Flatten()


def _softmax(module, where):
    if module.dim != 1:
        _refuse(module, where, f"dim={module.dim}", "npconvnet's Softmax runs over axis 1 (dim=1)")
    return Softmax()


def _batch_norm(layer_class):
    def convert(module, where):
        if not module.track_running_stats:
            _refuse(module, where, "track_running_stats=False", "it normalises with the batch's statistics in "
                    "evaluation too, where npconvnet's batch normalization uses running statistics")
        if module.momentum is None:
            _refuse(module, where, "momentum=None", "PyTorch's cumulative average; npconvnet's running "
                    "statistics take a momentum in [0, 1]")
        layer = layer_class(module.num_features, eps=module.eps, momentum=module.momentum)
        layer.running_mean = module.running_mean.detach().cpu().numpy().copy()
        layer.running_var = module.running_var.detach().cpu().numpy().copy()
        if module.affine:
            return _filled_layer(layer, module)
        dtype = layer.running_mean.dtype
        layer.weight = Parameter(np.ones(module.num_features, dtype))
        layer.bias = Parameter(np.zeros(module.num_features, dtype))
        return layer
    return convert


def _residual(module, where):
    shortcut = None if module.shortcut is None else _layer(module.shortcut, f"{where}.shortcut")
    return layers.Residual(_layer(module.block, f"{where}.block"), shortcut)


def _sequential(module, where):
    return layers.Sequential(_layers_of_sequential(module, f"{where}."))


_FROM_TORCH = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.Flatten: _flatten,
    # Taken with the nn.Flatten after it (``_layers_of_sequential``); alone, it is refused here.
    nn.AdaptiveAvgPool2d: lambda module, where: _global_avg_pool(module, [], where),
    nn.ReLU: lambda module, where: ReLU(),
    nn.LeakyReLU: lambda module, where: LeakyReLU(module.negative_slope),
    nn.Sigmoid: lambda module, where: Sigmoid(),
    nn.Tanh: lambda module, where: Tanh(),
    nn.Softmax: _softmax,
    nn.Dropout: lambda module, where: Dropout(module.p),
    nn.BatchNorm1d: _batch_norm(BatchNorm1D),
    nn.BatchNorm2d: _batch_norm(BatchNorm2D),
    Residual: _residual,
    nn.Sequential: _sequential,
}

#: What ``from_torch`` takes, for its error messages.
SUPPORTED = ", ".join(sorted([f"nn.{cls.__name__}" for cls in _FROM_TORCH
                              if cls not in (Residual, nn.AdaptiveAvgPool2d)]
                             + ["nn.AdaptiveAvgPool2d(1) + nn.Flatten()"], key=str.lower)
                      + ["npconvnet.torch_interop.Residual"])
