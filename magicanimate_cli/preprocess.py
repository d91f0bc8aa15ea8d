"""``magicanimate preprocess``: the paper's data chain, from videos to clip folders.

For every input video (or frames folder) one clip folder ``OUT/<clip>/`` is made, with
``images/``, ``densepose/`` (+ ``densepose_labels/``), ``masks/`` and ``meta.json``, and with
``flip`` also the mirrored ``OUT/<clip>_flip/``. The stages, in order:

1. ``frames``: the video's frames at ``fps`` (25), lossless PNG;
2. ``matte``: person masks (``matting.matte``, PaddleSeg), on the full frames;
3. ``fov`` (only with ``--fov WxH``): a person-centred ``W×H`` field of view, steady over the
   clip, located from the masks when there are any (see crop.py), applied to frames and masks;
4. ``densepose``: DensePose renderings and label maps (``densepose.densepose``, detectron2), on
   the field of view (the paper crops first "for better DensePose");
5. ``crop``: the centred square of everything, resized to ``size``×``size`` (512) into the clip
   folder (bicubic images, bilinear masks, nearest DensePose and labels);
6. ``flip`` (only with ``--flip``): the mirrored clip with DensePose's left/right parts swapped.

Intermediate frames live in ``OUT/<clip>/.work/`` and are removed once the clip is complete
(``keep_work`` keeps them, so a later run with another ``--size`` or an added stage does not
start from the video again).

Resuming: each stage's parameters and status are in ``meta.json``. A re-run skips a clip whose
stages all finished with the same settings and whose subfolders still hold all its frames, skips
each finished stage whose inputs did not change, and redoes a stage left ``running`` by an interrupted run (every writer is atomic, so
there is never a half-written folder under a final name). ``force`` redoes everything. One run
at a time per clip (``files.claim``): a clip that another run is working on is refused (exit 2)
when it is the only one, else it fails alone and the others go on. A clip that failed before
making anything leaves no folder (its result says why), so ``OUT/`` holds only clips.

The DensePose and matting stages need optional packages. When one cannot run (not installed,
weights not downloadable, ...) the clip is still finished without it, the stage is recorded as
``unavailable`` (or ``failed``) with the error and the install hint in ``meta.json`` and in the
result, and the run exits 1 at the end (a network that could not be loaded is tried once per run,
not once per clip); the next run retries only that stage and what follows.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clip import DENSEPOSE, DONE, FAILED, IMAGES, LABELS, MASKS, META, SUBFOLDERS, UNAVAILABLE, WORK, Clip, read_meta
from .clip import SIZE as CROP_SIZE
from .densepose.config import DensePoseConfig
from .errors import MissingDependency, NetworkError, StageFailed, UserError, shown
from .files import claim, write_error
from .frames import DEFAULT_FPS as FRAMES_FPS

SKIPPABLE = ("densepose", "matte")
LIST_SUFFIXES = (".txt", ".lst", ".list")
FLIP_SUFFIX = "_flip"
# what each stage writes into the folder it works on
STAGE_OUTPUTS = {"frames": (IMAGES,), "matte": (MASKS,), "fov": (IMAGES, MASKS), "densepose": (DENSEPOSE, LABELS)}


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    kind: str  # video | frames


@dataclass
class PreprocessResult:
    output: str
    clips: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c["status"] in ("done", "up-to-date") for c in self.clips)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failure(self) -> str:
        bad = [c for c in self.clips if c["status"] not in ("done", "up-to-date")]
        return f"{len(bad)} of {len(self.clips)} clips not done: " + ", ".join(f"{c['name']} ({c['status']})" for c in bad)

    def to_dict(self) -> dict:
        counts = {s: sum(1 for c in self.clips if c["status"] == s) for s in ("done", "up-to-date", "incomplete", "failed")}
        return {"ok": self.ok, "output": self.output, **counts, "clips": self.clips, "seconds": self.seconds}

    def for_humans(self) -> dict:
        """What a person reads on the terminal: counts, then one line per clip that needs attention."""
        summary = {k: v for k, v in self.to_dict().items() if k not in ("clips", "ok")}
        for clip in self.clips:
            if clip["errors"] or clip["status"] == "failed":
                problems = "; ".join(f"{stage}: {message}" for stage, message in clip["errors"].items())
                summary[clip["name"]] = f"{clip['status']} ({problems})"
        return summary


# ----------------------------------------------------------------------------- inputs


def collect_sources(inputs, *, fps: float | None = None, _from_list: bool = False) -> list[Source]:
    """Videos and frames folders named by ``inputs`` (videos, folders of videos, list files).

    A video named in ``inputs`` itself is checked here (``media.check_video``, with ``fps`` the
    rate its frames are taken at): bad input, said before any work."""
    from . import media

    found: list[Source] = []
    for raw in inputs:
        path = media.input_path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            if _from_list:
                raise UserError(f"{path}: a list file inside a list file; list videos or folders only")
            found += collect_sources(_read_list(path), _from_list=True)
        elif path.is_file() and media.is_video(path):
            if not _from_list:  # named on the command line: a file ffmpeg cannot open is bad input, before any work
                media.check_video(path, fps)  # (one among many found in a folder or a list fails alone, as its clip)
            found.append(Source(path.stem, path.resolve(), "video"))
        elif path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and media.is_video(p) and not p.name.startswith("."))
            frames = [p for p in media.list_frame_files(path, sequence=False) if p.stem not in {v.stem for v in videos}] if videos else []
            if frames:  # a video's thumbnail (yt-dlp's, of the same name) is no frame
                raise UserError(
                    f"{path}: holds both videos ({videos[0].name}, ...) and image frames ({frames[0].name}, ...); "
                    "give the videos one by one, or move them out to use the folder's frames"
                )
            if videos:
                found += [Source(v.stem, v.resolve(), "video") for v in videos]
            elif media.list_frame_files(path):
                if not _from_list:  # named on the command line: frames of two sizes are bad input, before any work
                    media.check_frame_sizes(path)
                found.append(Source(path.resolve().name, path.resolve(), "frames"))
            else:
                raise UserError(f"{path}: folder holds no videos and no image frames")
        else:
            raise UserError(f"{path}: not a video, a folder of videos or frames, or a list file ({', '.join(LIST_SUFFIXES)})")
    if not _from_list:
        names: dict[str, Path] = {}
        for source in found:
            if source.name in names and names[source.name] != source.path:
                raise UserError(f"{source.path}: clip name {source.name!r} is also used by {names[source.name]}; rename one of them")
            names[source.name] = source.path
        unique = {s.path: s for s in found}
        found = list(unique.values())
    return found


def _read_list(path: Path) -> list[Path]:
    """Paths in a list file, one a line, relative to the file's folder; blank lines and lines
    starting with ``#`` are ignored (a ``#`` inside a name, as in TED-talks clip names, is kept).
    UTF-8, with or without a BOM (Notepad's "UTF-8 with BOM")."""
    from .files import check_utf8

    check_utf8(path)
    entries = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            entries.append(entry if entry.is_absolute() else path.parent / entry)
    if not entries:
        raise UserError(f"{path}: list file names no videos")
    return entries


def parse_skip(skip) -> frozenset[str]:
    if not skip:
        return frozenset()
    items = skip.split(",") if isinstance(skip, str) else [s for part in skip for s in str(part).split(",")]
    chosen = frozenset(s.strip().lower() for s in items if s.strip())
    unknown = sorted(chosen - set(SKIPPABLE))
    if unknown:
        raise UserError(f"--skip {','.join(unknown)}: only {', '.join(SKIPPABLE)} can be skipped")
    return chosen


class _SourceGone(UserError):
    """A source found when the run started that is no longer there when its turn comes (moved or
    deleted meanwhile, by the user or another job): its clip fails alone, the others go on."""


def _signature(source: Source) -> dict:
    """What identifies the source's content cheaply: path, size and modification time."""
    from . import media

    gone = _SourceGone(f"{source.path}: no longer there (moved or deleted since this run started); its clip folder is left as it was")
    try:
        if source.kind == "video":
            stat = source.path.stat()
            return {"path": str(source.path), "kind": "video", "bytes": stat.st_size, "mtime": round(stat.st_mtime, 3)}
        files = media.list_frame_files(source.path)
        if not files:
            raise gone
        return {"path": str(source.path), "kind": "frames", "files": len(files), "mtime": round(max(f.stat().st_mtime for f in files), 3)}
    except FileNotFoundError:
        raise gone from None


# ----------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class DensePoseSettings:
    """What ``preprocess`` passes on to its DensePose stage (``densepose.densepose``'s options of the same names).

    ``weights``: a weights file the user names (trusted as it is; its sha256 goes into meta.json
    with the stage's result); ``None`` takes the pinned, sha256-checked model-zoo weights.
    """

    weights: Path | None = None
    min_score: float = DensePoseConfig.min_score
    fill_missing: bool = DensePoseConfig.fill_missing
    min_detected: float = DensePoseConfig.min_detected

    def validate(self) -> None:
        DensePoseConfig(min_score=self.min_score, fill_missing=self.fill_missing, min_detected=self.min_detected).validate()
        if self.weights is not None and not self.weights.is_file():
            raise UserError(f"{self.weights}: no such weights file (--densepose-weights takes a detectron2 .pkl or .pth)")

    def params(self) -> dict:
        """The stage's parameters in meta.json: only what differs from the defaults, so clips made
        before these options existed stay up to date."""
        defaults = DensePoseSettings()
        chosen = {"weights": str(self.weights) if self.weights else None, "min_score": self.min_score,
                  "fill_missing": self.fill_missing, "min_detected": self.min_detected}
        return {k: v for k, v in chosen.items() if v != (getattr(defaults, k) if k != "weights" else None)}


class _Networks:
    """The DensePose estimator and matting network, loaded on first use and kept for every clip.

    A network that could not be loaded (weights not downloadable offline or with the network
    down, a damaged weights file, ...) is tried once per run: every later clip gets the same error
    at once, without looking for the weights again (the next run tries again)."""

    def __init__(self, models, progress, densepose: DensePoseSettings | None = None) -> None:
        self.models, self.progress = models, progress
        self.densepose = densepose or DensePoseSettings()
        self._segmenter = self._estimator = None
        self._failed: dict[str, Exception] = {}

    def _load(self, name: str, load):
        if name in self._failed:
            raise self._failed[name]
        try:
            return load()
        except Exception as exc:
            self._failed[name] = exc
            raise

    def segmenter(self):
        if self._segmenter is None:
            from .matting import load_segmenter

            self._segmenter = self._load("matte", lambda: load_segmenter(models=self.models, progress=self.progress))
        return self._segmenter

    def estimator(self):
        if self._estimator is None:
            from .densepose.estimator import load_estimator

            settings = self.densepose
            self._estimator = self._load("densepose", lambda: load_estimator(
                weights=settings.weights, models=self.models, min_score=settings.min_score,
                max_people=DensePoseConfig.max_people, progress=self.progress,
            ))  # fmt: skip
        return self._estimator


class _Runner:
    """Runs the chain for one clip, recording every stage in its meta.json."""

    def __init__(
        self, source: Source, folder: Path, request: dict, *, force: bool, keep_work: bool, progress, unavailable: dict,
        networks: _Networks | None = None,
    ):
        self.networks = networks or _Networks(None, progress)
        self.source, self.folder, self.request = source, folder, request
        self.force, self.keep_work, self.progress = force, keep_work, progress
        self.unavailable = unavailable  # stage -> (message, hint), shared by all clips of the run
        self.work = folder / WORK
        self.full = self.work / "full"
        self.fov_dir = self.work / "fov"
        self.stage_dir = self.fov_dir if request["fov"] else self.full
        self.ran = False  # a stage ran in this invocation: everything after it is redone
        self.clip: Clip | None = None
        self.errors: dict[str, str] = {}

    # -- bookkeeping

    def open(self) -> None:
        from .clip import versions

        meta = read_meta(self.folder)
        signature = _signature(self.source)
        if meta is None or self.force or meta.get("source", {}).get("signature") != signature:
            if meta is not None and not self.force:
                self.force = True  # the source changed: nothing recorded is valid
            meta = {"format": 1, "clip": self.source.name, "created": _now()}
        self.clip = Clip(self.folder, meta)
        self.clip.meta.update(
            clip=self.source.name,
            source={**self.clip.meta.get("source", {}), "path": str(self.source.path), "kind": self.source.kind, "signature": signature},
            fps=self.request["fps"],
            size=self.request["size"],
            fov=self.request["fov"],
            flipped=False,
            versions=versions(),
            request=self.request,
            status="running",
        )
        self.clip.meta.pop("replaced", None)
        if self.replaced():  # kept until this folder holds a clip: deleted in run()
            self.clip.meta["replaced"] = [str(path) for path in self.replaced()]
        if self.force:
            self.clip.forget(*list(self.clip.meta["stages"]))
            shutil.rmtree(self.work, ignore_errors=True)
        from .folders import created_folders

        with created_folders(self.folder):  # refused here (a full disk): no new empty folders left
            self.clip.save()

    def replaced(self) -> list[Path]:
        """What ``--overwrite`` renamed aside from this clip's place (``_aside``), by this run or a
        killed or failed earlier one: found by name, so a kill before ``meta.json`` loses none."""
        import glob

        return sorted(self.folder.parent.glob(f".{glob.escape(_aside_stem(self.folder))}.replaced-*"))

    def finished(self) -> bool:
        """The clip folder is complete for this request, flip aside (nothing before flip to redo).

        Stages now in ``--skip`` that finished earlier still count (their results are kept);
        stages skipped earlier but wanted now do not.
        """
        meta = read_meta(self.folder)
        if self.force or meta is None or meta.get("status") != "done":
            return False
        if meta.get("source", {}).get("signature") != _signature(self.source):
            return False
        old = meta.get("request") or {}
        if any(old.get(key) != self.request[key] for key in ("fps", "size", "fov")):
            return False
        stages = meta.get("stages", {})
        if any(stages.get(s, {}).get("status") != DONE for s in SKIPPABLE if s not in self.request["skip"]):
            return False
        if "densepose" not in self.request["skip"] and not Clip(self.folder, meta).is_done("densepose", self.networks.densepose.params()):
            return False  # made with other DensePose settings (--min-score, --densepose-weights, ...)
        return _holds_frames(self.folder, meta.get("subfolders") or [IMAGES], meta.get("frames"))

    def tidy(self) -> None:
        """Remove the ``.work/`` of a clip recorded done: a run stopped between recording it and
        removing that folder left it (gigabytes of full-size frames, for good)."""
        meta = read_meta(self.folder) or {}
        if not self.keep_work and meta.get("status") == "done" and meta.get("keep_work") is False:  # not one --keep-work kept
            shutil.rmtree(self.work, ignore_errors=True)

    def up_to_date(self) -> bool:
        """Finished, and the mirrored clip is there if asked for: nothing to do at all."""
        if not self.finished():
            return False
        if not self.request["flip"]:
            return True
        meta = read_meta(self.folder) or {}
        flip_rec = meta.get("stages", {}).get("flip", {})
        flip_dir = self.folder.with_name(self.folder.name + FLIP_SUFFIX)
        return flip_rec.get("status") == DONE and _holds_frames(flip_dir, meta.get("subfolders") or [IMAGES], meta.get("frames"))

    def _outputs_exist(self, stage: str, folder: Path) -> bool:
        from . import media

        subs = STAGE_OUTPUTS.get(stage, ())
        first = subs[0] if subs else None
        return first is None or ((folder / first).is_dir() and bool(media.list_frame_files(folder / first)))

    def _remove_outputs(self, stage: str, folder: Path) -> None:
        for sub in STAGE_OUTPUTS.get(stage, ()):
            shutil.rmtree(folder / sub, ignore_errors=True)

    def _outputs_whole(self, stage: str, params: dict, folder: Path) -> bool:
        """Every subfolder the stage writes holds the clip's frames, under the names of its
        ``images/``: a kept work folder that lost a frame (or a subfolder) since is no result."""
        subs = params.get("subfolders") if stage == "fov" else STAGE_OUTPUTS.get(stage, ())
        if not subs:
            return True
        return _holds_frames(folder, list(dict.fromkeys([IMAGES, *subs])), self.clip.meta.get("frames"))

    def fresh(self, stage: str, params: dict, folder: Path | None = None) -> bool:
        """Finished before with these parameters, nothing before it re-ran, outputs whole."""
        if self.ran or self.force or not self.clip.is_done(stage, params):
            return False
        return folder is None or self._outputs_whole(stage, params, folder)

    def run_stage(self, stage: str, params: dict, call, folder: Path | None = None, optional: bool = False) -> bool:
        """Run ``call()`` as ``stage`` unless fresh. Returns True when the stage's outputs are usable.

        A stage that fails is recorded; an optional one (densepose, matte, flip) lets the chain go
        on without its outputs, any other ends this clip (``_StageFailed``).
        """
        if self.fresh(stage, params, folder):
            return True
        had_outputs = folder is not None and self._outputs_exist(stage, folder)
        if optional and stage in self.unavailable:
            message, hint = self.unavailable[stage]
            self._record_failure(stage, params, message, UNAVAILABLE, hint, folder)
            self.ran = self.ran or had_outputs
            return False
        self.clip.start(stage, params)
        try:
            result = call()
        except Exception as exc:  # recorded in meta.json and the result; the run goes on
            exc = write_error(exc) or exc  # a full disk, a name too long: the message that names the path and the fix
            message = str(exc) if isinstance(exc, (UserError, StageFailed, NetworkError)) else f"{exc.__class__.__name__}: {exc}"
            message = " ".join(message.split()) + _work_folders_note(self.folder.parent, message)
            status, hint = (UNAVAILABLE, _install_hint(stage)) if optional and _is_missing_dependency(exc) else (FAILED, None)
            if status == UNAVAILABLE:
                self.unavailable[stage] = (message, hint)
            self._record_failure(stage, params, message, status, hint, folder)
            self.ran = self.ran or had_outputs
            if not optional:
                raise _StageFailed(stage, message) from exc
            return False
        self.ran = True
        self.clip.finish(stage, result.to_dict() if hasattr(result, "to_dict") else result)
        return True

    def _record_failure(self, stage, params, message, status, hint, folder) -> None:
        if folder is not None:
            self._remove_outputs(stage, folder)
        self.clip.fail(stage, message, status=status, hint=hint, params=params)
        self.errors[stage] = message + (f" (install: {hint})" if hint and hint not in message else "")

    def skip(self, stage: str, params: dict, folder: Path) -> bool:
        """``--skip stage``: keep earlier results if still valid, else record the stage as skipped."""
        if self.fresh(stage, params, folder):
            return True
        if self._outputs_exist(stage, folder):
            self.ran = True  # stale outputs go away: what follows must be redone without them
        self._remove_outputs(stage, folder)
        self.clip.skip(stage, "--skip")
        return False

    # -- the chain

    def run(self) -> dict:
        finished = self.finished()
        self.open()
        try:
            if finished:  # only the flip can be missing (e.g. --flip added after the clip was made)
                self._flip_stage(self.clip.meta.get("subfolders") or [IMAGES])
            else:
                self._chain()
        except _StageFailed:
            status = "failed"
        else:
            failed = [s for s, rec in self.clip.meta["stages"].items() if rec.get("status") in (FAILED, UNAVAILABLE)]
            status = "incomplete" if failed else "done"
        self.clip.meta["status"] = status
        self.clip.meta["keep_work"] = self.keep_work
        self.clip.save()
        if status == "done" and not self.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        if status == "failed" and self._made_nothing():  # no folder that looks like a clip: the result says why
            shutil.rmtree(self.folder, ignore_errors=True)
        if status != "failed" and self.replaced():  # this folder holds a clip now: what it replaced goes
            for path in self.replaced():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
            self.clip.meta.pop("replaced", None)
            self.clip.save()
        return self.outcome(status)

    def _made_nothing(self) -> bool:
        """The clip folder holds nothing but its ``meta.json`` (and empty folders): nothing a later run
        could reuse, and no record of a folder ``--overwrite`` renamed aside (``replaced``)."""
        if self.folder.is_symlink() or self.replaced():
            return False
        for root, folders, names in os.walk(self.folder):
            if any(Path(root, name).is_symlink() for name in folders) or any(Path(root, name) != self.folder / META for name in names):
                return False
        return True

    def _chain(self) -> None:
        from . import media

        request, skip = self.request, set(self.request["skip"])
        # 1. frames
        self.run_stage("frames", {"fps": request["fps"]}, self._frames, self.full)
        frames_rec = self.clip.record("frames").get("result", {})
        self.clip.meta["frames"] = frames_rec.get("frames")
        self.clip.meta["source"].update({k: frames_rec.get(k) for k in ("width", "height", "source_fps") if k in frames_rec})
        # 2. matte, on the full frames
        if "matte" in skip:
            have_masks = self.skip("matte", {}, self.full)
        else:
            have_masks = self.run_stage("matte", {}, lambda: self._matte(self.full), self.full, optional=True)
        # 3. field of view
        if request["fov"]:
            subs = [IMAGES] + ([MASKS] if have_masks else [])
            self.run_stage("fov", {"fov": request["fov"], "subfolders": subs}, lambda: self._fov(subs), self.fov_dir)
            self.clip.meta["fov_box"] = self.clip.record("fov").get("result", {}).get("window")
        else:  # an earlier run's field of view is no part of this clip
            self.clip.forget("fov")
            self.clip.meta.pop("fov_box", None)
        # 4. densepose, on the field of view (or the full frames)
        if "densepose" in skip:
            self.skip("densepose", {}, self.stage_dir)
        else:
            params = self.networks.densepose.params()
            self.run_stage("densepose", params, lambda: self._densepose(self.stage_dir), self.stage_dir, optional=True)
        # 5. crop + resize into the clip folder
        subs = [s for s in SUBFOLDERS if (self.stage_dir / s).is_dir() and media.list_frame_files(self.stage_dir / s)]
        if not _holds_frames(self.folder, subs, self.clip.meta.get("frames")):
            self.clip.forget("crop")  # someone removed the results (or some of their frames): make them again
        # the crop's source (the field of view or the full frames) is one of its parameters
        self.run_stage("crop", {"size": request["size"], "subfolders": subs, "fov": request["fov"]}, lambda: self._crop(subs))
        self.clip.meta["crop_box"] = self.clip.record("crop").get("result", {}).get("crop_box")
        self.clip.meta["subfolders"] = subs
        # 6. flip
        self._flip_stage(subs)

    def _flip_stage(self, subs: list[str]) -> None:
        flip_dir = self.folder.with_name(self.folder.name + FLIP_SUFFIX)
        if self.request["flip"]:
            if not _holds_frames(flip_dir, subs, self.clip.meta.get("frames")):
                self.clip.forget("flip")  # removed, or some of its frames: made again
            self.run_stage("flip", {"subfolders": subs}, lambda: self._flip(flip_dir), optional=True)
        else:
            self.clip.forget("flip")  # an earlier OUT/<clip>_flip/ is left as it is

    def outcome(self, status: str) -> dict:
        stages = {name: rec.get("status") for name, rec in (self.clip.meta["stages"] if self.clip else {}).items()}
        flip_dir = self.folder.with_name(self.folder.name + FLIP_SUFFIX)
        return _outcome(
            self.source,
            self.folder,
            status,
            frames=self.clip.meta.get("frames") if self.clip else None,
            stages=stages,
            errors=self.errors,
            flip=str(flip_dir) if self.request["flip"] and stages.get("flip") == DONE else None,
            replaced=self.clip.meta.get("replaced") if self.clip else None,
        )

    # -- stage bodies

    def _frames(self):
        from . import media
        from .frames import FramesResult, extract_into

        target = self.full / IMAGES
        fps = self.request["fps"]
        started = time.perf_counter()
        if self.source.kind == "video":
            info = media.probe(self.source.path)
            count = extract_into(self.source.path, info, target, fps, replace=True, progress=self.progress,
                                 allow_truncated=self.request["allow_truncated"])
            source_fps = info.fps
        else:
            info = media.probe(self.source.path, fps)
            count = 0
            with media.FrameWriter(target, fps, overwrite=True) as writer:
                for frame in media.iter_frames(self.source.path, allow_truncated=self.request["allow_truncated"]):
                    writer.write(frame)
                    count += 1
                    if self.progress:
                        self.progress("frames", count, info.frames)
            source_fps = fps
        return FramesResult(str(target), count, fps, source_fps, info.width, info.height, round(time.perf_counter() - started, 3))

    def _matte(self, folder: Path):
        from .matting import matte

        segmenter = self.networks.segmenter()
        return matte(folder, models=self.networks.models, overwrite=True, progress=self.progress, segmenter=segmenter)

    def _densepose(self, folder: Path):
        from .densepose import densepose
        from .densepose.stage import NobodyFound, TooFewPeople

        settings = self.networks.densepose
        estimator = self.networks.estimator()
        try:
            return densepose(
                folder, models=self.networks.models, overwrite=True, progress=self.progress, estimator=estimator,
                fps=self.request["fps"], min_score=settings.min_score, fill_missing=settings.fill_missing,
                min_detected=settings.min_detected,
            )  # fmt: skip
        except (TooFewPeople, NobodyFound) as exc:  # name the clip's source, not its hidden work folder
            raise exc.naming(f"clip {self.source.name} ({self.source.path})") from None

    def _fov(self, subs: list[str]):
        from .crop import clip_source_size, crop_clip_into, plan_crop

        width, height = clip_source_size(self.full, subs)
        plan = plan_crop(self.full, width, height, size=0, fov=self.request["fov"])
        self.fov_dir.mkdir(parents=True, exist_ok=True)
        for stale in (DENSEPOSE, LABELS, MASKS):
            shutil.rmtree(self.fov_dir / stale, ignore_errors=True)
        crop_clip_into(self.full, self.fov_dir, plan, subs, self.progress, compress_level=1)  # intermediate frames
        return {"window": list(plan.window), "located_by": plan.located_by, "person": list(plan.person) if plan.person else None,
                "output_size": list(plan.output_size), "source_size": list(plan.source_size)}

    def _crop(self, subs: list[str]):
        from .crop import clip_source_size, compose_box, crop_clip_into, plan_crop

        width, height = clip_source_size(self.stage_dir, subs)
        plan = plan_crop(self.stage_dir, width, height, size=self.request["size"])
        crop_clip_into(self.stage_dir, self.folder, plan, subs, self.progress)
        for stale in SUBFOLDERS:
            if stale not in subs:
                shutil.rmtree(self.folder / stale, ignore_errors=True)
        window = self.clip.meta.get("fov_box") if self.request["fov"] else None  # crop_box: the square in source-frame pixels
        return {"crop_box": compose_box(window, plan), "box_in_stage": list(plan.crop_box), "size": self.request["size"], "subfolders": subs}

    def _flip(self, flip_dir: Path):
        from .flip import flip

        result = flip(self.folder, flip_dir, overwrite=True, progress=self.progress)
        meta = read_meta(flip_dir) or {}
        for key in ("stages", "request", "status"):
            meta.pop(key, None)
        meta["clip"] = flip_dir.name
        from .clip import write_meta

        write_meta(flip_dir, meta)
        return result


def _holds_frames(folder: Path, subs: list[str], frames) -> bool:
    """Each of ``subs`` in ``folder`` holds the same frame names, ``frames`` of them (when known):
    a clip folder with a frame (or a subfolder) deleted since it was made is not complete."""
    from . import media

    names = None
    for sub in subs:
        if not (folder / sub).is_dir():
            return False
        found = sorted(f.name for f in media.list_frame_files(folder / sub, sequence=False))
        if (names is not None and found != names) or (isinstance(frames, int) and len(found) != frames):
            return False
        names = found
    return True


class _StageFailed(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


def _is_missing_dependency(exc: BaseException) -> bool:
    return isinstance(exc, (ImportError, MissingDependency))


def _work_folders_note(output: Path, message: str) -> str:
    """For a stage that failed on a full disk (or quota): the clips' work folders under ``output``
    that hold intermediate frames (hidden, and kept by --keep-work or an unfinished clip), how much,
    and what deleting them costs; else nothing."""
    from .files import FFMPEG_REFUSALS
    from .weights_manifest import human_size

    if not any(f"({text})" in message for text, code in FFMPEG_REFUSALS.items() if code in (errno.ENOSPC, errno.EDQUOT)):
        return ""
    held = {}
    for work in sorted(output.glob(f"*/{WORK}")):
        size = 0
        for root, _, names in os.walk(work):
            for name in names:
                try:
                    size += os.lstat(os.path.join(root, name)).st_size
                except OSError:  # removed meanwhile (another run's temporary)
                    pass
        if size:
            held[work] = size
    if not held:
        return ""
    names = ", ".join(shown(work) for work in list(held)[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    return f"; the hidden work folders {names} hold {human_size(sum(held.values()))} of intermediate frames: deleting them frees that space (a later run redoes what it needs)"


def _install_hint(stage: str) -> str | None:
    try:
        if stage == "densepose":
            from .densepose import install_command

            return install_command()
        if stage == "matte":
            from .matting import INSTALL_HINT

            return INSTALL_HINT
    except Exception:  # the hint is a courtesy; never fail over it
        return None
    return None


def _now() -> str:
    from .clip import now

    return now()


# ----------------------------------------------------------------------------- the command


def _preflight(sources: list[Source], output: Path, flip: bool, overwrite: bool) -> None:
    """Refuse (before any work) to write into folders that are not this tool's clips of these sources.

    With ``overwrite`` nothing is deleted here: a folder in the way that holds anything but an
    earlier output's files is refused (``media.check_only_outputs_in``); a clip folder in the way
    is renamed aside (a hidden name that no sweep removes, ``_aside``) and deleted only once its
    replacement holds a clip (``_Runner.run``, which finds it by name: ``_Runner.replaced``); a
    folder in the way of the mirrored clip is replaced in one step by the flip stage itself.
    """
    names = {source.name for source in sources}
    if flip:
        for source in sources:
            if source.name + FLIP_SUFFIX in names:
                raise UserError(f"{source.path}: with --flip, clip {source.name!r} would write {source.name}{FLIP_SUFFIX}/, the name of another input; rename one")
    from .media import check_apart, check_names, check_only_outputs_in, check_writable

    for source in sources:
        folders = [output / source.name] + ([output / f"{source.name}{FLIP_SUFFIX}"] if flip else [])
        for folder in folders:
            check_names(folder, f"rename {shown(source.path)} (its clip folder takes its name)")
            check_writable(folder)  # a file in the way, no permission, a read-only disk: said before any work
            check_apart(folder, [s.path for s in sources])  # a clip folder never is, holds or lies inside an input
            if not folder.exists():
                continue
            meta = read_meta(folder, damaged_ok=overwrite) if folder.is_dir() else None
            is_flip = folder.name.endswith(FLIP_SUFFIX) and folder != output / source.name
            ours = meta is not None and (
                meta.get("flip", {}).get("of") == str(output / source.name) if is_flip else meta.get("source", {}).get("path") == str(source.path)
            )
            if ours:
                continue
            if overwrite:
                check_only_outputs_in(folder)  # an earlier output is replaced; a folder of the user's own files never
            else:
                what = "is not a clip folder made from it" if meta is None else f"holds a clip made from {meta.get('source', {}).get('path', 'another source')}"
                raise UserError(f"{folder}: exists and {what} ({source.path}); pass --overwrite to replace it or choose another -o")
    for source in sources:  # only once every folder passed: a refusal above moves nothing
        folder = output / source.name
        if overwrite and (folder.exists() or folder.is_symlink()) and not _ours(folder, source):
            _aside(folder)


def _ours(folder: Path, source: Source) -> bool:
    meta = read_meta(folder, damaged_ok=True) if folder.is_dir() else None
    return meta is not None and meta.get("source", {}).get("path") == str(source.path)


def _aside(folder: Path) -> Path:
    """Rename what is in the way of a clip folder to ``.NAME.replaced-TIME-PID`` beside it (one
    atomic rename: it is never lost, even if the run is killed)."""
    target = folder.with_name(f".{_aside_stem(folder)}.replaced-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.rename(folder, target)
    return target


def _aside_stem(folder: Path) -> str:
    """The clip's name in ``_aside``'s names, cut (``files.short_name``) where the whole would not fit."""
    from .files import short_name

    return short_name(folder.name, 40)


def _outcome(source: Source, folder: Path, status: str, *, frames=None, stages=None, errors=None, flip=None, replaced=None) -> dict:
    """One clip's entry of ``PreprocessResult.clips``: the same keys in the same order for every status;
    ``replaced`` (what was moved aside, ``_aside``) only when there is one."""
    return {
        "name": source.name,
        "source": str(source.path),
        "output": str(folder),
        "status": status,
        "frames": frames,
        "stages": {} if stages is None else stages,
        "errors": {} if errors is None else errors,
        "flip": flip,
        **({"replaced": replaced} if replaced else {}),
    }


def _one_clip(source: Source, folder: Path, request: dict, **options) -> dict:
    """Bring one clip folder up to date; its outcome (``PreprocessResult.clips``)."""
    runner = _Runner(source, folder, request, **options)
    try:
        _signature(source)
    except _SourceGone as exc:  # nothing of its clip folder is read or changed
        return _outcome(source, folder, "failed", errors={"preprocess": str(exc)})
    if not runner.up_to_date():
        return runner.run()
    runner.tidy()
    meta = read_meta(folder) or {}
    return _outcome(source, folder, "up-to-date", frames=meta.get("frames"),
                    stages={k: v.get("status") for k, v in meta.get("stages", {}).items()},
                    flip=str(folder.with_name(folder.name + FLIP_SUFFIX)) if request["flip"] else None)


def preprocess(
    inputs,
    output: Path | str,
    *,
    flip: bool = False,
    fov: str | None = None,
    size: int = CROP_SIZE,
    fps: float = FRAMES_FPS,
    skip: str | None = None,
    force: bool = False,
    keep_work: bool = False,
    models: Path | str | None = None,
    densepose_weights: Path | str | None = None,
    min_score: float = DensePoseSettings.min_score,
    fill_missing: bool = DensePoseSettings.fill_missing,
    min_detected: float = DensePoseSettings.min_detected,
    allow_truncated: bool = False,
    overwrite: bool = False,
    progress=None,
) -> PreprocessResult:
    """Run the chain for each video of ``inputs`` into ``output/<clip>/`` (see the module docstring).

    ``inputs``: videos, folders of videos (or a folder of frames), list files (one path a line).
    ``skip``: ``densepose``, ``matte`` or both (comma-separated). ``overwrite`` replaces folders in
    the way that are not this tool's clips of these inputs; ``force`` recomputes this tool's clips.
    ``models``: the weights folder of the DensePose and matting stages; their networks are loaded
    once and reused for every clip. ``densepose_weights``, ``min_score``, ``fill_missing`` and
    ``min_detected`` are ``densepose``'s ``weights``, ``min_score``, ``fill_missing`` and
    ``min_detected``: a clip where DensePose found a person in too few frames gets its DensePose
    stage ``failed`` (the clip is ``incomplete``, exit 1) with the fix in the message. A video that
    does not decode to its end is refused unless ``allow_truncated``.
    """
    from .crop import check_size, parse_fov
    from .folders import created_folders
    from .frames import check_fps

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise UserError("nothing to preprocess: give videos, folders of videos or a list file")
    from .media import input_path, output_path

    output = output_path(output).resolve()
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a folder; -o takes the folder that receives one clip folder per video")
    size = check_size(size)
    if size == 0:
        raise UserError("--size 0: the clip folder needs square frames; give a size such as 512")
    fps = check_fps(fps)
    if fov is not None:
        width, height = parse_fov(fov, as_size=True)  # the field-of-view stage writes frames of that size
        fov = f"{width}x{height}"
    skipped = parse_skip(skip)
    if set(SKIPPABLE) - skipped:  # a model stage reads its weights there: a file (or "") is refused before any work
        from .weights_layout import models_root

        models_root(models)
    weights = input_path(densepose_weights).resolve() if densepose_weights is not None else None
    dp_settings = DensePoseSettings(weights, min_score, fill_missing, min_detected)
    dp_settings.validate()
    sources = collect_sources(inputs, fps=fps)
    _preflight(sources, output, flip, overwrite)
    request = {"fps": fps, "size": size, "fov": fov, "skip": sorted(skipped), "flip": bool(flip), "allow_truncated": bool(allow_truncated)}

    started = time.perf_counter()
    result = PreprocessResult(str(output))
    unavailable: dict = {}
    networks = _Networks(models, progress, dp_settings)
    with created_folders(output):  # a run refused before its first clip leaves no new empty folder
        for index, source in enumerate(sources):
            try:
                run = claim(output / source.name)  # one run at a time per clip (two jobs whose lists overlap)
            except UserError as exc:
                if len(sources) == 1:
                    raise
                run = None
                outcome = _outcome(source, output / source.name, "failed", errors={"preprocess": str(exc)})
            if index == 0 and progress is not None:  # after the first claim: a run refused there shows no progress first
                progress("clips", 0, len(sources))
            if run is not None:
                with run:
                    outcome = _one_clip(source, output / source.name, request, force=force, keep_work=keep_work, progress=progress,
                                        unavailable=unavailable, networks=networks)
            result.clips.append(outcome)
            if progress is not None:
                progress("clips", index + 1, len(sources))
    result.seconds = round(time.perf_counter() - started, 3)
    return result
