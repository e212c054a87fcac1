"""compile / fit / evaluate / predict: the Keras workflow on a Sequential."""

import io
import json
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import npconvnet
from npconvnet import callbacks, data, rng
from npconvnet.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax)
from npconvnet import Sequential
from npconvnet.layers.activations import softmax
from npconvnet.losses import CrossEntropyLoss, MSELoss
from npconvnet.optim import SGD, Adam
from synthetic import bar_images


def small_convnet(dropout=0.0):
    layers = [Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten()]
    layers += [Dropout(dropout)] if dropout else []
    return Sequential(layers + [Dense(4 * 5 * 5, 2)])


def compiled_convnet(lr=0.01, dropout=0.0, seed=0):
    npconvnet.manual_seed(seed)
    model = small_convnet(dropout)
    model.compile(optimizer=Adam(lr=lr), loss="cross_entropy", metrics=["accuracy"])
    return model


def weights_of(model):
    return model.state_dict()


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# compile

def test_compile_accepts_names():
    model = small_convnet()
    model.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
    assert isinstance(model.optimizer, SGD) and isinstance(model.loss, CrossEntropyLoss)
    assert model.metric_names == ["accuracy"]


def test_compile_binds_an_optimizer_object_to_the_model_parameters():
    model = small_convnet()
    optimizer, loss = Adam(lr=0.003), MSELoss()
    model.compile(optimizer=optimizer, loss=loss)
    assert model.optimizer is optimizer and model.loss is loss
    assert all(a is b for a, b in zip(optimizer.params, model.parameters()))


def test_compile_accepts_an_optimizer_already_bound_to_the_model():
    model = small_convnet()
    optimizer = SGD(model.parameters(), lr=0.1)
    model.compile(optimizer=optimizer)
    assert model.optimizer is optimizer


def test_compile_rejects_an_optimizer_of_other_parameters():
    with pytest.raises(ValueError, match="other parameters"):
        small_convnet().compile(optimizer=SGD(small_convnet().parameters()))


def test_compile_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown metric"):
        small_convnet().compile(metrics=["accuracy", "auc"])
    with pytest.raises(ValueError, match="unknown loss"):
        small_convnet().compile(loss="hinge")


def test_fit_before_compile_tells_to_call_compile():
    x, y = bar_images(8)
    with pytest.raises(RuntimeError, match=r"call model\.compile\("):
        small_convnet().fit(x, y)


# fit

def test_fit_drives_the_loss_down_to_high_accuracy():
    x, y = bar_images(300)
    model = compiled_convnet()
    history = model.fit(x, y, epochs=6, batch_size=16, seed=0, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] / 4
    x_test, y_test = bar_images(200, seed=1)
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.95


def test_the_same_seed_gives_bit_identical_weights_and_history():
    x, y = bar_images(96)
    runs = []
    for _ in range(2):
        model = compiled_convnet(dropout=0.3)
        history = model.fit(x, y, epochs=2, batch_size=16, augment=True, seed=7, verbose=0)
        runs.append((weights_of(model), history.history))
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_a_different_seed_gives_different_weights():
    x, y = bar_images(96)
    first, second = compiled_convnet(dropout=0.3), compiled_convnet(dropout=0.3)
    first.fit(x, y, epochs=1, batch_size=16, seed=1, verbose=0)
    second.fit(x, y, epochs=1, batch_size=16, seed=2, verbose=0)
    assert not np.array_equal(first.parameters()[0].data, second.parameters()[0].data)


def test_a_seeded_fit_leaves_the_global_generator_as_it_was():
    x, y = bar_images(32)
    model = compiled_convnet(dropout=0.3)
    before = rng.get_state()
    model.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
    assert rng.get_state() == before


def test_uint8_images_in_any_layout_train_like_scaled_float_nchw():
    x, y = bar_images(64)
    layouts = [x, x[..., None], data.to_nchw(data.scale(x))]
    results = []
    for images in layouts:
        model = compiled_convnet()
        model.fit(images, y, epochs=1, batch_size=16, seed=0, verbose=0)
        results.append(weights_of(model))
    assert_same_weights(results[0], results[1])
    assert_same_weights(results[0], results[2])


def test_centered_preprocessing_trains_like_pixels_shifted_by_hand():
    x, y = bar_images(64)
    centered = compiled_convnet()
    centered.preprocessing = "center"
    centered.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    by_hand = compiled_convnet()
    by_hand.fit(x.astype(np.float32) / np.float32(255) - np.float32(0.5), y, epochs=1, batch_size=16,
                seed=0, verbose=0)
    assert_same_weights(weights_of(centered), weights_of(by_hand))


def test_centered_preprocessing_shifts_uint8_and_unit_float_pixels_for_predict_and_evaluate():
    x, y = bar_images(20)
    model = compiled_convnet()
    shifted = model.predict(x / 255.0 - 0.5)
    scores = model.evaluate(x / 255.0 - 0.5, y)
    model.preprocessing = "center"
    np.testing.assert_allclose(model.predict(x), shifted, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict(x / np.float32(255)), shifted, rtol=1e-5, atol=1e-7)
    assert model.evaluate(x, y) == pytest.approx(scores, rel=1e-5)


def test_preprocess_input_is_what_the_first_layer_gets():
    x, _ = bar_images(3)
    model = small_convnet()
    model.preprocessing = "center"
    inputs = model.preprocess_input(x)
    assert inputs.shape == (3, 1, 10, 10) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[:, 0], x / np.float32(255) - np.float32(0.5))


@pytest.mark.parametrize("value", ["scale", "centre", 0.5])
def test_an_unknown_preprocessing_is_rejected_with_the_values_it_may_take(value):
    x, y = bar_images(8)
    model = compiled_convnet()
    model.preprocessing = value
    with pytest.raises(ValueError, match=r"predict: model.preprocessing: preprocessing must be "
                                         r"None .* or 'center'"):
        model.predict(x)
    with pytest.raises(ValueError, match="fit: model.preprocessing"):
        model.fit(x, y, verbose=0)


def test_resuming_with_another_preprocessing_is_refused(tmp_path):
    x, y = bar_images(32)
    model = compiled_convnet()
    model.preprocessing = "center"
    model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="trained with preprocessing='center', this model has "
                                         "preprocessing=None"):
        compiled_convnet().fit(x, y, epochs=2, batch_size=16, seed=0, verbose=0,
                               resume_from=tmp_path / "checkpoint.npz")


def test_one_hot_targets_train_like_integer_labels():
    x, y = bar_images(64)
    labels_model, one_hot_model = compiled_convnet(), compiled_convnet()
    labels_model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    one_hot_model.fit(x, data.one_hot(y, 2), epochs=1, batch_size=16, seed=0, verbose=0)
    assert_same_weights(weights_of(labels_model), weights_of(one_hot_model))


def test_mse_loss_trains_on_integer_labels_as_one_hot_rows():
    x, y = bar_images(200)
    npconvnet.manual_seed(0)
    model = small_convnet()
    model.compile(optimizer=Adam(lr=0.01), loss="mse")
    history = model.fit(x, y, epochs=4, batch_size=16, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert history.history["accuracy"][-1] > 0.9


def test_augment_gets_every_float_nchw_training_batch_and_the_epoch_generator():
    x, y = bar_images(40)
    seen = []

    def augment(batch, rng=None):
        seen.append((batch.shape, batch.dtype, type(rng)))
        return batch

    compiled_convnet().fit(x, y, epochs=1, batch_size=16, augment=augment, seed=0, verbose=0)
    assert seen == [((16, 1, 10, 10), np.float32, np.random.Generator)] * 2 + \
        [((8, 1, 10, 10), np.float32, np.random.Generator)]


def test_augment_true_uses_the_default_augmenter_and_changes_training():
    x, y = bar_images(64)
    plain, augmented = compiled_convnet(), compiled_convnet()
    plain.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    augmented.fit(x, y, epochs=1, batch_size=16, seed=0, augment=True, verbose=0)
    assert not np.array_equal(plain.parameters()[0].data, augmented.parameters()[0].data)


def test_validation_split_holds_out_the_last_samples():
    x, y = bar_images(100)
    model = compiled_convnet()
    seen = {}

    class Record(callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.update(self.params)

    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, callbacks=[Record()],
                        seed=0, verbose=0)
    assert seen["samples"] == 80
    final = model.evaluate(x[80:], y[80:])
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == final["accuracy"]


def test_history_holds_one_value_per_epoch_for_every_logged_quantity():
    x, y = bar_images(64)
    model = compiled_convnet(lr=0.02)
    history = model.fit(x, y, epochs=3, batch_size=16, validation_data=(x[:20], y[:20]), seed=0, verbose=0)
    assert history.epoch == [0, 1, 2]
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert all(len(values) == 3 for values in history.history.values())
    assert history.history["lr"] == [0.02, 0.02, 0.02]
    assert all(0 <= value <= 1 for value in history.history["val_accuracy"])


def test_the_training_logs_are_the_sample_weighted_means_of_the_epoch():
    x, y = bar_images(40)
    model = compiled_convnet()
    batch_losses = []

    class Record(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            batch_losses.append(logs["loss"])

    history = model.fit(x, y, epochs=1, batch_size=16, shuffle=False, callbacks=[Record()], verbose=0)
    # running means after batches of 16, 16 and 8 samples: the last one is the epoch's loss
    assert history.history["loss"] == [batch_losses[-1]]
    assert len(batch_losses) == 3


def test_model_history_accumulates_over_fit_calls_while_fit_returns_its_own_epochs():
    x, y = bar_images(32)
    model = compiled_convnet()
    model.fit(x, y, epochs=2, batch_size=16, seed=0, verbose=0)
    second = model.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, seed=0, verbose=0)
    assert second.epoch == [2]
    assert model.history.epoch == [0, 1, 2]


def test_history_round_trips_through_json():
    x, y = bar_images(32)
    history = compiled_convnet().fit(x, y, epochs=2, batch_size=16, validation_split=0.25, seed=0, verbose=0)
    restored = callbacks.History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert restored.history == history.history and restored.epoch == history.epoch


def test_fit_trains_in_training_mode_and_restores_the_previous_mode():
    x, y = bar_images(32)
    model = compiled_convnet(dropout=0.5)
    modes = []

    class Record(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            modes.append(self.model.layers[4].training)

    model.eval()
    model.fit(x, y, epochs=1, batch_size=16, validation_split=0.5, callbacks=[Record()], seed=0, verbose=0)
    assert modes == [True]
    assert model.training is False and model.layers[4].training is False


def test_fit_sets_the_model_input_shape_from_the_data():
    x, y = bar_images(16)
    model = compiled_convnet()
    model.fit(x, y, batch_size=16, verbose=0)
    assert model.input_shape == (1, 10, 10)


# Bad input

@pytest.mark.parametrize("arguments, message", [
    ({"epochs": 0}, "epochs must be an int >= 1"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"validation_split": 1.0}, r"validation_split must be in \[0, 1\)"),
    ({"validation_split": -0.1}, r"validation_split must be in \[0, 1\)"),
    ({"epochs": 2, "initial_epoch": 2}, "leaves no epoch to train"),
    ({"validation_data": ([1, 2],)}, "pair"),
])
def test_bad_fit_arguments_are_rejected(arguments, message):
    x, y = bar_images(16)
    with pytest.raises(ValueError, match=message):
        compiled_convnet().fit(x, y, verbose=0, **arguments)


def test_x_and_y_of_different_lengths_are_rejected():
    x, y = bar_images(16)
    with pytest.raises(ValueError, match="x has 16 samples but y has 15"):
        compiled_convnet().fit(x, y[:15], verbose=0)


def test_labels_outside_the_model_classes_are_rejected():
    x, y = bar_images(16)
    y[3] = 2
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\).*from 0 to 2"):
        compiled_convnet().fit(x, y, verbose=0)


def test_float_labels_are_rejected_with_a_hint():
    x, y = bar_images(16)
    with pytest.raises(TypeError, match=r"must be integers.*astype\(int\)"):
        compiled_convnet().fit(x, y.astype(float), verbose=0)


def test_one_hot_targets_of_the_wrong_width_are_rejected():
    x, y = bar_images(16)
    with pytest.raises(ValueError, match=r"\(N, 2\), got shape \(16, 3\)"):
        compiled_convnet().fit(x, np.eye(3)[y], verbose=0)


def test_images_of_the_wrong_size_name_the_failing_layer():
    x, y = bar_images(16, size=12)
    with pytest.raises(ValueError, match=r"fit: samples of shape \(12, 12\).*layer 4.*Dense"):
        compiled_convnet().fit(x, y, verbose=0)


def test_images_with_the_wrong_channel_count_are_rejected():
    x = np.zeros((4, 3, 10, 10), np.float32)
    with pytest.raises(ValueError, match="expects 1 channels"):
        compiled_convnet().predict(x)


def test_images_not_matching_the_model_input_shape_are_rejected():
    model = compiled_convnet()
    model.input_shape = (1, 10, 10)
    with pytest.raises(ValueError, match=r"input_shape \(1, 10, 10\)"):
        model.predict(np.zeros((2, 1, 12, 12), np.float32))


def test_inputs_of_an_unsupported_dtype_are_rejected():
    with pytest.raises(TypeError, match="dtype <U1"):
        compiled_convnet().predict(np.full((2, 10, 10), "a"))


# evaluate and predict

def test_evaluate_returns_the_loss_and_metrics_of_the_whole_set_in_eval_mode():
    x, y = bar_images(50)
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 2, 3), BatchNorm2D(2), ReLU(), Flatten(), Dense(2 * 8 * 8, 2))
    model.compile(optimizer="sgd", metrics=["accuracy", "f1_macro"])
    scores = model.evaluate(x, y, batch_size=16)
    logits = model.eval().forward(data.to_nchw(data.scale(x)))
    assert set(scores) == {"loss", "accuracy", "f1_macro"}
    assert scores["loss"] == pytest.approx(CrossEntropyLoss()(logits, y), rel=1e-6)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y))


def test_evaluate_changes_no_batchnorm_statistics():
    x, y = bar_images(50)
    model = Sequential(Conv2D(1, 2, 3), BatchNorm2D(2), ReLU(), Flatten(), Dense(2 * 8 * 8, 2))
    model.compile()
    before = weights_of(model)
    model.evaluate(x, y)
    assert_same_weights(before, weights_of(model))
    assert model.training is True


def test_predict_is_the_softmax_of_the_eval_mode_outputs():
    x, _ = bar_images(30)
    model = compiled_convnet(dropout=0.5)
    probabilities = model.predict(x)
    expected = softmax(model.eval().forward(data.to_nchw(data.scale(x))), axis=1)
    assert probabilities.shape == (30, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)


def test_batched_predict_equals_unbatched_predict():
    x, _ = bar_images(50)
    model = compiled_convnet()
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x, batch_size=50),
                               rtol=1e-6, atol=1e-7)


def test_predict_applies_no_second_softmax_after_a_softmax_layer():
    x, _ = bar_images(10)
    model = Sequential(Flatten(), Dense(100, 3), Softmax())
    model.compile(loss="cross_entropy")
    expected = model.eval().forward(data.scale(x).reshape(10, -1))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-6)


def test_predict_returns_raw_outputs_for_mse_models():
    x, _ = bar_images(10)
    model = Sequential(Flatten(), Dense(100, 3))
    model.compile(loss="mse")
    np.testing.assert_allclose(model.predict(x), model.forward(data.scale(x).reshape(10, -1)), rtol=1e-6)


def test_predict_classes_is_the_argmax_of_predict():
    x, _ = bar_images(20)
    model = compiled_convnet()
    np.testing.assert_array_equal(model.predict_classes(x), model.predict(x).argmax(axis=1))


def test_predict_on_100000_memory_mapped_images_stays_in_bounded_memory(tmp_path):
    count, size = 100_000, 16
    images = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=(count, size, size))
    images[:] = (np.arange(count, dtype=np.uint32)[:, None, None] * 7 + np.arange(size)) % 256
    images.flush()
    images = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="r", shape=(count, size, size))
    model = Sequential(Flatten(), Dense(size * size, 3))
    tracemalloc.start()
    probabilities = model.predict(images, batch_size=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_float_copy = count * size * size * 4                         # 102 MB
    assert peak < full_float_copy / 10
    assert probabilities.shape == (count, 3)
    expected = softmax(model.forward(data.scale(np.asarray(images[-5:])).reshape(5, -1)), axis=1)
    np.testing.assert_allclose(probabilities[-5:], expected, rtol=1e-6)


# Looking inside

def test_layer_outputs_gives_every_layers_output_in_evaluation_mode_and_restores_the_mode():
    from npconvnet.training import layer_outputs
    model = small_convnet(dropout=0.5)
    x = model.preprocess_input(bar_images(4)[0])
    model.train()
    outputs = layer_outputs(model, x)
    assert [layer for layer, _ in outputs] == list(model.layers)
    expected = x
    for (layer, output), reference in zip(outputs, model.layers):
        expected = reference.forward(expected) if not isinstance(reference, Dropout) else expected
        np.testing.assert_array_equal(output, expected)
    np.testing.assert_array_equal(outputs[-1][1], model.eval().forward(x))
    assert model.train().training and all(layer.training for layer in model.layers)


def test_layer_outputs_leaves_a_model_in_evaluation_mode_in_it():
    from npconvnet.training import layer_outputs
    model = small_convnet().eval()
    layer_outputs(model, model.preprocess_input(bar_images(2)[0]))
    assert not model.training


# Progress display

def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = bar_images(32)
    compiled_convnet().fit(x, y, epochs=2, batch_size=16, validation_split=0.5, seed=0, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("Epoch 2/2 - ")
    assert "loss: " in lines[1] and "val_accuracy: " in lines[1] and "lr: 0.01" in lines[1]


def test_without_tqdm_the_progress_bar_falls_back_to_one_line_per_epoch(capsys, monkeypatch):
    monkeypatch.setattr(callbacks, "tqdm", None)
    x, y = bar_images(32)
    compiled_convnet().fit(x, y, epochs=3, batch_size=16, seed=0, verbose=1)
    assert [line[:9] for line in capsys.readouterr().out.splitlines()] == \
        ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]


class Terminal(io.StringIO):
    """Standard output as a terminal: what a progress bar writes, kept."""

    def isatty(self):
        return True


@pytest.mark.skipif(callbacks.tqdm is None, reason="the progress bar is drawn by tqdm")
def test_verbose_1_draws_a_progress_bar_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    x, y = bar_images(32)
    compiled_convnet().fit(x, y, epochs=2, batch_size=16, seed=0, verbose=1)
    shown = terminal.getvalue()
    assert "\r" in shown and "Epoch 2/2" in shown and "2/2 [" in shown


@pytest.mark.parametrize("verbose", [1, 2, "auto"])
def test_without_a_terminal_every_verbose_level_prints_one_line_per_epoch(verbose, capsys):
    x, y = bar_images(32)
    compiled_convnet().fit(x, y, epochs=3, batch_size=16, seed=0, verbose=verbose)
    out = capsys.readouterr().out
    assert "\r" not in out
    assert [line[:12] for line in out.splitlines()] == ["Epoch 1/3 - ", "Epoch 2/3 - ", "Epoch 3/3 - "]


@pytest.mark.parametrize("verbose", [3, -1, "yes"])
def test_verbose_must_be_0_1_2_or_auto(verbose):
    x, y = bar_images(32)
    with pytest.raises(ValueError, match="verbose must be 0 .*, 1 .*, 2 .* or 'auto'"):
        compiled_convnet().fit(x, y, epochs=1, batch_size=16, verbose=verbose)


def test_verbose_0_prints_nothing(capsys):
    x, y = bar_images(32)
    compiled_convnet().fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# Learning rate 0

def test_fit_warns_when_an_epoch_starts_at_learning_rate_0():
    x, y = bar_images(32)
    model = compiled_convnet()
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 if epoch == 0 else 0.0)
    with pytest.warns(UserWarning, match=r"fit: epoch 2/2 starts with learning rate 0, so it will "
                                         r"not change the weights") as caught:
        model.fit(x, y, epochs=2, batch_size=16, seed=0, verbose=0, callbacks=[schedule])
    assert len([w for w in caught if "learning rate 0" in str(w.message)]) == 1
    assert caught[0].filename == __file__        # the warning points at the fit call


def test_fit_at_a_positive_learning_rate_warns_nothing():
    x, y = bar_images(32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled_convnet().fit(x, y, epochs=2, batch_size=16, seed=0, verbose=0)


# Real data

@pytest.mark.slow
def test_one_epoch_on_mnist_reaches_97_percent_test_accuracy(mnist_dir):
    from npconvnet.datasets import load_mnist
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_dir)
    npconvnet.manual_seed(0)
    model = Sequential(Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2),
                       Conv2D(8, 16, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(784, 10))
    model.compile(optimizer=Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=1, batch_size=64, seed=0, verbose=0)
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.97


def test_a_float64_model_takes_its_pixels_in_float64_without_float32_rounding(rng):
    model = Sequential(Flatten(), Dense(4, 2)).astype(np.float64)
    x = rng.uniform(0, 1, (3, 2, 2)) + 1e-12          # differences a float32 cannot hold
    prepared = model.preprocess_input(x)
    assert prepared.dtype == np.float64
    np.testing.assert_array_equal(prepared[:, 0], x)


def test_a_float64_model_scales_uint8_pixels_in_float64(rng):
    model = Sequential(Flatten(), Dense(4, 2)).astype(np.float64)
    pixels = rng.integers(0, 256, (3, 2, 2)).astype(np.uint8)
    np.testing.assert_array_equal(model.preprocess_input(pixels)[:, 0], pixels / 255.0)


def test_evaluate_and_predict_take_keras_verbose(rng, capsys):
    model = Sequential(Dense(3, 2))
    model.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
    x, y = rng.standard_normal((5, 3)).astype(np.float32), rng.integers(0, 2, 5)
    model.evaluate(x, y, verbose=0), model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""
    scores = model.evaluate(x, y, verbose=1)
    assert f"loss: {scores['loss']:.4f}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        model.predict(x, verbose=3)
