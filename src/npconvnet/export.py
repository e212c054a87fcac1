"""Models written in the formats other frameworks run, and read back from them.

An exporter needs a package npconvnet does not depend on (onnx, torch: optional extras), and
that package can take seconds to import. So each exporter is a module of its own that imports
its package at its top, and the functions here load that module only when they are called:
``import npconvnet`` stays quick, and a missing package gets one line naming the extra to install.
"""

import importlib


def export_onnx(model, path, input_shape=None, opset=17, include_softmax=False):
    """Write ``model`` as an ONNX graph to ``path``; returns ``path``.

    The graph takes float32 pixel values in [0, 255], shape ``(N, *input_shape)`` with a dynamic
    batch dimension, and applies the model's ``preprocessing`` itself; it outputs what
    ``model.forward`` does, or with ``include_softmax=True`` the probabilities ``model.predict``
    gives. ``input_shape`` defaults to ``model.input_shape``; ``opset`` is 13 or later. See
    :func:`npconvnet.onnx_export.export_onnx` and that module for the details.
    """
    onnx_export = _optional_module("onnx_export", "onnx", "onnx", "export_onnx")
    return onnx_export.export_onnx(model, path, input_shape=input_shape, opset=opset,
                                   include_softmax=include_softmax)


def to_torch(model):
    """A ``torch.nn.Sequential`` computing what ``model.forward`` computes, with a copy of the
    model's weights and running statistics, in its dtype (float32 or float64). See
    :func:`npconvnet.torch_interop.to_torch` and that module for what maps onto what."""
    return _optional_module("torch_interop", "torch", "torch", "to_torch").to_torch(model)


def from_torch(module):
    """A trainable ``npconvnet.Sequential`` (not compiled) computing what ``module``, a
    ``torch.nn.Sequential`` of supported layers, computes, with a copy of its weights and
    running statistics. See :func:`npconvnet.torch_interop.from_torch` and that module."""
    return _optional_module("torch_interop", "torch", "torch", "from_torch").from_torch(module)


def _optional_module(name, package, extra, caller):
    """The module ``npconvnet.<name>``, which imports ``package``; a missing package is named
    with the extra that installs it."""
    try:
        # An optional dependency, imported when needed (not an import cycle being dodged).
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != package and not str(error.name).startswith(f"{package}."):
            raise
        raise ModuleNotFoundError(f'{caller} needs the {package} package: pip install "npconvnet[{extra}]"',
                                  name=package) from None
