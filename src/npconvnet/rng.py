"""The global random generator: one seed makes weight initialisation, dropout and shuffling repeatable."""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the global generator, as ``torch.manual_seed`` does."""
    global _generator
    _generator = np.random.default_rng(seed)


def default_rng():
    """The generator that layers draw their initial weights and dropout masks from."""
    return _generator


def get_state():
    """The global generator's state as a JSON-serialisable dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state returned by :func:`get_state`."""
    _generator.bit_generator.state = state
