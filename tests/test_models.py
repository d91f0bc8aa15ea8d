"""`magicanimate models download / convert / list` and the load-time checksum check.

The Hub is a local HTTP server (tests/models_helpers.py) that answers what huggingface_hub asks
(paths-info, resolve HEAD/GET with ranges) and serves plain URLs; no network is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PARITY_ROOT
from typer.testing import CliRunner

from magicanimate_cli import files
from magicanimate_cli import models as models_mod
from magicanimate_cli import weights_manifest as wm
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError
from magicanimate_cli.models import (
    TEMPORAL_CKPT,
    TEMPORAL_SAFETENSORS,
    convert,
    download,
    list_models,
    verify_models,
)

from models_helpers import FakeHub, make_hub, write_manifest

PARITY_A = PARITY_ROOT / "A"
needs_parity = pytest.mark.skipif(not (PARITY_A / "weights").is_dir(), reason="parity fixture A not available")


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """The fake Hub, huggingface_hub pointed at it, and a manifest describing it."""
    import huggingface_hub.constants as constants

    folder, spec = make_hub(tmp_path / "hub")
    with FakeHub(folder) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        server.manifest = write_manifest(spec["manifest"], server.url, tmp_path / "manifest.json")
        server.contents = spec["contents"]
        server.hub_folder = folder
        yield server


@pytest.fixture()
def fixture_weights(tmp_path) -> Path:
    """A writable copy of parity fixture A's weights (the official layout, tiny random weights)."""
    target = tmp_path / "weights"
    shutil.copytree(PARITY_A / "weights", target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def downloaded(hub, tmp_path) -> Path:
    root = tmp_path / "models"
    download(models=root, manifest=hub.manifest)
    return root


# ----------------------------------------------------------------------------- the real manifest


def test_manifest_names_exactly_what_the_animator_reads():
    from magicanimate_cli.weights_layout import WeightLayout

    manifest = wm.load_manifest()
    animate = [f.path for f in manifest.select(["animate"])]
    root = Path("/m")
    for required in WeightLayout(root).required():  # every folder/file the loader needs is covered
        rel = str(required.relative_to(root))
        rel = rel.replace("temporal_attention.safetensors", "temporal_attention.ckpt")
        assert any(p == rel or p.startswith(rel + "/") for p in animate), rel
    assert "stable-diffusion-v1-5/unet/config.json" in animate
    assert not any("unet/diffusion_pytorch_model" in p or "v1-5-pruned" in p or "/vae/" in p or "scheduler" in p for p in animate)
    assert not any("fp16" in p or p.endswith(".bin") for p in animate)
    for source in manifest.sources.values():
        if source.kind == "hf":
            assert re.fullmatch(r"[0-9a-f]{40}", source.revision), source.name
    assert manifest.sources["stable-diffusion-v1-5"].repo == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    for item in manifest.files:
        assert item.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", item.sha256)
        assert item.path.startswith(item.source.folder + "/")
    assert {f.group for f in manifest.files} == set(wm.GROUPS)


def test_manifest_agrees_with_the_densepose_and_matting_stages():
    from magicanimate_cli import matting
    from magicanimate_cli.densepose import estimator

    manifest = wm.load_manifest()
    (dp,) = manifest.select(["densepose"])
    spec = estimator.MODELS[estimator.DEFAULT_MODEL]
    assert estimator.weights_path(spec, "/m") == Path("/m") / dp.path
    assert (dp.url, dp.sha256, dp.size) == (spec.url, spec.sha256, spec.size)
    (mat,) = manifest.select(["matting"])
    seg = matting.model_spec(matting.DEFAULT_MODEL)
    assert mat.path == seg.relpath and mat.url == seg.url
    assert mat.sha256 == seg.sha256


def test_only_accepts_known_groups():
    assert wm.parse_groups(None) == wm.GROUPS
    assert wm.parse_groups("densepose,animate") == ("densepose", "animate")
    with pytest.raises(UserError, match="--only"):
        wm.parse_groups("unet")


# ----------------------------------------------------------------------------- download


def test_download_fills_the_official_layout_and_records_every_checksum(hub, tmp_path):
    root = tmp_path / "models"
    seen = {}

    def on_plan(plan):
        seen["plan"] = plan
        seen["gets_before"] = [r for r in hub.requests if r[0] == "GET" and "/api/" not in r[1]]

    result = download(models=root, manifest=hub.manifest, on_plan=on_plan)
    assert seen["gets_before"] == []  # sizes were shown before anything was fetched
    sizes = {p.path: p.size for p in seen["plan"]}
    assert sizes["MagicAnimate/temporal_attention/temporal_attention.ckpt"] == 5000  # from the Hub
    assert sizes["DensePose/model_final.pkl"] == 4000  # from the manifest
    assert sorted(result.downloaded) == sorted(hub.contents)
    for rel, data in hub.contents.items():
        assert (root / rel).read_bytes() == data
    record = json.loads((root / wm.RECORD_NAME).read_text())["files"]
    assert set(record) == set(hub.contents)
    for rel, data in hub.contents.items():
        assert record[rel]["sha256"] == hashlib.sha256(data).hexdigest()
        assert record[rel]["size"] == len(data)
    checked = {rel: entry["checked_against"] for rel, entry in record.items()}
    assert checked["stable-diffusion-v1-5/text_encoder/model.safetensors"] == "manifest"
    assert checked["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"] == "hub-lfs"
    assert checked["stable-diffusion-v1-5/unet/config.json"] == "hub-blob"
    assert checked["PaddleSeg/seg/model.pdparams"] == "manifest"
    assert checked["DensePose/model_final.pkl"] == "unchecked"
    assert verify_models(root, None, manifest=hub.manifest)
    listing = list_models(models=root, manifest=hub.manifest)
    assert listing.counts["verified"] == len(hub.contents) and all(listing.complete.values())


def test_a_second_download_skips_verified_files_without_touching_the_network(hub, tmp_path):
    root = downloaded(hub, tmp_path)
    hub.requests.clear()
    result = download(models=root, manifest=hub.manifest)
    assert result.downloaded == [] and sorted(result.kept) == sorted(hub.contents)
    assert hub.requests == []


def test_only_downloads_one_group(hub, tmp_path):
    root = tmp_path / "models"
    result = download(only="densepose", models=root, manifest=hub.manifest)
    assert result.downloaded == ["DensePose/model_final.pkl"]
    assert not (root / "sd-vae-ft-mse").exists()


def test_an_interrupted_url_download_resumes_where_it_stopped(hub, tmp_path, monkeypatch):
    from huggingface_hub import file_download

    real = file_download.http_get

    def interrupted(url, temp_file, **kwargs):
        temp_file.write(hub.contents["DensePose/model_final.pkl"][:1500])
        raise KeyboardInterrupt  # Ctrl-C, or the batch job killed

    root = tmp_path / "models"
    monkeypatch.setattr(file_download, "http_get", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download(only="densepose", models=root, manifest=hub.manifest)
    assert not (root / "DensePose/model_final.pkl").exists()  # never a partial file under the final name
    monkeypatch.setattr(file_download, "http_get", real)
    hub.requests.clear()
    download(only="densepose", models=root, manifest=hub.manifest)
    assert (root / "DensePose/model_final.pkl").read_bytes() == hub.contents["DensePose/model_final.pkl"]
    assert [r[2] for r in hub.gets("model_final.pkl")] == ["bytes=1500-"]
    assert not list((root / "DensePose").glob("*.part"))


def test_a_second_download_into_the_folder_waits_for_the_first_and_fetches_nothing(hub, tmp_path):
    # both appended to the same DensePose/model_final.pkl.<tag>.part: a file of twice the size was
    # committed and recorded as downloaded, and the other run failed on the vanished .part
    import threading

    from conftest import wait_for

    root, results, stages = tmp_path / "models", {}, []
    hub.slow["model_final.pkl"] = 1.0

    def run(name: str, progress=None) -> None:
        try:
            results[name] = download(only="densepose", models=root, manifest=hub.manifest, progress=progress).downloaded
        except Exception as exc:  # noqa: BLE001 - said by the assertion below
            results[name] = f"{exc.__class__.__name__}: {exc}"

    first = threading.Thread(target=run, args=("first",))
    first.start()
    wait_for(lambda: hub.gets("model_final.pkl"), 30, "the first download to start")
    second = threading.Thread(target=run, args=("second", lambda stage, done, total: stages.append((stage, done, total))))
    second.start()
    first.join(60)
    second.join(60)
    assert results == {"first": ["DensePose/model_final.pkl"], "second": []}
    assert (root / "DensePose/model_final.pkl").read_bytes() == hub.contents["DensePose/model_final.pkl"]
    assert len(hub.gets("model_final.pkl")) == 1
    waited = [stage for stage, _, _ in stages if stage.startswith("waiting for another download")]
    assert waited and f"held by pid {os.getpid()}" in waited[0]
    assert list_models(models=root, only="densepose", manifest=hub.manifest).counts["verified"] == 1
    assert not (root / models_mod.DOWNLOAD_LOCK).exists()  # no lock file left in the folder


def test_two_stages_fetching_the_same_weights_take_turns(hub, tmp_path):
    # two batch workers' densepose tasks fetch the zoo weights at once: both wrote one
    # .model_final.pkl.fetched.<tag>.part, and the mixed bytes failed their sha256
    import threading

    from conftest import wait_for

    dest, data, results = tmp_path / "models" / "DensePose" / "model_final.pkl", hub.contents["DensePose/model_final.pkl"], []
    hub.slow["model_final.pkl"] = 1.0
    url, digest = f"{hub.url}/files/model_final.pkl", hashlib.sha256(data).hexdigest()

    def fetch() -> None:
        try:
            results.append(models_mod.fetch_url(url, dest, sha256=digest))
        except Exception as exc:  # noqa: BLE001 - said by the assertion below
            results.append(f"{exc.__class__.__name__}: {exc}")

    first, second = threading.Thread(target=fetch), threading.Thread(target=fetch)
    first.start()
    wait_for(lambda: hub.gets("model_final.pkl"), 30, "the first fetch to start")
    second.start()
    first.join(60)
    second.join(60)
    assert results == [digest, digest] and dest.read_bytes() == data
    assert len(hub.gets("model_final.pkl")) == 1  # the second took the first's file
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model_final.pkl"]


def test_ensure_weights_gives_a_stage_its_files(hub, tmp_path):
    from magicanimate_cli.models import ensure_weights

    root = tmp_path / "models"
    paths = ensure_weights("matting", models=root, manifest=hub.manifest)
    assert paths == {"PaddleSeg/seg/model.pdparams": root / "PaddleSeg/seg/model.pdparams"}
    assert paths["PaddleSeg/seg/model.pdparams"].read_bytes() == hub.contents["PaddleSeg/seg/model.pdparams"]
    hub.requests.clear()
    assert ensure_weights("matting", models=root, manifest=hub.manifest) == paths
    assert hub.requests == []


def test_dry_run_shows_the_plan_and_fetches_nothing(hub, tmp_path):
    result = download(models=tmp_path / "models", manifest=hub.manifest, dry_run=True)
    assert result.dry_run and result.downloaded == []
    assert {p.action for p in result.plan} == {"download"}
    assert result.bytes_to_download == sum(p.size or 0 for p in result.plan)
    assert not [r for r in hub.gets("") if "/api/" not in r[1]]


def test_a_folder_made_by_hand_is_checked_and_recorded_not_downloaded_again(hub, tmp_path):
    root = tmp_path / "models"
    for rel, data in hub.contents.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    result = download(models=root, manifest=hub.manifest)
    assert result.downloaded == [] and sorted(result.recorded) == sorted(hub.contents)
    assert not [r for r in hub.gets("") if "/api/" not in r[1]]
    assert list_models(models=root, manifest=hub.manifest).counts["verified"] == len(hub.contents)


def test_a_dry_run_writes_nothing_even_for_a_touched_file(hub, tmp_path):
    root = tmp_path / "models"
    download(models=root, manifest=hub.manifest)
    record = root / wm.RECORD_NAME
    before = record.read_bytes()
    touched = root / next(iter(hub.contents))
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same bytes: hashed again
    assert {p.action for p in download(models=root, manifest=hub.manifest, dry_run=True).plan} == {"keep"}
    assert record.read_bytes() == before  # the record's cached stat was rewritten by a dry run
    download(models=root, manifest=hub.manifest)
    assert record.read_bytes() != before  # a real run refreshes it, so that the next check is instant


def test_a_variant_the_loader_reads_counts_as_present(hub, tmp_path, monkeypatch):
    # a hand-made folder with the text encoder's .bin: "either file counts as present"; it was
    # planned as missing (fetched again online; offline, refused with nothing recorded)
    import huggingface_hub.constants as constants

    root = tmp_path / "models"
    for rel, data in hub.contents.items():
        if rel.endswith("text_encoder/model.safetensors"):
            rel = rel.replace("model.safetensors", "pytorch_model.bin")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    asked, published = [], models_mod._published
    monkeypatch.setattr(models_mod, "_published", lambda pending, *args: asked.extend(p.path for p in pending) or published(pending, *args))
    assert download(models=root, manifest=hub.manifest, dry_run=True).bytes_to_download == 0  # online
    assert asked and "stable-diffusion-v1-5/text_encoder/model.safetensors" not in asked  # nothing to ask the Hub about it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = {p.path: p for p in download(models=root, manifest=hub.manifest, dry_run=True).plan}
    assert plan["stable-diffusion-v1-5/text_encoder/model.safetensors"].action == "keep"
    assert "pytorch_model.bin" in plan["stable-diffusion-v1-5/text_encoder/model.safetensors"].reason
    result = download(models=root, manifest=hub.manifest)
    assert result.downloaded == [] and result.bytes_to_download == 0
    assert len(result.recorded) == len(hub.contents) - 1 and not (root / "stable-diffusion-v1-5/text_encoder/model.safetensors").exists()


def test_a_different_file_is_only_replaced_with_overwrite(hub, tmp_path):
    root = tmp_path / "models"
    own = root / "MagicAnimate/temporal_attention/temporal_attention.ckpt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"my fine-tuned checkpoint")
    with pytest.raises(UserError, match="--overwrite"):
        download(only="animate", models=root, manifest=hub.manifest)
    assert own.read_bytes() == b"my fine-tuned checkpoint"
    download(only="animate", models=root, manifest=hub.manifest, overwrite=True)
    assert own.read_bytes() == hub.contents[TEMPORAL_CKPT]


def test_a_source_that_serves_other_bytes_than_the_manifest_pins_is_refused(hub, tmp_path):
    member = hub.hub_folder / "files" / "seg.zip"
    import zipfile

    with zipfile.ZipFile(member, "w") as zf:
        zf.writestr("seg_pretrained/model.pdparams", b"swapped")
    with pytest.raises(UserError, match="does not match its published checksum"):
        download(only="matting", models=tmp_path / "models", manifest=hub.manifest)
    assert not (tmp_path / "models/PaddleSeg/seg/model.pdparams").exists()
    (hub.hub_folder / "org/sd/text_encoder/model.safetensors").write_bytes(b"x" * 3000)
    with pytest.raises(UserError, match="manifest"):
        download(only="animate", models=tmp_path / "models", manifest=hub.manifest)


def test_a_manifest_moved_to_another_revision_rechecks_recorded_files(hub, tmp_path):
    root = downloaded(hub, tmp_path)
    manifest = json.loads(hub.manifest.read_text())
    manifest["sources"]["vae"]["revision"] = "b" * 40  # the fake hub serves any revision
    manifest["files"][2]["sha256"] = "0" * 64  # text_encoder/model.safetensors: a new pinned file
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(manifest))
    hub.requests.clear()
    with pytest.raises(UserError, match="differs from the manifest's"):  # the Hub disagrees with the new pin
        download(models=root, manifest=moved, dry_run=True)
    manifest["files"][2]["sha256"] = None
    moved.write_text(json.dumps(manifest))
    plan = {p.path: p for p in download(models=root, manifest=moved, dry_run=True).plan}
    assert plan["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"].action == "record"  # same bytes at the new revision
    assert plan["stable-diffusion-v1-5/tokenizer/vocab.json"].action == "keep"
    # The Hub now has other bytes and the manifest pins them: our old download is updated without --overwrite.
    new = b"new text encoder" * 200
    (hub.hub_folder / "org/sd/text_encoder/model.safetensors").write_bytes(new)
    manifest["files"][2]["sha256"] = hashlib.sha256(new).hexdigest()
    moved.write_text(json.dumps(manifest))
    result = download(models=root, manifest=moved)
    assert {p.path: p.action for p in result.plan}["stable-diffusion-v1-5/text_encoder/model.safetensors"] == "update"
    assert (root / "stable-diffusion-v1-5/text_encoder/model.safetensors").read_bytes() == new


def test_a_file_changed_since_it_was_recorded_is_not_updated_without_overwrite(hub, tmp_path):
    # the manifest pins a new file; ours was replaced by the user's own since we recorded it:
    # "update" (no --overwrite) replaced the user's file because the record, not the file, was judged
    root = downloaded(hub, tmp_path)
    rel = "stable-diffusion-v1-5/text_encoder/model.safetensors"
    own = root / rel
    own.write_bytes(b"my fine-tuned text encoder" * 100)
    new = b"new text encoder" * 200
    (hub.hub_folder / "org/sd" / rel.split("/", 1)[1]).write_bytes(new)
    manifest = json.loads(hub.manifest.read_text())
    manifest["files"][2]["sha256"] = hashlib.sha256(new).hexdigest()
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(manifest))
    assert {p.path: p.action for p in download(models=root, manifest=moved, dry_run=True).plan}[rel] == "replace"
    with pytest.raises(UserError, match="--overwrite"):
        download(models=root, manifest=moved)
    assert own.read_bytes() == b"my fine-tuned text encoder" * 100
    download(models=root, manifest=moved, overwrite=True)
    assert own.read_bytes() == new


def test_offline_mode_uses_only_local_files(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    root = tmp_path / "models"
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        download(models=root, manifest=hub.manifest)
    for rel, data in hub.contents.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    result = download(models=root, manifest=hub.manifest)
    assert sorted(result.recorded) == sorted(hub.contents) and result.offline
    assert hub.requests == []
    record = json.loads((root / wm.RECORD_NAME).read_text())["files"]
    assert record["stable-diffusion-v1-5/text_encoder/model.safetensors"]["checked_against"] == "manifest"
    assert record["sd-vae-ft-mse/config.json"]["checked_against"] == "local"  # nothing published offline


def test_network_failure_is_one_line_with_the_way_out(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(models_mod.NetworkError, match="HF_HUB_OFFLINE") as info:  # not bad input: exit 1, not 2
        download(only="animate", models=tmp_path / "models", manifest=hub.manifest)
    assert not isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert not (tmp_path / "models").exists()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter (exit codes as a user sees them)."""
    code = "import sys; from magicanimate_cli.cli import entrypoint; sys.argv = ['magicanimate', *sys.argv[1:]]; entrypoint()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}], ids=["offline", "unreachable"])
def test_dry_run_prints_the_plan_from_the_pinned_manifest_without_a_network(tmp_path, env):
    root = tmp_path / "models"
    (root / "sd-vae-ft-mse").mkdir(parents=True)
    (root / "sd-vae-ft-mse" / "config.json").write_text("{}")  # already here: recorded, not downloaded
    out = _cli("models", "download", "--dry-run", "--models", str(root), "--json", env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    manifest = json.loads(wm.manifest_path().read_text())  # the oracle: the pinned manifest itself
    plan = {p["path"]: p for p in result["plan"]}
    assert set(plan) == {f["path"] for f in manifest["files"]}
    for entry in manifest["files"]:
        if entry["path"] != "sd-vae-ft-mse/config.json":
            assert plan[entry["path"]]["action"] == "download"
            assert plan[entry["path"]]["size"] == (entry.get("size") or entry.get("approx_size"))
    assert plan["sd-vae-ft-mse/config.json"]["action"] == "record" and plan["sd-vae-ft-mse/config.json"]["size"] == 2
    assert "pinned manifest" in result["note"] and result["downloaded"] == []
    assert not (root / wm.RECORD_NAME).exists()  # a dry run writes nothing
    human = _cli("models", "download", "--dry-run", "--models", str(root), env=env)
    assert human.returncode == 0 and f"{len(plan) - 1} file(s) to download" in human.stderr and "1 already here" in human.stderr


def test_a_network_failure_exits_1_and_bad_input_exits_2(tmp_path):
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = _cli("models", "download", "--only", "animate", "--models", str(tmp_path / "models"), env=env)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "cannot read file information" in out.stderr
    out = _cli("models", "download", "--only", "unet", "--models", str(tmp_path / "models"), env=env)
    assert out.returncode == 2


def test_fetch_url_retries_quietly_and_fails_in_one_line(tmp_path, capfd, monkeypatch):
    """huggingface_hub logs "Trying to resume download..." for each retry (11 lines before the error)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    dest = tmp_path / "new" / "folder" / "weights.bin"
    with pytest.raises(models_mod.NetworkError) as info:
        models_mod.fetch_url("http://127.0.0.1:9/weights.bin", dest)
    assert str(info.value).startswith("http://127.0.0.1:9/weights.bin: download failed") and "\n" not in str(info.value)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert not (tmp_path / "new").exists()  # no empty folders left behind


# ----------------------------------------------------------------------------- layering


def test_models_and_the_loader_do_not_import_each_other():
    """The cycle animate.weights <-> models is gone: each imports alone, and neither names the other."""
    import ast

    package = Path(models_mod.__file__).parent
    for module, other, path in (
        ("magicanimate_cli.models", "magicanimate_cli.animate.weights", package / "models.py"),
        ("magicanimate_cli.animate.weights", "magicanimate_cli.models", package / "animate" / "weights.py"),
    ):
        out = subprocess.run([sys.executable, "-c", f"import sys, {module}; print({other!r} in sys.modules)"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False", module
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):  # module level and inside functions
            if isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or ""))
                names.update("." * node.level + (node.module + "." if node.module else "") + a.name for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        short = other.rsplit(".", 1)[-1]
        assert not any(n.endswith(("." + short, other)) or n == other for n in names if "weights_" not in n), (module, names)


def test_animate_without_weights_says_so_before_any_heavy_import_or_reading(tmp_path):
    """The error names the first missing file and the fix; torch and diffusers are not loaded yet,
    and the motion (not an image at all here) was never read."""
    reference, motion = tmp_path / "ref.png", tmp_path / "motion"
    reference.write_bytes(b"not an image")
    motion.mkdir()
    (motion / "00000.png").write_bytes(b"not an image either")
    code = (
        "import json, sys\n"
        "from magicanimate_cli.animate import animate\n"
        "from magicanimate_cli.errors import UserError\n"
        "try:\n"
        f"    animate({str(reference)!r}, {str(motion)!r}, {str(tmp_path / 'out.mp4')!r}, models={str(tmp_path / 'empty')!r})\n"
        "except UserError as exc:\n"
        "    print(json.dumps({'error': str(exc), 'loaded': [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    animate_files = [f for f in wm.load_manifest().files if f.group == "animate"]
    assert data["error"].startswith(str(tmp_path / "empty" / animate_files[0].path) + f": missing ({len(animate_files)} file(s)")
    assert "magicanimate models download --only animate" in data["error"]
    assert data["loaded"] == []


def test_the_packaged_manifest_is_the_checkout_manifest():
    checkout = Path(models_mod.__file__).resolve().parent.parent / "models" / wm.MANIFEST_NAME
    packaged = Path(models_mod.__file__).resolve().parent / wm.MANIFEST_NAME
    if checkout.exists():
        assert checkout.read_bytes() == packaged.read_bytes()


# ----------------------------------------------------------------------------- verification


def test_corrupt_truncated_and_missing_files_fail_verification_with_the_fix(hub, tmp_path):
    root = downloaded(hub, tmp_path)
    vae = root / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"
    data = bytearray(vae.read_bytes())
    data[100] ^= 0xFF
    vae.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"diffusion_pytorch_model.safetensors: checksum mismatch.*magicanimate models download --models .*/models --overwrite") as info:
        verify_models(root, manifest=hub.manifest)
    assert "\n" not in str(info.value)
    listing = list_models(models=root, manifest=hub.manifest)
    assert listing.counts["corrupt"] == 1 and not listing.complete["animate"] and listing.complete["densepose"]
    with pytest.raises(UserError, match="--overwrite"):
        download(models=root, manifest=hub.manifest)
    download(models=root, manifest=hub.manifest, overwrite=True)
    verify_models(root, manifest=hub.manifest)

    ckpt = root / TEMPORAL_CKPT
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        verify_models(root, manifest=hub.manifest)
    download(models=root, manifest=hub.manifest, overwrite=True)
    (root / "stable-diffusion-v1-5/tokenizer/vocab.json").unlink()
    with pytest.raises(UserError, match="recorded but missing"):
        verify_models(root, manifest=hub.manifest)
    verify_models(root, "densepose", manifest=hub.manifest)  # other groups are not affected
    assert download(models=root, manifest=hub.manifest).downloaded == ["stable-diffusion-v1-5/tokenizer/vocab.json"]


def test_verification_hashes_once_and_trusts_unchanged_size_and_mtime(hub, tmp_path, monkeypatch):
    root = downloaded(hub, tmp_path)
    calls = []
    real = wm.sha256_file
    monkeypatch.setattr(wm, "sha256_file", lambda path, *a, **k: calls.append(Path(path).name) or real(path, *a, **k))
    verify_models(root, None, manifest=hub.manifest)
    assert calls == []
    ckpt = root / TEMPORAL_CKPT
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # copied, touched: same bytes
    verify_models(root, None, manifest=hub.manifest)
    assert calls == ["temporal_attention.ckpt"]
    verify_models(root, None, manifest=hub.manifest)  # the record was refreshed: no second hash
    assert calls == ["temporal_attention.ckpt"]
    # The documented limit: a same-size rewrite that restores the mtime passes the cached check...
    data = bytearray(ckpt.read_bytes())
    data[0] ^= 1
    stat = ckpt.stat()
    ckpt.write_bytes(bytes(data))
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_models(root, None, manifest=hub.manifest)
    with pytest.raises(UserError, match="checksum mismatch"):  # ...and --rehash catches it
        verify_models(root, None, rehash=True, manifest=hub.manifest)


def test_a_record_naming_a_file_outside_the_folder_is_refused_without_reading_it(hub, tmp_path, monkeypatch):
    """The record lives in the models folder, which may come from elsewhere (a copied
    pretrained_models/): its paths must not make a check read any other file."""
    root = downloaded(hub, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a weight")
    path = root / wm.RECORD_NAME
    record = json.loads(path.read_text())
    entry = {**next(iter(record["files"].values())), "size": secret.stat().st_size, "mtime_ns": 1}
    hashed = []
    real = wm.sha256_file
    monkeypatch.setattr(wm, "sha256_file", lambda file, *a, **k: hashed.append(Path(file)) or real(file, *a, **k))
    for name in ("../secret.txt", str(secret), "MagicAnimate/../../secret.txt"):
        path.write_text(json.dumps({**record, "files": {**record["files"], name: entry}}))
        said = re.escape(f"{path}: damaged checksum record (entry {name!r} is not inside the models folder); delete it")
        with pytest.raises(UserError, match=said):
            verify_models(root, manifest=hub.manifest)
        with pytest.raises(UserError, match=said):
            list_models(models=root, manifest=hub.manifest)
    assert hashed == []


def test_a_recorded_file_replaced_by_a_pipe_is_reported_not_read(hub, tmp_path, monkeypatch):
    """Hashing a pipe or a device (a link to /dev/zero) would never end: animate, doctor and
    `models list` would hang instead of saying what is wrong."""
    root = downloaded(hub, tmp_path)
    relpath = "sd-vae-ft-mse/config.json"
    (root / relpath).unlink()
    os.mkfifo(root / relpath)  # size 0, as recorded below: only its mtime differs

    def zero(rec):
        rec.entries[relpath].size = 0

    wm.update_record(root, zero)
    monkeypatch.setattr(wm, "sha256_file", lambda file, *a, **k: pytest.fail(f"hashed {file}"))
    with pytest.raises(UserError, match=re.escape(f"{root / relpath}: not a regular file; run `magicanimate models download")):
        verify_models(root, manifest=hub.manifest)
    assert {f.path: f.status for f in list_models(models=root, manifest=hub.manifest).files}[relpath] == wm.CORRUPT


def test_a_folder_without_a_record_loads_unchecked(tmp_path):
    checks = verify_models(tmp_path, manifest=wm.load_manifest())
    assert {c.status for c in checks} == {wm.MISSING}


def test_a_read_only_models_folder_still_verifies(hub, tmp_path):
    root = downloaded(hub, tmp_path)
    ckpt = root / TEMPORAL_CKPT
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    root.chmod(0o555)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        verify_models(root, manifest=hub.manifest)  # re-hashes, cannot refresh the cache, no error
    finally:
        root.chmod(0o755)


# ----------------------------------------------------------------------------- convert


@needs_parity
def test_convert_round_trip_gives_identical_tensors_and_is_recorded(fixture_weights, monkeypatch):
    import torch
    from safetensors.torch import load_file

    original = torch.load(fixture_weights / TEMPORAL_CKPT, map_location="cpu", weights_only=True)
    result = convert(models=fixture_weights)
    assert not result.skipped and result.dtype == "float32" and result.tensors == len(original)
    converted = load_file(fixture_weights / TEMPORAL_SAFETENSORS)
    assert set(converted) == set(original)  # safetensors stores keys sorted
    assert all(torch.equal(converted[k], original[k]) and converted[k].dtype == original[k].dtype for k in original)
    entry = wm.ChecksumRecord.load(fixture_weights).entries[TEMPORAL_SAFETENSORS]
    assert entry.derived_from["dtype"] == "float32"
    assert entry.derived_from["sha256"] == wm.sha256_file(fixture_weights / TEMPORAL_CKPT)
    assert oct((fixture_weights / TEMPORAL_SAFETENSORS).stat().st_mode & 0o777) == oct(files.file_mode())
    assert convert(models=fixture_weights).skipped  # once is enough
    with pytest.raises(UserError, match="--overwrite"):
        convert(models=fixture_weights, half=True)

    half = convert(models=fixture_weights, half=True, overwrite=True, remove_original=True)
    assert half.dtype == "float16" and half.removed_original and half.bytes_out < result.bytes_out
    converted = load_file(fixture_weights / TEMPORAL_SAFETENSORS)
    assert all(torch.equal(converted[k], original[k].half()) for k in original)
    assert not (fixture_weights / TEMPORAL_CKPT).exists()
    listing = list_models(models=fixture_weights, only="animate")
    states = {f.path: f.status for f in listing.files}
    assert states[TEMPORAL_CKPT] == wm.REPLACED and states[TEMPORAL_SAFETENSORS] == wm.VERIFIED
    verify_models(fixture_weights)
    assert convert(models=fixture_weights, half=True).skipped
    for again in ({"half": False}, {"half": True, "overwrite": True}):  # no original left to convert from: said, not "skipped"
        with pytest.raises(UserError, match=f"{TEMPORAL_CKPT}: removed after the conversion to float16, so it cannot be converted again") as said:
            convert(models=fixture_weights, **again)
    assert f"delete {fixture_weights / TEMPORAL_SAFETENSORS} and run `magicanimate models download" in str(said.value)
    (fixture_weights / TEMPORAL_SAFETENSORS).unlink()  # as it says: the download then fetches the original
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = {p.path: p.action for p in download(models=fixture_weights, only="animate", dry_run=True).plan}
    assert plan[TEMPORAL_CKPT] == "download"


@needs_parity
def test_convert_on_a_full_disk_is_one_line_naming_the_file(fixture_weights, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):  # what safetensors (Rust) raises when the disk is full
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    before = sorted(p.name for p in fixture_weights.iterdir())
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(UserError) as caught:
        convert(models=fixture_weights)
    assert str(caught.value) == (
        f"{fixture_weights / TEMPORAL_SAFETENSORS}: cannot write it (No space left on device); "
        "free space on that disk or choose an output on another one"
    )
    assert sorted(p.name for p in fixture_weights.iterdir()) == before


KILLED_WHILE_SAVING = """
import os, signal, sys, threading, time
import safetensors.torch, torch
from magicanimate_cli.models import convert

real = safetensors.torch.save_file


def save_file(tensors, path, metadata=None):  # the real one, killed once its own temporary is there
    tensors = {**tensors, "zz_padding": torch.zeros(300_000_000, dtype=torch.uint8)}  # long enough to see it
    threading.Thread(target=real, args=(tensors, path), kwargs={"metadata": metadata}, daemon=True).start()
    for _ in range(20_000):
        if any(name.startswith(".tmp") for name in os.listdir(os.path.dirname(path))):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.0005)
    sys.exit("safetensors' temporary never appeared")


safetensors.torch.save_file = save_file
convert(models=sys.argv[1])
"""


@needs_parity
def test_a_conversion_killed_while_saving_leaves_nothing_after_the_next_run(fixture_weights):
    """safetensors writes through a ``.tmpXXXXXX`` of its own beside the path it is given; convert
    gives it a path inside a hidden folder of its own, which the next run sweeps."""
    def listing() -> set[str]:
        return {str(p.relative_to(fixture_weights)) for p in fixture_weights.rglob("*")}

    before = listing()
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(fixture_weights)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    left = listing() - before
    assert left and all(".partial" in path for path in left if ".tmp" in path)  # safetensors' is inside convert's own
    assert not convert(models=fixture_weights).skipped
    made = {TEMPORAL_SAFETENSORS, wm.RECORD_NAME, wm.RECORD_NAME + ".lock"}  # the record's lock file stays, as filelock keeps it
    assert listing() - before == made, listing() - before
    verify_models(fixture_weights)


@needs_parity
def test_a_conversion_that_cannot_be_recorded_is_taken_back(fixture_weights, monkeypatch):
    def full(*args, **kwargs):
        raise UserError(f"{fixture_weights}/.magicanimate-checksums.json: cannot write it (No space left on device)")

    with monkeypatch.context() as patch:
        patch.setattr(models_mod, "update_record", full)
        with pytest.raises(UserError, match="checksums.json: cannot write it"):
            convert(models=fixture_weights)
    assert not (fixture_weights / TEMPORAL_SAFETENSORS).exists()  # else the next run: "exists ... not recorded"
    assert not convert(models=fixture_weights).skipped


def test_a_models_folder_that_cannot_be_written_is_named_not_blamed_on_the_network(hub, tmp_path):
    import errno

    def refused(item, root, replace, meter):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / item.path))

    with pytest.raises(UserError) as caught:
        download(models=tmp_path / "models", manifest=hub.manifest, fetch=refused)
    assert str(caught.value).startswith(str(tmp_path / "models"))
    assert str(caught.value).endswith(": Permission denied; check its permissions or choose another path")


def test_convert_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(UserError, match=f"run `magicanimate models download --only animate --models {tmp_path}` first"):
        convert(models=tmp_path)  # into the folder it was given, not the default one


def test_a_corrupt_conversion_is_caught_at_load_time_with_its_own_fix(hub, tmp_path):
    root = downloaded(hub, tmp_path)
    converted = root / TEMPORAL_SAFETENSORS
    converted.write_bytes(b"0" * 100)
    wm.update_record(root, lambda rec: rec.put(TEMPORAL_SAFETENSORS, wm.sha256_file(converted), group="animate", source="converted", checked_against="converted"))
    (root / TEMPORAL_CKPT).unlink()
    plan = download(models=root, manifest=hub.manifest, dry_run=True).plan
    assert {p.path: p.action for p in plan}[TEMPORAL_CKPT] == "keep"  # the conversion stands in for it
    converted.write_bytes(b"1" * 50)
    with pytest.raises(UserError, match=re.escape(f"models convert --models {root} --overwrite")):  # this folder's
        verify_models(root, manifest=hub.manifest)


def test_a_conversion_of_a_checkpoint_updated_since_is_stale_not_loaded(hub, tmp_path):
    """The loader prefers temporal_attention.safetensors: after `models download` fetched a newer
    pinned checkpoint, the conversion of the old one would be used without a word."""
    root = downloaded(hub, tmp_path)
    converted = root / TEMPORAL_SAFETENSORS
    converted.write_bytes(b"0" * 100)
    derived = {"path": TEMPORAL_CKPT, "sha256": wm.sha256_file(root / TEMPORAL_CKPT), "dtype": "float32"}
    wm.update_record(root, lambda rec: rec.put(TEMPORAL_SAFETENSORS, wm.sha256_file(converted), group="animate", source="converted",
                                               checked_against="converted", derived_from=derived))
    verify_models(root, manifest=hub.manifest)
    newer = os.urandom(5000)  # the manifest moves on to another checkpoint
    (hub.hub_folder / "org/ma/temporal_attention/temporal_attention.ckpt").write_bytes(newer)
    manifest = json.loads(hub.manifest.read_text())
    next(f for f in manifest["files"] if f["path"] == TEMPORAL_CKPT)["sha256"] = hashlib.sha256(newer).hexdigest()
    hub.manifest.write_text(json.dumps(manifest))
    assert download(models=root, manifest=hub.manifest).downloaded == [TEMPORAL_CKPT]
    said = re.escape(f"{converted}: converted from another temporal_attention.ckpt than the one here now (stale); run `magicanimate models convert --models {root} --overwrite`")
    with pytest.raises(UserError, match=said):
        verify_models(root, manifest=hub.manifest)
    assert {f.path: f.status for f in list_models(models=root, manifest=hub.manifest).files}[TEMPORAL_SAFETENSORS] == wm.CORRUPT


@needs_parity
@pytest.mark.slow
def test_animator_output_is_bitwise_identical_after_conversion(fixture_weights, tmp_path):
    """The same frames from the pickle and from its safetensors conversion (float32, CPU)."""
    from magicanimate_cli import media
    from magicanimate_cli.animate import animate

    motion = tmp_path / "motion"  # the first 4 frames of fixture A's motion.mp4 (one window) keep it short
    media.write_frames(motion, media.read_frames(PARITY_A / "inputs" / "motion.mp4").array[:4])
    kwargs = {"size": 64, "steps": 2, "seed": 42, "device": "cpu", "context_frames": 4, "context_overlap": 0}
    reference = PARITY_A / "inputs" / "reference.png"
    animate(reference, motion, tmp_path / "before", models=fixture_weights, **kwargs)
    convert(models=fixture_weights, remove_original=True)
    animate(reference, motion, tmp_path / "after", models=fixture_weights, **kwargs)
    before = sorted((tmp_path / "before").glob("*.png"))
    after = sorted((tmp_path / "after").glob("*.png"))
    assert len(before) == 4 and [p.name for p in before] == [p.name for p in after]
    assert all(media.read_image(a).tobytes() == media.read_image(b).tobytes() for a, b in zip(before, after))


# ----------------------------------------------------------------------------- CLI


def test_cli_download_list_and_errors(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(models_mod, "load_manifest", lambda path=None: wm.load_manifest(hub.manifest))
    runner = CliRunner()
    root = tmp_path / "models"
    out = runner.invoke(app, ["models", "download", "--models", str(root), "--only", "densepose", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["ok"] and result["downloaded"] == ["DensePose/model_final.pkl"]
    out = runner.invoke(app, ["models", "download", "--models", str(root), "--dry-run"])
    assert out.exit_code == 0 and "file(s) to download" in out.output
    out = runner.invoke(app, ["models", "list", "--models", str(root), "--json"])
    listing = json.loads(out.stdout)
    assert listing["complete"]["densepose"] and not listing["complete"]["animate"]
    out = runner.invoke(app, ["models", "list", "--models", str(root)])
    assert out.exit_code == 0 and "verified" in out.output and "missing" in out.output
    out = runner.invoke(app, ["models", "download", "--only", "unet", "--models", str(root)])
    assert out.exit_code == 2 and out.output.count("\n") == 1 and "--only" in out.output
    out = runner.invoke(app, ["models", "convert", "--models", str(tmp_path / "empty"), "--json"])
    assert out.exit_code == 2 and json.loads(out.stdout)["ok"] is False


def test_a_file_given_as_the_weights_folder_is_refused(tmp_path, monkeypatch):
    photo = tmp_path / "ref.png"
    photo.write_bytes(b"not a folder")
    for args in (["models", "list", "--models", str(photo)], ["models", "download", "--dry-run", "--only", "matting", "--models", str(photo)]):
        result = CliRunner().invoke(app, args)  # both once went on: "16 missing", "would download 1 file(s)"
        assert result.exit_code == 2 and f"{photo}: is a file, but the weights folder (--models or MAGICANIMATE_MODELS)" in result.output
    monkeypatch.setenv("MAGICANIMATE_MODELS", str(photo))
    with pytest.raises(UserError, match="is a file, but the weights folder"):
        models_mod.check_models()


def test_the_download_command_names_the_folder_only_when_it_is_not_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICANIMATE_MODELS", str(tmp_path / "default"))
    assert models_mod.download_command("animate") == "magicanimate models download --only animate"
    assert models_mod.download_command("animate", tmp_path / "default") == "magicanimate models download --only animate"
    odd = tmp_path / "my models"
    assert models_mod.download_command("matting", odd, overwrite=True) == f"magicanimate models download --only matting --models '{odd}' --overwrite"
