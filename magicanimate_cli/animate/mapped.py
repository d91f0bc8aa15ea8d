"""Pages of memory-mapped weights handed back once a model is done with them, on a CPU.

``load_pipeline`` maps the weight files instead of copying them (safetensors files, and pickles
through ``torch.load(mmap=True)``): a page of a weight becomes resident the first time a layer reads
it and then counts in the process's RSS until the process ends, although the kernel holds the same
bytes in its page cache and can map them again at any time. The text encoder (the empty prompt) and
the VAE's encoder (the reference) run once per call, before the denoising; the pipeline then unmaps
their pages with ``drop_mapped_pages`` (``madvise(MADV_DONTNEED)``), and their next use maps them
again from the page cache (or the disk). The denoising models keep theirs through the decoding: the
decoding's peak is below the denoising's, and the next call would fault 9.6 GB in again (real size).

Only clean pages of file mappings are handed back, as ``/proc/self/pagemap`` reports them: a page
that was written to (a private copy-on-write page, such as a weight changed in place) is anonymous
memory and is kept, as is a weight that is not in a file mapping at all (one converted to another
dtype when it was loaded, or on a GPU). No value can change; what it costs is the page faults of the
model's next use. Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys

import numpy as np
import torch

_MADV_DONTNEED = 4
_PRESENT, _SWAPPED, _FILE_PAGE = 1 << 63, 1 << 62, 1 << 61  # /proc/pid/pagemap (kernel 3.5+)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_mappings() -> list[tuple[int, int]]:
    """``(start, end)`` of every mapping of this process that is backed by a file."""
    spans = []
    with open("/proc/self/maps", errors="surrogateescape") as maps:  # file names are bytes
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                spans.append((start, end))
    return spans


def _storage_spans(modules) -> list[tuple[int, int]]:
    """``(start, end)`` of the CPU storage behind every parameter and buffer of ``modules``."""
    spans = set()
    for module in modules:
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                if storage.nbytes():
                    spans.add((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
    return sorted(spans)


def _page_runs(spans: list[tuple[int, int]], mappings: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pages of ``spans`` that lie in a file mapping, merged into runs ``[first, last)`` of page
    numbers (a page shared with a neighbouring tensor of the same file is included)."""
    starts = [low for low, _ in mappings]
    runs: list[tuple[int, int]] = []
    for start, end in spans:
        index = max(bisect.bisect_right(starts, start) - 1, 0)
        for low, high in mappings[index:]:
            if low >= end:
                break
            first, last = max(start, low) // _PAGE, -(-min(end, high) // _PAGE)
            if first >= last:
                continue
            if runs and first <= runs[-1][1]:
                runs[-1] = (runs[-1][0], max(runs[-1][1], last))
            else:
                runs.append((first, last))
    return runs


def _madvise():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc.madvise


def drop_mapped_pages(*modules: torch.nn.Module) -> int:
    """Unmap the clean file-backed pages of the weights of ``modules`` (see the module docstring).
    Returns the bytes that were resident and are now handed back."""
    if sys.platform != "linux":
        return 0
    runs = _page_runs(_storage_spans(modules), _file_mappings())
    if not runs:
        return 0
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)
    except OSError:  # a kernel or sandbox that hides it: keep everything
        return 0
    madvise, dropped = _madvise(), 0
    with pagemap:
        for first, last in runs:
            pagemap.seek(first * 8)
            flags = np.frombuffer(pagemap.read((last - first) * 8), dtype=np.uint64)
            present = (flags & _PRESENT) != 0
            keep = (present & ((flags & _FILE_PAGE) == 0)) | ((flags & _SWAPPED) != 0)  # the process's own data
            clean = present & ~keep
            edges = np.flatnonzero(np.diff(np.concatenate(([1], keep.astype(np.int8), [1]))))  # runs between kept pages
            for begin, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
                if clean[begin:end].any() and madvise((first + begin) * _PAGE, (end - begin) * _PAGE, _MADV_DONTNEED) == 0:
                    dropped += int(clean[begin:end].sum()) * _PAGE
    return dropped
