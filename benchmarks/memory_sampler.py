"""Peak resident memory split into anonymous and file-backed pages (a helper of the CPU benchmark's workers).

``ru_maxrss`` counts every resident page, and the weights our pipeline maps from their files count
there although the kernel can drop and re-read them at any time; the anonymous pages (the heap,
copies of weights, activations) are what a process really holds. ``MemorySampler`` reads
``RssAnon`` and ``RssFile`` from ``/proc/self/status`` every ``interval`` seconds in a daemon thread
and keeps the highest of each (a peak shorter than the interval can be missed). Standard library
only: the official code's worker imports it too, in its own environment.
"""

from __future__ import annotations

import threading
import time


def _status_kib() -> dict[str, int]:
    with open("/proc/self/status") as status:
        return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in status) if k in ("RssAnon", "RssFile")}


class MemorySampler:
    def __init__(self, interval: float = 0.01):
        self._peak = {"RssAnon": 0, "RssFile": 0}
        self._interval = interval
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            for key, kib in _status_kib().items():
                self._peak[key] = max(self._peak[key], kib)
            time.sleep(self._interval)

    def peaks(self) -> dict[str, float]:
        """``peak_anon_gb`` and ``peak_file_gb`` (GiB) so far."""
        now = _status_kib()
        return {"peak_anon_gb": round(max(self._peak["RssAnon"], now["RssAnon"]) / 2**20, 2),
                "peak_file_gb": round(max(self._peak["RssFile"], now["RssFile"]) / 2**20, 2)}
