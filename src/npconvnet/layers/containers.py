"""Layers made of layers."""

from collections.abc import Callable

import numpy as np

from .. import parallel
from .base import Layer, layer_from_config, layer_to_config, same_definition

#: In evaluation mode a Sequential runs a larger batch through its layers in chunks of at most
#: this many samples (see ``Sequential.forward``).
EVAL_CHUNK = 128


class Residual(Layer):
    """``y = block(x) + shortcut(x)``, the shortcut being the identity when None (ResNet).

    Both branches see the same x, so their input gradients add:
    ``dL/dx = block.backward(dL/dy) + shortcut.backward(dL/dy)``.

    Args:
        block: the residual branch, a Layer (often a Sequential of convolutions).
        shortcut: None (the default) for the identity, or a Layer (a projection such as a
            1x1 Conv2D) where the block changes the shape.

    Shape:
        - Input: what ``block`` (and ``shortcut``) take.
        - Output: ``block``'s output, which must have the shortcut's shape.

    Example::

        >>> from npconvnet.layers import Conv2D
        >>> block = Sequential(Conv2D(8, 8, 3, padding="same", activation="relu"),
        ...                    Conv2D(8, 8, 3, padding="same"))
        >>> Residual(block).forward(np.zeros((2, 8, 16, 16), np.float32)).shape
        (2, 8, 16, 16)
        >>> down = Residual(Conv2D(8, 16, 3, stride=2, padding=1), shortcut=Conv2D(8, 16, 1, stride=2))
        >>> down.forward(np.zeros((2, 8, 16, 16), np.float32)).shape
        (2, 16, 8, 8)
        >>> doubled = Residual(Sequential())        # block(x) = x: y = 2x and dL/dx = 2 dL/dy
        >>> doubled.forward(np.array([[1.0, -3.0]]))
        array([[ 2., -6.]])
        >>> doubled.backward(np.array([[1.0, 1.0]]))
        array([[2., 2.]])
    """

    samplewise = True

    def __init__(self, block: Layer, shortcut: Layer | None = None):
        super().__init__()
        for name, value in (("block", block), ("shortcut", shortcut)):
            if value is not None and not isinstance(value, Layer):
                raise TypeError(f"Residual: {name} must be a Layer, got {type(value).__name__}")
        self.block, self.shortcut = block, shortcut

    def children(self):
        named = [("block", self.block)]
        return named + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _output_shape(self.block, input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.block.forward(x)
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        if out.shape != skip.shape:
            raise ValueError(f"Residual: the block's output {out.shape} and the shortcut's "
                             f"{skip.shape} differ; give a projection shortcut that matches them")
        out = out + skip
        self._remember(out)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        self._recall(grad_output)
        grad_input = self.block.backward(grad_output)
        if self.shortcut is None:
            return grad_input + grad_output
        return grad_input + self.shortcut.backward(grad_output)

    def get_config(self):
        return {"block": layer_to_config(self.block),
                "shortcut": None if self.shortcut is None else layer_to_config(self.shortcut)}

    @classmethod
    def from_config(cls, config):
        cls._check_arguments(config)
        shortcut = config.get("shortcut")
        return cls(layer_from_config(config["block"], "block"),
                   None if shortcut is None else layer_from_config(shortcut, "shortcut"))


def _forward_through(layers, x):
    """``x`` through ``layers`` in turn; a bad input's error says which layer refused it."""
    for index, layer in enumerate(layers):
        try:
            x = layer.forward(x)
        except (ValueError, TypeError) as error:
            where = f"layer {index} of the Sequential"
            try:
                located = type(error)(f"{where}: {error}")
            except Exception:           # an error class that takes other arguments (NumPy's casting errors)
                error.add_note(f"in {where}")
                raise error from None
            raise located from None
    return x


def _output_shape(layer, input_shape):
    """Per-sample output shape of ``layer`` for a per-sample ``input_shape``."""
    if hasattr(layer, "output_shape"):
        return tuple(layer.output_shape(tuple(input_shape)))
    return tuple(input_shape)


#: What the trainable model adds to a Sequential of layers (see ``Sequential.__getattr__``).
_MODEL_METHODS = frozenset({"compile", "fit", "evaluate", "predict", "predict_classes", "save",
                            "save_weights", "load_weights", "preprocess_input"})


class Sequential(Layer):
    """Layers applied one after the other: ``y = f_n(... f_2(f_1(x)))``.

    Backward runs the chain rule in reverse: each layer turns dL/d(its output) into
    dL/d(its input). ``Sequential([a, b])`` and ``Sequential(a, b)`` are the same.

    This is a container of layers, like ``torch.nn.Sequential``: it never changes the layers
    it is given (their weights stay as they are). The model that trains, with Keras's
    ``compile``/``fit``/``evaluate``/``predict``/``save``, is ``npconvnet.Sequential``, a
    Sequential with the training methods added.

    Args:
        *layers: Layer objects, in order, or one list of them.

    Shape:
        - Input: what the first layer takes.
        - Output: what the last layer gives (the input itself when there are no layers).

    Example::

        >>> from npconvnet.layers import Dense, ReLU
        >>> net = Sequential(Dense(4, 8), ReLU(), Dense(8, 3))
        >>> net.forward(np.zeros((2, 4), np.float32)).shape
        (2, 3)
        >>> net.backward(np.ones((2, 3), np.float32)).shape
        (2, 4)
        >>> [name for name, _ in net.named_parameters()]
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> dense = Dense(4, 3)
        >>> dense.weight.data[:] = 1.0
        >>> float(Sequential(dense)[0].weight.data.min())      # the weights it is given, kept
        1.0
    """

    samplewise = True
    can_skip_input_grad = True

    def __init__(self, *layers: Layer | list[Layer]):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        self.layers = []
        self._chunked_input = None          # the input of a forward run in chunks, for backward
        self._twins = {}                    # own_gradients: (definition, [twins of the layers, ...])
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> None:
        """Append a layer (Keras' ``model.add``); the layer is kept as it is."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: expected Layer objects, got {type(layer).__name__} "
                            f"at position {len(self.layers)}")
        self.layers.append(layer)

    def __getattr__(self, name):
        # Only reached for a missing attribute: say where the training methods are.
        if name in _MODEL_METHODS:
            raise AttributeError(
                f"npconvnet.layers.Sequential has no {name}(): it is a container of layers (as "
                f"torch.nn.Sequential is); the model that trains is npconvnet.Sequential (from "
                f"npconvnet import Sequential), built from the same layers")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def children(self):
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layers applied in turn. In evaluation mode a batch of more than ``EVAL_CHUNK``
        samples goes through them in chunks, when every layer is samplewise: a chunk's
        activations stay in the processor's cache from one layer to the next, where a whole
        large batch would stream each one through memory (vgg-mini at batch 1000: 1.4x faster).
        On several threads each thread takes a share of the chunks, through twins of the
        layers (``Layer.twin``: the same weights, workspaces of their own): whole chunks are
        larger parts than one layer's, so the threads wait on each other less. The output is
        the same. BLAS stays on one thread for the whole pass
        (:func:`npconvnet.parallel.blas_on_one_thread`): the cores are the layers' threads'."""
        self._chunked_input = None
        with parallel.blas_on_one_thread():
            if isinstance(x, np.ndarray) and x.ndim > 0 and len(x) > EVAL_CHUNK and self.evaluates_samplewise():
                self._chunked_input = x
                return self._forward_in_chunks(x)
            return self._forward_layers(x)

    def _forward_layers(self, x):
        return _forward_through(self.layers, x)

    def _forward_in_chunks(self, x):
        size = -(-len(x) // -(-len(x) // EVAL_CHUNK))          # as few chunks, of nearly equal sizes
        shares = parallel.shares([x[start:start + size] for start in range(0, len(x), size)])
        layer_sets = [self.layers] + self._layer_twins(len(shares) - 1)

        def forward_share(share):
            layers, chunks = share
            return [_forward_through(layers, chunk) for chunk in chunks]
        return np.concatenate([chunk for outputs in parallel.run(forward_share, zip(layer_sets, shares))
                               for chunk in outputs])

    def _layer_twins(self, count, own_gradients=False):
        """``count`` lists of twins of the layers (``Layer.twin(own_gradients)``), kept from call
        to call but made again when a layer has changed since (see ``Layer.definition``; twins
        with gradients of their own train, and take the layers' buffers at each step from
        ``shards``, not from their making)."""
        definition = [entry for layer in self.layers for entry in layer.definition(buffers=not own_gradients)]
        if own_gradients in self._twins:
            made_from, twins = self._twins[own_gradients]
            if len(twins) >= count and same_definition(made_from, definition):
                return twins[:count]
        twins = [[layer.twin(own_gradients) for layer in self.layers] for _ in range(count)]
        if count:
            self._twins[own_gradients] = (definition, twins)
        else:
            self._twins.pop(own_gradients, None)
        return twins

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """dL/dinput, or None with ``input_grad=False`` (training on data, whose gradient nobody
        reads): the first layer then computes its parameters' gradients only, when it can."""
        with parallel.blas_on_one_thread():
            return self._backward_layers(grad_output, input_grad)

    def _backward_layers(self, grad_output, input_grad):
        if self._chunked_input is not None:
            # The layers hold what backward needs for the last chunk only: the whole batch
            # goes through once more (backward in evaluation mode is rare).
            x, self._chunked_input = self._chunked_input, None
            if not self.evaluates_samplewise():
                raise RuntimeError("Sequential.backward: the last forward ran in evaluation mode and a layer "
                                   "has been switched to training mode since; call forward again first")
            self._forward_layers(x)
        for layer in reversed(self.layers[1:]):
            grad_output = layer.backward(grad_output)
        if not self.layers:
            return grad_output if input_grad else None
        first = self.layers[0]
        if not input_grad and first.can_skip_input_grad:
            return first.backward(grad_output, input_grad=False)
        grad_input = first.backward(grad_output)
        return grad_input if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.layers:
            input_shape = _output_shape(layer, input_shape)
        return input_shape

    def summary(self, input_shape: tuple[int, ...] | None = None,
                print_fn: Callable[[str], object] | None = print) -> str | None:
        """A table of each layer's output shape and parameter count, as Keras prints it.

        ``input_shape`` is the shape of one sample, e.g. ``(1, 28, 28)``; without it the shapes
        of the model's ``input_shape`` attribute (set by the zoo and by ``fit``) are used, and
        without either the shapes are left out. The shapes are those of one sample of zeros
        run through the layers in evaluation mode, so an input the model cannot take raises the
        ``ValueError`` that ``forward`` would. Prints the table with ``print_fn`` and returns it
        as a string when ``print_fn`` is None.
        """
        input_shape = input_shape if input_shape is not None else getattr(self, "input_shape", None)
        shapes = self._sample_shapes(input_shape) if input_shape is not None else [None] * len(self.layers)
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for index, (layer, shape) in enumerate(zip(self.layers, shapes)):
            shown = "(None, " + ", ".join(map(str, shape)) + ")" if shape is not None else "?"
            rows.append((f"{index}: {type(layer).__name__}", shown, f"{layer.num_parameters():,}"))
        widths = [max(len(row[column]) for row in rows) + 2 for column in range(3)]
        rule = "-" * sum(widths)
        lines = [rule, "".join(cell.ljust(width) for cell, width in zip(rows[0], widths)), "=" * len(rule)]
        lines += ["".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows[1:]]
        trainable = self.num_parameters()
        buffers = sum(np.size(b) for _, b in self.named_buffers())
        lines += ["=" * len(rule), f"Total params: {trainable + buffers:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {buffers:,}", rule]
        text = "\n".join(lines)
        if print_fn is None:
            return text
        print_fn(text)

    def _sample_shapes(self, input_shape):
        """Each layer's output shape for one sample of ``input_shape``, from a real forward pass."""
        if (not isinstance(input_shape, (tuple, list)) or not input_shape
                or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                           for n in input_shape)):
            raise ValueError(f"summary: input_shape must be one sample's shape, a tuple of positive "
                             f"ints such as (1, 28, 28), got {input_shape!r:.100}")
        previous = self.training
        self.eval()
        try:
            x = np.zeros((1, *input_shape), self.dtype)
            shapes = []
            for index, layer in enumerate(self.layers):
                try:
                    x = layer.forward(x)
                except (ValueError, TypeError) as error:
                    raise type(error)(f"summary: layer {index} ({type(layer).__name__}) cannot take "
                                      f"samples of shape {tuple(x.shape[1:])}: {error}") from None
                shapes.append(tuple(x.shape[1:]))
            return shapes
        finally:
            self.train(previous)

    def get_config(self):
        return {"layers": [layer_to_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        if set(config) != {"layers"}:
            raise TypeError(f"the config of a Sequential holds 'layers' alone, got {sorted(config)}")
        if not isinstance(config["layers"], list):
            raise ValueError(f"layers must be a list of layer configs, got {config['layers']!r:.100}")
        return cls([layer_from_config(item, str(index)) for index, item in enumerate(config["layers"])])

    def __repr__(self):
        inner = "\n".join(f"  ({index}): {layer!r}".replace("\n", "\n  ")
                          for index, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
