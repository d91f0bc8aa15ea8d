"""Settings and result of the animate stage (no heavy imports: the CLI reads them for its defaults)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..densepose.config import BACKGROUND
from ..errors import UserError
from .windows import FUSIONS, SCHEDULES

FITS = ("crop", "pad", "stretch")
DTYPES = ("auto", "float16", "bfloat16", "float32")
MIN_SIZE, MAX_SIZE = 64, 2048  # --size: 4× the model's 512 already needs 16× its memory and time
POSE_BACKGROUND = BACKGROUND  # the DensePose renderings' background, viridis(0)


@dataclass(frozen=True)
class AnimateConfig:
    """The animator's settings; defaults are the official inference settings (paper and code)."""

    steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 1
    size: int = 512
    context_frames: int = 16
    context_overlap: int = 4
    fit: str = "crop"
    context_schedule: str = "loop"  # the official windows; "open": none wraps from the clip's end into its start
    context_fusion: str = "flat"  # the official mean of overlapping windows; "pyramid": weighed by the frame's place in each

    def validate(self) -> None:
        if not math.isfinite(self.guidance_scale):
            raise UserError(f"--guidance-scale {self.guidance_scale}: must be a finite number (7.5 is the official setting)")
        if not 1 <= self.steps <= 1000:
            raise UserError(f"--steps {self.steps}: choose between 1 and 1000 (the scheduler's training steps)")
        if not 0 <= self.seed < 2**64:
            raise UserError(f"--seed {self.seed}: choose a whole number from 0 to {2**64 - 1} (a 64-bit seed)")
        if not MIN_SIZE <= self.size <= MAX_SIZE or self.size % 8:
            raise UserError(f"--size {self.size}: must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE} (the model's own is 512)")
        if self.context_frames < 1:
            raise UserError(f"--context-frames {self.context_frames}: must be at least 1")
        if not 0 <= self.context_overlap < self.context_frames:
            raise UserError(f"--context-overlap {self.context_overlap}: must be >= 0 and smaller than --context-frames "
                            f"{self.context_frames}{'' if self.context_overlap < 0 else f'; give a smaller --context-overlap (the default is {AnimateConfig.context_overlap})'}")
        if self.fit not in FITS:
            raise UserError(f"--fit {self.fit}: choose one of {', '.join(FITS)}")
        if self.context_schedule not in SCHEDULES:
            raise UserError(f"--context-schedule {self.context_schedule}: choose one of {', '.join(SCHEDULES)}")
        if self.context_fusion not in FUSIONS:
            raise UserError(f"--context-fusion {self.context_fusion}: choose one of {', '.join(FUSIONS)}")


@dataclass(frozen=True)
class AnimateResult:
    output: str
    grid: str | None
    frames: int
    fps: float
    size: int
    seed: int
    steps: int
    device: str
    dtype: str
    seconds: float
    width: int = 0  # of the written frames: size, or with keep_aspect the motion's aspect (a video's sides even)
    height: int = 0
    start: float = 0.0  # the part animated (--start/--end), in seconds rounded down to the millisecond: its first frame's time,
    end: float = 0.0  # and its end (exclusive: its last frame's time plus one frame; the motion's end without --end, or past it)
    first_frame: int = 0  # the motion's frame the output's first one is made from (the output's are numbered from 0)
    audio: str | None = None  # the file whose sound the video got (--audio)
    audio_start: float | None = None  # with --audio: seconds into it where the video's sound starts
    resumed_from_step: int = 0
    alignment: dict | None = None  # the transform of --align (align.py)
    warnings: tuple[str, ...] = ()  # InputWarning messages: the run went on (a motion that is not DensePose, a sound that ends early)

    def to_dict(self) -> dict:
        return asdict(self)


def check_dtype(dtype: str) -> None:
    """``dtype`` if it is one of ``DTYPES``; else ``UserError``. No torch import."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
