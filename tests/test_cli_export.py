"""npconvnet export MODEL_FILE --onnx OUT.onnx: the model file as an ONNX graph onnxruntime runs."""

import numpy as np
import pytest

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'npconvnet[onnx]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="the exported graph is run in onnxruntime")

from npconvnet import cli, zoo  # noqa: E402


def test_export_writes_a_graph_that_gives_the_probabilities_predict_gives(tmp_path, rng, capsys):
    model = zoo.get("lenet5")
    model.compile(optimizer="adam", loss="cross_entropy")
    model.save(tmp_path / "model.npz")
    status = cli.main(["export", str(tmp_path / "model.npz"), "--onnx", str(tmp_path / "model.onnx"), "--softmax"])
    assert status == 0 and "model.onnx" in capsys.readouterr().out
    pixels = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (probabilities,) = session.run(None, {name: pixels[:, None].astype(np.float32)})
    np.testing.assert_allclose(probabilities, model.predict(pixels), atol=1e-5)


def test_export_of_a_missing_model_file_is_one_line_and_status_2(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "none.npz"), "--onnx", str(tmp_path / "out.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
