"""Optimizers with PyTorch's exact update rules, so the same gradients give the same trajectory.

Each optimizer updates ``Parameter.data`` in place from ``Parameter.grad``. It may be created
without parameters (``Adam(lr=1e-3)``) and bound to a model's later, as ``compile`` does.
"""

import math

import numpy as np


class Optimizer:
    """Shared bookkeeping: the parameters, the learning rate ``lr``, and per-parameter state."""

    def __init__(self, params, lr, weight_decay):
        if isinstance(params, (int, float)):
            raise TypeError(f"{type(self).__name__}: the first argument is the parameters; "
                            f"pass the learning rate as lr={params!r}")
        if not lr >= 0:
            raise ValueError(f"{type(self).__name__}: lr must be a non-negative number, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.params = None
        self.state = []
        if params is not None:
            self.bind(params)

    def bind(self, params):
        """Attach the parameters to optimise (and forget any earlier state)."""
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters")
        self.state = [{} for _ in self.params]
        return self

    def zero_grad(self):
        for p in self._bound():
            p.zero_grad()

    def step(self):
        """Apply one update to every parameter from its current ``.grad``."""
        for p, state in zip(self._bound(), self.state):
            grad = p.grad
            if self.weight_decay and not self.decoupled_weight_decay:
                grad = grad + self.weight_decay * p.data
            self._update(p, grad, state)

    decoupled_weight_decay = False

    def _update(self, p, grad, state):
        raise NotImplementedError

    def _bound(self):
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters: create it with "
                               "model.parameters() or pass it to model.compile()")
        return self.params

    def state_dict(self):
        """Hyperparameters and every buffer, as arrays keyed ``"<param index>.<buffer>"``."""
        buffers = {f"{index}.{name}": np.array(value) for index, state in enumerate(self.state)
                   for name, value in state.items()}
        return {"config": self.get_config(), "buffers": buffers}

    def load_state_dict(self, state_dict):
        config, buffers = state_dict["config"], state_dict["buffers"]
        self.lr = float(config["lr"])
        self.state = [{} for _ in self._bound()]
        for key, value in buffers.items():
            index, name = key.split(".", 1)
            index = int(index)
            if not 0 <= index < len(self.params):
                raise ValueError(f"{type(self).__name__}: optimizer state names parameter {index}, "
                                 f"but there are {len(self.params)}")
            value = np.array(value)
            self.state[index][name] = value if value.ndim else value.item()

    def get_config(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay::

        g = grad + weight_decay * p
        b = g (first step), else b = momentum * b + (1 - dampening) * g
        p -= lr * (g + momentum * b if nesterov else b)       (p -= lr * g without momentum)
    """

    def __init__(self, params=None, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        if not momentum >= 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.nesterov = float(momentum), float(dampening), bool(nesterov)
        super().__init__(params, lr, weight_decay)

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

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), weight decay added to the gradient (L2) as in PyTorch::

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0, got {eps!r}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        super().__init__(params, lr, weight_decay)

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

    def get_config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): ``p *= 1 - lr * weight_decay``
    before the Adam step, instead of adding ``weight_decay * p`` to the gradient."""

    decoupled_weight_decay = True

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop as PyTorch implements it::

        s = alpha s + (1 - alpha) g^2;   a = sqrt(s) + eps  (centered: sqrt(s - mean(g)^2) + eps)
        p -= lr * g / a,  or with momentum  b = momentum b + g / a,  p -= lr * b
    """

    def __init__(self, params=None, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 centered=False):
        if not 0 <= alpha <= 1:
            raise ValueError(f"RMSprop: alpha must be in [0, 1], got {alpha!r}")
        if not momentum >= 0 or not eps >= 0:
            raise ValueError(f"RMSprop: momentum and eps must be >= 0, got {momentum!r}, {eps!r}")
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.centered = bool(centered)
        super().__init__(params, lr, weight_decay)

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

    def get_config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "centered": self.centered}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(optimizer, **overrides):
    """An optimizer from an object or a name: ``"sgd"``, ``"momentum"`` (SGD, momentum 0.9),
    ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``; ``overrides`` such as ``lr=0.1``."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    name = optimizer.lower() if isinstance(optimizer, str) else optimizer
    if name == "momentum":
        return SGD(**{"momentum": 0.9, **overrides})
    if name == "nesterov":
        return SGD(**{"momentum": 0.9, "nesterov": True, **overrides})
    if name in OPTIMIZERS:
        return OPTIMIZERS[name](**overrides)
    raise ValueError(f"unknown optimizer {optimizer!r}: expected an Optimizer or one of "
                     f"{sorted(OPTIMIZERS) + ['momentum', 'nesterov']}")
