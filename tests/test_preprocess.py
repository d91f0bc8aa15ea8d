"""magicanimate preprocess: the chain, its clip folders, resuming, forcing and failing stages.

The DensePose and matting stages are replaced by small fakes with the same call signature that
write what the real ones write (densepose/ + densepose_labels/, masks/), so these tests check
the orchestration; the real stages have their own tests.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import magicanimate_cli.densepose as densepose_module
import magicanimate_cli.matting as matting_module
from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import MissingDependency, UserError
from magicanimate_cli.preprocess import collect_sources, parse_skip, preprocess

from disk_helpers import run_on_small_disk, small_disk_available
from factories import detectron2_person_weights, paddleseg_checkpoint
from preprocess_helpers import SYMMETRY_10_5, TABLE_10_3, make_video

runner = CliRunner()
FAST = {"size": 32}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "dance.mp4", count=10, fps=25.0, width=96, height=48, moving=True)
    make_video(folder / "talk.mp4", count=6, fps=30.0, width=64, height=48)
    return folder


class Fakes:
    """Stand-ins for densepose.densepose and matting.matte (clip-folder mode), with a call log."""

    def __init__(self):
        self.calls: list[tuple[str, Path]] = []
        self.fail: dict[str, BaseException] = {}

    def matte(self, input, output=None, *, overwrite=False, progress=None, **kwargs):
        folder = Path(input)
        self.calls.append(("matte", folder))
        if "matte" in self.fail:
            raise self.fail["matte"]
        assert overwrite and output is None
        files = media.list_frame_files(folder / "images")
        (folder / "masks").mkdir(exist_ok=True)
        for file in files:  # the bright bar is the "person"
            mask = np.where(media.read_image(file).mean(axis=2) > 150, 255, 0).astype(np.uint8)
            Image.fromarray(mask).save(folder / "masks" / file.name)
        return SimpleNamespace(to_dict=lambda: {"frames": len(files), "model": "fake"})

    def densepose(self, input, output=None, *, overwrite=False, progress=None, **kwargs):
        folder = Path(input)
        self.calls.append(("densepose", folder))
        if "densepose" in self.fail:
            raise self.fail["densepose"]
        files = media.list_frame_files(folder / "images")
        (folder / "densepose").mkdir(exist_ok=True)
        (folder / "densepose_labels").mkdir(exist_ok=True)
        for file in files:  # person pixels: label 3 (right hand) on their left half, 4 (left hand) on the right
            person = media.read_image(file).mean(axis=2) > 150
            labels = np.zeros(person.shape, np.uint8)
            columns = np.where(person.any(axis=0))[0]
            if len(columns):
                middle = (columns[0] + columns[-1] + 1) // 2
                labels[:, :middle][person[:, :middle]] = 3
                labels[:, middle:][person[:, middle:]] = 4
            Image.fromarray(TABLE_10_3[labels]).save(folder / "densepose" / file.name)
            Image.fromarray(labels).save(folder / "densepose_labels" / file.name)
        return SimpleNamespace(to_dict=lambda: {"frames": len(files), "model": "fake"})

    def count(self, stage: str) -> int:
        return sum(1 for name, _ in self.calls if name == stage)


def no_networks(monkeypatch):
    """The fake stages need no real networks: preprocess's loaders hand them nothing."""
    from magicanimate_cli import preprocess as preprocess_module

    monkeypatch.setattr(preprocess_module._Networks, "segmenter", lambda self: None)
    monkeypatch.setattr(preprocess_module._Networks, "estimator", lambda self: None)


@pytest.fixture()
def fakes(monkeypatch):
    fake = Fakes()
    no_networks(monkeypatch)
    monkeypatch.setattr(densepose_module, "densepose", fake.densepose)
    monkeypatch.setattr(matting_module, "matte", fake.matte)
    return fake


def _meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


# ----------------------------------------------------------------------------- inputs


def test_collect_sources(videos, tmp_path):
    frames = tmp_path / "frames_clip"
    media.write_frames(frames, np.zeros((2, 8, 8, 3), np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my clips\n{videos / 'dance.mp4'}\n\nframes_clip\n")
    found = collect_sources([listing, videos / "talk.mp4"])
    assert [(s.name, s.kind) for s in found] == [("dance", "video"), ("frames_clip", "frames"), ("talk", "video")]
    assert [s.name for s in collect_sources([videos])] == ["dance", "talk"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "dance.mp4").write_bytes((videos / "dance.mp4").read_bytes())
    with pytest.raises(UserError, match="clip name 'dance'"):
        collect_sources([videos, other / "dance.mp4"])
    nested = tmp_path / "nested.txt"
    nested.write_text(f"{listing}\n")
    with pytest.raises(UserError, match="list file inside a list file"):
        collect_sources([nested])
    with pytest.raises(UserError, match="no such file"):
        collect_sources([tmp_path / "nope.mp4"])
    assert parse_skip("densepose, matte") == {"densepose", "matte"}
    with pytest.raises(UserError, match="--skip"):
        parse_skip("frames")


# ----------------------------------------------------------------------------- the chain


def test_skip_both_models_real_chain(videos, tmp_path):
    result = preprocess([videos / "talk.mp4"], tmp_path, skip="densepose,matte", flip=True, **FAST)
    assert result.ok and result.clips[0]["status"] == "done"
    clip = tmp_path / "talk"
    files = media.list_frame_files(clip / "images")
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(5)]  # 6 frames at 30 fps -> 5 at 25 fps
    assert media.read_image(files[0]).shape == (32, 32, 3)
    assert sorted(p.name for p in clip.iterdir()) == ["images", "meta.json"]  # .work removed
    meta = _meta(clip)
    assert meta["status"] == "done" and meta["fps"] == 25.0 and meta["size"] == 32 and meta["frames"] == 5
    assert meta["source"]["path"] == str((videos / "talk.mp4").resolve()) and meta["source"]["source_fps"] == pytest.approx(30.0)
    assert meta["crop_box"] == [8.0, 0.0, 56.0, 48.0]
    assert {"magicanimate_cli", "numpy", "pillow", "ffmpeg", "python"} <= set(meta["versions"])
    assert {k: v["status"] for k, v in meta["stages"].items()} == {
        "frames": "done", "matte": "skipped", "densepose": "skipped", "crop": "done", "flip": "done"}
    flipped = media.read_image(tmp_path / "talk_flip" / "images" / "00000.png")
    assert np.array_equal(flipped, media.read_image(files[0])[:, ::-1])


def test_full_chain_with_fov_order_and_outputs(videos, tmp_path, fakes):
    result = preprocess([videos / "dance.mp4"], tmp_path, fov="64x32", flip=True, **FAST)
    assert result.ok, result.clips
    clip = tmp_path / "dance"
    work = clip / ".work"
    # matte runs on the full frames, DensePose on the field of view
    assert fakes.calls == [("matte", work / "full"), ("densepose", work / "fov")]
    meta = _meta(clip)
    stages = meta["stages"]
    assert list(stages) == ["frames", "matte", "fov", "densepose", "crop", "flip"]
    assert all(rec["status"] == "done" for rec in stages.values())
    assert stages["fov"]["result"]["located_by"] == "masks"
    assert stages["fov"]["result"]["output_size"] == [64, 32]
    assert meta["subfolders"] == ["images", "densepose", "masks", "densepose_labels"]
    x0, y0, x1, y1 = meta["fov_box"]
    assert (x1 - x0) == 2 * (y1 - y0)
    bx0, by0, bx1, by1 = stages["crop"]["result"]["box_in_stage"]  # the square in the 64x32 field of view: in source pixels
    scale = (x1 - x0) / 64
    assert meta["crop_box"] == pytest.approx([x0 + bx0 * scale, y0 + by0 * scale, x0 + bx1 * scale, y0 + by1 * scale], abs=1e-3)
    for sub in meta["subfolders"]:
        names = [f.name for f in media.list_frame_files(clip / sub)]
        assert names == [f"{i:05d}.png" for i in range(10)], sub
    dp = np.asarray(Image.open(clip / "densepose" / "00003.png"))
    labels = np.asarray(Image.open(clip / "densepose_labels" / "00003.png"))
    assert dp.shape == (32, 32, 3) and np.array_equal(TABLE_10_3[labels], dp) and set(np.unique(labels)) == {0, 3, 4}
    mask = np.asarray(Image.open(clip / "masks" / "00003.png"))
    assert mask.shape == (32, 32) and mask.max() == 255
    flip_dp = np.asarray(Image.open(tmp_path / "dance_flip" / "densepose" / "00003.png"))
    assert np.array_equal(flip_dp, TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])
    assert not work.exists()


def test_resume_after_interruption_then_up_to_date_then_force(videos, tmp_path, fakes):
    fakes.fail["densepose"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    clip = tmp_path / "dance"
    stages = _meta(clip)["stages"]
    assert stages["frames"]["status"] == "done" and stages["matte"]["status"] == "done"
    assert stages["densepose"]["status"] == "running"  # interrupted
    del fakes.fail["densepose"]
    fakes.calls.clear()
    resumed = preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    assert resumed.ok and resumed.clips[0]["status"] == "done"
    assert fakes.count("matte") == 0 and fakes.count("densepose") == 1  # finished stages skipped, interrupted one redone
    images = clip / "images" / "00000.png"
    stamp = images.stat().st_mtime_ns
    fakes.calls.clear()
    (clip / ".work" / "full" / "images").mkdir(parents=True)  # as a run stopped between recording the clip done and removing .work
    (clip / ".work" / "full" / "images" / "00000.png").write_bytes(images.read_bytes())
    again = preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    assert again.clips[0]["status"] == "up-to-date" and fakes.calls == [] and images.stat().st_mtime_ns == stamp
    assert not (clip / ".work").exists()
    forced = preprocess([videos / "dance.mp4"], tmp_path, force=True, **FAST)
    assert forced.clips[0]["status"] == "done" and fakes.count("matte") == 1 and fakes.count("densepose") == 1
    assert images.stat().st_mtime_ns != stamp


def test_changed_size_with_kept_work_redoes_only_the_crop(videos, tmp_path, fakes):
    preprocess([videos / "dance.mp4"], tmp_path, keep_work=True, **FAST)
    assert (tmp_path / "dance" / ".work" / "full" / "images").is_dir()
    assert preprocess([videos / "dance.mp4"], tmp_path, **FAST).clips[0]["status"] == "up-to-date"
    assert (tmp_path / "dance" / ".work" / "full" / "images").is_dir(), "kept on purpose: a plain re-run leaves it"
    fakes.calls.clear()
    result = preprocess([videos / "dance.mp4"], tmp_path, keep_work=True, size=16)
    assert result.clips[0]["status"] == "done" and fakes.calls == []
    assert media.read_image(tmp_path / "dance" / "images" / "00000.png").shape == (16, 16, 3)
    assert _meta(tmp_path / "dance")["stages"]["crop"]["params"]["size"] == 16


def test_dropping_the_field_of_view_recrops_from_the_full_frames(videos, tmp_path, fakes):
    # DensePose not installed: the clip is incomplete and keeps .work, so a re-run without --fov
    # finds every stage before the crop fresh; the crop must still be taken from the full frames
    fakes.fail["densepose"] = MissingDependency("detectron2 is not installed; install them with: pip install example")
    preprocess([videos / "dance.mp4"], tmp_path / "out", fov="48x48", **FAST)
    assert _meta(tmp_path / "out" / "dance")["fov_box"]
    again = preprocess([videos / "dance.mp4"], tmp_path / "out", **FAST)
    fresh = preprocess([videos / "dance.mp4"], tmp_path / "fresh", **FAST)
    assert again.clips[0]["status"] == fresh.clips[0]["status"] == "incomplete"
    meta, expected = _meta(tmp_path / "out" / "dance"), _meta(tmp_path / "fresh" / "dance")
    assert meta["crop_box"] == expected["crop_box"] and "fov_box" not in meta and "fov" not in meta["stages"]
    assert "fov" not in again.clips[0]["stages"]
    for sub in ("images", "masks"):
        for mine, theirs in zip(media.list_frame_files(tmp_path / "out" / "dance" / sub), media.list_frame_files(tmp_path / "fresh" / "dance" / sub)):
            assert np.array_equal(media.read_image(mine), media.read_image(theirs)), mine


def test_changed_source_redoes_everything(videos, tmp_path, fakes):
    source = tmp_path / "in" / "clip.mp4"
    make_video(source, count=5, fps=25.0)
    preprocess([source], tmp_path / "out", **FAST)
    make_video(source, count=8, fps=25.0)
    fakes.calls.clear()
    result = preprocess([source], tmp_path / "out", **FAST)
    assert result.clips[0]["frames"] == 8 and fakes.count("matte") == 1 and fakes.count("densepose") == 1


def test_missing_dependency_is_recorded_and_not_retried_per_clip(videos, tmp_path, fakes):
    fakes.fail["densepose"] = MissingDependency("detectron2 and its DensePose project are not installed; install them with: pip install example")
    result = runner.invoke(app, ["preprocess", str(videos), "-o", str(tmp_path), "--size", "32", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["incomplete"] == 2
    assert fakes.count("densepose") == 1  # the second clip did not try again
    for clip in data["clips"]:
        assert clip["status"] == "incomplete" and clip["stages"]["densepose"] == "unavailable"
        assert clip["stages"]["crop"] == "done" and clip["stages"]["matte"] == "done"
        assert "pip install" in clip["errors"]["densepose"]
    meta = _meta(tmp_path / "dance")
    assert meta["status"] == "incomplete" and meta["stages"]["densepose"]["status"] == "unavailable"
    assert meta["stages"]["densepose"]["hint"]  # the install command of the real densepose module
    assert meta["subfolders"] == ["images", "masks"]
    assert (tmp_path / "dance" / ".work").is_dir()  # kept, so installing and re-running only adds DensePose
    # once it works, only DensePose and what follows it run
    del fakes.fail["densepose"]
    fakes.calls.clear()
    fixed = preprocess([videos], tmp_path, **FAST)
    assert fixed.ok and fakes.count("matte") == 0 and fakes.count("densepose") == 2
    assert _meta(tmp_path / "dance")["subfolders"] == ["images", "densepose", "masks", "densepose_labels"]


def test_matting_weights_not_to_be_had_offline_are_looked_for_once_per_run(videos, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once when huggingface_hub is imported
    looked = []
    download = matting_module.download_weights
    monkeypatch.setattr(matting_module, "download_weights", lambda *a, **k: looked.append(a) or download(*a, **k))
    (tmp_path / "models").mkdir()
    result = preprocess([videos], tmp_path / "out", skip="densepose", models=tmp_path / "models", **FAST)
    assert len(looked) == 1  # the second clip did not look again (online with the network down, each try costs retries)
    for clip in result.clips:
        assert clip["status"] == "incomplete" and clip["stages"]["matte"] == "failed" and clip["stages"]["crop"] == "done"
        assert "HF_HUB_OFFLINE is set" in clip["errors"]["matte"]


def test_a_crashing_optional_stage_does_not_stop_the_chain(videos, tmp_path, fakes):
    fakes.fail["matte"] = RuntimeError("out of memory")
    result = preprocess([videos / "dance.mp4"], tmp_path, fov="2x1", **FAST)
    clip = result.clips[0]
    assert clip["status"] == "incomplete" and clip["stages"]["matte"] == "failed"
    assert clip["errors"]["matte"] == "RuntimeError: out of memory"
    assert _meta(tmp_path / "dance")["stages"]["fov"]["result"]["located_by"] == "motion"  # no masks: motion fallback


def test_a_broken_video_fails_alone(videos, tmp_path, fakes):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad.mp4").write_bytes(b"garbage" * 50)
    (inputs / "good.mp4").write_bytes((videos / "talk.mp4").read_bytes())
    result = runner.invoke(app, ["preprocess", str(inputs), "-o", str(tmp_path / "out"), "--size", "32", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    status = {c["name"]: c["status"] for c in data["clips"]}
    assert status == {"bad": "failed", "good": "done"}
    bad = [c for c in data["clips"] if c["name"] == "bad"][0]
    assert bad["stages"]["frames"] == "failed" and "bad.mp4" in bad["errors"]["frames"]


def test_a_clip_that_failed_before_making_anything_leaves_no_folder(videos, tmp_path, fakes):
    # a folder holding only meta.json is no clip: a training loader globbing OUT/*/images, or
    # `animate` (which then asked for `magicanimate densepose` on it), met it as one
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "bad.mp4").write_bytes(b"garbage" * 50)
    (inputs / "good.mp4").write_bytes((videos / "talk.mp4").read_bytes())
    result = preprocess([inputs], out, **FAST)
    assert {c["name"]: c["status"] for c in result.clips} == {"bad": "failed", "good": "done"}
    assert "bad.mp4" in result.clips[0]["errors"]["frames"]
    assert sorted(p.name for p in out.iterdir()) == ["good"]
    (inputs / "bad.mp4").write_bytes((videos / "dance.mp4").read_bytes())  # fixed: the next run makes it
    again = preprocess([inputs], out, **FAST)
    assert {c["name"]: c["status"] for c in again.clips} == {"bad": "done", "good": "up-to-date"}


def test_a_clip_that_failed_after_its_model_stages_keeps_them_for_the_next_run(videos, tmp_path, fakes, monkeypatch):
    from magicanimate_cli import preprocess as preprocess_module

    def no_crop(self, subs):
        raise OSError("cannot write")

    with monkeypatch.context() as patch:
        patch.setattr(preprocess_module._Runner, "_crop", no_crop)
        failed = preprocess([videos / "talk.mp4"], tmp_path, **FAST)
    assert failed.clips[0]["status"] == "failed" and failed.clips[0]["stages"]["crop"] == "failed"
    assert _meta(tmp_path / "talk")["status"] == "failed" and (tmp_path / "talk" / ".work").is_dir()
    fakes.calls.clear()
    assert preprocess([videos / "talk.mp4"], tmp_path, **FAST).ok and fakes.calls == []  # only the crop ran again


@pytest.mark.skipif(not small_disk_available(), reason="no user namespaces here to mount a small tmpfs")
def test_a_full_disk_names_the_hidden_work_folders_that_hold_intermediate_frames(videos, tmp_path, rng):
    noise = media.write_frames(tmp_path / "noise.mp4", rng.integers(0, 256, (8, 128, 128, 3), dtype=np.uint8), fps=25)
    kept, _, full = run_on_small_disk("400k", [
        {"args": ["preprocess", str(videos / "dance.mp4"), "-o", "out", "--skip", "densepose,matte", "--keep-work"]},
        {"fill": 60_000},  # the noise frames (about 50 KB each) do not fit
        {"args": ["preprocess", str(noise), "-o", "out", "--skip", "densepose,matte", "--json"]},
    ])  # fmt: skip
    assert kept["rc"] == 0 and any(name.startswith("out/dance/.work/full/images/") for name in kept["files"])
    assert full["rc"] == 1, full["stderr"]
    error = json.loads(full["stdout"])["clips"][0]["errors"]["frames"]
    assert "/out/noise/.work/full/images: cannot write it (No space left on device); free space on that disk" in error
    # .work is hidden (ls, a file manager): the message says which ones hold frames, how much, and what deleting costs
    note = error.split("free space on that disk or choose an output on another one; ")[1]
    assert re.fullmatch(r"the hidden work folders \S+/out/dance/\.work hold [\d.]+ kB of intermediate frames: "
                        r"deleting them frees that space \(a later run redoes what it needs\)", note), note


def test_a_clip_another_run_is_working_on_is_refused_alone(videos, tmp_path, fakes):
    # two jobs whose lists overlap (a resubmitted Slurm array, `parallel`): the second one used to
    # fail in the middle of the first one's crop and record the clip's crop as failed
    from magicanimate_cli import files

    out = tmp_path / "out"
    with files.claim(out / "talk"):  # another run, working on talk
        alone = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(out), "--size", "32", "--json"])
        both = runner.invoke(app, ["preprocess", str(videos), "-o", str(out), "--size", "32", "--json"])
        assert not (out / "talk").exists()
    assert alone.exit_code == 2, alone.output
    assert json.loads(alone.stdout)["error"].startswith(f"{out / 'talk'}: another run is writing it now; wait for that run to end (or stop it), or choose another output (held by pid {os.getpid()} ")
    assert both.exit_code == 1, both.output
    clips = {c["name"]: c for c in json.loads(both.stdout)["clips"]}
    assert clips["dance"]["status"] == "done" and clips["talk"]["status"] == "failed"
    assert clips["talk"]["errors"] == {"preprocess": json.loads(alone.stdout)["error"]}
    again = runner.invoke(app, ["preprocess", str(videos), "-o", str(out), "--size", "32", "--json"])  # once that run has ended
    assert again.exit_code == 0 and {c["name"]: c["status"] for c in json.loads(again.stdout)["clips"]} == {"dance": "up-to-date", "talk": "done"}
    assert sorted(p.name for p in out.iterdir()) == ["dance", "talk"]
    keys = ["name", "source", "output", "status", "frames", "stages", "errors", "flip"]  # every kind of result, in this order
    assert list(clips["dance"]) == list(clips["talk"]) == list(json.loads(again.stdout)["clips"][0]) == keys


def test_a_clip_another_run_is_working_on_is_refused_before_any_progress_shows(videos, tmp_path, fakes):
    from magicanimate_cli import files

    out, shown = tmp_path / "out", []
    with files.claim(out / "talk"):
        with pytest.raises(UserError, match="another run is writing it now"):
            preprocess([videos / "talk.mp4"], out, progress=lambda *update: shown.append(update), **FAST)
        assert shown == []  # not "clips 0/1" and then the refusal
        preprocess([videos], out, progress=lambda *update: shown.append(update), **FAST)  # refused alone: the run goes on
    assert shown[0] == ("clips", 0, 2) and shown[-1] == ("clips", 2, 2)


def test_a_named_file_that_is_no_video_is_exit_2_before_any_work(videos, tmp_path):
    """Named on the command line, it is bad input (as a missing one is); found in a folder, its clip fails alone (above)."""
    (tmp_path / "notes.mp4").write_text("not a video")
    result = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), str(tmp_path / "notes.mp4"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {tmp_path / 'notes.mp4'}: not a video") and not (tmp_path / "out").exists()


def test_a_named_video_too_short_for_the_fps_is_exit_2_before_any_work(tmp_path):
    """As ``frames --fps`` says it; found in a folder, its clip fails alone (exit 1) and leaves no folder."""
    inputs = tmp_path / "in"
    short = make_video(inputs / "short.mp4", count=3, fps=25.0)  # 0.12 s: no frame at 1 fps
    named = runner.invoke(app, ["preprocess", str(short), "-o", str(tmp_path / "out"), "--fps", "1", "--skip", "densepose,matte"])
    assert named.exit_code == 2, named.output
    assert named.output == f"error: {short}: the video (0.12 s) is shorter than one frame at --fps 1; raise --fps\n"
    assert not (tmp_path / "out").exists()
    found = runner.invoke(app, ["preprocess", str(inputs), "-o", str(tmp_path / "out"), "--fps", "1", "--skip", "densepose,matte", "--json"])
    assert found.exit_code == 1, found.output
    clip = json.loads(found.stdout)["clips"][0]
    assert clip["status"] == "failed" and "shorter than one frame at --fps 1" in clip["errors"]["frames"]
    assert preprocess([short], tmp_path / "out", fps=5, skip="densepose,matte", **FAST).ok  # long enough for one frame at 5 fps


def test_a_file_or_nothing_given_as_models_is_exit_2_before_any_work(videos, tmp_path):
    # it used to extract and crop every clip, then report each one incomplete (exit 1)
    photo = tmp_path / "ref.png"
    photo.write_bytes(b"not a folder")
    for models, message in ((str(photo), f"{photo}: is a file, but the weights folder"), ("", '--models "": an empty weights folder')):
        result = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path / "out"), "--models", models, "--json"])
        assert result.exit_code == 2, result.output
        assert json.loads(result.stdout)["error"].startswith(message)
        assert not (tmp_path / "out").exists()
    skipped = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path / "out"), "--models", str(photo),
                                  "--skip", "densepose,matte", "--size", "32"])  # fmt: skip
    assert skipped.exit_code == 0, skipped.output  # no model stage reads it


def test_foreign_folder_needs_overwrite(videos, tmp_path):
    (tmp_path / "talk" / "images").mkdir(parents=True)
    (tmp_path / "talk" / "images" / "00000.png").write_text("another clip's frame")
    result = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path), "--skip", "densepose,matte"])
    assert result.exit_code == 2 and "--overwrite" in result.output and len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "talk" / "images" / "00000.png").read_text() == "another clip's frame"
    ok = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path), "--skip", "densepose,matte", "--size", "32", "--overwrite"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "talk" / "images" / "00000.png").read_bytes().startswith(b"\x89PNG")


def test_overwrite_never_replaces_a_folder_of_the_users_own_files(videos, tmp_path):
    for folder in (tmp_path / "talk", tmp_path / "talk_flip"):
        folder.mkdir()
    (tmp_path / "talk_flip" / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path), "--skip", "densepose,matte", "--flip", "--overwrite"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {tmp_path / 'talk_flip'}: holds {tmp_path / 'talk_flip' / 'mine.txt'}, which is not part of an earlier output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk", "talk_flip"] and (tmp_path / "talk_flip" / "mine.txt").read_text() == "keep me"


def test_overwrite_keeps_what_is_in_the_way_until_its_replacement_holds_a_clip(videos, tmp_path):
    out, source = tmp_path / "out", tmp_path / "in" / "talk.mp4"
    for folder in (out / "talk", out / "talk_flip"):
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "00000.png").write_text("keep me")  # an earlier clip's frame
    source.parent.mkdir()
    data = (videos / "talk.mp4").read_bytes()
    source.write_bytes(data[: len(data) // 2])  # cut off: the frames stage fails (found in its folder, not named: no refusal up front)
    first = preprocess([source.parent], out, skip="densepose,matte", flip=True, overwrite=True, **FAST)
    (clip,) = first.clips
    assert clip["status"] == "failed"
    (aside,) = map(Path, clip["replaced"])
    assert aside.parent == out and aside.name.startswith(".talk.replaced-") and (aside / "images" / "00000.png").read_text() == "keep me"
    assert (out / "talk_flip" / "images" / "00000.png").read_text() == "keep me"  # the flip stage never ran: untouched
    source.write_bytes(data)
    second = preprocess([source], out, skip="densepose,matte", flip=True, overwrite=True, **FAST)
    (clip,) = second.clips
    assert clip["status"] == "done" and "replaced" not in clip
    assert not aside.exists() and sorted(p.name for p in out.iterdir()) == ["talk", "talk_flip"]
    assert all((out / name / "images" / "00000.png").read_bytes().startswith(b"\x89PNG") for name in ("talk", "talk_flip"))
    assert "replaced" not in json.loads((out / "talk" / "meta.json").read_text())


def test_a_folder_renamed_aside_by_a_killed_run_is_found_by_name(videos, tmp_path):
    # killed right after the rename aside, before the clip's meta.json could say where it went
    out = tmp_path / "out"
    aside = out / ".talk.replaced-20261128T050000-4242"
    aside.mkdir(parents=True)
    (aside / "mine.txt").write_text("keep me")
    (clip,) = preprocess([videos / "talk.mp4"], out, skip="densepose,matte", **FAST).clips
    assert clip["status"] == "done" and not aside.exists()


@pytest.mark.parametrize("args", [["--skip", "frames"], ["--fov", "big"], ["--size", "0"], ["--fps", "-1"]])
def test_bad_options_exit_2(videos, tmp_path, args):
    result = runner.invoke(app, ["preprocess", str(videos / "talk.mp4"), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_every_keyword_of_the_preprocessing_functions_is_an_option():
    """The other direction of test_cli.py's check (every option a keyword, with its default): the
    preprocessing stages have no keyword the command line cannot reach, but ``progress``."""
    import typer.main

    from magicanimate_cli.crop import crop
    from magicanimate_cli.download import download
    from magicanimate_cli.flip import flip
    from magicanimate_cli.frames import frames

    functions = {"download": download, "frames": frames, "crop": crop, "flip": flip, "preprocess": preprocess}
    commands = {c.name: c for c in typer.main.get_command(app).commands.values() if c.name in functions}
    assert set(commands) == set(functions)
    for name, function in functions.items():
        options = {p.name for p in commands[name].params} - {"as_json"}
        assert set(inspect.signature(function).parameters) - {"progress"} == options, name


def test_adding_flip_or_skipping_finished_stages_recomputes_nothing(videos, tmp_path, fakes):
    preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    clip = tmp_path / "dance"
    assert not (clip / ".work").exists()
    fakes.calls.clear()
    skipped = preprocess([videos / "dance.mp4"], tmp_path, skip="densepose,matte", **FAST)
    assert skipped.clips[0]["status"] == "up-to-date" and fakes.calls == []
    assert (clip / "densepose").is_dir() and (clip / "masks").is_dir()  # earlier results kept
    flipped = preprocess([videos / "dance.mp4"], tmp_path, flip=True, **FAST)
    assert flipped.clips[0]["status"] == "done" and fakes.calls == []
    assert _meta(clip)["stages"]["flip"]["status"] == "done"
    assert sorted(p.name for p in (tmp_path / "dance_flip").iterdir()) == ["densepose", "densepose_labels", "images", "masks", "meta.json"]
    assert preprocess([videos / "dance.mp4"], tmp_path, flip=True, **FAST).clips[0]["status"] == "up-to-date"


def test_changed_densepose_settings_redo_the_densepose_of_a_finished_clip(videos, tmp_path, fakes):
    # a finished clip was kept as it was: its DensePose made with other settings than the ones asked for
    preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    fakes.calls.clear()
    stricter = preprocess([videos / "dance.mp4"], tmp_path, min_score=0.95, **FAST)
    assert stricter.clips[0]["status"] == "done" and fakes.count("densepose") == 1
    assert _meta(tmp_path / "dance")["stages"]["densepose"]["params"] == {"min_score": 0.95}
    fakes.calls.clear()
    assert preprocess([videos / "dance.mp4"], tmp_path, min_score=0.95, **FAST).clips[0]["status"] == "up-to-date"
    assert preprocess([videos / "dance.mp4"], tmp_path, min_score=0.95, skip="densepose", **FAST).clips[0]["status"] == "up-to-date"
    assert fakes.calls == []


def test_a_frame_deleted_from_a_finished_clip_or_its_mirror_is_made_again(videos, tmp_path, fakes):
    preprocess([videos / "dance.mp4"], tmp_path, flip=True, keep_work=True, **FAST)
    clip, mirror = tmp_path / "dance", tmp_path / "dance_flip"
    expected = {sub: [f.name for f in media.list_frame_files(clip / sub)] for sub in _meta(clip)["subfolders"]}
    (clip / "masks" / "00003.png").unlink()
    (mirror / "images" / "00004.png").unlink()
    fakes.calls.clear()
    result = preprocess([videos / "dance.mp4"], tmp_path, flip=True, keep_work=True, **FAST)
    assert result.clips[0]["status"] == "done" and fakes.calls == []  # the crop and the flip, from the kept work
    for folder in (clip, mirror):
        assert {sub: [f.name for f in media.list_frame_files(folder / sub)] for sub in expected} == expected, folder
    (mirror / "densepose" / "00000.png").unlink()  # the mirror alone
    assert preprocess([videos / "dance.mp4"], tmp_path, flip=True, **FAST).clips[0]["status"] == "done"
    assert (mirror / "densepose" / "00000.png").is_file()
    assert preprocess([videos / "dance.mp4"], tmp_path, flip=True, **FAST).clips[0]["status"] == "up-to-date"


def test_a_kept_work_folder_that_lost_a_frame_redoes_that_stage(videos, tmp_path, fakes):
    # a stage's output in the kept work folder missing a frame was taken as finished: the crop to another
    # size wrote densepose/ a frame short beside the full images/ (and the flip then refused the clip)
    preprocess([videos / "dance.mp4"], tmp_path, flip=True, keep_work=True, **FAST)
    clip = tmp_path / "dance"
    (clip / ".work" / "full" / "densepose" / "00003.png").unlink()
    fakes.calls.clear()
    result = preprocess([videos / "dance.mp4"], tmp_path, flip=True, keep_work=True, size=16)
    assert result.clips[0]["status"] == "done" and [stage for stage, _ in fakes.calls] == ["densepose"]
    for folder in (clip, tmp_path / "dance_flip"):
        assert {sub: len(media.list_frame_files(folder / sub)) for sub in _meta(clip)["subfolders"]} == dict.fromkeys(
            ["images", "densepose", "masks", "densepose_labels"], 10), folder


def test_a_video_gone_before_its_turn_fails_alone(videos, tmp_path, fakes):
    # a batch over thousands of videos: one moved away by another job meanwhile stopped the whole run (FileNotFoundError)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (inputs / name).write_bytes((videos / "talk.mp4").read_bytes())

    def progress(stage, done, total):
        if stage == "clips" and done == 1 and (inputs / "b.mp4").exists():
            (inputs / "b.mp4").unlink()

    result = preprocess([inputs], tmp_path / "out", progress=progress, **FAST)
    assert {c["name"]: c["status"] for c in result.clips} == {"a": "done", "b": "failed", "c": "done"}
    assert result.clips[1]["errors"] == {"preprocess": f"{inputs / 'b.mp4'}: no longer there (moved or deleted since this run started); "
                                         "its clip folder is left as it was"}
    assert result.exit_code == 1 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]


def _detectron2_installed() -> bool:
    from magicanimate_cli.densepose.estimator import detectron2_available

    return detectron2_available()


@pytest.mark.skipif(_detectron2_installed(), reason="detectron2 is installed: test_real_densepose_stage_with_detectron2 runs instead")
def test_real_densepose_stage_reports_its_install_command(videos, tmp_path, monkeypatch):
    """Without the fakes: the real densepose() runs and, without detectron2, says how to install it."""
    from magicanimate_cli import preprocess as preprocess_module

    monkeypatch.setattr(preprocess_module._Networks, "segmenter", lambda self: None)
    monkeypatch.setattr(matting_module, "matte", Fakes().matte)
    result = preprocess([videos / "talk.mp4"], tmp_path, **FAST)
    clip = result.clips[0]
    assert clip["status"] == "incomplete" and clip["stages"]["densepose"] == "unavailable"
    from magicanimate_cli.densepose import install_command

    assert _meta(tmp_path / "talk")["stages"]["densepose"]["hint"] == install_command()


@pytest.mark.skipif(not _detectron2_installed(), reason="detectron2/DensePose not installed (optional extra)")
def test_real_densepose_stage_with_detectron2(tmp_path, monkeypatch, capfd):
    """preprocess with real detectron2 on a weights file the user names (--densepose-weights): the
    stage is done, meta.json records the file's sha256, the clip's fps and detectron2's version,
    and detectron2 prints nothing on stderr."""
    from importlib import metadata

    make_video(tmp_path / "walk.mp4", count=3, fps=10.0, width=64, height=48, moving=True)
    digest = detectron2_person_weights(tmp_path / "mine.pkl")
    capfd.readouterr()
    result = runner.invoke(app, ["preprocess", str(tmp_path / "walk.mp4"), "-o", str(tmp_path / "out"), "--size", "32", "--fps", "10",
                                 "--skip", "matte", "--densepose-weights", str(tmp_path / "mine.pkl"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and capfd.readouterr().err == ""
    meta = _meta(tmp_path / "out" / "walk")
    record = meta["stages"]["densepose"]
    assert record["status"] == "done" and record["params"] == {"weights": str((tmp_path / "mine.pkl").resolve())}
    assert record["result"]["weights_sha256"] == digest and record["result"]["fps"] == 10.0
    assert record["result"]["missing"] == 0 and record["result"]["model"] == "densepose_rcnn_R_50_FPN_s1x"
    assert meta["versions"]["detectron2"] == metadata.version("detectron2") and meta["versions"]["torch"] == metadata.version("torch")
    labels = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "out" / "walk" / "densepose_labels").iterdir())])
    assert labels.shape == (3, 32, 32) and labels.max() <= 24 and (labels > 0).mean() > 0.05
    render = np.asarray(Image.open(tmp_path / "out" / "walk" / "densepose" / "00000.png"))
    assert np.array_equal(render, TABLE_10_3[labels[0]])  # the driving frame is the label map in the palette


def test_real_matting_stage_with_random_paddleseg_weights(videos, tmp_path, monkeypatch):
    """Without the fakes: preprocess drives the real PaddleSeg matting (random weights, so only
    shapes and values are checked) and the field of view is located from its masks."""
    pytest.importorskip("paddle")
    pytest.importorskip("paddleseg")
    import dataclasses

    name = matting_module.DEFAULT_MODEL
    models = tmp_path / "models"
    weights = matting_module.weights_path(name, models)
    paddleseg_checkpoint(name, weights, varied=False)
    monkeypatch.setitem(matting_module.MODELS, name, dataclasses.replace(matting_module.MODELS[name], sha256=None))
    monkeypatch.setenv("MAGICANIMATE_MODELS", str(models))
    result = preprocess([videos / "dance.mp4"], tmp_path / "out", skip="densepose", fov="2x1", **FAST)
    clip = result.clips[0]
    assert clip["status"] == "done", clip
    meta = _meta(tmp_path / "out" / "dance")
    assert meta["stages"]["matte"]["status"] == "done" and meta["subfolders"] == ["images", "masks"]
    mask = np.asarray(Image.open(tmp_path / "out" / "dance" / "masks" / "00000.png"))
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    assert meta["stages"]["fov"]["result"]["located_by"] in ("masks", "motion")  # random masks may be empty


def test_a_failure_that_mentions_install_is_not_a_missing_dependency(videos, tmp_path, fakes):
    """Only a missing library marks a stage unavailable for the rest of the run (review finding)."""
    fakes.fail["densepose"] = UserError(f"{tmp_path}/reinstall/a: found no person in any frame")
    result = preprocess([videos], tmp_path, **FAST)
    assert fakes.count("densepose") == 2  # tried again for the second clip
    assert all(clip["stages"]["densepose"] == "failed" for clip in result.clips)


def test_a_frames_folder_given_as_dot_is_named_after_itself(tmp_path, monkeypatch, fakes):
    from magicanimate_cli import media

    frames = tmp_path / "take1"
    media.write_frames(frames, np.zeros((3, 48, 64, 3), np.uint8))
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(frames)
    result = preprocess(["."], tmp_path / "out", skip="densepose,matte", size=32)
    assert [clip["name"] for clip in result.clips] == ["take1"]
    assert (tmp_path / "out" / "take1" / "images").is_dir()


def test_a_damaged_meta_json_is_replaced_with_overwrite(videos, tmp_path, fakes):
    preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    (tmp_path / "dance" / "meta.json").write_text("{bad")
    with pytest.raises(UserError, match="unreadable meta.json.*--overwrite"):
        preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    assert preprocess([videos / "dance.mp4"], tmp_path, overwrite=True, **FAST).ok


# ----------------------------------------------------------------------------- the real DensePose stage, given an estimator


class OrderEstimator:
    """detectron2-shaped results for frames in the order they come: a person (part 7 over a centred
    box) in the frames whose position is in ``found``, nobody elsewhere; records the weights it was
    loaded with like load_estimator's result."""

    name, device = "order", "cpu"

    def __init__(self, found, weights=None, weights_sha256=None):
        self.found, self.seen = set(found), 0
        self.weights, self.weights_sha256 = weights, weights_sha256

    def __call__(self, frames):
        from magicanimate_cli.densepose.charts import Detections

        out = []
        for frame in frames:
            height, width = frame.shape[:2]
            if self.seen in self.found:
                fine = np.full((1, 25, 4, 4), -4.0, np.float32)
                fine[0, 7] = 4.0
                box = np.array([[width / 4, height / 4, width / 2, height / 2]], np.float32)
                coarse = np.zeros((1, 2, 4, 4), np.float32)
                coarse[0, 1] = 1.0  # foreground everywhere in the box
                out.append(Detections(box, np.array([0.99], np.float32), coarse, fine))
            else:
                out.append(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                      np.zeros((0, 2, 4, 4), np.float32), np.zeros((0, 25, 4, 4), np.float32)))
            self.seen += 1
        return out


def real_densepose(monkeypatch, estimator):
    """preprocess with the real densepose() stage, ``estimator`` in place of detectron2, fake matting."""
    from magicanimate_cli import preprocess as preprocess_module

    calls = []

    def load(self):
        calls.append(self.densepose)
        return estimator

    monkeypatch.setattr(preprocess_module._Networks, "segmenter", lambda self: None)
    monkeypatch.setattr(preprocess_module._Networks, "estimator", load)
    monkeypatch.setattr(matting_module, "matte", Fakes().matte)
    return calls


def test_too_few_detected_frames_fail_the_clips_densepose_stage(videos, tmp_path, monkeypatch):
    real_densepose(monkeypatch, OrderEstimator(found={0, 1, 2}))  # 3 of 10 frames
    result = runner.invoke(app, ["preprocess", str(videos / "dance.mp4"), "-o", str(tmp_path), "--size", "32", "--json"])
    assert result.exit_code == 1, result.output
    clip = json.loads(result.stdout)["clips"][0]
    assert clip["status"] == "incomplete" and clip["stages"]["densepose"] == "failed"
    message = clip["errors"]["densepose"]
    assert message.startswith(f"clip dance ({videos / 'dance.mp4'}): DensePose found a person in only 3 of 10 frames (30%, below --min-detected 0.5)")
    assert "--min-score" in message and "--fill-missing" in message and not message.startswith("StageFailed")
    assert _meta(tmp_path / "dance")["subfolders"] == ["images", "masks"]

    estimator = OrderEstimator(found=())  # accepting the gaps: the labels of the first run are reused
    real_densepose(monkeypatch, estimator)
    fixed = preprocess([videos / "dance.mp4"], tmp_path, fill_missing=True, **FAST)
    assert fixed.ok and estimator.seen == 0
    record = _meta(tmp_path / "dance")["stages"]["densepose"]
    assert record["params"] == {"fill_missing": True} and record["result"]["filled"] == 7


def test_a_clip_without_anybody_names_the_clip_not_its_work_folder(videos, tmp_path, monkeypatch):
    real_densepose(monkeypatch, OrderEstimator(found=()))
    result = preprocess([videos / "dance.mp4"], tmp_path, **FAST)
    clip = result.clips[0]
    assert clip["status"] == "incomplete" and clip["stages"]["densepose"] == "failed"
    assert clip["errors"]["densepose"] == (f"clip dance ({videos / 'dance.mp4'}): DensePose found no person in any of its 10 frames "
                                          "(score above 0.8); check the input or lower --min-score")
    assert _meta(tmp_path / "dance")["stages"]["densepose"]["error"] == clip["errors"]["densepose"]


def test_densepose_result_in_meta_json_has_the_clip_fps_and_frame_names(tmp_path, monkeypatch):
    make_video(tmp_path / "slow.mp4", count=10, fps=10.0)
    real_densepose(monkeypatch, OrderEstimator(found=range(1, 10)))
    result = preprocess([tmp_path / "slow.mp4"], tmp_path / "out", fps=10.0, **FAST)
    assert result.ok, result.clips
    meta = _meta(tmp_path / "out" / "slow")
    densepose_result = meta["stages"]["densepose"]["result"]
    assert meta["fps"] == 10.0 and densepose_result["fps"] == 10.0
    assert densepose_result["missing_frames"] == ["00000.png"]
    assert (tmp_path / "out" / "slow" / "images" / "00000.png").is_file()  # the name is a frame of the clip


def test_densepose_weights_option_reaches_the_estimator_and_meta_json(videos, tmp_path, monkeypatch):
    import hashlib

    weights = tmp_path / "mine.pkl"
    weights.write_bytes(b"not really weights")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    calls = real_densepose(monkeypatch, OrderEstimator(found=range(10), weights=weights, weights_sha256=digest))
    result = runner.invoke(app, ["preprocess", str(videos / "dance.mp4"), "-o", str(tmp_path / "out"), "--size", "32",
                                 "--densepose-weights", str(weights), "--min-score", "0.6", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(c.weights, c.min_score) for c in calls] == [(weights.resolve(), 0.6)]
    record = _meta(tmp_path / "out" / "dance")["stages"]["densepose"]
    assert record["params"] == {"weights": str(weights.resolve()), "min_score": 0.6}
    assert record["result"]["weights"] == str(weights) and record["result"]["weights_sha256"] == digest

    missing = runner.invoke(app, ["preprocess", str(videos / "dance.mp4"), "-o", str(tmp_path / "o2"),
                                  "--densepose-weights", str(tmp_path / "nope.pkl")])  # fmt: skip
    assert missing.exit_code == 2 and "nope.pkl: no such weights file" in missing.stderr
    assert not (tmp_path / "o2").exists()  # refused before any work


def test_densepose_weights_are_read_as_typed_home_folder_and_empty_path(videos, tmp_path, monkeypatch):
    # densepose_weights="" was read as the current folder: "/the/cwd: no such weights file"
    monkeypatch.setenv("HOME", str(tmp_path))
    weights = tmp_path / "mine.pkl"
    weights.write_bytes(b"not really weights")
    calls = real_densepose(monkeypatch, OrderEstimator(found=range(10), weights=weights, weights_sha256="0" * 64))
    assert preprocess([videos / "dance.mp4"], tmp_path / "out", densepose_weights="~/mine.pkl", **FAST).ok
    assert [c.weights for c in calls] == [weights.resolve()]
    with pytest.raises(UserError, match='^"": an empty input path') as caught:
        preprocess([videos / "dance.mp4"], tmp_path / "o2", densepose_weights="", **FAST)
    assert "\n" not in str(caught.value) and not (tmp_path / "o2").exists()


def test_versions_in_meta_json_name_the_stage_libraries_without_importing_them():
    import subprocess
    import sys
    from importlib import metadata

    code = (
        "import json, sys; from magicanimate_cli.clip import versions; v = versions(); "
        "print(json.dumps([v, [m for m in ('torch', 'paddle', 'detectron2') if m in sys.modules]]))"
    )
    found, imported = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert imported == []
    for key, distribution in (("torch", "torch"), ("detectron2", "detectron2"), ("paddle", "paddlepaddle")):
        try:
            expected = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            expected = None
        assert key in found and found[key] == expected, key


def test_camera_and_broadcast_containers_are_videos(tmp_path):
    # .MTS from a camcorder, .ts from a capture, .3gp from an old phone: what ffmpeg reads,
    # `frames` and `crop` took them and `preprocess` refused them ("not a video ...")
    for name in ("cam.MTS", "capture.ts", "phone.3gp"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(s.name for s in collect_sources([tmp_path])) == ["cam", "capture", "phone"]
    media.write_frames(tmp_path / "real.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    (tmp_path / "capture.ts").write_bytes((tmp_path / "real.mp4").read_bytes())  # named: ffmpeg must open it
    assert [s.kind for s in collect_sources([tmp_path / "capture.ts"])] == ["video"]


def test_a_folder_of_frames_and_videos_is_refused_but_a_thumbnail_is_no_frame(tmp_path):
    (tmp_path / "talk.mp4").write_bytes(b"")
    (tmp_path / "talk.webp").write_bytes(b"")  # yt-dlp --write-thumbnail
    assert [s.name for s in collect_sources([tmp_path])] == ["talk"]
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i:05d}.png")
    with pytest.raises(UserError, match=r"holds both videos \(talk.mp4, ...\) and image frames \(00000.png, ...\)"):
        collect_sources([tmp_path])


def test_a_named_frames_folder_with_frames_of_two_sizes_is_exit_2_before_any_work(tmp_path):
    # it failed as a clip (exit 1) after extracting the frames before it, leaving a clip folder
    (tmp_path / "frames").mkdir()
    for i in range(5):
        Image.new("RGB", (64, 50 if i == 3 else 48)).save(tmp_path / "frames" / f"{i}.png")
    Image.new("RGB", (48, 64)).save(tmp_path / "frames" / "4.png", exif=_turned())  # stored sideways, shown 64x48: as the others
    result = CliRunner().invoke(app, ["preprocess", str(tmp_path / "frames"), "-o", str(tmp_path / "ds"), "--skip", "densepose,matte", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"].endswith("3.png: size 64x50 differs from the first frame's 64x48; resize the folder")
    assert not (tmp_path / "ds").exists()
    (tmp_path / "frames" / "3.png").unlink()
    assert [s.kind for s in collect_sources([tmp_path / "frames"])] == ["frames"]


def _turned():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to show it
    return exif


def test_a_list_file_in_utf8_with_a_bom_or_not_utf8_at_all(videos, tmp_path):
    # the BOM became part of the first path ("\ufeffvids/a.mp4: no such file"); Latin-1 was a
    # UnicodeDecodeError, exit 1, naming no file
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf# dances\n" + str(videos / "talk.mp4").encode() + b"\n")
    assert [s.name for s in collect_sources([listing])] == ["talk"]
    listing.write_bytes(b"clips/caf\xe9.mp4\n")
    with pytest.raises(UserError, match=r"list.txt: not UTF-8 text \(byte 9: invalid continuation byte\); save it as UTF-8"):
        collect_sources([listing])
