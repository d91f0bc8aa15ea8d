"""Shared fixtures: tiny official-layout weights built once per session, the parity fixtures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PARITY_ROOT = Path(os.environ.get("MAGICANIMATE_PARITY_DIR", REPO.parent / "shared" / "parity"))


def wait_for(predicate, seconds: float, what: str) -> None:
    """Poll ``predicate`` until it is true; ``AssertionError`` naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny random weights in the official layout (motion-only checkpoint + SD UNet weights)."""
    from factories import make_official_weights

    return make_official_weights(tmp_path_factory.mktemp("weights") / "models")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_weights):
    from magicanimate_cli.animate import load_pipeline

    return load_pipeline(tiny_weights, device="cpu", dtype="float32")


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


@pytest.fixture()
def clip(rng):
    """Six random 32×48 uint8 RGB frames (the media tests')."""
    return rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)


@pytest.fixture()
def inputs(rng):
    """A 64² reference and 20 motion frames for the tiny pipeline (tests that need other inputs or
    files define their own ``inputs``)."""
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)


def parity_fixtures() -> list[Path]:
    """Every fixture folder under ../shared/parity (A, and any added later)."""
    if not PARITY_ROOT.is_dir():
        return []
    return sorted(p for p in PARITY_ROOT.iterdir() if (p / "expected" / "run.json").is_file())


@pytest.fixture()
def fake_commands(monkeypatch):
    """Make the fake commands of batch_helpers the ones the CLI's batch runs (outside a Slurm array)."""
    from magicanimate_cli.batch import tasks as batch_tasks

    import batch_helpers

    monkeypatch.setattr(batch_tasks, "COMMANDS", batch_helpers.COMMANDS)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT", raising=False)
