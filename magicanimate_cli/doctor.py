"""``magicanimate doctor``: can this machine animate, and if not, what to do about it.

Each check reports ``ok``, ``warn`` (works, but something is worth knowing: no GPU, an optional
stage not installed, weights not verified yet) or ``fail`` (``magicanimate animate`` cannot run),
with a one-line fix. ``ready`` is true when no check fails; the CLI exits 1 otherwise.
Every check is isolated: a broken library is reported, never raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_PYTHON = (3, 10)
LOW_DISK = 2_000_000_000  # temporary frames and outputs of a typical run fit in much less

Progress = Callable[[str, int, int], None]


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
        return {"ready": verdict, "models": self.models, "checks": "\n" + "\n".join(lines)}


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", FAIL, f"{version} ({sys.executable})", f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    return Check("python", OK, f"{version} ({sys.executable})")


def check_torch() -> list[Check]:
    """torch itself, then what it sees: CUDA devices (name, memory), MPS."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken CUDA library
        return [Check("torch", FAIL, f"cannot import torch ({exc.__class__.__name__}: {exc})", "install the torch wheel for your platform: https://pytorch.org/get-started/locally/")]
    checks = [Check("torch", OK, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    try:
        if torch.cuda.is_available():
            devices = []
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append(f"cuda:{i} {props.name}, {props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}")
            checks.append(Check("gpu", OK, "; ".join(devices)))
        else:
            nvidia = shutil.which("nvidia-smi")
            if nvidia and torch.version.cuda is None:
                checks.append(
                    Check(
                        "gpu",
                        WARN,
                        "an NVIDIA driver is installed but this torch is a CPU-only build; animate will run on the CPU (slow)",
                        "install a CUDA build of torch: https://pytorch.org/get-started/locally/",
                    )
                )
            elif nvidia:
                checks.append(Check("gpu", WARN, "torch has CUDA but sees no usable device (driver too old, or CUDA_VISIBLE_DEVICES)", "run `nvidia-smi`; update the driver to one that supports CUDA " + str(torch.version.cuda)))
            else:
                checks.append(Check("gpu", WARN, "no CUDA device; animate will run on the CPU (far slower than on a GPU)", "use a machine with an NVIDIA GPU for real runs"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            checks.append(Check("mps", WARN, "Apple MPS is available, but animate runs on cuda or cpu", None))
    except Exception as exc:
        checks.append(Check("gpu", WARN, f"cannot query devices ({exc.__class__.__name__}: {exc})", "run `nvidia-smi` to check the driver"))
    return checks


_LIBRARIES = ("diffusers", "transformers", "accelerate", "safetensors", "huggingface-hub")


def check_libraries() -> Check:
    found, missing = [], []
    for dist in _LIBRARIES:
        version = _version(dist)
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


def _stage_status(module: str, function: str, modules: tuple[str, ...], name: str, fix: str, models: Path | str | None) -> Check:
    """Ask the stage's own ``*_status(models)`` when that module exists, else look for its libraries.

    The stage functions return a dict: ``ok``, the versions of ``modules``, and ``error`` /
    ``problem`` with ``install`` / ``fix`` when something is missing.
    """
    import inspect

    try:
        stage = importlib.import_module(f"magicanimate_cli.{module}")
        status = getattr(stage, function, None)
    except Exception:  # the stage module itself is broken: fall back to looking for the libraries
        status = None
    if callable(status):
        try:
            accepts_models = "models" in inspect.signature(status).parameters
            result = status(models=models) if accepts_models else status()
        except Exception as exc:
            return Check(name, WARN, f"{function}() failed ({exc.__class__.__name__}: {exc})", fix)
        get = result.get if isinstance(result, dict) else (lambda key, default=None: getattr(result, key, default))
        available = bool(get("available", get("ok", False)))
        versions = ", ".join(f"{m} {get(m)}" for m in modules if isinstance(get(m), str))
        if available:
            note = get("note", None)
            return Check(name, OK, (versions or "available") + (f"; {note}" if note else ""))
        problem = str(get("error", None) or get("problem", None) or "not available").splitlines()[0].split("; ")[0]
        return Check(name, WARN, f"{problem} (only needed for `magicanimate {module}`)", get("fix", None) or get("install", None) or fix)
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return Check(name, WARN, f"not installed ({', '.join(missing)} missing); only needed for `magicanimate {module}`", fix)
    return Check(name, OK, "installed (" + ", ".join(f"{m} {_version(m) or ''}".strip() for m in modules) + ")")


def check_densepose(models: Path | str | None = None) -> Check:
    return _stage_status(
        "densepose",
        "densepose_status",
        ("detectron2", "densepose"),
        "densepose",
        "detectron2 and DensePose install from detectron2's git, not from PyPI (see the README)",
        models,
    )


def check_paddleseg(models: Path | str | None = None) -> Check:
    return _stage_status(
        "matting",
        "matting_status",
        ("paddlepaddle", "paddleseg"),
        "paddleseg",
        "pip install paddlepaddle opencv-python-headless && pip install --no-deps paddleseg==2.8.0",
        models,
    )


def check_weights(root: Path, progress: Progress | None = None) -> list[Check]:
    from .weights_manifest import CORRUPT, MISSING, REPLACED, UNVERIFIED, VERIFIED, ChecksumRecord, check_folder, human_size, load_manifest

    manifest = load_manifest()
    checks: list[Check] = []
    try:
        files = check_folder(root, manifest=manifest, progress=progress)
    except Exception as exc:  # a damaged record, an unreadable folder
        return [Check("weights", FAIL, str(exc), "run `magicanimate models download`")]
    record = ChecksumRecord.load(root)
    animate = [f for f in files if f.group == "animate"]
    corrupt = [f for f in animate if f.status == CORRUPT or (f.status == MISSING and f.path in record.entries)]
    missing = [f for f in animate if f.status == MISSING and f.path not in record.entries]
    try:  # what the loader itself requires (a hand-made folder may use .bin variants)
        from .animate.weights import WeightLayout

        layout_missing = [str(p.relative_to(root)) for p in WeightLayout(root).required() if not p.exists()]
    except Exception:
        layout_missing = [f.path for f in missing]
    if corrupt:
        first = corrupt[0]
        checks.append(Check("weights", FAIL, f"{first.path}: {first.detail}" + (f" (+{len(corrupt) - 1} more)" if len(corrupt) > 1 else ""), "run `magicanimate models download --only animate --overwrite`"))
    elif layout_missing:
        need = sum(f.size or 0 for f in missing)
        checks.append(
            Check("weights", FAIL, f"{len(layout_missing)} required file(s) missing in {root}, e.g. {layout_missing[0]}", f"run `magicanimate models download --only animate` ({human_size(need, approx=True)})")
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
                    "run `magicanimate models download --only animate` (checks and records them; downloads nothing when they match)",
                )
            )
        else:
            checks.append(Check("weights", OK, f"animate weights verified ({human_size(size)}); temporal attention: {kind}"))
    for group, stage in (("densepose", "densepose"), ("matting", "matte")):
        members = [f for f in files if f.group == group]
        bad = [f for f in members if f.status == CORRUPT]
        absent = [f for f in members if f.status == MISSING]
        if bad:
            checks.append(Check(f"{group} weights", WARN, f"{bad[0].path}: {bad[0].detail}", f"run `magicanimate models download --only {group} --overwrite`"))
        elif absent:
            checks.append(Check(f"{group} weights", WARN, f"not downloaded (needed by `magicanimate {stage}`)", f"run `magicanimate models download --only {group}`"))
        else:
            state = "verified" if all(f.status == VERIFIED for f in members) else "present"
            checks.append(Check(f"{group} weights", OK, state))
    return checks


def check_disk(root: Path, missing_bytes: int = 0) -> list[Check]:
    from .models import _free_bytes
    from .weights_manifest import human_size

    checks = []
    free = _free_bytes(root)
    if missing_bytes and free < missing_bytes:
        checks.append(Check("disk (models)", FAIL, f"{human_size(free)} free at {root}, the missing weights need {human_size(missing_bytes, approx=True)}", "free space, or put the weights elsewhere with --models / MAGICANIMATE_MODELS"))
    else:
        checks.append(Check("disk (models)", OK, f"{human_size(free)} free at {root}"))
    tmp = Path(tempfile.gettempdir())
    free_tmp = _free_bytes(tmp)
    if free_tmp < LOW_DISK:
        checks.append(Check("disk (temp)", WARN, f"only {human_size(free_tmp)} free in {tmp}", "free space or set TMPDIR to a bigger disk"))
    else:
        checks.append(Check("disk (temp)", OK, f"{human_size(free_tmp)} free in {tmp}"))
    return checks


def _models_origin(models: Path | str | None) -> str:
    import os

    from .models import ENV_VAR, checkout_models_dir

    if models:
        return "--models"
    if os.environ.get(ENV_VAR):
        return ENV_VAR
    return "checkout models/" if checkout_models_dir() else "default (~/.cache/magicanimate/models)"


def doctor(*, models: Path | str | None = None, progress: Progress | None = None) -> DoctorReport:
    """Check Python, torch and its devices, the libraries, ffmpeg, the optional stages, the
    weights (present and verified) and free disk space. Never raises for what it finds."""
    from .models import resolve_models_dir
    from .weights_manifest import MISSING, load_manifest

    root = resolve_models_dir(models)
    checks: list[Check] = [check_python()]
    checks += check_torch()
    checks.append(check_libraries())
    checks.append(check_ffmpeg())
    checks.append(check_densepose(models))
    checks.append(check_paddleseg(models))
    checks.append(Check("models folder", OK if root.is_dir() else WARN, f"{root} (from {_models_origin(models)})", None if root.is_dir() else "run `magicanimate models download`"))
    checks += check_weights(root, progress)
    try:
        from .weights_manifest import check_folder

        missing = sum(f.size or 0 for f in check_folder(root, ("animate",), manifest=load_manifest(), refresh_cache=False) if f.status == MISSING)
    except Exception:
        missing = 0
    checks += check_disk(root, missing)
    return DoctorReport(ready=not any(c.status == FAIL for c in checks), models=str(root), checks=checks)
