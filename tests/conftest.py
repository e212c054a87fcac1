import os
from pathlib import Path

import numpy as np
import pytest

import npconvnet


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global generator state."""
    npconvnet.manual_seed(0)


@pytest.fixture
def threads():
    """``threads(n)`` runs the rest of the test on ``n`` threads; the count is restored afterwards."""
    previous = npconvnet.get_num_threads()
    yield npconvnet.set_num_threads
    npconvnet.set_num_threads(previous)


@pytest.fixture
def torch():
    """PyTorch, the independent reference (a test-only dependency), on one thread."""
    torch = pytest.importorskip("torch", reason="PyTorch (torch==2.13.0) is needed for cross-checks")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="session")
def pillow():
    """Pillow's ``Image`` module (an optional extra: the image files); the test is skipped without it.
    Session-scoped, so that hypothesis tests may ask for it too."""
    return pytest.importorskip("PIL.Image", reason="Pillow is needed to read and write image files "
                                                   "(pip install pillow)")


@pytest.fixture(scope="session")
def ndimage():
    """``scipy.ndimage``, the independent reference for image geometry (a test-only dependency)."""
    return pytest.importorskip("scipy.ndimage", reason="SciPy is the reference for image geometry "
                                                       "(pip install scipy)")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _data_dir():
    configured = os.environ.get("NPCONVNET_DATA_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    return next((path for path in candidates if (path / "mnist").is_dir()), None)


# Found once, before any test's fixtures change the environment.
DATA_DIR = _data_dir()


@pytest.fixture
def mnist_dir():
    """The folder holding ``mnist/`` and ``fashion-mnist/``; the test is skipped without it."""
    path = DATA_DIR
    if path is None:
        pytest.skip("real MNIST not found: set NPCONVNET_DATA_DIR to the folder holding mnist/")
    return path
