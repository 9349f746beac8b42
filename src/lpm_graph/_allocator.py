"""Keep a large population's per-step temporaries out of the map-and-zero path of glibc.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB, rising with use to at
most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when freed. A step over
10 million agents makes float32 temporaries of 40 MB, above the largest threshold, so every
one of them is mapped, faulted in and zeroed by the kernel, and unmapped, on every step: a
SEIRM forward + backward at 1e7 agents spent 184 s of its 291 s in the kernel that way.

:func:`tune_allocator` raises the mmap threshold and the trim threshold of the process
(``mallopt``), as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would at start-up,
so that freed temporaries return to the heap and the next step reuses them. The
:class:`~lpm_graph.Simulator` calls it once per process before a run of at least
:data:`LARGE` agents. It changes nothing but where memory comes from (results are the same
bit for bit). The cost: freed memory below the trim threshold (2 GiB) stays with the process
instead of going back to the system at once.

It does nothing where the C library is not glibc, when the user set either variable (or
``GLIBC_TUNABLES``) themselves, or when ``LPM_GRAPH_ALLOCATOR=default``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["LARGE", "tune_allocator"]

log = logging.getLogger(__name__)

LARGE = 1_000_000
"""Agents from which a run tunes the allocator (SEIRM's ``[N, K]`` stage tensors cross
glibc's 32 MiB cap from about 1e6 agents)."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 2**31 - 1  # mallopt takes a C int: the largest value it can express

_done: bool | None = None  # None: not tried yet in this process


def tune_allocator(*, force: bool = False) -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GiB for this process (once).

    Returns whether the thresholds are now raised by this call or an earlier one. Returns
    ``False`` without changing anything on a C library other than glibc, when
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` is set (the
    user chose), or when ``LPM_GRAPH_ALLOCATOR=default``; ``force=True`` applies it even
    then (not on another C library).
    """
    global _done
    if _done is not None and not force:
        return _done
    _done = _apply(force)
    return _done


def _apply(force: bool) -> bool:
    choice = os.environ.get("LPM_GRAPH_ALLOCATOR", "").strip().lower()
    if choice not in ("", "tuned", "default"):
        log.warning(
            "LPM_GRAPH_ALLOCATOR=%r is not 'tuned' or 'default'; leaving the allocator as is.",
            choice,
        )
        return False
    if not force:
        if choice == "default":
            return False
        chosen = [k for k in os.environ if k.startswith(("MALLOC_MMAP_", "MALLOC_TRIM_"))]
        if chosen or "GLIBC_TUNABLES" in os.environ:
            log.info("allocator left as configured by %s", chosen or ["GLIBC_TUNABLES"])
            return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    if ok:
        log.info(
            "glibc mmap and trim thresholds raised to 2 GiB: large per-step temporaries are "
            "reused from the heap (LPM_GRAPH_ALLOCATOR=default turns this off)"
        )
    return ok
