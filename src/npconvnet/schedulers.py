"""Learning-rate schedules: each ``step()`` sets ``optimizer.lr``, as PyTorch's schedulers do.

Call ``step()`` once per epoch (``ReduceLROnPlateau.step(metric)`` with the monitored value),
or list the scheduler in ``fit(callbacks=[...])``, which steps it at the end of every epoch.
Every argument is checked (finite numbers in their ranges, ints where counts are meant), and
so is a state handed back to ``load_state_dict``.

The examples assume ``import numpy as np``, ``from npconvnet import Parameter`` and
``from npconvnet.optim import SGD``.
"""

import math

import numpy as np

from . import checks


class LRScheduler:
    """Closed-form schedules: ``lr = get_lr()`` as a function of the epoch count ``last_epoch``.

    A subclass sets its arguments before calling ``LRScheduler.__init__`` and checks them in
    ``_check_arguments``, which also checks a state given to ``load_state_dict``.
    """

    def __init__(self, optimizer) -> None:
        _check_optimizer(self, optimizer)
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._check_arguments(type(self).__name__)

    def _check_arguments(self, where):
        """Check every argument and the epoch count, keeping them as plain Python values."""
        self.base_lr = checks.number(where, "the optimizer's lr (base_lr)", self.base_lr, at_least=0)
        self.last_epoch = checks.integer(where, "last_epoch", self.last_epoch, at_least=0)

    def step(self) -> None:
        """Count one more epoch and set the optimizer's ``lr`` to the schedule's value for it.

        Raises ValueError, changing nothing, if that value overflows (a ``gamma`` above 1 for
        too many epochs)."""
        self.last_epoch += 1
        try:
            lr = self.get_lr()
        except OverflowError:           # Python's float power raises instead of giving inf
            lr = math.inf
        if not math.isfinite(lr):
            self.last_epoch -= 1
            raise ValueError(f"{type(self).__name__}: the learning rate for epoch {self.last_epoch + 1} "
                             f"is {lr}: the schedule {self.get_config()} overflows")
        self.optimizer.lr = lr

    def get_lr(self) -> float:
        raise NotImplementedError

    def get_last_lr(self) -> float:
        """The optimizer's current learning rate."""
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """Everything but the optimizer: plain numbers, JSON-friendly."""
        return {key: value for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Take back :meth:`state_dict`'s output, checked as the constructor checks its
        arguments; a state that does not fit raises ValueError and changes nothing."""
        where = f"{type(self).__name__}.load_state_dict"
        expected = sorted(self.state_dict())
        if not isinstance(state, dict) or sorted(map(str, state)) != expected:
            found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}: a saved state must hold {expected}, got {found}")
        before = dict(vars(self))
        vars(self).update(state)
        try:
            self._check_arguments(where)
        except (TypeError, ValueError) as error:
            vars(self).clear()
            vars(self).update(before)
            raise ValueError(str(error)) from None

    def get_config(self) -> dict:
        return {}


def _check_optimizer(scheduler, optimizer):
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"{type(scheduler).__name__}: expected an optimizer, got "
                        f"{type(optimizer).__name__}")


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``: the rate drops by ``gamma`` every
    ``step_size`` epochs.

    Args:
        optimizer: the optimizer whose ``lr`` is set; its current ``lr`` is ``base_lr``.
        step_size: epochs between two drops, an int >= 1.
        gamma: the factor applied at every drop, a finite number > 0.

    Example::

        >>> optimizer = SGD([Parameter(np.zeros(1))], lr=0.1)
        >>> scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
        >>> for epoch in range(4):
        ...     scheduler.step()                # after each epoch's training
        ...     print(optimizer.lr)
        0.1
        0.05
        0.05
        0.025
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def _check_arguments(self, where):
        super()._check_arguments(where)
        self.step_size = checks.integer(where, "step_size", self.step_size, at_least=1)
        self.gamma = checks.number(where, "gamma", self.gamma, greater_than=0)

    def get_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)

    def get_config(self) -> dict:
        return {"step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``.

    Args:
        optimizer: the optimizer whose ``lr`` is set; its current ``lr`` is ``base_lr``.
        gamma: the factor applied every epoch, a finite number > 0.

    Example::

        >>> optimizer = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> scheduler = ExponentialLR(optimizer, gamma=0.5)
        >>> for epoch in range(3):
        ...     scheduler.step()
        ...     print(optimizer.lr)
        0.5
        0.25
        0.125
    """

    def __init__(self, optimizer, gamma: float) -> None:
        self.gamma = gamma
        super().__init__(optimizer)

    def _check_arguments(self, where):
        super()._check_arguments(where)
        self.gamma = checks.number(where, "gamma", self.gamma, greater_than=0)

    def get_lr(self) -> float:
        return self.base_lr * self.gamma ** self.last_epoch

    def get_config(self) -> dict:
        return {"gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Args:
        optimizer: the optimizer whose ``lr`` is set; its current ``lr`` is ``base_lr``.
        T_max: the epochs of one half cosine, from ``base_lr`` down to ``eta_min``, an int >= 1.
        eta_min: the smallest learning rate, a finite number >= 0.

    Example::

        >>> optimizer = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> scheduler = CosineAnnealingLR(optimizer, T_max=4)
        >>> for epoch in range(4):
        ...     scheduler.step()
        ...     print(round(optimizer.lr, 4))
        0.8536
        0.5
        0.1464
        0.0
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def _check_arguments(self, where):
        super()._check_arguments(where)
        self.T_max = checks.integer(where, "T_max", self.T_max, at_least=1)
        self.eta_min = checks.number(where, "eta_min", self.eta_min, at_least=0)

    def get_lr(self) -> float:
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine

    def get_config(self) -> dict:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class ReduceLROnPlateau:
    """Multiply ``lr`` by ``factor`` once the metric has not improved for ``patience`` epochs.

    Improvement means, for ``mode="min"``, ``metric < best * (1 - threshold)``
    (``threshold_mode="rel"``) or ``metric < best - threshold`` (``"abs"``); ``mode="max"``
    mirrors it. After a reduction, ``cooldown`` epochs pass before bad epochs count again.

    Args:
        optimizer: the optimizer whose ``lr`` is reduced.
        mode: ``"min"`` (lower is better, a loss) or ``"max"`` (an accuracy).
        factor: the factor applied at a reduction, a finite number in (0, 1).
        patience: bad epochs tolerated before a reduction, an int >= 0.
        threshold: the least change that counts as an improvement, a finite number >= 0.
        threshold_mode: ``"rel"`` (relative to ``best``) or ``"abs"``.
        cooldown: epochs after a reduction before bad epochs count again, an int >= 0.
        min_lr: the learning rate is never reduced below this, a finite number >= 0.
        eps: a reduction smaller than this is skipped, a finite number >= 0.

    Example::

        >>> optimizer = SGD([Parameter(np.zeros(1))], lr=0.1)
        >>> scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        >>> for val_loss in [1.0, 0.9, 0.95, 0.95, 0.95]:
        ...     scheduler.step(val_loss)        # after each epoch's validation
        ...     print(optimizer.lr)
        0.1
        0.1
        0.1
        0.05
        0.05
    """

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8) -> None:
        _check_optimizer(self, optimizer)
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._check_arguments(type(self).__name__)

    def _check_arguments(self, where):
        """Check every argument and the state, keeping them as plain Python values."""
        self.mode = checks.one_of(where, "mode", self.mode, ("min", "max"))
        self.factor = checks.number(where, "factor", self.factor, greater_than=0, less_than=1)
        self.patience = checks.integer(where, "patience", self.patience, at_least=0)
        self.threshold = checks.number(where, "threshold", self.threshold, at_least=0)
        self.threshold_mode = checks.one_of(where, "threshold_mode", self.threshold_mode, ("rel", "abs"))
        self.cooldown = checks.integer(where, "cooldown", self.cooldown, at_least=0)
        self.min_lr = checks.number(where, "min_lr", self.min_lr, at_least=0)
        self.eps = checks.number(where, "eps", self.eps, at_least=0)
        self.best = checks.number(where, "best", self.best, finite=False)
        self.num_bad_epochs = checks.integer(where, "num_bad_epochs", self.num_bad_epochs, at_least=0)
        self.cooldown_counter = checks.integer(where, "cooldown_counter", self.cooldown_counter, at_least=0)
        self.last_epoch = checks.integer(where, "last_epoch", self.last_epoch, at_least=0)

    def is_better(self, value: float) -> bool:
        sign = 1 if self.mode == "min" else -1
        if self.threshold_mode == "rel":
            return sign * value < sign * self.best * (1 - sign * self.threshold)
        return sign * value < sign * self.best - self.threshold

    def step(self, metric: float) -> None:
        """Count one more epoch with the monitored value ``metric`` (a number; NaN counts as
        no improvement) and reduce the rate if it has stopped improving."""
        if np.ndim(metric) != 0 or np.asarray(metric).dtype.kind not in "iuf":
            raise TypeError(f"ReduceLROnPlateau.step: metric must be a number (the monitored "
                            f"value), got {metric!r:.100} ({type(metric).__name__})")
        metric = float(metric)
        self.last_epoch += 1
        if self.is_better(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.optimizer.lr * self.factor, self.min_lr)
            if self.optimizer.lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def get_last_lr(self) -> float:
        """The optimizer's current learning rate."""
        return self.optimizer.lr

    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict

    def get_config(self) -> dict:
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps}
