"""The runner process's memory: big blocks go back to the system when freed.

glibc's malloc serves a block of 128 KiB or more with its own mapping, returned to the system
on free, but raises that threshold to the size of every such block freed (up to 32 MiB): after
one 10 MB message, later 10 MB buffers come from the heap, whose freed space the process keeps.
Fixing the threshold at 1 MiB keeps every buffer of a big message or reply returnable, so the
runner's RSS goes back down after a big input. A no-op where malloc is not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("taskrunner.memory")

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_big_blocks() -> bool:
    """Fix glibc's mmap threshold (see the module doc); True if it was set."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused: big freed blocks may stay in the heap")
    return done
