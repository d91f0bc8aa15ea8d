"""How long `magicanimate doctor` and the early missing-weights error of `animate` take, cold.

    python benchmarks/doctor.py [--models DIR] [--runs 3]

Each figure is a fresh interpreter (what a user waits for): ``magicanimate doctor --json``, a bare
``import torch`` (the one heavy import doctor makes, to ask torch about its devices), and
``magicanimate animate`` against an empty models folder (the error must come before any heavy
import). Prints the median of ``--runs`` runs per figure and the heavy modules each one imported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "paddle", "paddleseg", "detectron2", "ray", "sklearn", "cv2")
PROBE = "import atexit, json, sys; atexit.register(lambda: print(json.dumps([m for m in {heavy!r} if m in sys.modules]), file=sys.stderr))\n"


def timed(code: str, runs: int) -> tuple[float, list[str]]:
    times, imported = [], []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY) + code], capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        imported = json.loads(out.stderr.strip().splitlines()[-1])
    return statistics.median(times), imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="models folder for doctor (default: an empty one)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or str(Path(tmp) / "models")
        ref = Path(tmp) / "ref.png"
        ref.write_bytes(b"not read")
        cli = "import sys; from magicanimate_cli.cli import entrypoint; sys.argv = ['magicanimate'] + {argv!r}\ntry:\n    entrypoint()\nexcept SystemExit:\n    pass\n"
        doctor = cli.format(argv=["doctor", "--models", models, "--json"])
        animate = cli.format(argv=["animate", str(ref), str(ref), "-o", str(Path(tmp) / "out.mp4"), "--models", str(Path(tmp) / "empty")])
        for name, code in (("magicanimate doctor", doctor), ("import torch", "import torch"), ("animate, no weights -> error", animate), ("python -c pass", "pass")):
            seconds, imported = timed(code, args.runs)
            print(f"{name:<30} {seconds:6.2f} s   heavy imports: {', '.join(imported) or 'none'}")


if __name__ == "__main__":
    main()
