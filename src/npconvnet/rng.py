"""The global random generator: one seed makes weight initialisation, dropout and shuffling repeatable."""

import numpy as np

from . import checks

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed the global generator, as ``torch.manual_seed`` does.

    ``seed``: an int >= 0 (Python or NumPy, of any size); anything else raises TypeError or
    ValueError. (NumPy's generators take no negative seeds, so unlike PyTorch's, -1 is refused.)
    """
    global _generator
    _generator = np.random.default_rng(checks.integer("manual_seed", "seed", seed, at_least=0))


def default_rng():
    """The generator that layers draw their initial weights and dropout masks from."""
    return _generator


def get_state():
    """The global generator's state as a JSON-serialisable dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state returned by :func:`get_state`."""
    _generator.bit_generator.state = state
