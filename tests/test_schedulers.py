import doctest

import numpy as np
import pytest

from npconvnet import optim, schedulers
from npconvnet.parameter import Parameter


def learning_rates(torch, ours, theirs, epochs=25, metrics=None):
    history = []
    for epoch in range(epochs):
        theirs.optimizer.step()          # PyTorch warns when a schedule steps before its optimizer
        if metrics is None:
            ours.step(), theirs.step()
        else:
            ours.step(metrics[epoch]), theirs.step(metrics[epoch])
        history.append((ours.optimizer.lr, theirs.optimizer.param_groups[0]["lr"]))
    return np.array(history)


def pair(torch, lr=0.1):
    return optim.SGD([Parameter(np.zeros(1))], lr=lr), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


@pytest.mark.parametrize("name,options", [
    ("StepLR", {"step_size": 3}), ("StepLR", {"step_size": 5, "gamma": 0.5}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 10}), ("CosineAnnealingLR", {"T_max": 25, "eta_min": 0.01}),
])
def test_schedule_matches_pytorch(name, options, torch):
    ours, theirs = pair(torch)
    history = learning_rates(torch, getattr(schedulers, name)(ours, **options),
                             getattr(torch.optim.lr_scheduler, name)(theirs, **options),
                             epochs=options.get("T_max", 25))
    np.testing.assert_allclose(history[:, 0], history[:, 1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [
    {}, {"patience": 2, "factor": 0.5}, {"mode": "max", "patience": 1},
    {"patience": 1, "cooldown": 2, "threshold_mode": "abs", "threshold": 0.05, "min_lr": 0.002},
])
def test_reduce_on_plateau_matches_pytorch(options, torch):
    metrics = [1.0, 0.9, 0.95, 0.95, 0.91, 0.92, 0.93, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.8] * 2
    ours, theirs = pair(torch)
    history = learning_rates(torch, schedulers.ReduceLROnPlateau(ours, **options),
                             torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **options),
                             epochs=len(metrics), metrics=metrics)
    np.testing.assert_allclose(history[:, 0], history[:, 1], rtol=1e-12)
    assert history[-1, 0] < 0.1 or options.get("mode") == "max"


def test_schedulers_work_on_any_optimizer():
    for optimizer in (optim.Adam([Parameter(np.zeros(1))], lr=1.0), optim.RMSprop([Parameter(np.zeros(1))], lr=1.0)):
        scheduler = schedulers.StepLR(optimizer, step_size=1, gamma=0.5)
        scheduler.step(), scheduler.step()
        assert optimizer.lr == 0.25


def test_scheduler_state_round_trip():
    optimizer = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    scheduler = schedulers.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(4):
        scheduler.step()
    restored = schedulers.CosineAnnealingLR(optim.SGD([Parameter(np.zeros(1))], lr=1.0), T_max=10)
    restored.load_state_dict(scheduler.state_dict())
    scheduler.step(), restored.step()
    assert restored.optimizer.lr == scheduler.optimizer.lr


INF, NAN = float("inf"), float("nan")

# (scheduler, keyword arguments besides the optimizer, exception, the argument its message names)
BAD_ARGUMENTS = [
    ("StepLR", {"step_size": 0}, ValueError, "step_size"),
    ("StepLR", {"step_size": 2.5}, TypeError, "step_size"),
    ("StepLR", {"step_size": True}, TypeError, "step_size"),
    ("StepLR", {"step_size": 2, "gamma": 0}, ValueError, "gamma"),
    ("StepLR", {"step_size": 2, "gamma": -0.5}, ValueError, "gamma"),
    ("StepLR", {"step_size": 2, "gamma": NAN}, ValueError, "gamma"),
    ("StepLR", {"step_size": 2, "gamma": "0.5"}, TypeError, "gamma"),
    ("ExponentialLR", {"gamma": INF}, ValueError, "gamma"),
    ("ExponentialLR", {"gamma": 0.0}, ValueError, "gamma"),
    ("CosineAnnealingLR", {"T_max": 0}, ValueError, "T_max"),
    ("CosineAnnealingLR", {"T_max": 10.0}, TypeError, "T_max"),
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": -1e-3}, ValueError, "eta_min"),
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": INF}, ValueError, "eta_min"),
    ("ReduceLROnPlateau", {"mode": "minimum"}, ValueError, "mode"),
    ("ReduceLROnPlateau", {"factor": 1.5}, ValueError, "factor"),
    ("ReduceLROnPlateau", {"factor": 0}, ValueError, "factor"),
    ("ReduceLROnPlateau", {"factor": NAN}, ValueError, "factor"),
    ("ReduceLROnPlateau", {"patience": -1}, ValueError, "patience"),
    ("ReduceLROnPlateau", {"patience": 2.5}, TypeError, "patience"),
    ("ReduceLROnPlateau", {"threshold": -1e-4}, ValueError, "threshold"),
    ("ReduceLROnPlateau", {"threshold": INF}, ValueError, "threshold"),
    ("ReduceLROnPlateau", {"threshold_mode": "relative"}, ValueError, "threshold_mode"),
    ("ReduceLROnPlateau", {"cooldown": -2}, ValueError, "cooldown"),
    ("ReduceLROnPlateau", {"min_lr": -1}, ValueError, "min_lr"),
    ("ReduceLROnPlateau", {"min_lr": NAN}, ValueError, "min_lr"),
    ("ReduceLROnPlateau", {"eps": INF}, ValueError, "eps"),
]


@pytest.mark.parametrize("name,options,error,argument", BAD_ARGUMENTS,
                         ids=[f"{n}-{o}" for n, o, _, _ in BAD_ARGUMENTS])
def test_an_argument_that_cannot_work_is_refused_naming_it(name, options, error, argument):
    optimizer = optim.SGD([Parameter(np.zeros(1))])
    with pytest.raises(error, match=f"^{name}: {argument} must be"):
        getattr(schedulers, name)(optimizer, **options)


@pytest.mark.parametrize("make", [lambda o: schedulers.StepLR(o, 2), lambda o: schedulers.ReduceLROnPlateau(o)])
def test_something_that_is_not_an_optimizer_is_refused(make):
    with pytest.raises(TypeError, match="expected an optimizer, got list"):
        make([Parameter(np.zeros(1))])


def test_a_schedule_that_overflows_is_refused_and_keeps_the_last_rate():
    optimizer = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    scheduler = schedulers.ExponentialLR(optimizer, gamma=2.0)
    with pytest.raises(ValueError, match="ExponentialLR: the learning rate for epoch 1024 is inf"):
        for _ in range(2000):
            scheduler.step()
    assert scheduler.last_epoch == 1023 and optimizer.lr == 0.1 * 2.0 ** 1023


@pytest.mark.parametrize("state,message", [
    ({"x": 1}, "a saved state must hold"),
    (None, "a saved state must hold"),
    ({"step_size": 2, "gamma": 0.5, "base_lr": 0.1}, "a saved state must hold"),
    ({"step_size": 2, "gamma": NAN, "base_lr": 0.1, "last_epoch": 3}, "gamma must be"),
    ({"step_size": 0, "gamma": 0.5, "base_lr": 0.1, "last_epoch": 3}, "step_size must be"),
    ({"step_size": 2, "gamma": 0.5, "base_lr": INF, "last_epoch": 3}, "base_lr"),
    ({"step_size": 2, "gamma": 0.5, "base_lr": 0.1, "last_epoch": -1}, "last_epoch must be"),
    ({"step_size": 2, "gamma": 0.5, "base_lr": 0.1, "last_epoch": "3"}, "last_epoch must be"),
])
def test_load_state_dict_refuses_a_state_that_cannot_work_and_changes_nothing(state, message):
    scheduler = schedulers.StepLR(optim.SGD([Parameter(np.zeros(1))], lr=1.0), step_size=3)
    scheduler.step()
    before = scheduler.state_dict()
    with pytest.raises(ValueError, match=f"^StepLR.load_state_dict: .*{message}"):
        scheduler.load_state_dict(state)
    assert scheduler.state_dict() == before


@pytest.mark.parametrize("field,value", [("best", NAN), ("num_bad_epochs", -1), ("cooldown_counter", 1.5),
                                         ("factor", 2.0)])
def test_reduce_on_plateau_refuses_a_saved_state_that_cannot_work(field, value):
    scheduler = schedulers.ReduceLROnPlateau(optim.SGD([Parameter(np.zeros(1))]))
    with pytest.raises(ValueError, match=f"^ReduceLROnPlateau.load_state_dict: {field} must be"):
        scheduler.load_state_dict({**scheduler.state_dict(), field: value})


def test_reduce_on_plateau_round_trips_an_infinite_best():
    scheduler = schedulers.ReduceLROnPlateau(optim.SGD([Parameter(np.zeros(1))]), mode="max")
    restored = schedulers.ReduceLROnPlateau(optim.SGD([Parameter(np.zeros(1))]), mode="max")
    restored.load_state_dict(scheduler.state_dict())
    assert restored.best == -np.inf


@pytest.mark.parametrize("metric", ["0.5", None, [0.5], True])
def test_reduce_on_plateau_steps_only_on_a_number(metric):
    scheduler = schedulers.ReduceLROnPlateau(optim.SGD([Parameter(np.zeros(1))]))
    with pytest.raises(TypeError, match="metric must be a number"):
        scheduler.step(metric)


def test_the_docstring_examples_run():
    extras = {"np": np, "Parameter": Parameter, "SGD": optim.SGD}
    failures, tried = doctest.testmod(schedulers, extraglobs=extras)[:2]
    assert tried >= 10 and failures == 0
