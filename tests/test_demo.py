"""magicanimate demo: the Gradio page driven through its API (gradio_client) and in a real browser.

The server runs in this process on 127.0.0.1 with the fixture A weights. Its results are checked
against the ``animate`` CLI run with the command the page printed (an independent run: its own
pipeline load, its own process of reading the inputs). The raw-video run uses the fake DensePose
stage of tests/test_preprocess.py, injected the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from preprocess_helpers import add_sound, make_video

gradio_client = pytest.importorskip("gradio_client", reason="the demo extra is not installed (pip install 'magicanimate-cli[demo]')")
pytest.importorskip("gradio", reason="the demo extra is not installed (pip install 'magicanimate-cli[demo]')")

from gradio_client import Client, handle_file  # noqa: E402

from magicanimate_cli import media  # noqa: E402
from magicanimate_cli.cli import app  # noqa: E402
from magicanimate_cli.demo import SOURCE_CLIP, SOURCE_MOTION, SOURCE_RAW, start  # noqa: E402
from magicanimate_cli.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(os.environ.get("MAGICANIMATE_PARITY_DIR", REPO.parent / "shared" / "parity")) / "A"
WEIGHTS = FIXTURE / "weights"
SMALL = {"steps": 4, "guidance_scale": 7.5, "seed": 42, "size": 64, "context_frames": 16, "context_overlap": 4, "fit": "stretch",
         "context_schedule": "loop", "context_fusion": "flat"}
FRAMES = 6  # a short motion keeps each run to one window per step

pytestmark = pytest.mark.skipif(not WEIGHTS.is_dir(), reason=f"fixture A weights not found at {WEIGHTS}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortTaken(Exception):
    """The demo refused its port: another process bound it after ``free_port`` found it free."""


def raise_if_port_taken(port: int, error: str) -> None:
    """Raise ``PortTaken`` if ``error`` is the demo's refusal of ``port`` ('--port N: ...', exit 2)."""
    if error.startswith(f"--port {port}: "):
        raise PortTaken(error)


def on_a_free_port(launch, tries: int = 5):
    """``launch(port)`` on a port ``free_port`` found. Between that and the demo's bind another
    process (a parallel test run) can take the port; then ``launch`` raises ``PortTaken`` and is
    tried again on another port."""
    for attempt in range(1, tries + 1):
        try:
            return launch(free_port())
        except PortTaken:
            if attempt == tries:
                raise


def start_on_a_free_port(**kwargs):
    """``start(port=..., **kwargs)`` on a free port; returns the server."""

    def launch(port):
        try:
            return start(port=port, **kwargs)
        except UserError as exc:
            raise_if_port_taken(port, str(exc))
            raise

    return on_a_free_port(launch)


def settings(**changes) -> list:
    values = {**SMALL, "keep_aspect": False, "extra_references": None, **changes}
    return [values[k] for k in ("steps", "guidance_scale", "seed", "size", "context_frames", "context_overlap", "fit", "context_schedule", "context_fusion",
                                "keep_aspect", "extra_references")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-inputs")
    motion = np.load(FIXTURE / "inputs" / "motion_frames.npy")[:FRAMES]
    media.write_frames(folder / "motion.mp4", motion, fps=25)
    with zipfile.ZipFile(folder / "motion.zip", "w") as zf:
        for i, frame in enumerate(motion[:3]):
            media.write_png(folder / f"{i:05d}.png", frame, replace=False)
            zf.write(folder / f"{i:05d}.png", f"poses/{i:05d}.png")
    clips = folder / "clips"
    shutil.copytree(FIXTURE / "inputs" / "motion_frames", clips / "dancer" / "densepose")
    shutil.copytree(FIXTURE / "inputs" / "motion_frames", clips / "dancer30" / "densepose", ignore=lambda folder, names: sorted(names)[FRAMES:])
    (clips / "dancer30" / "meta.json").write_text(json.dumps({"fps": 30.0}))  # as `preprocess --fps 30` records its clip
    add_sound(make_video(folder / "dance.mp4", count=FRAMES, fps=25.0, width=96, height=48, moving=True), FRAMES / 25)
    media.write_frames(folder / "wide.mp4", np.pad(motion, ((0, 0), (0, 0), (16, 16), (0, 0)), mode="edge"), fps=25)  # 96x64
    (folder / "notes.txt").write_text("not a video")
    (folder / "big.mp4").write_bytes(os.urandom(1_200_000))
    return {"reference": FIXTURE / "inputs" / "reference.png", "motion": folder / "motion.mp4", "archive": folder / "motion.zip",
            "clips": clips, "raw": folder / "dance.mp4", "text": folder / "notes.txt", "big": folder / "big.mp4", "wide": folder / "wide.mp4"}


@pytest.fixture(scope="module")
def fake_densepose():
    """DensePose is faked exactly as in tests/test_preprocess.py (its stage function and loaders)."""
    from test_preprocess import Fakes

    import magicanimate_cli.densepose as densepose_module
    import magicanimate_cli.matting as matting_module
    from magicanimate_cli import preprocess as preprocess_module
    from magicanimate_cli.densepose import estimator as estimator_module

    fake = Fakes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preprocess_module._Networks, "segmenter", lambda self: None)
        mp.setattr(preprocess_module._Networks, "estimator", lambda self: None)
        mp.setattr(densepose_module, "densepose", fake.densepose)
        mp.setattr(matting_module, "matte", fake.matte)
        mp.setattr(estimator_module, "detectron2_available", lambda: True)  # the page offers the raw-video option
        yield fake


@pytest.fixture(scope="module")
def server(inputs, fake_densepose):
    srv = start_on_a_free_port(models=WEIGHTS, device="cpu", clips=inputs["clips"], max_upload_mb=1)
    yield srv
    workdir = srv.workdir
    srv.close()
    assert not workdir.exists(), "the temporary work folder is removed at exit"


@pytest.fixture()
def client(server, tmp_path):
    return Client(server.url, verbose=False, download_files=str(tmp_path / "downloads"))


def animate_args(inputs, source=SOURCE_MOTION, motion=None, raw=None, clip=None, **changes) -> list:
    return [handle_file(str(inputs["reference"])), source, handle_file(str(motion)) if motion else None,
            handle_file(str(raw)) if raw else None, clip, *settings(**changes)]


def run_cli(command: str) -> Path:
    """Run the page's `magicanimate animate ...` command as printed (its output beside the page's,
    which is there); return where it wrote."""
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:2] == ["magicanimate", "animate"], command
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, result.output
    return Path(args[args.index("-o") + 1])


def test_motion_video_equals_the_cli_run_of_the_printed_command(server, client, inputs, tmp_path):
    ref_preview, pose_preview, info = client.predict(*animate_args(inputs, motion=inputs["motion"])[:5], 64, "stretch", api_name="/preview")
    assert media.read_image(Path(pose_preview)).shape == (64, 64, 3) and f"{FRAMES} frames" in info
    assert np.array_equal(media.read_image(Path(ref_preview)), media.read_image(inputs["reference"]))  # 64² already: untouched
    *_, info = client.predict(*animate_args(inputs, motion=inputs["motion"])[:5], 4096, "stretch", api_name="/preview")
    assert "--size 4096" in info and "2048" in info  # the animator's bounds, not a wider rule of the page's own

    video, grid, command, status = client.predict(*animate_args(inputs, motion=inputs["motion"], context_schedule="open",
                                                                  context_fusion="pyramid"), api_name="/animate")
    frames = media.read_frames(Path(video)).array
    assert len(frames) == media.probe(inputs["motion"]).frames == FRAMES
    assert "--steps 4" in command and "--seed 42" in command and "--fit stretch" in command and "Done" in status
    assert "--context-schedule open" in command and "--context-fusion pyramid" in command
    assert "**Warning**" in status and "does not look like DensePose" in status  # the fixture's poses are IUV-coloured

    written = run_cli(command)
    page = written.with_name("animation.mp4")  # beside the page's animation, which stays as it was
    assert written != page and np.array_equal(media.read_frames(page).array, frames)
    assert np.array_equal(frames, media.read_frames(written).array)
    assert np.array_equal(media.read_frames(Path(grid)).array, media.read_frames(written.with_name(f"{written.stem}_grid.mp4")).array)
    run = Path(shlex.split(command)[2]).parents[1]
    assert json.loads((run / "run.json").read_text())["status"] == "done"


def test_keep_aspect_gives_the_motions_aspect_as_the_printed_command_does(server, client, inputs, tmp_path):
    video, grid, command, status = client.predict(*animate_args(inputs, motion=inputs["wide"], fit="pad", keep_aspect=True), api_name="/animate")
    frames = media.read_frames(Path(video)).array
    assert frames.shape == (FRAMES, 42, 64, 3) and "64×42" in status and "--fit pad" in command and "--keep-aspect" in command
    assert media.read_frames(Path(grid)).array.shape[1:3] == (42, 3 * 64)  # its panels of the animation's aspect too
    assert np.array_equal(frames, media.read_frames(run_cli(command)).array)


def test_extra_references_of_one_name_are_all_used_as_the_printed_command_uses_them(server, client, inputs, tmp_path):
    reference = media.read_image(inputs["reference"])
    extras = []
    for number, image in enumerate((reference[:, ::-1], reference[::-1])):  # two uploads named like the reference itself
        extras.append(tmp_path / f"upload{number}" / inputs["reference"].name)
        extras[-1].parent.mkdir()
        media.write_png(extras[-1], np.ascontiguousarray(image), replace=False)
    video, grid, command, status = client.predict(*animate_args(inputs, motion=inputs["motion"], extra_references=[handle_file(str(path)) for path in extras]),
                                                  api_name="/animate")
    assert command.count("--extra-reference ") == 2 and "Done" in status
    frames = media.read_frames(Path(video)).array
    written = run_cli(command)
    assert np.array_equal(frames, media.read_frames(written).array)
    args = shlex.split(command.replace("\\\n", " "))
    used = [Path(args[i + 1]) for i, arg in enumerate(args) if arg == "--extra-reference"]
    assert len(set(used)) == 2 and Path(args[2]) not in used  # the reference's copy and both uploads, each its own file
    for path, image in zip(used, (reference[:, ::-1], reference[::-1])):
        assert np.array_equal(media.read_image(path), image)
    alone, *_ = client.predict(*animate_args(inputs, motion=inputs["motion"]), api_name="/animate")
    assert not np.array_equal(media.read_frames(Path(alone)).array, frames)  # the extra images moved the animation
    record = json.loads((Path(args[2]).parents[1] / "run.json").read_text())
    assert [Path(path) for path in record["extra_references"]] == used


def test_raw_video_runs_through_preprocess_with_the_fake_densepose(server, client, inputs, fake_densepose, tmp_path):
    before = fake_densepose.count("densepose")
    video, grid, command, status = client.predict(*animate_args(inputs, source=SOURCE_RAW, raw=inputs["raw"]), api_name="/animate")
    assert fake_densepose.count("densepose") == before + 1
    assert len(media.read_frames(Path(video)).array) == FRAMES
    preprocess_cmd, animate_cmd = command.split(" && \\\n  ")
    assert "magicanimate preprocess" in preprocess_cmd and "--fov 64x64 --skip matte" in preprocess_cmd
    run = Path(shlex.split(animate_cmd)[2]).parents[1]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["preprocess"]["stages"]["densepose"] == "done"
    assert record["stages"] == ["frames", "crop", "denoise", "decode"]  # stage by stage (the fake DensePose reports none)
    poses = media.read_frames(run / "clips" / "dance" / "densepose").array
    assert poses.shape == (FRAMES, 64, 64, 3) and (poses != poses[0, 0, 0]).any()  # the fake drew the moving bar
    written = run_cli(animate_cmd)
    assert np.array_equal(media.read_frames(Path(video)).array, media.read_frames(written).array)
    # the raw video's music: the animation, the grid and the printed command keep it
    assert media.audio_streams(Path(video)) == media.audio_streams(Path(grid)) == media.audio_streams(written) == ["aac"]
    assert f"--audio {run / 'inputs' / 'dance.mp4'}" in animate_cmd and "with the sound of dance.mp4" in status


def test_a_cancel_during_densepose_stops_the_raw_videos_preprocess(server, inputs, fake_densepose, monkeypatch):
    # preprocess records a stage's Exception as its failure and goes on: a cancel during DensePose (an
    # optional stage) was written in the clip as "densepose failed: Cancelled" and the chain ran on
    import magicanimate_cli.densepose as densepose_module
    from magicanimate_cli.demo import Cancelled

    cancel, real = threading.Event(), densepose_module.densepose

    def densepose(folder, *args, progress=None, **kwargs):
        cancel.set()  # the Cancel button, pressed while DensePose runs
        progress("densepose", 1, FRAMES)
        return real(folder, *args, progress=progress, **kwargs)

    monkeypatch.setattr(densepose_module, "densepose", densepose)
    with pytest.raises(Cancelled):
        server.app._work(cancel, None, str(inputs["reference"]), SOURCE_RAW, None, str(inputs["raw"]), None, *settings())
    run = sorted(server.app.runs_dir.iterdir())[-1]
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    meta = run / "clips" / "dance" / "meta.json"
    stages = json.loads(meta.read_text())["stages"] if meta.exists() else {}
    assert "crop" not in stages and not any("Cancelled" in str(record.get("error")) for record in stages.values()), stages
    assert not list((run / "clips").rglob(".work")), "its full-size frames are left behind"


def test_a_failed_raw_run_leaves_no_preprocess_work_folder(server, client, inputs, fake_densepose, monkeypatch):
    # a run's preprocess is never resumed (each run has its own folder): a failed or cancelled one
    # kept the full-size frames of the whole video in clips/<clip>/.work for the server's life
    from magicanimate_cli.errors import UserError

    monkeypatch.setitem(fake_densepose.fail, "densepose", UserError("no person found"))
    with pytest.raises(Exception, match="preprocessing dance.mp4 failed \\(densepose: no person found"):
        client.predict(*animate_args(inputs, source=SOURCE_RAW, raw=inputs["raw"]), api_name="/animate")
    run = sorted(server.app.runs_dir.iterdir())[-1]
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert (run / "clips" / "dance" / "meta.json").is_file() and not list((run / "clips").rglob(".work"))


def test_an_emptied_number_field_is_one_line_naming_its_option(server, client, inputs):
    # the browser sends an emptied number box as None: int(None) answered in Python's words, and the
    # preview (run when the size box loses focus) raised, with a traceback in the server's log
    *_, info = client.predict(*animate_args(inputs, motion=inputs["motion"])[:5], None, "stretch", api_name="/preview")
    assert info == "⚠ --size is empty: give a whole number (the default is 512)"
    with pytest.raises(Exception, match=r"--steps is empty: give a whole number \(the default is 25\)"):
        client.predict(*animate_args(inputs, motion=inputs["motion"], steps=None), api_name="/animate")


def test_clip_folder_and_frames_archive(server, client, inputs):
    video, *_ = client.predict(*animate_args(inputs, source=SOURCE_CLIP, clip="dancer", steps=1), api_name="/animate")
    assert len(media.read_frames(Path(video)).array) == 28
    video, _, command, _ = client.predict(*animate_args(inputs, motion=inputs["archive"], steps=1), api_name="/animate")
    assert len(media.read_frames(Path(video)).array) == 3 and "/inputs/motion " in command + " "
    with pytest.raises(Exception, match="not in the list of choices|choose one of the clips"):  # no path from a client
        client.predict(*animate_args(inputs, source=SOURCE_CLIP, clip="../../etc", steps=1), api_name="/animate")


def test_a_clip_is_animated_at_its_own_fps_as_the_cli_reads_the_clip_folder(server, client, inputs):
    # a clip made by `preprocess --fps 30`: the page (and its printed command) animated the clip's
    # densepose/ as a bare frames folder, at 25 fps, where `animate photo.png CLIP` takes the clip's 30
    *_, info = client.predict(*animate_args(inputs, source=SOURCE_CLIP, clip="dancer30")[:5], 64, "stretch", api_name="/preview")
    assert f"{FRAMES} frames at 30 fps" in info
    video, _, command, _ = client.predict(*animate_args(inputs, source=SOURCE_CLIP, clip="dancer30", steps=1), api_name="/animate")
    assert media.probe(Path(video)).fps == 30 and len(media.read_frames(Path(video)).array) == FRAMES
    assert shlex.split(command)[3] == str(inputs["clips"].resolve() / "dancer30")  # the clip folder, as the README's `animate photo.png clips/dance`
    written = run_cli(command)
    assert media.probe(written).fps == 30 and np.array_equal(media.read_frames(written).array, media.read_frames(Path(video)).array)


def test_previewed_archives_are_not_kept_in_the_work_folder(server, inputs, tmp_path):
    # each .zip the page previewed was unpacked into the work folder (up to 2 GB each) and kept there
    # for the server's life, used by nothing: a run unpacks its own copy into its folder
    def kept():
        return {p for p in server.workdir.rglob("*") if p.relative_to(server.workdir).parts[0] not in ("runs", "gradio")}

    before = kept()
    with zipfile.ZipFile(inputs["archive"]) as zf:
        names = zf.namelist()
        for count in (2, 1):
            with zipfile.ZipFile(tmp_path / f"poses{count}.zip", "w") as out:
                for name in names[:count]:
                    out.writestr(name, zf.read(name))
    for archive in (inputs["archive"], tmp_path / "poses2.zip", tmp_path / "poses1.zip"):
        _, pose, info = server.app.preview(None, SOURCE_MOTION, str(archive), None, None, 64, "stretch")
        assert pose.shape == (64, 64, 3) and f"{len(zipfile.ZipFile(archive).namelist())} frames at 25 fps" in info
    assert kept() == before


def test_an_animated_webp_motion_is_animated_as_the_cli_reads_it(server, client, inputs, tmp_path):
    # the CLI reads an animated WebP (what `-o poses.webp` writes) as a video; the page refused it by its name
    motion = media.read_frames(inputs["motion"]).array[:5]
    media.write_frames(tmp_path / "poses.webp", motion, fps=25)
    video, *_ = client.predict(*animate_args(inputs, motion=tmp_path / "poses.webp", steps=1), api_name="/animate")
    assert len(media.read_frames(Path(video)).array) == 5


def test_a_reference_and_a_motion_of_one_name_are_both_kept(server, client, inputs, tmp_path):
    # a still pose.webp photo and an animated pose.webp motion: the motion's copy replaced the
    # reference's in the run's inputs, and the page animated the motion's first frame, without a word
    from PIL import Image

    (tmp_path / "photo").mkdir(), (tmp_path / "poses").mkdir()
    Image.open(inputs["reference"]).convert("RGB").save(tmp_path / "photo" / "pose.webp", lossless=True)
    media.write_frames(tmp_path / "poses" / "pose.webp", media.read_frames(inputs["motion"]).array[:3], fps=25)
    video, _, command, _ = client.predict(handle_file(str(tmp_path / "photo" / "pose.webp")), SOURCE_MOTION,
                                          handle_file(str(tmp_path / "poses" / "pose.webp")), None, None, *settings(steps=1), api_name="/animate")
    reference, motion = (Path(p) for p in shlex.split(command)[2:4])
    assert reference != motion and np.array_equal(media.read_image(reference), media.read_image(inputs["reference"]))
    assert media.is_video(motion) and len(media.read_frames(Path(video)).array) == 3


def test_cancel_stops_the_worker_and_frees_the_device(server, client, inputs):
    job = client.submit(*animate_args(inputs, motion=inputs["motion"], steps=500), api_name="/animate")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until denoising has started
        progress = job.status().progress_data
        if progress and any(p.desc and "denoising" in p.desc and (p.index or 0) >= 1 for p in progress):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run never reported denoising progress")
    cancelled = time.monotonic()
    job.cancel()
    runs = sorted(server.app.runs_dir.iterdir())
    record = runs[-1] / "run.json"
    while not record.exists() and time.monotonic() < cancelled + 120:
        time.sleep(0.2)
    assert json.loads(record.read_text())["status"] == "cancelled"
    assert not (runs[-1] / "animation.mp4").exists()
    # the device is free again: the next run starts and finishes
    video, *_ = client.predict(*animate_args(inputs, motion=inputs["archive"], steps=1), api_name="/animate")
    assert len(media.read_frames(Path(video)).array) == 3


def test_uploads_are_checked_and_only_the_work_folder_is_served(server, client, inputs):
    import httpx

    with pytest.raises(Exception, match="Invalid file type|not a DensePose video or frames archive"):
        client.predict(*animate_args(inputs, motion=inputs["text"]), api_name="/animate")
    with pytest.raises(Exception):  # over --max-upload-mb 1
        client.predict(*animate_args(inputs, motion=inputs["big"]), api_name="/animate")
    assert not any(p.name == "big.mp4" for p in (server.workdir / "gradio").rglob("*"))
    outside = [WEIGHTS / "weights_info.json", inputs["reference"], Path("/etc/hostname")]
    for path in outside:
        assert httpx.get(f"{server.url}gradio_api/file={path}").status_code == 403, path
    client.predict(*animate_args(inputs, motion=inputs["archive"], steps=1), api_name="/animate")  # this test's own result
    served = next((server.workdir / "gradio").rglob("animation.mp4"))
    assert httpx.get(f"{server.url}gradio_api/file={served}").status_code == 200
    assert server.url.startswith("http://127.0.0.1:")


def test_a_reference_the_cli_reads_is_read_by_the_page_too(server, client, inputs, tmp_path):
    # an iPhone's HEIC photo (or a 200-MP one) is a reference `magicanimate animate` takes: the page
    # had Gradio open it with bare Pillow, which refused it with its own error and a traceback in the
    # server's log, as it did a file that is no image at all
    pillow_heif = pytest.importorskip("pillow_heif")
    from PIL import Image

    photo = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.open(inputs["reference"]).convert("RGB")).save(photo, quality=100)
    ref_preview, _, info = client.predict(handle_file(str(photo)), SOURCE_MOTION, None, None, None, 64, "stretch", api_name="/preview")
    assert ref_preview is not None and media.read_image(Path(ref_preview)).shape == (64, 64, 3), info
    video, *_ = client.predict(handle_file(str(photo)), *animate_args(inputs, motion=inputs["archive"], steps=1)[1:], api_name="/animate")
    assert len(media.read_frames(Path(video)).array) == 3
    broken = tmp_path / "photo.jpg"
    broken.write_bytes(b"not a photo")
    *_, info = client.predict(handle_file(str(broken)), SOURCE_MOTION, None, None, None, 64, "stretch", api_name="/preview")
    assert info.startswith("⚠ ") and "photo.jpg: not a readable image" in info and "\n" not in info


def test_problems_are_shown_on_the_page_not_raised(tmp_path, monkeypatch):
    import httpx

    from magicanimate_cli.densepose import estimator

    monkeypatch.setattr(estimator, "detectron2_available", lambda: False)  # as on a machine without detectron2
    srv = start_on_a_free_port(models=tmp_path / "no-models", device="cpu", workdir=tmp_path / "work")
    try:
        config = httpx.get(f"{srv.url}config").text
        assert "could not be loaded" in config and "no-models" in config
        assert "raw videos cannot be preprocessed here" in config and "pip install" in config  # and says how to fix it
        with pytest.raises(Exception, match="not loaded"):
            Client(srv.url, verbose=False).predict(
                handle_file(str(FIXTURE / "inputs" / "reference.png")), SOURCE_MOTION, handle_file(str(FIXTURE / "inputs" / "motion.mp4")),
                None, None, *settings(), api_name="/animate")
    finally:
        srv.close()
    assert (tmp_path / "work").is_dir(), "a --workdir the user gave is kept"


def test_demos_sharing_a_workdir_each_keep_their_own_files(inputs, tmp_path):
    # two demos on one --workdir, at once or one after the other: each counts its runs and archives
    # from 0001, so in one folder the second replaced the first's unpacked archive of the same name
    # (its next run animated the other's frames) and counted the other's runs as its own
    shared = tmp_path / "W"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    other = tmp_path / "other" / "motion.zip"  # same name, other frames: 2, not 3
    other.parent.mkdir()
    with zipfile.ZipFile(inputs["archive"]) as zf, zipfile.ZipFile(other, "w") as out:
        for name in zf.namelist()[:2]:
            out.writestr(name, zf.read(name))
    first = start_on_a_free_port(models=tmp_path / "none", device="cpu", workdir=shared)
    try:
        second = start_on_a_free_port(models=tmp_path / "none", device="cpu", workdir=shared)
        try:
            assert "3 frames" in first.app.preview(None, SOURCE_MOTION, str(inputs["archive"]), None, None, 64, "stretch")[2]
            assert "2 frames" in second.app.preview(None, SOURCE_MOTION, str(other), None, None, 64, "stretch")[2]
            assert "3 frames" in first.app.preview(None, SOURCE_MOTION, str(inputs["archive"]), None, None, 64, "stretch")[2]
            first.app._new_run(), second.app._new_run()  # the same number in the same second: no clash
            assert len(list(second.app.runs_dir.iterdir())) == 1
            assert first.workdir.parent == second.workdir.parent == shared and first.workdir != second.workdir
        finally:
            second.close()
    finally:
        first.close()
    later = start_on_a_free_port(models=tmp_path / "none", device="cpu", workdir=shared)
    later.close()
    assert list(later.app.runs_dir.iterdir()) == [], "a later demo counts only its own runs"
    assert (shared / "notes.txt").read_text() == "mine" and len(list(shared.glob("demo-*"))) == 3  # all kept: the user's folder


def test_clips_and_workdir_are_read_as_typed_home_folder_and_empty_path(tmp_path, monkeypatch):
    # start(clips="~/clips") said "--clips ~/clips: no such folder" (the CLI expanded it), and
    # workdir="" made the demo's folder in the current one
    home, here = tmp_path / "home", tmp_path / "here"
    (home / "clips").mkdir(parents=True)
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    srv = start_on_a_free_port(models=tmp_path / "none", device="cpu", clips="~/clips", workdir="~/work")
    srv.close()
    assert srv.app.state.clips == (home / "clips").resolve() and srv.workdir.parent == (home / "work").resolve()
    for kwargs, said in [({"clips": ""}, '^"": an empty input path'), ({"workdir": ""}, '^--workdir "": an empty output path')]:
        with pytest.raises(UserError, match=said) as caught:
            start(models=tmp_path / "none", port=free_port(), device="cpu", **kwargs)
        assert "\n" not in str(caught.value)
    assert list(here.iterdir()) == []


def test_a_demo_that_cannot_start_takes_back_only_its_own_folder_in_a_shared_workdir(tmp_path, monkeypatch):
    import gradio as gr

    def refused(*args, **kwargs):
        raise OSError("Cannot find empty port in range: 1-1.")

    shared = tmp_path / "W"
    (shared / "demo-earlier").mkdir(parents=True)  # another demo's folder
    monkeypatch.setattr(gr.Blocks, "launch", refused)
    with pytest.raises(Exception, match="choose another --port"):
        start(models=tmp_path / "none", port=free_port(), device="cpu", workdir=shared)
    assert sorted(p.name for p in shared.iterdir()) == ["demo-earlier"]


# ----------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_browser_uploads_animates_and_plays_the_result(server, inputs, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    shots = Path(os.environ.get("MAGICANIMATE_DEMO_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        driver.set_window_size(1280, 800)
        driver.get(server.url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ma-reference input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#ma-reference input[type=file]").send_keys(str(inputs["reference"]))
        driver.find_element(By.CSS_SELECTOR, "#ma-motion input[type=file]").send_keys(str(inputs["motion"]))
        driver.find_element(By.CSS_SELECTOR, "#ma-settings button, #ma-settings .label-wrap").click()
        for name in ("steps", "seed", "size"):
            field = wait.until(lambda d, n=name: d.find_element(By.CSS_SELECTOR, f"#ma-{n} input"))
            field.clear()
            field.send_keys(str(SMALL[name]) + "\n")
        driver.find_element(By.XPATH, "//*[@id='ma-fit']//input[@value='stretch']/..").click()
        time.sleep(1)  # an error Gradio pops up for a value on the way to the one typed ("6" before "64") shows by now
        popped = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if e.is_displayed()]
        assert not popped, f"typing the settings popped up {popped}"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#ma-reference a[data-testid=download-link][download='{inputs['reference'].name}']"))
        uploaded = f"#ma-motion a[data-testid=download-link][href*='gradio_api/file='][download='{inputs['motion'].name}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, uploaded))  # the server holds the motion: its upload is done
        time.sleep(0.5)  # let the settings settle
        driver.find_element(By.ID, "ma-animate").click()
        playable = (
            "const v = document.querySelector('#ma-result video');"
            "return v && v.readyState >= 2 && v.duration > 0 ? v.duration : null;"
        )
        duration = WebDriverWait(driver, 600, poll_frequency=0.5).until(lambda d: d.execute_script(playable))
        assert duration == pytest.approx(FRAMES / 25, abs=0.1)
        said = driver.find_element(By.CSS_SELECTOR, "#ma-info").text
        assert f"→ {SMALL['size']}×{SMALL['size']} (stretch)" in said, f"the preview shows other settings than those typed: {said}"
        driver.execute_script("document.querySelector('#ma-command').scrollIntoView({block: 'end'})")
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / "demo-1280x800.png"))
        page = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        (shots / "demo-full.png").write_bytes(__import__("base64").b64decode(page["data"]))
        driver.set_window_size(420, 900)
        time.sleep(0.5)
        driver.save_screenshot(str(shots / "demo-420x900.png"))
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways on a narrow window ({width}px)"
    finally:
        driver.quit()
    assert (shots / "demo-1280x800.png").stat().st_size > 10_000


def test_cli_options_are_the_demo_functions_keywords():
    import inspect

    from magicanimate_cli import cli, demo

    command = inspect.signature(cli.demo).parameters
    function = inspect.signature(demo.demo).parameters
    assert set(command) - {"as_json"} == set(function) - {"progress", "on_ready"}
    for name, param in command.items():
        if name != "as_json":
            assert param.default.default == function[name].default, name


@pytest.mark.parametrize(
    "option, error",
    [
        (["--max-upload-mb", "0"], "--max-upload-mb 0: must be positive"),
        (["--device", "tpu"], "--device tpu: choose one of auto, cuda, cpu (or cuda:N)"),  # before the page starts
        (["--dtype", "float99"], "--dtype float99: choose one of auto, float16, bfloat16, float32"),
    ],
)
def test_cli_bad_option_is_one_line_and_exit_2(option, error):
    result = CliRunner().invoke(app, ["demo", *option, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout.splitlines()[0]) == {"ok": False, "error": error, "exit_code": 2}


def test_sigterm_stops_the_page_with_one_json_line_and_removes_its_work_folder(tmp_path):
    # Slurm and systemd stop a job with SIGTERM; Gradio prints "Closing server ..." on stdout when it stops
    import signal
    import subprocess

    import httpx

    env = {**os.environ, "TMPDIR": str(tmp_path)}

    def launch(port):
        command = [sys.executable, "-m", "magicanimate_cli", "demo", "--models", str(tmp_path / "none"), "--device", "cpu", "--port", str(port), "--json"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        said, told = [], threading.Event()

        def read_stderr():  # the ready line comes on stderr, with --json too, once the page serves
            for line in proc.stderr:
                said.append(line)
                if line.startswith("demo running at "):
                    told.set()
            told.set()  # or the process ended without serving

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        told.wait(timeout=120)
        served = any(line.startswith("demo running at ") for line in said)
        if not served and told.is_set() and proc.wait(timeout=60) == 2:
            raise_if_port_taken(port, json.loads(proc.stdout.read().splitlines()[0])["error"])
        return port, proc, said, served, reader

    port, proc, said, served, reader = on_a_free_port(launch)
    try:
        assert served, "".join(said)
        assert said[-1] == f"demo running at http://127.0.0.1:{port}/ (Ctrl-C to stop)\n"
        assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).status_code == 200
        assert list(tmp_path.glob("magicanimate-demo-*")), "the page serves from a temporary work folder"
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        proc.kill()
    err = "".join(said)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 1, out
    assert json.loads(out) == {"ok": True, "url": f"http://127.0.0.1:{port}/", "workdir": "(removed)", "runs": 0}
    assert not list(tmp_path.glob("magicanimate-demo-*"))


def test_a_port_in_use_is_one_line_and_exit_2_before_the_models_load(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workdir = tmp_path / "new" / "work"
        args = ["demo", "--port", str(port), "--workdir", str(workdir), "--models", str(tmp_path / "no-models"), "--json"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout.splitlines()[0])["error"]
    assert error.startswith(f"--port {port}: 127.0.0.1:{port} is in use or not allowed (") and error.endswith("choose another --port")
    assert not (tmp_path / "new").exists()


def test_a_port_taken_after_it_was_found_free_is_tried_again(tmp_path, monkeypatch):
    # the helpers above: free_port's port is free when found, not when the demo binds it
    ports, really_free = [], free_port
    with socket.socket() as other:  # another process, which binds the first port found before the demo does

        def found_free():
            ports.append(really_free())
            if len(ports) == 1:
                other.bind(("127.0.0.1", ports[0]))
                other.listen()
            return ports[-1]

        monkeypatch.setattr(sys.modules[__name__], "free_port", found_free)
        srv = start_on_a_free_port(models=tmp_path / "none", device="cpu", workdir=tmp_path / "work")
        srv.close()
    assert len(ports) == 2 and srv.url == f"http://127.0.0.1:{ports[1]}/"


def test_a_work_folder_the_demo_made_is_taken_back_when_it_cannot_start(tmp_path, monkeypatch):
    import gradio as gr

    def launch(port):
        def taken_meanwhile(*args, **kwargs):  # as Gradio says it when another server took the port after the check
            raise OSError(f"Cannot find empty port in range: {port}-{port}.")

        monkeypatch.setattr(gr.Blocks, "launch", taken_meanwhile)
        args = ["demo", "--port", str(port), "--workdir", str(tmp_path / "new" / "work"), "--models", str(tmp_path), "--json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout.splitlines()[0])["error"]
        if " is in use or not allowed (" in error:  # taken before the check: not the case under test
            raise_if_port_taken(port, error)
        return port, error

    port, error = on_a_free_port(launch)
    assert error == f"--port {port}: Cannot find empty port in range: {port}-{port}.; choose another --port"
    assert not (tmp_path / "new").exists()



SIGTERM_AT = """
import os, signal, sys, time
import gradio as gr
import magicanimate_cli.demo as demo_module
from magicanimate_cli.cli import entrypoint

def sigterm_now():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler's KeyboardInterrupt comes here

moment = sys.argv.pop(1)
if moment == "load":
    real_app = demo_module.DemoApp
    def loading(*args, **kwargs):
        sigterm_now()
        return real_app(*args, **kwargs)
    demo_module.DemoApp = loading
else:
    real_launch = gr.Blocks.launch
    def launched(self, *args, **kwargs):
        result = real_launch(self, *args, **kwargs)
        sigterm_now()
        return result
    gr.Blocks.launch = launched
sys.argv[0] = "magicanimate"
entrypoint()
"""


@pytest.mark.parametrize("moment", ["load", "launch"])
def test_a_sigterm_before_the_page_serves_takes_back_the_work_folder_and_the_port(moment, tmp_path):
    # systemd may stop the unit while it starts (the models load, or the page just launched): the
    # signal's handler is in place before anything is made, so nothing is left behind
    import subprocess

    def launch(port):
        args = ["demo", "--port", str(port), "--workdir", str(tmp_path / "new" / "work"), "--models", str(tmp_path / "none"), "--json"]
        done = subprocess.run([sys.executable, "-c", SIGTERM_AT, moment, *args], capture_output=True, text=True, timeout=120)
        if done.returncode == 2:
            raise_if_port_taken(port, json.loads(done.stdout.splitlines()[0])["error"])
        return port, done

    port, done = on_a_free_port(launch)
    assert done.returncode == 130, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["error"] == "interrupted"
    assert not (tmp_path / "new").exists()
    with socket.socket() as again:  # the page's server was closed: its port is free again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_a_sigterm_while_launch_waits_for_its_web_server_stops_that_server(tmp_path, monkeypatch):
    # launch() starts the web server in a thread and records it on the page only once it answers:
    # a signal in that wait must not leave it serving (its port bound) with nothing to close it
    import signal

    import gradio.http_server as http_server

    from magicanimate_cli.demo import demo

    servers = []
    real_run = http_server.Server.run

    def run(self, *args, **kwargs):  # the web server's thread: SIGTERM comes as it starts
        servers.append(self)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(http_server.Server, "run", run)

    def launch(port):
        with pytest.raises(KeyboardInterrupt):
            try:
                demo(models=tmp_path / "none", port=port, device="cpu", workdir=tmp_path / "new" / "work", on_ready=lambda url: pytest.fail(url))
            except UserError as exc:  # refused before its web server started
                raise_if_port_taken(port, str(exc))
                raise
        return port

    try:
        port = on_a_free_port(launch)
        assert len(servers) == 1
        servers[0].thread.join(timeout=10)
        assert not servers[0].thread.is_alive(), "the web server launch() started still serves"
    finally:
        for server in servers:
            server.should_exit = True
    assert not (tmp_path / "new").exists()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_a_cancelled_run_leaves_no_traceback_in_the_server_log(tmp_path):
    # the Cancel button (or a closed tab, or Ctrl-C) cancels the awaiting handler; the worker then
    # stops with Cancelled, which nobody awaits any more: asyncio must not log it as never retrieved
    import asyncio
    import gc

    from magicanimate_cli.demo import Cancelled, DemoApp

    demo_app = DemoApp.__new__(DemoApp)  # no models: the worker is a stand-in that stops as the real one does
    started = threading.Event()

    def _run_sync(cancel, gr_progress, *args):
        started.set()
        assert cancel.wait(timeout=30), "the worker was never told to stop"
        raise Cancelled()

    demo_app._run_sync = _run_sync
    logged = []

    async def cancel_a_run():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context["message"]))
        task = asyncio.ensure_future(demo_app.run(None, SOURCE_MOTION, None, None, None, *settings()))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        await asyncio.sleep(0.2)  # the worker's Cancelled reaches its future
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(cancel_a_run())
    gc.collect()
    assert logged == []


def test_stopping_the_page_during_a_run_waits_for_its_worker_before_removing_the_work_folder(tmp_path, monkeypatch):
    # Ctrl-C or SIGTERM while a run animates: the worker stops at its next progress report (a
    # denoising window can take longer than Gradio's 5-s wait for its server thread) and then writes
    # the run's record; the temporary work folder goes after that, not before (else that record
    # made the folder again and it was left behind)
    import gradio.http_server as http_server

    from magicanimate_cli.demo import Cancelled
    from magicanimate_cli.files import write_text

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    srv = start_on_a_free_port(models=tmp_path / "none", device="cpu")  # no models: the worker is a stand-in
    started, finished = threading.Event(), threading.Event()

    def _work(cancel, gr_progress, *args):
        run = srv.app._new_run()
        started.set()
        try:
            assert cancel.wait(timeout=30), "the worker was never told to stop"
            time.sleep(0.5)  # the rest of a denoising window
            write_text(run / "run.json", '{"status": "cancelled"}', replace=True)
            raise Cancelled()
        finally:
            finished.set()

    monkeypatch.setattr(srv.app, "_work", _work)
    monkeypatch.setattr(http_server.Server, "close", lambda self: setattr(self, "should_exit", True))  # as when Gradio's 5-s wait runs out
    workdir = srv.workdir
    try:
        job = Client(srv.url, verbose=False).submit(handle_file(str(FIXTURE / "inputs" / "reference.png")), SOURCE_MOTION, None, None, None,
                                                    *settings(), api_name="/animate")
        assert started.wait(timeout=60), job.status()
    finally:
        srv.close()
    assert finished.wait(timeout=30)
    assert not workdir.exists(), sorted(str(p) for p in workdir.rglob("*"))


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_a_runs_warning_is_its_own_not_in_the_servers_json(tmp_path, monkeypatch):
    # `demo --json` prints one result when the server stops: a browser user's warning (a motion that
    # is not DensePose) belongs to that run's page and run.json, not to the server's result, where
    # it named a file in a removed folder and piled up for the server's whole life
    import _thread
    import warnings

    import httpx

    from magicanimate_cli.demo import DemoApp
    from magicanimate_cli.errors import InputWarning

    def _work(self, cancel, gr_progress, *args):  # a stand-in for animate's warning about the motion
        warnings.warn("runs/0001/inputs/motion.mp4: does not look like DensePose", InputWarning, stacklevel=2)
        return None, None, "magicanimate animate ...", "**Done**"

    monkeypatch.setattr(DemoApp, "_work", _work)
    port, failed = free_port(), []

    def browse():
        try:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).status_code == 200:
                        break
                time.sleep(0.1)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            client.predict(handle_file(str(FIXTURE / "inputs" / "reference.png")), SOURCE_MOTION, None, None, None, *settings(), api_name="/animate")
        except Exception as exc:  # noqa: BLE001 - said by the test below
            failed.append(exc)
        finally:
            _thread.interrupt_main()  # Ctrl-C

    threading.Thread(target=browse, daemon=True).start()
    result = CliRunner().invoke(app, ["demo", "--models", str(tmp_path / "none"), "--device", "cpu", "--port", str(port), "--json"])
    assert not failed, failed
    assert result.exit_code == 0, result.output
    assert "warning: runs/0001/inputs/motion.mp4: does not look like DensePose" in result.stderr  # the server's log says it
    assert "warnings" not in json.loads(result.stdout.splitlines()[-1])
