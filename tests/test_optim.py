import numpy as np
import pytest

from npconvnet import optim
from npconvnet.parameter import Parameter

CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "betas": (0.85, 0.9)}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.001, "alpha": 0.9, "eps": 1e-6}),
    ("RMSprop", {"lr": 0.001, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.001, "centered": True, "weight_decay": 0.05}),
    ("RMSprop", {"lr": 0.001, "centered": True, "momentum": 0.5}),
]


def gradient_sequence(rng, shapes, steps=20):
    return [[rng.standard_normal(shape) for shape in shapes] for _ in range(steps)]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_twenty_steps_follow_pytorch_trajectory(name, options, rng, torch):
    shapes = [(3, 4), (4,)]
    initial = [rng.standard_normal(shape) for shape in shapes]
    ours = [Parameter(value.copy()) for value in initial]
    theirs = [torch.tensor(value.copy(), requires_grad=True) for value in initial]
    optimizer = getattr(optim, name)(ours, **options)
    reference = getattr(torch.optim, name)(theirs, **options)
    for gradients in gradient_sequence(rng, shapes):
        for parameter, tensor, grad in zip(ours, theirs, gradients):
            parameter.grad = grad.copy()
            tensor.grad = torch.tensor(grad.copy())
        optimizer.step()
        reference.step()
        for parameter, tensor in zip(ours, theirs):
            np.testing.assert_allclose(parameter.data, tensor.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_float32_parameters_stay_float32(rng):
    parameter = Parameter(rng.standard_normal(5).astype(np.float32))
    for optimizer in (optim.SGD([parameter], momentum=0.9), optim.Adam([parameter]), optim.RMSprop([parameter])):
        parameter.grad = np.ones(5, np.float32)
        optimizer.step()
        assert parameter.data.dtype == np.float32


def test_updates_are_in_place():
    parameter = Parameter(np.zeros(3))
    data = parameter.data
    parameter.grad = np.ones(3)
    optim.Adam([parameter]).step()
    assert parameter.data is data


def test_zero_grad_clears_every_gradient():
    parameter = Parameter(np.zeros(3))
    parameter.grad = np.ones(3)
    optim.SGD([parameter]).zero_grad()
    np.testing.assert_array_equal(parameter.grad, 0)


def test_an_unbound_optimizer_can_be_bound_later():
    parameter = Parameter(np.ones(2))
    parameter.grad = np.ones(2)
    optimizer = optim.SGD(lr=0.5)
    with pytest.raises(RuntimeError, match="has no parameters"):
        optimizer.step()
    optimizer.bind([parameter]).step()
    np.testing.assert_array_equal(parameter.data, [0.5, 0.5])


def test_state_dict_round_trip_continues_the_same_trajectory(rng):
    def run(optimizer_from, steps, start):
        parameter = Parameter(start.copy())
        optimizer = optimizer_from([parameter])
        for step in range(steps):
            parameter.grad = np.full(3, float(step + 1))
            optimizer.step()
        return parameter, optimizer

    start = rng.standard_normal(3)
    straight, _ = run(lambda p: optim.Adam(p, lr=0.1), 6, start)
    first, optimizer = run(lambda p: optim.Adam(p, lr=0.1), 3, start)
    resumed = Parameter(first.data.copy())
    second = optim.Adam([resumed], lr=0.1)
    second.load_state_dict(optimizer.state_dict())
    for step in range(3, 6):
        resumed.grad = np.full(3, float(step + 1))
        second.step()
    np.testing.assert_array_equal(resumed.data, straight.data)


@pytest.mark.parametrize("factory,message", [
    (lambda: optim.SGD(lr=-1), "lr must be"),
    (lambda: optim.SGD(momentum=-0.1), "momentum must be"),
    (lambda: optim.SGD(nesterov=True), "Nesterov"),
    (lambda: optim.Adam(betas=(1.0, 0.9)), "betas"),
    (lambda: optim.RMSprop(alpha=2), "alpha"),
    (lambda: optim.SGD(0.1), "pass the learning rate as lr="),
])
def test_bad_hyperparameters_raise(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


def test_optimizers_by_name():
    assert isinstance(optim.get("adam", lr=0.1), optim.Adam)
    momentum = optim.get("momentum", lr=0.1)
    assert isinstance(momentum, optim.SGD) and momentum.momentum == 0.9 and momentum.lr == 0.1
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get("lbfgs")
