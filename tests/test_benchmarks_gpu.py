"""benchmarks/animate_gpu.py's dry run on CPU (``--tiny --quick``).

A lent GPU has a few minutes for the whole issue, so the script it runs must work the first time:
this runs the phases that need no GPU (all but bf16, compile and cli_compile) and checks the records
it prints. (cuDNN's algorithm search is a CUDA switch: on a CPU it must change nothing.)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import factories

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "animate_gpu.py"


def _tensors(path: Path) -> dict:
    return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)


def test_build_weights_writes_the_factories_weights_in_float16(tmp_path):
    """One code path builds the official layout: the benchmark's weights are the factories' at its size, cast."""
    spec = importlib.util.spec_from_file_location("animate_gpu", SCRIPT)
    animate_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(animate_gpu)
    bench = animate_gpu.build_weights(tmp_path / "bench", tiny=True)
    size = dataclasses.replace(factories.TINY, block_out_channels=(32, 32, 64, 64), sample_size=64)
    tests = factories.make_official_weights(tmp_path / "tests", size=size)
    files = sorted(p.relative_to(tests) for p in tests.rglob("*") if p.is_file())
    assert sorted(p.relative_to(bench) for p in bench.rglob("*") if p.is_file()) == sorted([*files, Path(".complete")])
    unet = json.loads((bench / factories.SD / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [32, 32, 64, 64] and unet["sample_size"] == 64
    assert json.loads((bench / "sd-vae-ft-mse" / "config.json").read_text())["sample_size"] == 512
    weights = [f for f in files if f.suffix in (".safetensors", ".ckpt")]
    assert len(weights) == 6
    for name in weights:
        ours, theirs = _tensors(bench / name), _tensors(tests / name)
        assert list(ours) == list(theirs)
        assert all(ours[k].dtype == torch.float16 and torch.equal(ours[k], theirs[k].half()) for k in ours), name


def test_the_dry_run_times_every_path_and_compares_their_frames(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--weights", str(tmp_path / "weights"), "--tiny", "--quick", "--phases", "default,no_graph,fast,cli,serve,cudnn_benchmark"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    events = {r["event"] for r in records}
    assert {"start", "weights", "load", "run", "stages", "diff"} <= events
    runs = {(r["path"], r["frames"]) for r in records if r["event"] == "run"}
    assert runs == {(path, n) for path in ("default", "fast_no_graph", "fast", "fast_cudnn_benchmark") for n in (4, 8)}
    for r in records:
        if r["event"] == "run":
            assert r["s"] > 0 and r["denoise_s"] + r["decode_s"] <= r["s"] + 2e-3 and r["peak_gib"] is None  # three numbers rounded to 1 ms; CPU: no CUDA peak
        if r["event"] == "stages":
            assert set(r["stages_s"]) == {"unet_windows", "controlnet", "appearance_encoder", "vae_decode"}
    diffs = {(r["a"], r["b"], r["frames"]): r for r in records if r["event"] == "diff"}
    pairs = (("default", "fast_no_graph"), ("default", "fast"), ("fast_no_graph", "fast"), ("fast", "fast_cudnn_benchmark"))
    assert set(diffs) == {(a, b, n) for a, b in pairs for n in (4, 8)}
    for n in (4, 8):
        assert diffs[("fast_no_graph", "fast", n)]["max"] == 0  # the CUDA-graph switch changes nothing on a CPU
        assert diffs[("fast", "fast_cudnn_benchmark", n)]["max"] == 0  # nor does cuDNN's algorithm search
        assert diffs[("default", "fast", n)]["identical_pct"] > 90  # the fast path moves frames by rounding only
    processes = [r for r in records if r["event"] == "library_process"]  # the CLI's library call, fresh processes
    assert [r["run"] for r in processes] == ["cold", "warm"] and all(r["rc"] == 0 and r["first_step_s"] > 0 for r in processes)
    served = [r for r in records if r["event"] == "serve"]  # commands sent to a warm server
    assert [r["run"] for r in served] == ["server_warm_up", 0, 1]
    assert all(r["frames"] == 4 and 0 < r["import_cli"] < r["denoise_start"] < r["first_step"] <= r["done"] for r in served)
    assert "| fast | float32 | 8 |" in proc.stdout  # the closing table
