"""How long the load-time weights check takes: first hash vs cached (size + mtime) check.

    python benchmarks/models_verify.py [--gb 1]

Writes ``--gb`` GB of random data as one recorded weights file in a temporary models folder,
then times ``sha256_file`` (what a first check or a --rehash costs) and ``verify_models`` with an
unchanged file (what every ``animate`` run costs). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from magicanimate_cli.models import TEMPORAL_CKPT, verify_models
from magicanimate_cli.weights_manifest import sha256_file, update_record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / TEMPORAL_CKPT
        path.parent.mkdir(parents=True)
        size = int(args.gb * 1e9)
        with open(path, "wb") as handle:
            for _ in range(size // (64 << 20)):
                handle.write(os.urandom(64 << 20))
        size = path.stat().st_size
        started = time.perf_counter()
        sha = sha256_file(path)
        hashed = time.perf_counter() - started
        update_record(root, lambda rec: rec.put(TEMPORAL_CKPT, sha, group="animate", source="bench", checked_against="local"))
        runs = 20
        started = time.perf_counter()
        for _ in range(runs):
            verify_models(root)
        cached = (time.perf_counter() - started) / runs
        print(f"sha256 of {size / 1e9:.2f} GB: {hashed:.2f} s ({size / hashed / 1e9:.2f} GB/s; 10 GB of weights ~ {10e9 / (size / hashed):.0f} s)")
        print(f"verify_models with unchanged files (cached): {cached * 1000:.1f} ms")


if __name__ == "__main__":
    main()
