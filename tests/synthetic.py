"""Small synthetic datasets the tests make themselves."""

import numpy as np


def bar_images(count, seed=0, size=10):
    """uint8 ``(N, size, size)`` noise images; class 0 holds a bright horizontal bar, class 1 a
    vertical one, at a random place: separable by a small convnet."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 60, (count, size, size)).astype(np.uint8)
    labels = generator.integers(0, 2, count)
    positions = generator.integers(1, size - 1, count)
    rows = np.arange(count)
    images[rows[labels == 0], positions[labels == 0], :] = 255
    images[rows[labels == 1], :, positions[labels == 1]] = 255
    return images, labels
