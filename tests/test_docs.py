"""The Examples in the docstrings are doctests: each module's examples run and give what they show."""

import doctest
import importlib

import numpy as np
import pytest

DOCUMENTED_MODULES = [
    "npconvnet.callbacks",
    "npconvnet.layers.activations",
    "npconvnet.layers.containers",
    "npconvnet.layers.conv",
    "npconvnet.layers.dense",
    "npconvnet.layers.dropout",
    "npconvnet.layers.normalization",
    "npconvnet.layers.pooling",
    "npconvnet.models",
    "npconvnet.regularizers",
]


@pytest.mark.parametrize("name", DOCUMENTED_MODULES)
def test_docstring_examples_of_the_module_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": np},
                             optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples to run"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples in {name} failed"
