"""The batch registry: the same commands, options and parsing as the CLI, without importing it.

The oracle is the CLI itself: its Typer commands are walked and their click parser is run on the
same arguments as the registry's parser.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import typer

from magicanimate_cli.batch.registry import COMMANDS, IGNORED, NOT_TASKS, Usage
from magicanimate_cli.cli import app

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]


def cli_commands() -> dict[str, object]:
    """Every leaf command of the CLI by its full name ("models download")."""
    found = {}

    def walk(group, prefix):
        for name in group.list_commands(None):
            sub = group.get_command(None, name)
            if hasattr(sub, "list_commands"):
                walk(sub, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = sub

    walk(typer.main.get_command(app), "")
    return found


def cli_kind(annotation) -> tuple[str, bool]:
    """(kind, many) of a CLI parameter's Python annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    many = typing.get_origin(annotation) is list
    if many:
        annotation = typing.get_args(annotation)[0]
    return {Path: "path", str: "str", int: "int", float: "float", bool: "bool"}[annotation], many


def test_every_cli_command_but_batch_is_a_task_with_the_same_options():
    cli = cli_commands()
    assert set(cli) - set(NOT_TASKS) == {command.name for command in COMMANDS}
    for command in COMMANDS:
        click_command = cli[command.name]
        hints = typing.get_type_hints(click_command.callback)
        expected = {}
        for param in click_command.params:
            if set(param.opts) <= set(IGNORED):  # --json, --debug: the CLI's own, a batch ignores them
                continue
            kind, many = cli_kind(hints[param.name])
            flags = tuple(param.opts) if param.param_type_name == "option" else ()
            expected[param.name] = (kind, many, flags, tuple(param.secondary_opts), param.default if not param.required else None, param.required)
        ours = {p.name: (p.kind, p.many, p.flags, p.negative, p.default, p.required) for p in command.params}
        # a str CLI option that may name a file (densepose --config: a zoo name or a YAML) is read
        # against the manifest's folder when that file exists there
        ours = {name: ("str" if value[0] == "path_or_name" else value[0], *value[1:]) for name, value in ours.items()}
        assert ours == expected, command.name
        positional = [p.name for p in click_command.params if p.param_type_name == "argument"]
        assert [p.name for p in command.params if p.positional] == positional, command.name
        module, _, function = command.function.partition(":")
        imports = f"from .{module.removeprefix('magicanimate_cli.')} import {function} as run\n"
        assert imports in inspect.getsource(click_command.callback), command.name  # the CLI calls the task's function


CASES = [
    ("animate", ["ref.png", "pose.mp4", "-o", "out.mp4"]),
    ("animate", ["-o", "out dir", "ref.png", "pose", "--steps", "3", "--guidance-scale=2.5", "--grid", "--fps", "12.5", "--json"]),
    ("animate", ["ref.png", "pose", "-oout.mp4", "--seed", "-3", "--devices", "0,1"]),
    ("animate", ["ref.png", "pose", "-o", "out.mp4", "--extra-reference", "back.png", "--extra-reference=face.png"]),  # repeated: each one
    ("eval", ["gen", "gt", "--no-download", "--metrics", "l1"]),
    ("eval", ["gen", "gt", "--download"]),
    ("preprocess", ["a.mp4", "b.mp4", "c", "-o", "clips", "--flip", "--skip", "matte"]),
    ("download", ["-o", "videos"]),
    ("download", ["abc", "def", "-o", "videos", "--start", "1:00", "--max-height", "720"]),
    ("densepose", ["clip", "--config", "densepose_rcnn_R_101_FPN_DL_s1x", "--fill-missing", "--min-score", "0.5"]),
    ("models download", ["--only", "animate", "--dry-run"]),
    ("models list", ["--rehash"]),
    ("doctor", []),
    ("crop", ["-o", "out.png", "--size", "64", "--", "-leading-dash.png"]),
]


@pytest.mark.parametrize("name, args", CASES)
def test_arguments_parse_as_the_cli_parses_them(name, args):
    click_command = cli_commands()[name]
    context = click_command.make_context(name, list(args))
    expected = {key: (str(value) if isinstance(value, Path) else [str(v) for v in value] if isinstance(value, (list, tuple)) else value)
                for key, value in context.params.items() if key not in ("as_json", "debug")}
    assert COMMANDS[name].parse(args) == expected


BAD = [  # (command, args, what both messages say, what ours says besides)
    ("animate", ["ref.png", "pose.mp4"], "Missing option '-o' / '--output'", ""),
    ("animate", ["ref.png", "-o", "x"], "Missing argument 'motion'", ""),
    ("animate", ["ref.png", "pose", "-o", "x", "--steps", "many"], "Invalid value for '--steps'", "'many' is not a valid integer"),
    ("animate", ["ref.png", "pose", "-o", "x", "--fps", "fast"], "Invalid value for '--fps'", "'fast' is not a valid float"),
    ("animate", ["ref.png", "pose", "-o", "x", "--colour", "red"], "No such option: --colour", ""),
    ("animate", ["ref.png", "pose", "-o", "x", "--grid=yes"], "Option '--grid' does not take a value", ""),
    ("animate", ["ref.png", "pose", "-o", "x", "--steps"], "Option '--steps' requires an argument", ""),
    ("animate", ["ref.png", "pose", "extra", "-o", "x"], "Got unexpected extra argument", "(extra)"),
    ("preprocess", ["-o", "clips"], "Missing argument 'input", ""),
]


@pytest.mark.parametrize("name, args, both, ours_too", BAD)
def test_bad_arguments_fail_as_on_the_command_line(name, args, both, ours_too):
    with pytest.raises(Exception) as from_cli:
        cli_commands()[name].make_context(name, list(args))
    assert both.lower() in from_cli.value.format_message().lower()
    with pytest.raises(Usage) as ours:
        COMMANDS[name].parse(args)
    assert both.lower() in str(ours.value).lower() and ours_too in str(ours.value) and "\n" not in str(ours.value)


def test_lookup_takes_group_commands_either_way_and_names_the_known_ones():
    assert COMMANDS.lookup("models download", ["--dry-run"])[0].name == "models download"
    assert COMMANDS.lookup("models", ["download", "--dry-run"]) == (COMMANDS["models download"], ["--dry-run"])
    for command, args, message in [
        ("animte", [], "unknown command 'animte' (commands: align, animate, crop,"),
        ("models", ["fetch"], "'models' has no subcommand 'fetch' (commands: convert, download, list)"),
        ("models", ["--dry-run"], "'models' needs a subcommand (convert, download, list)"),
        ("batch", ["x.jsonl"], "'batch' cannot be a task of a batch"),
        ("flip extra", [], "'flip' has no subcommands; 'extra' belongs in args"),
    ]:
        with pytest.raises(Exception) as caught:
            COMMANDS.lookup(command, args)
        assert message in str(caught.value)


def test_batch_never_imports_the_cli(tmp_path):
    """Importing every batch module and running real tasks (in this process and in a worker)
    leaves ``magicanimate_cli.cli`` (and Typer) unimported."""
    from magicanimate_cli import media

    media.write_png(tmp_path / "in.png", np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8), replace=False)
    (tmp_path / "probe.py").write_text(
        "import sys\n"
        "from magicanimate_cli.batch import Command, Registry\n"
        "from magicanimate_cli.batch.registry import COMMANDS\n"
        "class Seen:\n"
        "    def __init__(self, modules): self.modules = modules\n"
        "    def to_dict(self): return {'modules': self.modules}\n"
        "def probe() -> Seen:\n"
        "    return Seen(sorted(m for m in sys.modules if m == 'magicanimate_cli.cli' or m.split('.')[0] in ('typer', 'click')))\n"
        "REGISTRY = Registry([*COMMANDS, Command('probe', 'probe:probe')])\n"
    )
    (tmp_path / "tasks.jsonl").write_text(
        json.dumps({"command": "crop", "args": ["in.png", "-o", "batch.png", "--size", "16"]}) + "\n"
        + json.dumps({"command": "probe", "args": []}) + "\n"
    )
    script = (
        "import json, sys\n"
        "import magicanimate_cli.batch, magicanimate_cli.batch.local, magicanimate_cli.batch.ray_engine\n"
        "import magicanimate_cli.batch.manifest, magicanimate_cli.batch.registry, magicanimate_cli.batch.tasks\n"
        "from magicanimate_cli.batch import run_batch\n"
        "from magicanimate_cli.batch.tasks import TaskRunner\n"
        "record = TaskRunner('probe:REGISTRY', sys.argv[1]).run({'line': 1, 'id': 'x', 'command': 'crop', 'args': ['in.png', '-o', 'alone.png', '--size', '16']})\n"
        "batch = run_batch(sys.argv[1] + '/tasks.jsonl', commands='probe:REGISTRY').to_dict()\n"
        "here = sorted(m for m in sys.modules if m == 'magicanimate_cli.cli' or m.split('.')[0] in ('typer', 'click'))\n"
        "print(json.dumps({'record': record, 'batch': batch, 'here': here}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["record"]["status"] == "done", seen["record"]
    assert [r["status"] for r in seen["batch"]["results"]] == ["done", "done"], seen["batch"]
    assert seen["here"] == []  # the process that imported batch and ran a task itself
    assert seen["batch"]["results"][1]["result"]["modules"] == []  # the worker, after a real task
    assert media.read_image(tmp_path / "alone.png").shape == (16, 16, 3)
    assert np.array_equal(media.read_image(tmp_path / "alone.png"), media.read_image(tmp_path / "batch.png"))


def test_a_task_path_is_read_against_the_manifests_folder_and_tilde_is_home():
    from magicanimate_cli.batch.registry import resolve_path

    assert resolve_path("ref.png", "/data/jobs") == "/data/jobs/ref.png"
    assert resolve_path("/abs/ref.png", "/data/jobs") == "/abs/ref.png"
    assert resolve_path("~/ref.png", "/data/jobs") == os.path.expanduser("~/ref.png")
    assert resolve_path("ref.png", None) == "ref.png"
    assert resolve_path("", "/data/jobs") == ""  # an empty path stays empty: the stage refuses it, not "/data/jobs/"
    assert resolve_path("out.mp4/", "/data/jobs") == "/data/jobs/out.mp4/"  # as typed: the stage refuses a video name ending in /


def animate_inputs(folder: Path) -> tuple[str, str]:
    """A reference image and a two-frame motion folder in ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "motion").mkdir()
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / "ref.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / "motion" / f"{i:05d}.png")
    return str(folder / "ref.png"), str(folder / "motion")


def clip_folder(folder: Path) -> Path:
    """A clip folder with two frames in ``images/``."""
    from PIL import Image

    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / "images" / f"{i:05d}.png")
    return folder


def test_an_animate_task_keys_its_pipeline_by_the_device_and_dtype_this_machine_resolves(tiny_weights, tmp_path):
    """``auto`` and its spelled-out device and dtype are one loaded animator in a worker or server."""
    import torch

    from magicanimate_cli.batch.registry import ANIMATE_MODEL
    from magicanimate_cli.batch.tasks import TaskRunner
    from magicanimate_cli.errors import UserError

    def key(**params):
        return ANIMATE_MODEL.key({"models": str(tiny_weights), **params})

    if torch.cuda.is_available():
        device, dtype = f"cuda:{torch.cuda.current_device()}", "float16"
        assert key(device="cuda") == key(device=device)
    else:
        device, dtype = "cpu", "float32"
        with pytest.raises(UserError, match="no CUDA device"):
            key(device="cuda")
    assert key() == key(device="auto", dtype="auto") == key(device=device, dtype=dtype)
    assert key()[1:] == (device, dtype)
    assert key(dtype="bfloat16") != key()
    # a worker asked for "auto" and then for what it resolves to loads the animator once
    runner, (reference, motion) = TaskRunner(), animate_inputs(tmp_path)

    def params(*args):
        return COMMANDS.commands["animate"].parse([reference, motion, "-o", str(tmp_path / "out.mp4"), "--models", str(tiny_weights), *args])

    first = runner.model("animate", ANIMATE_MODEL, params())
    again = runner.model("animate", ANIMATE_MODEL, params("--device", device, "--dtype", dtype))
    assert again is first and runner.loads == 1


def test_animate_devices_in_a_task_mean_what_they_mean_on_the_command_line(tmp_path, tiny_weights):
    """--devices 0 is that one GPU, in the worker's own pipeline; --devices cpu,cpu starts a process
    per device, each loading its own: the worker loads none and lets go of the one it held."""
    import torch

    from magicanimate_cli import media
    from magicanimate_cli.batch.registry import ANIMATE_MODEL
    from magicanimate_cli.batch.tasks import TaskRunner
    from magicanimate_cli.errors import UserError

    def key(**params):
        return ANIMATE_MODEL.key({"models": str(tiny_weights), **params})

    assert key(devices="cpu") == key(device="cpu")
    if torch.cuda.is_available():
        assert key(devices="0") == key(device="cuda:0")
    else:
        with pytest.raises(UserError, match="--devices cuda:0: no CUDA device"):  # was: "--device 0: choose one of ..."
            key(devices="0")
    runner, (reference, motion) = TaskRunner(), animate_inputs(tmp_path)
    common = [reference, motion, "--models", str(tiny_weights), "--size", "64", "--steps", "1"]
    runner.model("animate", ANIMATE_MODEL, COMMANDS.commands["animate"].parse([*common, "--device", "cpu", "-o", str(tmp_path / "a.mp4")]))
    assert runner.loads == 1 and "animate" in runner._models
    bad = runner.run({"command": "animate", "args": [*common[:1], str(tmp_path / "missing"), *common[2:], "-o", str(tmp_path / "c.mp4"), "--devices", "cpu,cpu"]})
    assert bad["exit_code"] == 2 and "animate" in runner._models  # a bad task fails before the held model goes
    record = runner.run({"command": "animate", "args": [*common, "-o", str(tmp_path / "b.mp4"), "--devices", "cpu,cpu"]})
    assert record["status"] == "done", record
    assert record["models_loaded"] == 1 and "animate" not in runner._models
    assert media.probe(tmp_path / "b.mp4").frames == 2


def test_a_densepose_task_keys_its_estimator_by_what_its_labels_depend_on(tmp_path, monkeypatch):
    """A worker loads the DensePose estimator once for tasks that need the same one; the check
    runs first for every task, so bad options fail without loading anything."""
    from magicanimate_cli.batch.registry import DENSEPOSE_MODEL
    from magicanimate_cli.batch.tasks import TaskRunner
    from magicanimate_cli.densepose import estimator as est
    from magicanimate_cli.errors import UserError

    loaded = []
    monkeypatch.setattr(est, "require_detectron2", lambda: None)  # detectron2 is an optional extra
    monkeypatch.setattr(est, "load_estimator", lambda *args: loaded.append(args) or object())
    command = COMMANDS.commands["densepose"]
    (tmp_path / "mine.pkl").write_bytes(b"weights")
    clip = str(clip_folder(tmp_path / "clip"))

    def params(*args):
        return command.parse([clip, "--weights", str(tmp_path / "mine.pkl"), "--device", "cpu", *args])

    key = DENSEPOSE_MODEL.key
    assert key(params()) == key(params("--batch-size", "2", "--smooth", "3"))
    assert key(params("--min-score", "0.5")) != key(params()) != key(params("--max-people", "2"))
    assert key(command.parse([clip, "--device", "cpu"])) != key(params())  # the zoo's weights
    runner = TaskRunner()
    first = runner.model("densepose", DENSEPOSE_MODEL, params())
    assert runner.model("densepose", DENSEPOSE_MODEL, params("--batch-size", "2")) is first and runner.loads == 1
    for bad, message in ((("--min-score", "2"),), "--min-score 2"), ((("--config", "nope"),), "--config nope: unknown model"):
        with pytest.raises(UserError, match=message):
            runner.model("densepose", DENSEPOSE_MODEL, params(*bad[0]))
    with pytest.raises(UserError, match="missing.pkl: no such weights file"):
        runner.model("densepose", DENSEPOSE_MODEL, command.parse([clip, "--weights", str(tmp_path / "missing.pkl")]))
    assert runner.loads == 1 and runner.model("densepose", DENSEPOSE_MODEL, params()) is first
    (tmp_path / "mine.pkl").write_bytes(b"other weights")  # replaced under the same name: loaded again
    assert runner.model("densepose", DENSEPOSE_MODEL, params()) is not first and runner.loads == 2
    assert [args[:2] for args in loaded] == [(None, str(tmp_path / "mine.pkl"))] * 2
    # the zoo's weights, downloaded by the first load: the next task finds the same model
    zoo = est.weights_path(est.MODELS[est.DEFAULT_MODEL], tmp_path / "models")
    monkeypatch.setattr(est, "load_estimator", lambda *args: zoo.parent.mkdir(parents=True) or zoo.write_bytes(b"zoo") or object())
    downloaded = runner.model("densepose", DENSEPOSE_MODEL, command.parse([clip, "--models", str(tmp_path / "models")]))
    assert runner.model("densepose", DENSEPOSE_MODEL, command.parse([clip, "--models", str(tmp_path / "models")])) is downloaded
    assert runner.loads == 3


def test_a_matte_task_reuses_its_segmenter_with_the_same_masks(tmp_path, monkeypatch):
    pytest.importorskip("paddleseg")
    import dataclasses

    from magicanimate_cli import matting
    from magicanimate_cli.batch.registry import MATTE_MODEL
    from magicanimate_cli.batch.tasks import TaskRunner
    from magicanimate_cli.errors import UserError

    from factories import paddleseg_checkpoint

    lite = "pp-humansegv2-lite"
    monkeypatch.setitem(matting.MODELS, lite, dataclasses.replace(matting.MODELS[lite], sha256=None))
    weights = paddleseg_checkpoint(lite, matting.weights_path(lite, tmp_path / "models"))
    command, clip = COMMANDS.commands["matte"], str(clip_folder(tmp_path / "clip"))

    def params(*args):
        return command.parse([clip, "--models", str(tmp_path / "models"), "--model", lite, "--device", "cpu", *args])

    runner = TaskRunner()
    segmenter = runner.model("matte", MATTE_MODEL, params())
    assert runner.model("matte", MATTE_MODEL, params("--threshold", "0.3", "--smooth", "3")) is segmenter and runner.loads == 1
    with pytest.raises(UserError, match="--threshold 2"):
        runner.model("matte", MATTE_MODEL, params("--threshold", "2"))
    with pytest.raises(UserError, match="--device tpu"):
        runner.model("matte", MATTE_MODEL, params("--device", "tpu"))
    assert runner.loads == 1
    # the reused network gives the masks a fresh load gives, with its device set on every call
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(frames / f"{i:05d}.png")
    import paddle

    devices = []
    monkeypatch.setattr(paddle, "set_device", lambda device, real=paddle.set_device: devices.append(device) or real(device))
    cached = matting.matte(frames, tmp_path / "a", model=lite, segmenter=segmenter)
    fresh = matting.matte(frames, tmp_path / "b", model=lite, models=tmp_path / "models", device="cpu")
    assert cached.frames == fresh.frames == 3 and devices.count("cpu") >= 2
    for i in range(3):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / f"{i:05d}.png")), np.asarray(Image.open(tmp_path / "b" / f"{i:05d}.png")))
    paddleseg_checkpoint(lite, weights, seed=1)  # replaced under the same name: loaded again
    assert runner.model("matte", MATTE_MODEL, params()) is not segmenter and runner.loads == 2


@pytest.mark.parametrize("name", ["animate", "densepose", "matte"])
def test_a_task_with_a_missing_input_or_a_taken_output_fails_before_any_model_loads(name, tiny_weights, tmp_path, monkeypatch):
    """A worker or server runs the command's own checks before it loads a model for a task: a
    missing input or an output that is there fails at once (exit 2, the command's message), loads
    nothing, and keeps the model loaded for other tasks, even one of another key."""
    from magicanimate_cli import animate, matting
    from magicanimate_cli.batch.tasks import TaskRunner
    from magicanimate_cli.densepose import estimator as est

    loaded = []
    monkeypatch.setattr(animate, "load_pipeline", lambda *args: loaded.append(args) or object())
    monkeypatch.setattr(est, "require_detectron2", lambda: None)  # detectron2 is an optional extra
    monkeypatch.setattr(est, "load_estimator", lambda *args: loaded.append(args) or object())
    monkeypatch.setattr(matting, "load_segmenter", lambda *args: loaded.append(args) or object())
    (tmp_path / "taken.mp4").write_bytes(b"the user's video")
    if name == "animate":
        reference, motion = animate_inputs(tmp_path)
        inputs, other_key = [reference, motion], ["--dtype", "bfloat16"]
        options, missing = ["--models", str(tiny_weights)], ([str(tmp_path / "nope.png"), motion], "nope.png: no such image file")
    else:
        inputs = [str(clip_folder(tmp_path / "clip"))]
        other_key = ["--min-score", "0.5"] if name == "densepose" else ["--model", "pp-humansegv2-mobile"]
        options, missing = ["--device", "cpu"], ([str(tmp_path / "nope")], "nope: no such file or folder")
    command, model = COMMANDS.commands[name], COMMANDS.commands[name].model
    runner = TaskRunner()
    first = runner.model(name, model, command.parse([*inputs, "-o", str(tmp_path / "out.mp4"), *options]))
    assert runner.loads == 1 and len(loaded) == 1
    for args, message in ((missing[0] + ["-o", str(tmp_path / "out.mp4")], missing[1]),
                          (inputs + ["-o", str(tmp_path / "taken.mp4")], "taken.mp4: already exists; pass --overwrite")):  # fmt: skip
        record = runner.run({"command": name, "args": [*args, *options, *other_key]})
        assert (record["status"], record["exit_code"]) == ("failed", 2) and message in record["error"], record
        assert record["models_loaded"] == 1 and len(loaded) == 1
    assert runner.model(name, model, command.parse([*inputs, "-o", str(tmp_path / "out.mp4"), *options])) is first
    assert runner.loads == 1 and (tmp_path / "taken.mp4").read_bytes() == b"the user's video"
