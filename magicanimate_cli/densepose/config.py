"""Settings and result of the DensePose stage (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UserError

BACKGROUND = (68, 1, 84)
"""The canvas colour of every DensePose render, viridis(0) as RGB (official-inference §10.3); row 0
of ``palette.PALETTE``. Here, away from numpy, for the commands that only need the colour."""


@dataclass(frozen=True)
class DensePoseConfig:
    """The stage's settings and their defaults.

    * ``batch_size`` 4: frames per forward pass. Batching pays on a GPU (see
      benchmarks/densepose_batching.py); 4 frames of 800×1333 fit in a few GiB.
    * ``min_score`` 0.8: keep people detected with a score above this. It is ``apply_net show``'s
      default; vid2densepose runs detectron2's 0.05, which paints spurious "people" (bits of
      furniture, shadows, reflections) that the animator then treats as limbs.
    * ``max_people`` 1: keep the best-scoring person only (0 keeps everyone). MagicAnimate animates
      one reference person, so every other body in the driving video becomes a ghost limb or
      a second copy; crop to the subject first when several people are in view.
    * ``smooth`` 0 (off) or an odd K: per-pixel majority label over K frames.
    * ``fill_missing`` off: frames without a person are reported; with it they take the labels of
      the nearest frame that has one.
    * ``min_detected`` 0.5: the stage fails (exit 1) when a person was found in fewer than this
      fraction of the frames, since a driving video that is mostly empty or mostly copies of a
      few frames is not worth animating. ``fill_missing`` accepts the gaps knowingly and turns
      the check off; 0 turns it off too.
    """

    batch_size: int = 4
    min_score: float = 0.8
    max_people: int = 1
    smooth: int = 0
    fill_missing: bool = False
    min_detected: float = 0.5

    def validate(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if not 0.0 <= self.min_score < 1.0:
            raise UserError(f"--min-score {self.min_score}: must be in [0, 1)")
        if self.max_people < 0:
            raise UserError(f"--max-people {self.max_people}: must be 0 (everyone) or more")
        if self.smooth < 0 or (self.smooth > 1 and self.smooth % 2 == 0):
            raise UserError(f"--smooth {self.smooth}: use 0 (off) or an odd window (3, 5, ...) centred on each frame")
        if not 0.0 <= self.min_detected <= 1.0:  # also refuses nan
            raise UserError(f"--min-detected {self.min_detected}: a fraction of the frames in [0, 1] (0 turns the check off)")


@dataclass(frozen=True)
class DensePoseResult:
    input: str
    output: str
    labels: str | None
    frames: int
    fps: float
    missing: int  # frames where no person was found
    missing_frames: list[str]  # their output file names (00012.png, or the input frames' names)
    filled: int  # of those, frames given the labels of the nearest good frame
    smooth: int
    resumed: int  # frames whose labels an interrupted run had already made
    model: str
    device: str
    batch_size: int | None  # the model's settings; None when no model ran (IUV images: ``from_iuv``)
    min_score: float | None
    max_people: int | None
    min_detected: float
    weights: str | None  # the weights file the model was loaded from (None: a given estimator)
    weights_sha256: str | None
    seconds: float

    def to_dict(self) -> dict:
        """The fields; the model's settings left out when no model ran (they played no part)."""
        return {key: value for key, value in asdict(self).items() if value is not None or key not in MODEL_SETTINGS}


MODEL_SETTINGS = ("batch_size", "min_score", "max_people")
"""The settings of the detectron2 model, which ``--from-iuv`` (no model) refuses and does not report."""
