"""``magicanimate animate``: reference image + DensePose motion -> animation.

``animate()`` is the library entry point; the CLI command maps its options one-to-one onto this
function's keyword arguments. Heavy imports (torch, diffusers) happen inside it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError

FITS = ("crop", "pad", "stretch")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")
POSE_BACKGROUND = (68, 1, 84)  # viridis(0): the DensePose renderings' background (§10.3)


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

    def validate(self) -> None:
        if self.steps < 1:
            raise UserError(f"--steps {self.steps}: need at least 1 step")
        if self.size < 64 or self.size % 8:
            raise UserError(f"--size {self.size}: must be a multiple of 8, at least 64")
        if self.context_frames < 1:
            raise UserError(f"--context-frames {self.context_frames}: must be at least 1")
        if not 0 <= self.context_overlap < self.context_frames:
            raise UserError(f"--context-overlap {self.context_overlap}: must be >= 0 and smaller than --context-frames")
        if self.fit not in FITS:
            raise UserError(f"--fit {self.fit}: choose one of {', '.join(FITS)}")


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

    def to_dict(self) -> dict:
        return asdict(self)


def fit_square(image, size: int, fit: str, fill: tuple[int, int, int]):
    """Fit a uint8 RGB image to ``size×size``: center crop, pad (with ``fill``) or stretch.

    The resize is Pillow's bicubic, as in the official code; an image already ``size×size``
    is returned as it is.
    """
    import numpy as np
    from PIL import Image

    height, width = image.shape[:2]
    if fit == "crop" and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    elif fit == "pad" and height != width:
        side = max(height, width)
        canvas = np.empty((side, side, 3), dtype=np.uint8)
        canvas[:] = fill
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = image
        image = canvas
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


class _FrameStore:
    """Fitted motion frames in a temporary file, so memory does not grow with the clip."""

    def __init__(self, directory: str, size: int) -> None:
        self.path = Path(directory) / "motion.u8"
        self.size = size
        self.count = 0
        self._file = open(self.path, "wb")

    def append(self, frame) -> None:
        self._file.write(frame.tobytes())
        self.count += 1

    def frames(self):
        import numpy as np

        self._file.close()
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, self.size, self.size, 3))


def pin_cpu_kernels() -> None:
    """Make CPU results identical on every x86-64 machine (call before torch is imported).

    PyTorch, oneDNN and MKL pick kernels by instruction set, and AVX-512 and AVX2 kernels round
    differently. The animator rounds its reference features through float16, so such last-bit
    differences flip roundings and move the result by up to 3e-3 in the latents (measured with the
    official code itself on an AVX-512 machine against the fixtures made on an AVX2 one). Pinning
    the AVX2 kernels, the common baseline, makes runs reproduce bit for bit. Variables the user
    has set are respected; once torch is imported this has no effect.
    """
    if "torch" in sys.modules:
        return
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")


def _resolve_device(device: str, dtype: str):
    import torch

    if device not in DEVICES:
        raise UserError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu or check `magicanimate doctor`")
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    return torch.device(device), getattr(torch, dtype)


def load_pipeline(models: Path | str | None = None, device: str = "auto", dtype: str = "auto"):
    """The animator pipeline with the weights of ``models`` (official layout) on ``device``."""
    from ..models import resolve_models_dir
    from .pipeline import MagicAnimatePipeline, official_scheduler
    from .weights import load_components

    torch_device, torch_dtype = _resolve_device(device, dtype)
    components = load_components(resolve_models_dir(models), torch_dtype)
    pipe = MagicAnimatePipeline(**components, scheduler=official_scheduler())
    return pipe.to(torch_device)


def _grid_path(output: Path) -> Path:
    from ..media import is_video

    if is_video(output):
        return output.with_name(f"{output.stem}_grid{output.suffix}")
    return output.with_name(f"{output.name}_grid")


def animate(
    reference: Path | str,
    motion: Path | str,
    output: Path | str,
    *,
    models: Path | str | None = None,
    steps: int = AnimateConfig.steps,
    guidance_scale: float = AnimateConfig.guidance_scale,
    seed: int = AnimateConfig.seed,
    size: int = AnimateConfig.size,
    context_frames: int = AnimateConfig.context_frames,
    context_overlap: int = AnimateConfig.context_overlap,
    fit: str = AnimateConfig.fit,
    device: str = "auto",
    dtype: str = "auto",
    fps: float | None = None,
    grid: bool = False,
    overwrite: bool = False,
    progress=None,
    pipeline=None,
) -> AnimateResult:
    """Animate the person of ``reference`` along the DensePose ``motion`` and write ``output``.

    ``motion`` is a video or a folder of frames (25 fps unless ``fps``); ``output`` is a video
    path or, without a video extension, a folder that receives one PNG per motion frame. The
    output appears atomically and an existing one is only replaced with ``overwrite``.
    ``pipeline`` reuses an already loaded ``load_pipeline()`` (batch jobs).
    """
    import numpy as np

    from .. import media

    config = AnimateConfig(steps, guidance_scale, seed, size, context_frames, context_overlap, fit)
    config.validate()
    reference, motion, output = Path(reference), Path(motion), Path(output)
    if fps is not None and fps <= 0:
        raise UserError(f"--fps {fps}: must be positive")
    media.check_output(output, overwrite)
    grid_output = _grid_path(output) if grid else None
    if grid_output is not None:
        media.check_output(grid_output, overwrite)
    ref_image = fit_square(media.read_image(reference), size, fit, (255, 255, 255))
    info = media.probe(motion, fps)

    started = time.perf_counter()
    if pipeline is None:
        pin_cpu_kernels()
        pipeline = load_pipeline(models, device, dtype)
    with tempfile.TemporaryDirectory(prefix="magicanimate-") as scratch:
        store = _FrameStore(scratch, size)
        for frame in media.iter_frames(motion):
            store.append(fit_square(frame, size, fit, POSE_BACKGROUND))
        poses = store.frames()
        if len(poses) == 0:
            raise UserError(f"{motion}: no frames to animate")
        with media.FrameWriter(output, info.fps, overwrite) as writer:
            grid_writer = media.FrameWriter(grid_output, info.fps, overwrite) if grid_output else None
            with grid_writer or nullcontext():

                def on_frame(index: int, frame) -> None:
                    writer.write(frame)
                    if grid_writer:
                        grid_writer.write(np.concatenate([ref_image, poses[index], frame], axis=1))

                pipeline(
                    ref_image,
                    poses,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    seed=seed,
                    context_frames=context_frames,
                    context_overlap=context_overlap,
                    on_frame=on_frame,
                    progress=progress,
                )
        count = len(poses)
        del poses
    return AnimateResult(
        output=str(output),
        grid=str(grid_output) if grid_output else None,
        frames=count,
        fps=info.fps,
        size=size,
        seed=seed,
        steps=steps,
        device=str(pipeline.unet.device),
        dtype=str(pipeline.unet.dtype).replace("torch.", ""),
        seconds=round(time.perf_counter() - started, 3),
    )

