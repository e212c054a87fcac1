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

from . import layers, serialization
from .training import Model


class Sequential(Model, layers.Sequential, register=False):
    """Layers applied one after the other, trained with ``compile``/``fit``/``evaluate``/
    ``predict`` and saved with ``save`` (see :mod:`npconvnet.training`).

    Args:
        *layers: the layers, in order (or one list of them).

    Shape:
        As its layers: the first layer's input to the last layer's output.

    Example::

        >>> model = Sequential(Dense(4, 8, activation="relu"), Dense(8, 3))
        >>> model.compile(optimizer="adam", loss="cross_entropy")
        >>> model.predict(np.zeros((2, 4), np.float32)).shape
        (2, 3)
    """


def load_model(path, compile=True, **options):
    """Rebuild the model saved in ``path`` with ``model.save`` (see
    :func:`npconvnet.serialization.load_model` for what is checked and the options)."""
    return serialization.load_model(path, compile=compile, model_class=Sequential, **options)


def load_checkpoint(path, **options):
    """``(model, training state)`` from a checkpoint written by ``fit(checkpoint_dir=...)``."""
    return serialization.load_checkpoint(path, model_class=Sequential, **options)
