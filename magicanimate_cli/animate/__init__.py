"""``magicanimate animate``: reference image + DensePose motion -> animation.

``animate()`` is the library entry point; the CLI command maps its options one-to-one onto this
function's keyword arguments. Heavy imports (torch, diffusers) happen inside it.

The package's names come from ``config`` (``AnimateConfig``, ``AnimateResult``, the allowed
values; no heavy imports: the CLI reads them), ``loading`` (``pin_cpu_kernels``, ``--device`` and
``--dtype`` resolution, ``load_pipeline``) and ``stage`` (``animate``, ``check_animate``,
``grid_path``). A test that replaces a name the stage calls (``load_pipeline``) replaces it in
``stage``, where ``animate`` looks it up.
"""

from __future__ import annotations

from .config import DTYPES, FITS, MAX_SIZE, MIN_SIZE, POSE_BACKGROUND, AnimateConfig, AnimateResult, check_dtype
from .loading import auto_dtype, load_pipeline, pin_cpu_kernels, resolve_device_dtype
from .stage import animate, check_animate, grid_path
from .windows import FUSIONS, SCHEDULES

__all__ = [
    "DTYPES", "FITS", "FUSIONS", "MAX_SIZE", "MIN_SIZE", "POSE_BACKGROUND", "SCHEDULES", "AnimateConfig", "AnimateResult",
    "animate", "auto_dtype", "check_animate", "check_dtype", "grid_path", "load_pipeline", "pin_cpu_kernels",
    "resolve_device_dtype",
]  # fmt: skip
