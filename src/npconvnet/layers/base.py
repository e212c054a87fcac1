"""The layer protocol: ``forward`` computes the output, ``backward`` applies the chain rule."""

import copy
import inspect
import math
from collections import namedtuple
from types import SimpleNamespace

import numpy as np

from ..parameter import Parameter
from ..rng import default_rng

#: What a layer's call leaves behind for its backward, as opposed to what defines the layer.
_PER_CALL = frozenset({"_cache", "_workspaces", "_chunked_input", "_twins"})


#: Every layer class by name, so that an architecture (and a model file) can name its layers.
LAYER_CLASSES = {}

#: Arrays a layer keeps for backward are kept from one call to the next from this size on
#: (see ``Layer._workspace``).
WORKSPACE_BYTES = 2 * 2**20


#: What ``load_state_dict`` returns, as in PyTorch: the names it did not find in the state and
#: the names in the state it did not know.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def init_weight(method, shape, fan_in, fan_out):
    """Draw initial weights from the global generator.

    ``he_normal``: N(0, 2 / fan_in), right before ReLU (He et al., 2015).
    ``glorot_uniform``: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010).
    """
    rng = default_rng()
    if method == "he_normal":
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    if method == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if method == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if method == "glorot_normal":
        return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape).astype(np.float32)
    raise ValueError(f"unknown weight_init {method!r}: expected 'auto', 'he_normal', 'he_uniform', "
                     "'glorot_uniform' or 'glorot_normal'")


class Layer:
    """Base class of every layer.

    A layer keeps what ``backward`` needs from the last ``forward`` and releases it once used;
    ``backward(grad_output)`` returns dL/dinput and writes dL/dparameter into each ``.grad``.
    """

    #: Names of non-trainable arrays saved with the model (BatchNorm's running statistics).
    buffer_names = ()

    #: Whether ``backward`` takes ``input_grad=False``: compute the parameters' gradients only
    #: and return None. A network's first layer can, when its input is data: PyTorch likewise
    #: skips dL/dx for an input that does not require grad. (Conv2D, Dense and Sequential.)
    can_skip_input_grad = False

    #: Whether each sample's output depends on that sample alone in evaluation mode, as for every
    #: built-in layer: a Sequential may then run a large batch through it in chunks (see
    #: ``Sequential.forward``). A custom layer is taken not to, unless its class says so.
    samplewise = False

    def __init_subclass__(cls, register=True, **kwargs):
        """Every public layer class is registered by name; ``register=False`` keeps a subclass
        that adds no layer of its own (the trainable ``npconvnet.Sequential``) out of the table."""
        super().__init_subclass__(**kwargs)
        if register and not cls.__name__.startswith("_"):
            LAYER_CLASSES[cls.__name__] = cls

    def __init__(self):
        self.training = True
        self._cache = None
        self._workspaces = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _workspace(self, name, shape, dtype, create):
        """An array for a value that backward needs: ``create()`` (an uninitialised array of
        ``shape`` and ``dtype``), and for one of ``WORKSPACE_BYTES`` or more the same array again
        at later calls with the same shape and dtype.

        Only what the layer keeps for itself goes here, never what it returns: the next forward
        writes over it. Keeping the large ones from one step to the next spares the allocator
        from handing their memory back to the system after every backward and faulting it in
        again in the next forward (vgg-mini: 8,000 page faults and 18 ms of system time per
        training step, 15% of the step). Smaller arrays are better left to the allocator, which
        hands out memory freed a moment ago and still in the cache.
        """
        if math.prod(shape) * np.dtype(dtype).itemsize < WORKSPACE_BYTES:
            return create()
        key = (tuple(shape), np.dtype(dtype))
        if self._workspaces.get(name, (None,))[0] != key:
            self._workspaces[name] = (key, create())
        return self._workspaces[name][1]

    def twin(self, own_gradients=False):
        """A copy of this layer, and of every layer inside it, that shares their parameters and
        buffers (the same arrays) but has workspaces and saved values of its own, so that the
        copy's forward can run on another thread while this layer's does (as a Sequential runs
        the chunks of a large batch in evaluation mode). The copy reads the weights as they are
        at each call, but a parameter, buffer or layer replaced by another after the copy was
        made is not replaced in it (see :meth:`definition`).

        ``own_gradients=True``: the copy's parameters are Parameters of its own that share
        ``.data`` (the same arrays) but have a ``.grad`` of their own, so that the copy's
        backward can run beside this layer's too (a training step shared out in shards of the
        batch, ``npconvnet.shards``)."""
        shared = {}
        for layer in self.walk():
            for name, value in vars(layer).items():
                if name in _PER_CALL:
                    shared[id(value)] = {} if name in ("_workspaces", "_twins") else None
                elif isinstance(value, np.ndarray):
                    shared[id(value)] = value
        # Wherever a layer keeps them (a custom layer may hold its Parameters in a list).
        for _, parameter in self.named_parameters():
            shared[id(parameter)] = Parameter(parameter.data) if own_gradients else parameter
        for _, buffer in self.named_buffers():
            shared[id(buffer)] = buffer
        return copy.deepcopy(self, shared)

    def walk(self):
        """This layer, then every layer inside it, depth first."""
        yield self
        for _, child in self.children():
            yield from child.walk()

    def definition(self, buffers=True):
        """``[(layer, name, value), ...]``: every attribute of this layer and of the layers inside
        it but what a call leaves behind, and ``(parameter, "data", array)`` for every
        Parameter among them. Two definitions of the same layer hold the same objects (``is``)
        until a parameter (or its ``.data``), a buffer, an option or a layer has been replaced
        or added, or the mode switched: a :meth:`twin` made in between is stale then.
        ``buffers=False`` leaves the buffers out (in training a twin is handed the layer's
        buffers at each step, while batch normalization replaces its running statistics at
        every step)."""
        entries = []
        for layer in self.walk():
            for name, value in vars(layer).items():
                if name in _PER_CALL or (not buffers and name in layer.buffer_names):
                    continue
                entries.append((layer, name, value))
        entries += [(parameter, name, parameter.data) for name, parameter in self.named_parameters()]
        if buffers:
            entries += [(self, name, buffer) for name, buffer in self.named_buffers()]
        return entries

    # What backward needs from forward.
    def _remember(self, output, **values):
        self._cache = (output.shape, SimpleNamespace(**values))

    def _recall(self, grad_output):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called without a forward() before it "
                               "(each forward() allows one backward())")
        output_shape, values = self._cache
        if np.shape(grad_output) != output_shape:
            raise ValueError(f"{self!r}: grad_output has shape {np.shape(grad_output)}, expected "
                             f"{output_shape}, the shape of the last forward() output")
        self._cache = None
        return values

    def _check_input(self, x, ndim=None, channels=None, layout="(N, C, H, W)"):
        """A floating-point ndarray, with ``ndim`` dimensions and ``channels`` in axis 1 when given."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self!r}: expected a NumPy array {layout}, got {type(x).__name__}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{self!r}: expected a floating-point array, got dtype {x.dtype} "
                            "(convert images first, e.g. with npconvnet.data.scale)")
        ndims = (ndim,) if isinstance(ndim, int) else ndim
        if ndims is not None and x.ndim not in ndims:
            expected = " or ".join(f"{d}-D" for d in ndims)
            raise ValueError(f"{self!r}: expected a {expected} input {layout}, got shape {x.shape}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{self!r}: expected {channels} channels (axis 1 of {layout}), "
                             f"got shape {x.shape}")

    # Parameters, buffers and sub-layers.
    def children(self):
        """Direct sub-layers with their names, ``[(name, layer), ...]``."""
        return []

    def named_parameters(self, prefix=""):
        """``[(name, Parameter), ...]`` in layer order, named as PyTorch names them (``0.weight``)."""
        named = [(prefix + name, value) for name, value in vars(self).items()
                 if isinstance(value, Parameter)]
        for name, child in self.children():
            named += child.named_parameters(f"{prefix}{name}.")
        return named

    def parameters(self):
        """Every trainable :class:`Parameter`, in layer order."""
        return [parameter for _, parameter in self.named_parameters()]

    def named_buffers(self, prefix=""):
        named = [(prefix + name, getattr(self, name)) for name in self.buffer_names]
        for name, child in self.children():
            named += child.named_buffers(f"{prefix}{name}.")
        return named

    def state_dict(self):
        """Parameters and buffers by name: ``{"0.weight": array, ...}`` (copies)."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (names as in :meth:`state_dict`) into this layer.

        ``strict=True``: the names must match exactly. ``strict=False``: the arrays whose names
        match are copied and the rest left as they are, as PyTorch does, so that a PyTorch
        ``state_dict`` (its ``num_batches_tracked`` entries, say) loads. Either way the shapes of
        the copied arrays must match, and a failed call changes nothing. Returns
        ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state, dict):
            raise TypeError(f"{self!r}: load_state_dict expects a dict of arrays by name, "
                            f"got {type(state).__name__}")
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.named_buffers())
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets), key=str)
        if strict and (missing or unexpected):
            raise ValueError(f"{self!r}: state does not match the layer: missing {missing}, "
                             f"unexpected {unexpected} (strict=False loads the arrays that match)")
        names = sorted(set(targets) & set(state))
        values = {}
        # Every value is checked before anything is copied: a bad state leaves the layer as it was.
        for name in names:
            value = np.asarray(state[name])
            if value.shape != targets[name].shape:
                raise ValueError(f"{self!r}: {name} has shape {value.shape} in the state, "
                                 f"expected {targets[name].shape}")
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                raise TypeError(f"{self!r}: {name} holds {value.dtype} values in the state, expected numbers")
            values[name] = value
        for name in names:
            targets[name][...] = values[name]
        return IncompatibleKeys(missing, unexpected)

    def regularization_terms(self):
        """``[(Parameter, regularizer), ...]`` of this layer and every layer inside it: the
        weight penalties ``fit`` adds to the loss (see ``npconvnet.regularizers``)."""
        terms = self._own_regularization_terms()
        for _, child in self.children():
            terms += child.regularization_terms()
        return terms

    def _own_regularization_terms(self):
        return []

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def train(self, mode=True):
        """Switch this layer and every layer inside it to training (or evaluation) mode."""
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def evaluates_samplewise(self):
        """Whether this layer and every layer inside it are in evaluation mode and samplewise."""
        return (not self.training and self.samplewise
                and all(child.evaluates_samplewise() for _, child in self.children()))

    def astype(self, dtype):
        """Convert every parameter and buffer to ``dtype`` (e.g. ``np.float64`` for gradient checks)."""
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{self!r:.200}: astype expects a NumPy dtype, got {dtype!r:.100}") from None
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"{self!r:.200}: astype expects a floating-point dtype (float32 or float64), "
                            f"got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        self._convert_buffers(dtype)
        return self

    def _convert_buffers(self, dtype):
        for name in self.buffer_names:
            setattr(self, name, getattr(self, name).astype(dtype))
        for _, child in self.children():
            child._convert_buffers(dtype)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    @property
    def dtype(self):
        """The dtype of the parameters (float32 unless converted with ``astype``)."""
        parameters = self.parameters()
        return parameters[0].data.dtype if parameters else np.dtype(np.float32)

    # Description.
    def get_config(self):
        """Constructor arguments, as JSON-friendly values: ``from_config(get_config())`` rebuilds
        the layer (with fresh weights), as in Keras."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A new layer from :meth:`get_config`'s output; the constructor checks every value."""
        cls._check_arguments(config)
        return cls(**config)

    @classmethod
    def _check_arguments(cls, config):
        """A TypeError naming a missing or unexpected argument, before the constructor runs."""
        signature = inspect.signature(cls)
        try:
            signature.bind(**config)
        except TypeError as error:
            raise TypeError(f"{error}; {cls.__name__} takes {list(signature.parameters) or 'no arguments'}") from None

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ConfigError(ValueError):
    """An architecture that does not describe layers; ``where`` is the path to the bad entry
    (``"architecture.3.block"``) and ``reason`` what is wrong there."""

    def __init__(self, where, reason):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def layer_to_config(layer):
    """``Conv2D(1, 8, 3) -> {"class": "Conv2D", "config": {"in_channels": 1, ...}}``."""
    return {"class": type(layer).__name__, "config": layer.get_config()}


def layer_from_config(config, where="architecture"):
    """Rebuild a layer (with fresh weights) from :func:`layer_to_config`'s output.

    The class is looked up among the registered layers (every ``Layer`` subclass, the program's
    own included) and built by its ``from_config``, whose constructor checks every argument.
    Unknown layer names, missing, unexpected or ill-typed arguments raise :class:`ConfigError`
    naming the place in the architecture (``where``), never a bare ``TypeError`` from inside.
    """
    if not isinstance(config, dict) or set(config) != {"class", "config"}:
        raise ConfigError(where, f"a layer must be {{'class': ..., 'config': {{...}}}}, got {config!r:.200}")
    name, arguments = config["class"], config["config"]
    if not isinstance(name, str) or name not in LAYER_CLASSES:
        raise ConfigError(where, f"unknown layer {name!r:.100}; known layers: {', '.join(sorted(LAYER_CLASSES))}")
    if not isinstance(arguments, dict) or not all(isinstance(key, str) for key in arguments):
        raise ConfigError(where, f"the config of {name} must be a dict of arguments, got {arguments!r:.100}")
    try:
        return LAYER_CLASSES[name].from_config(arguments)
    except ConfigError as error:        # from a layer inside this one: the path continues here
        raise ConfigError(f"{where}.{error.where}", error.reason) from None
    except (TypeError, ValueError) as error:
        raise ConfigError(where, f"bad arguments for {name}: {error}") from None


def same_definition(made_from, definition):
    """Whether two :meth:`Layer.definition` lists, one taken when something was made from a
    layer (its twins, worker processes' copies) and one now, hold the same objects."""
    return len(made_from) == len(definition) and all(
        a is b and name == other_name and value is other_value
        for (a, name, value), (b, other_name, other_value) in zip(made_from, definition))
