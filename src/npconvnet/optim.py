"""Optimizers with PyTorch's exact update rules, so the same gradients give the same trajectory.

Each optimizer updates ``Parameter.data`` in place from ``Parameter.grad``. It may be created
without parameters (``Adam(lr=1e-3)``) and bound to a model's later, as ``compile`` does.

Every hyperparameter is checked: a finite number in its range, booleans ``True`` or ``False``.
They stay plain attributes, since schedulers and callbacks change ``optimizer.lr`` as training
goes; ``step()`` checks them all again before it updates anything, so a value set later that
cannot work (``optimizer.lr = -1``, ``inf``, ``nan``, ``"0.1"``) is refused at the next step,
with the constructor's message.

The examples assume ``import numpy as np`` and ``from npconvnet import Parameter``.
"""

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from . import checks
from .parameter import Parameter


class Optimizer:
    """Shared bookkeeping: the parameters, the learning rate ``lr``, and per-parameter state.

    A subclass sets its own hyperparameters before calling ``Optimizer.__init__``, checks them
    in ``_check_hyperparameters``, names the buffers it keeps in ``_buffer_kinds`` and updates
    one parameter in ``_update``.
    """

    def __init__(self, params: Iterable[Parameter] | None, lr: float, weight_decay: float) -> None:
        if isinstance(params, numbers.Number):
            raise TypeError(f"{type(self).__name__}: the first argument is the parameters; "
                            f"pass the learning rate as lr={params!r}")
        self.lr, self.weight_decay = lr, weight_decay
        self._check_hyperparameters()
        self.params = None
        self.state = []
        if params is not None:
            self.bind(params)

    def _check_hyperparameters(self):
        """Check every hyperparameter and keep it as a plain Python value."""
        where = type(self).__name__
        self.lr = checks.number(where, "lr", self.lr, at_least=0)
        self.weight_decay = checks.number(where, "weight_decay", self.weight_decay, at_least=0)

    def bind(self, params: Iterable[Parameter]) -> "Optimizer":
        """Attach the parameters to optimise (and forget any earlier state)."""
        where = type(self).__name__
        if isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
            raise TypeError(f"{where}: params must be an iterable of Parameters (model.parameters()), "
                            f"got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError(f"{where}: got an empty list of parameters")
        for index, parameter in enumerate(params):
            if not isinstance(parameter, Parameter):
                raise TypeError(f"{where}: params[{index}] is a {type(parameter).__name__}, not a "
                                "Parameter; pass model.parameters()")
        self.params = params
        self.state = [{} for _ in self.params]
        return self

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zeros."""
        for p in self._bound():
            p.zero_grad()

    def step(self) -> None:
        """Apply one update to every parameter from its current ``.grad``.

        Raises ValueError or TypeError, before anything changes, when a hyperparameter set
        after construction (by a scheduler, a callback or by hand) is out of range.
        """
        params = self._bound()
        try:
            self._check_hyperparameters()
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error} (set after the optimizer was created: step() refuses "
                              "it)") from None
        for p, state in zip(params, self.state):
            grad = p.grad
            if self.weight_decay and not self.decoupled_weight_decay:
                grad = grad + self.weight_decay * p.data
            self._update(p, grad, state)

    decoupled_weight_decay = False

    def _update(self, p, grad, state):
        raise NotImplementedError

    def _buffer_kinds(self):
        """``{name: "array" or "count"}``: the buffers each parameter's state holds once it has
        been updated (arrays of the parameter's shape and dtype, or step counts)."""
        return {}

    def _bound(self):
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters: create it with "
                               "model.parameters() or pass it to model.compile()")
        return self.params

    def state_dict(self) -> dict:
        """Hyperparameters and every buffer, as arrays keyed ``"<param index>.<buffer>"``."""
        buffers = {f"{index}.{name}": np.array(value) for index, state in enumerate(self.state)
                   for name, value in state.items()}
        return {"config": self.get_config(), "buffers": buffers}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take back :meth:`state_dict`'s output: the learning rate (which a scheduler may have
        changed) and the buffers. The other hyperparameters stay this optimizer's own.

        Everything is checked against the bound parameters first: buffer names this optimizer
        keeps, parameter indices in range, each array of its parameter's shape and dtype, step
        counts ints >= 1, and per parameter all buffers or none. Anything else raises
        ValueError and leaves the optimizer as it was.
        """
        where = f"{type(self).__name__}.load_state_dict"
        params = self._bound()
        if not isinstance(state_dict, dict) or set(state_dict) != {"config", "buffers"}:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{where}: expected a dict with the keys 'buffers' and 'config' (as "
                             f"state_dict() returns), got {found}")
        config, buffers = state_dict["config"], state_dict["buffers"]
        if not isinstance(config, dict) or "lr" not in config:
            raise ValueError(f"{where}: 'config' must be a dict holding 'lr', got {config!r:.100}")
        if not isinstance(buffers, dict):
            raise ValueError(f"{where}: 'buffers' must be a dict of arrays, got {type(buffers).__name__}")
        try:
            lr = checks.number(where, "config['lr']", config["lr"], at_least=0)
        except TypeError as error:
            raise ValueError(str(error)) from None
        kinds = self._buffer_kinds()
        state = [{} for _ in params]
        for key, value in buffers.items():
            index, _, name = key.partition(".") if isinstance(key, str) else ("", "", "")
            if not (index.isascii() and index.isdigit() and name):
                raise ValueError(f"{where}: invalid buffer name {key!r}: expected "
                                 "'<parameter index>.<buffer name>', e.g. '0.exp_avg'")
            if int(index) >= len(params):
                raise ValueError(f"{where}: buffer {key!r} names parameter {int(index)}, but there "
                                 f"are {len(params)} parameters")
            if name not in kinds:
                raise ValueError(f"{where}: unknown buffer {key!r}: {self!r} keeps "
                                 f"{', '.join(sorted(kinds)) or 'no buffers'}")
            state[int(index)][name] = _checked_buffer(where, key, kinds[name], value,
                                                      params[int(index)].data)
        for index, buffers_of_one in enumerate(state):
            if buffers_of_one and set(buffers_of_one) != set(kinds):
                raise ValueError(f"{where}: parameter {index} has the buffers "
                                 f"{sorted(buffers_of_one)}; expected all of {sorted(kinds)} or none")
        self.lr, self.state = lr, state

    def get_config(self) -> dict:
        """The hyperparameters, as keyword arguments of the constructor (JSON values)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _checked_buffer(where, key, kind, value, parameter):
    """A saved buffer as the state holds it: a copied array matching ``parameter``, or an int."""
    try:
        value = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: buffer {key!r} is not an array ({error})") from None
    if kind == "count":
        if value.ndim or value.dtype.kind not in "iu" or not value >= 1:
            shown = (f"{value.item()!r:.60} ({value.dtype})" if value.ndim == 0
                     else f"an array of shape {value.shape}")
            raise ValueError(f"{where}: buffer {key!r} must be a step count (an int >= 1), got {shown}")
        return int(value)
    if value.shape != parameter.shape or value.dtype != parameter.dtype:
        raise ValueError(f"{where}: buffer {key!r} has shape {value.shape} and dtype {value.dtype}, "
                         f"but its parameter has shape {parameter.shape} and dtype {parameter.dtype}")
    return value.copy()


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay::

        g = grad + weight_decay * p
        b = g (first step), else b = momentum * b + (1 - dampening) * g
        p -= lr * (g + momentum * b if nesterov else b)       (p -= lr * g without momentum)

    Args:
        params: the parameters to optimise (``model.parameters()``), or None to bind them later
            (``model.compile(optimizer=SGD(lr=0.1))`` does).
        lr: learning rate, a finite number >= 0.
        momentum: momentum factor, a finite number >= 0 (0: plain SGD).
        dampening: how much of the new gradient the momentum buffer leaves out, a finite
            number in [0, 1].
        nesterov: Nesterov momentum (True or False); needs momentum > 0 and dampening 0.
        weight_decay: L2 penalty added to the gradient, a finite number >= 0.

    Example::

        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> optimizer = SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = np.array([0.5, -0.5])
        >>> optimizer.step()            # the buffer starts as the gradient: w -= 0.1 * 0.5
        >>> w.data
        array([ 0.95, -1.95])
        >>> optimizer.step()            # buffer 0.9 * 0.5 + 0.5 = 0.95: w -= 0.1 * 0.95
        >>> w.data.round(4)
        array([ 0.855, -1.855])
    """

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 0.01,
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        super().__init__(params, lr, weight_decay)

    def _check_hyperparameters(self):
        super()._check_hyperparameters()
        where = type(self).__name__
        self.momentum = checks.number(where, "momentum", self.momentum, at_least=0)
        self.dampening = checks.number(where, "dampening", self.dampening, at_least=0, at_most=1)
        self.nesterov = checks.boolean(where, "nesterov", self.nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"{where}: Nesterov momentum needs momentum > 0 and dampening = 0, got "
                             f"momentum={self.momentum}, dampening={self.dampening}")

    def _buffer_kinds(self):
        return {"momentum_buffer": "array"} if self.momentum else {}

    def _update(self, p, grad, state):
        if self.momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.array(grad, dtype=p.data.dtype)
            else:
                buffer *= self.momentum
                buffer += (1 - self.dampening) * grad
            grad = grad + self.momentum * buffer if self.nesterov else buffer
        p.data -= self.lr * grad

    def get_config(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), weight decay added to the gradient (L2) as in PyTorch::

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Args:
        params: the parameters to optimise (``model.parameters()``), or None to bind them later
            (``compile`` does).
        lr: learning rate, a finite number >= 0.
        betas: ``(b1, b2)``, the decay rates of the running means of the gradient and of its
            square, each a finite number in [0, 1).
        eps: added to the denominator, a finite number > 0. (PyTorch allows 0; here it would
            turn the update of a parameter whose gradient has always been 0 into 0 / 0 = NaN.)
        weight_decay: L2 penalty added to the gradient, a finite number >= 0.

    Example::

        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> optimizer = Adam([w], lr=0.1)
        >>> w.grad = np.array([0.5, -0.5])
        >>> optimizer.step()            # the first step moves each weight by about lr
        >>> w.data.round(4)
        array([ 0.9, -1.9])
    """

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 1e-3,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.betas, self.eps = betas, eps
        super().__init__(params, lr, weight_decay)

    def _check_hyperparameters(self):
        super()._check_hyperparameters()
        where = type(self).__name__
        betas = checks.sequence(where, "betas", self.betas, 2)
        self.betas = tuple(checks.number(where, f"betas[{index}]", beta, at_least=0, less_than=1)
                           for index, beta in enumerate(betas))
        self.eps = checks.number(where, "eps", self.eps, greater_than=0)

    def _buffer_kinds(self):
        return {"step": "count", "exp_avg": "array", "exp_avg_sq": "array"}

    def _update(self, p, grad, state):
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
        if self.decoupled_weight_decay:
            p.data *= 1 - self.lr * self.weight_decay
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** state["step"])
        # In place, and with Python floats only: a NumPy float64 scalar such as
        # np.sqrt(1 - beta2 ** t) would widen float32 arrays to float64.
        denominator = np.sqrt(exp_avg_sq)
        denominator /= math.sqrt(1 - beta2 ** state["step"])
        denominator += self.eps
        update = step_size * exp_avg
        update /= denominator
        p.data -= update

    def get_config(self) -> dict:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): ``p *= 1 - lr * weight_decay``
    before the Adam step, instead of adding ``weight_decay * p`` to the gradient.

    Args:
        params: the parameters to optimise (``model.parameters()``), or None to bind them later.
        lr: learning rate, a finite number >= 0.
        betas: ``(b1, b2)``, each a finite number in [0, 1), as in :class:`Adam`.
        eps: added to the denominator, a finite number > 0.
        weight_decay: the decoupled decay rate, a finite number >= 0.

    Example::

        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> optimizer = AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = np.zeros(2)
        >>> optimizer.step()            # no gradient: only the decay, w *= 1 - 0.1 * 0.5
        >>> w.data
        array([ 0.95, -1.9 ])
    """

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 1e-3,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop as PyTorch implements it::

        s = alpha s + (1 - alpha) g^2;   a = sqrt(s) + eps  (centered: sqrt(s - mean(g)^2) + eps)
        p -= lr * g / a,  or with momentum  b = momentum b + g / a,  p -= lr * b

    Args:
        params: the parameters to optimise (``model.parameters()``), or None to bind them later.
        lr: learning rate, a finite number >= 0.
        alpha: decay rate of the running mean of the squared gradient, a finite number in
            [0, 1] (PyTorch allows more than 1, which makes that mean negative).
        eps: added to the denominator, a finite number > 0.
        momentum: momentum factor, a finite number >= 0.
        weight_decay: L2 penalty added to the gradient, a finite number >= 0.
        centered: divide by the estimated variance of the gradient instead of its raw second
            moment (True or False).

    Example::

        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> optimizer = RMSprop([w], lr=0.01, alpha=0.75)
        >>> w.grad = np.array([0.5, -0.5])
        >>> optimizer.step()            # s = 0.25 g^2: g / sqrt(s) = 2 sign(g)
        >>> w.data.round(4)
        array([ 0.98, -1.98])
    """

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, centered: bool = False) -> None:
        self.alpha, self.eps, self.momentum, self.centered = alpha, eps, momentum, centered
        super().__init__(params, lr, weight_decay)

    def _check_hyperparameters(self):
        super()._check_hyperparameters()
        where = type(self).__name__
        self.alpha = checks.number(where, "alpha", self.alpha, at_least=0, at_most=1)
        self.eps = checks.number(where, "eps", self.eps, greater_than=0)
        self.momentum = checks.number(where, "momentum", self.momentum, at_least=0)
        self.centered = checks.boolean(where, "centered", self.centered)

    def _buffer_kinds(self):
        kinds = {"square_avg": "array"}
        if self.centered:
            kinds["grad_avg"] = "array"
        if self.momentum:
            kinds["momentum_buffer"] = "array"
        return kinds

    def _update(self, p, grad, state):
        if not state:
            state["square_avg"] = np.zeros_like(p.data)
            if self.centered:
                state["grad_avg"] = np.zeros_like(p.data)
            if self.momentum:
                state["momentum_buffer"] = np.zeros_like(p.data)
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * grad * grad
        if self.centered:
            state["grad_avg"] += (1 - self.alpha) * (grad - state["grad_avg"])
            average = np.sqrt(square_avg - state["grad_avg"] ** 2) + self.eps
        else:
            average = np.sqrt(square_avg) + self.eps
        if self.momentum:
            buffer = state["momentum_buffer"]
            buffer *= self.momentum
            buffer += grad / average
            p.data -= self.lr * buffer
        else:
            p.data -= self.lr * grad / average

    def get_config(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "centered": self.centered}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(optimizer: "str | Optimizer", **overrides) -> Optimizer:
    """An optimizer from an object or a name: ``"sgd"``, ``"momentum"`` (SGD, momentum 0.9),
    ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``; ``overrides`` such as ``lr=0.1``."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    name = optimizer.lower() if isinstance(optimizer, str) else optimizer
    if name == "momentum":
        return SGD(**{"momentum": 0.9, **overrides})
    if name == "nesterov":
        return SGD(**{"momentum": 0.9, "nesterov": True, **overrides})
    if isinstance(name, str) and name in OPTIMIZERS:
        return OPTIMIZERS[name](**overrides)
    raise ValueError(f"unknown optimizer {optimizer!r}: expected an Optimizer or one of "
                     f"{sorted(OPTIMIZERS) + ['momentum', 'nesterov']}")
