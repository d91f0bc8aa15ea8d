"""Issue 12's promises, command by command: no input destroyed, no debris after kill -9, cut-off
videos refused, every bad input one line and exit 2. (animate's own cases: tests/animate/test_animate.py;
the atomic-write helper: tests/test_files.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError

from disk_helpers import run_on_small_disk, small_disk_available
from preprocess_helpers import make_video, write_clip

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


# ----------------------------------------------------------------------------- 1. outputs never touch inputs


def _cases(tmp_path: Path):
    clip = tmp_path / "clip"
    write_clip(clip, count=2)
    video = make_video(tmp_path / "v.mp4", count=4)
    frames = tmp_path / "frames"
    media.write_frames(frames, np.zeros((2, 16, 16, 3), np.uint8))
    return [
        ["flip", str(clip), "-o", str(clip / "images")],  # flip CLIP -o CLIP/images --overwrite
        ["flip", str(clip), "-o", str(clip)],
        ["flip", str(clip), "-o", str(tmp_path)],
        ["flip", str(clip), "-o", str(clip / "new")],
        ["crop", str(clip), "-o", str(clip / "masks")],
        ["crop", str(frames), "-o", str(frames / "00000.png")],
        ["crop", str(frames), "-o", str(frames / "sub")],
        ["crop", str(video), "-o", str(video)],
        ["frames", str(video), "-o", str(tmp_path)],
        ["frames", str(frames / "00000.png"), "-o", str(frames)],
    ]


def test_no_command_writes_an_output_that_is_inside_or_holds_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    for args in _cases(tmp_path):
        before = _tree(tmp_path)
        result = runner.invoke(app, [*args, "--overwrite"])
        assert result.exit_code == 2, (args, result.output)
        assert _tree(tmp_path) == before, args


@pytest.mark.parametrize("output_of", [lambda v: v.parent / v.stem, lambda v: v.parent])
def test_preprocess_never_replaces_a_folder_that_holds_its_input(tmp_path, output_of, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    holder = tmp_path / "out" / "talk"
    holder.mkdir(parents=True)
    video = make_video(holder / "talk.mp4", count=3)  # preprocess OUT/talk/talk.mp4 -o OUT would replace OUT/talk
    before = _tree(tmp_path)
    result = runner.invoke(app, ["preprocess", str(video), "-o", str(tmp_path / "out"), "--skip", "densepose,matte", "--overwrite"])
    assert result.exit_code == 2 and "input" in result.output
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------- 2. kill -9 leaves no debris for good


def _kill_when(cmd: list[str], ready, timeout: float = 120.0) -> None:
    process = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, "finished before it could be killed; make the input longer"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the job and its ffmpeg, as a scheduler's kill does
    finally:
        process.wait()


@pytest.mark.parametrize("command", ["frames", "preprocess"])
def test_kill_9_during_decode_leaves_nothing_the_next_run_does_not_clean(tmp_path, command):
    video = make_video(tmp_path / "talk.mp4", count=600, width=320, height=240, moving=True)
    out = tmp_path / "out"
    if command == "frames":
        cmd = [sys.executable, "-m", "magicanimate_cli", "frames", str(video), "-o", str(out)]
        partial_parent, name = tmp_path, ".out."
    else:
        cmd = [sys.executable, "-m", "magicanimate_cli", "preprocess", str(video), "-o", str(out), "--skip", "densepose,matte"]
        partial_parent, name = out / "talk", ".images."

    def partial_has_frames():
        if not partial_parent.is_dir():
            return False
        return any(p.name.startswith(name) and p.is_dir() and any(p.iterdir()) for p in partial_parent.iterdir())

    _kill_when(cmd, partial_has_frames)
    assert [p for p in partial_parent.iterdir() if p.name.startswith(name) and p.name.endswith(".partial")]  # the debris
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not [p for p in partial_parent.iterdir() if p.name.startswith(name)], "the next run cleans up"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_stops_a_command_as_ctrl_c_does(tmp_path, signum):
    # what Slurm's scancel or time limit, timeout, systemd (SIGTERM) and a dropped SSH session
    # (SIGHUP) send: "interrupted", exit 130, the temporaries removed; the default would kill the
    # process at once (exit 143 / 129, no JSON, its temporaries left for the next run)
    video = make_video(tmp_path / "talk.mp4", count=600, width=320, height=240, moving=True)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "magicanimate_cli", "frames", str(video), "-o", str(out), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".out.") and p.is_dir() and any(p.iterdir()) for p in tmp_path.iterdir()):
            assert process.poll() is None, "finished before the signal; make the input longer"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signum)  # to the command alone, not its ffmpeg
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    assert json.loads(stdout) == {"ok": False, "error": "interrupted", "exit_code": 130}
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]


def test_a_sighup_that_nohup_ignores_stays_ignored(tmp_path):
    video = make_video(tmp_path / "talk.mp4", count=60, width=160, height=120, moving=True)
    process = subprocess.Popen([sys.executable, "-m", "magicanimate_cli", "frames", str(video), "-o", str(tmp_path / "out"), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # as `nohup` starts it
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGHUP)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["ok"] and len(list((tmp_path / "out").iterdir())) == media.probe(video).frames


# ----------------------------------------------------------------------------- 6. cut-off videos


@pytest.fixture()
def half_mp4(tmp_path, rng):
    full = tmp_path / "full.mp4"
    media.write_frames(full, rng.integers(0, 256, (28, 64, 64, 3), dtype=np.uint8), fps=10)
    data = full.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])  # faststart: the header still promises 28 frames
    return half


def test_frames_refuses_a_truncated_video_unless_allowed(tmp_path, half_mp4):
    result = runner.invoke(app, ["frames", str(half_mp4), "-o", str(tmp_path / "f"), "--fps", "10"])
    assert result.exit_code == 2 and "half.mp4: truncated or damaged video" in result.output and "--allow-truncated" in result.output
    assert not (tmp_path / "f").exists() and _hidden(tmp_path) == []
    result = runner.invoke(app, ["frames", str(half_mp4), "-o", str(tmp_path / "f"), "--fps", "10", "--allow-truncated"])
    assert result.exit_code == 0
    assert 0 < len(media.list_frame_files(tmp_path / "f")) < 28


def test_crop_refuses_a_truncated_video_unless_allowed(tmp_path, half_mp4):
    result = runner.invoke(app, ["crop", str(half_mp4), "-o", str(tmp_path / "c.mp4"), "--size", "32"])
    assert result.exit_code == 2 and "half.mp4: truncated or damaged video" in result.output
    assert "crop, frames, matte and preprocess take --allow-truncated" in result.output and "`magicanimate frames --allow-truncated`" in result.output
    assert not (tmp_path / "c.mp4").exists() and _hidden(tmp_path) == []
    result = runner.invoke(app, ["crop", str(half_mp4), "-o", str(tmp_path / "c.mp4"), "--size", "32", "--fov", "32x32", "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert 0 < media.probe(tmp_path / "c.mp4").frames < 28


def test_preprocess_does_not_report_a_truncated_video_done(tmp_path, half_mp4):
    args = ["preprocess", str(half_mp4), "-o", str(tmp_path / "out"), "--skip", "densepose,matte", "--fps", "10", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "half.mp4: truncated or damaged video" in result.output
    result = runner.invoke(app, [*args, "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert 0 < len(media.list_frame_files(tmp_path / "out" / "half" / "images")) < 28


def test_reading_a_truncated_video_stops_with_its_name(half_mp4):
    with pytest.raises(UserError, match="half.mp4: truncated"):
        list(media.iter_frames(half_mp4))
    assert 0 < len(list(media.iter_frames(half_mp4, allow_truncated=True))) < 28
    full = half_mp4.with_name("full.mp4")
    assert len(list(media.iter_frames(full))) == 28  # a whole video passes


# ----------------------------------------------------------------------------- 7. full disks


small_disk = pytest.mark.skipif(not small_disk_available(), reason="no user namespaces here to mount a small tmpfs")


@pytest.fixture()
def noise_mp4(tmp_path, rng):
    """8 frames of noise: about 50 KB per PNG frame, too much for the small disks below."""
    return media.write_frames(tmp_path / "noise.mp4", rng.integers(0, 256, (8, 128, 128, 3), dtype=np.uint8), fps=25)


def _no_temporaries(files: dict) -> bool:
    return not any(Path(name).name.startswith(".") for name in files)


@small_disk
def test_frames_on_a_full_disk_names_the_output_not_the_video_and_keeps_the_old_one(noise_mp4):
    small = str(make_video(noise_mp4.with_name("small.mp4"), count=3, width=16, height=16))
    first, fresh, allowed, replacing = run_on_small_disk("200k", [
        {"args": ["frames", small, "-o", "fr"]},
        {"args": ["frames", str(noise_mp4), "-o", "new"]},
        {"args": ["frames", str(noise_mp4), "-o", "new", "--allow-truncated"]},  # the frames that fit are no video's fault
        {"args": ["frames", str(noise_mp4), "-o", "fr", "--overwrite", "--allow-truncated"]},
    ])
    assert first["rc"] == 0
    for result in (fresh, allowed, replacing):
        error = result["stderr"].strip().splitlines()[-1]
        assert result["rc"] == 2 and "Traceback" not in result["stderr"], result["stderr"]
        assert error.endswith("cannot write it (No space left on device); free space on that disk or choose an output on another one")
        assert "noise.mp4" not in error and "truncated" not in error
        assert not any(name.startswith("new") for name in result["files"]) and _no_temporaries(result["files"])
    assert "error: new: cannot write it" in fresh["stderr"] and "error: fr: cannot write it" in replacing["stderr"]
    assert replacing["files"] == first["files"]  # the old frames, as they were


@small_disk
def test_a_gif_whose_frames_cannot_be_stored_on_its_disk_is_refused_before_any_frame_is_cropped(noise_mp4):
    gif, mp4 = run_on_small_disk("300k", [  # 8 frames of 128² kept raw until the palette pass: 393 kB
        {"args": ["crop", str(noise_mp4), "-o", "c.gif", "--size", "128"]},
        {"args": ["crop", str(noise_mp4), "-o", "c.mp4", "--size", "128"]},  # encoded as it goes: it fits
    ])
    assert gif["rc"] == 2 and gif["stderr"].count("error:") == 1 and "Traceback" not in gif["stderr"], gif["stderr"]
    assert gif["stderr"].strip().startswith("error: c.gif: its 8 frames of 128x128 are kept uncompressed until the GIF is encoded, 393.22 kB, ")
    assert gif["files"] == {} and mp4["rc"] == 0 and set(mp4["files"]) == {"c.mp4"}


@small_disk
def test_a_full_disk_while_adding_a_kept_sound_is_an_error_not_a_silent_video(tmp_path):
    import subprocess

    loud = tmp_path / "loud.mov"  # a tiny picture and 2 s of PCM sound, which becomes about 50 KB of AAC
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=d=2:s=16x16:r=25", "-f", "lavfi", "-i",
                    "anoisesrc=d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(loud)], check=True)  # fmt: skip
    fits, _, full = run_on_small_disk("160k", [
        {"args": ["crop", str(loud), "-o", "room.mp4", "--size", "16"]},
        {"fill": 30_000},  # the picture fits, the picture with its sound does not
        {"args": ["crop", str(loud), "-o", "c.mp4", "--size", "16"]},
    ])
    assert media.audio_streams(loud) == ["pcm_s16le"] and fits["rc"] == 0
    assert full["rc"] == 2 and full["stderr"].count("error:") == 1 and "Traceback" not in full["stderr"], full["stderr"]
    assert "error: c.mp4: cannot write it (No space left on device)" in full["stderr"] and "warning" not in full["stderr"]
    assert set(full["files"]) == {"room.mp4", "filler"}


def test_writers_on_a_full_disk_say_so_in_one_line_naming_the_output(tmp_path, noise_mp4):
    clip = tmp_path / "clip"
    write_clip(clip, count=6, width=120, height=120)
    results = run_on_small_disk("160k", [
        {"fill": 20_000},
        {"args": ["crop", str(noise_mp4), "-o", "c.mp4", "--size", "128"]},  # an encoder's output
        {"args": ["crop", str(clip), "-o", "cropped", "--size", "120"]},  # PNGs written by Pillow
        {"args": ["flip", str(clip), "-o", "flipped"]},
        {"args": ["preprocess", str(noise_mp4), "-o", "pp", "--skip", "densepose,matte", "--json"]},
        {"fill": 0},
        {"args": ["preprocess", str(noise_mp4), "-o", "pp2", "--skip", "densepose,matte"]},  # not even its meta.json fits
    ])
    _, crop_video, crop_clip, flip, prep, _, refused = results
    for result, output in ((crop_video, "c.mp4"), (crop_clip, "cropped/images"), (flip, "flipped")):
        assert result["rc"] == 2 and result["stderr"].count("error:") == 1 and "Traceback" not in result["stderr"], result["stderr"]
        assert f"error: {output}: cannot write it (No space left on device)" in result["stderr"]
        assert set(result["files"]) == {"filler"}
    assert prep["rc"] == 1 and "No space left on device" in prep["stdout"]
    assert refused["rc"] == 2 and refused["stderr"].strip().endswith("pp2/noise/meta.json: cannot write it (No space left on device); "
                                                                      "free space on that disk or choose an output on another one")
    assert not any(name.startswith("pp2") for name in refused["files"])  # no new empty folders
    failure = json.loads(prep["stdout"])["clips"][0]
    assert failure["status"] == "failed" and "noise/.work/full/images: cannot write it (No space left on device)" in failure["errors"]["frames"]



@small_disk
def test_a_full_disk_while_a_video_is_still_being_read_is_one_line_not_an_abort(tmp_path, rng):
    # the frames folder fills the disk after a few frames, while ffmpeg still decodes the video: the
    # reader left suspended aborted Python at exit ("Fatal Python error: _enter_buffered_busy", exit -6)
    media.write_frames(tmp_path / "in.mp4", rng.integers(0, 256, (30, 96, 128, 3), dtype=np.uint8))
    folder, gif = run_on_small_disk("300k", [
        {"args": ["crop", str(tmp_path / "in.mp4"), "-o", "out", "--size", "128"]},
        {"args": ["crop", str(tmp_path / "in.mp4"), "-o", "out.gif", "--size", "128"]},
    ])
    for result in (folder, gif):
        assert result["rc"] == 2 and "Fatal Python error" not in result["stderr"], result["stderr"]
        assert result["files"] == {}
    assert folder["stderr"].strip().splitlines()[-1] == ("error: out: cannot write it (No space left on device); "
                                                         "free space on that disk or choose an output on another one")
    # a GIF's frames, kept uncompressed until it is encoded, are now weighed against the disk before any is read
    assert gif["stderr"].strip().splitlines()[-1].startswith("error: out.gif: its 30 frames of 128x128 are kept uncompressed")

@small_disk
def test_animate_on_a_full_disk_names_its_output(tmp_path, tiny_weights, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    motion = make_video(tmp_path / "motion.mp4", count=4, width=64, height=64)
    args = ["animate", str(reference), str(motion), "-o", "out.mp4", "--models", str(tiny_weights), "--steps", "1", "--size", "64"]
    _, result = run_on_small_disk("100k", [{"fill": 4_000}, {"args": [*args, "--device", "cpu"]}])  # less than one fitted frame
    assert result["rc"] == 2 and "Traceback" not in result["stderr"], result["stderr"]
    assert result["stderr"].strip().splitlines()[-1] == (
        "error: out.mp4: cannot write it (No space left on device); free space on that disk or choose an output on another one"
    )
    assert set(result["files"]) == {"filler"}


def test_a_file_size_limit_that_kills_ffmpeg_names_the_output(tmp_path, noise_mp4):
    import resource

    def limited():  # `ulimit -f 8`: ffmpeg is killed by SIGXFSZ (subprocesses get the default action back)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    for args, output in ((["frames", str(noise_mp4), "-o", "fr"], "fr"), (["crop", str(noise_mp4), "-o", "c.mp4", "--size", "128"], "c.mp4")):
        done = subprocess.run([sys.executable, "-m", "magicanimate_cli", *args], cwd=tmp_path, capture_output=True, text=True, preexec_fn=limited)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: {output}: cannot write it (File too large); choose an output on a disk whose file system takes larger files, "
            "or raise the file-size limit (ulimit -f)"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.mp4"]


# ----------------------------------------------------------------------------- 8. long names, places that cannot be written


def test_the_longest_names_work_and_a_longer_one_is_refused_before_anything_is_made(tmp_path):
    video = make_video(tmp_path / "v.mp4", count=3, width=16, height=16)
    longest = "c" * 255
    result = runner.invoke(app, ["frames", str(video), "-o", str(tmp_path / longest)])
    assert result.exit_code == 0, result.output
    assert len(media.list_frame_files(tmp_path / longest)) == 3 and _hidden(tmp_path) == []
    result = runner.invoke(app, ["frames", str(video), "-o", str(tmp_path / "new" / ("d" * 256) / "fr")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "a name of 256 bytes, longer than the 255 its file system takes; choose a shorter one" in result.output
    assert not (tmp_path / "new").exists()


def test_preprocess_refuses_a_clip_name_too_long_for_its_mirror_before_any_work(tmp_path):
    video = make_video(tmp_path / ("v" * 251 + ".mp4"), count=3, width=16, height=16)  # the clip v…v fits, v…v_flip does not
    result = runner.invoke(app, ["preprocess", str(video), "-o", str(tmp_path / "pp"), "--skip", "densepose,matte", "--flip"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "_flip: a name of 256 bytes" in result.output and f"rename {video} (its clip folder takes its name)" in result.output
    assert not (tmp_path / "pp").exists()


def test_a_refused_run_leaves_no_new_empty_folders(tmp_path):
    video = make_video(tmp_path / "v.mp4", count=3, width=16, height=16)
    (tmp_path / "ref.png").write_text("not an image")
    cases = [
        ["crop", str(video), "-o", str(tmp_path / "new" / "sub" / "c.mp4"), "--box", "0,0,99,99"],
        ["animate", str(tmp_path / "ref.png"), str(video), "-o", str(tmp_path / "new" / "a.mp4"), "--models", str(tmp_path / "models")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1, (args, result.output)
        assert not (tmp_path / "new").exists(), args


def test_an_output_under_a_file_is_one_line_and_exit_2(tmp_path):
    video = make_video(tmp_path / "v.mp4", count=3, width=16, height=16)
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["frames", str(video), "-o", str(tmp_path / "afile" / "fr")])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path / 'afile' / 'fr'}: {tmp_path / 'afile'} is a file, not a folder; choose another output\n"
    result = runner.invoke(app, ["preprocess", str(video), "-o", str(tmp_path / "afile" / "pp"), "--skip", "densepose,matte"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output == f"error: {tmp_path / 'afile' / 'pp' / 'v'}: {tmp_path / 'afile'} is a file, not a folder; choose another output\n"


@pytest.fixture()
def as_nobody(tmp_path):
    """Run a Python snippet as an unprivileged user (root ignores file permissions), in a folder it may write."""
    if os.geteuid() != 0:
        runner_prefix = []
    elif shutil.which("setpriv"):
        runner_prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    shared = Path(tempfile.mkdtemp(prefix="ma-perm-"))
    shared.chmod(0o777)

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([*runner_prefix, sys.executable, "-c", code], cwd=shared, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(shared)})

    probe = run("import magicanimate_cli.files")
    if probe.returncode != 0:
        shutil.rmtree(shared, ignore_errors=True)
        pytest.skip(f"the unprivileged user cannot import the package here: {probe.stderr.strip()[-200:]}")
    yield shared, run
    subprocess.run(["chmod", "-R", "u+rwx", str(shared)], check=False)
    shutil.rmtree(shared, ignore_errors=True)


def test_replacing_a_read_only_output_folder_leaves_nothing_behind(as_nobody):
    shared, run = as_nobody
    done = run(
        "from pathlib import Path\n"
        "from magicanimate_cli import files\n"
        "final = Path('out'); (final / 'sub').mkdir(parents=True); (final / 'sub' / 'a.png').write_text('old')\n"
        "(final / 'sub').chmod(0o555); final.chmod(0o555)\n"
        "tmp = files.temp_beside(final); (tmp / 'b.png').write_text('new')\n"
        "files.commit(tmp, final, replace=True)\n"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in shared.iterdir() if p.name != ".cache") == ["out"]
    assert [p.name for p in (shared / "out").iterdir()] == ["b.png"]


def test_an_output_in_a_read_only_folder_is_one_line_and_exit_2(as_nobody, tmp_path):
    shared, run = as_nobody
    video = make_video(shared / "v.mp4", count=3, width=16, height=16)
    (shared / "locked").mkdir()
    (shared / "locked").chmod(0o555)
    for args in (["frames", "v.mp4", "-o", "locked/fr"], ["preprocess", "v.mp4", "-o", "locked/pp", "--skip", "densepose,matte"]):
        done = run(f"import sys; from magicanimate_cli.cli import app; sys.argv = ['magicanimate', *{args!r}]; app()")
        assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
        assert "locked" in done.stderr and "ermission denied" in done.stderr
    assert video.exists() and list((shared / "locked").iterdir()) == []


def test_an_input_this_user_may_not_read_is_one_line_saying_permission_denied(as_nobody):
    # a real EACCES (as nobody): it said "not a readable image (PermissionError); pass a PNG or JPEG",
    # "ffmpeg cannot read this video (Could not load meta information)", or of a sound "has no sound"
    shared, run = as_nobody
    make_video(shared / "v.mp4", count=3, width=16, height=16)
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-t", "1", "-i", "sine", str(shared / "s.wav")], check=True)
    media.write_frames(shared / "fr", np.zeros((2, 16, 16, 3), np.uint8))
    media.write_png(shared / "p.png", np.zeros((16, 16, 3), np.uint8), replace=False)
    for name in ("v.mp4", "s.wav", "fr", "p.png"):
        (shared / name).chmod(0)
    for args in (["crop", "p.png", "-o", "o.png"], ["frames", "v.mp4", "-o", "o"], ["crop", "fr", "-o", "o.mp4"]):
        done = run(f"import sys; from magicanimate_cli.cli import app; sys.argv = ['magicanimate', *{args!r}]; app()")
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"error: {args[1]}: permission denied: this user may not ") and "chmod +r" in done.stderr, done.stderr
    calls = "media.read_image('p.png')", "media.probe(Path('v.mp4'))", "media.list_frame_files('fr')", "media.check_audio_source('s.wav')"
    for call in calls:  # the library's readers, without the command's check of its inputs (ffmpeg's own refusal for the video)
        done = run(f"from pathlib import Path\nfrom magicanimate_cli import media\ntry:\n    {call}\nexcept Exception as exc:\n    print(exc)\n")
        name = call.split("'")[1]
        assert done.stdout.startswith(f"{name}: permission denied: this user may not ") and "run as a user who may" in done.stdout, (call, done.stdout)
    assert sorted(p.name for p in shared.iterdir() if not p.name.startswith(".")) == ["fr", "p.png", "s.wav", "v.mp4"]


# ----------------------------------------------------------------------------- smaller problems


def test_a_decompression_bomb_is_exit_2_in_one_line(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    monkeypatch.setattr(media.images, "MAX_PIXELS", 2000)  # 10 000 pixels: over the limit, as a real bomb is
    result = runner.invoke(app, ["crop", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "out.png"), "--size", "16"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "bomb.png: image too large" in result.output and "resize it below 2000 pixels" in result.output


@pytest.mark.filterwarnings("error")
def test_a_large_photo_under_the_bomb_limit_is_read_without_pillows_warning(tmp_path, monkeypatch):
    # 89-179 megapixels (a 100 MP phone photo) make Pillow warn on stderr; the image is read all the same
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1 600 pixels: over Pillow's limit, under twice it
    monkeypatch.setattr(media.images, "MAX_PIXELS", 2000)
    assert media.read_image(tmp_path / "large.png").shape == (40, 40, 3)


@pytest.mark.filterwarnings("error")
def test_a_200_megapixel_photo_is_read_and_pillows_own_limit_is_left_as_it_was(tmp_path, monkeypatch):
    # a 200 MP phone's photo (16320x12240) is over Pillow's 179 MP refusal; one bit per pixel keeps the test small
    Image.new("1", (16320, 12240), 1).save(tmp_path / "photo.png")
    before = Image.MAX_IMAGE_PIXELS
    with media.open_image(tmp_path / "photo.png") as image:
        assert image.size == (16320, 12240) and image.getpixel((16319, 12239)) == 255
    assert Image.MAX_IMAGE_PIXELS == before
    media.check_frame_sizes(tmp_path)  # reads the header without refusing it either
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a caller that switched the guard off keeps it off
    with media.open_image(tmp_path / "photo.png") as image:
        assert image.size == (16320, 12240)
    assert Image.MAX_IMAGE_PIXELS is None


def test_a_path_with_a_newline_does_not_split_the_message(tmp_path):
    strange = tmp_path / "a\nb.mp4"
    result = runner.invoke(app, ["frames", str(strange), "-o", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "a\\nb.mp4" in result.output


def test_flip_refuses_subfolders_of_different_lengths_and_foreign_labels(tmp_path):
    clip = tmp_path / "clip"
    write_clip(clip, count=3)
    (clip / "masks" / "00002.png").unlink()
    result = runner.invoke(app, ["flip", str(clip), "-o", str(tmp_path / "flipped")])
    assert result.exit_code == 2 and "different numbers of frames" in result.output and "masks/ 2" in result.output
    other = tmp_path / "other"
    write_clip(other, count=2)
    labels = np.asarray(Image.open(other / "densepose_labels" / "00001.png")).copy()
    labels[0, 0] = 30
    Image.fromarray(labels).save(other / "densepose_labels" / "00001.png")
    result = runner.invoke(app, ["flip", str(other), "-o", str(tmp_path / "flipped")])
    assert result.exit_code == 2 and "00001.png: holds the value 30" in result.output
    assert not (tmp_path / "flipped").exists() and _hidden(tmp_path) == []


def test_offline_download_leaves_no_empty_folders(tmp_path):
    pytest.importorskip("yt_dlp")
    target = tmp_path / "new" / "videos"
    result = runner.invoke(app, ["download", "http://127.0.0.1:9/talk.mp4", "-o", str(target), "--retries", "0", "--json"])
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["frames", "{video}", "-o", "out", "--fps", "1e12"], "--fps 1e+12: must be a number of frames per second from 0.01 to 1000"),
        (["animate", "{image}", "{video}", "-o", "out.mp4", "--fps", "1e-300"], "--fps 1e-300: must be a number of frames per second from 0.01"),
        (["crop", "{video}", "-o", "out.mp4", "--fov", "99999x99999", "--size", "0"], "--fov 99999x99999: frames of that size are written here; at most 8192"),
        (["preprocess", "{video}", "-o", "out", "--fov", "14000x14000", "--size", "64"], "--fov 14000x14000: frames of that size are written here"),
        (["crop", "{video}", "-o", "out.mp4", "--box", "inf,0,10,10"], "--box inf,0,10,10: expected four numbers"),
        (["align", "{image}", "{video}", "-o", "out.mp4", "--ref-box", "0,0,1e400,10"], "--ref-box 0,0,1e400,10: expected four numbers x0,y0,x1,y1 (pixels of the reference"),
        (["serve", "--socket", "s.sock", "--idle-timeout", "inf"], "--idle-timeout inf: must be a number of seconds above 0, at most"),
        (["models", "download", "--models", "", "--dry-run"], '--models "": an empty weights folder (an unset shell variable?)'),
        (["download", "https://example.org/v.mp4", "-o", "dl", "--end", "0"], "--start 0 --end 0: the end must come after the start"),
        (["crop", "{image}", "-o", "out.png", "--size", "100000000"], "--size 100000000: must be 0 (keep the region) or from 8 to 8192"),
        (["align", "{image}", "{video}", "-o", "out.mp4", "--size", "80000"], "--size 80000: must be a multiple of 8 from 64 to 2048"),
        (["animate", "{image}", "{video}", "-o", "out.mp4", "--size", "99999992"], "--size 99999992: must be a multiple of 8 from 64 to 2048"),
        (["animate", "{image}", "{video}", "-o", "out.mp4", "--fps", "1e12"], "--fps 1e+12: must be a number of frames per second"),
        (["animate", "{image}", "{video}", "-o", "out.mp4", "--seed", str(2**64)], f"--seed {2**64}: choose a whole number from 0 to {2**64 - 1}"),
        (["animate", "{image}", "{video}", "-o", "out.mp4", "--seed", "-1"], "--seed -1: choose a whole number from 0"),
    ],
)
def test_absurd_sizes_rates_and_seeds_are_exit_2_before_any_work(tmp_path, monkeypatch, args, message):
    """Before, these ran out of memory (exit 1, or killed by the kernel), overflowed after the
    models loaded, or made ffmpeg fail at the end blaming the video."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "clip.mp4", np.zeros((3, 32, 32, 3), np.uint8), fps=25)
    before = sorted(tmp_path.iterdir())
    result = runner.invoke(app, [arg.format(video="clip.mp4", image="ref.png") for arg in args])
    assert result.exit_code == 2 and result.output.startswith(f"error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1 and sorted(tmp_path.iterdir()) == before
