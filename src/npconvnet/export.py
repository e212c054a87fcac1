"""Models written in the formats other frameworks run.

An exporter needs a package npconvnet does not depend on (onnx, an optional extra), and that
package can take seconds to import. So each exporter is a module of its own that imports its
package at its top, and the function here loads that module only when it is called: ``import
npconvnet`` stays quick, and a missing package gets one line naming the extra to install.
"""


def export_onnx(model, path, input_shape=None, opset=17, include_softmax=False):
    """Write ``model`` as an ONNX graph to ``path``; returns ``path``.

    The graph takes float32 pixel values in [0, 255], shape ``(N, *input_shape)`` with a dynamic
    batch dimension, and applies the model's ``preprocessing`` itself; it outputs what
    ``model.forward`` does, or with ``include_softmax=True`` the probabilities ``model.predict``
    gives. ``input_shape`` defaults to ``model.input_shape``; ``opset`` is 13 or later. See
    :func:`npconvnet.onnx_export.export_onnx` and that module for the details.
    """
    try:
        # An optional dependency, imported when needed (not an import cycle being dodged).
        from . import onnx_export
    except ModuleNotFoundError as error:
        if error.name != "onnx" and not str(error.name).startswith("onnx."):
            raise
        raise ModuleNotFoundError('export_onnx needs the onnx package: pip install "npconvnet[onnx]"',
                                  name="onnx") from None
    return onnx_export.export_onnx(model, path, input_shape=input_shape, opset=opset,
                                   include_softmax=include_softmax)
