"""The two evaluation protocols side by side: every place where ``corrected`` and ``disco`` differ.

``evaluate()`` and the metric accumulators read their choices from here and nowhere else, so this
table is the whole difference (docs/evaluation.md explains each row and the DisCo bug it copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import frames as F

# how the video metrics (FVD, FID-VID) cut a clip into samples
CLIPS = "clips"  # non-overlapping clip_length-frame clips, each one sample; a shorter rest is dropped
WHOLE_VIDEO = "whole video"  # the whole clip is one sample (the I3D of FVD averages over time)
PADDED_SEGMENTS = "padded segments"  # clip_length-frame segments, the last one filled with its last frame


@dataclass(frozen=True)
class Protocol:
    name: str
    frame_metrics: dict  # metric -> [(column, function(generated, truth) -> float)]
    definitions: dict  # column -> what the number is
    resize: Callable  # generated frame -> the ground truth's (height, width)
    resize_name: str
    lpips_definition: str
    fvd_samples: str
    fid_vid_samples: str
    average_per_video: bool  # video-metric features averaged per clip before the Fréchet distance

    def samples(self, metric: str) -> str:
        return self.fvd_samples if metric == "fvd" else self.fid_vid_samples

    def video_definition(self, metric: str, clip_length: int) -> tuple[str, str | None]:
        """What an FVD/FID-VID number means under this protocol, and a note for the report."""
        sampling = self.samples(metric)
        if sampling == WHOLE_VIDEO:
            return "DisCo: one sample per whole video (I3D logits averaged over time)", "whole video per sample"
        if sampling == PADDED_SEGMENTS:
            return f"DisCo: {clip_length}-frame segments (last frame repeated to fill), features averaged per video", None
        return f"non-overlapping {clip_length}-frame clips, each one sample", None


def _definitions(name: str) -> dict:
    return {column: text for (protocol, column), text in F.DEFINITIONS.items() if protocol == name}


PROTOCOLS = {
    "corrected": Protocol(
        name="corrected",
        frame_metrics=F.FRAME_METRICS["corrected"],
        definitions=_definitions("corrected"),
        resize=F.resize_corrected,
        resize_name="Pillow bicubic",
        lpips_definition="LPIPS on [-1,1] inputs, mean over frames",
        fvd_samples=CLIPS,
        fid_vid_samples=CLIPS,
        average_per_video=False,
    ),
    "disco": Protocol(
        name="disco",
        frame_metrics=F.FRAME_METRICS["disco"],
        definitions=_definitions("disco"),
        resize=F.resize_disco,
        resize_name="OpenCV bilinear, as DisCo",
        lpips_definition="DisCo: LPIPS fed [0,1] inputs, mean over frames",
        fvd_samples=WHOLE_VIDEO,
        fid_vid_samples=PADDED_SEGMENTS,
        average_per_video=True,
    ),
}
