"""Commands run on a small, real file system: a tmpfs of a few hundred KiB that fills up.

``run_on_small_disk(size, steps)`` mounts a fresh tmpfs in a private mount namespace
(``unshare --user --map-root-user --mount``: no privileges needed where the kernel allows user
namespaces), runs each step in it, and returns what each step gave: exit code, stderr, and the files
then on the disk (relative path -> sha1; folders -> None). A step is ``{"args": [...]}`` (a
``magicanimate`` command, run with the disk as its current folder; inputs are passed as absolute
paths outside it) or ``{"fill": BYTES}`` (a file ``filler`` that leaves about BYTES free).
``small_disk_available()`` says whether this machine can do it (the tests skip where it cannot).

Run as a script, it is the driver inside the namespace: ``python disk_helpers.py MOUNT SPEC.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_MOUNT = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


@functools.cache
def small_disk_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", _MOUNT, "sh", "64k", folder, "true"], capture_output=True)
    return probe.returncode == 0


def run_on_small_disk(size: str, steps: list[dict]) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        mount = Path(folder) / "disk"
        mount.mkdir()
        spec = Path(folder) / "spec.json"
        spec.write_text(json.dumps(steps))
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", _MOUNT, "sh", size, str(mount), sys.executable, __file__, str(mount), str(spec)],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _listing(root: Path) -> dict[str, str | None]:
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name] = None if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return found


def _drive(mount: Path, steps: list[dict]) -> list[dict]:
    results = []
    for step in steps:
        if "fill" in step:
            (mount / "filler").unlink(missing_ok=True)
            free = shutil.disk_usage(mount).free
            with open(mount / "filler", "wb") as handle:
                handle.write(b"\0" * max(free - step["fill"], 0))
            results.append({"free": shutil.disk_usage(mount).free})
            continue
        done = subprocess.run(
            [sys.executable, "-m", "magicanimate_cli", *step["args"]], cwd=mount, capture_output=True, text=True, check=False
        )
        results.append({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "files": _listing(mount)})
    return results


if __name__ == "__main__":
    print(json.dumps(_drive(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))))
