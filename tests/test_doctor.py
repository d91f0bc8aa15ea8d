"""`magicanimate doctor`: every check isolated, exit 0 exactly when animate can run."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import PARITY_ROOT
from typer.testing import CliRunner

from magicanimate_cli import doctor as doc
from magicanimate_cli import weights_manifest as wm
from magicanimate_cli.cli import app

PARITY_WEIGHTS = PARITY_ROOT / "A" / "weights"
needs_parity = pytest.mark.skipif(not PARITY_WEIGHTS.is_dir(), reason="parity fixture A not available")


@pytest.fixture(autouse=True)
def fast_optional_stages(monkeypatch):
    """The optional stages report through their own status functions (importing paddle takes
    seconds); these tests replace them unless a test asks for the real lookup."""
    monkeypatch.setattr(doc, "densepose_installed", lambda: doc.Check("densepose", doc.WARN, "not installed", "see docs"))
    monkeypatch.setattr(doc, "paddleseg_installed", lambda: doc.Check("paddleseg", doc.OK, "paddleseg 2.8.0"))


@pytest.fixture()
def weights(tmp_path) -> Path:
    target = tmp_path / "weights"
    shutil.copytree(PARITY_WEIGHTS, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


@needs_parity
def test_a_complete_folder_is_ready_and_unverified_weights_are_a_warning(weights):
    report = doc.doctor(models=weights)
    checks = by_name(report)
    assert report.ready and not report.problems
    assert checks["python"].status == doc.OK and sys.executable in checks["python"].detail
    assert checks["torch"].status == doc.OK
    assert checks["gpu"].status in (doc.OK, doc.WARN)
    assert checks["ffmpeg"].status == doc.OK and "ffmpeg" in checks["ffmpeg"].detail
    assert checks["weights"].status == doc.WARN and "models download" in checks["weights"].fix
    assert checks["densepose weights"].status == doc.WARN
    assert checks["disk (models)"].status == doc.OK


def test_missing_weights_fail_with_the_download_command(tmp_path):
    report = doc.doctor(models=tmp_path / "nothing")
    weights = by_name(report)["weights"]
    assert not report.ready and weights.status == doc.FAIL
    assert "magicanimate models download --only animate" in weights.fix
    assert "GB" in weights.fix  # how much it is


def test_a_file_given_as_the_models_folder_says_so(tmp_path):
    (tmp_path / "ckpt.pth").write_bytes(b"weights")
    report = doc.doctor(models=tmp_path / "ckpt.pth")
    folder = by_name(report)["models folder"]
    assert not report.ready and folder.status == doc.FAIL and "is a file" in folder.detail and "--models" in folder.fix
    assert "weights" not in by_name(report)  # no download advice for a folder that is not one


@needs_parity
def test_a_recorded_file_that_changed_fails(weights):
    ckpt = "MagicAnimate/temporal_attention/temporal_attention.ckpt"
    wm.update_record(weights, lambda rec: rec.put(ckpt, wm.sha256_file(weights / ckpt), group="animate", source="test", checked_against="local"))
    assert doc.doctor(models=weights).ready
    with open(weights / ckpt, "r+b") as handle:
        handle.truncate(1000)
    report = doc.doctor(models=weights)
    assert not report.ready and "truncated" in by_name(report)["weights"].detail


def test_a_damaged_conversion_gets_the_fix_that_repairs_it(tmp_path):
    # doctor said `models download --overwrite`, which never touches the converted file, so the
    # fix it gave left doctor (and animate) failing; animate's own check says `models convert`
    rel = "MagicAnimate/temporal_attention/temporal_attention.safetensors"
    converted = tmp_path / rel
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"0" * 100)
    wm.update_record(tmp_path, lambda rec: rec.put(rel, wm.sha256_file(converted), group="animate", source="converted", checked_against="converted"))
    converted.write_bytes(b"1" * 50)
    weights = by_name(doc.doctor(models=tmp_path))["weights"]
    assert weights.status == doc.FAIL and rel in weights.detail
    assert weights.fix == (f"run `magicanimate models convert --models {tmp_path} --overwrite` "
                           "(or delete it to use the original checkpoint)")  # this folder, not the default one


def test_broken_libraries_are_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    monkeypatch.setattr(doc, "installed_version", lambda dist: None if dist == "diffusers" else "1.0")
    from magicanimate_cli import media

    monkeypatch.setattr(media, "ffmpeg_binary", lambda: str(tmp_path / "no-ffmpeg"))
    checks = by_name(doc.doctor(models=tmp_path))
    assert checks["torch"].status == doc.FAIL and "pytorch.org" in checks["torch"].fix
    assert checks["libraries"].status == doc.FAIL and checks["libraries"].fix == "pip install diffusers"
    assert checks["ffmpeg"].status == doc.FAIL and "imageio-ffmpeg" in checks["ffmpeg"].fix


def test_optional_stages_are_found_without_importing_them(tmp_path, monkeypatch):
    """The oracle is the file system: a stand-in detectron2 + densepose on sys.path makes the check
    OK, their absence makes it a warning with the install route, and neither is ever imported."""
    monkeypatch.undo()  # the real densepose_installed / paddleseg_installed
    for name in ("detectron2", "densepose"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    absent = doc.densepose_installed()
    assert absent.status == doc.WARN and "detectron2" in absent.detail and "git+https://github.com/facebookresearch/detectron2" in absent.fix
    for name in ("detectron2", "densepose"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise RuntimeError('imported')\n")  # importing it would fail
    monkeypatch.syspath_prepend(str(tmp_path))
    present = doc.densepose_installed()
    assert present.status == doc.OK
    assert "detectron2" not in sys.modules and "densepose" not in sys.modules


def test_doctor_imports_no_heavy_library(tmp_path):
    """What made doctor take 25 s: importing torch, diffusers, paddle(seg), detectron2 or ray just
    to see whether they are there (benchmarks/doctor.py has the timing)."""
    import subprocess

    code = (
        "import json, sys\n"
        "from magicanimate_cli.doctor import doctor\n"
        f"report = doctor(models={str(tmp_path / 'nothing')!r})\n"
        "print(json.dumps({'names': [c.name for c in report.checks], 'loaded': sorted(sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"torch", "gpu", "libraries", "densepose", "paddleseg", "weights"} <= set(data["names"])
    heavy = {"torch", "diffusers", "transformers", "paddle", "paddleseg", "detectron2", "ray", "sklearn", "huggingface_hub"}
    assert heavy.isdisjoint(name.split(".")[0] for name in data["loaded"])


def test_torch_is_described_from_its_files_without_importing_it():
    import subprocess

    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"  # the oracle: torch itself
    imported = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert list(doc.torch_build()) == imported


@needs_parity
def test_doctor_and_models_list_count_the_same_missing_files(weights):
    """One source of truth: the files removed here are what both report missing (the .bin variants
    of the fixture count as present for both)."""
    from magicanimate_cli.models import list_models

    removed = [
        "stable-diffusion-v1-5/tokenizer/vocab.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.bin",
        "MagicAnimate/densepose_controlnet/config.json",
    ]
    assert list_models(models=weights, only="animate").counts["missing"] == 0
    for rel in removed:
        (weights / rel).unlink()
    listing = list_models(models=weights, only="animate")
    assert listing.counts["missing"] == len(removed)
    missing = {f.path for f in listing.files if f.status == wm.MISSING}
    assert missing == {r.replace("diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors") for r in removed}
    check = by_name(doc.doctor(models=weights))["weights"]
    assert check.status == doc.FAIL and check.detail.startswith(f"{len(removed)} of {len(listing.files)} animate file(s) missing")


def test_cli_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["doctor", "--models", str(tmp_path / "nothing"), "--json"])
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False and data["ready"] is False  # ok means exit code 0: animate cannot run
    assert any(p.startswith("weights:") and "models download" in p for p in data["problems"])
    out = runner.invoke(app, ["doctor", "--models", str(tmp_path / "nothing")])
    text = " ".join(out.output.split())  # Rich wraps long lines at the terminal width
    assert out.exit_code == 1 and f"fix: run `magicanimate models download --only animate --models {tmp_path / 'nothing'}`" in text
    lines = out.stdout.splitlines()
    checks = lines.index("checks:")  # one check per line under it, not one line of "\n"s
    assert lines[checks + 1].split()[:2] == ["ok", "python"] and "\\n" not in out.stdout
    if PARITY_WEIGHTS.is_dir():
        out = runner.invoke(app, ["doctor", "--models", str(PARITY_WEIGHTS), "--json"])
        assert out.exit_code == 0 and json.loads(out.stdout)["ready"] is True


def test_a_models_folder_that_cannot_be_read_is_a_failed_check_not_an_abort(tmp_path, monkeypatch):
    locked = tmp_path / "theirs" / "models"  # e.g. MAGICANIMATE_MODELS in another user's home
    stat = Path.stat

    def refused(self, *args, **kwargs):
        if str(self).startswith(str(locked.parent)):
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refused)
    report = doc.doctor(models=locked)
    checks = by_name(report)
    assert report.ready is False and report.exit_code == 1
    assert checks["models folder"].status == doc.FAIL
    assert checks["models folder"].detail == f"{locked} (from --models) cannot be read (Permission denied)"
    assert {"python", "torch", "ffmpeg", "disk (temp)"} <= set(checks)  # the rest is still checked and said
    out = CliRunner().invoke(app, ["doctor", "--models", str(locked), "--json"])
    assert out.exit_code == 1 and json.loads(out.stdout)["problems"][0].startswith(f"models folder: {locked} (from --models) cannot be read")


def test_missing_weights_that_cannot_be_written_fail_the_disk_check(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_bytes(b"x")
    check = by_name(doc.doctor(models=tmp_path / "a-file" / "models"))["disk (models)"]  # a typo'd path through a file
    assert check.status == doc.FAIL and check.detail == f"{tmp_path / 'a-file'} is a file: the missing weights cannot be downloaded into {tmp_path / 'a-file' / 'models'}"
    read_only = tmp_path / "read-only"  # a read-only mount, or a folder of another user's
    read_only.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == read_only else access(path, mode, **kw))
    check = by_name(doc.doctor(models=read_only / "models"))["disk (models)"]
    assert check.status == doc.FAIL and check.detail.startswith(f"{read_only} is not writable") and check.fix.startswith("fix its permissions")
    assert by_name(doc.doctor(models=tmp_path / "models"))["disk (models)"].status == doc.OK  # writable: as before
