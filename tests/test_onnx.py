"""ONNX export: every exported graph runs in onnxruntime (CPU) and agrees with npconvnet.

Agreement is float32 rounding: probabilities (``include_softmax=True``) within 1e-5 of
``model.predict`` on the same uint8 pixels, raw outputs within 1e-4 of ``model.forward`` on the
preprocessed pixels, relative to the largest output (at least 1).
"""

import sys

import numpy as np
import pytest

import npconvnet
from npconvnet import Sequential, layers, zoo
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Softmax, Tanh)
from synthetic import randomise

onnx = pytest.importorskip("onnx", reason="the onnx package (pip install 'npconvnet[onnx]') builds the graphs")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (in the test extra) runs the exported graphs")

PROBABILITY_TOLERANCE = 1e-5
OUTPUT_TOLERANCE = 1e-4


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": x.astype(np.float32)})[0]


def forward(model, x):
    """What the graph without softmax computes: the model's evaluation-mode forward pass on the
    preprocessed pixels."""
    model.eval()
    try:
        return model.forward(model.preprocess_input(x))
    finally:
        model.train()


def assert_outputs_agree(actual, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= OUTPUT_TOLERANCE * scale


def assert_exports_faithfully(model, x, tmp_path, **options):
    """Both graphs (outputs, and probabilities) against npconvnet, on the uint8 pixels ``x``."""
    outputs_path, probabilities_path = tmp_path / "outputs.onnx", tmp_path / "probabilities.onnx"
    npconvnet.export_onnx(model, outputs_path, **options)
    assert_outputs_agree(run_onnx(outputs_path, x), forward(model, x))
    npconvnet.export_onnx(model, probabilities_path, include_softmax=True, **options)
    probabilities = run_onnx(probabilities_path, x)
    assert np.abs(probabilities - model.predict(x)).max() <= PROBABILITY_TOLERANCE


# Zoo models.

@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_runs_in_onnxruntime_as_predict(name, tmp_path):
    model = randomise(zoo.get(name))
    assert_exports_faithfully(model, pixels((5, 1, 28, 28)), tmp_path)


def test_trained_saved_and_loaded_model_exports_what_it_predicts(tmp_path):
    model = zoo.get("tiny")
    model.preprocessing = "center"
    model.compile(optimizer="adam", loss="cross_entropy")
    x, y = pixels((32, 28, 28)), np.arange(32) % 10
    model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    loaded = npconvnet.load_model(model.save(tmp_path / "model.npz"))
    npconvnet.export_onnx(loaded, tmp_path / "model.onnx", include_softmax=True)
    images = pixels((6, 1, 28, 28), seed=1)
    assert np.abs(run_onnx(tmp_path / "model.onnx", images) - model.predict(images)).max() <= PROBABILITY_TOLERANCE


# Odd configurations, each a model and its input shape.

def convolutions_of_every_padding():
    return Sequential(
        Conv2D(2, 3, 3, stride=2, padding="same"),            # odd size, stride 2: asymmetric "same"
        Conv2D(3, 4, 4, padding="same"),                      # even kernel: the odd pixel bottom/right
        Conv2D(4, 3, 2, stride=2, padding="full"),
        Conv2D(3, 4, (3, 2), stride=(2, 1), padding=((0, 2), (1, 0))),
        Conv2D(4, 3, 3, padding=(1, 2)), Conv2D(3, 2, 1, padding=1), Conv2D(2, 3, 2, padding="valid"),
        Flatten(), Dense(3 * 5 * 11, 5))


def overlapping_pools_with_padding():
    return Sequential(
        Conv2D(3, 4, 3, padding=1), MaxPool2D(3, stride=2, padding=1), AvgPool2D(3, stride=1, padding=1),
        AvgPool2D((3, 2), stride=(2, 1), padding=(1, 0)), MaxPool2D((2, 3), stride=(1, 2), padding=(1, 1)),
        Flatten(), Dense(4 * 5 * 3, 3))


def residuals_with_and_without_projection():
    block = layers.Sequential(Conv2D(4, 8, 3, stride=2, padding=1, bias=False), BatchNorm2D(8), ReLU(),
                              Conv2D(8, 8, 3, padding="same"), BatchNorm2D(8))
    projection = layers.Sequential(Conv2D(4, 8, 1, stride=2, bias=False), BatchNorm2D(8))
    identity = layers.Sequential(Conv2D(8, 8, 3, padding=1), ReLU(), layers.Sequential(Conv2D(8, 8, 3, padding=1)))
    return Sequential(Conv2D(1, 4, 3, padding=1), Residual(block, projection), ReLU(), Residual(identity),
                      GlobalAvgPool2D(), Dense(8, 4))


def activation_options_and_layers():
    return Sequential(
        Conv2D(1, 4, 3, activation="relu"), Conv2D(4, 4, 3), LeakyReLU(0.2),
        Conv2D(4, 4, 3, activation="leaky_relu"), LeakyReLU(0), Conv2D(4, 4, 3, activation="tanh"),
        LeakyReLU(1.5), Sigmoid(), Conv2D(4, 4, 1, activation="sigmoid"), Tanh(), Dropout(0.5), Flatten(),
        Dense(4 * 8 * 8, 16, activation="relu"), BatchNorm1D(16), Dense(16, 8, activation="tanh"),
        Dense(8, 6, bias=False))


def colour_images_not_square():
    return Sequential(Conv2D(3, 6, 5, stride=(1, 2), padding="same", activation="relu"), BatchNorm2D(6),
                      Softmax(), MaxPool2D(2, padding=1), Dropout(0.2), Flatten(), Dense(6 * 7 * 3, 4))


def features_through_dense_layers():
    return Sequential(Dense(12, 16, activation="leaky_relu"), BatchNorm1D(16), Dropout(0.3), Dense(16, 3))


ODD_CONFIGURATIONS = {
    "every padding mode": (convolutions_of_every_padding, (2, 29, 27)),
    "overlapping pools with padding": (overlapping_pools_with_padding, (3, 13, 11)),
    "residuals": (residuals_with_and_without_projection, (1, 11, 11)),
    "activations": (activation_options_and_layers, (1, 16, 16)),
    "colour, not square": (colour_images_not_square, (3, 12, 10)),
    "feature rows": (features_through_dense_layers, (12,)),
}


@pytest.mark.parametrize("preprocessing", [None, "center"])
@pytest.mark.parametrize("configuration", ODD_CONFIGURATIONS)
def test_odd_configuration_runs_in_onnxruntime_as_npconvnet(configuration, preprocessing, tmp_path):
    build, input_shape = ODD_CONFIGURATIONS[configuration]
    model = randomise(build())
    model.input_shape, model.preprocessing = input_shape, preprocessing
    assert_exports_faithfully(model, pixels((4, *input_shape)), tmp_path)


def test_batch_norm_over_sequences_exports(tmp_path):
    model = randomise(Sequential(BatchNorm1D(3), Flatten(), Dense(15, 2)))
    npconvnet.export_onnx(model, tmp_path / "model.onnx", input_shape=(3, 5))
    x = pixels((4, 3, 5))
    model.eval()
    expected = model.forward(x.astype(np.float32) / np.float32(255))      # (N, C, L): not images for predict
    assert_outputs_agree(run_onnx(tmp_path / "model.onnx", x), expected)


def test_float64_model_exports_as_float32(tmp_path):
    model = randomise(zoo.get("lenet5")).astype(np.float64)
    x = pixels((3, 1, 28, 28))
    npconvnet.export_onnx(model, tmp_path / "model.onnx")
    assert_outputs_agree(run_onnx(tmp_path / "model.onnx", x), forward(model, x))


# What the graph is.

def test_one_file_takes_batches_of_one_and_seven(tmp_path):
    model = randomise(zoo.get("resnet-mini"))
    npconvnet.export_onnx(model, tmp_path / "model.onnx", include_softmax=True)
    for size in (1, 7):
        x = pixels((size, 1, 28, 28), seed=size)
        probabilities = run_onnx(tmp_path / "model.onnx", x)
        assert probabilities.shape == (size, 10)
        assert np.abs(probabilities - model.predict(x)).max() <= PROBABILITY_TOLERANCE


def test_file_passes_the_checker_with_a_named_dynamic_batch_dimension(tmp_path):
    npconvnet.export_onnx(zoo.get("vgg-mini"), tmp_path / "model.onnx", opset=13)
    proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    [graph_input], [graph_output] = proto.graph.input, proto.graph.output
    assert graph_input.name == "pixels" and graph_output.name == "outputs"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    input_dims = graph_input.type.tensor_type.shape.dim
    assert input_dims[0].dim_param == "N" and [d.dim_value for d in input_dims[1:]] == [1, 28, 28]
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "N"
    assert [entry.version for entry in proto.opset_import if entry.domain == ""] == [13]


def test_graph_takes_pixels_0_to_255_and_centres_them_itself(tmp_path):
    model = Sequential(Flatten())                 # the graph is its preprocessing alone
    model.preprocessing = "center"
    npconvnet.export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 2, 2))
    x = np.array([[[[0, 51], [127.5, 255]]]], np.float32)
    assert np.array_equal(run_onnx(tmp_path / "model.onnx", x), np.float32([[-0.5, -0.3, 0, 0.5]]))


@pytest.mark.parametrize("build", [
    lambda: Sequential(Dense(4, 5), Softmax()),
    lambda: Sequential(Dense(4, 6), layers.Sequential(Dense(6, 5, activation="softmax"))),
], ids=["Softmax layer", "activation='softmax' in a nested Sequential"])
def test_softmax_requested_on_a_network_ending_with_softmax_is_not_applied_twice(build, tmp_path):
    model = randomise(build())
    npconvnet.export_onnx(model, tmp_path / "model.onnx", input_shape=(4,), include_softmax=True)
    x = pixels((3, 4))
    probabilities = run_onnx(tmp_path / "model.onnx", x)
    assert_outputs_agree(probabilities, forward(model, x))
    assert np.allclose(probabilities.sum(axis=1), 1)


def test_export_leaves_the_model_in_its_mode_and_weights(tmp_path):
    model = randomise(zoo.get("vgg-mini"))
    state = model.state_dict()
    npconvnet.export_onnx(model, tmp_path / "model.onnx")
    assert model.training
    assert all(np.array_equal(value, state[name]) for name, value in model.state_dict().items())


def test_class_names_and_preprocessing_are_recorded_in_the_metadata(tmp_path):
    model = zoo.get("tiny")
    model.class_names, model.preprocessing = [str(digit) for digit in range(10)], "center"
    npconvnet.export_onnx(model, tmp_path / "model.onnx")
    metadata = {entry.key: entry.value for entry in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert metadata["class_names"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert metadata["preprocessing"] == '"center"'


# Errors.

class Doubler(npconvnet.layers.Layer):
    samplewise = True

    def forward(self, x):
        return 2 * x


class ReLUWithAShift(ReLU):
    def forward(self, x):
        return super().forward(x) + 1


@pytest.mark.parametrize("layer, name", [(Doubler(), "Doubler"), (ReLUWithAShift(), "ReLUWithAShift")])
def test_a_layer_of_ones_own_gets_an_error_naming_it_and_its_place(layer, name, tmp_path):
    block = layers.Sequential(Conv2D(2, 2, 3, padding=1), layer)
    model = Sequential(Conv2D(1, 2, 3), ReLU(), Residual(block), Flatten(), Dense(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match=rf"layer 2\.block\.1 \({name}\) cannot be exported to ONNX"):
        npconvnet.export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 8, 8))
    assert not (tmp_path / "model.onnx").exists()


def test_a_failed_export_leaves_the_file_already_there(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an earlier export")
    with pytest.raises(ValueError, match="Doubler"):
        npconvnet.export_onnx(Sequential(Doubler()), path, input_shape=(3,))
    assert path.read_bytes() == b"an earlier export"
    assert [entry.name for entry in tmp_path.iterdir()] == ["model.onnx"]


def test_a_model_without_input_shape_needs_one(tmp_path):
    model = Sequential(Dense(4, 2))
    with pytest.raises(ValueError, match=r"no input_shape.*pass input_shape="):
        npconvnet.export_onnx(model, tmp_path / "model.onnx")
    npconvnet.export_onnx(model, tmp_path / "model.onnx", input_shape=(4,))


def test_an_input_shape_the_model_cannot_take_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"cannot take samples of shape \(3, 28, 28\)"):
        npconvnet.export_onnx(zoo.get("lenet5"), tmp_path / "model.onnx", input_shape=(3, 28, 28))
    with pytest.raises(ValueError, match="input_shape must be one sample's shape"):
        npconvnet.export_onnx(zoo.get("lenet5"), tmp_path / "model.onnx", input_shape=(1, 28.0, 28))


def test_opset_older_than_13_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"opset must be an int in \[13, "):
        npconvnet.export_onnx(zoo.get("tiny"), tmp_path / "model.onnx", opset=11)


def test_nonfinite_weights_are_refused(tmp_path):
    model = zoo.get("tiny")
    model.layers[-1].bias.data[3] = np.nan
    with pytest.raises(ValueError, match=r"3\.bias hold NaN"):
        npconvnet.export_onnx(model, tmp_path / "model.onnx")


def test_missing_onnx_package_names_the_extra_to_install(tmp_path, monkeypatch):
    # As in a fresh process: the exporter not imported yet, and no onnx to import.
    monkeypatch.delitem(sys.modules, "npconvnet.onnx_export", raising=False)
    monkeypatch.delattr(npconvnet, "onnx_export", raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)         # what a missing package looks like to import
    with pytest.raises(ImportError, match=r'pip install "npconvnet\[onnx\]"'):
        npconvnet.export_onnx(zoo.get("tiny"), tmp_path / "model.onnx")
