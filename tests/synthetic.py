"""Small synthetic datasets, files and weights the tests make themselves."""

import struct
import zlib

import numpy as np

from npconvnet.layers import BatchNorm1D, BatchNorm2D


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


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width, height):
    """A PNG whose header (with a correct checksum) declares ``width`` x ``height`` 8-bit gray
    pixels while its data holds one black pixel: a valid 1x1 PNG, or a decompression bomb's
    header. Written byte by byte, so that it needs no Pillow."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)   # 8 bits, gray, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00"))           # filter byte, one pixel
            + _png_chunk(b"IEND", b""))


def randomise(model, seed=0):
    """Random biases, batch-norm scales and shifts, and running statistics far from (0, 1), so
    that every parameter and buffer shows in the output (fresh ones are zeros and ones)."""
    generator = np.random.default_rng(seed)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.data[...] = generator.normal(0, 0.3, parameter.data.shape)
        elif parameter.data.ndim == 1:            # a batch-norm scale
            parameter.data[...] = generator.uniform(0.5, 1.5, parameter.data.shape)
    for _, layer in all_layers(model):
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            layer.running_mean[...] = generator.normal(0, 0.5, layer.num_features)
            layer.running_var[...] = generator.uniform(0.5, 2.0, layer.num_features)
    return model


def all_layers(layer, prefix="model"):
    yield prefix, layer
    for name, child in layer.children():
        yield from all_layers(child, f"{prefix}.{name}")
