"""What Conv2D and Dense share besides their products: an activation they may apply
themselves, the choice of initial weights, and a penalty on their weights."""

from .. import regularizers
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer

#: The activations a layer applies to its output with ``activation="name"``: the same layer
#: objects as written out after it, ``Conv2D(..., activation="relu")`` computing what
#: ``Conv2D(...), ReLU()`` does.
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}
WEIGHT_INITS = ("auto", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal")


class _AffineLayer(Layer):
    """A layer ``y = activation(affine(x))`` with a weight and an optional bias.

    ``activation``: None or a name from :data:`ACTIVATIONS`; forward applies it last and
    backward first (the chain rule: ``dL/d affine = activation'(affine) * dL/dy``).
    ``weight_init="auto"`` draws He-normal weights for a ReLU or LeakyReLU activation (He et
    al., 2015) and Glorot-uniform ones otherwise (Keras's default). It is chosen here, once,
    from the layer's own arguments: no container ever draws the weights again.
    ``kernel_regularizer``: None or a penalty on the weight (``npconvnet.regularizers``).
    """

    samplewise = True
    can_skip_input_grad = True

    def _set_options(self, owner, activation, weight_init, kernel_regularizer):
        if activation is not None and not (isinstance(activation, str) and activation in ACTIVATIONS):
            raise ValueError(f"{owner}: activation must be None or one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r:.100}")
        if not (isinstance(weight_init, str) and weight_init in WEIGHT_INITS):
            raise ValueError(f"{owner}: weight_init must be one of {list(WEIGHT_INITS)}, got {weight_init!r:.100}")
        self.activation = activation
        self.activation_layer = None if activation is None else ACTIVATIONS[activation]()
        self.weight_init = weight_init
        self.kernel_regularizer = regularizers.get(kernel_regularizer, owner)

    def _initial_method(self):
        if self.weight_init != "auto":
            return self.weight_init
        return "he_normal" if self.activation in ("relu", "leaky_relu") else "glorot_uniform"

    def children(self):
        return [] if self.activation_layer is None else [("activation", self.activation_layer)]

    def _own_regularization_terms(self):
        return [] if self.kernel_regularizer is None else [(self.weight, self.kernel_regularizer)]

    def _activate(self, out):
        return out if self.activation_layer is None else self.activation_layer.forward(out)

    def _through_activation(self, grad_output):
        """dL/d(the affine output) from dL/dy."""
        return grad_output if self.activation_layer is None else self.activation_layer.backward(grad_output)

    def _options_config(self):
        return {"activation": self.activation, "weight_init": self.weight_init,
                "kernel_regularizer": (None if self.kernel_regularizer is None
                                       else self.kernel_regularizer.get_config())}
