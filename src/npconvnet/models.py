"""The model that trains: a Sequential of layers with Keras's workflow.

::

    model = npconvnet.Sequential(Conv2D(1, 8, 3, activation="relu"), MaxPool2D(2), Flatten(),
                                 Dense(8 * 13 * 13, 10))
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3)
    model.save("digits.npz")
    model = npconvnet.load_model("digits.npz")

``npconvnet.layers.Sequential`` is the container of layers (a layer itself, as
``torch.nn.Sequential``); this ``Sequential`` is that container with the training methods of
:class:`npconvnet.training.Model` added, as ``keras.Sequential``. Both keep the layers they are
given exactly as they are.
"""

import os

from . import layers, serialization
from .training import Model


class Sequential(Model, layers.Sequential, register=False):
    """Layers applied one after the other, trained with ``compile``/``fit``/``evaluate``/
    ``predict`` and saved with ``save`` (see :mod:`npconvnet.training`).

    The layers are kept as they are given: their weights are never drawn again.

    Args:
        *layers: Layer objects, in order, or one list of them.

    Shape:
        - Input: what the first layer takes; ``fit``, ``evaluate`` and ``predict`` also take
          uint8 pixels and ``(N, H, W)`` or ``(N, H, W, C)`` images (see
          :mod:`npconvnet.training`).
        - Output: what the last layer gives; ``predict`` returns probabilities when the model
          outputs logits.

    Example::

        >>> import os, tempfile
        >>> from npconvnet import optim
        >>> from npconvnet.layers import Dense
        >>> x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)                  # two classes: the sign of feature 0
        >>> model = Sequential(Dense(4, 8, activation="relu"), Dense(8, 2))
        >>> model.compile(optimizer=optim.Adam(lr=0.01), loss="cross_entropy", metrics=["accuracy"])
        >>> model.fit(x, y, epochs=10, batch_size=20, seed=0, verbose=0)
        History(epochs=10, keys=['loss', 'accuracy', 'lr'])
        >>> scores = model.evaluate(x, y)
        >>> sorted(scores), scores["accuracy"] > 0.95
        (['accuracy', 'loss'], True)
        >>> model.predict(x[:3]).shape, model.predict_classes(x[:3]), y[:3]
        ((3, 2), array([1, 0, 0]), array([1, 0, 0]))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     restored = load_model(model.save(os.path.join(folder, "model.npz")))
        >>> bool((restored.predict(x) == model.predict(x)).all())
        True
    """


def load_model(path: str | os.PathLike, compile: bool = True, **options) -> Sequential:
    """Rebuild the model saved in ``path`` with ``model.save`` (see
    :func:`npconvnet.serialization.load_model` for what is checked and the options)."""
    return serialization.load_model(path, compile=compile, model_class=Sequential, **options)


def load_checkpoint(path: str | os.PathLike, **options) -> tuple[Sequential, dict]:
    """``(model, training state)`` from a checkpoint written by ``fit(checkpoint_dir=...)``."""
    return serialization.load_checkpoint(path, model_class=Sequential, **options)
