import numpy as np
import pytest

import npconvnet
from gradcheck import check_layer_gradients
from npconvnet.layers import base, containers
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Tanh)
from npconvnet import Sequential


def small_network():
    return Sequential([
        Conv2D(2, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2),
        Residual(Sequential(Conv2D(4, 4, 3, padding="same"), Tanh())),
        Residual(Sequential(Conv2D(4, 6, 3, stride=2, padding=1)), shortcut=Conv2D(4, 6, 1, stride=2)),
        AvgPool2D(2, 1), Flatten(), Dense(6, 5), LeakyReLU(), Dropout(0.3), Dense(5, 3),
    ])


def test_sequential_gradients_match_finite_differences(rng):
    check_layer_gradients(small_network(), rng.standard_normal((3, 2, 8, 8)))


def test_residual_gradients_match_finite_differences(rng):
    block = Residual(Sequential(Conv2D(2, 2, 3, padding=1), Sigmoid()))
    check_layer_gradients(block, rng.standard_normal((2, 2, 5, 5)))


def test_residual_with_projection_shortcut_gradients(rng):
    block = Residual(Conv2D(2, 3, 3, stride=2, padding=1), shortcut=Conv2D(2, 3, 1, stride=2))
    check_layer_gradients(block, rng.standard_normal((2, 2, 5, 5)))


def test_residual_refuses_mismatched_branches():
    with pytest.raises(ValueError, match="projection shortcut"):
        Residual(Conv2D(2, 3, 3, padding=1)).forward(np.zeros((1, 2, 4, 4), np.float32))


def to_torch(torch, network):
    """The same architecture in PyTorch, built by hand (nn names mirror ours)."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block, shortcut=None):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same"), nn.Tanh())),
        Residual(nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1)), shortcut=nn.Conv2d(4, 6, 1, stride=2)),
        nn.AvgPool2d(2, 1), nn.Flatten(), nn.Linear(6, 5), nn.LeakyReLU(), nn.Dropout(0.3), nn.Linear(5, 3),
    ).double()


@pytest.mark.parametrize("training", [True, False])
def test_whole_network_matches_pytorch_with_the_same_weights(training, rng, torch):
    network = small_network().astype(np.float64)
    reference = to_torch(torch, network)
    reference.load_state_dict({name: torch.tensor(value) for name, value in network.state_dict().items()},
                              strict=False)
    if training:     # dropout masks differ between libraries: compare with dropout off
        network[10].p, reference[10].p = 0.0, 0.0
    network.train(training), reference.train(training)
    assert_matches_pytorch(network, reference, rng.standard_normal((4, 2, 8, 8)), rng, torch, rtol=1e-8)


def assert_matches_pytorch(network, reference, x, rng, torch, rtol):
    """The network's output, input gradient and parameter gradients are PyTorch's, for one
    random upstream gradient (float64; the outputs to rtol / 10)."""
    out = network.forward(x)
    upstream = rng.standard_normal(out.shape)
    grad_input = network.backward(upstream)
    x_torch = torch.tensor(x, requires_grad=True)
    expected = reference(x_torch)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol / 10, atol=1e-12)
    np.testing.assert_allclose(grad_input, x_torch.grad.numpy(), rtol=rtol, atol=1e-12)
    torch_parameters = dict(reference.named_parameters())
    for name, parameter in network.named_parameters():
        np.testing.assert_allclose(parameter.grad, torch_parameters[name].grad.numpy(), rtol=rtol,
                                   atol=1e-12, err_msg=name)


def test_parameters_are_in_layer_order_with_pytorch_names():
    names = [name for name, _ in Sequential(Conv2D(1, 2, 3), ReLU(), Dense(4, 2)).named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_train_and_eval_reach_every_nested_layer():
    network = small_network().eval()
    assert not network[4].block[0].training and not network[10].training
    network.train()
    assert network[5].shortcut.training


def test_sequential_accepts_a_list_or_layers():
    assert len(Sequential([ReLU(), Tanh()])) == len(Sequential(ReLU(), Tanh())) == 2


def test_sequential_refuses_non_layers():
    with pytest.raises(TypeError, match="position 1"):
        Sequential(ReLU(), "relu")


def test_sequential_error_names_the_failing_layer():
    network = Sequential(Conv2D(1, 2, 3), Flatten(), Dense(5, 2))
    with pytest.raises(ValueError, match="layer 2 of the Sequential: Dense"):
        network.forward(np.zeros((1, 1, 5, 5), np.float32))


def test_summary_lists_output_shapes_and_parameter_counts():
    network = Sequential(Conv2D(1, 8, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(1352, 10))
    text = network.summary((1, 28, 28), print_fn=None)
    assert "(None, 8, 26, 26)" in text and "(None, 8, 13, 13)" in text and "(None, 1352)" in text
    assert "13,530" in text and "Total params: 13,610" in text


def test_auto_initialisation_is_he_for_a_relu_activation_and_glorot_otherwise():
    npconvnet.manual_seed(0)
    he_std = np.sqrt(2 / (16 * 9))
    assert abs(Conv2D(16, 64, 3, activation="relu").weight.data.std() / he_std - 1) < 0.05
    glorot_limit = np.sqrt(6 / (4096 + 512))
    weight = Dense(4096, 512).weight.data
    assert np.abs(weight).max() <= glorot_limit
    assert abs(weight.std() / (glorot_limit / np.sqrt(3)) - 1) < 0.05


def layers_with_set_weights():
    """One layer of every kind that holds arrays, each array set to a recognisable value."""
    made = [Conv2D(2, 3, 3, padding=1), BatchNorm2D(3), Dense(4, 3), BatchNorm1D(3),
            Conv2D(3, 3, 1, activation="relu"), Dense(3, 3, activation="softmax")]
    for index, layer in enumerate(made):
        for name, parameter in layer.named_parameters():
            parameter.data[...] = np.arange(parameter.data.size).reshape(parameter.data.shape) / 7 + index
        for name in layer.buffer_names:
            getattr(layer, name)[...] = index + 0.5
    return made


@pytest.mark.parametrize("wrap", [
    lambda layers: Sequential(*layers),
    lambda layers: npconvnet.layers.Sequential(layers),
    lambda layers: Sequential(*(Residual(npconvnet.layers.Sequential(layer)) for layer in layers)),
    lambda layers: Sequential(Residual(layers[0], shortcut=npconvnet.layers.Sequential(layers[1:]))),
    lambda layers: Sequential(npconvnet.layers.Sequential(npconvnet.layers.Sequential(layers[:3]), *layers[3:])),
], ids=["model", "container", "residual-blocks", "residual-shortcut", "nested"])
def test_containers_never_change_the_weights_they_are_given(wrap):
    given = layers_with_set_weights()
    before = [layer.state_dict() for layer in given]
    wrap(given)
    for layer, state in zip(given, before):
        for name, value in layer.state_dict().items():
            np.testing.assert_array_equal(value, state[name], err_msg=f"{layer!r} {name}")


def test_a_network_of_layers_holding_pytorch_weights_matches_pytorch(rng, torch):
    nn = torch.nn
    reference = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                              nn.Linear(4 * 5 * 5, 3)).double()
    with torch.no_grad():
        reference[1].running_mean.uniform_(-1, 1), reference[1].running_var.uniform_(0.5, 2)
    layers = [Conv2D(2, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Flatten(), Dense(100, 3)]
    for layer, module in zip(layers, reference):
        layer.astype(np.float64)
        layer.load_state_dict({name: value.detach().numpy() for name, value in module.state_dict().items()},
                              strict=False)
    network = Sequential(*layers).eval()
    reference.eval()
    assert_matches_pytorch(network, reference, rng.standard_normal((3, 2, 5, 5)), rng, torch, rtol=1e-9)


def test_the_layer_container_points_to_the_model_for_training():
    with pytest.raises(AttributeError, match="npconvnet.Sequential"):
        npconvnet.layers.Sequential(Dense(2, 2)).fit


def test_manual_seed_makes_weights_repeatable():
    npconvnet.manual_seed(7)
    first = small_network().state_dict()
    npconvnet.manual_seed(7)
    second = small_network().state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_state_dict_round_trip_and_shape_check():
    network, copy = small_network(), small_network()
    copy.load_state_dict(network.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    network.eval(), copy.eval()
    np.testing.assert_array_equal(network.forward(x), copy.forward(x))
    state = network.state_dict()
    state["0.weight"] = state["0.weight"][:1]
    with pytest.raises(ValueError, match="0.weight has shape"):
        copy.load_state_dict(state)


def test_global_average_pooling_network_gradients(rng):
    network = Sequential(Conv2D(1, 3, 3), ReLU(), GlobalAvgPool2D(), BatchNorm1D(3), Dense(3, 2))
    check_layer_gradients(network, rng.standard_normal((4, 1, 5, 5)))


def test_a_failed_load_state_dict_leaves_every_weight_as_it_was():
    network = Sequential(Dense(3, 4), ReLU(), Dense(4, 2))
    before = network.state_dict()
    state = {name: value + 1 for name, value in before.items()}
    state["2.weight"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="2.weight has shape"):
        network.load_state_dict(state)
    for name, value in network.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("first_layer", [
    Conv2D(2, 3, 3, padding=1),                       # transposed-convolution input gradient
    Conv2D(2, 4, 3, stride=2, padding=1),             # col2im input gradient
    Sequential(Conv2D(2, 3, 3, padding=1), ReLU()),   # a nested Sequential skips it too
    ReLU(),                                           # cannot skip: computes it and drops it
])
def test_backward_without_input_grad_returns_none_and_the_same_parameter_gradients(first_layer, rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    features = int(np.prod(Sequential(first_layer).output_shape((2, 6, 6))))
    network = Sequential(first_layer, Flatten(), Dense(features, 3))
    grad_output = rng.standard_normal((2, 3)).astype(np.float32)
    network.forward(x)
    network.backward(grad_output)
    expected = [p.grad.copy() for p in network.parameters()]
    network.forward(x)
    assert network.backward(grad_output, input_grad=False) is None
    for parameter, gradient in zip(network.parameters(), expected):
        np.testing.assert_array_equal(parameter.grad, gradient)


@pytest.mark.parametrize("layer, shape", [(Conv2D(2, 3, 3), (2, 2, 5, 5)), (Dense(4, 3), (2, 4))])
def test_a_parameter_layer_skips_its_input_gradient_on_request(layer, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    output = layer.forward(x)
    assert layer.backward(np.ones_like(output), input_grad=False) is None
    assert np.abs(layer.weight.grad).sum() > 0 and layer.bias.grad.shape == (3,)


def batch_sizes_seen(layer):
    """Wrap ``layer.forward`` so that it records the batch size of every call."""
    sizes, forward = [], layer.forward
    layer.forward = lambda x: (sizes.append(len(x)), forward(x))[1]
    return sizes


class _Identity(npconvnet.layers.Layer):
    def forward(self, x):
        self._remember(x)
        return x

    def backward(self, grad_output):
        self._recall(grad_output)
        return grad_output


class _SamplewiseIdentity(_Identity):
    samplewise = True


def test_evaluation_runs_a_large_batch_in_chunks_with_the_same_output(rng, monkeypatch):
    network = small_network().astype(np.float64).eval()
    x = rng.standard_normal((10, 2, 8, 8))
    whole = network.forward(x)
    monkeypatch.setattr(containers, "EVAL_CHUNK", 4)
    sizes = batch_sizes_seen(network[0])
    np.testing.assert_allclose(network.forward(x), whole, rtol=1e-12, atol=1e-12)
    assert sorted(sizes) == [2, 4, 4]          # the threads may take their chunks in any order


def test_backward_after_an_evaluation_in_chunks_gives_the_gradients_of_the_whole_batch(rng, monkeypatch):
    network = small_network().astype(np.float64).eval()
    x = rng.standard_normal((10, 2, 8, 8))
    upstream = rng.standard_normal((10, 3))
    network.forward(x)
    expected_input = network.backward(upstream)
    expected = [p.grad.copy() for p in network.parameters()]
    monkeypatch.setattr(containers, "EVAL_CHUNK", 4)
    network.forward(x)
    np.testing.assert_allclose(network.backward(upstream), expected_input, rtol=1e-12, atol=1e-12)
    for parameter, grad in zip(network.parameters(), expected):
        np.testing.assert_allclose(parameter.grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer,chunked", [(_Identity(), False), (_SamplewiseIdentity(), True)],
                         ids=["custom layer", "custom samplewise layer"])
def test_a_custom_layer_is_evaluated_in_chunks_only_when_its_class_says_it_is_samplewise(layer, chunked, monkeypatch):
    monkeypatch.setattr(containers, "EVAL_CHUNK", 4)
    network = Sequential(Dense(3, 2), Sequential(layer)).eval()
    sizes = batch_sizes_seen(network[0])
    network.forward(np.zeros((10, 3), np.float32))
    assert sizes == ([4, 4, 2] if chunked else [10])


@pytest.mark.parametrize("mode", ["training", "evaluation with one layer in training"])
def test_a_batch_is_never_cut_into_chunks_in_training_mode(mode, monkeypatch):
    monkeypatch.setattr(containers, "EVAL_CHUNK", 4)
    network = Sequential(Dense(3, 2), BatchNorm1D(2))
    if mode != "training":
        network.eval()
        network[1].train()
    sizes = batch_sizes_seen(network[0])
    network.forward(np.ones((10, 3), np.float32))
    assert sizes == [10]


def train_small_network(batch_sizes, rng):
    """Parameters and input gradients after one SGD step per batch size (dropout seeded)."""
    npconvnet.manual_seed(0)
    network = small_network().astype(np.float64)
    grads = []
    for size in batch_sizes:
        x = rng.standard_normal((size, 2, 8, 8))
        out = network.forward(x)
        grads.append(network.backward(np.cos(out)))
        for parameter in network.parameters():
            parameter.data -= 0.1 * parameter.grad
    return [p.data for p in network.parameters()], grads


def test_arrays_kept_from_call_to_call_give_the_same_training_as_fresh_ones(monkeypatch):
    batch_sizes = [3, 3, 2, 3]                        # a new shape in between: new arrays, then back
    monkeypatch.setattr(base, "WORKSPACE_BYTES", 2**62)
    fresh = train_small_network(batch_sizes, np.random.default_rng(1))
    monkeypatch.setattr(base, "WORKSPACE_BYTES", 0)
    kept = train_small_network(batch_sizes, np.random.default_rng(1))
    for expected, actual in zip(fresh[0] + fresh[1], kept[0] + kept[1]):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("layer", [Conv2D(2, 2, 3, padding=1), BatchNorm2D(2), ReLU(), MaxPool2D(2), Dropout(0.5)],
                         ids=lambda layer: type(layer).__name__)
def test_what_a_layer_returns_is_never_written_over_by_its_next_calls(layer, rng, monkeypatch):
    monkeypatch.setattr(base, "WORKSPACE_BYTES", 0)
    first = rng.standard_normal((2, 2, 4, 4))
    out = layer.forward(first)
    grad = layer.backward(np.ones_like(out))
    kept = out.copy(), grad.copy()
    for _ in range(2):
        layer.forward(rng.standard_normal(first.shape))
        layer.backward(rng.standard_normal(out.shape))
    np.testing.assert_array_equal(out, kept[0])
    np.testing.assert_array_equal(grad, kept[1])


def test_backward_after_switching_a_chunked_evaluation_to_training_mode_is_refused(rng, monkeypatch):
    monkeypatch.setattr(containers, "EVAL_CHUNK", 4)
    network = small_network().eval()
    out = network.forward(rng.standard_normal((10, 2, 8, 8)).astype(np.float32))
    network.train()
    with pytest.raises(RuntimeError, match="call forward again"):
        network.backward(np.ones_like(out))


def test_load_state_dict_strict_false_loads_what_matches_and_reports_the_rest():
    network = Sequential(Conv2D(1, 2, 3), BatchNorm2D(2))
    state = {name: value + 1 for name, value in network.state_dict().items()}
    del state["1.bias"]
    state["1.num_batches_tracked"] = np.array(7)
    result = network.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.bias"] and result.unexpected_keys == ["1.num_batches_tracked"]
    np.testing.assert_array_equal(network[1].running_var, state["1.running_var"])


def test_load_state_dict_is_strict_by_default():
    network = Sequential(Dense(2, 2))
    with pytest.raises(ValueError, match=r"unexpected \['extra'\].*strict=False"):
        network.load_state_dict({**network.state_dict(), "extra": np.zeros(1)})


def test_summary_refuses_an_input_the_model_cannot_take():
    network = Sequential(Conv2D(5, 2, 3), ReLU(), MaxPool2D(2))
    with pytest.raises(ValueError, match=r"summary: layer 0 \(Conv2D\) cannot take samples of shape \(5, 1, 1\)"):
        network.summary((5, 1, 1), print_fn=None)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, "not a dtype"])
def test_astype_refuses_a_dtype_that_is_not_floating_point(dtype):
    with pytest.raises(TypeError, match="floating-point dtype|expects a NumPy dtype"):
        Sequential(Dense(2, 2)).astype(dtype)


def test_an_error_whose_class_takes_other_arguments_still_says_which_layer_raised_it():
    class Refusing(base.Layer):
        def forward(self, x):
            np.add(x, 1.5, out=np.zeros(2, np.int64))          # NumPy's casting error: not a one-argument class

    with pytest.raises(TypeError) as raised:
        Sequential(ReLU(), Refusing()).forward(np.zeros(2))
    assert "in layer 1 of the Sequential" in raised.value.__notes__
