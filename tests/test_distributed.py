"""Data-parallel training over MPI (npconvnet.distributed): K ranks train the weights one
process trains on the whole batch.

The runs are subprocesses: ``tests/mpi_training.py`` (a convnet with 2-D and 1-D batch
normalization and dropout, a few steps on synthetic images) in one process, and under
``mpirun -n K`` on this machine (loopback only). Every process writes its final weights and
history, which the tests compare. Tolerance: the sums over the ranks add the same float32
numbers in another order, so after 9 steps the weights agree to atol 1e-5, rtol 1e-4 (they
differ by about 1e-6); on one rank they are the same bits. The tests skip where mpirun or
mpi4py is missing.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npconvnet
from npconvnet import distributed
from npconvnet.models import load_checkpoint
from npconvnet.parameter import Parameter

SCRIPT = Path(__file__).with_name("mpi_training.py")
SOURCE = Path(npconvnet.__file__).resolve().parents[1]       # the npconvnet these tests import
# Loopback only, more ranks than cores allowed, as root too (containers): a run on one machine.
MPIRUN_OPTIONS = ["--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,tcp",
                  "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
ENVIRONMENT = {"PYTHONPATH": str(SOURCE), "NPCONVNET_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
#: Only a hang stops a run this long: a healthy one takes a few seconds.
HANG_GUARD_SECONDS = 120
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def mpirun():
    """The mpirun command, or a skip saying what is missing."""
    path = shutil.which("mpirun")
    if path is None:
        pytest.skip("mpirun is not installed (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed (pip install "npconvnet[mpi]")')
    return path


def launch(mpirun, ranks, *argv):
    """``python argv`` in one process (``ranks`` None) or under ``mpirun -n ranks``."""
    command = [sys.executable, *map(str, argv)]
    if ranks is not None:
        exported = [option for name in ENVIRONMENT for option in ("-x", name)]
        command = [mpirun, "-n", str(ranks), *MPIRUN_OPTIONS, *exported, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS,
                          env={**os.environ, **ENVIRONMENT})


class Run:
    """A finished run of mpi_training.py: every rank's weights and history, and its output."""

    def __init__(self, out, result):
        self.stdout, self.stderr = result.stdout, result.stderr
        self.weights = [dict(np.load(path)) for path in sorted(out.glob("weights-rank*.npz"))]
        self.histories = [json.loads(path.read_text()) for path in sorted(out.glob("history-rank*.json"))]


@pytest.fixture(scope="module")
def train(mpirun, tmp_path_factory):
    """``train(ranks, *options)``: the Run of mpi_training.py with ``options``, in one process
    (``ranks`` None) or on ``ranks`` ranks; each run is made once for the module."""
    runs = {}

    def train(ranks, *options):
        key = (ranks, options)
        if key not in runs:
            out = tmp_path_factory.mktemp("run")
            extra = () if ranks is None else ("--distributed",)
            result = launch(mpirun, ranks, SCRIPT, out, *extra, *options)
            assert result.returncode == 0, result.stdout + result.stderr
            runs[key] = Run(out, result)
        return runs[key]
    return train


def assert_weights_close(weights, expected):
    assert weights.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(weights[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


# Equivalence with one process.

@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("ranks, batch_size", [(2, 12), (3, 10)], ids=["2 ranks, even", "3 ranks, uneven"])
def test_k_ranks_train_the_weights_one_process_trains_on_the_whole_batch(train, ranks, batch_size, optimizer):
    # 30 training samples: 3 ranks on batches of 10 hold 4 + 3 + 3 samples of each.
    options = ("--optimizer", optimizer, "--batch-size", batch_size, "--epochs", 3)
    one = train(None, *options).weights[0]
    for weights in train(ranks, *options).weights:
        assert_weights_close(weights, one)


def test_sample_weights_and_weight_penalties_count_as_for_one_process_on_uneven_shards(train):
    options = ("--weighted", "--batch-size", 10, "--epochs", 3)
    one = train(None, *options)
    for weights in train(3, *options).weights:
        assert_weights_close(weights, one.weights[0])
    np.testing.assert_allclose(train(3, *options).histories[0]["history"]["loss"],
                               one.histories[0]["history"]["loss"], rtol=1e-5)


def test_every_rank_ends_with_the_same_weights_bit_for_bit(train):
    weights = train(3, "--optimizer", "adam", "--batch-size", 10, "--epochs", 3).weights
    assert len(weights) == 3
    for other in weights[1:]:
        for name in weights[0]:
            np.testing.assert_array_equal(other[name], weights[0][name], err_msg=name)


def test_one_rank_trains_the_weights_of_one_process_bit_for_bit(train):
    one, alone = train(None, "--epochs", 3), train(1, "--epochs", 3)
    for name, array in one.weights[0].items():
        np.testing.assert_array_equal(alone.weights[0][name], array, err_msg=name)
    assert alone.histories == one.histories


def test_every_rank_logs_the_whole_batches_loss_and_the_whole_validation_sets_scores(train):
    options = ("--optimizer", "adam", "--batch-size", 10, "--epochs", 3)
    expected = train(None, *options).histories[0]["history"]
    for history in train(3, *options).histories:
        for name in ("loss", "val_loss"):
            np.testing.assert_allclose(history["history"][name], expected[name], rtol=1e-5, err_msg=name)
        for name in ("accuracy", "val_accuracy"):
            assert history["history"][name] == expected[name], name


def test_rank_0_alone_prints_the_progress(train):
    stdout = train(3, "--optimizer", "adam", "--batch-size", 10, "--epochs", 3).stdout
    assert stdout.count("Epoch 1/3") == 1 and stdout.count("Epoch 3/3") == 1


def test_a_memory_mapped_npy_file_trains_the_weights_of_the_array(train):
    from_array, from_file = train(2, "--epochs", 2), train(2, "--epochs", 2, "--npy")
    for name, array in from_array.weights[0].items():
        np.testing.assert_array_equal(from_file.weights[0][name], array, err_msg=name)


# Checkpoints.

def test_a_run_resumed_on_another_number_of_ranks_ends_with_the_weights_of_one_process(train, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    train(2, "--epochs", 2, "--checkpoint-dir", checkpoints)
    _, saved = load_checkpoint(checkpoints / "checkpoint.npz")   # the file one process writes
    assert saved["next_epoch"] == 2
    resumed = train(3, "--epochs", 3, "--checkpoint-dir", checkpoints, "--resume")
    one = train(None, "--epochs", 3)
    assert_weights_close(resumed.weights[0], one.weights[0])
    np.testing.assert_allclose(resumed.histories[0]["history"]["loss"], one.histories[0]["history"]["loss"],
                               rtol=1e-5)


# Faults.

@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_stops_every_rank_and_the_last_checkpoint_stays_good(mpirun, tmp_path, how):
    result = launch(mpirun, 2, SCRIPT, tmp_path, "--distributed", "--epochs", 3, "--checkpoint-dir", tmp_path,
                    "--fail-rank", 1, "--fail-epoch", 1, "--fail-how", how)
    assert result.returncode != 0
    if how == "raise":
        assert "rank 1 fails on purpose in epoch 2" in result.stderr
        assert "(rank 1 of 2): stopping every rank (MPI_Abort)" in result.stderr
    assert not list(tmp_path.glob("weights-rank*.npz"))         # no rank finished
    _, saved = load_checkpoint(tmp_path / "checkpoint.npz")
    assert saved["next_epoch"] == 1


def test_batches_too_small_to_give_every_rank_two_samples_are_refused(mpirun, tmp_path):
    # 30 training samples in batches of 8 end with a batch of 6; the model has Dropout layers.
    result = launch(mpirun, 4, SCRIPT, tmp_path, "--distributed", "--batch-size", 8)
    assert result.returncode != 0
    assert ("fit: distributed training on 4 ranks needs at least 8 samples in every batch (2 per rank, "
            "for the model's Dropout layers), but 30 training samples in batches of 8 end with a "
            "batch of 6") in result.stderr


# The command line.

def test_mpirun_npconvnet_train_distributed_trains_the_model_of_one_process(mpirun, tmp_path):
    from test_cli import write_dataset
    data = write_dataset(tmp_path / "data", train=120, test=30)
    options = ["-m", "npconvnet", "train", "--dataset", data, "--model", "conv5", "--epochs", "2",
               "--batch-size", "16", "--lr", "0.01", "--verbose", "2"]
    one = launch(mpirun, None, *options, "--out", tmp_path / "one")
    ranks = launch(mpirun, 2, *options, "--out", tmp_path / "ranks", "--distributed")
    assert one.returncode == 0 and ranks.returncode == 0, ranks.stderr
    assert ranks.stdout.count("Epoch 2/2") == 1 and ranks.stdout.count("Test accuracy") == 1
    expected = npconvnet.load_model(tmp_path / "one" / "model.npz").state_dict()
    assert_weights_close(npconvnet.load_model(tmp_path / "ranks" / "model.npz").state_dict(), expected)
    assert {path.name for path in (tmp_path / "ranks").iterdir()} >= {"model.npz", "checkpoint.npz",
                                                                       "history.csv", "run.json"}


def test_bad_input_on_the_ranks_of_npconvnet_train_is_one_line_and_exit_status_2(mpirun, tmp_path):
    from test_cli import write_dataset
    data = write_dataset(tmp_path / "data", train=40, test=10)
    result = launch(mpirun, 2, "-m", "npconvnet", "train", "--distributed", "--dataset", data, "--out",
                    tmp_path / "run", "--model", "conv5", "--epochs", "1", "--batch-size", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ("error: fit: distributed training on 2 ranks needs at least 2 samples in every batch (one per "
            "rank)") in result.stderr


def test_a_divergence_stops_every_rank_with_exit_status_3_and_rank_0_reports_it(mpirun, tmp_path):
    from test_cli import write_dataset
    data = write_dataset(tmp_path / "data", train=120, test=10)
    result = launch(mpirun, 2, "-m", "npconvnet", "train", "--distributed", "--dataset", data, "--out",
                    tmp_path / "run", "--model", "conv5", "--epochs", "1", "--batch-size", "16",
                    "--optimizer", "sgd", "--lr", "1e30", "--quiet")
    assert result.returncode == 3
    assert result.stderr.count("npconvnet: error: training diverged in epoch 1/1") == 1
    assert not (tmp_path / "run" / "model.npz").exists()


# Without MPI.

def test_distributed_fit_without_mpi4py_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # import mpi4py then fails
    model = npconvnet.Sequential(npconvnet.layers.Dense(4, 2))
    model.compile()
    with pytest.raises(ModuleNotFoundError, match=r'pip install "npconvnet\[mpi\]"'):
        model.fit(np.zeros((8, 4), np.float32), np.zeros(8, int), distributed=True, verbose=0)


def test_gradients_travel_in_buckets_of_one_dtype_and_at_most_bucket_bytes(monkeypatch):
    monkeypatch.setattr(distributed, "BUCKET_BYTES", 400)
    parameters = [Parameter(np.zeros(size, dtype)) for size, dtype in
                  [(50, np.float32), (40, np.float32), (60, np.float32), (10, np.float64), (200, np.float32)]]
    for parameter in parameters:
        parameter.grad = np.zeros_like(parameter.data)
    buckets = distributed._buckets(parameters)
    # 200 + 160 bytes fit in 400, 240 more do not; a parameter larger than a bucket gets its own.
    assert [[parameters.index(p) for p in bucket] for bucket in buckets] == [[0, 1], [2], [3], [4]]
