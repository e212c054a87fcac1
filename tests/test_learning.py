"""The engine learns: a small convnet trained by hand on synthetic images."""

import numpy as np

import npconvnet
from npconvnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from npconvnet import Sequential
from npconvnet.losses import CrossEntropyLoss
from npconvnet.optim import Adam


def synthetic_images(rng, count):
    """Class 0: a bright horizontal bar; class 1: a vertical bar; at random places, with noise."""
    images = rng.normal(0, 0.3, (count, 1, 10, 10)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    positions = rng.integers(1, 9, count)
    rows = np.arange(count)
    images[rows[labels == 0], 0, positions[labels == 0], :] += 1.5
    images[rows[labels == 1], 0, :, positions[labels == 1]] += 1.5
    return images, labels


def test_a_few_hundred_steps_drive_the_loss_down():
    npconvnet.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 2))
    loss_fn, optimizer = CrossEntropyLoss(), Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(300):
        images, labels = synthetic_images(rng, 32)
        losses.append(loss_fn(model.forward(images), labels))
        model.backward(loss_fn.backward())
        optimizer.step()
    assert np.mean(losses[:20]) > 0.5
    assert np.mean(losses[-20:]) < 0.05
    images, labels = synthetic_images(rng, 500)
    assert (model.eval().forward(images).argmax(axis=1) == labels).mean() > 0.98
