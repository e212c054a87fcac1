"""Freed memory kept for the next step: the C allocator's thresholds, raised at import.

A training step allocates arrays of the same few sizes again and again (activations and
gradients, up to tens of megabytes each) and frees them by its end. glibc's malloc hands a freed
block larger than its mmap threshold straight back to the system, and the free memory at the
top of its heap beyond its trim threshold; the thresholds grow with what is freed, but to
32 MiB and 64 MiB at most, and a step's arrays come and go by more than that. The next step's
arrays are then new pages, which the kernel faults in and clears one by one as they are first
written: convnet's training step (batch 128) took 16 ms on one core, 9.5 ms with the memory
kept; with two processes faulting at once, vgg-mini's step on two cores took 15% longer.

:func:`keep_freed_memory` raises both thresholds (``mallopt``, through ctypes), so that the heap
keeps what a step frees for the next one: the process's resident memory stays near its peak
between steps, and after training, instead of falling back. npconvnet calls it when it is
imported, unless the environment variable ``NPCONVNET_KEEP_FREED_MEMORY`` is ``0``; the
worker processes forked for training inherit the setting. With another C library than glibc
(macOS, Windows, musl) nothing changes.
"""

import ctypes
import os

ENVIRONMENT_VARIABLE = "NPCONVNET_KEEP_FREED_MEMORY"

#: Blocks up to this size come from the heap, and go back to it when freed (in threads other
#: than the main one, up to 64 MiB, the size of glibc's heaps for threads). An older glibc that
#: refuses more than 32 MiB gets that.
MMAP_THRESHOLD_BYTES = 256 * 2**20
OLDER_GLIBC_MMAP_THRESHOLD_BYTES = 32 * 2**20

#: The heap gives back the free memory at its top beyond this much.
TRIM_THRESHOLD_BYTES = 2**30

# mallopt's parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds to ``MMAP_THRESHOLD_BYTES`` (or what an older
    glibc takes) and ``TRIM_THRESHOLD_BYTES`` for this process (and the processes it forks from
    now on). Returns the mmap threshold set, or None with another C library."""
    if not uses_glibc():
        return None
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return None
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    for threshold in (MMAP_THRESHOLD_BYTES, OLDER_GLIBC_MMAP_THRESHOLD_BYTES):
        if mallopt(_M_MMAP_THRESHOLD, threshold):
            return threshold
    return None


def uses_glibc():
    """Whether this process's C library is glibc."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):       # no confstr (Windows), or no such name
        return False


def _from_environment():
    """Whether to keep freed memory: ``NPCONVNET_KEEP_FREED_MEMORY`` unset, empty or ``1``; not
    for ``0``; a ``ValueError`` for anything else."""
    text = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if text not in ("", "0", "1"):
        raise ValueError(f"the environment variable {ENVIRONMENT_VARIABLE} must be 1 (keep freed memory for "
                         f"the next training step, the default) or 0 (leave the C allocator as it is), got "
                         f"{text!r:.100}")
    return text != "0"


#: The mmap threshold set at import (blocks up to it are kept when freed), or None: the C
#: allocator was left as it is.
KEPT = keep_freed_memory() if _from_environment() else None
