"""One accumulator per metric: frames go in clip by clip, per-clip and overall ``Score``s come out.

Each accumulator has the same three steps, which ``evaluate()`` drives:

* ``add(generated, paired, truth)`` for every frame pair (``paired`` is the generated frame
  resized to the ground truth's size, as the protocol says; the networks of FID and the video
  metrics prepare the unresized frame themselves);
* ``end_clip(name, frames)`` when a clip is done: its per-clip scores (frame metrics only);
* ``overall(clip_length, notes)``: the number(s) over all clips.

The protocol-specific choices come from ``protocols.Protocol``.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .frechet import Batcher, fid_from_features
from .protocols import CLIPS, PADDED_SEGMENTS, WHOLE_VIDEO, Protocol


def _score(value: float, protocol: Protocol, definition: str, extractor, clip_length, samples: int, note=None):
    from . import Score

    return Score(value, protocol.name, definition, extractor, clip_length, samples, note)


class FrameMetric:
    """L1, PSNR, SSIM (one column each): the mean over a clip's frames, and over all frames.

    Identical frames have an infinite PSNR (the corrected protocol; DisCo's caps it at 100 dB): they
    are left out of the mean, which their note counts, so that one such frame does not make a
    clip's and the overall PSNR infinite. Only where every frame is identical is the value ``inf``.
    """

    def __init__(self, column: str, function, protocol: Protocol) -> None:
        self.columns = (column,)
        self.column, self.function, self.protocol = column, function, protocol
        self.clip: list[float] = []
        self.all: list[float] = []

    def add(self, generated, paired, truth) -> None:
        self.clip.append(self.function(paired, truth))

    def end_clip(self, name: str, frames: int) -> dict:
        series, self.clip = self.clip, []
        self.all.extend(series)
        return {self.column: self._mean(series, frames)}

    def overall(self, clip_length: int | None, notes: list[str]) -> dict:
        return {self.column: self._mean(self.all, clip_length)}

    def _mean(self, series: list[float], clip_length: int | None):
        finite = [v for v in series if np.isfinite(v)]
        note = None
        if finite and len(finite) < len(series):
            note = f"{len(series) - len(finite)} of {len(series)} frame pairs are identical (infinite PSNR) and are left out of the mean"
            series = finite
        value = float(np.mean(series)) if series else float("nan")
        return _score(value, self.protocol, self.protocol.definitions[self.column], None, clip_length, len(series), note)


class Lpips(FrameMetric):
    """LPIPS: a network scores the frame pairs, ``batch_size`` at a time."""

    def __init__(self, scorer, protocol: Protocol, batch_size: int) -> None:
        super().__init__("lpips", None, protocol)
        self.scorer, self.batch_size = scorer, batch_size
        self.pending: list[tuple] = []

    def add(self, generated, paired, truth) -> None:
        self.pending.append((paired, truth))
        if len(self.pending) >= self.batch_size:
            self._flush()

    def end_clip(self, name: str, frames: int) -> dict:
        self._flush()
        return super().end_clip(name, frames)

    def _flush(self) -> None:
        if self.pending:
            generated = np.stack([pair[0] for pair in self.pending])
            truth = np.stack([pair[1] for pair in self.pending])
            self.clip.extend(self.scorer(generated, truth).tolist())
            self.pending.clear()

    def _mean(self, series: list[float], clip_length: int | None):
        value = float(np.mean(series)) if series else float("nan")
        return _score(value, self.protocol, self.protocol.lpips_definition, self.scorer.name, clip_length, len(series))


class Fid:
    """FID: per-frame features of every frame of every clip, one Fréchet distance overall."""

    columns = ()

    def __init__(self, extractor, protocol: Protocol, batch_size: int) -> None:
        self.extractor, self.protocol = extractor, protocol
        self.sides = {side: Batcher(extractor, batch_size) for side in ("g", "t")}

    def add(self, generated, paired, truth) -> None:
        self.sides["g"].add(self.extractor.prepare(generated))
        self.sides["t"].add(self.extractor.prepare(truth))

    def end_clip(self, name: str, frames: int) -> dict:
        return {}

    def overall(self, clip_length: int | None, notes: list[str]) -> dict:
        feats_g, feats_t = self.sides["g"].result(), self.sides["t"].result()
        note_small_sample("fid", feats_g, notes)
        definition = "Fréchet distance of per-frame features, all frames of all clips"
        value = fid_from_features(feats_g, feats_t, notes, "fid")
        return {"fid": _score(value, self.protocol, definition, self.extractor.name, clip_length, len(feats_g))}


class VideoMetric:
    """FVD and FID-VID: clip features from samples cut as the protocol says, one Fréchet distance overall."""

    columns = ()

    def __init__(self, metric: str, extractor, protocol: Protocol, clip_length: int, batch_size: int) -> None:
        self.metric, self.extractor, self.protocol, self.clip_length = metric, extractor, protocol, clip_length
        self.sampling = protocol.samples(metric)
        per_batch = 1 if self.sampling == WHOLE_VIDEO else max(1, batch_size // clip_length)
        self.sides = {side: Batcher(extractor, per_batch) for side in ("g", "t")}
        self.frames: dict[str, list] = {"g": [], "t": []}
        self.name: str | None = None

    def add(self, generated, paired, truth) -> None:
        for side, frame in (("g", generated), ("t", truth)):
            self.frames[side].append(self.extractor.prepare(frame))
            if self.sampling == CLIPS and len(self.frames[side]) == self.clip_length:
                self.sides[side].add(np.stack(self.frames[side]), group=self.name)
                self.frames[side] = []

    def start_clip(self, name: str) -> None:
        self.name = name

    def end_clip(self, name: str, frames: int) -> dict:
        for side in ("g", "t"):
            clip, self.frames[side] = self.frames[side], []
            if self.sampling == CLIPS:  # the rest, shorter than a clip, is dropped
                continue
            clip = np.stack(clip)
            if self.sampling == WHOLE_VIDEO:
                needed = self.extractor.min_frames
                if len(clip) < needed:
                    raise UserError(f"{name}: {len(clip)} frames; the I3D of FVD needs at least {needed}")
                self.sides[side].add(clip, group=name)
            elif self.sampling == PADDED_SEGMENTS:
                pad = (-len(clip)) % self.clip_length
                if pad:
                    clip = np.concatenate([clip, np.repeat(clip[-1:], pad, axis=0)])
                for start in range(0, len(clip), self.clip_length):
                    self.sides[side].add(clip[start : start + self.clip_length], group=name)
        return {}

    def overall(self, clip_length: int | None, notes: list[str]) -> dict:
        average = self.protocol.average_per_video
        feats_g, feats_t = self.sides["g"].result(average_groups=average), self.sides["t"].result(average_groups=average)
        definition, note = self.protocol.video_definition(self.metric, self.clip_length)
        length = clip_length if self.sampling == WHOLE_VIDEO else self.clip_length
        if len(feats_g) < 2 or len(feats_t) < 2:
            more = "more clips" if self.sampling != CLIPS else "more or longer clips, or a smaller --clip-length"
            raise UserError(f"{self.metric}: {len(feats_g)} sample(s); a Fréchet distance needs at least 2 ({more})")
        note_small_sample(self.metric, feats_g, notes)
        value = fid_from_features(feats_g, feats_t, notes, self.metric)
        return {self.metric: _score(value, self.protocol, definition, self.extractor.name, length, len(feats_g), note)}


def note_small_sample(metric: str, features, notes: list[str]) -> None:
    if len(features) and len(features) <= features.shape[1]:
        notes.append(
            f"{metric}: {len(features)} samples for {features.shape[1]}-d features: the covariance is rank-deficient and the "
            "distance biased; compare it only with numbers from the same sample count"
        )


def accumulators(wanted: list[str], nets: dict, protocol: Protocol, clip_length: int, batch_size: int) -> list:
    """The accumulators of the requested metrics, in the report's order: frame columns, LPIPS, FID, FVD, FID-VID."""
    found: list = []
    for metric in wanted:
        for column, function in protocol.frame_metrics.get(metric, []):
            found.append(FrameMetric(column, function, protocol))
    if "lpips" in nets:
        found.append(Lpips(nets["lpips"], protocol, batch_size))
    if "fid" in nets:
        found.append(Fid(nets["fid"], protocol, batch_size))
    for metric in ("fvd", "fid-vid"):
        if metric in nets:
            found.append(VideoMetric(metric, nets[metric], protocol, clip_length, batch_size))
    return found
