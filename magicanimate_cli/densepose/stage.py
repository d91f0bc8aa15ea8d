"""The ``densepose()`` stage: read frames, estimate labels in batches, repair, render, write."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..clip import DENSEPOSE as CLIP_OUTPUT
from ..clip import IMAGES as CLIP_IMAGES
from ..clip import LABELS as CLIP_LABELS
from ..device import check_device
from ..errors import StageFailed, UserError, shown
from ..progress import Progress, silent
from .config import DensePoseConfig, DensePoseResult

WORK_VERSION = 1
IUV_MODEL = "iuv"  # the result's ``model`` when the labels were read from IUV images (``from_iuv``)
IUV_CHUNK = 16  # IUV frames read between two saves of the work


# ----------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class _Plan:
    source: Path  # a video or a frames folder
    output: Path
    labels: Path | None
    names: list[str]  # output file name of each frame (folder outputs)
    count: int
    fps: float
    identity: dict  # what the labels depend on (resume check)
    sound: Path | None = None  # the video whose sound a video output keeps: the input, or a clip folder's source
    clip: Path | None = None  # the input when it is a clip folder: its other parts are never written over
    size: tuple[int, int] = (0, 0)  # width, height of the frames (the renders')
    files: list[Path] | None = None  # a frames folder's frames as listed for ``names``: exactly those are read


def _plan(input: Path, output: Path | None, labels: Path | None, fps: float | None = None) -> _Plan:
    from .. import media
    from ..clip import check_clip_fps, clip_fps, sound_of
    from ..frames import check_fps

    if fps is not None:
        fps = check_fps(fps)

    if not input.exists():
        raise UserError(f"{input}: no such file or folder")
    if input.is_dir() and (input / CLIP_IMAGES).is_dir():
        source = input / CLIP_IMAGES
        output = output if output is not None else input / CLIP_OUTPUT
        labels = labels if labels is not None else input / CLIP_LABELS
    elif input.is_dir() or media.is_video(input):
        source = input
        if output is None:
            raise UserError(f"{input}: pass -o OUTPUT (a .mp4 or a folder); only a clip folder (with {CLIP_IMAGES}/) has a default output")
    else:
        raise UserError(f"{input}: not a video, a frames folder or a clip folder; pass an .mp4, a folder of frames, or a folder with {CLIP_IMAGES}/")
    if media.is_image(output) and not media.is_video_output(output):  # (out.webp: an animated WebP)
        raise UserError(f"{output}: the output is a video (.mp4) or a folder of PNG frames, not an image file")
    if labels is not None and (media.is_video(labels) or media.is_image(labels)):
        raise UserError(f"{labels}: --labels is a folder that receives one PNG label map per frame")
    for a, b in ((output, labels), (output, source), (labels, source)):
        if a is not None and b is not None and a.resolve() == b.resolve():
            raise UserError(f"{a}: used twice (input, output and --labels must be different paths)")
    if labels is not None and (output.resolve() in labels.resolve().parents or labels.resolve() in output.resolve().parents):
        raise UserError(f"{labels}: --labels and -o {output} lie one inside the other; give them separate folders, side by side")

    if source.is_dir():
        files = media.list_frame_files(source)
        if not files:
            raise UserError(f"{source}: folder has no image frames (expected 00000.png, 00001.png, ...)")
        names = [f"{file.stem}.png" for file in files]
        if len(set(names)) != len(names):  # e.g. a.png and a.jpg
            names = [media.frame_name(i) for i in range(len(files))]
        check_clip_fps(input, fps)  # (a frames folder records none)
        count, fps = len(files), fps or clip_fps(input) or media.DEFAULT_FPS
        first = media.probe(source, fps)  # (its first frame's header)
        size = first.width, first.height
        identity = {"input": str(source.resolve()), "files": [f.name for f in files], "mtime": max(f.stat().st_mtime_ns for f in files)}
    else:
        info = media.probe(source)
        if fps is not None and not media.same_rate(fps, info.fps):
            raise UserError(f"--fps {fps:g}: {source} is read at its own {info.fps:g} fps; --fps is for a frames folder")
        count, fps, size = info.frames, info.fps, (info.width, info.height)
        names, files = [media.frame_name(i) for i in range(count)], None
        stat = source.stat()
        identity = {"input": str(source.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    if count == 0:
        raise UserError(f"{source}: no frames")
    sound = source if media.is_video(source) else sound_of(input) if source == input / CLIP_IMAGES else None  # a clip: its video
    clip = input if source == input / CLIP_IMAGES else None
    return _Plan(source, output, labels, names, count, fps, identity, sound, clip, size, files)


def _writer(path: Path, names: list[str], fps: float, overwrite: bool, sound: dict | None = None):
    """A video (with ``sound``: ``media.kept_sound``), or a folder of PNGs that keeps the input
    frames' names; committed by ``media.committed_together``."""
    from .. import media

    return media.FrameWriter(path, fps, overwrite, names=None if media.is_video_output(path) else names, commit=False, **(sound or {}))


# ----------------------------------------------------------------------------- resumable labels


class _Work:
    """The per-frame label maps of a run, kept in ``.<output>.densepose-work/`` until the outputs exist."""

    def __init__(self, output: Path, identity: dict) -> None:
        self.output = output
        self.folder = output.parent / f".{output.name}.densepose-work"
        self.state = self.folder / "state.json"
        self.records = self.folder / "frames.jsonl"
        self.model = self.folder / "model.json"  # what the result says of the model that made the labels
        self.identity = {"version": WORK_VERSION, **identity}
        self.people: list[int] = []
        self.resumed = 0

    def open(self, names: list[str]) -> None:
        """Reuse the labels of an interrupted run with the same identity; otherwise start afresh."""
        if self.folder.is_dir():
            try:
                same = json.loads(self.state.read_text()) == self.identity
            except (OSError, ValueError):
                same = False
            if same:
                self.people = self._read_records(names)
                self.resumed = len(self.people)
                return
            shutil.rmtree(self.folder)
        from ..files import writing

        with writing(self.output):  # a full disk names the output (a write names no file)
            self.folder.mkdir(parents=True)
            self.state.write_text(json.dumps(self.identity))

    def _read_records(self, names: list[str]) -> list[int]:
        """The records up to the first torn or unusable one, which is cut off with all after it, so
        that the records this run appends follow whole lines (else a second kill loses them)."""
        people, kept = [], 0
        try:
            lines = self.records.read_bytes().splitlines(keepends=True)
        except OSError:
            return people
        for line in lines:
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                break
            index = len(people)
            if not isinstance(record, dict) or record.get("i") != index or index >= len(names) or not (self.folder / names[index]).is_file():
                break
            people.append(int(record["people"]))
            kept += len(line)
        if kept < sum(map(len, lines)):
            os.truncate(self.records, kept)
        return people

    def add(self, names: list[str], label_maps, people: list[int]) -> None:
        from .. import media
        from ..files import writing

        for label_map, count in zip(label_maps, people):
            media.write_png(self.folder / names[len(self.people)], label_map, replace=True)  # the run's own work folder
            self.people.append(count)
        with writing(self.output), open(self.records, "a") as handle:  # a full disk names the output (a write names no file)
            for offset in range(len(people)):
                index = len(self.people) - len(people) + offset
                handle.write(json.dumps({"i": index, "people": self.people[index]}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def note_model(self, model: _Model) -> None:
        """Keep what the result says of the model (device, weights file and digest) for a run that
        finds every frame's labels made and loads no model."""
        from ..files import write_text

        write_text(self.model, json.dumps(asdict(model)), replace=True)

    def noted_model(self, model: _Model) -> _Model:
        """The model an earlier run noted (``note_model``) if it is ``model``, else ``model``."""
        try:
            noted = _Model(**json.loads(self.model.read_text()))
        except (OSError, ValueError, TypeError):
            return model
        return noted if noted.key == model.key else model

    def read(self, name: str):
        from .. import media

        return media.read_map(self.folder / name)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _model(config, weights, estimator) -> tuple[str, str]:
    """The model's display name and what its labels depend on (for resuming): an estimator's own
    ``key`` when it has one (``load_estimator`` gives it ``estimator.model_key(config, weights)``,
    so a batch worker's loaded estimator resumes the same work as the options it was loaded for)."""
    if estimator is not None:
        name = str(getattr(estimator, "name", type(estimator).__name__))
        return name, str(getattr(estimator, "key", name))
    from .estimator import model_key

    return model_key(config, weights)


def check_options(
    *, config=None, weights=None, device: str = "auto", settings: DensePoseConfig | None = None
) -> None:
    """The checks ``densepose`` makes of its options before any work when it loads its own estimator
    (settings, device, config, weights file, detectron2 installed)."""
    if settings is not None:
        settings.validate()
    check_device(device)  # auto, cuda, cuda:N or cpu, as animate
    _model(config, weights, None)  # a bad --config fails before any work
    from .. import media
    from .estimator import require_detectron2

    if weights is not None and not media.input_path(weights).is_file():
        raise UserError(f"{weights}: no such weights file")
    require_detectron2()


# ----------------------------------------------------------------------------- the stage


def densepose(
    input: Path | str,
    output: Path | str | None = None,
    *,
    labels: Path | str | None = None,
    from_iuv: bool = False,
    config: str | Path | None = None,
    weights: Path | str | None = None,
    models: Path | str | None = None,
    batch_size: int = DensePoseConfig.batch_size,
    min_score: float = DensePoseConfig.min_score,
    max_people: int = DensePoseConfig.max_people,
    fill_missing: bool = DensePoseConfig.fill_missing,
    min_detected: float = DensePoseConfig.min_detected,
    smooth: int = DensePoseConfig.smooth,
    fps: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
    estimator=None,
) -> DensePoseResult:
    """Run DensePose over ``input`` and write MagicAnimate driving frames to ``output``.

    ``input`` is a video, a frames folder, or a clip folder (reads ``images/``, writes
    ``densepose/`` and ``densepose_labels/`` unless ``output``/``labels`` say otherwise).
    ``output`` is a video path or a folder; ``labels`` a folder for the label maps. ``config``
    is a zoo model name (``MODELS``) or a detectron2 YAML; ``weights`` a ``.pkl``/``.pth`` (default:
    the zoo weights, downloaded once into ``models``). ``fps`` is the rate of a frames folder
    (default: the clip's meta.json, else 25); a video has its own. ``estimator`` replaces
    detectron2: a callable taking a list of RGB frames and returning one ``charts.Detections``
    per frame (``config``, ``weights``, ``models`` and ``device`` are then unused). ``from_iuv``
    reads ``input`` (a frames folder, or a video stored in RGB) as DensePose IUV images instead
    (``iuv.labels_from_iuv``): no model runs, and the labels are their part indices, exactly.

    Raises ``StageFailed`` (exit 1) when a person was found in fewer than ``min_detected`` of the
    frames and ``fill_missing`` is off; the labels made so far are kept for a re-run.
    """
    settings, plan = _checked(input, output, labels=labels, from_iuv=from_iuv, config=config, weights=weights, batch_size=batch_size,
                              min_score=min_score, max_people=max_people, fill_missing=fill_missing, min_detected=min_detected,
                              smooth=smooth, fps=fps, device=device, overwrite=overwrite, estimator=estimator)  # fmt: skip
    model = _Model(IUV_MODEL, IUV_MODEL) if from_iuv else _Model(*_model(config, weights, estimator))
    progress = progress or silent
    started = time.perf_counter()

    from ..files import claim

    with claim(plan.output):  # one run at a time per output: a second one is refused, not given this one's work folder
        work = _Work(plan.output, {**plan.identity, "model": model.key, "min_score": min_score, "max_people": max_people})
        work.open(plan.names)

        if len(work.people) < plan.count and from_iuv:
            _read_iuv(plan, work, progress)
        elif len(work.people) < plan.count:
            if estimator is None:
                from .estimator import load_estimator

                estimator = load_estimator(config, weights, models, device, min_score, max_people, progress)
            model = model.of(estimator)
            work.note_model(model)
            _estimate(plan, work, estimator, settings, progress)
        elif not from_iuv:  # every frame's labels made by an earlier run (e.g. one stopped by --min-detected): its model
            model = work.noted_model(model)
        repair = _repair(Path(input), plan, work, settings, from_iuv)
        _render(plan, work, repair.sources, smooth, overwrite, progress)
        work.remove()
    return DensePoseResult(
        input=str(input),
        output=str(plan.output),
        labels=str(plan.labels) if plan.labels is not None else None,
        frames=repair.count,
        fps=plan.fps,
        missing=len(repair.missing),
        missing_frames=[plan.names[i] for i in repair.missing],
        filled=repair.filled,
        smooth=smooth,
        resumed=work.resumed,
        model=model.name,
        device=model.device,
        batch_size=None if from_iuv else batch_size,  # (no model ran: not reported)
        min_score=None if from_iuv else min_score,
        max_people=None if from_iuv else max_people,
        min_detected=min_detected,
        weights=model.weights,
        weights_sha256=model.weights_sha256,
        seconds=round(time.perf_counter() - started, 3),
    )


def check_densepose(*args, **kwargs) -> None:
    """Every check ``densepose(*args, **kwargs)`` makes before it loads an estimator: the settings,
    the input and its frames' names, the model, the device, detectron2, the outputs. A batch worker
    or ``serve`` runs it before it loads (or swaps) the estimator for a task, so a task with a
    missing input or a taken output fails at once."""
    import inspect

    arguments = inspect.signature(densepose).bind(*args, **kwargs)
    arguments.apply_defaults()
    _checked(**arguments.arguments)


def _checked(input, output, *, labels, from_iuv, config, weights, batch_size, min_score, max_people, fill_missing, min_detected,
             smooth, fps, device, overwrite, estimator, **_) -> tuple[DensePoseConfig, _Plan]:  # fmt: skip
    """``densepose``'s checks, in its order; the rest of its arguments are ignored."""
    from .. import media

    settings = DensePoseConfig(batch_size, min_score, max_people, smooth, fill_missing, min_detected)
    settings.validate()
    output = media.output_path(output) if output is not None else None
    input = media.input_path(input)
    if from_iuv:
        _check_iuv_options(input, config=config, weights=weights, batch_size=batch_size, min_score=min_score, max_people=max_people,
                           estimator=estimator)  # fmt: skip
    plan = _plan(input, output, media.output_path(labels, "--labels") if labels is not None else None, fps)
    if not from_iuv and plan.source.is_dir():
        media.check_frame_sizes(plan.source)  # headers only: a frame of another size is refused before the model runs, not when reached
    if from_iuv:
        if media.is_video(plan.source):
            from .iuv import check_iuv_video

            check_iuv_video(plan.source)
    elif estimator is None:  # a missing input is said before a missing detectron2
        check_options(config=config, weights=weights, device=device, settings=settings)
    else:
        check_device(device)
    _check_outputs(plan, overwrite)
    media.check_clip_fits(plan.output, *plan.size, plan.count)  # a GIF's or WebP's limits, before any frame is estimated
    return settings, plan


def _check_iuv_options(input: Path, *, config, weights, batch_size, min_score, max_people, estimator) -> None:
    """``from_iuv`` reads the labels from the input: the options of the model are refused, not ignored."""
    given = {"--config": config is not None, "--weights": weights is not None, "estimator": estimator is not None,
             f"--batch-size {batch_size}": batch_size != DensePoseConfig.batch_size,
             f"--min-score {min_score:g}": min_score != DensePoseConfig.min_score,
             f"--max-people {max_people}": max_people != DensePoseConfig.max_people}  # fmt: skip
    for option, used in given.items():
        if used:
            raise UserError(f"{option}: not used with --from-iuv (no model runs: the IUV frames already hold the parts); leave it out")
    if input.is_dir() and (input / CLIP_IMAGES).is_dir():
        raise UserError(
            f"{shown(input)}: a clip folder's {CLIP_IMAGES}/ holds photos, not IUV; give --from-iuv the folder of IUV frames "
            f"itself (in the TikTok dataset {shown(input / 'densepose')}) and -o a new folder for the renders"
        )
    inds = next(input.glob("*_INDS.png"), None) if input.is_dir() else None
    if inds is not None and next(input.glob("*_IUV.png"), None) is not None:  # what Caffe2 DensePose's infer_simple.py writes
        raise UserError(
            f"{shown(input)}: holds DensePose's *_INDS.png (which person each pixel is, not IUV; e.g. {inds.name}) beside its "
            "*_IUV.png; move the *_INDS.png files to another folder and give --from-iuv the IUV ones"
        )


# ----------------------------------------------------------------------------- its steps


@dataclass(frozen=True)
class _Model:
    """What the result says about the model: name, device, weights file and digest."""

    name: str
    key: str  # what the labels depend on (resume check)
    device: str = "n/a"
    weights: str | None = None
    weights_sha256: str | None = None

    def of(self, estimator) -> _Model:
        """The same, completed from a loaded estimator's attributes."""
        weights = getattr(estimator, "weights", None)
        return _Model(
            str(getattr(estimator, "name", self.name)), self.key, str(getattr(estimator, "device", "n/a")),
            str(weights) if weights is not None else None, getattr(estimator, "weights_sha256", None),
        )  # fmt: skip


def _check_outputs(plan: _Plan, overwrite: bool) -> None:
    """Each output may replace an earlier one (``overwrite``), but never the input, nor, in a clip
    folder, a part that is not its own (``-o CLIP/masks`` would replace the clip's masks)."""
    from .. import media
    from ..clip import parts_of

    parts = parts_of(plan.clip) if plan.clip is not None else []
    for path, own in ((plan.output, CLIP_OUTPUT), (plan.labels, CLIP_LABELS)):
        if path is not None:
            others = [part for part in parts if part != plan.clip / own]
            media.check_output(path, overwrite, protect=(plan.source, *others))


def _estimate(plan: _Plan, work: _Work, estimator, settings: DensePoseConfig, progress: Progress) -> None:
    """Step 1: the label map of every frame that has none yet, ``batch_size`` frames per call (resumable)."""
    from .. import media
    from .charts import frame_labels

    batch: list = []
    progress("densepose", len(work.people), plan.count)

    def flush() -> None:
        detections = estimator(batch)
        if len(detections) != len(batch):
            raise RuntimeError(f"the estimator returned {len(detections)} results for {len(batch)} frames")
        maps, people = [], []
        for frame, found in zip(batch, detections):
            label_map, count = frame_labels(found, frame.shape[0], frame.shape[1], settings.min_score, settings.max_people)
            maps.append(label_map)
            people.append(count if label_map.any() else 0)  # a person without a single part pixel is no person
        work.add(plan.names, maps, people)
        batch.clear()
        progress("densepose", len(work.people), plan.count)

    for index, frame in enumerate(media.iter_frames(plan.source, files=plan.files)):
        if index >= plan.count:
            break
        if index >= len(work.people):
            batch.append(frame)
            if len(batch) == settings.batch_size:
                flush()
    if batch:
        flush()


def _read_iuv(plan: _Plan, work: _Work, progress: Progress) -> None:
    """Step 1 with ``from_iuv``: each frame's labels are its IUV image's part indices (resumable).
    A frame that is not lossless IUV, or is not read as one (``iuv.read_iuv``: a JPEG, a 16-bit
    file of unclear values), is refused, naming it, and the work is dropped."""
    try:
        _iuv_labels(plan, work, progress)
    except UserError:
        work.remove()
        raise


def _iuv_labels(plan: _Plan, work: _Work, progress: Progress) -> None:
    from contextlib import closing

    from .iuv import clip_channel, iuv_frames, labels_from_iuv

    files = plan.files
    with closing(iuv_frames(plan.source, files)) as frames:
        channel = clip_channel(frames)  # one for the whole clip, as its frames were saved one way
    start, maps = len(work.people), []
    progress("densepose", len(work.people), plan.count)

    def save() -> None:
        work.add(plan.names, maps, [int(label_map.any()) for label_map in maps])  # an all-black frame: nobody
        maps.clear()
        progress("densepose", len(work.people), plan.count)

    for index, frame in enumerate(iuv_frames(plan.source, files)):
        if index >= plan.count:
            break
        if index < start:  # an interrupted run's
            continue
        try:
            maps.append(labels_from_iuv(frame, channel))
        except ValueError as exc:
            where = shown(files[index]) if files is not None else f"{shown(plan.source)} (frame {index})"
            raise UserError(f"{where}: {exc}") from None
        if len(maps) == IUV_CHUNK:
            save()
    if maps:
        save()


class TooFewPeople(StageFailed):
    """DensePose found a person in fewer than ``min_detected`` of the frames (exit 1); ``min_score``
    None: the frames were IUV images (``from_iuv``), in which nobody is found by a model."""

    def __init__(self, subject: str, detected: int, count: int, min_detected: float, min_score: float | None) -> None:
        self.subject, self.detected, self.count = subject, detected, count
        self.min_detected, self.min_score = min_detected, min_score
        share = f"{detected} of {count} frames ({100 * detected / count:.0f}%, below --min-detected {min_detected:g})"
        super().__init__(
            f"{subject}: DensePose found a person in only {share}; lower --min-score (now {min_score:g}) to keep less certain "
            "detections, or pass --fill-missing to give those frames the nearest detected frame's labels"
            if min_score is not None else
            f"{subject}: the IUV frames show a person in only {share}; pass --fill-missing to give the black frames "
            "the nearest frame's labels, or a lower --min-detected"
        )  # fmt: skip

    def naming(self, subject: str) -> TooFewPeople:
        """The same failure, reported for ``subject`` (``preprocess`` names the clip, not its work folder)."""
        return TooFewPeople(subject, self.detected, self.count, self.min_detected, self.min_score)


class NobodyFound(UserError):
    """DensePose found no person in any of the frames (bad input, exit 2)."""

    def __init__(self, subject: str, count: int, min_score: float) -> None:
        self.count, self.min_score = count, min_score
        super().__init__(f"{subject}: DensePose found no person in any of its {count} frames (score above {min_score}); "
                         "check the input or lower --min-score")

    def naming(self, subject: str) -> NobodyFound:
        """The same failure, reported for ``subject`` (``preprocess`` names the clip, not its work folder)."""
        return NobodyFound(subject, self.count, self.min_score)


@dataclass(frozen=True)
class _Repair:
    count: int  # frames with labels
    missing: list[int]  # positions of the frames without a person
    sources: list[int]  # frame i is rendered from the labels of frame sources[i]
    filled: int


def _repair(input: Path, plan: _Plan, work: _Work, settings: DensePoseConfig, from_iuv: bool = False) -> _Repair:
    """Step 2: which frames have nobody, whether that is too many, and where their labels come from."""
    from .repair import fill_sources

    count = len(work.people)
    if count == 0:
        work.remove()
        raise UserError(f"{plan.source}: no frames could be read")
    missing = [i for i, n in enumerate(work.people) if n == 0]
    if len(missing) == count:
        work.remove()
        if from_iuv:
            raise UserError(f"{plan.source}: all of its {count} IUV frames are black (nobody in them); check the input")
        raise NobodyFound(str(plan.source), count, settings.min_score)
    detected = count - len(missing)
    if not settings.fill_missing and detected < settings.min_detected * count:
        raise TooFewPeople(str(input), detected, count, settings.min_detected, None if from_iuv else settings.min_score)
    sources = fill_sources([n == 0 for n in work.people]) if settings.fill_missing else list(range(count))
    return _Repair(count, missing, sources, sum(1 for i in missing if sources[i] != i))


def _render(plan: _Plan, work: _Work, sources: list[int], smooth: int, overwrite: bool, progress: Progress) -> None:
    """Step 3: render each frame's (repaired, smoothed) labels, and write the label maps."""
    from .. import media
    from .palette import render_labels
    from .repair import majority, window

    count = len(sources)
    cache: OrderedDict[int, object] = OrderedDict()

    def labels_of(index: int):
        raw = sources[index]
        if raw not in cache:
            cache[raw] = work.read(plan.names[raw])
            while len(cache) > max(smooth, 1) + 2:
                cache.popitem(last=False)
        cache.move_to_end(raw)
        return cache[raw]

    names = plan.names[:count]
    sound = media.kept_sound(plan.sound, plan.output)  # a dance video's music stays with its poses
    writers = [_writer(plan.output, names, plan.fps, overwrite, sound)]
    if plan.labels is not None:
        writers.append(_writer(plan.labels, names, plan.fps, overwrite))
    # both or neither: labels without their poses (a failed encode, a kill) would refuse the re-run
    with media.committed_together(writers, replace=overwrite):
        out, label_writer = writers[0], writers[1] if len(writers) > 1 else None
        for index in range(count):
            if smooth > 1:
                span = window(index, count, smooth)
                label_map = majority([labels_of(j) for j in span], index - span.start)
            else:
                label_map = labels_of(index)
            out.write(render_labels(label_map))
            if label_writer is not None:
                label_writer.write(label_map)
            progress("render", index + 1, count)
