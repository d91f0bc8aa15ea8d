"""``magicanimate matte``: person masks for every frame, with PaddleSeg's PP-HumanSeg models.

``matte()`` is the library entry point; the CLI maps its options one-to-one onto its keyword
arguments. Input is a video, a frames folder, a single image, or a clip folder (``images/`` is
read and ``masks/`` written, file names frame for frame). Masks are single-channel 8-bit PNGs of
the frames' size: 255 = person, 0 = background (``soft=True`` keeps the 8-bit probability).

The networks are PaddleSeg's own classes from the ``paddleseg`` pip package, built from values
this module owns (the pip package does not ship PaddleSeg's YAML configs), and loaded with the
published ``.pdparams`` checkpoints, downloaded once into ``<models>/matting/`` and checked by
sha256. Paddle is imported lazily and quietly; it runs in one process beside torch.
See docs/matting.md for the model choice, the threshold and temporal smoothing.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from .clip import IMAGES, MASKS, check_clip_fps, clip_fps, parts_of
from .errors import MissingDependency, UserError, first_line
from .progress import Progress, silent
from .weights_manifest import sha256_file

DEVICES = ("auto", "cpu", "gpu", "cuda")  # cuda: gpu, as the other commands name it
WEIGHTS_FILE = "model.pdparams"
MATTING_FOLDER = "matting"


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class SegModel:
    """One published PP-HumanSeg checkpoint and the PaddleSeg network it belongs to.

    ``folder`` is the checkpoint's name in PaddleSeg's own ``pretrained_models/<name>/model.pdparams``
    layout, so a folder downloaded with PaddleSeg's scripts can be copied in as it is; the file
    lives at ``relpath`` inside the models folder. ``sha256`` is the digest of ``model.pdparams``
    (the file that is loaded, not the zip around it), checked after every download and before
    every load; ``None`` means it has not been pinned yet (see docs/matting.md): the file is then
    used unchecked, its digest reported in the result, and it is still read without executing
    anything (``read_pdparams``).
    """

    name: str
    summary: str
    architecture: str
    config: str
    input_size: tuple[int, int]  # (width, height) the network sees, PaddleSeg's Resize target_size
    miou: float  # mIoU (%) on PaddleSeg's mini Supervisely Person benchmark, from the PP-HumanSeg README
    url: str
    folder: str
    sha256: str | None = None
    optional_keys: tuple[str, ...] = ()  # parameter-name suffixes a published checkpoint may lack

    @property
    def relpath(self) -> str:
        return f"{MATTING_FOLDER}/{self.folder}/{WEIGHTS_FILE}"


_BASE_URL = "https://paddleseg.bj.bcebos.com/dygraph/pp_humanseg_v2/"

MODELS: dict[str, SegModel] = {
    model.name: model
    for model in (
        SegModel(
            name="pp-humansegv2-lite",
            summary="general human segmentation, MobileSeg + MobileNetV3, 192x192 (default)",
            architecture="MobileSeg(MobileNetV3_large_x1_0)",
            config="contrib/PP-HumanSeg/configs/human_pp_humansegv2_lite.yml",
            input_size=(192, 192),
            miou=92.52,
            url=_BASE_URL + "human_pp_humansegv2_lite_192x192_pretrained.zip",
            folder="human_pp_humansegv2_lite_192x192_pretrained",
        ),
        SegModel(
            name="pp-humansegv2-mobile",
            summary="general human segmentation, PP-LiteSeg + STDC1, 192x192",
            architecture="PPLiteSeg(STDC1)",
            config="contrib/PP-HumanSeg/configs/human_pp_humansegv2_mobile.yml",
            input_size=(192, 192),
            miou=93.13,
            url=_BASE_URL + "human_pp_humansegv2_mobile_192x192_pretrained.zip",
            folder="human_pp_humansegv2_mobile_192x192_pretrained",
            # UAFM_SpAtten gained a constant `_scale` (1.0) after these weights were published
            optional_keys=("._scale",),
        ),
        SegModel(
            name="pp-humansegv1-lite",
            summary="general human segmentation, PP-HumanSeg-Lite (ConnectNet), 192x192",
            architecture="PPHumanSegLite",
            config="contrib/PP-HumanSeg/configs/human_pp_humansegv1_lite.yml",
            input_size=(192, 192),
            miou=86.02,
            url=_BASE_URL + "human_pp_humansegv1_lite_192x192_pretrained.zip",
            folder="human_pp_humansegv1_lite_192x192_pretrained",
        ),
        SegModel(
            name="pp-humansegv1-server",
            summary="general human segmentation, DeepLabV3+ ResNet50-vd, 512x512 (slow on a CPU)",
            architecture="DeepLabV3P(ResNet50_vd, output_stride 8)",
            config="contrib/PP-HumanSeg/configs/human_pp_humansegv1_server.yml",
            input_size=(512, 512),
            miou=96.47,
            url=_BASE_URL + "human_pp_humansegv1_server_512x512_pretrained.zip",
            folder="human_pp_humansegv1_server_512x512_pretrained",
        ),
    )
}
DEFAULT_MODEL = "pp-humansegv2-lite"


def model_spec(model: str) -> SegModel:
    if model not in MODELS:
        raise UserError(f"--model {model}: unknown matting model; choose one of {', '.join(MODELS)}")
    return MODELS[model]


def build_network(model: str):
    """The PaddleSeg network of ``model`` with freshly initialised (random) weights, in eval mode.

    The constructor arguments are the ``model:`` sections of the PP-HumanSeg configs named in
    ``MODELS`` (backbone ``pretrained`` left out: the checkpoint holds the whole network).
    """
    spec = model_spec(model)
    _import_paddle()
    from paddleseg.models import DeepLabV3P, MobileSeg, PPHumanSegLite, PPLiteSeg
    from paddleseg.models.backbones import STDC1, MobileNetV3_large_x1_0, ResNet50_vd

    with _quiet_paddleseg():
        if spec.name == "pp-humansegv2-lite":
            net = MobileSeg(
                num_classes=2,
                backbone=MobileNetV3_large_x1_0(),
                backbone_indices=[0, 1, 2, 3],
                cm_bin_sizes=[1, 2, 4],
                cm_out_ch=128,
                arm_out_chs=[32, 64, 96, 128],
                seg_head_inter_chs=[16, 32, 32, 32],
                use_last_fuse=True,
            )
        elif spec.name == "pp-humansegv2-mobile":
            net = PPLiteSeg(
                num_classes=2,
                backbone=STDC1(),
                backbone_indices=[1, 2, 3, 4],
                cm_out_ch=128,
                arm_out_chs=[4, 16, 32, 64],
                seg_head_inter_chs=[4, 16, 32, 64],
            )
        elif spec.name == "pp-humansegv1-lite":
            net = PPHumanSegLite(num_classes=2, align_corners=False)
        elif spec.name == "pp-humansegv1-server":
            net = DeepLabV3P(
                num_classes=2,
                backbone=ResNet50_vd(output_stride=8, multi_grid=[1, 2, 4]),
                backbone_indices=[0, 3],
                aspp_ratios=[1, 12, 24, 36],
                aspp_out_channels=256,
                align_corners=False,
            )
        else:  # a MODELS entry without a builder is a bug, not a user error
            raise NotImplementedError(spec.name)
    net.eval()
    return net


# ----------------------------------------------------------------------------- paddle, quietly


def _import_paddle():
    """Import paddle and paddleseg without their import-time noise; a clear error if missing."""
    if "paddle" not in sys.modules:
        # Paddle's C++ side logs through glog; keep INFO/WARNING lines off the user's terminal.
        os.environ.setdefault("GLOG_minloglevel", "2")
    threads = os.environ.get("OMP_NUM_THREADS")
    try:
        fresh = "paddle" not in sys.modules or "paddleseg" not in sys.modules
        with warnings.catch_warnings(), _keep_signal_handlers() if fresh else nullcontext():
            warnings.simplefilter("ignore")  # e.g. "No ccache found" from paddle.utils.cpp_extension
            import paddle
            import paddleseg  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"matting needs PaddlePaddle and PaddleSeg ({first_line(exc)}); install them: {INSTALL_HINT}") from exc
    finally:
        _give_back_threads(threads)
    return paddle


@contextmanager
def _keep_signal_handlers():
    """Put back, after the block (paddle's import), the signal handlers Python had set before it.

    Paddle's import installs its own C++ handlers for SIGTERM, SIGABRT, SIGSEGV, ... (to print a
    "FatalError" report and die), and for SIGTERM that replaces the handler Python had set, an
    ignored SIGTERM included: a SIGTERM (Slurm's scancel or time limit, ``timeout``, a batch
    stopping its workers) then killed a ``matte`` or ``preprocess`` run at once, exit 143, with that
    report and its temporaries left behind, instead of stopping it as Ctrl-C does
    (``processes.stop_on_signals``: "interrupted", exit 130, nothing left). Only the signals Python
    handles or ignores are set again (``signal.signal``, as Python installs them); Paddle's reports
    of native crashes stay. Signal handlers can be set from the main thread only: elsewhere this
    does nothing.
    """
    import signal
    import threading

    kept = {}
    if threading.current_thread() is threading.main_thread():
        for number in signal.valid_signals():
            handler = signal.getsignal(number)
            if handler is signal.SIG_IGN or callable(handler):
                kept[number] = handler
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def _give_back_threads(before: str | None) -> None:
    """Put ``OMP_NUM_THREADS`` back as it was (``before``; None: unset) after paddle's import.

    Paddle's import sets it to 1 when it is unset (``paddle.base.__bootstrap__``) and leaves it
    there, so every process started afterwards (a batch worker, a library caller's subprocess)
    would run its OpenMP and BLAS on one thread. Paddle's own OpenMP runtime reads the variable
    only when first used, so it is first given the count the import chose
    (``core.set_num_threads``, paddle's own setter): matting runs on the threads it always did.
    """
    chosen = os.environ.get("OMP_NUM_THREADS")
    if chosen == before:
        return
    core = sys.modules.get("paddle.base.core")
    if core is not None and hasattr(core, "set_num_threads") and chosen is not None and chosen.isdigit():
        core.set_num_threads(int(chosen))
    from .processes import set_environment

    set_environment({"OMP_NUM_THREADS": before})


INSTALL_HINT = (
    "pip install paddlepaddle opencv-python-headless pyyaml visualdl tqdm filelock scipy prettytable scikit-learn "
    "&& pip install --no-deps paddleseg==2.8.0"
)


@contextmanager
def _quiet_paddleseg():
    """Keep PaddleSeg's logger (which prints INFO lines on stdout) to errors while we call it."""
    from paddleseg.utils import logger

    level = logger.log_level
    logger.log_level = 0
    try:
        yield
    finally:
        logger.log_level = level


def _select_device(paddle, device: str) -> str:
    if device not in DEVICES:
        raise UserError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    asked, device = device, "gpu" if device == "cuda" else device  # cuda: the other commands' name for it
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "auto":
        device = "gpu" if has_gpu else "cpu"
    if device == "gpu" and not has_gpu:
        raise UserError(f"--device {asked}: this PaddlePaddle has no CUDA device (CPU build or no GPU); use --device cpu")
    paddle.set_device(device)
    return device


# ----------------------------------------------------------------------------- weights


def weights_path(model: str = DEFAULT_MODEL, models: Path | str | None = None) -> Path:
    """Where ``model``'s checkpoint lives: ``<models>/matting/<PaddleSeg name>/model.pdparams``."""
    from .weights_layout import resolve_models_dir

    return resolve_models_dir(models) / model_spec(model).relpath


def verify_weights(model: str, path: Path) -> str:
    """Check ``path`` against the pinned digest of ``model`` (when there is one); return its sha256."""
    if not path.is_file():
        raise UserError(f"{path}: missing matting weights; run `magicanimate matte` with network access to download them")
    actual = sha256_file(path)
    expected = (model_spec(model).sha256 or "").lower()
    if expected and actual != expected:
        raise UserError(
            f"{path}: sha256 {actual[:16]}... does not match the expected {expected[:16]}... "
            f"(corrupt or not the {model} weights); delete it to download it again"
        )
    return actual


def download_weights(
    model: str = DEFAULT_MODEL,
    models: Path | str | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Download ``model``'s published checkpoint once and return the path of its ``model.pdparams``.

    The zip is fetched (resumably) beside the destination, its ``model.pdparams`` is extracted and
    checked against the pinned sha256 (a mismatch deletes it and raises), and only then renamed
    into place (``models.fetch_url``). An existing file is kept unless ``force``.
    """
    from .folders import created_folders
    from .models import fetch_url

    spec = model_spec(model)
    target = weights_path(model, models)
    if target.is_file() and not force:
        return target
    with created_folders(target.parent):  # an offline run leaves no empty folders behind
        fetch_url(spec.url, target, sha256=spec.sha256, archive_member=WEIGHTS_FILE, progress=progress)
    return target


_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


def _state_dict_unpickler(handle):
    """An unpickler for ``.pdparams`` files that runs no code: only numpy arrays and dicts.

    ``paddle.load`` is a plain ``pickle.load``, so a weights file can execute code when loaded.
    This is the project's ``weights_only`` discipline applied to Paddle's format.
    """
    import pickle

    import numpy

    class StateDictUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _PICKLE_GLOBALS:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")
            if name == "_reconstruct":
                core = getattr(numpy, "_core", None) or numpy.core
                return core.multiarray._reconstruct
            if module == "collections":
                from collections import OrderedDict

                return OrderedDict
            return getattr(numpy, name)

    return StateDictUnpickler(handle, encoding="latin1")


def read_pdparams(path: Path) -> dict:
    """A PaddlePaddle ``.pdparams`` state dict (``paddle.save(layer.state_dict(), path)``) as numpy arrays."""
    import pickle

    import numpy as np

    try:
        with open(path, "rb") as handle:
            state = _state_dict_unpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise UserError(f"{path}: not a readable PaddlePaddle .pdparams state dict ({first_line(exc)}); delete it to download it again") from exc
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict; delete it to download it again")
    if "UnpackBigParamInfor@@" in state:
        raise UserError(f"{path}: split (over 4 GB) parameters are not supported for matting models")
    return {key: value for key, value in state.items() if isinstance(value, np.ndarray)}


def load_state(network, state: dict, path: Path, optional_keys: tuple[str, ...] = ()) -> None:
    """Put ``state`` into ``network``: every parameter present with its shape, or a clear error."""
    import numpy as np

    own = network.state_dict()
    missing = [key for key in own if key not in state and not key.endswith(optional_keys)]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} of {len(own)} weights missing (first: {missing[0]}); "
            "this checkpoint belongs to another model, pick the matching --model"
        )
    wrong = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if wrong:
        key = wrong[0]
        raise UserError(
            f"{path}: {len(wrong)} weights have the wrong shape (first: {key} {tuple(state[key].shape)}, "
            f"model {tuple(own[key].shape)}); pick the matching --model"
        )
    arrays = {}
    for key, tensor in own.items():
        current = tensor.numpy()
        # an optional key that the checkpoint lacks keeps its initial (constant) value
        arrays[key] = np.ascontiguousarray(state[key], dtype=current.dtype) if key in state else current
    network.set_state_dict(arrays)


# ----------------------------------------------------------------------------- the segmenter


class Segmenter:
    """A loaded PP-HumanSeg network: ``segmenter(frames)`` gives the person probability per pixel.

    Preprocessing and postprocessing are PaddleSeg's own: ``transforms.Resize`` to the model's
    input size (bilinear), ``transforms.Normalize`` (mean 0.5, std 0.5 on [0, 1] RGB), then
    ``core.infer.reverse_transform`` resizes the logits back to the frame size (bilinear) and the
    person probability is channel 1 of their softmax, as in ``core.infer.inference``. Thresholding
    it at 0.5 is PaddleSeg's argmax.
    """

    def __init__(self, spec: SegModel, network, device: str, weights: Path | None = None, sha256: str | None = None):
        from paddleseg import transforms

        self.spec = spec
        self.network = network
        self.device = device
        self.weights = weights
        self.sha256 = sha256
        self._transforms = transforms.Compose(
            [transforms.Resize(target_size=spec.input_size), transforms.Normalize()], to_rgb=False
        )

    def __call__(self, frames) -> "numpy.ndarray":  # noqa: F821
        """``frames``: uint8 RGB ``N×H×W×3`` (all one size). Returns float32 ``N×H×W`` in [0, 1]."""
        import numpy as np
        import paddle
        import paddle.nn.functional as F
        from paddleseg.core import infer

        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError("frames must be uint8 RGB N×H×W×3")
        paddle.set_device(self.device)  # global to the process: another network loaded since may have moved it
        batch, trans_info = [], None
        for frame in frames:
            # float32 as PaddleSeg's own reader hands images to its transforms (cv2 resizes
            # uint8 with fixed-point rounding, which shifts probabilities by ~1e-3)
            data = self._transforms({"img": frame.astype(np.float32)})
            batch.append(data["img"])
            trans_info = data["trans_info"]
        with paddle.no_grad():
            logit = self.network(paddle.to_tensor(np.stack(batch)))[0]
            # softmax over two classes is the sigmoid of their difference, and bilinear resizing is
            # linear: resizing the one difference map equals PaddleSeg's resize-both-then-softmax
            # (to float rounding) at half the cost, which dominates on large frames.
            margin = infer.reverse_transform(logit[:, 1:2] - logit[:, 0:1], trans_info, mode="bilinear")
            prob = F.sigmoid(margin)[:, 0]
        return prob.numpy().astype(np.float32, copy=False)


def load_segmenter(
    model: str = DEFAULT_MODEL,
    models: Path | str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    download: bool = True,
) -> Segmenter:
    """``model``'s network with its published weights (downloaded once when missing)."""
    spec = model_spec(model)
    path = weights_path(model, models)
    if not path.is_file():
        if not download:
            raise UserError(f"{path}: missing matting weights; download {spec.url} and put its {WEIGHTS_FILE} there")
        download_weights(model, models, progress=progress)
    digest = verify_weights(model, path)  # before unpickling anything
    state = read_pdparams(path)
    paddle = _import_paddle()
    chosen = _select_device(paddle, device)
    network = build_network(model)
    load_state(network, state, path, spec.optional_keys)
    return Segmenter(spec, network, chosen, path, digest)


# ----------------------------------------------------------------------------- masks


def quantize(prob):
    """Probabilities in [0, 1] as uint8 0..255 (round half up)."""
    import numpy as np

    return np.floor(np.clip(prob, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def binarize(soft, threshold: float):
    """255 where the 8-bit probability reaches ``threshold`` (``soft / 255 >= threshold``), else 0."""
    import numpy as np

    return np.where(soft >= threshold * 255.0, np.uint8(255), np.uint8(0))


def temporal_median(masks: Iterable, k: int) -> Iterator:
    """Median over a centred window of ``k`` frames (odd), edges repeated; streams, keeps ``k`` frames.

    Equal to ``scipy.ndimage.median_filter(stack, size=(k, 1, 1), mode="nearest")`` on the whole
    clip. Medians commute with thresholds, so smoothing the soft masks and then thresholding gives
    the per-pixel majority vote of the thresholded masks.
    """
    import numpy as np

    if k <= 1:  # 0 or 1: off
        yield from masks
        return
    radius = k // 2
    window: deque = deque()
    first = 0  # index of window[0]
    emitted = 0
    count = 0

    def median_at(t: int, last: int):
        picks = [window[min(max(j, 0), last) - first] for j in range(t - radius, t + radius + 1)]
        return np.median(np.stack(picks), axis=0).astype(picks[0].dtype)

    for mask in masks:
        window.append(mask)
        count += 1
        while emitted + radius <= count - 1:
            yield median_at(emitted, count - 1)
            emitted += 1
            while first < emitted - radius:
                window.popleft()
                first += 1
    while emitted < count:
        yield median_at(emitted, count - 1)
        emitted += 1
        while first < emitted - radius and len(window) > 1:
            window.popleft()
            first += 1


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class MatteConfig:
    """Matting settings. ``threshold`` 0.5 on the person probability is exactly PaddleSeg's argmax
    over its two classes, the rule its published mIoU figures are measured with; ``smooth`` 1 or 0
    keeps frames independent (set 3 or 5 for video); ``batch_size`` frames per forward pass."""

    model: str = DEFAULT_MODEL
    threshold: float = 0.5
    batch_size: int = 8
    smooth: int = 1

    def validate(self) -> None:
        model_spec(self.model)
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"--threshold {self.threshold}: must be in (0, 1]; 0.5 is PaddleSeg's own decision rule")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.smooth < 0 or (self.smooth > 1 and self.smooth % 2 == 0):  # 0 is off, as for densepose
            raise UserError(f"--smooth {self.smooth}: use 0 or 1 (off) or an odd number of frames (3, 5, ...)")


@dataclass(frozen=True)
class MatteResult:
    input: str
    output: str
    mode: str  # clip, frames, video or image
    frames: int
    width: int
    height: int
    model: str
    soft: bool
    threshold: float  # the masks' (hard); with soft the one empty_frames counts with
    smooth: int
    batch_size: int
    device: str
    weights: str | None
    weights_sha256: str | None
    weights_pinned: bool  # the digest was checked against a pinned one
    coverage: float  # mean fraction of person pixels (hard masks; soft: mean probability)
    empty_frames: int  # frames whose mask has no pixel at or above the threshold
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    mode: str
    source: Path  # what media reads: a video, a frames folder or an image
    output: Path
    names: list[str] | None  # output file names (folder output), frame for frame
    files: list[Path] | None = None  # the frames they are named after, as listed then: exactly those are read


def _plan(input: Path, output: Path | None) -> _Plan:
    from . import media

    if not input.exists():
        raise UserError(f"{input}: no such file or folder")
    if input.is_dir() and (input / IMAGES).is_dir():
        mode, source = "clip", input / IMAGES
        output = output if output is not None else input / MASKS
    elif input.is_dir():
        mode, source = "frames", input
    elif media.is_image(input):
        mode, source = "image", input
    elif media.is_video(input):
        mode, source = "video", input
    else:
        raise UserError(f"{input}: not a video, image, frames folder or clip folder (with images/)")
    if output is None:
        raise UserError(f"{input}: not a clip folder (no images/ inside); pass -o OUTPUT (a folder or an .mp4)")
    if output.resolve() == source.resolve() or output.resolve() == input.resolve():
        raise UserError(f"{output}: is the input itself; choose another output")
    animated = mode != "image" and media.is_video_output(output)  # (out.webp: an animated WebP of the masks)
    if media.is_image(output) and not animated and (mode != "image" or output.suffix.lower() != ".png"):
        raise UserError(f"{output}: masks are PNG; give a folder, an .mp4, or (for one image) a .png file")
    names = files = None  # a video's frames become 00000.png, 00001.png, ...
    if not media.is_video_output(output) and not media.is_image(output):
        if mode in ("clip", "frames"):
            files = media.list_frame_files(source)
            if not files:
                raise UserError(f"{source}: folder has no image frames (expected 00000.png, 00001.png, ...)")
            names = [file.stem + ".png" for file in files]
            if len(set(names)) != len(names):
                raise UserError(f"{source}: two frames share a name apart from the extension; rename them")
    return _Plan(mode, source, output, names, files if names is not None else None)


def _batches(frames: Iterable, size: int) -> Iterator[list]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def matte(
    input: Path | str,
    output: Path | str | None = None,
    *,
    models: Path | str | None = None,
    model: str = MatteConfig.model,
    soft: bool = False,
    threshold: float = MatteConfig.threshold,
    batch_size: int = MatteConfig.batch_size,
    smooth: int = MatteConfig.smooth,
    fps: float | None = None,
    device: str = "auto",
    allow_truncated: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    segmenter: Segmenter | None = None,
) -> MatteResult:
    """Write a person mask for every frame of ``input``.

    ``input``: a video, a frames folder, one image, or a clip folder (``images/`` in, ``masks/``
    out by default). ``output``: a folder (PNG masks named like the input frames, ``00000.png``...
    for a video), an ``.mp4`` (gray mask video), or a ``.png`` for a single image. Masks are
    uint8 ``H×W``, 255 = person; ``soft`` writes the rounded probability ×255 instead of
    thresholding. ``smooth`` K > 1 takes the per-pixel median over K frames centred on each frame
    (0 and 1: off).
    ``segmenter`` reuses a ``load_segmenter()`` result (batch jobs). A video that does not decode
    to its end is refused unless ``allow_truncated``. ``fps`` is the rate of a frames folder's
    ``.mp4`` of masks (default: a clip's ``meta.json``, else 25), as for ``densepose``; a video
    keeps its own.
    """
    config, plan, info = _checked(input, output, model=model, threshold=threshold, batch_size=batch_size, smooth=smooth,
                                  fps=fps, device=device, overwrite=overwrite)  # fmt: skip
    input = Path(input)
    progress = progress or silent

    started = time.perf_counter()
    if segmenter is None:
        segmenter = load_segmenter(model, models, device, progress)
    elif segmenter.spec.name != model:
        raise ValueError(f"segmenter holds {segmenter.spec.name}, not {model}")
    stats = _Coverage(info.height, info.width)
    masks = _masks(plan, segmenter, config, soft, stats, lambda done: progress("matte", done, info.frames), allow_truncated)
    _write_masks(plan, masks, info.fps, overwrite)
    if stats.frames == 0:
        raise UserError(f"{input}: no frames to matte")
    height, width = stats.shape
    return MatteResult(
        input=str(input),
        output=str(plan.output),
        mode=plan.mode,
        frames=stats.frames,
        width=int(width),
        height=int(height),
        model=segmenter.spec.name,
        soft=soft,
        threshold=threshold,  # soft masks are not thresholded, but empty_frames is counted with it
        smooth=smooth,
        batch_size=batch_size,
        device=segmenter.device,
        weights=str(segmenter.weights) if segmenter.weights else None,
        weights_sha256=segmenter.sha256,
        weights_pinned=bool(segmenter.spec.sha256) and segmenter.weights is not None,
        coverage=round(stats.total / stats.frames, 4),
        empty_frames=stats.empty,
        seconds=round(time.perf_counter() - started, 3),
    )


def check_matte(*args, **kwargs) -> None:
    """Every check ``matte(*args, **kwargs)`` makes before it loads a segmenter: the settings, the
    device, the input, the output, the input's header. A batch worker or ``serve`` runs it before it
    loads (or swaps) the segmenter for a task, so a task with a missing input or a taken output
    fails at once."""
    import inspect

    arguments = inspect.signature(matte).bind(*args, **kwargs)
    arguments.apply_defaults()
    _checked(**arguments.arguments)


def _checked(input, output, *, model, threshold, batch_size, smooth, device, overwrite, fps=None, **_):
    """``matte``'s checks, in its order; the rest of its arguments are ignored. Returns the
    settings, the plan and the input's size, fps and frame count."""
    from dataclasses import replace

    from . import media
    from .frames import check_fps

    config = MatteConfig(model, threshold, batch_size, smooth)
    config.validate()
    fps = check_fps(fps) if fps is not None else None
    if device not in DEVICES:
        raise UserError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    plan = _plan(media.input_path(input), media.output_path(output) if output is not None else None)
    clip = plan.source.parent if plan.mode == "clip" else None  # its parts but masks/ are never written over (-o CLIP/densepose)
    others = [part for part in parts_of(clip) if part != clip / MASKS] if clip is not None else []
    media.check_output(plan.output, overwrite, protect=(plan.source, *others))
    if plan.mode in ("clip", "frames"):  # from the headers: a frame of another size fails now, not after the frames before it
        media.check_frame_sizes(plan.source)
    info = _probe(plan)
    if plan.mode == "clip":
        check_clip_fps(plan.source.parent, fps)
    if fps is not None and media.is_video(plan.source) and not media.same_rate(fps, info.fps):
        raise UserError(f"--fps {fps:g}: {plan.source} is read at its own {info.fps:g} fps; --fps is for a frames folder")
    media.check_clip_fits(plan.output, info.width, info.height, info.frames)  # a GIF's or WebP's limits, before any mask is made
    return config, plan, replace(info, fps=fps) if fps is not None and not media.is_video(plan.source) else info


# ----------------------------------------------------------------------------- its steps


def _probe(plan: _Plan):
    """Size, fps and frame count of the input (a single image is a one-frame clip)."""
    from . import media

    if plan.mode == "image":
        first = media.read_image(plan.source)
        return media.VideoInfo(first.shape[1], first.shape[0], media.DEFAULT_FPS, 1)
    return media.probe(plan.source, clip_fps(plan.source.parent) if plan.mode == "clip" else None)  # a clip: at its own rate


class _Coverage:
    """What the result reports about the masks: frames, mean coverage, empty frames, size."""

    def __init__(self, height: int, width: int) -> None:
        self.frames, self.total, self.empty, self.shape = 0, 0.0, 0, (height, width)

    def add(self, written, hard) -> None:
        self.frames += 1
        self.total += float(written.mean()) / 255.0
        self.empty += int(not hard.any())
        self.shape = written.shape


def _masks(
    plan: _Plan, segmenter: Segmenter, config: MatteConfig, soft: bool, stats: _Coverage, done: Callable[[int], None], allow_truncated: bool
) -> Iterator:
    """The masks to write, frame by frame: batched inference, 8-bit probability, temporal median, threshold."""
    import numpy as np

    from . import media

    def soft_masks() -> Iterator:
        for batch in _batches(media.iter_frames(plan.source, allow_truncated=allow_truncated, files=plan.files), config.batch_size):
            yield from quantize(segmenter(np.stack(batch)))

    for mask in temporal_median(soft_masks(), config.smooth):
        hard = binarize(mask, config.threshold)
        written = mask if soft else hard
        stats.add(written, hard)
        done(stats.frames)
        yield written


def _write_masks(plan: _Plan, masks: Iterator, fps: float, overwrite: bool) -> None:
    """Into a video, one PNG, or a folder of PNGs named like the input frames."""
    from . import media

    if media.is_video_output(plan.output):  # (out.webp with one image was refused: a .png)
        with media.FrameWriter(plan.output, fps, overwrite) as writer:
            for mask in masks:
                writer.write(mask)
    elif media.is_image(plan.output):
        first = next(iter(masks), None)
        if first is not None:
            media.write_png(plan.output, first, replace=overwrite)
    else:
        with media.FrameWriter(plan.output, overwrite=overwrite) as writer:
            for index, mask in enumerate(masks):  # (a folder's frames: those planned, one for each name)
                writer.write(mask, name=plan.names[index] if plan.names is not None else None)


# ----------------------------------------------------------------------------- doctor


def matting_status(models: Path | str | None = None, import_check: bool = True) -> dict:
    """Whether matting can run here, for library callers (``doctor`` makes its own checks); never raises.

    ``ok`` is true when paddle and paddleseg import and the default model's weights are present;
    ``problem`` and ``fix`` say what to do otherwise. ``import_check=False`` skips importing paddle
    (about 4 s) and reports installed versions only.
    """
    from .clip import installed_version as version

    status: dict = {
        "ok": False,
        "paddlepaddle": version("paddlepaddle") or version("paddlepaddle-gpu"),
        "paddleseg": version("paddleseg"),
        "opencv": {dist: version(dist) for dist in ("opencv-python-headless", "opencv-python", "opencv-contrib-python") if version(dist)},
        "imports": None,
        "cuda": None,
        "default_model": DEFAULT_MODEL,
        "weights": {},
        "problem": None,
        "fix": None,
        "note": None,
    }
    for name in MODELS:
        try:
            path = weights_path(name, models)
            status["weights"][name] = {"path": str(path), "present": path.is_file(), "sha256_pinned": bool(MODELS[name].sha256)}
        except Exception as exc:  # an unusable models folder must not break doctor
            status["weights"][name] = {"path": None, "present": False, "error": first_line(exc)}
    if not status["paddlepaddle"] or not status["paddleseg"]:
        status["problem"] = "PaddlePaddle and PaddleSeg are not both installed"
        status["fix"] = INSTALL_HINT
        return status
    if import_check:
        try:
            paddle = _import_paddle()
            import cv2  # noqa: F401
            from paddleseg.core import infer  # noqa: F401

            status["imports"] = "ok"
            status["cuda"] = bool(paddle.device.is_compiled_with_cuda())
        except Exception as exc:  # UserError, ImportError, or cv2's numpy-ABI failures
            status["imports"] = first_line(exc)
            status["problem"] = f"paddle/paddleseg do not import: {status['imports']}"
            old_cv2 = status["opencv"].get("opencv-python")
            status["fix"] = (
                f"pip uninstall -y opencv-python && {INSTALL_HINT}" if old_cv2 else INSTALL_HINT
            )
            return status
    if not status["weights"][DEFAULT_MODEL]["present"]:
        status["note"] = f"{DEFAULT_MODEL} weights are not downloaded yet; the first `magicanimate matte` fetches them"
    status["ok"] = True
    return status
