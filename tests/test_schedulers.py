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


def test_bad_schedule_arguments_raise():
    optimizer = optim.SGD([Parameter(np.zeros(1))])
    with pytest.raises(ValueError, match="step_size"):
        schedulers.StepLR(optimizer, step_size=0)
    with pytest.raises(ValueError, match="factor"):
        schedulers.ReduceLROnPlateau(optimizer, factor=1.5)
