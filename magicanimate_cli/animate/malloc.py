"""glibc malloc settings for the animator on a CPU: large temporaries reused instead of page-faulted.

By default glibc serves large blocks (above a threshold between 128 KiB and 32 MiB) with a fresh
``mmap``, unmaps them on ``free`` and returns the top of its heap to the system once more than its
trim threshold (128 KiB, rising with the mmap threshold up to 64 MiB) of it is free. The UNet
allocates and frees large temporaries all the time (a feed-forward output at 128² is 84 MB), so
each of them is page-faulted in, page by page, every time:
at the real model size on 2 CPU threads that was 1.5-2 million page faults and about a fifth of a
denoising step (``docs/performance.md``). ``reuse_freed_memory`` switches mmap off (``M_MMAP_MAX``
0) and raises the trim threshold, so freed blocks stay in the heap and are reused without a fault:
a 16-frame, 2-step run at 128² made 0.56 million page faults instead of 12.9 million, most of them
the first touch of the weights. ``release_freed_memory`` hands the free memory back
(``malloc_trim``) between the denoising and the decoding and at the end of a pipeline call, so the
VAE's differently sized blocks do not pile up on top of the UNet's, and a batch job or the demo does
not hold the UNet's temporaries between clips. None of this changes a computed number.
"""

from __future__ import annotations

import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
MALLOC_VARIABLES = ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
"""glibc's own malloc settings: when the user has set one of them, ``reuse_freed_memory`` leaves malloc alone."""

_libc = None  # glibc, once reuse_freed_memory has changed its settings


def reuse_freed_memory() -> bool:
    """Keep freed blocks in glibc's heap for reuse (see the module docstring); called by ``load_pipeline``
    for a CPU device. Does nothing outside glibc Linux or when the user has set one of
    ``MALLOC_VARIABLES`` (``MALLOC_MMAP_MAX_=65536`` keeps glibc's default). Returns whether malloc's
    settings are now changed."""
    global _libc
    import ctypes
    import platform

    if _libc is not None:
        return True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in MALLOC_VARIABLES):
        return False
    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1):
        _libc = libc
    return _libc is not None


def release_freed_memory() -> None:
    """Return the heap's free memory to the system (``malloc_trim``), if ``reuse_freed_memory`` kept it."""
    if _libc is not None:
        _libc.malloc_trim(0)
