"""Fixtures of the batch tests."""

import pytest

from magicanimate_cli.batch import tasks as batch_tasks

import batch_helpers


@pytest.fixture()
def fake_commands(monkeypatch):
    """Make the fake commands of batch_helpers the ones the CLI's batch runs (outside a Slurm array)."""
    monkeypatch.setattr(batch_tasks, "COMMANDS", batch_helpers.COMMANDS)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT", raising=False)
