"""The command line as users and batch scripts meet it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app

runner = CliRunner()


def test_help_does_not_import_the_heavy_libraries():
    code = "import sys, magicanimate_cli.cli; print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'paddle') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_animate_options():
    result = runner.invoke(app, ["animate", "--help"])
    assert result.exit_code == 0
    for option in ("--models", "--steps", "--guidance-scale", "--seed", "--size", "--context-frames",
                   "--context-overlap", "--device", "--dtype", "--fps", "--start", "--end", "--grid", "--overwrite", "--json", "--fit"):
        assert option in result.output


@pytest.fixture()
def inputs(tmp_path, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    poses = tmp_path / "poses"
    poses.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(poses / f"{i:05d}.png")
    return reference, poses


def animate(tmp_path, weights, *extra):
    """``animate`` on the ``inputs``, on CPU (with ``--devices``: on those)."""
    reference, poses = tmp_path / "ref.png", tmp_path / "poses"
    device = () if "--devices" in extra else ("--device", "cpu")
    cmd = [sys.executable, "-m", "magicanimate_cli", "animate", str(reference), str(poses), "--models", str(weights),
           "--size", "64", "--steps", "1", *device, *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_json_result_is_one_parseable_object(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "out.mp4"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["frames"] == 2 and result["device"] == "cpu" and result["dtype"] == "float32"
    assert (tmp_path / "out.mp4").is_file()


def test_a_motion_that_is_not_densepose_is_one_warning_line_and_listed_in_the_json(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "out.mp4"), "--json")  # the poses are random noise
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"warning: {tmp_path / 'poses'}: does not look like DensePose") and "magicanimate densepose" in line
    assert json.loads(proc.stdout)["warnings"] == [line.removeprefix("warning: ")]


def test_refuses_to_overwrite_with_exit_2_and_one_line(tmp_path, inputs, tiny_weights):
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "out.mp4"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "out.mp4").read_bytes() == b"keep me"


def test_missing_models_exit_2_with_the_fix(tmp_path, inputs):
    proc = animate(tmp_path, tmp_path / "nowhere", "-o", str(tmp_path / "out.mp4"), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout) == {"ok": False, "error": json.loads(proc.stdout)["error"], "exit_code": 2}
    assert "magicanimate models download" in proc.stderr and "Traceback" not in proc.stderr


def test_audio_start_reaches_animate_as_typed(tmp_path, inputs):
    reference, poses = inputs
    result = runner.invoke(app, ["animate", str(reference), str(poses), "-o", str(tmp_path / "out.mp4"), "--audio-start", "1:05"])
    assert result.exit_code == 2 and result.stderr == "error: --audio-start 1:05: only with --audio (the file whose sound the output gets)\n"
    assert not (tmp_path / "out.mp4").exists()


def test_a_part_of_the_motion_is_animated_and_said_in_the_json(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "out.mp4"), "--start", "0.04", "--end", "1:00", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # 2 frames at 25 fps: the second, to the motion's end
    assert (result["frames"], result["fps"], result["start"], result["end"], result["first_frame"]) == (1, 25, 0.04, 0.08, 1)
    assert media.probe(tmp_path / "out.mp4").frames == 1


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (["--start", "1", "--end", "0.5"], "--start 1 --end 0.5: the end must come after the start"),
        (["--start", "0:05"], "--start 0:05: {poses} is 0.08 s long (2 frames at 25 fps), its last frame at 0.04 s; give a --start of 0.04 or less"),
        (["--start", "0.01", "--end", "0.02"], "--start 0.01 --end 0.02: no frame of {poses} (25 fps) lies between them; make the part at "
                                               "least 0.04 s long (one frame)"),
    ],
)  # fmt: skip
def test_a_part_that_cannot_be_is_exit_2_and_one_line(tmp_path, inputs, tiny_weights, part, message):
    reference, poses = inputs
    result = runner.invoke(app, ["animate", str(reference), str(poses), "-o", str(tmp_path / "out.mp4"), "--models", str(tiny_weights),
                                 "--device", "cpu", "--size", "64", *part])  # fmt: skip
    assert result.exit_code == 2 and result.stderr == f"error: {message.format(poses=poses)}\n"
    assert not (tmp_path / "out.mp4").exists()


def test_bad_motion_exit_2(tmp_path, inputs, tiny_weights):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    reference = tmp_path / "ref.png"
    cmd = [sys.executable, "-m", "magicanimate_cli", "animate", str(reference), str(bad), "-o", str(tmp_path / "o.mp4"),
           "--models", str(tiny_weights)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.mp4" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path, inputs):
    cmd = [sys.executable, "-m", "magicanimate_cli", "--debug", "animate", str(tmp_path / "ref.png"), str(tmp_path / "poses"),
           "-o", str(tmp_path / "o.mp4"), "--models", str(tmp_path / "nowhere")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("magicanimate ")


def test_usage_errors_are_one_line_and_json():
    cmd = [sys.executable, "-m", "magicanimate_cli", "animate", "a.png", "b.mp4", "-o", "z.mp4", "--steps", "abc", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["ok"] is False
    assert proc.stderr.strip().count("\n") == 0 and "--steps" in proc.stderr
    # after "--" a word is an argument: a file named --json asks for no JSON
    cmd = [sys.executable, "-m", "magicanimate_cli", "crop", "-o", "z.png", "--size", "abc", "--", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "" and "--size" in proc.stderr


def test_one_gpu_in_devices_is_that_device_and_mixed_lists_are_refused(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "o.mp4"), "--devices", "cuda:0,cpu", "--json")
    assert proc.returncode == 2 and "not a mix" in json.loads(proc.stdout)["error"]
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "o.mp4"), "--devices", "0", "--json")
    assert proc.returncode == 2 and "no CUDA device" in json.loads(proc.stdout)["error"]  # no GPU here: a clear error


@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_a_device_beside_devices_is_refused_not_ignored(tmp_path, inputs, device):
    # --devices puts each process on its own entry: --device was dropped without a word; refused
    # in one line, before the weights are even looked at (there are none here)
    reference, poses = inputs
    cmd = [sys.executable, "-m", "magicanimate_cli", "animate", str(reference), str(poses), "-o", str(tmp_path / "o.mp4"),
           "--models", str(tmp_path / "no-weights"), "--device", device, "--devices", "cpu,cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"--device {device} --devices cpu,cpu: --devices names the device of each process; leave --device out" in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_a_video_format_that_is_not_written_is_refused_before_any_work(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "o.avi"), "--json")
    assert proc.returncode == 2 and "cannot write .avi video; use one of .gif, .m4v, .mkv, .mov, .mp4, .webm, .webp" in json.loads(proc.stdout)["error"]


@pytest.mark.parametrize("name, kind", [("o.gif", "a GIF"), ("o.webp", "an animated WebP")])
def test_sound_for_an_output_that_holds_none_is_refused_before_any_work(tmp_path, inputs, tiny_weights, name, kind):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / name), "--audio", str(dance))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert f"{tmp_path / name}: {kind} holds no sound; write o.mp4 or o.webm to give it --audio" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "poses", "ref.png"]


@pytest.mark.parametrize(
    "command, message",
    [
        (["animate", "ref.png", "poses"], "this writes every frame; pass a video (out.mp4) or a folder (out/)"),
        (["align", "ref.png", "poses"], "this writes every frame; pass a video (out.mp4) or a folder (out/)"),
        (["crop", "poses"], "this writes every frame; pass a video (out.mp4) or a folder (out/)"),
        (["crop", "clip"], "a clip folder crops into a clip folder; give -o a folder name, not an image"),
        (["flip", "clip"], "flip writes a clip folder; give -o a folder name (e.g. clip_flip)"),
    ],
)
def test_an_image_name_for_many_frames_is_refused(tmp_path, inputs, command, message, monkeypatch):
    # `-o out.png` made a folder named out.png
    from preprocess_helpers import write_clip

    write_clip(tmp_path / "clip", count=2)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "-o", "out.png"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_a_network_failure_is_one_line_exit_1_without_the_bug_hint(tmp_path, monkeypatch):
    from magicanimate_cli import frames
    from magicanimate_cli.errors import NetworkError

    def offline(*args, **kwargs):
        raise NetworkError("https://example.org/w.zip: download failed, no answer from the server; put the file at m/w yourself")

    monkeypatch.setattr(frames, "frames", offline)
    result = runner.invoke(app, ["frames", "v.mp4", "-o", "out"])
    assert result.exit_code == 1
    assert result.output == "error: https://example.org/w.zip: download failed, no answer from the server; put the file at m/w yourself\n"
    result = runner.invoke(app, ["frames", "v.mp4", "-o", "out", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout.splitlines()[0])["exit_code"] == 1


def test_too_long_windows_are_a_user_error(tmp_path, inputs, tiny_weights):
    proc = animate(tmp_path, tiny_weights, "-o", str(tmp_path / "o.mp4"), "--context-frames", "32", "--json")
    assert proc.returncode == 2 and "at most 24" in json.loads(proc.stdout)["error"]


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [(), ("animate",), ("preprocess",), ("download",), ("models", "convert"), ("batch",)])
def test_help_shows_no_type_placeholder_on_flags(command):
    text = _help(*command)
    assert "<bool>" not in text and "list[" not in text and "{REF" not in text and "{INPUT" not in text


def test_usage_lines_read_like_the_readme():
    assert "Usage: magicanimate animate [OPTIONS] REF MOTION" in _help("animate")
    assert "Usage: magicanimate preprocess [OPTIONS] INPUT..." in _help("preprocess")
    assert "Usage: magicanimate download [OPTIONS] [URL_OR_ID...]" in _help("download")


def test_convert_overwrite_help_names_what_it_replaces():
    text = _help("models", "convert")
    assert "OUTPUT" not in text and "temporal_attention.safetensors" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_and_after_the_command(tmp_path, where):
    args = ["animate", str(tmp_path / "missing.png"), str(tmp_path), "-o", str(tmp_path / "out.mp4")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    proc = subprocess.run([sys.executable, "-m", "magicanimate_cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_without_debug_an_input_error_is_one_line(tmp_path):
    args = ["animate", str(tmp_path / "missing.png"), str(tmp_path), "-o", str(tmp_path / "out.mp4")]
    proc = subprocess.run([sys.executable, "-m", "magicanimate_cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_only_a_debug_before_a_double_dash_is_the_option():
    from magicanimate_cli.cli import _debug_first

    assert _debug_first(["animate", "a", "--debug", "--", "--debug"]) == ["--debug", "animate", "a", "--", "--debug"]
    assert _debug_first(["animate", "--", "--debug"]) == ["animate", "--", "--debug"]


def _leaf_commands(group=None, prefix=""):
    import typer

    group = group or typer.main.get_command(app)
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        if hasattr(command, "list_commands"):
            yield from _leaf_commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def _library_function(command):
    """The library function a CLI command calls: the ``from .X import Y as run`` in its body."""
    import importlib
    import inspect
    import re

    found = re.findall(r"from \.([\w.]+) import (\w+) as run\n", inspect.getsource(command.callback))
    assert len(found) == 1, command.name
    module, name = found[0]
    return getattr(importlib.import_module(f"magicanimate_cli.{module}"), name)


@pytest.mark.parametrize("name, command", list(_leaf_commands()), ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_is_a_keyword_of_the_library_function_with_its_default(name, command):
    # the CLI is the library's signature spelled as options: same names, same defaults, nothing
    # dropped on the way (`batch`, `serve`, `demo` and `doctor` included, which no batch task covers)
    import inspect
    import typing

    function = _library_function(command)
    parameters = inspect.signature(function).parameters
    hints = typing.get_type_hints(function)
    for param in command.params:
        if param.name == "as_json":  # the CLI's own output switch
            continue
        assert param.name in parameters, f"{name}: --{param.name} is not a keyword of {function.__name__}"
        default = parameters[param.name].default
        if param.required:
            assert default is inspect.Parameter.empty, f"{name}: {param.name}"
        elif default is inspect.Parameter.empty:  # optional on the command line: the library takes None
            assert param.default is None and type(None) in typing.get_args(hints[param.name]), f"{name}: {param.name}"
        else:
            assert param.default == default, f"{name}: {param.name} defaults to {param.default!r}, the library's to {default!r}"


def test_an_unexpected_error_spanning_lines_is_still_one_line(tmp_path, monkeypatch):
    # a library's multi-line message (tokenizers, say) must not break the one-line rule
    import magicanimate_cli.frames

    def fails(*args, **kwargs):
        raise RuntimeError("failed to extract\n  enum PyVocab\nsecond line")

    monkeypatch.setattr(magicanimate_cli.frames, "frames", fails)
    result = runner.invoke(app, ["frames", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "RuntimeError: failed to extract\\n  enum PyVocab\\nsecond line (run with --debug for the traceback)"
    assert result.stderr.count("\n") == 1


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_a_run_that_warned_and_then_failed_lists_the_warning_in_its_json_failure(tmp_path, monkeypatch):
    import warnings

    import magicanimate_cli.frames
    from magicanimate_cli.errors import InputWarning, UserError

    def warns_then_fails(*args, **kwargs):
        warnings.warn("out/: written without the sound of in.mkv", InputWarning, stacklevel=2)
        raise UserError("in.mp4: cut off after 3 frames; pass --allow-truncated")

    monkeypatch.setattr(magicanimate_cli.frames, "frames", warns_then_fails)
    result = runner.invoke(app, ["frames", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["warning: out/: written without the sound of in.mkv",
                                          "error: in.mp4: cut off after 3 frames; pass --allow-truncated"]
    assert json.loads(result.stdout) == {"ok": False, "error": "in.mp4: cut off after 3 frames; pass --allow-truncated", "exit_code": 2,
                                         "warnings": ["out/: written without the sound of in.mkv"]}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_result_that_cannot_be_printed_is_one_line_on_stderr(tmp_path):
    # stdout on a full disk (here /dev/full): the error, or the result, is said in one line on
    # stderr, exit 2, never a traceback
    with open("/dev/full", "w") as full:
        for args, first in ((["frames", str(tmp_path / "nothing.mp4"), "-o", str(tmp_path / "x")], "error: "),
                            (["doctor"], None)):
            done = subprocess.run([sys.executable, "-m", "magicanimate_cli", *args, "--json"], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=300)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert lines[-1] == "error: the result could not be written to standard output (No space left on device)"
            if first:
                assert lines[0].startswith(first) and "nothing.mp4: no such file" in lines[0]


def test_a_name_the_terminals_encoding_lacks_is_escaped_not_a_crash(tmp_path):
    from magicanimate_cli import media

    video = tmp_path / "mötiön.mp4"
    media.write_frames(video, np.zeros((2, 16, 16, 3), np.uint8))
    done = subprocess.run([sys.executable, "-m", "magicanimate_cli", "frames", str(video), "-o", str(tmp_path / "fräмes")],
                          capture_output=True, text=True, encoding="ascii", errors="strict", timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "fr\\xe4\\u043ces" in done.stdout and len(list((tmp_path / "fräмes").iterdir())) == 2


def test_json_with_stdout_closed_is_refused_before_any_work(tmp_path):
    # `magicanimate frames v.mp4 -o x --json >&-`: Python gives no sys.stdout, the result was lost and the exit was 0
    from magicanimate_cli import media

    media.write_frames(tmp_path / "in.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    args = [sys.executable, "-m", "magicanimate_cli", "frames", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out")]
    closed = subprocess.run(["sh", "-c", '"$@" >&-', "sh", *args, "--json"], stderr=subprocess.PIPE, text=True, timeout=300)
    assert closed.returncode == 2 and closed.stderr == "error: --json: standard output is closed, so the result would be lost; redirect it (> result.json)\n"
    assert not (tmp_path / "out").exists()
    humans = subprocess.run(["sh", "-c", '"$@" >&-', "sh", *args], stderr=subprocess.PIPE, text=True, timeout=300)
    assert humans.returncode == 0, humans.stderr  # without --json nothing is lost: the frames are the result
    assert len(media.list_frame_files(tmp_path / "out")) == 2


def test_a_quoted_tilde_is_the_home_folder_as_in_batch_manifests(tmp_path, monkeypatch):
    # `-o "~/x"` from a script, a Makefile or a config reaches us unexpanded: it made a folder
    # named `~` here (one `rm -rf ~` away from a disaster), while batch and --models expanded it
    from magicanimate_cli import media

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    media.write_frames(home / "in.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["frames", "~/in.mp4", "-o", "~/out", "--json"], env={"HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == str(home / "out") and len(list((home / "out").iterdir())) == 2
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command", ["frames", "crop", "animate", "densepose", "download"])
def test_an_empty_output_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, command):
    # `-o "$OUT"` with OUT unset: Path("") is ".", which wrote (or replaced, with --overwrite) the current folder
    from magicanimate_cli import media

    media.write_frames(tmp_path / "in.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    inputs = {"animate": [str(tmp_path / "in.mp4"), str(tmp_path / "in.mp4")], "download": ["https://example.invalid/v.mp4"]}
    result = runner.invoke(app, [command, *inputs.get(command, [str(tmp_path / "in.mp4")]), "-o", "", "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].startswith('-o "": an empty output path')
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command", [["preprocess", ""], ["frames", ""], ["animate", "", "motion.mp4"], ["eval", "", "gt"]])
def test_an_empty_input_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, command):
    # `magicanimate preprocess "$VIDEOS"` with VIDEOS unset preprocessed every video of the current folder
    from magicanimate_cli import media

    media.write_frames(tmp_path / "talk.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    output = ["-o", str(tmp_path / "out")] if command[0] != "eval" else []
    result = runner.invoke(app, [*command, *output, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"].startswith('"": an empty input path')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["batch", ""], '"": an empty input path'),
        (["batch", "tasks.jsonl", "--state", ""], '--state "": an empty output path'),
        (["download", "--tracklets", "", "-o", "out"], '"": an empty input path'),
        (["preprocess", "talk.mp4", "-o", "out", "--densepose-weights", ""], '"": an empty input path'),
        (["densepose", "talk.mp4", "-o", "poses.mp4", "--weights", ""], '"": an empty input path'),
        (["demo", "--clips", ""], '"": an empty input path'),
        (["demo", "--workdir", ""], '--workdir "": an empty output path'),
        (["serve", "--socket", "", "--idle-timeout", "1"], '--socket "": an empty socket path'),
        (["--server", "", "flip", "clip", "-o", "out"], '--server "": an empty socket path'),
    ],
)
def test_every_path_option_reaches_the_stage_as_typed(tmp_path, monkeypatch, args, said):
    # these options were plain Paths: "" became "." (`batch --state ""` wrote its records into the
    # current folder, `serve --socket ""` failed with a ValueError), and `~` was expanded in cli.py only
    from magicanimate_cli import media

    if args[0] == "demo":
        pytest.importorskip("gradio", reason="the demo extra is not installed")
    media.write_frames(tmp_path / "talk.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    (tmp_path / "tasks.jsonl").write_text('{"command": "flip", "args": ["clip", "-o", "flipped"]}\n')
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, env={"MAGICANIMATE_SERVER": None})
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"error: {said}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "tasks.jsonl"]


@pytest.mark.parametrize("output", ["out.mp4/", "out.png/"])
def test_a_video_or_image_name_ending_in_a_slash_is_refused(tmp_path, output):
    # a Path drops the "/": `-o out.mp4/` (meant as a folder?) wrote a video named out.mp4
    from magicanimate_cli import media

    media.write_frames(tmp_path / "in.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    result = runner.invoke(app, ["crop", str(tmp_path / "in.mp4"), "-o", f"{tmp_path}/{output}", "--size", "16"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    suffix = output[3:-1]
    assert result.output.startswith(f"error: {tmp_path}/{output}: ends in / (a folder) but {suffix} names a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_run_where_part_of_the_work_failed_says_what_in_one_line(tmp_path):
    # the --json convention is {"ok": false, "error": ..., "exit_code": ...}; results made of
    # several items (download, preprocess, doctor) had no "error", and without --json said nothing
    # on stderr, so `2>err.log` caught nothing
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video" * 20)
    runs = {
        "download": (["download", "http://[::1", "-o", str(tmp_path / "dl")], "1 of 1 downloads failed; the first: http://[::1: "),
        "preprocess": (["preprocess", str(videos), "-o", str(tmp_path / "clips"), "--skip", "densepose,matte"],
                       "1 of 1 clips not done: broken (failed)"),
        "doctor": (["doctor", "--models", str(tmp_path / "no-weights")], "animate cannot run here: "),
    }
    for name, (args, start) in runs.items():
        as_json = runner.invoke(app, [*args, "--json"])
        data = json.loads(as_json.stdout)
        assert as_json.exit_code == 1 and data["ok"] is False and data["exit_code"] == 1, name
        assert data["error"].startswith(start), (name, data["error"])
        plain = runner.invoke(app, args)
        assert plain.exit_code == 1 and plain.stderr.strip().splitlines()[-1] == f"error: {data['error']}", name
