"""Saliency and Grad-CAM: hand computations, PyTorch autograd, finite differences, a trained
model that looks where the evidence is, and a model left exactly as it was."""

import numpy as np
import pytest

import npconvnet
from npconvnet import cli, explain, optim, plots
from npconvnet.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                              Residual, Sequential, Softmax)

from gradcheck import numerical_gradient


def hand_set_gap_model():
    """Conv2D(1 -> 2, 3x3, "same", ReLU) -> GlobalAvgPool2D -> Dense(2 -> 3), weights set by hand."""
    model = npconvnet.Sequential(Conv2D(1, 2, 3, padding="same", activation="relu"), GlobalAvgPool2D(),
                                 Dense(2, 3))
    model.layers[0].weight.data[...] = np.array([[[[0, 0, 0], [0, 1, 0], [0, 0, 0]]],         # the pixel
                                                 [[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]])       # a Laplacian
    model.layers[0].bias.data[...] = [0.0, 0.1]
    model.layers[2].weight.data[...] = [[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]]
    model.layers[2].bias.data[...] = [0.1, 0.2, 0.3]
    return model.astype(np.float64)


def conv3x3_same(image, kernel, bias):
    """A 3x3 cross-correlation with zero padding of 1, by loops."""
    padded = np.pad(image, 1)
    out = np.empty_like(image)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = (padded[i:i + 3, j:j + 3] * kernel).sum() + bias
    return out


# ---------------------------------------------------------------------------- hand computations

def test_grad_cam_of_a_conv_gap_dense_net_is_relu_of_the_dense_weighted_feature_maps():
    # S_c = b_c + sum_k W[c, k] mean(A_k), so dS_c/dA_k = W[c, k] / (H W) everywhere: alpha_k is that,
    # and the map is ReLU(sum_k W[c, k] A_k / (H W)), at the input's size already ("same").
    model = hand_set_gap_model()
    image = np.random.default_rng(0).uniform(0, 1, (6, 5))
    conv = model.layers[0]
    maps = [np.maximum(conv3x3_same(image, conv.weight.data[k, 0], conv.bias.data[k]), 0) for k in range(2)]
    weight = model.layers[2].weight.data
    for target in range(3):
        expected = np.maximum(sum(weight[target, k] / image.size * maps[k] for k in range(2)), 0)
        np.testing.assert_allclose(explain.grad_cam(model, image, target), expected, rtol=1e-12, atol=1e-15)


def test_grad_cam_upsamples_bilinearly_with_half_pixel_centres():
    # A 2x2, stride-2 mean filter on 4x4 makes a 2x2 map; to 4x4, output pixel i reads the map at
    # (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped: rows [a, 3a/4 + b/4, a/4 + 3b/4, b].
    model = npconvnet.Sequential(Conv2D(1, 1, 2, stride=2, bias=False, activation="relu"), GlobalAvgPool2D(),
                                 Dense(1, 2, bias=False)).astype(np.float64)
    model.layers[0].weight.data[...] = 0.25
    model.layers[2].weight.data[...] = [[2.0], [-1.0]]
    image = np.random.default_rng(1).uniform(0, 1, (4, 4))
    coarse = 2.0 / 4 * image.reshape(2, 2, 2, 2).mean(axis=(1, 3))          # alpha = 2 / 4, A = block means
    blend = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_allclose(explain.grad_cam(model, image, 0), blend @ coarse @ blend.T, rtol=1e-12)
    np.testing.assert_array_equal(explain.grad_cam(model, image, 1), np.zeros((4, 4)))   # alpha < 0: ReLU


def test_saliency_map_is_the_largest_absolute_gradient_over_the_channels():
    model = npconvnet.Sequential(Conv2D(3, 4, 3, padding=1, activation="relu"), Flatten(), Dense(4 * 5 * 5, 3))
    x = np.random.default_rng(2).uniform(0, 1, (2, 3, 5, 5)).astype(np.float32)
    gradient = explain.saliency(model, x, target=[0, 2])
    np.testing.assert_array_equal(explain.saliency_map(model, x, target=[0, 2]), np.abs(gradient).max(axis=1))


# ---------------------------------------------------------------------------- PyTorch and finite differences

def mixed_model():
    """Convolutions, batch normalization with running statistics, a residual block, max pooling,
    dropout and a final softmax: every kind of layer the explanations pass through."""
    model = npconvnet.Sequential(
        Conv2D(2, 4, 3, padding=1), BatchNorm2D(4), ReLU(),
        Residual(Sequential(Conv2D(4, 4, 3, padding=1, activation="relu"), Conv2D(4, 4, 3, padding=1))),
        MaxPool2D(2), Conv2D(4, 6, 3, padding=1, activation="relu"), Dropout(0.5), Flatten(),
        Dense(6 * 4 * 4, 5, activation="softmax"))
    generator = np.random.default_rng(3)
    batch_norm = model.layers[1]
    batch_norm.running_mean[...] = generator.normal(0, 0.3, 4)
    batch_norm.running_var[...] = generator.uniform(0.5, 2, 4)
    batch_norm.weight.data[...] = generator.uniform(0.5, 1.5, 4)
    batch_norm.bias.data[...] = generator.normal(0, 0.2, 4)
    model.input_shape = (2, 8, 8)
    return model


def torch_copy(torch, model):
    """The same network in PyTorch with the weights copied, in evaluation mode, without its
    softmax: it outputs the class scores."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(x) + x

    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))),
        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5)).double()
    # npconvnet's fused activations take no place of their own: its 3.block.1 is torch's 3.block.2.
    renamed = {"3.block.1.weight": "3.block.2.weight", "3.block.1.bias": "3.block.2.bias",
               "8.weight": "9.weight", "8.bias": "9.bias"}
    state = {renamed.get(name, name): torch.tensor(np.asarray(value, np.float64))
             for name, value in model.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert unexpected == [] and all(name.endswith("num_batches_tracked") for name in missing)
    return net.eval()


def test_saliency_is_the_gradient_of_the_logit_that_pytorch_autograd_computes(torch):
    model = mixed_model().astype(np.float64)
    net = torch_copy(torch, model)
    x = np.random.default_rng(4).uniform(0, 1, (3, 2, 8, 8))
    target = np.array([1, 4, 0])
    inputs = torch.tensor(x, requires_grad=True)
    net(inputs)[torch.arange(3), torch.tensor(target)].sum().backward()
    np.testing.assert_allclose(explain.saliency(model, x, target), inputs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_grad_cam_feature_maps_gradients_and_map_match_pytorch_autograd(torch):
    model = mixed_model().astype(np.float64)
    net = torch_copy(torch, model)
    x = np.random.default_rng(5).uniform(0, 1, (3, 2, 8, 8))
    inputs = torch.tensor(x)
    scores = net(inputs)
    predicted = scores.argmax(dim=1)
    captured = {}
    net[6].register_forward_hook(lambda module, args, output: captured.update(maps=output))
    scores = net(inputs)
    captured["maps"].retain_grad()
    scores[torch.arange(3), predicted].sum().backward()
    maps, gradient = captured["maps"], captured["maps"].grad
    name, layer = explain.find_layer(model)
    assert name == "5" and layer is model.layers[5]                   # the last Conv2D
    activations, gradients = explain.feature_map_gradients(model, x)  # target None: the predicted class
    np.testing.assert_allclose(activations, maps.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gradients, gradient.numpy(), rtol=1e-10, atol=1e-12)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    coarse = torch.relu((weights * maps).sum(dim=1, keepdim=True))
    expected = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(explain.grad_cam(model, x), expected[:, 0].detach().numpy(), rtol=1e-9, atol=1e-12)


def test_saliency_matches_finite_differences_of_the_logit():
    model = mixed_model().astype(np.float64)
    model.layers.pop()                                       # the logits themselves, for the differences
    model.add(Dense(6 * 4 * 4, 5))
    model.layers[-1].weight.data[...] = np.random.default_rng(6).normal(0, 0.3, (5, 96))
    x = np.random.default_rng(7).uniform(0, 1, (1, 2, 8, 8))
    model.eval()
    numeric = numerical_gradient(lambda: float(model.forward(x)[0, 3]), x)
    model.train()
    np.testing.assert_allclose(explain.saliency(model, x, 3), numeric, rtol=1e-5, atol=1e-8)


def test_the_class_score_is_the_logit_before_a_final_softmax_layer_or_activation():
    fused = mixed_model().astype(np.float64)
    separate = npconvnet.Sequential(*fused.layers[:-1], Dense(96, 5), Softmax())
    separate.layers[-2].load_state_dict(fused.layers[-1].state_dict())
    logits = npconvnet.Sequential(*fused.layers[:-1], separate.layers[-2])
    x = np.random.default_rng(8).uniform(0, 1, (2, 2, 8, 8))
    for model in (fused, separate):
        np.testing.assert_array_equal(explain.saliency(model, x, 2), explain.saliency(logits, x, 2))
    np.testing.assert_allclose(separate.predict(x).sum(axis=1), 1)       # the softmax is back afterwards
    np.testing.assert_allclose(fused.predict(x), separate.predict(x))


# ---------------------------------------------------------------------------- what a trained model looks at

PATTERNS = np.zeros((4, 5, 5), np.float32)
PATTERNS[0, 2, :] = 1                   # a horizontal bar
PATTERNS[1, :, 2] = 1                   # a vertical bar
PATTERNS[2] = np.eye(5)                 # a diagonal
PATTERNS[3, 1:4, 1:4] = 1               # a square


def pattern_images(count, seed, size=16):
    """Noise in [0, 0.2] ``(N, 1, size, size)`` with the pattern of the class drawn at a random
    place inside one random quadrant: ``(images, labels, quadrants)``, quadrants numbered
    0 1 / 2 3."""
    generator = np.random.default_rng(seed)
    images = generator.uniform(0, 0.2, (count, 1, size, size)).astype(np.float32)
    labels, quadrants = generator.integers(0, 4, (2, count))
    half = size // 2
    rows, cols = generator.integers(0, half - 4, (2, count))
    for n in range(count):
        top, left = quadrants[n] // 2 * half + rows[n], quadrants[n] % 2 * half + cols[n]
        patch = images[n, 0, top:top + 5, left:left + 5]
        np.maximum(patch, PATTERNS[labels[n]], out=patch)
    return images, labels, quadrants


def test_a_trained_model_puts_most_of_its_grad_cam_mass_in_the_quadrant_holding_the_evidence():
    npconvnet.manual_seed(1)
    x, y, _ = pattern_images(1000, seed=0)
    x_test, y_test, quadrants = pattern_images(300, seed=1)
    # Global average pooling makes the channels the class evidence wherever it lies (Grad-CAM's own
    # setting). With this width, 9 of the seeds 0-9 give every class more than half its mass.
    model = npconvnet.Sequential(Conv2D(1, 16, 3, padding="same", activation="relu"), MaxPool2D(2),
                                 Conv2D(16, 32, 3, padding="same", activation="relu"), GlobalAvgPool2D(),
                                 Dense(32, 4))
    model.compile(optimizer=optim.Adam(lr=1e-2))
    model.fit(x, y, epochs=8, batch_size=32, seed=1, verbose=0)
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.95
    cam = explain.grad_cam(model, x_test, target=y_test)
    quadrant_mass = cam.reshape(-1, 2, 8, 2, 8).sum(axis=(2, 4)).reshape(-1, 4)     # (N, 4 quadrants)
    share = quadrant_mass[np.arange(len(cam)), quadrants] / cam.sum(axis=(1, 2))
    for label in range(4):
        assert share[y_test == label].mean() > 0.5, f"class {label}: {share[y_test == label].mean():.2f}"


# ---------------------------------------------------------------------------- inputs, targets and layers

def digit_model():
    model = npconvnet.Sequential(Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2), Conv2D(4, 4, 3), ReLU(),
                                 Flatten(), Dense(4 * 11 * 11, 10))
    model.input_shape = (1, 28, 28)
    return model


def test_the_layouts_predict_takes_give_the_same_maps_and_one_image_drops_the_batch_axis():
    model = digit_model()
    pixels = np.random.default_rng(9).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    expected = explain.grad_cam(model, pixels)
    assert expected.shape == (3, 28, 28)
    np.testing.assert_allclose(explain.grad_cam(model, pixels[:, None] / 255.0), expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(explain.grad_cam(model, pixels[..., None]), expected)        # (N, H, W, C)
    # One image runs as a batch of one: float32 sums in another order, equal to rounding.
    np.testing.assert_allclose(explain.grad_cam(model, pixels[1]), expected[1], rtol=1e-5, atol=1e-9)
    assert explain.saliency(model, pixels).shape == (3, 1, 28, 28)
    assert explain.saliency(model, pixels[1]).shape == (1, 28, 28)


def test_one_colour_image_may_be_channels_first_or_last():
    model = npconvnet.Sequential(Conv2D(3, 4, 3, padding=1), Flatten(), Dense(4 * 6 * 6, 2))
    image = np.random.default_rng(10).uniform(0, 1, (3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(explain.grad_cam(model, image.transpose(1, 2, 0)), explain.grad_cam(model, image))
    assert explain.saliency(model, image).shape == (3, 6, 6)


def test_the_model_preprocessing_is_applied_as_predict_applies_it():
    model = digit_model()
    pixels = np.random.default_rng(11).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    model.preprocessing = "center"
    centred = explain.saliency(model, pixels)
    model.preprocessing = None
    np.testing.assert_array_equal(centred, explain.saliency(model, pixels / 255.0 - 0.5))


def test_without_a_target_each_sample_is_explained_for_its_predicted_class():
    model = digit_model()
    pixels = np.random.default_rng(12).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    predicted = model.predict_classes(pixels)
    np.testing.assert_array_equal(explain.grad_cam(model, pixels), explain.grad_cam(model, pixels, predicted))


@pytest.mark.parametrize("target, message", [
    (10, r"target must be class indices in \[0, 10\) for a model with 10 outputs, got values from 10 to 10"),
    (-1, r"in \[0, 10\).*from -1 to -1"),
    ([1, 2, 3], r"one class index per sample, shape \(2,\), got shape \(3,\)"),
    ([0.5, 1.0], "must be None, a class index"),
    (True, "must be None, a class index"),
])
def test_a_bad_target_is_a_clear_value_error(target, message):
    pixels = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=message):
        explain.grad_cam(digit_model(), pixels, target)


def test_layers_are_chosen_by_index_name_or_object_and_default_to_the_last_conv2d():
    model = digit_model()
    assert explain.find_layer(model) == ("2", model.layers[2])
    assert explain.find_layer(model, 3) == ("3", model.layers[3])
    assert explain.find_layer(model, -3) == ("3", model.layers[3])
    assert explain.find_layer(model, "0.activation") == ("0.activation", model.layers[0].activation_layer)
    assert explain.find_layer(model, model.layers[1]) == ("1", model.layers[1])
    pixels = np.random.default_rng(13).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(explain.grad_cam(model, pixels, layer=2),
                                  explain.grad_cam(model, pixels, layer=model.layers[2]))


def test_the_last_conv2d_of_a_resnet_is_its_last_blocks_main_path_not_the_projection():
    model = npconvnet.zoo.get("resnet-mini")
    name, layer = explain.find_layer(model)
    assert name == "8.block.3" and layer is model.layers[8].block[3]


@pytest.mark.parametrize("layer, error, message", [
    (6, ValueError, "layer index 6 is out of range for a model of 6 layers"),
    ("9.weight", ValueError, "no layer named '9.weight'.*'0', '0.activation', '1'"),
    (Conv2D(1, 1, 1), ValueError, "not part of the model"),
    (4, ValueError, r"layer 4 \(Flatten\) outputs shape \(2, 484\), not feature maps"),
    (2.0, TypeError, "layer must be None, an index, a layer name or a Layer"),
])
def test_a_bad_layer_is_a_clear_error(layer, error, message):
    with pytest.raises(error, match=message):
        explain.grad_cam(digit_model(), np.zeros((2, 28, 28), np.uint8), layer=layer)


def test_a_model_without_convolutions_needs_a_layer_and_inputs_must_fit():
    dense = npconvnet.Sequential(Flatten(), Dense(16, 2))
    dense.input_shape = (1, 4, 4)
    with pytest.raises(ValueError, match="the model has no Conv2D layer; pass layer="):
        explain.grad_cam(dense, np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 20, 20\).*input_shape is \(1, 28, 28\)"):
        explain.saliency(digit_model(), np.zeros((2, 20, 20), np.uint8))
    with pytest.raises(TypeError, match="expected an npconvnet model"):
        explain.saliency(Sequential(Conv2D(1, 1, 1)), np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="x holds no samples"):
        explain.saliency(digit_model(), np.zeros((0, 28, 28), np.uint8))


# ---------------------------------------------------------------------------- the model left as it was

def test_explaining_runs_in_evaluation_mode_and_leaves_weights_statistics_grads_and_mode_unchanged():
    model = mixed_model()
    model.train()
    for parameter in model.parameters():
        parameter.grad[...] = np.random.default_rng(14).normal(size=parameter.grad.shape)
    state, grads = model.state_dict(), [parameter.grad.copy() for parameter in model.parameters()]
    x = np.random.default_rng(15).uniform(0, 1, (3, 2, 8, 8)).astype(np.float32)
    first = explain.saliency(model, x)
    np.testing.assert_array_equal(explain.saliency(model, x), first)          # no dropout masks drawn
    explain.grad_cam(model, x, layer="3.block.0")
    assert model.training and all(layer.training for _, layer in explain.named_layers(model))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    for parameter, grad in zip(model.parameters(), grads):
        np.testing.assert_array_equal(parameter.grad, grad)
    assert all("forward" not in vars(layer) for _, layer in explain.named_layers(model))


def test_fit_after_explaining_gives_the_same_weights_as_fit_without_it():
    x, y, _ = pattern_images(96, seed=2)

    def trained(explain_between):
        npconvnet.manual_seed(0)
        model = npconvnet.Sequential(Conv2D(1, 4, 3, padding="same", activation="relu"), BatchNorm2D(4),
                                     MaxPool2D(2), Dropout(0.3), Flatten(), Dense(4 * 8 * 8, 4))
        model.compile(optimizer=optim.Adam(lr=1e-2))
        model.fit(x, y, epochs=1, batch_size=16, seed=3, verbose=0)
        if explain_between:
            explain.grad_cam(model, x[:10])
            explain.saliency(model, x[:10], target=2)
        model.fit(x, y, epochs=2, batch_size=16, seed=3, initial_epoch=1, verbose=0)
        return model.state_dict()

    without, with_explanations = trained(False), trained(True)
    for name, value in without.items():
        np.testing.assert_array_equal(with_explanations[name], value, err_msg=name)


# ---------------------------------------------------------------------------- npconvnet explain

@pytest.fixture
def model_and_image(tmp_path, pillow):
    """A digit model file (untrained, 3 classes named) and a 28x28 image file of a bright square."""
    pytest.importorskip("matplotlib", reason="npconvnet explain draws its pictures with matplotlib")
    model = npconvnet.Sequential(Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2),
                                 Conv2D(4, 4, 3, activation="relu"), Flatten(), Dense(4 * 11 * 11, 3))
    model.input_shape, model.class_names = (1, 28, 28), ["bar", "ring", "dot"]
    model.save(tmp_path / "model.npz")
    pixels = np.zeros((28, 28), np.uint8)
    pixels[8:20, 10:18] = 255
    pillow.fromarray(pixels).save(tmp_path / "square.png")
    return tmp_path / "model.npz", tmp_path / "square.png"


def run_cli(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_explain_command_writes_the_grad_cam_and_saliency_pictures(model_and_image, tmp_path, capsys):
    from test_plots import assert_png   # a module that needs matplotlib, present once the fixture ran
    model_file, image = model_and_image
    status, out, err = run_cli(capsys, "explain", model_file, image, "--out", tmp_path / "why",
                               "--prepare", "resize")
    assert status == 0, err
    assert sorted(path.name for path in (tmp_path / "why").iterdir()) == ["grad_cam.png", "saliency.png"]
    assert_png(tmp_path / "why" / "grad_cam.png", min_size=(500, 200))
    assert_png(tmp_path / "why" / "saliency.png", min_size=(400, 200))
    assert "with Grad-CAM of layer 2 (Conv2D)" in out and "Wrote 2 pictures" in out


def test_the_explain_command_takes_a_class_by_name_or_index_and_a_layer_by_name(model_and_image, tmp_path, capsys):
    model_file, image = model_and_image
    status, out, _ = run_cli(capsys, "explain", model_file, image, "--out", tmp_path / "a", "--target", "ring",
                             "--layer", "0.activation", "--prepare", "resize")
    assert status == 0 and "explained class ring with Grad-CAM of layer 0.activation (ReLU)" in out
    status, out, _ = run_cli(capsys, "explain", model_file, image, "--out", tmp_path / "b", "--target", "2",
                             "--layer", "1", "--prepare", "resize")
    assert status == 0 and "explained class dot with Grad-CAM of layer 1 (MaxPool2D)" in out


@pytest.mark.parametrize("options, message", [
    (["--target", "7"], "--target 7: the model has 3 classes, indices 0 to 2"),
    (["--target", "cat"], "--target 'cat': not a class of the model (its classes: bar, ring, dot)"),
    (["--layer", "9"], "--layer: layer index 9 is out of range for a model of 5 layers"),
    (["--layer", "3"], "layer 3 (Flatten) outputs shape (1, 484), not feature maps"),
])
def test_the_explain_command_reports_a_bad_target_or_layer_in_one_line(model_and_image, tmp_path, capsys,
                                                                       options, message):
    model_file, image = model_and_image
    status, _, err = run_cli(capsys, "explain", model_file, image, "--out", tmp_path / "x", *options)
    assert status == 2 and err.strip().count("\n") == 0 and message in err, err
    assert not (tmp_path / "x").exists()


def test_plot_grad_cam_draws_the_map_divided_by_its_maximum_over_the_image():
    pytest.importorskip("matplotlib", reason="pictures need matplotlib")
    image, heat = np.random.default_rng(16).uniform(0, 1, (2, 6, 7))
    figure = plots.plot_grad_cam(image, 3 * heat)
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), heat / heat.max(), rtol=1e-6)
    overlay = figure.axes[2].images
    np.testing.assert_allclose(overlay[0].get_array(), image, rtol=1e-6)
    assert overlay[1].get_alpha() == 0.5
    with pytest.raises(ValueError, match=r"expected a map \(H, W\) of the image's size \(6, 7\)"):
        plots.plot_grad_cam(image, heat[:5])
