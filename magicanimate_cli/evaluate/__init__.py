"""``magicanimate eval``: the paper's metrics between generated and ground-truth clips.

``evaluate()`` is the library entry point; the CLI options are its keyword arguments. Two
protocols (see docs/evaluation.md for the side-by-side table and the bug references):

* ``corrected``: float computation, L1 as a mean absolute error in [0, 1], SSIM on RGB and on
  luma (``ssim``, ``ssim_gray``), LPIPS on [-1, 1], FVD/FID-VID on non-overlapping clips of
  ``clip_length`` frames, each clip one sample.
* ``disco``: DisCo's evaluation code bug for bug (uint8 PSNR that wraps, L1 divided by H*W,
  grayscale SSIM, LPIPS fed [0, 1], one FVD sample per whole video, FID-VID averaged per video),
  so numbers line up with the published tables.

Inputs are videos or frames folders (or clip folders with ``images/``), one clip each or two
folders of clips paired by name. Frames are paired in order; when the generated frames have
another size they are resized to the ground truth's as the protocol says. Every number is
reported with its protocol, clip length and feature extractor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..clip import IMAGES
from ..errors import UserError
from ..progress import Progress, silent

PROTOCOLS = ("corrected", "disco")
METRICS = ("l1", "psnr", "ssim", "lpips", "fid", "fid-vid", "fvd")
SSIM_WINDOW = 7  # scikit-image's default window, in pixels: frames must be at least that wide and high
NETWORK_METRICS = ("lpips", "fid", "fid-vid", "fvd")
LOWER_IS_BETTER = {"l1", "lpips", "fid", "fid-vid", "fvd"}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings; defaults follow the paper's table and DisCo's code."""

    metrics: str = "l1,psnr,ssim,lpips,fid,fvd"  # fid-vid too with --metrics all: its weights are placed by hand
    protocol: str = "corrected"
    clip_length: int = 16  # frames per FVD/FID-VID sample (DisCo's sample_duration for FID-VID)
    batch_size: int = 16

    def metric_list(self) -> list[str]:
        names = [m.strip().lower() for m in self.metrics.split(",") if m.strip()]
        if names == ["all"]:
            return list(METRICS)
        unknown = [m for m in names if m not in METRICS]
        if unknown or not names:
            raise UserError(f"--metrics {self.metrics}: unknown {', '.join(unknown) or '(none given)'}; choose from {','.join(METRICS)}")
        return [m for m in METRICS if m in names]

    def validate(self) -> list[str]:
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol {self.protocol}: choose corrected or disco")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        metrics = self.metric_list()
        if self.clip_length < 1:
            raise UserError(f"--clip-length {self.clip_length}: must be at least 1")
        return metrics


@dataclass(frozen=True)
class Score:
    """One number and what it means."""

    value: float
    protocol: str
    definition: str
    extractor: str | None
    clip_length: int | None
    samples: int
    note: str | None = None

    def to_dict(self) -> dict:
        import math

        value = self.value if math.isfinite(self.value) else None
        out = {
            "value": value,
            "protocol": self.protocol,
            "clip_length": self.clip_length,
            "extractor": self.extractor,
            "definition": self.definition,
            "samples": self.samples,
        }
        note = self.note
        if not math.isfinite(self.value):
            why = " (identical frames give an infinite PSNR)" if self.value == math.inf else ""  # (a NaN has another cause)
            note = "; ".join(filter(None, [note, f"value is {self.value}{why}"]))
        if note:
            out["note"] = note
        return out


@dataclass(frozen=True)
class ClipScores:
    name: str
    generated: str
    ground_truth: str
    frames: int
    frames_generated: int
    frames_ground_truth: int
    size: tuple[int, int]
    resized_from: tuple[int, int] | None
    scores: dict[str, Score]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "generated": self.generated,
            "ground_truth": self.ground_truth,
            "frames": self.frames,
            "frames_generated": self.frames_generated,
            "frames_ground_truth": self.frames_ground_truth,
            "size": list(self.size),
            "resized_from": list(self.resized_from) if self.resized_from else None,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
        }


@dataclass(frozen=True)
class EvalResult:
    protocol: str
    generated: str
    ground_truth: str
    metrics: list[str]
    columns: list[str]
    clips: list[ClipScores]
    overall: dict[str, Score]
    device: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "generated": self.generated,
            "ground_truth": self.ground_truth,
            "metrics": self.metrics,
            "overall": {k: v.to_dict() for k, v in self.overall.items()},
            "clips": [c.to_dict() for c in self.clips],
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }

    def for_humans(self):
        """The Rich tables (per clip, then the distribution metrics) for a terminal."""
        from .report import tables

        return tables(self)


# ----------------------------------------------------------------------------- inputs


def _is_frames_folder(path: Path) -> bool:
    from ..media import is_image

    return path.is_dir() and any(p.is_file() and is_image(p) and not p.name.startswith(".") for p in path.iterdir())


def _loose_images(folder: Path) -> list[Path]:
    """Images in a folder that also holds clips (videos, folders of frames): a reference image
    beside the results, a cover; left out, and said (``evaluate``'s notes)."""
    from ..media import is_image

    if not folder.is_dir() or not _clips_in(folder):
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


def _single_clip(path: Path) -> Path | None:
    """The frames source if ``path`` is one clip (video, frames folder, clip folder), else None. A
    folder that holds clips is a folder of clips, whatever images lie beside them."""
    from ..media import is_video

    if path.is_file():
        if is_video(path):
            return path
        raise UserError(f"{path}: not a video; pass an .mp4, a folder of frames, or a folder of clips")
    return _folder_clip(path)


def _folder_clip(folder: Path) -> Path | None:
    """The frames of a clip folder: the folder itself if it holds frames and no clips, else its
    ``images/`` (a TikTok-style clip, whatever thumbnail lies beside it); None for neither. One
    rule for a clip given alone and for a clip in a folder of clips."""
    if _is_frames_folder(folder) and not _holds_clips(folder):
        return folder
    if _is_frames_folder(folder / IMAGES):
        return folder / IMAGES
    return None


def _holds_clips(folder: Path) -> bool:
    """Whether a folder holds a clip (a video, a folder of frames or with ``images/``); one level deep."""
    from ..media import is_video

    return any(
        not entry.name.startswith(".")
        and ((entry.is_file() and is_video(entry)) or (entry.is_dir() and (_is_frames_folder(entry) or _is_frames_folder(entry / IMAGES))))
        for entry in folder.iterdir()
    )


def _clips_in(folder: Path) -> dict[str, Path]:
    from ..media import is_video

    clips = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and is_video(entry):
            source = entry
        elif entry.is_dir():
            source = _folder_clip(entry)
        else:
            source = None
        if source is not None:
            name = entry.stem if entry.is_file() else entry.name
            if name in clips:
                raise UserError(f"{folder}: two clips named {name} ({clips[name].name}, {entry.name}); keep one")
            clips[name] = source
    return clips


def pair_clips(generated: Path, ground_truth: Path) -> list[tuple[str, Path, Path]]:
    """``(name, generated source, ground-truth source)`` for every clip to compare."""
    for label, path in (("GENERATED", generated), ("GROUND_TRUTH", ground_truth)):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder ({label})")
        if path.is_dir() and not any(path.iterdir()):
            raise UserError(f"{path}: empty folder ({label}); give a clip (a video or a folder of frames) or a folder of clips")
    single_g, single_t = _single_clip(generated), _single_clip(ground_truth)
    if single_g is not None and single_t is not None:
        name = generated.stem if generated.is_file() else generated.name
        return _distinct([(name, single_g, single_t)])
    if (single_g is None) != (single_t is None):
        one, other = (generated, ground_truth) if single_g is not None else (ground_truth, generated)
        raise UserError(f"{one}: is one clip but {other} is a folder of clips; pass two clips or two folders of clips")
    clips_g, clips_t = _clips_in(generated), _clips_in(ground_truth)
    # `animate --grid` writes NAME_grid.mp4 beside NAME.mp4: not a result to score
    clips_g = {n: p for n, p in clips_g.items() if not (n.endswith("_grid") and n[: -len("_grid")] in clips_g and n not in clips_t)}
    if not clips_g:
        raise UserError(f"{generated}: no clips inside (expected .mp4 files or folders of frames)")
    missing_t = [n for n in clips_g if n not in clips_t]
    missing_g = [n for n in clips_t if n not in clips_g]
    if missing_t or missing_g:
        parts = []
        if missing_t:
            parts.append(f"{ground_truth} has no clip named {', '.join(missing_t[:5])}{' ...' if len(missing_t) > 5 else ''}")
        if missing_g:
            parts.append(f"{generated} has no clip named {', '.join(missing_g[:5])}{' ...' if len(missing_g) > 5 else ''}")
        raise UserError(f"{'; '.join(parts)}; clips are paired by name, so both folders must hold the same names")
    return _distinct([(name, clips_g[name], clips_t[name]) for name in clips_g])


def _distinct(pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, Path, Path]]:
    """Refuse a clip that is its own ground truth (one path typed twice, a link to the other side):
    its scores would be perfect whatever the animation."""
    for _name, source_g, source_t in pairs:
        if source_g.resolve() == source_t.resolve():
            raise UserError(f"{source_g}: is both the generated clip and the ground truth ({source_t}); "
                            "pass the generated clips, then the ground truth")
    return pairs


def _check_not_grids(pairs, infos) -> None:
    """Refuse an ``animate --grid`` output given as the animation: its three panels (reference,
    poses, animation) would be squeezed into the ground truth's frame and scored. Known by its
    name (``NAME_grid.mp4``, ``NAME_grid/``) and a shape unlike the ground truth's."""
    for (name, source_g, _), (info_g, info_t) in zip(pairs, infos):
        shape_g, shape_t = info_g.width / info_g.height, info_t.width / info_t.height
        if name.endswith("_grid") and abs(shape_g / shape_t - 1) > 0.01:
            base = source_g.parent if source_g.name == IMAGES else source_g
            animation = base.with_name(name[: -len("_grid")] + (base.suffix if base.is_file() else ""))
            raise UserError(f"{source_g}: {info_g.width}x{info_g.height} frames of an `animate --grid` output (reference, poses, "
                            f"animation side by side), not the animation; pass {animation} instead")


# ----------------------------------------------------------------------------- availability


def unavailable(metrics: list[str], protocol: str, models_dir: Path, download: bool) -> dict[str, str]:
    """``metric -> how to enable it`` for every requested metric that cannot run here."""
    import importlib.util

    from . import extractors as X
    from . import weights as W

    problems = {}
    if protocol == "disco" and importlib.util.find_spec("cv2") is None:
        for metric in metrics:
            problems[metric] = f"the disco protocol reads frames through OpenCV: {X.INSTALL['cv2']}"
    for metric in metrics:
        if metric not in NETWORK_METRICS or metric in problems:
            continue
        if importlib.util.find_spec("torch") is None:
            problems[metric] = "needs PyTorch: pip install torch"
            continue
        missing = X.missing_packages(metric)
        if missing:
            problems[metric] = " and ".join(X.INSTALL[name] for name in missing)
            continue
        for key in X.WEIGHT_KEYS[metric]:
            weight = W.WEIGHTS[key]
            if not weight.path(models_dir).is_file() and not (download and weight.url):
                problems[metric] = W.fetch_hint(weight, models_dir, download)
    return problems


def _resolve_device(device: str):
    import torch

    from ..device import resolve_device

    return torch.device(resolve_device(device))


# ----------------------------------------------------------------------------- the run


def evaluate(
    generated: Path | str,
    ground_truth: Path | str,
    *,
    metrics: str = EvalConfig.metrics,
    protocol: str = EvalConfig.protocol,
    clip_length: int = EvalConfig.clip_length,
    batch_size: int = EvalConfig.batch_size,
    models: Path | str | None = None,
    device: str = "auto",
    download: bool = True,
    progress: Progress | None = None,
    extractors: dict | None = None,
) -> EvalResult:
    """Compare ``generated`` with ``ground_truth`` clip by clip and overall.

    ``extractors`` maps ``lpips``/``fid``/``fvd``/``fid-vid`` to ready scorers/extractors (the
    wrappers of ``extractors.py``), replacing the real networks: batch jobs reuse loaded ones,
    tests pass small random-weight networks.
    """
    from .. import media
    from ..device import check_device, resolve_device
    from ..weights_layout import resolve_models_dir
    from .accumulators import accumulators
    from .protocols import PROTOCOLS

    start = time.perf_counter()
    wanted = EvalConfig(metrics, protocol, clip_length, batch_size).validate()
    if check_device(device).startswith("cuda"):
        resolve_device(device)  # a missing GPU is said before any frame is read, network metrics or not
    generated, ground_truth = media.input_path(generated), media.input_path(ground_truth)
    pairs = pair_clips(generated, ground_truth)
    loose = [(folder, images) for folder in (generated, ground_truth) if (images := _loose_images(folder))]
    infos = [(media.probe(g), media.probe(t)) for _, g, t in pairs]
    small = next(((t, it) for (_, _, t), (_, it) in zip(pairs, infos) if min(it.width, it.height) < SSIM_WINDOW), None)
    if "ssim" in wanted and small is not None:  # scikit-image's window would not fit: exit 1 after the other clips' work
        raise UserError(f"{small[0]}: frames of {small[1].width}x{small[1].height} are smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} "
                        "window; leave ssim out of --metrics")
    _check_not_grids(pairs, infos)
    given = dict(extractors or {})
    models_dir = resolve_models_dir(models)
    _check_available(wanted, protocol, clip_length, given, models_dir, download)
    nets, torch_device = _networks(wanted, protocol, clip_length, given, models_dir, device, download, progress)
    rules = PROTOCOLS[protocol]
    metrics_ = accumulators(wanted, nets, rules, clip_length, batch_size)

    counter = _Counter(progress, sum(min(ig.frames, it.frames) for ig, it in infos))
    clips: list[ClipScores] = []
    notes: list[str] = [f"{folder}: {len(images)} image(s) beside its clips left out ({', '.join(p.name for p in images[:3])}"
                        f"{', ...' if len(images) > 3 else ''})" for folder, images in loose]
    for (name, source_g, source_t), (info_g, info_t) in zip(pairs, infos):
        clip = _score_clip(name, source_g, source_t, info_g, info_t, metrics_, rules, counter)
        clips.append(clip)
        notes += _clip_notes(clip, metrics_, rules, clip_length)
        notes += _rate_note(name, source_g, source_t, info_g, info_t)
        notes += _colour_notes(name, source_g, source_t)

    lengths = {clip.frames for clip in clips}
    uniform = lengths.pop() if len(lengths) == 1 else None
    overall: dict[str, Score] = {}
    for metric in metrics_:
        overall.update(metric.overall(uniform, notes))
    frame_columns = [column for metric in metrics_ for column in metric.columns]
    columns = frame_columns + [m for m in ("fid", "fid-vid", "fvd") if m in overall]
    return EvalResult(
        protocol, str(generated), str(ground_truth), wanted, columns, clips, overall,
        str(torch_device) if torch_device is not None else "cpu", time.perf_counter() - start, notes,
    )  # fmt: skip


# ----------------------------------------------------------------------------- its steps


def _check_available(wanted: list[str], protocol: str, clip_length: int, given: dict, models_dir: Path, download: bool) -> None:
    """Every requested metric can run here (packages, weights, clip length), or one error naming them all."""
    from . import extractors as X

    if "fvd" in wanted and protocol == "corrected":
        needed = getattr(given["fvd"], "min_frames", 1) if "fvd" in given else X.I3D_MIN_FRAMES
        if clip_length < needed:
            raise UserError(f"--clip-length {clip_length}: FVD's I3D needs clips of at least {needed} frames (16 is usual)")
    problems = unavailable([m for m in wanted if m not in given], protocol, models_dir, download)
    if problems:
        detail = "; ".join(f"{metric}: {hint}" for metric, hint in problems.items())
        usable = [m for m in wanted if m not in problems]
        rest = f" or leave them out: --metrics {','.join(usable)}" if usable else ""
        raise UserError(f"metrics not available here: {detail}; install/fetch them{rest}")


def _networks(wanted, protocol, clip_length, given, models_dir, device, download, progress) -> tuple[dict, object]:
    """The networks of the requested network metrics (the given ones first), and the torch device they run on."""
    from . import extractors as X

    builders = {
        "lpips": lambda ctx: X.build_lpips(ctx, protocol),
        "fid": X.build_fid,
        "fvd": X.build_fvd,
        "fid-vid": lambda ctx: X.build_fid_vid(ctx, clip_length),
    }
    to_build = [m for m in wanted if m in NETWORK_METRICS and m not in given]
    torch_device = _resolve_device(device) if to_build else None
    ctx = X.Context(models_dir, torch_device, download=download, progress=progress)
    return {m: given[m] if m in given else builders[m](ctx) for m in wanted if m in NETWORK_METRICS}, torch_device


class _Counter:
    """Frames compared so far, reported as the ``evaluate`` stage."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress or silent, total, 0

    def step(self) -> None:
        self.done += 1
        self.progress("evaluate", self.done, self.total)


def _score_clip(name, source_g, source_t, info_g, info_t, metrics_: list, rules, counter: _Counter) -> ClipScores:
    """Feed one clip's frame pairs to every accumulator; its per-clip scores."""
    from .. import media

    for metric in metrics_:
        getattr(metric, "start_clip", lambda _name: None)(name)
    count, resized_from, size = 0, None, (info_t.height, info_t.width)
    for frame_g, frame_t in zip(media.iter_frames(source_g), media.iter_frames(source_t)):
        size = frame_t.shape[:2]
        paired = frame_g
        if frame_g.shape[:2] != size:
            resized_from = frame_g.shape[:2]
            paired = rules.resize(frame_g, size)
        for metric in metrics_:
            metric.add(frame_g, paired, frame_t)
        count += 1
        counter.step()
    if count == 0:
        raise UserError(f"{source_g}: no frames to compare")
    scores: dict[str, Score] = {}
    for metric in metrics_:
        scores.update(metric.end_clip(name, count))
    return ClipScores(name, str(source_g), str(source_t), count, info_g.frames, info_t.frames, tuple(size), resized_from, scores)


def _clip_notes(clip: ClipScores, metrics_: list, rules, clip_length: int) -> list[str]:
    from .accumulators import VideoMetric
    from .protocols import CLIPS

    notes = []
    if any(isinstance(m, VideoMetric) and m.sampling == CLIPS for m in metrics_) and clip.frames < clip_length:
        notes.append(f"{clip.name}: {clip.frames} frames, shorter than --clip-length {clip_length}: no FVD/FID-VID sample from it")
    if clip.frames_generated != clip.frames_ground_truth:
        notes.append(f"{clip.name}: generated has {clip.frames_generated} frames, ground truth {clip.frames_ground_truth}: compared the first {clip.frames}")
    if clip.resized_from:
        (h0, w0), (h1, w1) = clip.resized_from, clip.size
        notes.append(f"{clip.name}: generated frames {w0}x{h0} resized to {w1}x{h1} ({rules.resize_name})")
    return notes


def _rate_note(name: str, source_g: Path, source_t: Path, info_g, info_t) -> list[str]:
    """Two clips at different frame rates: frames are paired by index, so frame i of one is not
    the moment of frame i of the other; said, not hidden. A video's rate is its header's, a clip
    folder's the one its ``meta.json`` records; a bare frames folder has no rate of its own."""
    rate_g, rate_t = _rate(source_g, info_g), _rate(source_t, info_t)
    from ..media import same_rate

    if rate_g is None or rate_t is None or same_rate(rate_g, rate_t):
        return []
    return [f"{name}: generated is {rate_g:g} fps, ground truth {rate_t:g} fps: frames are paired by index, not by time, "
            "so the scores compare different moments; render or resample both at the same fps"]


def _rate(source: Path, info) -> float | None:
    from ..clip import clip_fps
    from ..media import is_video

    if is_video(source):
        return info.fps
    return clip_fps(source.parent) if source.name == IMAGES else None


GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # Pillow's single-channel modes


def _frames_kind(source: Path) -> tuple[str | None, bool]:
    """``(first frame's file name if it is grayscale else None, whether it has transparency)`` for a
    folder of frames, from its first file's header; a grayscale video (``gray*`` pixels) too."""
    from PIL import Image

    from .. import media

    if media.is_video(source):
        return (source.name if media.pixel_format(source).startswith(("gray", "ya", "mono")) else None), False
    first = media.list_frame_files(source)[0]
    try:
        with Image.open(first) as image:
            gray = image.mode in GRAY_MODES or (image.mode == "P" and image.palette.mode in GRAY_MODES)
            return (first.name if gray else None), media.has_transparency(image)
    except Exception:  # noqa: BLE001 - the reader says why, where it reads the frame
        return None, False


def _colour_notes(name: str, source_g: Path, source_t: Path) -> list[str]:
    """Frames read otherwise than their file holds, said: a grayscale side against a colour one
    (every metric counts the colour as error), transparency (composited over white, as shown)."""
    (gray_g, alpha_g), (gray_t, alpha_t) = _frames_kind(source_g), _frames_kind(source_t)
    notes = []
    if (gray_g is None) != (gray_t is None):
        side, other, file = ("ground truth", "generated", gray_t) if gray_t else ("generated", "ground truth", gray_g)
        notes.append(f"{name}: the {side} frames are grayscale ({file}) and the {other} ones in colour: every metric counts "
                     "the colour as error; give both in colour, or both in gray")
    for side, alpha in (("generated", alpha_g), ("ground truth", alpha_t)):
        if alpha:
            notes.append(f"{name}: the {side} frames have transparency: scored as shown, over white "
                         "(DisCo's cv2.imread dropped the alpha and kept the colours under it)")
    return notes
