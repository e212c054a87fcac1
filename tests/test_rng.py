"""The global generator: one seed makes every draw repeatable."""

import numpy as np
import pytest

import npconvnet
from npconvnet import rng


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), 2**100])
def test_the_same_seed_gives_the_same_draws(seed):
    npconvnet.manual_seed(seed)
    first = rng.default_rng().random(3)
    npconvnet.manual_seed(seed)
    np.testing.assert_array_equal(rng.default_rng().random(3), first)


@pytest.mark.parametrize("seed,error", [(-1, ValueError), (-2**70, ValueError), (1.5, TypeError),
                                        (3.0, TypeError), ("3", TypeError), (None, TypeError),
                                        (True, TypeError), ([1, 2], TypeError)])
def test_a_seed_that_is_not_an_int_from_0_is_refused_naming_it(seed, error):
    with pytest.raises(error, match="^manual_seed: seed must be an int >= 0, got "):
        npconvnet.manual_seed(seed)
