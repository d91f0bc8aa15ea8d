"""``magicanimate doctor``: can this machine animate, and if not, what to do about it.

Each check reports ``ok``, ``warn`` (works, but something is worth knowing: no GPU, an optional
stage not installed, weights not verified yet) or ``fail`` (``magicanimate animate`` cannot run),
with a one-line fix. ``ready`` is true when no check fails; the CLI exits 1 otherwise.
Every check is isolated: a broken library is reported, never raised. Nothing heavy is imported:
libraries are found with ``importlib.util.find_spec`` and ``importlib.metadata``, GPUs with
``nvidia-smi`` (``benchmarks/doctor.py`` times it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .clip import installed_version
from .progress import Progress

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_PYTHON = (3, 10)
LOW_DISK = 2_000_000_000  # temporary frames and outputs of a typical run fit in much less



@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DoctorReport:
    ready: bool
    models: str
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.ready else 1

    @property
    def failure(self) -> str:
        count = len(self.problems)
        first = self.to_dict()["problems"][0] if count else "a check failed"
        return f"animate cannot run here: {count} problem{'s' if count != 1 else ''}; the first: {first}"

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict:
        return {
            "ready": self.ready,
            "models": self.models,
            "problems": [f"{c.name}: {c.detail}; {c.fix}" if c.fix else f"{c.name}: {c.detail}" for c in self.problems],
            "checks": [c.to_dict() for c in self.checks],
        }

    def for_humans(self):
        width = max(len(c.name) for c in self.checks)
        lines = []
        for c in self.checks:
            lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}")
            if c.fix and c.status != OK:
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
        verdict = "yes" if self.ready else f"no ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''})"
        return {"ready": verdict, "models": self.models, "checks": lines}


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", FAIL, f"{version} ({sys.executable})", f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    return Check("python", OK, f"{version} ({sys.executable})")


TORCH_FIX = "install the torch wheel for your platform: https://pytorch.org/get-started/locally/"


def torch_build() -> tuple[str, str | None] | None:
    """(version, CUDA version of the build or None) of the installed torch, read from its
    ``torch/version.py`` without importing torch (which takes seconds); None when not installed."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        loader = importlib.util.spec_from_file_location("_magicanimate_torch_version", path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        return str(module.__version__), getattr(module, "cuda", None)
    except Exception:  # an odd install: the version from the metadata, CUDA unknown
        version = installed_version("torch")
        return (version, None) if version else None


def _nvidia_gpus() -> tuple[list[str], str | None] | None:
    """The GPUs the NVIDIA driver lists and the newest CUDA it supports, from ``nvidia-smi``;
    None without a driver."""
    import re

    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        query = subprocess.run(
            [binary, "--query-gpu=index,name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        )
        header = subprocess.run([binary], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    gpus = []
    for line in query.stdout.splitlines() if query.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            index, name, memory, compute = parts
            memory_gib = f"{float(memory) / 1024:.1f} GiB" if memory.replace(".", "").isdigit() else memory
            gpus.append(f"cuda:{index} {name}, {memory_gib}, compute {compute}")
    found = re.search(r"CUDA Version:\s*([0-9.]+)", header or "")
    return gpus, found.group(1) if found else None


def check_torch() -> list[Check]:
    """torch (found, not imported), then the GPUs: the CUDA build of torch against what the NVIDIA
    driver lists and supports. ``animate --device cuda`` makes the final check when it starts."""
    build = torch_build()
    if build is None:
        return [Check("torch", FAIL, "torch is not installed", TORCH_FIX)]
    version, cuda = build
    checks = [Check("torch", OK, f"{version} (CUDA build {cuda or 'none'})")]
    driver = _nvidia_gpus()
    if driver is None:
        checks.append(Check("gpu", WARN, "no CUDA device; animate will run on the CPU (far slower than on a GPU)", "use a machine with an NVIDIA GPU for real runs"))
    elif cuda is None:
        checks.append(
            Check("gpu", WARN, "an NVIDIA driver is installed but this torch is a CPU-only build; animate will run on the CPU (slow)", "install a CUDA build of torch: https://pytorch.org/get-started/locally/")
        )
    else:
        gpus, supported = driver
        too_old = supported is not None and int(supported.split(".")[0]) < int(cuda.split(".")[0])
        if not gpus or too_old:
            why = f"the driver supports CUDA {supported}, this torch needs {cuda}" if too_old else "nvidia-smi lists no GPU (CUDA_VISIBLE_DEVICES, or the driver)"
            checks.append(Check("gpu", WARN, f"torch has CUDA but will not see a usable device ({why})", f"run `nvidia-smi`; update the driver to one that supports CUDA {cuda}"))
        else:
            checks.append(Check("gpu", OK, "; ".join(gpus)))
    return checks


_LIBRARIES = ("diffusers", "transformers", "accelerate", "safetensors", "huggingface-hub")


def check_libraries() -> Check:
    found, missing = [], []
    for dist in _LIBRARIES:
        version = installed_version(dist)
        (found if version else missing).append(f"{dist} {version}" if version else dist)
    if missing:
        return Check("libraries", FAIL, f"missing {', '.join(missing)}", f"pip install {' '.join(missing)}")
    return Check("libraries", OK, ", ".join(found))


def check_ffmpeg() -> Check:
    try:
        from .media import ffmpeg_binary

        binary = ffmpeg_binary()
        out = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
        first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
        if out.returncode != 0:
            return Check("ffmpeg", FAIL, f"{binary} exits with {out.returncode}", "install ffmpeg (apt install ffmpeg) or `pip install imageio-ffmpeg`")
        origin = "system" if shutil.which("ffmpeg") == binary else "imageio-ffmpeg"
        return Check("ffmpeg", OK, f"{first} ({origin}: {binary})")
    except Exception as exc:
        return Check("ffmpeg", FAIL, f"no ffmpeg ({exc.__class__.__name__}: {exc})", "install ffmpeg (apt install ffmpeg) or `pip install imageio-ffmpeg`")


def _library_check(name: str, modules: tuple[str, ...], dists: tuple[tuple[str, ...], ...], fix: str, stage: str) -> Check:
    """An optional stage's libraries, found with ``importlib.util.find_spec`` and their versions read
    from the installed metadata: nothing is imported (paddle alone takes seconds to import)."""
    missing = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):  # a broken parent package, or a half-removed one
            missing.append(module)
    if missing:
        return Check(name, WARN, f"not installed ({', '.join(missing)} missing); only needed for `magicanimate {stage}`", fix)
    versions = []
    for names in dists:  # the first installed distribution of each library (paddlepaddle or paddlepaddle-gpu)
        found = next((name for name in names if installed_version(name)), None)
        if found:
            versions.append(f"{found} {installed_version(found)}")
    return Check(name, OK, ", ".join(versions) or "installed")


def densepose_installed() -> Check:
    """Whether detectron2 and DensePose are installed (from their metadata, nothing imported); the
    stage's own checks before a run are ``densepose.check_densepose``."""
    try:  # the pinned install route; a light module (numpy only)
        from .densepose.estimator import install_command

        fix = install_command()
    except Exception:
        fix = "detectron2 and DensePose install from detectron2's git, not from PyPI (see docs/densepose.md)"
    return _library_check("densepose", ("detectron2", "densepose"), (("detectron2",), ("detectron2-densepose",)), fix, "densepose")


def paddleseg_installed() -> Check:
    """Whether PaddlePaddle and PaddleSeg are installed (from their metadata, nothing imported)."""
    try:
        from .matting import INSTALL_HINT as fix
    except Exception:
        fix = "pip install paddlepaddle opencv-python-headless && pip install --no-deps paddleseg==2.8.0"
    return _library_check("paddleseg", ("paddle", "paddleseg"), (("paddlepaddle", "paddlepaddle-gpu"), ("paddleseg",)), fix, "matte")


def _weights_checks(root: Path, progress: Progress | None = None) -> tuple[list[Check], int]:
    """(the checks, the bytes of the missing animate files)."""
    from .weights_manifest import (
        CORRUPT,
        MISSING,
        REPLACED,
        UNVERIFIED,
        VERIFIED,
        ChecksumRecord,
        check_folder,
        download_command,
        fix_for,
        human_size,
        load_manifest,
        problems,
    )

    try:
        manifest = load_manifest()
        files = check_folder(root, manifest=manifest, progress=progress)
        record = ChecksumRecord.load(root)
    except Exception as exc:  # a damaged record, an unreadable folder
        return [Check("weights", FAIL, str(exc), "run `magicanimate models download`")], 0
    checks: list[Check] = []
    animate = [f for f in files if f.group == "animate"]
    bad = problems(animate, record)
    corrupt = [f for f in bad if f.status == CORRUPT or f.path in record.entries]
    missing = [f for f in bad if f not in corrupt]
    need = sum(f.size or 0 for f in missing)
    if corrupt:
        first = corrupt[0]
        converted = manifest.get(first.path) is None  # a conversion: `models download` never touches it
        fix = fix_for(first, manifest, root) if converted else f"run `{download_command('animate', root, overwrite=True)}`"
        checks.append(Check("weights", FAIL, f"{first.path}: {first.detail}" + (f" (+{len(corrupt) - 1} more)" if len(corrupt) > 1 else ""), fix))
    elif missing:
        checks.append(
            Check("weights", FAIL, f"{len(missing)} of {len(animate)} animate file(s) missing in {root}, e.g. {missing[0].path}", f"run `{download_command('animate', root)}` ({human_size(need, approx=True)})")
        )
    else:
        unverified = [f for f in animate if f.status == UNVERIFIED]
        size = sum(f.size or 0 for f in animate if f.status in (VERIFIED, UNVERIFIED))
        converted = any(f.status == REPLACED for f in animate) or (root / "MagicAnimate/temporal_attention/temporal_attention.safetensors").is_file()
        kind = "safetensors" if converted else "pickle (`magicanimate models convert` makes loading pickle-free)"
        if unverified:
            checks.append(
                Check(
                    "weights",
                    WARN,
                    f"animate weights present ({human_size(size)}), {len(unverified)} file(s) not verified yet; temporal attention: {kind}",
                    f"run `{download_command('animate', root)}` (checks and records them; downloads nothing when they match)",
                )
            )
        else:
            checks.append(Check("weights", OK, f"animate weights verified ({human_size(size)}); temporal attention: {kind}"))
    for group, stage in (("densepose", "densepose"), ("matting", "matte")):
        members = [f for f in files if f.group == group]
        broken = [f for f in members if f.status == CORRUPT]
        absent = [f for f in members if f.status == MISSING]
        if broken:
            checks.append(Check(f"{group} weights", WARN, f"{broken[0].path}: {broken[0].detail}", f"run `{download_command(group, root, overwrite=True)}`"))
        elif absent:
            checks.append(Check(f"{group} weights", WARN, f"not downloaded (needed by `magicanimate {stage}`)", f"run `{download_command(group, root)}`"))
        else:
            state = "verified" if all(f.status == VERIFIED for f in members) else "present"
            checks.append(Check(f"{group} weights", OK, state))
    return checks, need


ELSEWHERE = "put the weights elsewhere with --models / MAGICANIMATE_MODELS"


def check_disk(root: Path, missing_bytes: int = 0) -> list[Check]:
    """Free space for the missing weights (and a folder they can be written into) and in the temporary folder."""
    from .files import free_bytes, nearest_existing
    from .weights_manifest import human_size

    checks = []
    free = free_bytes(root)
    folder = nearest_existing(root)  # where `models download` would write (or create the folder)
    if missing_bytes and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        what, fix = ("is a file", "move it away") if not folder.is_dir() else ("is not writable", "fix its permissions")
        checks.append(Check("disk (models)", FAIL, f"{folder} {what}: the missing weights cannot be downloaded into {root}", f"{fix}, or {ELSEWHERE}"))
    elif missing_bytes and free < missing_bytes:
        checks.append(Check("disk (models)", FAIL, f"{human_size(free)} free at {root}, the missing weights need {human_size(missing_bytes, approx=True)}", f"free space, or {ELSEWHERE}"))
    else:
        checks.append(Check("disk (models)", OK, f"{human_size(free)} free at {root}"))
    return checks + check_temp_disk()


def check_temp_disk() -> list[Check]:
    from .files import free_bytes
    from .weights_manifest import human_size

    checks = []
    tmp = Path(tempfile.gettempdir())
    free_tmp = free_bytes(tmp)
    if free_tmp < LOW_DISK:
        checks.append(Check("disk (temp)", WARN, f"only {human_size(free_tmp)} free in {tmp}", "free space or set TMPDIR to a bigger disk"))
    else:
        checks.append(Check("disk (temp)", OK, f"{human_size(free_tmp)} free in {tmp}"))
    return checks


def _models_origin(models: Path | str | None) -> str:
    from .weights_layout import ENV_VAR, checkout_models_dir

    if models:
        return "--models"
    if os.environ.get(ENV_VAR):
        return ENV_VAR
    return "checkout models/" if checkout_models_dir() else "default (~/.cache/magicanimate/models)"


def doctor(*, models: Path | str | None = None, progress: Progress | None = None) -> DoctorReport:
    """Check Python, torch and its devices, the libraries, ffmpeg, the optional stages, the
    weights (present and verified) and free disk space. Never raises for what it finds.

    No library is imported to find it (see the module docstring)."""
    from .weights_layout import resolve_models_dir

    root = resolve_models_dir(models)
    checks: list[Check] = [check_python()]
    checks += check_torch()
    checks.append(check_libraries())
    checks.append(check_ffmpeg())
    checks.append(densepose_installed())
    checks.append(paddleseg_installed())
    try:
        root.exists()
    except OSError as exc:  # a folder of another user's, say: the other checks still run and say what they find
        checks.append(Check("models folder", FAIL, f"{root} (from {_models_origin(models)}) cannot be read ({exc.strerror or exc})",
                            f"fix its permissions, or {ELSEWHERE}"))
        checks += check_temp_disk()
    else:
        checks += _models_checks(root, models, progress)
    return DoctorReport(ready=not any(c.status == FAIL for c in checks), models=str(root), checks=checks)


def _models_checks(root: Path, models: Path | str | None, progress: Progress | None) -> list[Check]:
    """The models folder, the weights in it and the free space (``root`` can be read)."""
    checks: list[Check] = []
    if root.exists() and not root.is_dir():  # --models names a file (a checkpoint, say)
        checks.append(Check("models folder", FAIL, f"{root} (from {_models_origin(models)}) is a file", "give the weights folder (official layout) with --models or MAGICANIMATE_MODELS"))
    else:
        checks.append(Check("models folder", OK if root.is_dir() else WARN, f"{root} (from {_models_origin(models)})", None if root.is_dir() else "run `magicanimate models download`"))
        weights, missing = _weights_checks(root, progress)
        checks += weights
        checks += check_disk(root, missing)
    return checks
