"""The detectron2 side (``estimator.py``): the model-zoo weights (restricted unpickling, download,
checksums) and, in ``TestDetectron2``, the real R_50_FPN model (random weights, given boxes)
against detectron2's own extractor and visualiser; skipped when detectron2 is missing."""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.densepose import (
    PALETTE,
    densepose,
    render_labels,
)
from magicanimate_cli.densepose import estimator as est
from magicanimate_cli.densepose.charts import box_labels, frame_labels
from magicanimate_cli.errors import UserError

from densepose_helpers import read_png

# ----------------------------------------------------------------------------- weights


def zoo_pickle(path: Path, protocol: int = 2) -> dict:
    rng = np.random.default_rng(5)
    model = {"backbone.conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "head.bias": np.arange(3, dtype=np.float64)}
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle, protocol=protocol)
    return model


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_zoo_pickles_load_through_the_restricted_unpickler(tmp_path, protocol):
    model = zoo_pickle(tmp_path / "w.pkl", protocol)
    data = est.load_pickle_weights(tmp_path / "w.pkl")
    assert data["__author__"] == "Detectron2 Model Zoo"
    for key, value in model.items():
        assert data["model"][key].dtype == value.dtype and np.array_equal(data["model"][key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"model": {"w": np.zeros(2)}, "__author__": "x", "x": _Exploit()}, handle)
    with pytest.raises(UserError, match="refusing to unpickle (posix|nt|os).system"):
        est.load_pickle_weights(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "objects.pkl", "wb") as handle:
        pickle.dump({"model": {"w": np.array([1, "a"], dtype=object)}, "__author__": "x"}, handle)
    with pytest.raises(UserError, match="object array"):
        est.load_pickle_weights(tmp_path / "objects.pkl")


@pytest.mark.parametrize(
    "damage",
    [
        b"\x80\x04\x8e" + (2**62).to_bytes(8, "little"),  # a length no memory holds: MemoryError
        pickle.dumps(np.zeros(2, np.float32), protocol=2)[:-1] + b"X\x01\x00\x00\x00aK\x01s.",  # array["a"] = 1: IndexError
    ],
    ids=["huge length", "array indexed by a string"],
)
def test_a_damaged_weights_file_is_a_one_line_error_naming_it(tmp_path, damage):
    # bytes flipped in a --weights file (a zoo file is checked by its sha256 first) escaped as
    # "MemoryError" or "IndexError: only integers, slices ..." with exit 1
    (tmp_path / "model.pkl").write_bytes(damage)
    with pytest.raises(UserError, match=r"model\.pkl: not a weights pickle this tool will read .*pass a detectron2 model-zoo \.pkl") as info:
        est.load_pickle_weights(tmp_path / "model.pkl")
    assert "\n" not in str(info.value) and "()" not in str(info.value)


@pytest.fixture()
def served(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_download_once_and_check_sha256(tmp_path, served, monkeypatch):
    root, url = served
    payload = os.urandom(3 << 20)
    (root / "w.pkl").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    spec = est.ModelSpec("densepose_rcnn_test", 50, "DensePoseV1ConvXHead", 1, "w.pkl", digest, len(payload))
    monkeypatch.setattr(est.ModelSpec, "url", property(lambda self: f"{url}/{self.filename}"))
    seen = []
    path = est.ensure_weights(spec, tmp_path / "models", progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert path == tmp_path / "models" / "DensePose" / "densepose_rcnn_test" / "w.pkl"
    assert path.read_bytes() == payload and seen[-1] == ("download", len(payload), len(payload))
    (root / "w.pkl").unlink()
    assert est.ensure_weights(spec, tmp_path / "models") == path  # present and verified: no download

    path.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # always differs (a fixed byte matched 1 run in 256)
    with pytest.raises(UserError, match="does not match the expected"):
        est.ensure_weights(spec, tmp_path / "models")

    (root / "w.pkl").write_bytes(payload + b"tampered")
    path.unlink()
    with pytest.raises(UserError, match="downloaded file has sha256"):
        est.ensure_weights(spec, tmp_path / "models")
    assert list(path.parent.iterdir()) == []  # nothing half-written left

    unpinned = est.ModelSpec("densepose_rcnn_other", 101, "DensePoseDeepLabHead", 2, "o.pkl")
    with pytest.raises(UserError, match=r"no pinned sha256.*--weights FILE"):
        est.ensure_weights(unpinned, tmp_path / "models")


def test_the_default_model_is_pinned():
    spec = est.MODELS[est.DEFAULT_MODEL]
    assert spec.url == "https://dl.fbaipublicfiles.com/densepose/densepose_rcnn_R_50_FPN_s1x/165712039/model_final_162be9.pkl"
    assert spec.sha256 == "b8a7382001b16e453bad95ca9dbc68ae8f2b839b304cf90eaf5c27fbdb4dae91" and spec.size == 255_757_821
    values = est.config_values(spec)
    assert values["MODEL.RESNETS.DEPTH"] == 50 and values["MODEL.ROI_DENSEPOSE_HEAD.NAME"] == "DensePoseV1ConvXHead"
    assert est.resolve_model("R_101_FPN_DL_s1x")[0].head == "DensePoseDeepLabHead"


# ----------------------------------------------------------------------------- detectron2 itself

needs_detectron2 = pytest.mark.skipif(not est.detectron2_available(), reason="detectron2/DensePose not installed (optional extra)")
BOXES = [  # XYXY in frame pixels: two overlapping people, then one
    np.array([[20.3, 30.7, 150.2, 240.9], [90.5, 10.2, 190.0, 200.6]], np.float32),
    np.array([[10.0, 20.0, 180.0, 250.0]], np.float32),
]


def upstream_configs() -> Path | None:
    """detectron2's projects/DensePose/configs, where a source tree is at hand (see the test using it)."""
    import densepose as upstream

    candidates = [Path(upstream.__file__).resolve().parents[1] / "configs"]
    if os.environ.get("DETECTRON2_SOURCE"):
        candidates.append(Path(os.environ["DETECTRON2_SOURCE"]).expanduser() / "projects" / "DensePose" / "configs")
    return next((c for c in candidates if (c / "Base-DensePose-RCNN-FPN.yaml").is_file()), None)


@pytest.fixture(scope="module")
def d2_estimator():
    import torch

    torch.manual_seed(0)
    cfg = est.build_config(None, device="cpu", min_score=0.8, max_people=0)
    return est.Detectron2Estimator(cfg, name="random R_50_FPN")


@pytest.fixture(scope="module")
def d2_frames():
    rng = np.random.default_rng(6)
    return [rng.integers(0, 255, (256, 192, 3), dtype=np.uint8) for _ in BOXES]


@pytest.fixture(scope="module")
def d2_instances(d2_estimator, d2_frames):
    return d2_estimator.predict(d2_frames, boxes=BOXES)


@needs_detectron2
class TestDetectron2:
    """R_50_FPN from the project's config, random weights, given boxes, against detectron2's own code."""

    @pytest.mark.parametrize("name", list(est.MODELS))
    def test_config_is_the_upstream_yaml_chain(self, name):
        """The configs built in code equal upstream's YAML chain, model section, for every zoo model.

        The DensePose wheel ships no YAML files, so they are looked for beside the installed
        package (a source or editable install) and in the detectron2 checkout named by
        ``DETECTRON2_SOURCE`` (the one the wheel was built from)."""
        from densepose import add_densepose_config
        from detectron2.config import get_cfg

        folder = upstream_configs()
        if folder is None:
            pytest.skip("no DensePose configs: set DETECTRON2_SOURCE to the detectron2 checkout the wheel was built from")
        theirs = get_cfg()
        add_densepose_config(theirs)
        theirs.merge_from_file(str(folder / f"{name}.yaml"))
        ours = est.build_config(name, device="cpu")
        theirs.defrost()
        for key in ("WEIGHTS", "DEVICE"):  # set by the run (weights are loaded by load_weights, never by detectron2)
            theirs.MODEL[key] = ours.MODEL[key]
        theirs.MODEL.ROI_HEADS.SCORE_THRESH_TEST = ours.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        assert ours.MODEL == theirs.MODEL  # every model key; only training/dataset keys are left out
        assert ours.INPUT.MIN_SIZE_TEST == theirs.INPUT.MIN_SIZE_TEST and ours.INPUT.MAX_SIZE_TEST == theirs.INPUT.MAX_SIZE_TEST
        yaml_file = folder / f"{name}.yaml"
        assert est.build_config(yaml_file, device="cpu").MODEL == ours.MODEL  # --config FILE.yaml
        with pytest.raises(UserError, match="needs its weights"):
            est.load_estimator(yaml_file, device="cpu")

    def test_zoo_configs_need_no_yaml_files(self, tmp_path, monkeypatch):
        """Under the wheel install (no YAML anywhere) every zoo model still builds, on the head it names."""
        from detectron2.modeling import build_model

        monkeypatch.chdir(tmp_path)
        for name, spec in est.MODELS.items():
            cfg = est.build_config(name, device="cpu")
            assert cfg.MODEL.RESNETS.DEPTH == spec.depth and cfg.MODEL.ROI_DENSEPOSE_HEAD.NAME == spec.head
        model = build_model(est.build_config(None, device="cpu"))
        assert type(model.roi_heads.densepose_head).__name__ == "DensePoseV1ConvXHead"
        assert len(model.backbone.bottom_up.stages) == 4 and len(model.backbone.bottom_up.res4) == 6  # ResNet-50

    def test_detection_with_random_weights_finds_nobody(self, d2_estimator, d2_frames):
        found = d2_estimator(d2_frames[:1])
        assert len(found) == 1 and len(found[0]) == 0
        assert frame_labels(found[0], 256, 192, 0.8, 1)[1] == 0

    def test_labels_and_render_equal_detectron2s_extractor_and_visualizer(self, d2_estimator, d2_instances, d2_frames):
        import cv2
        from densepose.vis.densepose_results import DensePoseResultsFineSegmentationVisualizer
        from densepose.vis.extractor import DensePoseResultExtractor

        from magicanimate_cli.densepose.estimator import to_detections

        visualizer = DensePoseResultsFineSegmentationVisualizer(cmap=cv2.COLORMAP_VIRIDIS, alpha=1)
        for frame, found, boxes in zip(d2_frames, d2_instances, BOXES):
            assert len(found) == len(boxes)
            results, boxes_xywh = DensePoseResultExtractor()(found)
            detections_ = to_detections(found)
            assert np.array_equal(detections_.boxes_xywh.numpy(), boxes_xywh.numpy())
            for i, result in enumerate(results):
                box, labels = box_labels(detections_.coarse_segm[i], detections_.fine_segm[i], detections_.boxes_xywh[i])
                assert np.array_equal(labels, result.labels.numpy().astype(np.uint8))
                assert len(np.unique(labels)) > 3  # random heads still give varied parts
            canvas = cv2.applyColorMap(np.zeros(frame.shape[:2], np.uint8), cv2.COLORMAP_VIRIDIS)
            theirs = visualizer.visualize(canvas, (results, boxes_xywh))[:, :, ::-1]
            label_map, count = frame_labels(detections_, *frame.shape[:2], 0.8, 0)
            assert count == len(boxes)
            assert np.array_equal(render_labels(label_map), theirs)

    def test_the_stage_end_to_end(self, d2_estimator, d2_frames, d2_instances, tmp_path):
        import cv2
        from densepose.vis.densepose_results import DensePoseResultsFineSegmentationVisualizer
        from densepose.vis.extractor import DensePoseResultExtractor

        folder = tmp_path / "in"
        folder.mkdir()
        for i, frame in enumerate(d2_frames):
            Image.fromarray(frame).save(folder / media.frame_name(i))

        class GivenBoxes:
            name, device, calls = "random R_50_FPN", "cpu", []

            def __call__(self, batch):
                start = sum(self.calls)
                self.calls.append(len(batch))
                return d2_estimator(batch, boxes=BOXES[start : start + len(batch)])

        given = GivenBoxes()
        result = densepose(folder, tmp_path / "out", labels=tmp_path / "labels", max_people=0, batch_size=2, estimator=given)
        assert given.calls == [2] and result.frames == 2 and result.missing == 0
        visualizer = DensePoseResultsFineSegmentationVisualizer(cmap=cv2.COLORMAP_VIRIDIS, alpha=1)
        for i, (frame, found) in enumerate(zip(d2_frames, d2_instances)):
            canvas = cv2.applyColorMap(np.zeros(frame.shape[:2], np.uint8), cv2.COLORMAP_VIRIDIS)
            theirs = visualizer.visualize(canvas, DensePoseResultExtractor()(found))[:, :, ::-1]
            assert np.array_equal(read_png(tmp_path / "out" / media.frame_name(i)), theirs)
            assert np.array_equal(PALETTE[read_png(tmp_path / "labels" / media.frame_name(i))], theirs)

    def test_weights_load_safely_and_strictly(self, d2_estimator, tmp_path):
        import torch

        state = {k: v.detach().numpy().copy() for k, v in d2_estimator.model.state_dict().items()}
        with open(tmp_path / "zoo.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "plain.pth")
        for weights in (tmp_path / "zoo.pkl", tmp_path / "plain.pth"):
            torch.manual_seed(1)  # a different random init, overwritten by the file
            loaded = est.Detectron2Estimator(est.build_config(None, device="cpu"), weights=weights)
            for key, value in loaded.model.state_dict().items():
                assert np.array_equal(value.numpy(), state[key]), key
        del state["roi_heads.densepose_predictor.ann_index_lowres.weight"]
        with open(tmp_path / "partial.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        with pytest.raises(UserError, match="does not fit the configured model.*missing parameters"):
            est.Detectron2Estimator(est.build_config(None, device="cpu"), weights=tmp_path / "partial.pkl")
        with pytest.raises(UserError, match="does not fit the configured model"):
            est.load_estimator("R_101_FPN_DL_s1x", weights=tmp_path / "zoo.pkl", device="cpu")
        loaded = est.load_estimator(None, weights=tmp_path / "zoo.pkl", device="cpu", max_people=3)
        assert loaded.name == "densepose_rcnn_R_50_FPN_s1x" and loaded.cfg.TEST.DETECTIONS_PER_IMAGE == 3
        assert loaded.weights == tmp_path / "zoo.pkl"  # a file the user names is trusted, and its digest recorded
        assert loaded.weights_sha256 == hashlib.sha256((tmp_path / "zoo.pkl").read_bytes()).hexdigest()

    def test_loading_and_inference_keep_stderr_to_our_own_messages(self, d2_estimator, d2_frames, tmp_path, capfd):
        """No torch.fx / meshgrid warning and no checkpointer INFO line, even with logging set up at INFO."""
        import logging
        import warnings

        state = {k: v.detach().numpy().copy() for k, v in d2_estimator.model.state_dict().items()}
        with open(tmp_path / "zoo.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        logging.basicConfig(level=logging.INFO, force=True)
        try:
            capfd.readouterr()
            with warnings.catch_warnings():
                warnings.simplefilter("default")  # as a plain `python -m magicanimate_cli` run shows them
                loaded = est.load_estimator(None, weights=tmp_path / "zoo.pkl", device="cpu")
                loaded(d2_frames[:1])
                loaded(d2_frames[:1], boxes=BOXES[:1])
            assert capfd.readouterr().err == ""
        finally:
            for handler in logging.getLogger().handlers[:]:
                logging.getLogger().removeHandler(handler)
            logging.getLogger().setLevel(logging.WARNING)
