"""Where the weights live.

Resolution order: an explicit ``models`` argument (``--models DIR``), the ``MAGICANIMATE_MODELS``
environment variable, the ``models/`` folder of a source checkout, then
``~/.cache/magicanimate/models``. The folder uses the official ``pretrained_models/`` layout.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MAGICANIMATE_MODELS"


def checkout_models_dir() -> Path | None:
    """``models/`` beside the package when running from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    candidate = root / "models"
    if (root / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None


def resolve_models_dir(models: Path | str | None = None) -> Path:
    if models:
        return Path(models).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return checkout_models_dir() or Path.home() / ".cache" / "magicanimate" / "models"
