"""``magicanimate densepose``: a video, frames folder or clip folder -> MagicAnimate driving frames.

The stage runs detectron2's DensePose (``densepose_rcnn_R_50_FPN_s1x`` by default) over the
frames in batches, turns each frame's people into one label map (0 background, 1..24 body parts;
``charts``), optionally repairs the sequence (``repair``: fill frames without a person, per-pixel
majority over K frames) and renders it exactly as MagicAnimate's driving videos look
(``palette``: OpenCV VIRIDIS of ``floor(l*255/24)``, alpha 1, viridis(0) canvas).

Layout on disk:

* ``INPUT`` a video -> ``OUTPUT`` a video or a frames folder (``00000.png``...);
* ``INPUT`` a frames folder -> the output frames keep the input's file names (as ``.png``);
* ``INPUT`` a clip folder (has ``images/``) -> ``densepose/`` and the label maps in
  ``densepose_labels/`` beside it, file for file with ``images/``.

Label maps (``--labels DIR``) are single-channel 8-bit PNGs holding the labels themselves (the
flip and smoothing stages read them instead of inverting colours). Work in progress lives in a
hidden ``.<output>.densepose-work/`` folder beside the output: a run that is interrupted picks up
at the first frame without labels when started again with the same settings.

DensePose that exists already as IUV images (``--from-iuv``: ``iuv.labels_from_iuv``) skips the
model: the labels are the images' part indices, rendered the same way.

The pure-numpy rendering API (``PALETTE``, ``render_labels``, ``labels_from_render``,
``labels_from_iuv``, ``POINT_LABEL_SYMMETRIES``) imports no torch and no detectron2.
"""
from __future__ import annotations

from importlib import import_module

from .config import BACKGROUND, DensePoseConfig, DensePoseResult
from .stage import check_densepose, densepose

# numpy/torch-backed names load on first use, so `magicanimate --help` stays fast
_LAZY = {
    "MASK_LABEL_SYMMETRIES": "palette",
    "N_LABELS": "palette",
    "PALETTE": "palette",
    "PART_NAMES": "palette",
    "POINT_LABEL_SYMMETRIES": "palette",
    "labels_from_render": "palette",
    "render_labels": "palette",
    "labels_from_iuv": "iuv",
    "read_iuv": "iuv",
    "Detections": "charts",
    "DEFAULT_MODEL": "estimator",
    "MODELS": "estimator",
    "Detectron2Estimator": "estimator",
    "densepose_status": "estimator",
    "install_command": "estimator",
    "load_estimator": "estimator",
}

__all__ = ["BACKGROUND", "DensePoseConfig", "DensePoseResult", "check_densepose", "densepose", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
