"""The detectron2 DensePose estimator: config, weights, batched inference (all imports lazy).

detectron2 and its DensePose project are on no package registry; they are an optional extra
installed from detectron2's git at a pinned commit (``install_command()``). Nothing here imports
them before a model is actually built, so the rest of the package works without them.

* Config: the model section of detectron2's ``densepose_rcnn_R_50_FPN_s1x.yaml`` ->
  ``Base-DensePose-RCNN-FPN.yaml`` chain (and its R_101 / DeepLab siblings), written out as values
  the project owns (the YAMLs are not part of the DensePose package). ``--config FILE.yaml``
  merges a user's YAML instead.
* Weights: the published model-zoo pickle, downloaded once into ``<models>/densepose/`` and
  checked against its sha256. ``.pkl`` files are read with a restricted unpickler that can only
  rebuild numpy arrays and plain containers (never ``pickle.load``); ``.pth`` files with
  ``torch.load(weights_only=True)``. Missing or mis-shaped parameters are an error, not a warning.
* Inference: frames go through ``GeneralizedRCNN`` as a batch, preprocessed like detectron2's
  ``DefaultPredictor`` (BGR, ``ResizeShortestEdge(800, max 1333)``); the outputs come back as
  ``charts.Detections`` (float XYWH boxes, scores, coarse/fine logits per box).
"""

from __future__ import annotations

import logging
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..device import resolve_device
from ..errors import MissingDependency, UserError, debugging, first_line
from ..weights_manifest import sha256_file

DETECTRON2_REPO = "https://github.com/facebookresearch/detectron2.git"
#: The detectron2 commit the project builds and tests against (main, 2026-06-06).
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
DOWNLOAD_ROOT = "https://dl.fbaipublicfiles.com/densepose"


def matching_torchvision() -> str:
    """A pip requirement for the torchvision release that goes with the installed torch (2.X -> 0.(X+15))."""
    from importlib import metadata

    try:
        major, minor = metadata.version("torch").split("+")[0].split(".")[:2]
        if major == "2":
            return f"torchvision==0.{int(minor) + 15}.*"
    except (metadata.PackageNotFoundError, ValueError):
        pass
    return "torchvision"


def install_commands() -> list[str]:
    """The upstream install route, one shell command each (torch must already be installed)."""
    source = f"git+{DETECTRON2_REPO}@{DETECTRON2_COMMIT}"
    return [
        f"pip install '{matching_torchvision()}'",
        f"pip install --no-build-isolation 'detectron2 @ {source}'",
        f"pip install --no-build-isolation --no-deps 'detectron2-densepose @ {source}#subdirectory=projects/DensePose'",
        "pip install av scipy opencv-python-headless",
    ]


def install_command() -> str:
    """``install_commands()`` as one line a shell can run."""
    return " && ".join(install_commands())


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """One published DensePose model of detectron2's model zoo (projects/DensePose/doc/DENSEPOSE_IUV.md)."""

    name: str  # config name, e.g. densepose_rcnn_R_50_FPN_s1x
    depth: int  # ResNet depth
    head: str  # DensePose head
    model_id: int
    filename: str
    sha256: str | None = None  # known digest; without one the weights are not downloaded
    size: int | None = None

    @property
    def url(self) -> str:
        return f"{DOWNLOAD_ROOT}/{self.name}/{self.model_id}/{self.filename}"


MODELS = {
    spec.name: spec
    for spec in (
        # model_final_162be9.pkl: 255,757,821 bytes; the digest is the one several independent
        # projects pin for this URL (e.g. sha256sum checks in DensePose install scripts).
        ModelSpec("densepose_rcnn_R_50_FPN_s1x", 50, "DensePoseV1ConvXHead", 165712039, "model_final_162be9.pkl",
                  "b8a7382001b16e453bad95ca9dbc68ae8f2b839b304cf90eaf5c27fbdb4dae91", 255_757_821),
        ModelSpec("densepose_rcnn_R_101_FPN_s1x", 101, "DensePoseV1ConvXHead", 165712084, "model_final_c6ab63.pkl"),
        ModelSpec("densepose_rcnn_R_50_FPN_DL_s1x", 50, "DensePoseDeepLabHead", 165712097, "model_final_0ed407.pkl"),
        ModelSpec("densepose_rcnn_R_101_FPN_DL_s1x", 101, "DensePoseDeepLabHead", 165712116, "model_final_844d15.pkl"),
    )
}  # fmt: skip
DEFAULT_MODEL = "densepose_rcnn_R_50_FPN_s1x"

# Base-DensePose-RCNN-FPN.yaml, model section (the solver/dataset keys only matter for training).
_FEATURES = ["res2", "res3", "res4", "res5"]
BASE_CONFIG: dict[str, object] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES": _FEATURES,
    "MODEL.FPN.IN_FEATURES": _FEATURES,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.DENSEPOSE_ON": True,
    "MODEL.ROI_HEADS.NAME": "DensePoseROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_HEADS.NUM_CLASSES": 1,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 2,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlign",
    "MODEL.ROI_DENSEPOSE_HEAD.NAME": "DensePoseV1ConvXHead",
    "MODEL.ROI_DENSEPOSE_HEAD.POOLER_TYPE": "ROIAlign",
    "MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS": 2,
}


def config_values(spec: ModelSpec) -> dict[str, object]:
    """The config of a zoo model: the base values plus the model file's (``densepose_rcnn_<...>.yaml``)."""
    return {**BASE_CONFIG, "MODEL.RESNETS.DEPTH": spec.depth, "MODEL.ROI_DENSEPOSE_HEAD.NAME": spec.head}


def resolve_model(config: str | Path | None) -> tuple[ModelSpec | None, Path | None]:
    """``--config``: a zoo name (``densepose_rcnn_R_101_FPN_DL_s1x`` or ``R_101_FPN_DL_s1x``) or a YAML file."""
    if config is None:
        return MODELS[DEFAULT_MODEL], None
    text = str(config)
    for name, spec in MODELS.items():
        if text in (name, name.removeprefix("densepose_rcnn_")):
            return spec, None
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{path}: no such config file; pass a detectron2 DensePose YAML or one of {', '.join(MODELS)}")
        return None, path
    raise UserError(f"--config {text}: unknown model; choose one of {', '.join(MODELS)} or pass a detectron2 DensePose YAML file")


def model_key(config: str | Path | None, weights: str | Path | None) -> tuple[str, str]:
    """The model's display name, and what its labels depend on (a resumed run must match it):
    the zoo model or the YAML file, and the weights file or the zoo's (pinned by its sha256); a
    file by its path, size and time, so one replaced under the same name starts the work afresh.
    No detectron2 import."""
    spec, yaml_file = resolve_model(config)
    name = spec.name if spec is not None else yaml_file.stem
    source = spec.name if spec is not None else _file_key(yaml_file)
    return name, f"{source}|{_file_key(Path(weights).expanduser()) if weights else 'zoo'}"


def _file_key(path: Path) -> str:
    """A file as ``model_key`` tells it: its path, and its size and time where it is there."""
    path = path.resolve()
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path}@{stat.st_size}:{stat.st_mtime_ns}"


def build_config(config: str | Path | None = None, *, device: str = "cpu", min_score: float = 0.8, max_people: int = 1):
    """A frozen detectron2 ``CfgNode`` for inference (imports detectron2)."""
    require_detectron2()
    from densepose import add_densepose_config
    from detectron2.config import get_cfg

    spec, yaml_file = resolve_model(config)
    cfg = get_cfg()
    add_densepose_config(cfg)
    if yaml_file is not None:
        try:
            cfg.merge_from_file(str(yaml_file))
        except Exception as exc:  # yacs raises KeyError/AssertionError/yaml errors
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"{yaml_file}: not a DensePose config detectron2 can read ({exc.__class__.__name__}: {detail})") from exc
    else:
        pairs: list[object] = []
        for key, value in config_values(spec).items():
            pairs += [key, value]
        cfg.merge_from_list(pairs)
    cfg.MODEL.WEIGHTS = ""  # loaded by load_weights(), never by detectron2's own (pickle.load) path
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(min_score)
    cfg.TEST.DETECTIONS_PER_IMAGE = int(max_people) if max_people > 0 else 100
    cfg.freeze()
    return cfg


# ----------------------------------------------------------------------------- weights


def weights_path(spec: ModelSpec, models: str | Path | None = None) -> Path:
    """Where the zoo weights of ``spec`` live: ``<models>/DensePose/<config name>/<file>`` (as in models/manifest.json)."""
    from ..weights_layout import resolve_models_dir

    return resolve_models_dir(models) / "DensePose" / spec.name / spec.filename


def ensure_weights(spec: ModelSpec, models: str | Path | None = None, progress=None) -> Path:
    """The zoo weights of ``spec`` in the models folder, downloaded and sha256-checked once."""
    path = weights_path(spec, models)
    folder = path.parent
    if spec.sha256 is None:
        if path.is_file():
            return path
        raise UserError(
            f"{spec.name}: no pinned sha256 for its weights, so they are not downloaded automatically; "
            f"download {spec.url} yourself and pass --weights FILE"
        )
    if path.is_file():
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise UserError(f"{path}: sha256 {digest} does not match the expected {spec.sha256}; delete the file to download it again")
        return path
    from ..folders import created_folders
    from ..models import fetch_url

    with created_folders(folder):  # an offline run leaves no empty folders behind
        fetch_url(spec.url, path, sha256=spec.sha256, size=spec.size, progress=progress)
    return path


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and containers only; any other global is refused.

    A detectron2 model-zoo ``.pkl`` is ``{"model": {name: ndarray}, "__author__": str, ...}``;
    rebuilding an ndarray needs ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype`` (plus ``scalar``/``_frombuffer`` in some protocols, and ``_codecs.encode``
    with latin-1 for bytes in protocol 2), none of which runs code chosen by the file. Object
    arrays are refused too.
    """

    def find_class(self, module: str, name: str):
        core = getattr(np, "_core", None) or np.core
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        }
        for prefix in ("numpy.core", "numpy._core"):
            allowed[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
            allowed[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
            allowed[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
        allowed[("_codecs", "encode")] = _latin1_encode  # how protocol 2 stores bytes under Python 3
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it (latin-1 only)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing to decode bytes with codec {encoding!r}")
    return text.encode("latin-1")


def load_pickle_weights(path: Path) -> dict:
    """A detectron2/Detectron ``.pkl`` checkpoint as a dict, read by the restricted unpickler."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = _ArrayUnpickler(handle, encoding="latin1").load()
    except OSError:
        raise  # (not readable at all: the CLI names the file and the fix)
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail anywhere: a huge length, an array indexed by a string
        raise UserError(f"{path}: not a weights pickle this tool will read ({first_line(exc)}); pass a detectron2 model-zoo .pkl or a .pth") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a {type(data).__name__}, not a checkpoint dict")
    tensors = data.get("model", data.get("blobs", data))
    if not isinstance(tensors, dict):
        raise UserError(f"{path}: its 'model' entry is a {type(tensors).__name__}, not a dict of arrays")
    for key, value in tensors.items():
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise UserError(f"{path}: entry {key} is an object array; refusing it")
    return data


def _checkpointer_class():
    from detectron2.checkpoint import DetectionCheckpointer

    class SafeCheckpointer(DetectionCheckpointer):
        """detectron2's checkpointer with safe file reading and strict key checking."""

        def _load_file(self, filename):
            if str(filename).endswith(".pkl"):
                data = load_pickle_weights(Path(filename))
                if "model" in data and "__author__" in data:  # detectron2 model-zoo format
                    return data
                if "blobs" in data:  # Caffe2 / Detectron1 zoo format
                    data = data["blobs"]
                data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
                return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
            import torch

            try:
                loaded = torch.load(filename, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise UserError(f"{filename}: torch.load(weights_only=True) cannot read it ({exc.__class__.__name__}); pass a .pkl or .pth checkpoint") from exc
            return loaded if "model" in loaded else {"model": loaded}

        def _load_model(self, checkpoint):
            incompatible = super()._load_model(checkpoint)
            problems = []
            if incompatible.missing_keys:
                problems.append(f"{len(incompatible.missing_keys)} missing parameters (e.g. {incompatible.missing_keys[0]})")
            if incompatible.incorrect_shapes:
                key, got, want = incompatible.incorrect_shapes[0]
                problems.append(f"{len(incompatible.incorrect_shapes)} parameters of the wrong shape (e.g. {key}: {tuple(got)} vs {tuple(want)})")
            if problems:
                raise UserError(f"{self._weights_name}: does not fit the configured model ({'; '.join(problems)}); pass the --config these weights belong to")
            return incompatible

    return SafeCheckpointer


def load_weights(model, weights: Path) -> None:
    """Load ``weights`` (``.pkl`` zoo format or ``.pth``) into a detectron2 ``model``, strictly."""
    weights = Path(weights)
    if not weights.is_file():
        raise UserError(f"{weights}: no such weights file")
    checkpointer = _checkpointer_class()(model)
    checkpointer._weights_name = str(weights)
    checkpointer.load(str(weights))


# ----------------------------------------------------------------------------- inference


def detectron2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("detectron2") is not None and importlib.util.find_spec("densepose") is not None


def require_detectron2() -> None:
    """Raise the install instructions (exit 2) when detectron2 or DensePose cannot be imported."""
    if not detectron2_available():
        raise MissingDependency(
            "detectron2 and its DensePose project are not installed (optional extra 'densepose', on no package registry); "
            f"install them with: {install_command()}  (torchvision must match torch; see docs/densepose.md)"
        )
    try:
        with _quiet_libraries():  # torch deprecation noise from detectron2's own imports
            import densepose  # noqa: F401
            import detectron2.modeling  # noqa: F401
    except Exception as exc:  # e.g. "operator torchvision::nms does not exist" (torchvision does not match torch)
        raise MissingDependency(
            f"detectron2/DensePose are installed but do not import ({exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
            f"reinstall with a torchvision that matches torch: {install_command()}"
        ) from exc


#: loggers of detectron2 and the libraries it logs through (fvcore's checkpointer, iopath's file I/O),
#: and the level below which their lines are held back; torch.fx logs a WARNING (once per process)
#: when detectron2's ROI pooler asks whether it is being traced
LIBRARY_LOGGERS = {
    "detectron2": logging.WARNING,
    "fvcore": logging.WARNING,
    "iopath": logging.WARNING,
    "densepose": logging.WARNING,
    "torch.fx._symbolic_trace": logging.ERROR,
}
#: warnings that detectron2 at the pinned commit raises inside torch on every run, nothing the user can act on
LIBRARY_WARNINGS = (
    (FutureWarning, None),  # torch deprecations hit by detectron2's imports
    (UserWarning, r"(?s).*torch\.meshgrid"),  # detectron2's anchor generator
    (Warning, r"(?s).*(is_fx_tracing|torch\.fx)"),  # the same tracing check, where torch warns instead of logging
)


@contextmanager
def _quiet_libraries():
    """Keep detectron2's own output off stderr while it runs: its INFO log lines (the checkpointer's
    "Loading from ..."), torch.fx's tracing-check line and the torch warnings above. ``--debug``
    (which puts the ``magicanimate_cli`` logger on DEBUG) lets everything through."""
    import warnings

    if debugging():
        yield
        return
    loggers = {logging.getLogger(name): level for name, level in LIBRARY_LOGGERS.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.level))
    try:
        with warnings.catch_warnings():
            for category, message in LIBRARY_WARNINGS:
                warnings.filterwarnings("ignore", message=message or "", category=category)
            yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


class Detectron2Estimator:
    """Batched DensePose inference with a detectron2 ``GeneralizedRCNN``.

    ``estimator(frames)`` takes a list of uint8 RGB frames and returns one ``charts.Detections``
    per frame. ``boxes`` (one ``N×4`` XYXY array per frame, in frame pixels) skips detection and
    runs the DensePose head on those boxes (``model.inference(..., detected_instances=...)``);
    tests and benchmarks use it because random weights detect nobody.
    """

    def __init__(
        self, cfg, model=None, weights: Path | None = None, name: str | None = None, weights_sha256: str | None = None, key: str | None = None
    ):
        require_detectron2()
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        self.cfg = cfg
        with _quiet_libraries():
            self.model = model if model is not None else build_model(cfg)
            self.model.eval()
            if weights is not None:
                load_weights(self.model, weights)
        self.weights = Path(weights) if weights is not None else None
        self.weights_sha256 = weights_sha256 if weights_sha256 is not None or weights is None else sha256_file(Path(weights))
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.name = name or "detectron2"
        self.key = key or self.name  # what its labels depend on (``model_key``): a resumed run's must match
        self.device = str(cfg.MODEL.DEVICE)

    def _inputs(self, frames):
        import torch

        inputs, transforms = [], []
        for frame in frames:
            image = np.ascontiguousarray(frame[:, :, ::-1] if self.input_format == "BGR" else frame)
            transform = self.aug.get_transform(image)
            resized = transform.apply_image(image)
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            inputs.append({"image": tensor, "height": frame.shape[0], "width": frame.shape[1]})
            transforms.append(transform)
        return inputs, transforms

    def predict(self, frames, boxes=None):
        """detectron2's raw output: one ``Instances`` per frame, in frame coordinates."""
        import torch
        from detectron2.structures import Boxes, Instances

        inputs, transforms = self._inputs(frames)
        with torch.no_grad(), _quiet_libraries():
            if boxes is None:
                outputs = self.model(inputs)
            else:
                given = []
                for item, transform, frame_boxes in zip(inputs, transforms, boxes):
                    xyxy = np.asarray(frame_boxes, dtype=np.float32).reshape(-1, 4)
                    instances = Instances(tuple(item["image"].shape[1:]))
                    instances.pred_boxes = Boxes(torch.as_tensor(transform.apply_box(xyxy), dtype=torch.float32))
                    instances.pred_classes = torch.zeros(len(xyxy), dtype=torch.int64)
                    instances.scores = torch.ones(len(xyxy), dtype=torch.float32)
                    given.append(instances)
                outputs = self.model.inference(inputs, detected_instances=given)
        return [output["instances"] for output in outputs]

    def __call__(self, frames, boxes=None):
        return [to_detections(instances) for instances in self.predict(frames, boxes)]


def to_detections(instances):
    """detectron2 ``Instances`` (with ``pred_densepose``) -> ``charts.Detections``."""
    from .charts import Detections

    if len(instances) == 0 or not instances.has("pred_densepose"):
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2, 1, 1), np.float32), np.zeros((0, 25, 1, 1), np.float32))
    boxes = instances.pred_boxes.tensor.clone()  # as DensePoseResultExtractor: XYXY -> XYWH
    boxes[:, 2] -= boxes[:, 0]
    boxes[:, 3] -= boxes[:, 1]
    output = instances.pred_densepose
    return Detections(boxes, instances.scores, output.coarse_segm, output.fine_segm)


def load_estimator(
    config: str | Path | None = None,
    weights: str | Path | None = None,
    models: str | Path | None = None,
    device: str = "auto",
    min_score: float = 0.8,
    max_people: int = 1,
    progress=None,
) -> Detectron2Estimator:
    """The DensePose estimator for ``--config``/``--weights`` with its weights loaded."""
    require_detectron2()
    spec, yaml_file = resolve_model(config)
    if weights is not None:
        weights_file = Path(weights).expanduser()
        if not weights_file.is_file():
            raise UserError(f"{weights_file}: no such weights file")
    elif spec is not None:
        weights_file = ensure_weights(spec, models, progress)
    else:
        raise UserError(f"{yaml_file}: a config file needs its weights; pass --weights FILE (.pkl or .pth)")
    cfg = build_config(config, device=resolve_device(device), min_score=min_score, max_people=max_people)
    name, key = model_key(config, weights)
    # the zoo file was just checked against its pinned digest; a file the user names is trusted and hashed
    digest = spec.sha256 if weights is None and spec is not None and spec.sha256 else None
    return Detectron2Estimator(cfg, weights=weights_file, name=name, weights_sha256=digest, key=key)


def densepose_status(models: str | Path | None = None) -> dict:
    """The DensePose stage's state, for library use: versions, whether detectron2 imports (and its
    error), whether the default weights are there, the install command. Never raises.
    (``magicanimate doctor`` reads the installed versions alone, without importing detectron2.)"""
    from ..clip import installed_version as version

    spec = MODELS[DEFAULT_MODEL]
    try:
        weights = weights_path(spec, models)
    except Exception:  # noqa: BLE001 - a broken models setting must not break doctor
        weights = Path(spec.filename)
    status = {
        "ok": False,
        "detectron2": version("detectron2"),
        "densepose": version("detectron2-densepose"),
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "error": None,
        "weights": str(weights),
        "weights_present": weights.is_file(),
        "install": install_command(),
    }
    try:
        require_detectron2()
        status["ok"] = True
    except UserError as exc:
        status["error"] = str(exc)
    return status
