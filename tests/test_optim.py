import doctest

import numpy as np
import pytest

from npconvnet import Sequential, load_model, optim
from npconvnet.layers import Dense, Flatten
from npconvnet.parameter import Parameter
from npconvnet.serialization import ModelFileError
from test_serialization import edit_header, npy_bytes, read_members, write_members

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


INF, NAN = float("inf"), float("nan")

# (optimizer, keyword arguments, exception, the argument its message names)
BAD_SETTINGS = [
    ("SGD", {"lr": INF}, ValueError, "lr"),
    ("SGD", {"lr": NAN}, ValueError, "lr"),
    ("SGD", {"lr": -1}, ValueError, "lr"),
    ("SGD", {"lr": "0.1"}, TypeError, "lr"),
    ("SGD", {"lr": True}, TypeError, "lr"),
    ("SGD", {"weight_decay": INF}, ValueError, "weight_decay"),
    ("SGD", {"weight_decay": -0.1}, ValueError, "weight_decay"),
    ("SGD", {"momentum": -0.1}, ValueError, "momentum"),
    ("SGD", {"momentum": NAN}, ValueError, "momentum"),
    ("SGD", {"momentum": 0.9, "dampening": NAN}, ValueError, "dampening"),
    ("SGD", {"momentum": 0.9, "dampening": -5}, ValueError, "dampening"),
    ("SGD", {"momentum": 0.9, "dampening": 1.5}, ValueError, "dampening"),
    ("SGD", {"momentum": 0.9, "nesterov": "no"}, TypeError, "nesterov"),
    ("SGD", {"momentum": 0.9, "nesterov": 1}, TypeError, "nesterov"),
    ("SGD", {"nesterov": True}, ValueError, "Nesterov momentum needs momentum > 0 and dampening = 0"),
    ("SGD", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, ValueError,
     "Nesterov momentum needs momentum > 0 and dampening = 0"),
    ("Adam", {"lr": INF, "eps": INF}, ValueError, "lr"),
    ("Adam", {"lr": "0.1"}, TypeError, "lr"),
    ("Adam", {"eps": INF}, ValueError, "eps"),
    ("Adam", {"eps": 0}, ValueError, "eps"),
    ("Adam", {"eps": -1e-8}, ValueError, "eps"),
    ("Adam", {"betas": (0.9,)}, ValueError, "betas"),
    ("Adam", {"betas": (0.9, 0.99, 0.999)}, ValueError, "betas"),
    ("Adam", {"betas": 0.9}, TypeError, "betas"),
    ("Adam", {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\]"),
    ("Adam", {"betas": (0.9, NAN)}, ValueError, r"betas\[1\]"),
    ("Adam", {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"),
    ("Adam", {"betas": ("0.9", 0.999)}, TypeError, r"betas\[0\]"),
    ("Adam", {"weight_decay": NAN}, ValueError, "weight_decay"),
    ("AdamW", {"weight_decay": INF}, ValueError, "weight_decay"),
    ("AdamW", {"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]"),
    ("RMSprop", {"alpha": 2}, ValueError, "alpha"),
    ("RMSprop", {"alpha": NAN}, ValueError, "alpha"),
    ("RMSprop", {"eps": 0.0}, ValueError, "eps"),
    ("RMSprop", {"momentum": INF}, ValueError, "momentum"),
    ("RMSprop", {"centered": "yes"}, TypeError, "centered"),
]


@pytest.mark.parametrize("name,options,error,argument", BAD_SETTINGS,
                         ids=[f"{n}-{o}" for n, o, _, _ in BAD_SETTINGS])
def test_a_setting_that_cannot_work_is_refused_naming_the_argument(name, options, error, argument):
    with pytest.raises(error, match=f"^{name}: {argument}"):
        getattr(optim, name)(**options)


@pytest.mark.parametrize("name,options", [
    ("SGD", {"lr": 0, "momentum": 0.0, "dampening": 1, "weight_decay": 0}),
    ("SGD", {"lr": np.float32(0.1), "momentum": np.float64(0.9), "nesterov": np.bool_(True)}),
    ("Adam", {"lr": 1, "betas": [0, 0.5], "eps": 1e-300}),
    ("RMSprop", {"alpha": 0, "momentum": 2.0, "centered": True}),
])
def test_settings_at_the_ends_of_their_ranges_are_accepted_as_plain_python_values(name, options):
    config = getattr(optim, name)(**options).get_config()
    assert all(type(value) in (float, bool, list) for value in config.values())
    assert all(type(value) is float for value in config.get("betas", []))


def test_the_learning_rate_must_not_be_given_as_the_first_argument():
    with pytest.raises(TypeError, match="pass the learning rate as lr="):
        optim.SGD(0.1)


@pytest.mark.parametrize("params", [np.zeros(3), [np.zeros(3)], "weights", Parameter(np.zeros(3))])
def test_parameters_that_are_not_parameter_objects_are_refused(params):
    with pytest.raises(TypeError, match="Parameter"):
        optim.SGD(params)


@pytest.mark.parametrize("lr,error", [(-1, ValueError), (INF, ValueError), (NAN, ValueError),
                                      ("x", TypeError), (None, TypeError)])
def test_a_learning_rate_set_after_construction_is_refused_at_the_next_step(lr, error):
    parameter = Parameter(np.ones(2))
    parameter.grad = np.ones(2)
    optimizer = optim.SGD([parameter], lr=0.1, momentum=0.9)
    optimizer.lr = lr
    with pytest.raises(error, match="^SGD: lr must be a finite number >= 0.*set after the optimizer"):
        optimizer.step()
    np.testing.assert_array_equal(parameter.data, [1, 1])
    assert optimizer.state == [{}]


def test_any_hyperparameter_set_after_construction_is_checked_at_the_next_step():
    parameter = Parameter(np.ones(2))
    optimizer = optim.Adam([parameter])
    optimizer.betas = (0.9, 1.5)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a finite number in \[0, 1\)"):
        optimizer.step()


def test_a_numpy_learning_rate_set_later_is_used_as_a_python_float():
    parameter = Parameter(np.ones(2, np.float32))
    optimizer = optim.SGD([parameter], lr=0.1)
    optimizer.lr = np.float64(0.5)
    optimizer.step()
    assert type(optimizer.lr) is float and parameter.data.dtype == np.float32


def stepped(optimizer, shapes=((2, 3), (3,)), steps=2, dtype=np.float64):
    """``optimizer`` bound to fresh parameters of ``shapes`` and stepped ``steps`` times."""
    parameters = [Parameter(np.ones(shape, dtype)) for shape in shapes]
    optimizer.bind(parameters)
    for _ in range(steps):
        for parameter in parameters:
            parameter.grad = np.full(parameter.shape, 0.5, dtype)
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("state_dict", [{"x": 1}, {}, None, [1], {"config": {}, "buffers": {}},
                                        {"config": {"lr": 0.1}, "buffers": []},
                                        {"config": {"lr": 0.1}, "buffers": {}, "extra": 1}])
def test_load_state_dict_refuses_what_is_not_a_state_dict(state_dict):
    optimizer = stepped(optim.Adam())
    with pytest.raises(ValueError, match="^Adam.load_state_dict: "):
        optimizer.load_state_dict(state_dict)


@pytest.mark.parametrize("lr", [INF, NAN, -1, "0.1", None])
def test_load_state_dict_refuses_a_learning_rate_that_cannot_work(lr):
    optimizer = stepped(optim.SGD(lr=0.1))
    with pytest.raises(ValueError, match=r"config\['lr'\] must be a finite number >= 0"):
        optimizer.load_state_dict({"config": {"lr": lr}, "buffers": {}})


def _edited(buffers, key, value=None):
    buffers = dict(buffers)
    if value is None:
        del buffers[key]
    else:
        buffers[key] = value
    return buffers


# (the edit of an Adam state on parameters of shapes (2, 3) and (3,), what the message names)
BAD_BUFFERS = [
    (lambda b: _edited(b, "2.exp_avg", np.zeros(3)), "'2.exp_avg' names parameter 2, but there are 2"),
    (lambda b: _edited(b, "x.exp_avg", np.zeros(3)), "invalid buffer name 'x.exp_avg'"),
    (lambda b: _edited(b, "0", np.zeros(3)), "invalid buffer name '0'"),
    (lambda b: _edited(b, "-1.exp_avg", np.zeros(3)), "invalid buffer name '-1.exp_avg'"),
    (lambda b: _edited(b, 0, np.zeros(3)), "invalid buffer name 0"),
    (lambda b: _edited(b, "1.momentum_buffer", np.zeros(3)), "unknown buffer '1.momentum_buffer'"),
    (lambda b: _edited(b, "1.exp_avg", np.zeros(4)), r"'1.exp_avg' has shape \(4,\)"),
    (lambda b: _edited(b, "1.exp_avg", np.zeros(3, np.float32)), "'1.exp_avg' has .* dtype float32"),
    (lambda b: _edited(b, "0.exp_avg_sq", np.array(0.5)), r"'0.exp_avg_sq' has shape \(\)"),
    (lambda b: _edited(b, "0.step", np.ones((2, 3), np.int64)), "'0.step' must be a step count"),
    (lambda b: _edited(b, "0.step", np.array(2.0)), "'0.step' must be a step count"),
    (lambda b: _edited(b, "0.step", np.array(0)), "'0.step' must be a step count"),
    (lambda b: _edited(b, "0.step", np.array(-2)), "'0.step' must be a step count"),
    (lambda b: _edited(b, "0.step", "2"), "'0.step' must be a step count"),
    (lambda b: _edited(b, "1.exp_avg"), r"parameter 1 has the buffers \['exp_avg_sq', 'step'\]"),
]


@pytest.mark.parametrize("edit,message", BAD_BUFFERS, ids=[message for _, message in BAD_BUFFERS])
def test_load_state_dict_refuses_buffers_that_do_not_fit_the_parameters(edit, message):
    saved = stepped(optim.Adam()).state_dict()
    optimizer = stepped(optim.Adam(lr=0.5), steps=1)
    before = optimizer.state_dict()
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict({"config": saved["config"], "buffers": edit(saved["buffers"])})
    after = optimizer.state_dict()
    assert after["config"] == before["config"] and after["buffers"].keys() == before["buffers"].keys()
    for key, value in before["buffers"].items():
        np.testing.assert_array_equal(after["buffers"][key], value)


def test_load_state_dict_refuses_momentum_buffers_for_sgd_without_momentum():
    saved = stepped(optim.SGD(momentum=0.9)).state_dict()
    with pytest.raises(ValueError, match=r"unknown buffer '0.momentum_buffer': SGD\(.*\) keeps no buffers"):
        stepped(optim.SGD(momentum=0.0)).load_state_dict(saved)


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_every_optimizer_takes_back_its_own_state(name, options):
    saved = stepped(getattr(optim, name)(**options), dtype=np.float32).state_dict()
    restored = stepped(getattr(optim, name)(**options), steps=0, dtype=np.float32)
    restored.load_state_dict(saved)
    assert restored.state_dict()["buffers"].keys() == saved["buffers"].keys()


def saved_model_members(tmp_path, optimizer):
    model = Sequential(Flatten(), Dense(4, 2))
    model.compile(optimizer=optimizer)
    model.fit(np.random.default_rng(0).random((8, 4), np.float32), np.arange(8) % 2, epochs=1,
              batch_size=4, verbose=0)
    model.save(tmp_path / "model.npz")
    return read_members(tmp_path / "model.npz")


def _config(**changes):
    return lambda header: header["compile"]["optimizer"]["config"].update(changes)


@pytest.mark.parametrize("optimizer,change,argument", [
    (optim.SGD(lr=0.1), _config(lr=INF), "lr"),
    (optim.SGD(lr=0.1), _config(weight_decay=INF), "weight_decay"),
    (optim.SGD(lr=0.1, momentum=0.9), _config(dampening=NAN), "dampening"),
    (optim.SGD(lr=0.1, momentum=0.9), _config(dampening=-5), "dampening"),
    (optim.SGD(lr=0.1, momentum=0.9), _config(nesterov="no"), "nesterov"),
    (optim.Adam(), _config(lr=INF, eps=INF), "lr"),
    (optim.Adam(), _config(eps=INF), "eps"),
    (optim.Adam(), _config(lr="0.1"), "lr"),
    (optim.Adam(), _config(betas=[0.9]), "betas"),
    (optim.Adam(), _config(betas=0.9), "betas"),
    (optim.RMSprop(), _config(centered=1), "centered"),
])
def test_a_model_file_with_a_setting_that_cannot_work_is_refused(tmp_path, optimizer, change, argument):
    members = saved_model_members(tmp_path, optimizer)
    edit_header(members, change)
    write_members(tmp_path / "edited.npz", members)
    with pytest.raises(ModelFileError, match=f"bad optimizer config for .*: {argument} must be"):
        load_model(tmp_path / "edited.npz")


def _member(key, array):
    def change(members):
        members[f"optimizer/{key}.npy"] = npy_bytes(array)
    return change


def _drop_buffer(key):
    def change(members):
        del members[f"optimizer/{key}.npy"]
        edit_header(members, lambda header: header["optimizer_state"].remove(key))
    return change


@pytest.mark.parametrize("change,message", [
    (_member("0.step", np.ones((2, 4), np.float32)), "'0.step' must be a step count"),
    (_member("0.step", np.array(3.5)), "'0.step' must be a step count"),
    (_member("1.step", np.array(-1)), "'1.step' must be a step count"),
    (_member("0.exp_avg", np.array(0.5, np.float32)), r"'0.exp_avg' has shape \(\)"),
    (_drop_buffer("1.exp_avg"), "parameter 1 has the buffers"),
])
def test_a_model_file_whose_optimizer_state_does_not_fit_its_parameters_is_refused(tmp_path, change, message):
    members = saved_model_members(tmp_path, optim.Adam())
    change(members)
    write_members(tmp_path / "edited.npz", members)
    with pytest.raises(ModelFileError, match=f"Adam.load_state_dict: .*{message}"):
        load_model(tmp_path / "edited.npz")


def test_the_docstring_examples_run():
    failures, tried = doctest.testmod(optim, extraglobs={"np": np, "Parameter": Parameter})[:2]
    assert tried >= 20 and failures == 0


def test_optimizers_by_name():
    assert isinstance(optim.get("adam", lr=0.1), optim.Adam)
    momentum = optim.get("momentum", lr=0.1)
    assert isinstance(momentum, optim.SGD) and momentum.momentum == 0.9 and momentum.lr == 0.1
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get("lbfgs")
