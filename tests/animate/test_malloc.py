"""glibc malloc settings on CPU (``animate/malloc.py``): freed blocks reused without page faults,
handed back to the system between the pipeline's phases; the user's own settings respected.

Oracle: the kernel's count of minor page faults (``ru_minflt``) while a 64 MiB block (over glibc's
largest mmap threshold) is allocated, written and freed again and again below memory still in use,
which is what the UNet's large temporaries do.
"""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from magicanimate_cli.animate import malloc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")

REALLOCATE = """
import ctypes, json, resource
from magicanimate_cli.animate import malloc
changed = malloc.reuse_freed_memory()
libc, size = ctypes.CDLL("libc.so.6"), 2**26
libc.malloc.restype = ctypes.c_void_p

def allocate(nbytes):
    pointer = libc.malloc(ctypes.c_size_t(nbytes))
    ctypes.memset(pointer, 1, nbytes)
    return ctypes.c_void_p(pointer)

def faults_per_reuse():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        libc.free(allocate(size))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4

temporary = allocate(size)
live = allocate(2**20)  # allocated after it and kept (activations, outputs)
libc.free(temporary)
reused = faults_per_reuse()
malloc.release_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
libc.free(allocate(size))
print(json.dumps({"changed": changed, "reused": reused, "after_release": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(**env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in malloc.MALLOC_VARIABLES}
    out = subprocess.run([sys.executable, "-c", REALLOCATE], capture_output=True, text=True, check=True, env={**environ, **env})
    return json.loads(out.stdout)


PAGES = 2**26 // os.sysconf("SC_PAGE_SIZE")


def test_freed_memory_is_reused_without_page_faults_and_released_on_request():
    result = _run()
    assert result["changed"]
    assert result["reused"] < PAGES / 100  # the freed block is served again, already in memory
    assert result["after_release"] > PAGES * 0.9  # malloc_trim handed it back: written again, faulted again


def test_the_users_own_malloc_settings_win():
    result = _run(MALLOC_MMAP_MAX_="65536")  # glibc's default, set by the user
    assert not result["changed"]
    assert result["reused"] > PAGES * 0.9  # glibc's default: a fresh mmap faulted in every time


def test_the_pipeline_releases_freed_memory_after_denoising_and_after_decoding(tiny_pipeline, monkeypatch, rng):
    from magicanimate_cli.animate import pipeline

    phases = []
    decode = tiny_pipeline._decode
    monkeypatch.setattr(pipeline, "release_freed_memory", lambda: phases.append("release"))
    monkeypatch.setattr(tiny_pipeline, "_decode", lambda *a, **k: phases.append("decode") or decode(*a, **k))
    reference, motion = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    tiny_pipeline(reference, motion, num_inference_steps=1, output_type="np")
    assert phases == ["release", "decode", "release"]
    phases.clear()
    tiny_pipeline(reference, motion, num_inference_steps=1, output_type="latent")
    assert phases == ["release"]
