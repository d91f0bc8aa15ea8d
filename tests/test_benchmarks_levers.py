"""benchmarks/levers_ab.py turns its --variant words into the FastPath they name; benchmarks/up_path_levers.py
times the levers themselves, not the stock modules twice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from magicanimate_cli.animate.pipeline import FastPath

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str = "levers_ab"):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
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


def test_up_path_levers_times_the_levers(monkeypatch, capsys):
    """Every module the script reports as taken ran the lever: its output differs from the stock one
    by rounding (a lever that fell back to the stock forward, as on a weight that requires grad,
    would report 0)."""
    import json

    from magicanimate_cli.animate import shared_halves, upsample_phases

    # --all-shapes lowers the thresholds module-wide; monkeypatch puts them back
    monkeypatch.setattr(shared_halves, "SHARED_SKIP_MIN_PIXELS", shared_halves.SHARED_SKIP_MIN_PIXELS)
    monkeypatch.setattr(upsample_phases, "MIN_SIDE", upsample_phases.MIN_SIDE)
    _module("up_path_levers").main(["--size", "64", "--frames", "2", "--threads", "1", "--repeat", "1",
                                    "--all-shapes", "--channel-divisor", "10"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    modules, summary = lines[:-1], lines[-1]
    assert {m["lever"] for m in modules} == {"shared_skips", "upsample_phases"} and len(modules) == 15
    assert all(m["taken"] for m in modules)
    assert all(0 < m["max_abs_diff"] < 1e-4 for m in modules), [(m["module"], m["max_abs_diff"]) for m in modules]
    assert summary["all_shapes"] and summary["upsample_phases_s"]["stock"] > 0


def test_levers_ab_times_the_denoising_and_the_decoding_apart(tiny_weights, capsys):
    import json

    _module().main(["--weights", str(tiny_weights), "--size", "64", "--frames", "4", "--rounds", "2", "--threads", "1",
                    "--variant", "new:", "--variant", "before:upsample_phases=0", "--decode"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    calls, summary = lines[:-1], lines[-1]
    assert [(c["variant"], c["round"]) for c in calls] == [("new", 0), ("before", 0), ("before", 1), ("new", 1)]
    assert all(0 < c["denoise_s"] < c["s"] and 0 < c["decode_s"] < c["s"] for c in calls)
    assert set(summary["fastest_decode"]) == {"new", "before"} and len(summary["over_new_by_round_denoise"]["before"]) == 2
    # the phases move the tiny UNet's latents and the decoded frames by rounding only
    assert summary["bitwise_new"] == {"before": False}
    assert 0 < summary["frames_max_diff_new"]["before"] < 1e-3
