"""PyTorch interchange: ``to_torch`` gives a module computing what the model computes (outputs
and gradients, checked by PyTorch itself), ``from_torch`` a model computing what the module
computes, and a round trip gives back the same values bit for bit.

Agreement across the two frameworks is float32 rounding: within 1e-5 of the larger output
(at least 1); float64 networks within 1e-10.
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import npconvnet
from npconvnet import Sequential, layers, optim, rng, zoo
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Residual, Softmax, Tanh)
from synthetic import all_layers, bar_images, randomise

# PyTorch's own note on "same" padding with an even kernel, which the odd networks have on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

FLOAT32_TOLERANCE = 1e-5
FLOAT64_TOLERANCE = 1e-10


@pytest.fixture
def nn(torch):
    return torch.nn


@pytest.fixture
def interop(torch):
    """``npconvnet.torch_interop``, which imports torch (for its ``Residual`` module)."""
    from npconvnet import torch_interop
    return torch_interop


def assert_close(actual, expected, tolerance=FLOAT32_TOLERANCE):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


def run_torch(torch, module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def evaluated(model, x):
    model.eval()
    return model.forward(x)


def images(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(0.5, 0.5, shape).astype(dtype)


# ---------------------------------------------------------------------------- npconvnet -> PyTorch

@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_in_torch_predicts_what_forward_does(torch, name):
    model = randomise(zoo.get(name)).eval()
    module = npconvnet.to_torch(model)
    assert type(module) is torch.nn.Sequential and not module.training
    x = images((5, 1, 28, 28))
    assert_close(run_torch(torch, module, x), model.forward(x))


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_comes_back_from_torch_bit_for_bit(torch, name):
    model = randomise(zoo.get(name)).eval()
    back = npconvnet.from_torch(npconvnet.to_torch(model))
    assert type(back) is Sequential
    state, returned = model.state_dict(), back.state_dict()
    assert list(returned) == list(state)
    for key in state:
        assert returned[key].dtype == state[key].dtype and np.array_equal(returned[key], state[key]), key
    assert [type(layer) for _, layer in all_layers(back)] == [type(layer) for _, layer in all_layers(model)]
    x = images((5, 1, 28, 28))
    assert np.array_equal(evaluated(back, x), model.forward(x))


def test_a_float64_model_becomes_a_float64_module_and_comes_back_float64(torch):
    model = randomise(zoo.get("resnet-mini")).astype(np.float64).eval()
    module = npconvnet.to_torch(model)
    assert {p.dtype for p in module.parameters()} == {torch.float64}
    assert module[1].running_mean.dtype == torch.float64
    x = images((3, 1, 28, 28), dtype=np.float64)
    assert_close(run_torch(torch, module, x), model.forward(x), FLOAT64_TOLERANCE)
    back = npconvnet.from_torch(module)
    assert back.dtype == np.float64 and back.layers[1].running_var.dtype == np.float64
    assert np.array_equal(evaluated(back, x), model.forward(x))


def test_a_float32_model_becomes_a_float32_module(torch):
    module = npconvnet.to_torch(zoo.get("lenet5"))
    assert {p.dtype for p in module.parameters()} == {torch.float32}


def test_layer_settings_carry_over_to_the_torch_modules(nn):
    model = Sequential(Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
                       Conv2D(3, 3, 4, padding="same"), Conv2D(3, 3, 2, padding="full"),
                       Conv2D(3, 3, 3, padding=((1, 1), (2, 2))), Conv2D(3, 3, 1, padding="valid"),
                       BatchNorm2D(3, eps=1e-3, momentum=0.3), MaxPool2D(3, stride=2, padding=1),
                       AvgPool2D((2, 3), stride=1, padding=(1, 1)), LeakyReLU(0.25), Dropout(0.3))
    module = npconvnet.to_torch(model)
    conv = [module[index] for index in range(5)]
    assert (conv[0].kernel_size, conv[0].stride, conv[0].padding, conv[0].bias) == ((3, 2), (2, 1), (1, 0), None)
    assert [c.padding for c in conv[1:]] == ["same", (1, 1), (1, 2), "valid"]
    norm = module[5]
    assert (norm.eps, norm.momentum, norm.affine, norm.track_running_stats) == (1e-3, 0.3, True, True)
    assert int(norm.num_batches_tracked) == 0
    assert (module[6].kernel_size, module[6].stride, module[6].padding) == ((3, 3), (2, 2), (1, 1))
    assert (module[7].kernel_size, module[7].stride, module[7].padding, module[7].count_include_pad,
            module[7].ceil_mode) == ((2, 3), (1, 1), (1, 1), True, False)
    assert module[8].negative_slope == 0.25 and module[9].p == 0.3


def test_a_fused_activation_becomes_the_layer_then_the_activation_module(torch, nn):
    model = randomise(Sequential(Conv2D(1, 4, 3, activation="leaky_relu"), Flatten(),
                                 Dense(4 * 6 * 6, 5, activation="tanh"), Dense(5, 3, activation="softmax"))).eval()
    module = npconvnet.to_torch(model)
    assert [type(m) for m in module] == [nn.Conv2d, nn.LeakyReLU, nn.Flatten, nn.Linear, nn.Tanh,
                                         nn.Linear, nn.Softmax]
    assert module[1].negative_slope == 0.01 and module[6].dim == 1
    x = images((4, 1, 8, 8))
    assert_close(run_torch(torch, module, x), evaluated(model, x))
    back = npconvnet.from_torch(module)                 # the activations come back as layers of their own
    assert [type(layer) for layer in back] == [Conv2D, LeakyReLU, Flatten, Dense, Tanh, Dense, Softmax]
    assert np.array_equal(evaluated(back, x), model.forward(x))


def test_residual_blocks_become_the_interop_residual_module_with_npconvnet_names(torch, interop):
    block = layers.Sequential(Conv2D(4, 8, 3, stride=2, padding=1, bias=False), BatchNorm2D(8), ReLU(),
                              Conv2D(8, 8, 3, padding="same", activation="relu"))
    model = randomise(Sequential(Conv2D(1, 4, 3, padding=1), Residual(block, Conv2D(4, 8, 1, stride=2)),
                                 Residual(Conv2D(8, 8, 3, padding=1, activation="relu")), GlobalAvgPool2D(),
                                 Dense(8, 3))).eval()
    module = npconvnet.to_torch(model)
    assert type(module[1]) is interop.Residual and type(module[2]) is interop.Residual
    assert module[2].shortcut is None
    assert "1.block.0.weight" in module.state_dict() and "1.shortcut.weight" in module.state_dict()
    x = images((3, 1, 9, 9))
    assert_close(run_torch(torch, module, x), evaluated(model, x))
    assert np.array_equal(evaluated(npconvnet.from_torch(module), x), model.forward(x))


def test_to_torch_leaves_the_model_and_torch_generator_as_they_were(torch):
    model = zoo.get("vgg-mini").eval()
    state = model.state_dict()
    torch_state = torch.random.get_rng_state()
    npconvnet.to_torch(model)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(np.array_equal(value, model.state_dict()[key]) for key, value in state.items())
    assert not model.training


# ---------------------------------------------------------------------------- PyTorch -> npconvnet

def odd_torch_network(nn, interop):
    """Strides with padding, uneven kernels, "same" with an even kernel, overlapping padded
    pools, LeakyReLU, batch normalization with its own eps and momentum, a residual block,
    nested Sequentials, one ReLU module used twice."""
    relu = nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6, eps=1e-3, momentum=0.2), nn.LeakyReLU(0.2),
        nn.Sequential(nn.Conv2d(6, 8, (3, 2), stride=(1, 2), padding=(2, 0)), nn.Tanh(),
                      nn.Sequential(nn.Conv2d(8, 8, 4, padding="same", bias=False), relu)),
        nn.AvgPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, stride=1, padding=1),
        interop.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), relu)),
        nn.Conv2d(8, 4, 1, padding="valid"), nn.Sigmoid(),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 7 * 3, 16), nn.BatchNorm1d(16, momentum=0.05), nn.ReLU(),
        nn.Linear(16, 5), nn.Softmax(dim=1))


def trained_statistics(torch, module, shape, steps=3, dtype=np.float32):
    """``module`` after a few training-mode forward passes: running statistics away from 0
    and 1, and ``num_batches_tracked`` counting."""
    module.train()
    with torch.no_grad():
        for seed in range(steps):
            module(torch.from_numpy(images(shape, seed, dtype) * 3))
    return module.eval()


def test_a_torch_network_of_odd_settings_computes_the_same_in_npconvnet(torch, nn, interop):
    module = trained_statistics(torch, odd_torch_network(nn, interop), (8, 3, 19, 17))
    model = npconvnet.from_torch(module)
    x = images((4, 3, 19, 17), seed=7)
    assert_close(model.forward(x), run_torch(torch, module, x))


def test_running_statistics_eps_and_momentum_carry_over_as_they_are(torch, nn, interop):
    module = trained_statistics(torch, odd_torch_network(nn, interop), (8, 3, 19, 17))
    model = npconvnet.from_torch(module)
    norm, torch_norm = model.layers[1], module[1]
    assert type(norm) is BatchNorm2D and (norm.eps, norm.momentum) == (1e-3, 0.2)
    assert np.array_equal(norm.running_mean, torch_norm.running_mean.numpy())
    assert np.array_equal(norm.running_var, torch_norm.running_var.numpy())
    assert type(model.layers[12]) is BatchNorm1D and model.layers[12].momentum == 0.05


def test_the_momentum_conventions_agree_so_a_training_step_updates_both_alike(torch, nn):
    module = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3), nn.Flatten(), nn.BatchNorm1d(12, momentum=0.7))
    model = npconvnet.from_torch(module.eval())
    x = images((6, 3, 2, 2))
    module.train()
    model.train()
    model.forward(x)
    run_torch(torch, module, x)
    for layer, torch_layer in ((model.layers[0], module[0]), (model.layers[2], module[2])):
        assert_close(layer.running_mean, torch_layer.running_mean.numpy())
        assert_close(layer.running_var, torch_layer.running_var.numpy())


def test_batch_norm_without_affine_comes_in_as_weight_one_and_bias_zero(torch, nn):
    module = trained_statistics(torch, nn.Sequential(nn.BatchNorm2d(3, affine=False)), (5, 3, 4, 4))
    model = npconvnet.from_torch(module)
    assert np.array_equal(model.layers[0].weight.data, np.ones(3, np.float32))
    assert np.array_equal(model.layers[0].bias.data, np.zeros(3, np.float32))
    x = images((2, 3, 4, 4))
    assert_close(model.forward(x), run_torch(torch, module, x))


def test_a_torch_network_comes_back_from_npconvnet_with_the_same_values(torch, nn, interop):
    module = trained_statistics(torch, odd_torch_network(nn, interop), (8, 3, 19, 17))
    again = npconvnet.to_torch(npconvnet.from_torch(module))
    original, returned = module.state_dict(), again.state_dict()
    assert [key for key in returned if "num_batches_tracked" not in key] == \
           [key for key in original if "num_batches_tracked" not in key]
    for key, value in original.items():
        if "num_batches_tracked" not in key:
            assert torch.equal(returned[key], value), key
    x = images((4, 3, 19, 17), seed=7)
    assert np.array_equal(run_torch(torch, again, x), run_torch(torch, module, x))


def test_global_average_pooling_is_adaptive_pooling_to_one_then_flatten(torch, nn):
    module = nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(4, 3))
    model = npconvnet.from_torch(module)
    assert [type(layer) for layer in model] == [Conv2D, GlobalAvgPool2D, Dense]
    x = images((3, 2, 7, 6))
    assert_close(model.forward(x), run_torch(torch, module, x))


def test_a_float64_module_becomes_a_float64_model(torch, nn):
    module = trained_statistics(torch, nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(),
                                                     nn.Linear(3 * 4 * 4, 2)).double(), (4, 1, 6, 6),
                                dtype=np.float64)
    model = npconvnet.from_torch(module)
    assert model.dtype == np.float64 and model.layers[1].running_mean.dtype == np.float64
    x = images((3, 1, 6, 6), dtype=np.float64)
    assert_close(model.forward(x), run_torch(torch, module, x), FLOAT64_TOLERANCE)


def test_each_layer_keeps_the_mode_of_its_module(torch, nn, interop):
    module = odd_torch_network(nn, interop).eval()
    model = npconvnet.from_torch(module)
    assert not model.training and not any(layer.training for _, layer in all_layers(model))
    module.train()
    module[1].eval()                                  # frozen batch statistics, as in fine-tuning
    model = npconvnet.from_torch(module)
    assert model.training and not model.layers[1].training
    assert all(layer.training for _, layer in all_layers(model) if layer is not model.layers[1])
    again = npconvnet.to_torch(model)
    assert again.training and not again[1].training
    assert all(m.training for m in again.modules() if m is not again[1])


def test_from_torch_leaves_the_module_and_the_global_generator_as_they_were(torch, nn, interop):
    module = trained_statistics(torch, odd_torch_network(nn, interop), (8, 3, 19, 17))
    state = {key: value.clone() for key, value in module.state_dict().items()}
    generator = rng.get_state()
    model = npconvnet.from_torch(module)
    assert rng.get_state() == generator
    assert all(torch.equal(value, module.state_dict()[key]) for key, value in state.items())
    model.layers[0].weight.data[...] = 0              # copies: the module's tensors stay
    assert torch.equal(module[0].weight, state["0.weight"])


def test_a_converted_model_trains_one_fit_step_as_torch_takes_the_sgd_step(torch, nn):
    pixels, labels = bar_images(16)
    x = (pixels[:, None] / 255).astype(np.float32)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    model = npconvnet.from_torch(module)
    model.compile(optimizer=optim.SGD(lr=0.1), loss="cross_entropy", metrics=[])
    history = model.fit(x, labels, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    loss = torch.nn.functional.cross_entropy(module.train()(torch.from_numpy(x)), torch.from_numpy(labels))
    loss.backward()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter -= 0.1 * parameter.grad
    assert_close(history.history["loss"][0], loss.item())
    for parameter, torch_parameter in zip(model.parameters(), module.parameters()):
        assert_close(parameter.data, torch_parameter.detach().numpy())
    assert_close(model.layers[1].running_var, module[1].running_var.numpy())


GRADIENT_MODELS = {
    "resnet-mini": (lambda: zoo.get("resnet-mini"), (4, 1, 28, 28)),
    "fused activations": (lambda: Sequential(Conv2D(2, 4, 3, stride=2, padding=1, activation="leaky_relu"),
                                             BatchNorm2D(4), AvgPool2D(2), Flatten(),
                                             Dense(4 * 4 * 4, 6, activation="tanh"), BatchNorm1D(6),
                                             Dense(6, 3, activation="sigmoid")), (5, 2, 15, 15)),
}


@pytest.mark.parametrize("name", GRADIENT_MODELS)
def test_gradients_agree_with_torch_autograd_on_the_converted_module(torch, name):
    build, shape = GRADIENT_MODELS[name]
    model = randomise(build()).astype(np.float64).train()       # batch statistics: the harder backward
    module = npconvnet.to_torch(model)
    generator = np.random.default_rng(3)
    x = generator.normal(size=shape)
    out = model.forward(x)
    grad_output = generator.normal(size=out.shape)
    grad_input = model.backward(grad_output)

    x_torch = torch.tensor(x, requires_grad=True)
    out_torch = module(x_torch)
    out_torch.backward(torch.from_numpy(grad_output))

    assert_close(out, out_torch.detach().numpy(), FLOAT64_TOLERANCE)
    assert_close(grad_input, x_torch.grad.numpy(), FLOAT64_TOLERANCE)
    parameters, torch_parameters = model.parameters(), list(module.parameters())
    assert len(parameters) == len(torch_parameters)
    for parameter, torch_parameter in zip(parameters, torch_parameters):
        assert_close(parameter.grad, torch_parameter.grad.numpy(), FLOAT64_TOLERANCE)


# ---------------------------------------------------------------------------- what is refused

UNSUPPORTED_MODULES = {      # each: a function of torch.nn building the network, and the error it gets
    "grouped convolution": (
        lambda nn: nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)),
        r"layer 0 \(Conv2d\) has groups=2: npconvnet's Conv2D convolves every input channel"),
    "dilated convolution": (
        lambda nn: nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, dilation=2)),
        r"layer 1 \(Conv2d\) has dilation=\(2, 2\)"),
    "reflection padding": (
        lambda nn: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")),
        r"layer 0 \(Conv2d\) has padding_mode='reflect': npconvnet pads with zeros only"),
    "GELU in a nested Sequential": (
        lambda nn: nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.GELU())),
        r"layer 1\.1 \(GELU\) has no npconvnet counterpart; supported \(matched by exact class\): "
        r"nn\.AdaptiveAvgPool2d\(1\) \+ nn\.Flatten\(\), nn\.AvgPool2d, .*nn\.Conv2d, .*nn\.Linear, .*"
        r"npconvnet\.torch_interop\.Residual"),
    "Dropout2d": (
        lambda nn: nn.Sequential(nn.Dropout2d(0.2)),
        r"layer 0 \(Dropout2d\) has no npconvnet counterpart"),
    "a subclass of Conv2d": (
        lambda nn: nn.Sequential(type("MyConv", (nn.Conv2d,), {})(1, 2, 3)),
        r"layer 0 \(MyConv\) has no npconvnet counterpart"),
    "average pool not counting the padding": (
        lambda nn: nn.Sequential(nn.AvgPool2d(3, padding=1, count_include_pad=False)),
        r"layer 0 \(AvgPool2d\) has count_include_pad=False with padding: npconvnet counts the zero padding"),
    "ceil_mode": (
        lambda nn: nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)),
        r"layer 0 \(MaxPool2d\) has ceil_mode=True: npconvnet drops the windows"),
    "pool dilation": (
        lambda nn: nn.Sequential(nn.MaxPool2d(3, dilation=2)),
        r"layer 0 \(MaxPool2d\) has dilation=2"),
    "divisor_override": (
        lambda nn: nn.Sequential(nn.AvgPool2d(2, divisor_override=3)),
        r"layer 0 \(AvgPool2d\) has divisor_override=3"),
    "pool padding over half the kernel": (
        lambda nn: nn.Sequential(nn.MaxPool2d(2, padding=2)),
        r"layer 0 \(MaxPool2d\): .*padding must be between 0 and half"),
    "adaptive pooling to 2x2": (
        lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
        r"layer 0 \(AdaptiveAvgPool2d\) has output_size=2: npconvnet has global average pooling"),
    "adaptive pooling without flatten": (
        lambda nn: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)),
        r"layer 1 \(AdaptiveAvgPool2d\) must be followed by nn\.Flatten\(\)"),
    "batch statistics in evaluation": (
        lambda nn: nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)),
        r"layer 0 \(BatchNorm2d\) has track_running_stats=False: it normalises with the batch's statistics"),
    "cumulative average": (
        lambda nn: nn.Sequential(nn.BatchNorm1d(3, momentum=None)),
        r"layer 0 \(BatchNorm1d\) has momentum=None: PyTorch's cumulative average"),
    "softmax over the last axis": (
        lambda nn: nn.Sequential(nn.Softmax(dim=-1)),
        r"layer 0 \(Softmax\) has dim=-1: npconvnet's Softmax runs over axis 1"),
    "partial flatten": (
        lambda nn: nn.Sequential(nn.Flatten(start_dim=2)),
        r"layer 0 \(Flatten\) has start_dim=2, end_dim=-1"),
    "shared weights": (
        lambda nn: (lambda linear: nn.Sequential(linear, nn.ReLU(), linear))(nn.Linear(3, 3)),
        r"2\.weight is the same tensor as 0\.weight \(shared weights"),
    "mixed dtypes": (
        lambda nn: nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()),
        r"the parameters and buffers must be all float32 or all float64 .*got 0\.weight torch\.float32, "
        r"1\.weight torch\.float64$"),
    "bfloat16": (
        lambda nn: nn.Sequential(nn.Linear(2, 2)).bfloat16(),
        r"the parameters and buffers must be all float32 or all float64 .*got 0\.weight torch\.bfloat16$"),
}


@pytest.mark.parametrize("case", UNSUPPORTED_MODULES)
def test_an_unsupported_torch_module_is_refused_naming_it_and_its_place(nn, case):
    build, message = UNSUPPORTED_MODULES[case]
    with pytest.raises(ValueError, match="^from_torch: " + message):
        npconvnet.from_torch(build(nn))


def test_a_residual_branch_is_named_in_the_error(nn, interop):
    module = nn.Sequential(nn.ReLU(), interop.Residual(nn.Sequential(nn.Conv2d(2, 2, 1), nn.GELU())))
    with pytest.raises(ValueError, match=r"layer 1\.block\.1 \(GELU\)"):
        npconvnet.from_torch(module)


def test_a_module_with_forward_hooks_is_refused(nn):
    module = nn.Sequential(nn.Linear(2, 2))
    module[0].register_forward_hook(lambda layer, inputs, output: output * 2)
    with pytest.raises(ValueError, match=r"layer 0 \(Linear\) has forward hooks"):
        npconvnet.from_torch(module)


def test_a_module_other_than_a_sequential_is_refused(nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            return self.linear(x) * 2

    with pytest.raises(TypeError, match=r"^from_torch: expected a torch\.nn\.Sequential, got Net: a module "
                                        r"with a forward of its own"):
        npconvnet.from_torch(Net())


class Doubled(ReLU):
    def forward(self, x):
        return 2 * super().forward(x)


UNSUPPORTED_LAYERS = {
    "a layer of its own": (lambda: Sequential(Dense(2, 2), layers.Sequential(Doubled())),
                           r"layer 1\.0 \(Doubled\) has no PyTorch module here: only npconvnet's own layers "
                           r"convert, matched by exact class \(AvgPool2D, BatchNorm1D"),
    "same padding with a stride": (lambda: Sequential(Conv2D(1, 2, 3, stride=2, padding="same")),
                                   r"layer 0 \(Conv2D\) has padding='same' with stride \(2, 2\): nn\.Conv2d takes "
                                   r"'same' at stride 1 only"),
    "padding unequal on two sides": (lambda: Sequential(Conv2D(1, 2, 3, padding=((0, 1), (1, 1)))),
                                     r"layer 0 \(Conv2D\) has padding \(\(0, 1\), \(1, 1\)\), unequal"),
    "mixed dtypes": (lambda: Sequential(Dense(2, 2), Dense(2, 2).astype(np.float64)),
                     r"the parameters and buffers must be all float32 or all float64 \(model\.astype converts them\), "
                     r"got 0\.weight float32, 1\.weight float64$"),
}


@pytest.mark.parametrize("case", UNSUPPORTED_LAYERS)
def test_a_layer_torch_has_no_module_for_is_refused_naming_it_and_its_place(torch, case):
    build, message = UNSUPPORTED_LAYERS[case]
    with pytest.raises(ValueError, match="^to_torch: " + message):
        npconvnet.to_torch(build())


def test_to_torch_takes_a_sequential_only(torch):
    with pytest.raises(TypeError, match=r"^to_torch: expected an npconvnet Sequential, got Dense"):
        npconvnet.to_torch(Dense(2, 2))


def test_missing_torch_package_names_the_extra_to_install(monkeypatch):
    # As in a fresh process: the interop module not imported yet, and no torch to import.
    monkeypatch.delitem(sys.modules, "npconvnet.torch_interop", raising=False)
    monkeypatch.delattr(npconvnet, "torch_interop", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)        # what a missing package looks like to import
    with pytest.raises(ImportError, match=r'^to_torch needs the torch package: pip install "npconvnet\[torch\]"'):
        npconvnet.to_torch(zoo.get("tiny"))
    with pytest.raises(ImportError, match=r'^from_torch needs the torch package'):
        npconvnet.from_torch(object())


def test_the_readme_example_runs(torch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### PyTorch interchange", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    exec(compile(code, "README.md (PyTorch interchange)", "exec"), {})
