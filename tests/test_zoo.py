"""The model zoo: shapes, parameter counts against PyTorch, trainability, recipes, errors."""

import json

import numpy as np
import pytest

from npconvnet import optim, zoo
from npconvnet.data import Augmenter
from npconvnet.layers import Dropout
from npconvnet.losses import CrossEntropyLoss
from npconvnet.schedulers import CosineAnnealingLR

ALL_MODELS = ["tiny", "conv5", "convnet", "lenet5", "vgg-mini", "resnet-mini"]


def test_names_lists_every_model_simplest_first():
    assert zoo.names() == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_mnist_input_gives_ten_logits_per_image(name):
    model = zoo.get(name)
    model.eval()
    output = model.forward(np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32))
    assert output.shape == (3, 10)
    assert output.dtype == np.float32
    assert model.input_shape == (1, 28, 28)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_colour_32x32_input_with_five_classes_gives_five_logits(name):
    model = zoo.get(name, input_shape=(3, 32, 32), num_classes=5)
    model.eval()
    output = model.forward(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    assert output.shape == (2, 5)
    assert model.input_shape == (3, 32, 32)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_shape_agrees_with_a_forward_pass_on_rectangular_images(name):
    model = zoo.get(name, input_shape=(2, 20, 36), num_classes=3)
    assert model.output_shape((2, 20, 36)) == (3,)
    model.eval()
    assert model.forward(np.zeros((1, 2, 20, 36), np.float32)).shape == (1, 3)


def test_tiny_has_the_tutorial_shapes():
    model = zoo.get("tiny")
    shapes = [(1, 28, 28)]
    for layer in model.layers:
        shapes.append(tuple(layer.output_shape(shapes[-1])))
    assert shapes == [(1, 28, 28), (8, 26, 26), (8, 13, 13), (1352,), (10,)]


def test_convnet_starts_from_normal_weights_with_std_001_and_zero_biases():
    model = zoo.get("convnet")
    weights = np.concatenate([p.data.ravel() for name, p in model.named_parameters()
                              if name.endswith("weight")])
    biases = np.concatenate([p.data.ravel() for name, p in model.named_parameters()
                             if name.endswith("bias")])
    assert abs(weights.std() - 0.01) < 0.0005
    assert abs(weights.mean()) < 0.0005
    assert not biases.any()


def test_models_are_fresh_and_seeded_by_manual_seed():
    import npconvnet
    npconvnet.manual_seed(3)
    first = zoo.get("lenet5").state_dict()
    npconvnet.manual_seed(3)
    again = zoo.get("lenet5").state_dict()
    other = zoo.get("lenet5").state_dict()
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert not np.array_equal(first["0.weight"], other["0.weight"])


# ---------------------------------------------------------------------------- PyTorch twins

def _torch_twin(torch, name, channels, height, width, num_classes):
    """The same architecture built with torch.nn, for its parameter count."""
    nn = torch.nn

    def flat(features):
        with torch.no_grad():
            return features(torch.zeros(1, channels, height, width)).numel()

    if name == "tiny":
        features = nn.Sequential(nn.Conv2d(channels, 8, 3, bias=False), nn.MaxPool2d(2))
        return nn.Sequential(features, nn.Flatten(), nn.Linear(flat(features), num_classes))
    if name == "conv5":
        features = nn.Sequential(nn.Conv2d(channels, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        return nn.Sequential(features, nn.Flatten(), nn.Linear(flat(features), num_classes))
    if name == "convnet":
        features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        return nn.Sequential(features, nn.Flatten(), nn.Linear(flat(features), num_classes))
    if name == "lenet5":
        features = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        return nn.Sequential(features, nn.Flatten(), nn.Linear(flat(features), 120), nn.ReLU(),
                             nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))
    if name == "vgg-mini":
        layers, in_channels = [], channels
        for out_channels in zoo.VGG_CHANNELS:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1)]
            in_channels = out_channels
        features = nn.Sequential(*layers)
        return nn.Sequential(features, nn.Flatten(),
                             nn.Linear(flat(features), zoo.VGG_HIDDEN, bias=False),
                             nn.BatchNorm1d(zoo.VGG_HIDDEN), nn.ReLU(), nn.Dropout(0.4),
                             nn.Linear(zoo.VGG_HIDDEN, num_classes))
    if name == "resnet-mini":
        def block(i, o, stride):
            body = nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o))
            shortcut = (nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))
                        if stride != 1 or i != o else nn.Identity())
            return nn.ModuleList([body, shortcut])
        return nn.ModuleList([nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                              block(16, 16, 1), block(16, 32, 2), block(32, 64, 2),
                              nn.Linear(64, num_classes)])
    raise AssertionError(name)


def _torch_counts(torch, module):
    """(trainable parameters, buffers without BatchNorm's num_batches_tracked)."""
    trainable = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for key, b in module.named_buffers() if not key.endswith("num_batches_tracked"))
    return trainable, buffers


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("input_shape, num_classes", [((1, 28, 28), 10), ((3, 32, 32), 5)])
def test_parameter_count_matches_the_same_architecture_in_pytorch(torch, name, input_shape, num_classes):
    model = zoo.get(name, input_shape=input_shape, num_classes=num_classes)
    twin = _torch_twin(torch, name, *input_shape, num_classes)
    buffers = sum(np.size(b) for _, b in model.named_buffers())
    assert (model.num_parameters(), buffers) == _torch_counts(torch, twin)


@pytest.mark.parametrize("name, count", [("lenet5", 61_706), ("convnet", 9_098), ("tiny", 13_602)])
def test_parameter_count_matches_the_published_number(name, count):
    # LeNet-5 adapted to 28x28 has 61,706 parameters in Keras' summary; convnet
    # 80 + 1,168 + 7,850; tiny 72 (bias-free filters) + 13,530.
    assert zoo.get(name).num_parameters() == count


# ---------------------------------------------------------------------------- trainability

@pytest.mark.parametrize("name", ALL_MODELS)
def test_a_few_training_steps_reduce_the_loss_on_a_small_batch(name):
    rng = np.random.default_rng(0)
    y = np.arange(20) % 10           # ten noisy copies of two images per class, 16x16 for speed
    x = (rng.random((10, 1, 16, 16))[y] + 0.1 * rng.random((20, 1, 16, 16))).astype(np.float32)
    model = zoo.get(name, input_shape=(1, 16, 16))
    for layer in model.layers:          # dropout would make the before/after comparison noisy
        if isinstance(layer, Dropout):
            layer.p = 0.0
    # convnet's N(0, 0.01^2) weights start in a flat region: a larger step leaves it sooner.
    optimizer = optim.Adam(model.parameters(), lr=0.01 if name == "convnet" else 0.003)
    loss_fn = CrossEntropyLoss()
    losses = []
    for _ in range(12):
        losses.append(loss_fn(model.forward(x), y))
        model.backward(loss_fn.backward())
        optimizer.step()
    final = loss_fn(model.forward(x), y)
    assert final < 0.7 * losses[0], (losses, final)


# ---------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("dataset", [None, "mnist", "fashion-mnist"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_recipe_is_json_serialisable_and_complete(name, dataset):
    recipe = zoo.recipe(name, dataset)
    assert json.loads(json.dumps(recipe)) == recipe
    assert set(recipe) == {"description", "optimizer", "optimizer_kwargs", "lr", "batch_size",
                           "epochs", "schedule", "augment", "label_smoothing", "preprocessing",
                           "subset"}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_recipe_builds_its_optimizer_scheduler_augmenter_and_loss(name):
    recipe = zoo.recipe(name)
    optimizer = zoo.build_optimizer(recipe)
    assert optimizer.lr == recipe["lr"]
    scheduler = zoo.build_scheduler(recipe, optimizer)
    assert (scheduler is None) == (recipe["schedule"] is None)
    augmenter = zoo.build_augmenter(recipe, seed=0)
    assert (augmenter is None) == (not recipe["augment"])
    assert zoo.build_loss(recipe).label_smoothing == recipe["label_smoothing"]


def test_recipe_is_a_fresh_copy():
    zoo.recipe("lenet5")["lr"] = 123.0
    assert zoo.recipe("lenet5")["lr"] != 123.0


def test_tiny_recipe_is_the_classic_tutorial():
    recipe = zoo.recipe("tiny")
    assert (recipe["optimizer"], recipe["lr"], recipe["batch_size"], recipe["epochs"]) == ("sgd", 0.005, 1, 3)
    assert recipe["subset"] == {"train": 1000, "test": 1000}
    assert zoo.build_preprocessing(recipe) == "center"
    assert zoo.preprocess(recipe, np.array([0, 255], np.uint8)).tolist() == [-0.5, 0.5]


@pytest.mark.parametrize("name", [name for name in zoo.names() if name != "tiny"])
def test_the_other_recipes_leave_the_model_default_preprocessing(name):
    assert zoo.build_preprocessing(zoo.recipe(name)) is None


def test_unknown_preprocessing_in_a_recipe_is_rejected():
    with pytest.raises(ValueError, match="preprocessing must be 'scale' or 'center', got 'whiten'"):
        zoo.build_preprocessing({"preprocessing": "whiten"})


def test_convnet_recipe_is_the_pytorch_original():
    recipe = zoo.recipe("convnet")
    assert (recipe["optimizer"], recipe["optimizer_kwargs"], recipe["lr"], recipe["batch_size"],
            recipe["epochs"], recipe["schedule"]) == ("sgd", {}, 0.05, 128, 10, None)


def test_cosine_schedule_anneals_over_the_recipes_epochs():
    recipe = zoo.recipe("lenet5")
    scheduler = zoo.build_scheduler(recipe, optim.SGD(lr=recipe["lr"]))
    assert isinstance(scheduler, CosineAnnealingLR)
    assert scheduler.T_max == recipe["epochs"]


def test_fashion_recipe_mirrors_garments_but_digits_are_never_flipped():
    assert not zoo.build_augmenter(zoo.recipe("vgg-mini")).horizontal_flip
    fashion = zoo.recipe("vgg-mini", dataset="fashion-mnist")
    assert isinstance(zoo.build_augmenter(fashion), Augmenter)
    assert zoo.build_augmenter(fashion).horizontal_flip
    assert "flips" in fashion["description"]


def test_describe_names_the_model_its_size_and_its_recipe():
    text = zoo.describe("lenet5")
    assert text.startswith("lenet5: 61,706 parameters")
    assert zoo.recipe("lenet5")["description"] in text


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("where", [zoo.get, zoo.recipe, zoo.describe])
def test_unknown_name_lists_the_known_models(where):
    with pytest.raises(ValueError, match="unknown model 'alexnet'.*tiny, conv5, convnet, lenet5"):
        where("alexnet")


def test_a_name_that_is_not_a_string_lists_the_known_models():
    with pytest.raises(ValueError, match="unknown model \\['lenet5'\\]; known models"):
        zoo.get(["lenet5"])


def test_describe_leaves_the_global_generator_alone():
    import npconvnet
    npconvnet.manual_seed(5)
    expected = npconvnet.rng.default_rng().random()
    npconvnet.manual_seed(5)
    zoo.describe("vgg-mini")
    assert npconvnet.rng.default_rng().random() == expected


def test_names_ignore_case_and_accept_underscores():
    assert zoo.get("VGG_Mini").num_parameters() == zoo.get("vgg-mini").num_parameters()


@pytest.mark.parametrize("name, minimum", [("tiny", 4), ("convnet", 4), ("lenet5", 12), ("vgg-mini", 8)])
def test_too_small_input_names_the_model_and_the_minimum_size(name, minimum):
    zoo.get(name, input_shape=(1, minimum, minimum)).eval().forward(
        np.zeros((1, 1, minimum, minimum), np.float32))
    with pytest.raises(ValueError, match=rf"'{name}'.*at least {minimum}x{minimum} pixels, got "
                                         rf"{minimum - 1}x{minimum}"):
        zoo.get(name, input_shape=(1, minimum - 1, minimum))


@pytest.mark.parametrize("input_shape", [(28, 28), (1, 0, 28), (1, 28.0, 28), "1x28x28"])
def test_malformed_input_shape_is_rejected(input_shape):
    with pytest.raises(ValueError, match="input_shape must be three positive ints"):
        zoo.get("lenet5", input_shape=input_shape)


@pytest.mark.parametrize("num_classes", [1, 0, 2.5, True])
def test_num_classes_must_be_an_int_of_at_least_two(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        zoo.get("lenet5", num_classes=num_classes)


def test_unknown_schedule_in_a_recipe_is_rejected():
    recipe = zoo.recipe("lenet5")
    recipe["schedule"] = {"name": "triangular"}
    with pytest.raises(ValueError, match="unknown schedule 'triangular'"):
        zoo.build_scheduler(recipe, optim.SGD(lr=0.1))
