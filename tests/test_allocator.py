"""The C allocator keeps freed memory for the next step (npconvnet.allocator): an array freed
and allocated again costs no new page faults. Each case runs in a fresh Python, where
npconvnet's import sets (or, told so, does not set) glibc's thresholds."""

import os
import subprocess
import sys

import pytest

from npconvnet import allocator

pytestmark = pytest.mark.skipif(not allocator.uses_glibc(),
                                reason="the allocator's thresholds are glibc's (this C library is not glibc)")

# 48 MiB, beyond what glibc's own thresholds ever reach (32 MiB): freed, such a block goes back
# to the system, and the next one is faulted in again page by page.
FAULTS_OF_TEN_CYCLES = """
import resource
import numpy as np
import npconvnet

def cycle():
    block = np.empty(48 * 2**20 // 8)
    block.fill(1.0)
    del block

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, npconvnet.allocator.KEPT or 0)
"""


def run_python(code, setting=None):
    environment = {**os.environ}
    environment.pop(allocator.ENVIRONMENT_VARIABLE, None)
    if setting is not None:
        environment[allocator.ENVIRONMENT_VARIABLE] = setting
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def faults_and_kept(setting=None):
    done = run_python(FAULTS_OF_TEN_CYCLES, setting)
    assert done.returncode == 0, done.stderr
    faults, threshold = done.stdout.split()
    return int(faults), int(threshold)


def test_an_array_freed_and_allocated_again_takes_no_new_pages():
    faults, threshold = faults_and_kept()
    if threshold < 48 * 2**20:
        pytest.skip(f"this glibc keeps blocks up to {threshold} bytes only, the test's are larger")
    assert faults < 100                # ten blocks of 12,288 pages each


def test_the_environment_variable_at_0_leaves_the_allocator_to_give_freed_memory_back():
    faults, threshold = faults_and_kept("0")
    assert threshold == 0
    kept_faults, threshold = faults_and_kept("1")
    if threshold < 48 * 2**20:
        pytest.skip(f"this glibc keeps blocks up to {threshold} bytes only, the test's are larger")
    assert faults > kept_faults + 100  # a few hundred even where huge pages serve the blocks


def test_another_value_of_the_environment_variable_is_a_clear_error_at_import():
    done = run_python("import npconvnet", "yes")
    assert done.returncode != 0
    assert "ValueError: the environment variable NPCONVNET_KEEP_FREED_MEMORY must be 1" in done.stderr
    assert "got 'yes'" in done.stderr
