"""benchmarks/levers_ab.py turns its --variant words into the FastPath they name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from magicanimate_cli.animate.pipeline import FastPath

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "levers_ab.py"


def _module():
    spec = importlib.util.spec_from_file_location("levers_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_name_fastpath_fields():
    parse = _module().parse_variant
    assert parse("new:", FastPath) == ("new", FastPath())
    assert parse("before:shared_skips=0,upsample_phases=0,decode_chunk=1", FastPath) == (
        "before", FastPath(shared_skips=False, upsample_phases=False, decode_chunk=1))


def test_an_unknown_field_is_refused_with_the_known_ones():
    with pytest.raises(SystemExit, match="no field 'skips'.*shared_skips"):
        _module().parse_variant("x:skips=0", FastPath)
