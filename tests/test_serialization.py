"""Model files: round trips, resumed training, atomic writes, and every kind of bad file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import npconvnet
from npconvnet import rng, serialization
from npconvnet.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                              GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Softmax, Tanh)
from npconvnet import Sequential
from npconvnet.optim import SGD, Adam
from npconvnet.layers.base import layer_from_config, layer_to_config
from npconvnet.models import load_checkpoint, load_model
from npconvnet.serialization import ModelFileError
from model_files import as_format_version, digest_of, edit_header, header_of, npy_bytes, read_members, write_members
from synthetic import bar_images


def plain_net():
    return Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 2))


def batchnorm_dropout_net():
    return Sequential(Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2), Flatten(),
                      Dropout(0.3), Dense(100, 2))


def residual_net():
    block = Sequential(Conv2D(4, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Conv2D(4, 4, 3, padding=1))
    return Sequential(Conv2D(1, 4, 3, padding=1), ReLU(),
                      Residual(block), ReLU(),
                      Residual(Sequential(Conv2D(4, 8, 3, padding=1)), shortcut=Conv2D(4, 8, 1)),
                      GlobalAvgPool2D(), Dense(8, 2))


def trained(build, epochs=2, optimizer=None):
    npconvnet.manual_seed(0)
    model = build()
    model.compile(optimizer=optimizer or Adam(lr=0.01), metrics=["accuracy", "f1_macro"])
    x, y = bar_images(48)
    model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.25, seed=0, verbose=0)
    return model


def assert_same_state(first, second):
    first, second = first.state_dict(), second.state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# Architectures

def test_layer_configs_rebuild_the_same_architecture():
    model = residual_net()
    rebuilt = layer_from_config(json.loads(json.dumps(layer_to_config(model))))
    assert repr(rebuilt) == repr(model)
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]


def test_an_unknown_layer_in_a_config_is_named_with_its_place():
    config = {"class": "Sequential", "config": {"layers": [{"class": "Conv3D", "config": {}}]}}
    with pytest.raises(ValueError, match=r"architecture\.0: unknown layer 'Conv3D'"):
        layer_from_config(config)


# Round trips

@pytest.mark.parametrize("build", [plain_net, batchnorm_dropout_net, residual_net])
def test_a_loaded_model_predicts_bit_identically(build, tmp_path):
    model = trained(build)
    x, _ = bar_images(20, seed=1)
    model.save(tmp_path / "model.npz")
    restored = load_model(tmp_path / "model.npz")
    assert_same_state(model, restored)
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))


def test_a_loaded_model_is_compiled_as_it_was_saved(tmp_path):
    model = trained(plain_net, optimizer=SGD(lr=0.05, momentum=0.9, nesterov=True))
    model.class_names = ["horizontal", "vertical"]
    model.save(tmp_path / "model.npz")
    restored = load_model(tmp_path / "model.npz")
    assert type(restored.optimizer) is SGD and restored.optimizer.get_config() == model.optimizer.get_config()
    assert type(restored.loss) is type(model.loss) and restored.loss.get_config() == model.loss.get_config()
    assert restored.metric_names == ["accuracy", "f1_macro"]
    assert restored.input_shape == (1, 10, 10)
    assert restored.class_names == ["horizontal", "vertical"]
    assert restored.history.history == model.history.history and restored.history.epoch == [0, 1]
    x, y = bar_images(20, seed=1)
    assert restored.evaluate(x, y) == model.evaluate(x, y)


def test_the_optimizer_state_is_restored(tmp_path):
    model = trained(plain_net)
    model.save(tmp_path / "model.npz")
    saved, restored = model.optimizer.state, load_model(tmp_path / "model.npz").optimizer.state
    assert len(saved) == len(restored)
    for before, after in zip(saved, restored):
        assert before["step"] == after["step"] == 6
        np.testing.assert_array_equal(before["exp_avg"], after["exp_avg"])
        np.testing.assert_array_equal(before["exp_avg_sq"], after["exp_avg_sq"])


def test_saving_without_optimizer_and_history_leaves_them_out(tmp_path):
    model = trained(plain_net)
    model.save(tmp_path / "model.npz", include_optimizer=False, include_history=False)
    with np.load(tmp_path / "model.npz") as archive:
        assert not [name for name in archive.files if name.startswith("optimizer/")]
    restored = load_model(tmp_path / "model.npz")
    assert restored.optimizer.state == [{} for _ in restored.parameters()]
    assert restored.history is None


def test_load_model_without_compile_returns_an_uncompiled_model(tmp_path):
    trained(plain_net).save(tmp_path / "model.npz")
    restored = load_model(tmp_path / "model.npz", compile=False)
    assert restored.optimizer is None and restored.loss is None


def test_an_uncompiled_model_round_trips(tmp_path):
    npconvnet.manual_seed(0)
    model = plain_net()
    model.save(tmp_path / "model.npz")
    restored = load_model(tmp_path / "model.npz")
    assert restored.optimizer is None
    assert_same_state(model, restored)


def test_a_float64_model_stays_float64(tmp_path):
    npconvnet.manual_seed(0)
    model = plain_net().astype(np.float64)
    model.save(tmp_path / "model.npz")
    restored = load_model(tmp_path / "model.npz")
    assert restored.parameters()[0].data.dtype == np.float64
    assert_same_state(model, restored)


def test_loading_leaves_the_global_generator_as_it_was(tmp_path):
    trained(plain_net).save(tmp_path / "model.npz")
    before = rng.get_state()
    load_model(tmp_path / "model.npz")
    assert rng.get_state() == before


def test_the_file_stores_the_documented_members(tmp_path):
    trained(plain_net).save(tmp_path / "model.npz")
    with zipfile.ZipFile(tmp_path / "model.npz") as archive:
        names = set(archive.namelist())
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert "model.json.npy" in names and "weights/0.weight.npy" in names
    assert "optimizer/0.exp_avg.npy" in names and "digest.npy" in names
    with np.load(tmp_path / "model.npz") as archive:
        header = json.loads(archive["model.json"].tobytes())
    assert header["format"] == "npconvnet-model" and header["format_version"] == 3
    assert header["architecture"]["class"] == "Sequential" and header["dtype"] == "float32"


def test_the_digest_is_the_sha256_the_module_docstring_defines(tmp_path):
    model = trained(plain_net, epochs=1)
    model.save(tmp_path / "model.npz")
    members = read_members(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as archive:
        stored = archive["digest"]
    assert stored.dtype == np.uint8 and stored.shape == (32,)
    assert stored.tobytes() == digest_of(members)


def test_the_digest_covers_every_array_and_the_header():
    members = {"model.json.npy": npy_bytes(np.frombuffer(b"{}", np.uint8)),
               "weights/w.npy": npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3))}
    changes = [("model.json.npy", np.frombuffer(b"{ }", np.uint8)),
               ("weights/w.npy", np.arange(6, dtype=np.float32).reshape(3, 2)),
               ("weights/w.npy", np.arange(6, dtype=np.float32).reshape(2, 3).view(np.int32)),
               ("weights/w.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))),
               ("weights/v.npy", np.arange(6, dtype=np.float32).reshape(2, 3))]
    digests = {digest_of(members)}
    for name, array in changes:
        changed = {**members, name: npy_bytes(array)}
        if name == "weights/v.npy":
            del changed["weights/w.npy"]
        digests.add(digest_of(changed))
    assert len(digests) == 1 + len(changes)


def test_preprocessing_is_saved_and_restored(tmp_path):
    model = trained(plain_net, epochs=1)
    model.preprocessing = "center"
    model.save(tmp_path / "model.npz")
    loaded = load_model(tmp_path / "model.npz")
    assert loaded.preprocessing == "center"
    x, _ = bar_images(5)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_every_file_is_format_version_3_so_that_readers_without_the_digest_refuse_it(tmp_path, monkeypatch):
    model = trained(plain_net, epochs=1)
    model.save(tmp_path / "plain.npz")
    model.preprocessing = "center"
    model.save(tmp_path / "centered.npz")
    for name, preprocessing in [("plain", None), ("centered", "center")]:
        header = header_of(read_members(tmp_path / f"{name}.npz"))
        assert (header["format_version"], header["preprocessing"]) == (3, preprocessing)
    monkeypatch.setattr(serialization, "FORMAT_VERSION", 2)     # the reader of version 2
    with pytest.raises(ModelFileError, match="format version 3, newer than this npconvnet reads"):
        load_model(tmp_path / "plain.npz")


def test_a_file_written_before_preprocessing_was_recorded_loads_with_the_default(tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    members = read_members(path)
    edit_header(members, lambda h: h.pop("preprocessing"))
    write_members(path, members)
    assert load_model(path).preprocessing is None


def test_saving_an_unknown_preprocessing_is_refused(tmp_path):
    model = trained(plain_net, epochs=1)
    model.preprocessing = "standardize"
    with pytest.raises(ValueError, match="save: model.preprocessing: preprocessing must be None"):
        model.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


# Resuming

def test_resuming_from_a_saved_epoch_gives_the_weights_of_uninterrupted_training(tmp_path):
    """Save after epoch 1 with the optimizer state, load, and fit(initial_epoch=1) with the same
    seed: each epoch's shuffling and dropout come from (seed, epoch), so epoch 2 is replayed exactly."""
    x, y = bar_images(64)

    def fresh():
        npconvnet.manual_seed(0)
        model = batchnorm_dropout_net()
        model.compile(optimizer=Adam(lr=0.01))
        return model

    uninterrupted = fresh()
    uninterrupted.fit(x, y, epochs=3, batch_size=16, seed=11, verbose=0)

    first_part = fresh()
    first_part.fit(x, y, epochs=1, batch_size=16, seed=11, verbose=0)
    first_part.save(tmp_path / "epoch1.npz")
    npconvnet.manual_seed(123)                  # the global generator does not matter
    resumed = load_model(tmp_path / "epoch1.npz")
    resumed.fit(x, y, epochs=3, initial_epoch=1, batch_size=16, seed=11, verbose=0)

    assert_same_state(uninterrupted, resumed)
    assert resumed.history.history == uninterrupted.history.history
    assert resumed.history.epoch == [0, 1, 2]


# Atomic writes

def test_a_crash_before_the_rename_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    previous = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk unplugged")

    monkeypatch.setattr(serialization.os, "replace", crash)
    with pytest.raises(OSError, match="disk unplugged"):
        trained(plain_net, epochs=2).save(path)
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["model.npz"]


def test_a_crash_in_the_middle_of_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    previous = path.read_bytes()

    def half_write(file, **arrays):
        file.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.np, "savez", half_write)
    with pytest.raises(KeyboardInterrupt):
        trained(plain_net, epochs=2).save(path)
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["model.npz"]


def test_a_new_file_is_readable_by_others_like_any_file(tmp_path):
    trained(plain_net, epochs=1).save(tmp_path / "model.npz")
    assert os.stat(tmp_path / "model.npz").st_mode & 0o777 == 0o644


# Bad files: each is sealed with a matching digest, as a file edited on purpose can be, so that
# what loading checks beyond the digest is tested.

def unknown_layer(members):
    edit_header(members, lambda h: h["architecture"]["config"]["layers"][1].update({"class": "Swish"}))


def missing_array(members):
    del members["weights/4.bias.npy"]


def extra_array(members):
    members["weights/9.weight.npy"] = npy_bytes(np.zeros(3, np.float32))


def wrong_shape(members):
    members["weights/4.weight.npy"] = npy_bytes(np.zeros((2, 99), np.float32))


def wrong_dtype(members):
    members["weights/4.weight.npy"] = npy_bytes(np.zeros((2, 100), np.float64))


def huge_declared_shape(members):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (2**40, 100)})
    members["weights/4.weight.npy"] = buffer.getvalue() + bytes(800)      # the real size


def huge_declared_header(members):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (2**40,)})
    members["model.json.npy"] = buffer.getvalue() + members["model.json.npy"][128:]


def pickled_object_array(members):
    members["weights/4.weight.npy"] = npy_bytes(np.array(["pickled"] * 200, dtype=object), allow_pickle=True)


def pickled_header(members):
    members["model.json.npy"] = npy_bytes(np.array([{"format": "npconvnet-model"}], dtype=object),
                                          allow_pickle=True)


def huge_architecture(members):
    edit_header(members, lambda h: h["architecture"]["config"]["layers"][4]["config"].update(
        {"in_features": 10**6, "out_features": 10**6}))


def newer_format(members):
    edit_header(members, lambda h: h.update(format_version=99))


def unknown_preprocessing(members):
    edit_header(members, lambda h: h.update(preprocessing="standardize"))


def bad_layer_arguments(members):
    edit_header(members, lambda h: h["architecture"]["config"]["layers"][0]["config"].update(kernel_size="big"))


def not_a_model_header(members):
    members["model.json.npy"] = npy_bytes(np.frombuffer(b'{"hello": 1}', np.uint8))


def invalid_json(members):
    members["model.json.npy"] = npy_bytes(np.frombuffer(b'{"format": ', np.uint8))


def no_header(members):
    del members["model.json.npy"]


def unknown_optimizer(members):
    edit_header(members, lambda h: h["compile"]["optimizer"].update({"class": "Lion"}))


def bad_optimizer_buffer(members):
    members["optimizer/0.exp_avg.npy"] = npy_bytes(np.zeros(7, np.float32))


def bad_history(members):
    edit_header(members, lambda h: h["history"]["history"].update(loss="low"))


@pytest.mark.parametrize("corrupt, message", [
    (unknown_layer, "unknown layer 'Swish'"),
    (missing_array, r"missing \['weights/4.bias'\]"),
    (extra_array, r"unexpected \['weights/9.weight'\]"),
    (wrong_shape, r"weights/4.weight has shape \(2, 99\).*expected \(2, 100\) float32"),
    (wrong_dtype, "weights/4.weight has shape .* and dtype float64"),
    (huge_declared_shape, r"weights/4.weight has shape \(1099511627776, 100\)"),
    (huge_declared_header, "the model.json header declares 1,099,511,627,776 bytes in a member of"),
    (pickled_object_array, "dtype object"),
    (pickled_header, "header must be a 1-D uint8 array, got object"),
    (huge_architecture, r"declares at least 4,000,000,000,\d+ bytes of weights"),
    (newer_format, "format version 99.*upgrade npconvnet"),
    (bad_layer_arguments, r"invalid architecture: architecture\.0: bad arguments for Conv2D"),
    (not_a_model_header, "not an npconvnet model file"),
    (invalid_json, "not valid UTF-8 JSON"),
    (no_header, "not an npconvnet model file"),
    (unknown_optimizer, "unknown optimizer 'Lion'"),
    (bad_optimizer_buffer, r"optimizer/0.exp_avg has shape \(7,\)"),
    (bad_history, "History"),
    (unknown_preprocessing, "preprocessing must be null or 'center', got 'standardize'"),
])
def test_a_damaged_model_file_raises_model_file_error_naming_the_file(corrupt, message, tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    members = read_members(path)
    corrupt(members)
    write_members(path, members)
    with pytest.raises(ModelFileError, match=message) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("content", [
    b"just some text, not a model\n",
    bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
    b"",
])
def test_a_file_that_is_not_an_archive_raises_model_file_error(content, tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not an npconvnet model file") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_a_truncated_file_raises_model_file_error(tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(ModelFileError, match=str(path)):
        load_model(path)


def test_a_single_npy_array_is_not_a_model(tmp_path):
    path = tmp_path / "model.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ModelFileError, match="single .npy array"):
        load_model(path)


def test_a_member_whose_data_is_cut_short_raises_model_file_error(tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    members = read_members(path)
    members["weights/4.weight.npy"] = members["weights/4.weight.npy"][:-40]
    write_members(path, members)
    with pytest.raises(ModelFileError, match=str(path)):
        load_model(path)


def declare_size(path, member, size):
    """Overwrite the uncompressed size the zip's central directory declares for ``member``."""
    raw = bytearray(path.read_bytes())
    end_record = raw.rfind(b"PK\x05\x06")
    entry = int.from_bytes(raw[end_record + 16:end_record + 20], "little")   # first directory entry
    while raw[entry:entry + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = (
            int.from_bytes(raw[entry + offset:entry + offset + 2], "little") for offset in (28, 30, 32))
        if raw[entry + 46:entry + 46 + name_length] == member.encode():
            raw[entry + 24:entry + 28] = size.to_bytes(4, "little")
        entry += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(raw))


def test_an_archive_declaring_far_more_content_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    declare_size(path, "weights/4.weight.npy", 4_000_000_000)
    with pytest.raises(ModelFileError, match="declares .* bytes of content in a file of"):
        load_model(path)


def test_a_member_declaring_more_bytes_than_its_array_needs_is_refused_unread(tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    declare_size(path, "weights/4.weight.npy", 20_000)
    with pytest.raises(ModelFileError, match="weights/4.weight declares 20,000 bytes, more than its expected 800"):
        load_model(path)


def test_a_missing_file_raises_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_model(tmp_path / "nothing.npz")


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


# Every argument of a layer in an architecture is checked by the layer itself (its constructor)

def conv(**changes):
    config = {"in_channels": 1, "out_channels": 4, "kernel_size": 3, "stride": 1, "padding": 1,
              "bias": True, "weight_init": "auto"}
    return {"class": "Conv2D", "config": {**config, **changes}}


@pytest.mark.parametrize("config, message", [
    (conv(in_channels="3"), "in_channels must be a positive int, got '3'"),
    (conv(out_channels=True), "out_channels must be a positive int, got True"),
    (conv(in_channels=0), "in_channels must be a positive int, got 0"),
    (conv(in_channels=2.0), "in_channels must be a positive int, got 2.0"),
    (conv(kernel_size=[3]), r"kernel_size must be an int or a pair of ints, got \[3\]"),
    (conv(kernel_size=[3, 3, 3]), "kernel_size must be an int or a pair of ints"),
    (conv(stride=[1, 0]), r"stride must be positive, got .*stride=\[1, 0\]"),
    (conv(padding="wide"), "padding must be 'valid', 'same', 'full', an int or a pair, got 'wide'"),
    (conv(padding=-1), "padding must not be negative"),
    (conv(padding=[[1, 1], [1]]), "padding must be"),
    (conv(bias="yes"), "bias must be True or False, got 'yes'"),
    (conv(bias=1), "bias must be True or False, got 1"),
    (conv(weight_init="zeros"), r"weight_init must be one of \['auto', 'he_normal'"),
    (conv(activation="swish"), "activation must be None or one of"),
    (conv(kernel_regularizer="l2"), "kernel_regularizer must be None or a regularizer"),
    (conv(kernel_regularizer={"l2": -1}), "l2 must be a finite number >= 0, got -1"),
    (conv(dilation=2), r"unexpected keyword argument 'dilation'; Conv2D takes \['in_channels'"),
    ({"class": "Dense", "config": {"in_features": 4}}, r"missing a required argument: 'out_features'"),
    ({"class": "Dropout", "config": {"p": "0.5"}}, r"p must be a finite number in \[0, 1\], got '0.5'"),
    ({"class": "Dropout", "config": {"p": True}}, r"p must be a finite number in \[0, 1\], got True"),
    ({"class": "Dropout", "config": {"p": 1.5}}, r"p must be a finite number in \[0, 1\], got 1.5"),
    ({"class": "Dropout", "config": {"p": float("nan")}}, r"p must be a finite number in \[0, 1\], got nan"),
    ({"class": "BatchNorm2D", "config": {"num_features": 4, "eps": 0}}, "eps must be a finite number > 0"),
    ({"class": "BatchNorm1D", "config": {"num_features": True}}, "num_features must be an int >= 1"),
    ({"class": "BatchNorm2D", "config": {"num_features": 4, "momentum": 2}}, r"momentum must be a finite number in \[0, 1\]"),
    ({"class": "LeakyReLU", "config": {"negative_slope": "x"}}, "negative_slope must be a finite number"),
    ({"class": "LeakyReLU", "config": {"negative_slope": float("nan")}}, "negative_slope must be a finite number"),
    ({"class": "MaxPool2D", "config": {"kernel_size": 2, "stride": "2"}}, "stride must be an int or a pair of ints"),
    ({"class": "AvgPool2D", "config": {"kernel_size": 2, "padding": "same"}}, "padding must be an int or a pair"),
    ({"class": "ReLU", "config": {"inplace": True}}, r"unexpected keyword argument 'inplace'; ReLU takes no arguments"),
    ({"class": "Sequential", "config": {"layers": {"0": conv()}}}, "layers must be a list of layer configs"),
    ({"class": "Residual", "config": {"block": None}}, "a layer must be {'class': ..., 'config': {...}}, got None"),
    ({"class": "Residual", "config": {}}, r"missing a required argument: 'block'"),
    ({"class": 7, "config": {}}, "unknown layer 7"),
])
def test_ill_typed_layer_arguments_are_named_by_the_layer(config, message):
    with pytest.raises(ValueError, match=r"^architecture(\.block)?: .*" + message):
        layer_from_config(config)


def test_a_bad_argument_deep_inside_nested_blocks_is_named_with_its_place():
    block = {"class": "Sequential", "config": {"layers": [conv(), {"class": "Dropout", "config": {"p": "high"}}]}}
    config = {"class": "Sequential", "config": {"layers": [
        conv(), {"class": "Residual", "config": {"block": block, "shortcut": None}}]}}
    with pytest.raises(ValueError, match=r"architecture\.1\.block\.1: bad arguments for Dropout: .*p must be"):
        layer_from_config(config)


def test_every_built_in_layer_rebuilds_from_its_own_config():
    for layer in [Conv2D(2, 3, (2, 3), stride=2, padding=((1, 0), (0, 2)), bias=False, activation="tanh",
                         kernel_regularizer=npconvnet.regularizers.l1_l2(0.1, 0.2)),
                  Dense(3, 2, weight_init="he_uniform", activation="softmax"), MaxPool2D(3, 2, 1), AvgPool2D(2),
                  GlobalAvgPool2D(), Flatten(), ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh(), Softmax(), Dropout(0.3),
                  BatchNorm1D(3, eps=1e-3, momentum=0.2), BatchNorm2D(2),
                  Residual(Conv2D(2, 2, 1), shortcut=npconvnet.layers.Sequential(Conv2D(2, 2, 1))),
                  npconvnet.layers.Sequential(ReLU(), Dense(2, 2))]:
        config = layer_to_config(layer)
        rebuilt = layer_from_config(json.loads(json.dumps(config)))
        assert type(rebuilt) is type(layer)
        assert json.loads(json.dumps(layer_to_config(rebuilt))) == json.loads(json.dumps(config))


def ill_typed_argument(members):
    edit_header(members, lambda h: h["architecture"]["config"]["layers"][4]["config"].update(out_features="2"))


def huge_padding(members):
    edit_header(members, lambda h: h["architecture"]["config"]["layers"][0]["config"].update(padding=10**5))


def input_shape_of_other_channels(members):
    edit_header(members, lambda h: h.update(input_shape=[3, 10, 10]))


def input_shape_too_small(members):
    edit_header(members, lambda h: h.update(input_shape=[1, 1, 1]))


@pytest.mark.parametrize("corrupt, message", [
    (ill_typed_argument, "architecture.4: bad arguments for Dense: .*out_features must be a positive int, got '2'"),
    (huge_padding, r"activations of 160,012,800,256 values for one sample of shape \[1, 10, 10\]"),
    (input_shape_of_other_channels, r"does not fit its input_shape \[3, 10, 10\]: .*expected 1 channels"),
    (input_shape_too_small, r"does not fit its input_shape \[1, 1, 1\]"),
])
def test_an_architecture_that_cannot_run_is_refused_before_any_weight_is_read(corrupt, message, tmp_path):
    path = tmp_path / "model.npz"
    trained(plain_net, epochs=1).save(path)
    members = read_members(path)
    corrupt(members)
    write_members(path, members)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_a_text_file_is_refused_without_talk_of_pickles(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("my notes\n")
    with pytest.raises(ModelFileError, match="not an .npz archive") as error:
        load_model(path)
    assert "pickle" not in str(error.value)


# Non-finite weights: refused on load as on save, unless asked for

def diverged(path):
    """A model file (written with allow_nonfinite=True) with a NaN and an infinite weight."""
    model = trained(plain_net, epochs=1)
    model.layers[0].weight.data[0, 0, 0, 0] = np.nan
    model.layers[4].bias.data[1] = np.inf
    model.save(path, allow_nonfinite=True)
    return model


def test_a_model_file_with_nonfinite_weights_is_refused_naming_them(tmp_path):
    diverged(tmp_path / "model.npz")
    with pytest.raises(ModelFileError, match=r"weights/0.weight, weights/4.bias hold NaN or infinite "
                                             r"values .*allow_nonfinite=True") as caught:
        load_model(tmp_path / "model.npz")
    assert str(caught.value).startswith(str(tmp_path / "model.npz"))


def test_allow_nonfinite_loads_nonfinite_weights(tmp_path):
    model = diverged(tmp_path / "model.npz")
    assert_same_state(load_model(tmp_path / "model.npz", allow_nonfinite=True), model)


def test_a_checkpoint_with_nonfinite_weights_is_refused_unless_allowed(tmp_path):
    model = trained(plain_net, epochs=1)
    x, y = bar_images(32)
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path)
    members = read_members(tmp_path / "checkpoint.npz")
    members["weights/4.weight.npy"] = npy_bytes(np.full((2, 100), np.nan, np.float32))
    write_members(tmp_path / "checkpoint.npz", members)
    with pytest.raises(ModelFileError, match="weights/4.weight hold NaN or infinite values"):
        load_checkpoint(tmp_path / "checkpoint.npz")
    restored, training = load_checkpoint(tmp_path / "checkpoint.npz", allow_nonfinite=True)
    assert np.isnan(restored.layers[4].weight.data).all() and training["next_epoch"] == 2


# Weights files: Keras's save_weights and load_weights

def test_weights_load_into_a_model_built_the_same_way(tmp_path):
    model = trained(batchnorm_dropout_net)
    assert serialization.save_weights(model, tmp_path / "weights.npz") == str(tmp_path / "weights.npz")
    npconvnet.manual_seed(1)
    other = batchnorm_dropout_net()
    assert serialization.load_weights(other, tmp_path / "weights.npz") is other
    assert_same_state(other, model)
    x, _ = bar_images(20, seed=1)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_a_weights_file_holds_the_header_every_parameter_and_buffer_and_the_digest(tmp_path):
    model = trained(batchnorm_dropout_net, epochs=1)
    serialization.save_weights(model, tmp_path / "weights.npz")
    members = read_members(tmp_path / "weights.npz")
    assert set(members) == ({"model.json.npy", "digest.npy"}
                            | {f"weights/{name}.npy" for name in model.state_dict()})
    assert "weights/1.running_mean.npy" in members
    assert header_of(members) == {"format": "npconvnet-weights", "format_version": 3,
                                  "npconvnet_version": npconvnet.__version__}
    assert np.load(io.BytesIO(members["digest.npy"])).tobytes() == digest_of(members)


def test_weights_load_from_a_model_file_and_from_a_checkpoint(tmp_path):
    model = trained(plain_net, epochs=1)
    model.save(tmp_path / "model.npz")
    x, y = bar_images(32)
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path)
    for name, expected in [("model.npz", load_model(tmp_path / "model.npz")), ("checkpoint.npz", model)]:
        npconvnet.manual_seed(1)
        assert_same_state(serialization.load_weights(plain_net(), tmp_path / name), expected)


def test_weights_load_from_a_model_file_of_format_version_1(tmp_path):
    model = trained(plain_net, epochs=1)
    model.save(tmp_path / "model.npz")
    write_members(tmp_path / "model.npz", as_format_version(read_members(tmp_path / "model.npz"), 1))
    npconvnet.manual_seed(1)
    assert_same_state(serialization.load_weights(plain_net(), tmp_path / "model.npz"), model)


def wider_first_layer():
    return Sequential(Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(200, 2))


def more_classes():
    return Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 3))


def one_more_layer():
    return Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 2), ReLU(),
                      Dense(2, 2))


def one_layer_less():
    return Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten())


def float64_net():
    return plain_net().astype(np.float64)


@pytest.mark.parametrize("build, message", [
    (wider_first_layer, r"weights/0.weight has shape \(4, 1, 3, 3\) and dtype float32; expected \(8, 1, 3, 3\) float32"),
    (more_classes, r"weights/4.weight has shape \(2, 100\) and dtype float32; expected \(3, 100\) float32"),
    (one_more_layer, r"the model's 6.weight \(shape \(2, 2\), float32\) is not in the file"),
    (one_layer_less, r"weights/4.weight is not in the model \(the file holds 4 weight arrays, the model 2\)"),
    (float64_net, r"weights/0.weight has shape \(4, 1, 3, 3\) and dtype float32; expected \(4, 1, 3, 3\) float64"),
])
def test_weights_of_another_architecture_are_refused_naming_the_first_mismatch_and_change_nothing(
        build, message, tmp_path):
    serialization.save_weights(trained(plain_net, epochs=1), tmp_path / "weights.npz")
    npconvnet.manual_seed(1)
    model = build()
    before = model.state_dict()
    with pytest.raises(ModelFileError, match="the weights do not fit this model .*: " + message) as caught:
        serialization.load_weights(model, tmp_path / "weights.npz")
    assert str(caught.value).startswith(str(tmp_path / "weights.npz"))
    after = model.state_dict()
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_a_changed_weights_file_is_refused_and_changes_nothing(tmp_path):
    serialization.save_weights(trained(plain_net, epochs=1), tmp_path / "weights.npz")
    members = read_members(tmp_path / "weights.npz")
    data = bytearray(members["weights/4.weight.npy"])
    data[-1] ^= 0x10
    members["weights/4.weight.npy"] = bytes(data)
    write_members(tmp_path / "weights.npz", members, seal=False)
    npconvnet.manual_seed(1)
    model = plain_net()
    before = model.state_dict()
    with pytest.raises(ModelFileError, match="changed or damaged after it was written"):
        serialization.load_weights(model, tmp_path / "weights.npz")
    assert all(np.array_equal(before[name], value) for name, value in model.state_dict().items())


def test_a_weights_file_with_other_arrays_is_refused(tmp_path):
    serialization.save_weights(trained(plain_net, epochs=1), tmp_path / "weights.npz")
    members = read_members(tmp_path / "weights.npz")
    members["optimizer/0.exp_avg.npy"] = npy_bytes(np.zeros((4, 1, 3, 3), np.float32))
    write_members(tmp_path / "weights.npz", members)
    with pytest.raises(ModelFileError, match=r"unexpected members \['optimizer/0.exp_avg'\]"):
        serialization.load_weights(plain_net(), tmp_path / "weights.npz")


def test_nonfinite_weights_are_refused_by_save_weights_and_load_weights_unless_allowed(tmp_path):
    model = diverged(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="save_weights: refusing to write .*0.weight, 4.bias hold NaN"):
        serialization.save_weights(model, tmp_path / "weights.npz")
    assert not (tmp_path / "weights.npz").exists()
    serialization.save_weights(model, tmp_path / "weights.npz", allow_nonfinite=True)
    npconvnet.manual_seed(1)
    other = plain_net()
    before = other.state_dict()
    with pytest.raises(ModelFileError, match="weights/0.weight, weights/4.bias hold NaN or infinite values"):
        serialization.load_weights(other, tmp_path / "weights.npz")
    assert all(np.array_equal(before[name], value) for name, value in other.state_dict().items())
    assert_same_state(serialization.load_weights(other, tmp_path / "weights.npz", allow_nonfinite=True), model)


def test_load_model_explains_that_a_weights_file_holds_no_architecture(tmp_path):
    serialization.save_weights(plain_net(), tmp_path / "weights.npz")
    with pytest.raises(ModelFileError, match=r"a weights file \(written by save_weights\) holds no "
                                             r"architecture: build the model and call load_weights"):
        load_model(tmp_path / "weights.npz")


def test_a_crash_while_saving_weights_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.npz"
    serialization.save_weights(trained(plain_net, epochs=1), path)
    previous = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk unplugged")

    monkeypatch.setattr(serialization.os, "replace", crash)
    with pytest.raises(OSError, match="disk unplugged"):
        serialization.save_weights(trained(plain_net, epochs=2), path)
    assert path.read_bytes() == previous and os.listdir(tmp_path) == ["weights.npz"]


@pytest.mark.parametrize("call", [serialization.save_weights, serialization.load_weights])
def test_weights_functions_take_a_layer(call, tmp_path):
    with pytest.raises(TypeError, match=f"{call.__name__}: expected a layer or model, got dict"):
        call({"0.weight": np.zeros(3)}, tmp_path / "weights.npz")


def test_load_weights_of_a_missing_file_raises_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_weights: no such file: .*nothing.npz"):
        serialization.load_weights(plain_net(), tmp_path / "nothing.npz")


def test_the_model_saves_and_loads_its_weights_the_keras_way(tmp_path, rng):
    model = Sequential(Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(2 * 4 * 4, 3))
    other = Sequential(Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(2 * 4 * 4, 3))
    model.save_weights(tmp_path / "weights.npz")
    assert other.load_weights(tmp_path / "weights.npz") is other
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), other.forward(x))


def test_weights_of_another_architecture_are_refused_and_change_nothing(tmp_path):
    Sequential(Dense(4, 3)).save_weights(tmp_path / "weights.npz")
    other = Sequential(Dense(4, 2))
    before = other.state_dict()
    with pytest.raises(ModelFileError, match="0.weight"):
        other.load_weights(tmp_path / "weights.npz")
    np.testing.assert_array_equal(other.state_dict()["0.weight"], before["0.weight"])
