"""What the network looks at: saliency maps and Grad-CAM for a model's class scores.

::

    gradient = explain.saliency(model, images, target=None)   # (N, C, H, W), d score / d input
    heat = explain.saliency_map(model, images)                 # (N, H, W): max_c |gradient|
    cam = explain.grad_cam(model, images)                      # (N, H, W), >= 0, input-sized

**The class score** is the model's output for the class *before* a softmax (the logit), as
Simonyan et al. (2014) and Selvaraju et al. (2017) take it: the probability of a class also
rises when the other classes' scores fall, the logit depends on that class alone. A model
ending in a softmax (a ``Softmax`` layer, or a last layer built with ``activation="softmax"``)
has it left out for the explanation; any other output is taken as the scores themselves.

**Saliency** (Simonyan, Vedaldi and Zisserman, *Deep Inside Convolutional Networks*, 2014):
``dS_c / dx``, the gradient of the class score with respect to the model input, signed, of the
input's shape. Their picture of it is :func:`saliency_map`, ``M[i, j] = max_c |dS_c/dx[c, i, j]|``.

**Grad-CAM** (Selvaraju et al., *Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization*, 2017), on the feature maps ``A`` ``(K, h, w)`` of one layer::

    alpha_k = mean over (i, j) of dS_c / dA[k, i, j]        (the channel weights)
    L       = ReLU(sum_k alpha_k * A[k])                      (h, w)

then ``L`` upsampled to the input's ``(H, W)`` bilinearly with half-pixel centres (PyTorch's
``interpolate(mode="bilinear", align_corners=False)``, OpenCV's ``resize``). The map is not
normalised: its values are in the units of the class score (divide by its maximum to draw
it; an all-zero map means no region raised the score). :func:`feature_map_gradients` gives
``A`` and ``dS_c/dA`` themselves.

**Inputs.** ``x`` is a batch in any layout ``predict`` takes (``(N, C, H, W)``, ``(N, H, W, C)``,
grayscale ``(N, H, W)``; uint8 pixels or floats in [0, 1]), converted and preprocessed as
``predict`` converts it (``model.preprocess_input``); or one image: ``(H, W)`` for a
one-channel model, ``(C, H, W)`` or ``(H, W, C)`` for a model of more channels. One image gives
maps without the batch axis. (For a one-channel model a 3-D ``x`` is a batch ``(N, H, W)``, as
``predict`` reads it.) Gradients are with respect to the model input, ``preprocess_input(x)``:
pixels in [0, 1], shifted to [-0.5, 0.5] for ``preprocessing="center"``, which leaves the
gradient as it is. ``target``: the class to explain, an int for all samples or one int per
sample; None (the default) explains the class each sample is predicted to be.

**The model is left as it was.** The explanation runs in evaluation mode (dropout off, batch
normalization with its running statistics), as ``predict`` does, and the model's mode is
restored afterwards; every parameter's ``.grad`` is put back to what it held before (the
backward pass writes into them), and the weights, running statistics and random generators
are never touched: a later ``fit`` trains exactly as it would have without the explanation.
"""

import contextlib
import numbers

import numpy as np

from .layers import Conv2D, Layer, Residual, Softmax
from .layers.containers import EVAL_CHUNK
from .training import Model

__all__ = ["saliency", "saliency_map", "grad_cam", "feature_map_gradients", "find_layer", "named_layers"]


# ---------------------------------------------------------------------------- the public functions

def saliency(model: Model, x, target=None) -> np.ndarray:
    """The gradient of the class score with respect to the model input, signed.

    Args:
        model: an ``npconvnet.Sequential`` (any :class:`npconvnet.training.Model`).
        x: a batch or one image (see the module docstring).
        target: None (the predicted class), an int, or one int per sample ``(N,)``.

    Returns:
        ``dS_c/dx`` in the model's dtype, shaped as the model input: ``(N, C, H, W)`` for a batch
        of images (whatever layout ``x`` had), ``(C, H, W)`` for one image; ``(N, D)`` for a
        model of feature rows.
    """
    inputs, one_image = _model_input(model, x, "saliency")
    gradients = []
    for batch, batch_target in _batches(inputs, target, "saliency"):
        with _explaining(model, "saliency") as run:
            gradients.append(run(batch, batch_target, input_grad=True).input_gradient)
    gradient = np.concatenate(gradients)
    return gradient[0] if one_image else gradient


def saliency_map(model: Model, x, target=None) -> np.ndarray:
    """Simonyan et al.'s picture of :func:`saliency`: ``M[i, j] = max_c |dS_c/dx[c, i, j]|``,
    ``(N, H, W)`` for a batch, ``(H, W)`` for one image; arguments as :func:`saliency`."""
    gradient = saliency(model, x, target)
    if gradient.ndim not in (3, 4):
        raise ValueError(f"saliency_map: the model takes feature rows (its input has shape "
                         f"{gradient.shape}), not images; use saliency for their gradient")
    return np.abs(gradient).max(axis=-3)


def feature_map_gradients(model: Model, x, target=None, layer=None) -> tuple[np.ndarray, np.ndarray]:
    """``(A, dS_c/dA)``: the output of ``layer`` and the class score's gradient with respect to
    it, each ``(N, K, h, w)`` (``(K, h, w)`` for one image), in the model's dtype.

    ``layer``: None for the last ``Conv2D``, else an index into the model's layers, a name from
    :func:`named_layers` (``"3"``, ``"4.block.0"``) or a layer object of the model (see
    :func:`find_layer`); its output must be feature maps ``(N, K, h, w)``. Other arguments as
    :func:`saliency`.
    """
    inputs, one_image = _model_input(model, x, "feature_map_gradients")
    activations, gradients = _feature_map_gradients(model, inputs, target, layer, "feature_map_gradients")
    return (activations[0], gradients[0]) if one_image else (activations, gradients)


def grad_cam(model: Model, x, target=None, layer=None) -> np.ndarray:
    """Selvaraju et al.'s class activation map (see the module docstring): ``ReLU(sum_k alpha_k
    A[k])`` with ``alpha_k`` the spatial mean of ``dS_c/dA[k]``, upsampled bilinearly to the
    input's size. Not normalised (values in the class score's units, >= 0).

    Args:
        model, x, target: as :func:`saliency`; x must be images.
        layer: None (the default: the last ``Conv2D``, searched through nested Sequentials and
            Residual blocks), or an index, a name or a layer of the model (see :func:`find_layer`).

    Returns:
        ``(N, H, W)`` for a batch, ``(H, W)`` for one image: the model input's height and width.
    """
    inputs, one_image = _model_input(model, x, "grad_cam")
    if inputs.ndim != 4:
        raise ValueError(f"grad_cam: the model takes feature rows (its input has shape {inputs.shape}), "
                         "not images (N, C, H, W)")
    activations, gradients = _feature_map_gradients(model, inputs, target, layer, "grad_cam")
    weights = gradients.mean(axis=(2, 3), keepdims=True)                        # (N, K, 1, 1)
    coarse = np.maximum((weights * activations).sum(axis=1), 0)                 # (N, h, w)
    cam = _upsample_bilinear(coarse, *inputs.shape[2:]).astype(activations.dtype, copy=False)
    return cam[0] if one_image else cam


def named_layers(model: Layer) -> list[tuple[str, Layer]]:
    """Every layer inside ``model``, depth-first in the order of ``children()``, with its name:
    the path that ``named_parameters`` writes before ``.weight`` (``"0"``, ``"4.block.0"``,
    ``"0.activation"`` for a layer's own activation)."""
    named = []
    for name, child in model.children():
        named.append((name, child))
        named += [(f"{name}.{inner}", layer) for inner, layer in named_layers(child)]
    return named


def find_layer(model: Model, layer=None, where: str = "grad_cam") -> tuple[str, Layer]:
    """``(name, layer)`` of the layer Grad-CAM looks at.

    ``layer``: None, the last ``Conv2D`` in the order the layers run (a Residual's block after
    its shortcut, so that the main path's last convolution is chosen); an int, an index into
    ``model.layers`` (negative from the end); a str, a name from :func:`named_layers`; or a
    layer object inside the model. ``where`` starts the error messages.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"{where}: expected an npconvnet model, got {type(model).__name__}")
    named = named_layers(model)
    if layer is None:
        convolutions = [(name, found) for name, found in _in_running_order(model) if isinstance(found, Conv2D)]
        if not convolutions:
            raise ValueError(f"{where}: the model has no Conv2D layer; pass layer=... naming a layer "
                             "whose output is feature maps (N, K, h, w)")
        return convolutions[-1]
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        layers = getattr(model, "layers", [])
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"{where}: layer index {layer} is out of range for a model of {len(layers)} "
                             f"layers (0 to {len(layers) - 1}, or negative from the end)")
        index = int(layer) % len(layers)
        return str(index), layers[index]
    if isinstance(layer, str):
        for name, found in named:
            if name == layer:
                return name, found
        shown = ", ".join(repr(name) for name, _ in named[:12]) + (", ..." if len(named) > 12 else "")
        raise ValueError(f"{where}: the model has no layer named {layer!r:.100}; its layers are named "
                         f"by their path, as in named_parameters: {shown}")
    if isinstance(layer, Layer):
        for name, found in named:
            if found is layer:
                return name, found
        raise ValueError(f"{where}: the layer {type(layer).__name__} given is not part of the model")
    raise TypeError(f"{where}: layer must be None, an index, a layer name or a Layer of the model, "
                    f"got {type(layer).__name__}")


# ---------------------------------------------------------------------------- inputs and targets

def _model_input(model, x, where):
    """``(inputs (N, ...), one_image)``: ``x`` as the model's first layer takes it."""
    if not isinstance(model, Model):
        raise TypeError(f"{where}: expected an npconvnet model (npconvnet.Sequential), got "
                        f"{type(model).__name__}; wrap a layers.Sequential as npconvnet.Sequential(layers)")
    one_image = _is_one_image(model, x)
    inputs = model.preprocess_input(np.asarray(x)[None] if one_image else x)
    if len(inputs) == 0:
        raise ValueError(f"{where}: x holds no samples")
    if model.input_shape is not None and inputs.shape[1:] != tuple(model.input_shape):
        raise ValueError(f"{where}: x has samples of shape {inputs.shape[1:]} (after conversion), "
                         f"but the model's input_shape is {tuple(model.input_shape)}")
    return inputs, one_image


def _is_one_image(model, x):
    """Whether ``x`` is one image rather than a batch (see the module docstring)."""
    if model.input_shape is not None and len(model.input_shape) == 3:
        channels = model.input_shape[0]
    else:
        first = next((layer for _, layer in named_layers(model) if isinstance(layer, Conv2D)), None)
        channels = None if first is None else first.in_channels
    ndim = np.ndim(x)                   # 0 for the path of a .npy file: a batch
    return channels is not None and ((ndim == 2 and channels == 1) or (ndim == 3 and channels > 1))


def _check_target(target, count, where):
    """``target`` as ``(count,)`` ints, or None; the range is checked once the classes are known."""
    if target is None:
        return None
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return np.full(count, int(target))
    array = np.asarray(target)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: target must be None, a class index (int) or one index per sample, "
                         f"got {target!r:.100}")
    if array.shape != (count,):
        raise ValueError(f"{where}: target must hold one class index per sample, shape ({count},), "
                         f"got shape {array.shape}")
    return array.astype(np.int64)


def _batches(inputs, target, where):
    """``(batch, its targets or None)`` of at most ``EVAL_CHUNK`` samples: a Sequential runs such
    a batch through its layers whole, so the watched layer sees every sample of it at once."""
    targets = _check_target(target, len(inputs), where)
    for start in range(0, len(inputs), EVAL_CHUNK):
        yield (inputs[start:start + EVAL_CHUNK],
               None if targets is None else targets[start:start + EVAL_CHUNK])


def _feature_map_gradients(model, inputs, target, layer, where):
    """``(A, dS_c/dA)``, each ``(N, K, h, w)``, for model inputs ``(N, ...)``."""
    name, chosen = find_layer(model, layer, where)
    activations, gradients = [], []
    for batch, batch_target in _batches(inputs, target, where):
        with _explaining(model, where, watched=chosen) as run:
            result = run(batch, batch_target, input_grad=False)
        if result.feature_maps.ndim != 4:
            raise ValueError(f"{where}: layer {name} ({type(chosen).__name__}) outputs shape "
                             f"{result.feature_maps.shape}, not feature maps (N, K, h, w); choose a "
                             "convolution, activation, pooling or residual layer before the flattening")
        activations.append(result.feature_maps)
        gradients.append(result.feature_map_gradient)
    return np.concatenate(activations), np.concatenate(gradients)


# ---------------------------------------------------------------------------- one forward and backward

class _Explanation:
    """What one forward and backward pass found."""
    input_gradient = feature_maps = feature_map_gradient = None


@contextlib.contextmanager
def _explaining(model, where, watched=None):
    """A function ``run(batch, target, input_grad)`` that runs the model forward in evaluation
    mode and backward from the class scores; the model's mode, its layers and every ``.grad``
    are as they were on leaving.

    The final softmax, and the ``watched`` layer, are wrapped for the duration: instance
    attributes ``forward``/``backward`` shadow the class's methods, so the containers calling
    ``layer.forward(x)`` reach the wrappers wherever the layer sits, and deleting them brings
    the layer back as it was.
    """
    previous = model.training
    grads = [(parameter, parameter.grad, parameter.grad.copy()) for parameter in model.parameters()]
    wrapped, outputs = [], []
    found = _Explanation()

    def wrap(layer, forward, backward):
        layer.forward, layer.backward = forward, backward
        wrapped.append(layer)

    def run(batch, target, input_grad):
        scores = model.forward(batch)
        if scores.ndim != 2:
            raise ValueError(f"{where}: the model outputs shape {scores.shape[1:]} per sample, not one "
                             "score per class (N, classes)")
        if not np.isfinite(scores).all():
            raise ValueError(f"{where}: the model's class scores are NaN or infinite for some of x: there "
                             "is no gradient to explain them by (do its weights work?)")
        classes = scores.shape[1]
        if target is None:
            target = scores.argmax(axis=1)
        elif target.min() < 0 or target.max() >= classes:
            raise ValueError(f"{where}: target must be class indices in [0, {classes}) for a model with "
                             f"{classes} outputs, got values from {target.min()} to {target.max()}")
        if watched is not None and len(outputs) != 1:
            raise ValueError(f"{where}: the layer {type(watched).__name__} ran {len(outputs)} times in one "
                             "forward pass; Grad-CAM needs a layer that runs once")
        seed = np.zeros_like(scores)
        seed[np.arange(len(scores)), target] = 1            # dS_c/d(scores): one class per sample
        found.input_gradient = model.backward(seed, input_grad=input_grad)
        found.feature_maps = outputs[0] if outputs else None
        return found

    try:
        model.eval()
        softmax = _final_softmax(model)
        if softmax is not None:         # the score is the softmax's input: the layer passes it on
            wrap(softmax, lambda x: x, lambda grad_output: grad_output)
        if watched is not None:
            forward, backward = watched.forward, watched.backward

            def watched_forward(x):
                outputs.append(forward(x))
                return outputs[-1]

            def watched_backward(grad_output, *args, **kwargs):
                found.feature_map_gradient = np.array(grad_output)
                return backward(grad_output, *args, **kwargs)

            wrap(watched, watched_forward, watched_backward)
        yield run
    finally:
        for layer in wrapped:
            vars(layer).pop("forward", None)
            vars(layer).pop("backward", None)
        model.train(previous)
        for parameter, original, saved in grads:
            original[...] = saved
            parameter.grad = original


def _final_softmax(model):
    """The Softmax layer the model ends with (its own or its last layer's activation), or None."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, Softmax):
        return last
    activation = getattr(last, "activation_layer", None)
    return activation if isinstance(activation, Softmax) else None


def _in_running_order(model):
    """:func:`named_layers` with each Residual's shortcut before its block: both branches run on
    the same input, and the block is the main path."""
    ordered = []
    children = model.children()
    if isinstance(model, Residual):
        children = children[::-1]
    for name, child in children:
        ordered.append((name, child))
        ordered += [(f"{name}.{inner}", layer) for inner, layer in _in_running_order(child)]
    return ordered


def _upsample_bilinear(maps, height, width):
    """``(N, h, w) -> (N, height, width)``, bilinear with half-pixel centres: output pixel ``i``
    reads the input at ``(i + 0.5) * h / height - 0.5``, clamped to the edge pixels (PyTorch's
    ``align_corners=False``)."""
    def axis_weights(size, new_size):
        position = np.clip((np.arange(new_size) + 0.5) * size / new_size - 0.5, 0, size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        return low, high, position - low

    low, high, fraction = axis_weights(maps.shape[1], height)
    rows = maps[:, low] * (1 - fraction)[:, None] + maps[:, high] * fraction[:, None]
    low, high, fraction = axis_weights(maps.shape[2], width)
    return rows[:, :, low] * (1 - fraction) + rows[:, :, high] * fraction
