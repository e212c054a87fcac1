"""Export a model to ONNX, to run it where models are deployed (onnxruntime, TensorRT, browsers)::

    model = npconvnet.load_model("digits.npz")
    npconvnet.export_onnx(model, "digits.onnx", include_softmax=True)

    session = onnxruntime.InferenceSession("digits.onnx")
    probabilities = session.run(None, {"pixels": images.astype(np.float32)})[0]

What the graph takes: one input ``pixels``, float32 pixel values in [0, 255] of shape
``(N, *input_shape)``, e.g. ``(N, 1, 28, 28)``: the uint8 images ``npconvnet predict`` takes,
as floats, in NCHW. The batch dimension ``N`` is dynamic. The graph first does what the model's
``preprocessing`` says (``pixels / 255``, then ``- 0.5`` for ``"center"``), exactly as
``model.predict`` does it, then runs the layers in evaluation mode (Dropout is the identity,
batch normalization uses its running statistics). Its output ``outputs`` is what
``model.forward`` returns (a zoo model's logits); with ``include_softmax=True`` it is
``probabilities``, the softmax over axis 1 that ``model.predict`` applies to logits.

Every built-in layer maps onto one or two standard ONNX operators (opset 13 or later)::

    Conv2D -> Conv (padding resolved for input_shape: "same", "full", explicit, asymmetric)
    MaxPool2D -> MaxPool, AvgPool2D -> AveragePool (count_include_pad=1, as the layer counts
    zero padding in the mean), GlobalAvgPool2D -> GlobalAveragePool + Flatten,
    Dense -> Gemm, Flatten -> Flatten, BatchNorm1D/2D -> BatchNormalization,
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax -> Relu, LeakyRelu, Sigmoid, Tanh, Softmax (axis 1),
    Dropout -> Identity, Residual -> its branches and an Add, Sequential -> its layers in turn

and a layer's own ``activation=`` becomes the same node after it. Only these classes are
exported, matched exactly: a layer of your own (a subclass included, whose forward may differ)
gets a ValueError naming it and its place in the model.

This module needs ``onnx``, an optional dependency (``pip install "npconvnet[onnx]"``), and
``import npconvnet`` does not load it: ``npconvnet.export_onnx`` (in ``npconvnet.export``)
imports it when called, and says how to install onnx when it is missing.
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import checks, layers, models
from .data import check_preprocessing
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Softmax, Tanh)
from .atomic import atomic_write
from .version import __version__
from .windows import resolve_padding

#: The oldest opset whose operators mean what the layers compute (Softmax over one axis from 13).
MIN_OPSET = 13
INPUT_NAME = "pixels"


def export_onnx(model, path, input_shape=None, opset=17, include_softmax=False):
    """Write ``model`` as an ONNX graph to ``path`` (checked by ``onnx.checker``); returns ``path``.

    ``model``: a ``Sequential`` of npconvnet's layers. ``input_shape``: one sample's shape,
    ``(C, H, W)`` (or ``(D,)`` for a network of dense layers); defaults to ``model.input_shape``.
    The graph's input is float32 pixels in [0, 255] of shape ``(N, *input_shape)`` with a dynamic
    ``N``, preprocessed inside the graph as ``model.preprocessing`` says (see the module
    docstring). ``opset``: the ONNX operator set, 13 or later. ``include_softmax``: end with
    the softmax over axis 1 (output ``probabilities``, what ``model.predict`` returns for a
    model of logits) instead of the raw outputs (``outputs``); a network that already ends with
    a softmax gets no second one. The model is exported in evaluation mode and left as it was;
    the file is written atomically (a failed export leaves any file at ``path`` as it was).
    """
    if not isinstance(model, layers.Sequential):
        raise TypeError(f"export_onnx: expected a Sequential model, got {type(model).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"export_onnx: cannot write {path}: the folder {folder} does not exist")
    opset = checks.integer("export_onnx", "opset", opset, at_least=MIN_OPSET,
                           at_most=onnx.defs.onnx_opset_version())
    include_softmax = checks.boolean("export_onnx", "include_softmax", include_softmax)
    preprocessing = check_preprocessing(getattr(model, "preprocessing", None), "export_onnx: model.preprocessing")
    input_shape = _input_shape(model, input_shape)
    output_shape = _output_shape(model, input_shape)
    _refuse_nonfinite(model)

    graph = _Graph()
    x = graph.preprocess(INPUT_NAME, preprocessing)
    x, _ = graph.add_layer(model, x, input_shape, where=None)
    output_name = "outputs"
    if include_softmax:
        output_name = "probabilities"
        if not _ends_with_softmax(model):
            x = graph.node("Softmax", [x], "softmax", axis=1)
    graph.node("Identity", [x], "output", output=output_name)

    proto = graph.model(input_shape, output_shape, output_name, opset, model, preprocessing)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda file: file.write(proto.SerializeToString()))
    return path


def _input_shape(model, input_shape):
    """One sample's shape as a tuple of positive ints: ``input_shape``, else the model's."""
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError("export_onnx: the model has no input_shape (fit, the zoo and load_model set it); "
                             "pass input_shape=, one sample's shape such as (1, 28, 28)")
    if (not isinstance(input_shape, (tuple, list)) or not input_shape
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                       for n in input_shape)):
        raise ValueError(f"export_onnx: input_shape must be one sample's shape, a tuple of positive ints "
                         f"such as (1, 28, 28), got {input_shape!r:.100}")
    return tuple(int(n) for n in input_shape)


def _output_shape(model, input_shape):
    """One sample's output shape, from one sample of zeros run through the model in evaluation
    mode (as ``summary`` does): an input_shape the model cannot take fails here, clearly."""
    previous = model.training
    model.eval()
    try:
        return tuple(model.forward(np.zeros((1, *input_shape), model.dtype)).shape[1:])
    except (ValueError, TypeError) as error:
        raise ValueError(f"export_onnx: the model cannot take samples of shape {input_shape}: {error}") from None
    finally:
        model.train(previous)


def _refuse_nonfinite(model):
    state = model.state_dict()
    bad = [name for name, value in state.items() if not np.isfinite(value).all()]
    if bad:
        raise ValueError(f"export_onnx: {', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''} hold NaN "
                         "or infinite values (training diverged?); nothing was written")


def _ends_with_softmax(layer):
    """Whether the last operation of ``layer`` is a softmax over axis 1 already."""
    if type(layer) is Softmax:
        return True
    if isinstance(layer, layers.Sequential):
        return bool(layer.layers) and _ends_with_softmax(layer.layers[-1])
    return type(layer) in (Conv2D, Dense) and layer.activation == "softmax"


class _Graph:
    """The nodes and initializers of the graph being built. Names follow the model's own:
    ``3.block.0.weight`` for a weight, ``3.block.0`` for the node of that layer."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._names = set()

    def _unique(self, name):
        unique, count = name, 1
        while unique in self._names:
            count += 1
            unique = f"{name}_{count}"
        self._names.add(unique)
        return unique

    def constant(self, name, value):
        """A float32 initializer (weights are exported in float32 whatever the model's dtype)."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op_type, inputs, name, output=None, **attributes):
        """Append one node; returns the name of its output."""
        name = self._unique(name)
        output = output or name
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attributes))
        return output

    def preprocess(self, x, preprocessing):
        """``pixels / 255``, then ``- 0.5`` for "center": ``data.scaled_pixels`` in float32."""
        x = self.node("Div", [x, self.constant("pixel_scale", 255.0)], "scale_pixels")
        if preprocessing == "center":
            x = self.node("Sub", [x, self.constant("pixel_center", 0.5)], "center_pixels")
        return x

    def add_layer(self, layer, x, shape, where):
        """The nodes of ``layer`` (at the path ``where`` in the model; None for the model itself)
        applied to the tensor ``x`` of per-sample ``shape``: ``(output name, output shape)``."""
        export = _EXPORTERS.get(type(layer))
        if export is None:
            place = "the model" if where is None else f"layer {where}"
            raise ValueError(f"export_onnx: {place} ({type(layer).__name__}) cannot be exported to ONNX: only "
                             f"npconvnet's own layers can, matched by exact class "
                             f"({', '.join(sorted({cls.__name__ for cls in _EXPORTERS}))})")
        return export(self, layer, x, shape, where or "model")

    def model(self, input_shape, output_shape, output_name, opset, source, preprocessing):
        inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *input_shape])]
        outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", *output_shape])]
        described = f"float32 pixel values in [0, 255], (N, {', '.join(map(str, input_shape))})"
        graph = helper.make_graph(self.nodes, "npconvnet", inputs, outputs, self.initializers, doc_string=described)
        opsets = [helper.make_opsetid("", opset)]
        # The oldest IR version that holds the opset: the file loads in the oldest runtimes it can.
        proto = helper.make_model(graph, opset_imports=opsets, producer_name="npconvnet",
                                  producer_version=__version__, ir_version=helper.find_min_ir_version_for(opsets))
        metadata = {"input": described, "preprocessing": json.dumps(preprocessing)}
        class_names = getattr(source, "class_names", None)
        if class_names is not None:
            metadata["class_names"] = json.dumps(list(class_names))
        helper.set_model_props(proto, metadata)
        return proto


# One function per layer class: (graph, layer, input name, per-sample shape, path) ->
# (output name, per-sample output shape).

def _onnx_pads(padding):
    """npconvnet's ``(top, bottom, left, right)`` as ONNX orders them: begins, then ends."""
    top, bottom, left, right = padding
    return [top, left, bottom, right]


def _conv(graph, layer, x, shape, where):
    padding = resolve_padding(layer.padding, layer.kernel_size, layer.stride, shape[-2:])
    inputs = [x, graph.constant(f"{where}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{where}.bias", layer.bias.data))
    x = graph.node("Conv", inputs, where, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   pads=_onnx_pads(padding))
    return _activation(graph, layer, x, layer.output_shape(shape), where)


def _dense(graph, layer, x, shape, where):
    inputs = [x, graph.constant(f"{where}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{where}.bias", layer.bias.data))
    x = graph.node("Gemm", inputs, where, transB=1)
    return _activation(graph, layer, x, layer.output_shape(shape), where)


def _activation(graph, layer, x, shape, where):
    """The layer's own ``activation=``, the same node as the activation layer written after it."""
    if layer.activation_layer is None:
        return x, shape
    return graph.add_layer(layer.activation_layer, x, shape, f"{where}.activation")


def _pool(op_type, **attributes):
    def export(graph, layer, x, shape, where):
        padding = resolve_padding(layer.padding, layer.kernel_size, layer.stride, shape[-2:])
        x = graph.node(op_type, [x], where, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                       pads=_onnx_pads(padding), **attributes)
        return x, layer.output_shape(shape)
    return export


def _global_avg_pool(graph, layer, x, shape, where):
    x = graph.node("GlobalAveragePool", [x], where)                   # (N, C, 1, 1)
    return graph.node("Flatten", [x], f"{where}.flatten", axis=1), layer.output_shape(shape)


def _batch_norm(graph, layer, x, shape, where):
    inputs = [x] + [graph.constant(f"{where}.{name}", value) for name, value in
                    (("weight", layer.weight.data), ("bias", layer.bias.data),
                     ("running_mean", layer.running_mean), ("running_var", layer.running_var))]
    return graph.node("BatchNormalization", inputs, where, epsilon=layer.eps), shape


def _elementwise(op_type, **attributes):
    def export(graph, layer, x, shape, where):
        return graph.node(op_type, [x], where, **attributes), shape
    return export


def _leaky_relu(graph, layer, x, shape, where):
    if layer.negative_slope == 0:               # computed as ReLU, so that -inf gives 0, not -inf * 0
        return graph.node("Relu", [x], where), shape
    return graph.node("LeakyRelu", [x], where, alpha=layer.negative_slope), shape


def _flatten(graph, layer, x, shape, where):
    return graph.node("Flatten", [x], where, axis=1), layer.output_shape(shape)


def _residual(graph, layer, x, shape, where):
    out, out_shape = graph.add_layer(layer.block, x, shape, f"{where}.block")
    skip = x if layer.shortcut is None else graph.add_layer(layer.shortcut, x, shape, f"{where}.shortcut")[0]
    return graph.node("Add", [out, skip], where), out_shape


def _sequential(graph, layer, x, shape, where):
    prefix = "" if where == "model" else f"{where}."
    for index, inner in enumerate(layer.layers):
        x, shape = graph.add_layer(inner, x, shape, f"{prefix}{index}")
    return x, shape


_EXPORTERS = {
    Conv2D: _conv, Dense: _dense, Flatten: _flatten,
    MaxPool2D: _pool("MaxPool"), AvgPool2D: _pool("AveragePool", count_include_pad=1),
    GlobalAvgPool2D: _global_avg_pool, BatchNorm1D: _batch_norm, BatchNorm2D: _batch_norm,
    ReLU: _elementwise("Relu"), LeakyReLU: _leaky_relu, Sigmoid: _elementwise("Sigmoid"),
    Tanh: _elementwise("Tanh"), Softmax: _elementwise("Softmax", axis=1), Dropout: _elementwise("Identity"),
    Residual: _residual, layers.Sequential: _sequential, models.Sequential: _sequential,
}
