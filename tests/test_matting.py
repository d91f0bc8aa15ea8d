"""The matting stage with the real PaddleSeg networks and random weights.

Random weights say nothing about mask quality, so these tests check what the stage owns: shapes,
value ranges, batching, thresholds, smoothing, file handling, the weight-loading path (PaddleSeg's
own ``paddle.save(model.state_dict())`` format, downloads over a loopback server, digests) and
the CLI. The input is scikit-image's astronaut photo (a real person).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import pickle
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import matting, media
from magicanimate_cli.errors import UserError

from factories import paddleseg_checkpoint

LITE = "pp-humansegv2-lite"


# ----------------------------------------------------------------------------- fixtures


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lite_models(tmp_path_factory):
    """A models folder holding random PP-HumanSegV2-Lite weights, pinned by their sha256."""
    root = tmp_path_factory.mktemp("matting-models")
    path = paddleseg_checkpoint(LITE, root / matting.MODELS[LITE].relpath)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(matting.MODELS, LITE, dataclasses.replace(matting.MODELS[LITE], sha256=_sha256(path)))
        yield root


@pytest.fixture(scope="module")
def segmenter(lite_models):
    return matting.load_segmenter(LITE, lite_models, device="cpu", download=False)


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    """Six 80x96 frames of the astronaut sliding sideways: a short 'video' of a real person."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((128, 128), Image.BILINEAR))
    return np.stack([photo[16:96, 8 + 4 * t : 104 + 4 * t] for t in range(6)])


def _write_folder(folder: Path, frames: np.ndarray, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for frame, name in zip(frames, names):
        Image.fromarray(frame).save(folder / name)
    return folder


def _read_masks(folder: Path) -> np.ndarray:
    return np.stack([media.read_map(p) for p in media.list_frame_files(folder)])


# ----------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("model", list(matting.MODELS))
def test_every_model_builds_and_runs(model):
    network = matting.build_network(model)  # imports paddle quietly
    import paddle

    with paddle.no_grad():
        logits = network(paddle.rand([1, 3, 64, 64]))
    assert list(logits[0].shape) == [1, 2, 64, 64]


def test_segmenter_gives_probabilities_at_frame_size(segmenter, clip_frames):
    prob = segmenter(clip_frames[:3])
    assert prob.shape == (3, 80, 96) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert prob.std() > 1e-4  # not a constant map


def test_probability_is_paddlesegs_own_prediction(tmp_path, segmenter, clip_frames):
    """Same numbers as PaddleSeg's predict path: image file -> Compose (cv2 read, BGR->RGB,
    Resize, Normalize) -> core.infer.inference (logits resized back) -> softmax / argmax."""
    import paddle
    import paddle.nn.functional as F
    from paddleseg import transforms
    from paddleseg.core import infer

    compose = transforms.Compose([transforms.Resize(target_size=(192, 192)), transforms.Normalize()])
    items = []
    for i, frame in enumerate(clip_frames[:2]):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
        items.append(compose({"img": str(tmp_path / f"{i}.png")}))
    with paddle.no_grad():
        pred, logit = infer.inference(segmenter.network, paddle.to_tensor(np.stack([d["img"] for d in items])), trans_info=items[0]["trans_info"])
    reference = F.softmax(logit, axis=1)[:, 1].numpy()
    prob = segmenter(clip_frames[:2])
    np.testing.assert_allclose(prob, reference, atol=1e-5)
    decided = np.abs(reference - 0.5) > 1e-4
    np.testing.assert_array_equal((prob >= 0.5)[decided], pred.numpy()[:, 0].astype(bool)[decided])


def test_batch_size_does_not_change_probabilities(segmenter, clip_frames):
    together = segmenter(clip_frames)
    one_by_one = np.concatenate([segmenter(frame[None]) for frame in clip_frames])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_paddle_runs_beside_torch(segmenter, clip_frames):
    import torch

    before = segmenter(clip_frames[:1])
    assert torch.nn.functional.relu(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]
    np.testing.assert_array_equal(segmenter(clip_frames[:1]), before)


def test_importing_paddle_leaves_the_callers_omp_num_threads_as_it_was(tmp_path):
    """Paddle's import set OMP_NUM_THREADS=1 for good: every process started afterwards ran single-threaded.
    In a fresh process (paddle is imported here already); its own OpenMP still runs on the one thread it chose."""
    import os

    code = (
        "import ctypes, os, subprocess, sys; from magicanimate_cli import matting; matting.build_network(sys.argv[1]); "
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"OMP_NUM_THREADS\"))'], "
        "capture_output=True, text=True, check=True).stdout.strip()\n"
        "try: threads = ctypes.CDLL('libiomp5.so').omp_get_max_threads()\n"
        "except OSError: threads = None\n"
        "print(os.environ.get('OMP_NUM_THREADS'), child, threads)"
    )
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code, LITE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    here, child, threads = done.stdout.split()
    assert (here, child) == ("None", "None")
    assert threads in ("1", "None")  # paddle's OpenMP (where its build has one) on the one thread its import chose


# ----------------------------------------------------------------------------- masks on disk


def test_frames_folder_masks_keep_names_and_size(tmp_path, lite_models, segmenter, clip_frames):
    names = ["shot_9.jpg", "shot_10.jpg", "shot_11.jpg"]
    source = _write_folder(tmp_path / "frames", clip_frames[:3], names)
    events = []
    result = matting.matte(source, tmp_path / "masks", segmenter=segmenter, progress=lambda *e: events.append(e))
    assert events == [("matte", 1, 3), ("matte", 2, 3), ("matte", 3, 3)]
    written = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert written == ["shot_10.png", "shot_11.png", "shot_9.png"]
    for name in written:
        with Image.open(tmp_path / "masks" / name) as image:
            assert image.mode == "L" and image.size == (96, 80)
            assert set(np.unique(np.asarray(image))) <= {0, 255}
    assert (result.frames, result.width, result.height, result.mode) == (3, 96, 80, "frames")
    assert result.threshold == 0.5 and result.soft is False and result.weights_pinned is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_frame_removed_during_the_run_is_named_not_every_later_mask_shifted(tmp_path, segmenter, clip_frames, monkeypatch):
    names = [f"{i:05d}.png" for i in range(4)]
    source = _write_folder(tmp_path / "frames", clip_frames[:4], names)
    probe = matting._probe

    def removing(plan):  # after the masks' names are planned (a batch's model load): another job takes frame 00001 away
        (source / "00001.png").unlink(missing_ok=True)
        return probe(plan)

    monkeypatch.setattr(matting, "_probe", removing)
    with pytest.raises(UserError, match=r"00001\.png: removed while the run read"):
        matting.matte(source, tmp_path / "masks", segmenter=segmenter)
    assert not (tmp_path / "masks").exists()  # no masks named after frames they are not of


def test_hard_masks_are_the_thresholded_soft_masks(tmp_path, lite_models, segmenter, clip_frames):
    source = _write_folder(tmp_path / "frames", clip_frames, [media.frame_name(i) for i in range(6)])
    matting.matte(source, tmp_path / "soft", soft=True, segmenter=segmenter)
    soft = _read_masks(tmp_path / "soft")
    assert len(np.unique(soft)) > 2  # really a probability map
    for threshold in (0.3, 0.5, 0.8):
        out = tmp_path / f"hard-{threshold}"
        result = matting.matte(source, out, threshold=threshold, segmenter=segmenter)
        hard = _read_masks(out)
        np.testing.assert_array_equal(hard, np.where(soft / 255.0 >= threshold, 255, 0))
        assert result.empty_frames == int(sum(not m.any() for m in hard))
    # 0.5 is PaddleSeg's argmax over its two classes
    prob = segmenter(clip_frames)
    hard = _read_masks(tmp_path / "hard-0.5")
    decided = np.abs(prob - 0.5) > 1 / 255  # pixels not rounded onto the threshold
    np.testing.assert_array_equal((hard > 0)[decided], (prob > 0.5)[decided])


def test_soft_results_say_the_threshold_their_empty_frames_are_counted_with(tmp_path, segmenter, clip_frames):
    """With --soft the result said `threshold: null`, yet `empty_frames` was counted with --threshold
    (0.5 unless given): the JSON did not say what its own count meant."""
    source = _write_folder(tmp_path / "frames", clip_frames[:3], [media.frame_name(i) for i in range(3)])
    for threshold in (0.3, 1.0):
        out = tmp_path / f"soft-{threshold}"
        result = matting.matte(source, out, soft=True, threshold=threshold, segmenter=segmenter)
        soft = _read_masks(out)
        assert result.soft is True and result.threshold == threshold
        assert result.empty_frames == int(sum(not (m >= threshold * 255).any() for m in soft))


def test_batch_size_does_not_change_masks(tmp_path, lite_models, segmenter, clip_frames):
    source = _write_folder(tmp_path / "frames", clip_frames, [media.frame_name(i) for i in range(6)])
    for batch in (1, 4, 8):
        matting.matte(source, tmp_path / f"b{batch}", soft=True, batch_size=batch, segmenter=segmenter)
    b1, b4, b8 = (_read_masks(tmp_path / f"b{b}").astype(int) for b in (1, 4, 8))
    assert np.abs(b1 - b4).max() <= 1 and np.abs(b1 - b8).max() <= 1


def test_a_clip_folders_other_parts_are_never_written_over(tmp_path, segmenter, clip_frames):
    # `matte CLIP -o CLIP/densepose --overwrite` replaced the clip's DensePose frames with masks
    clip = tmp_path / "clip"
    names = [media.frame_name(i) for i in range(3)]
    _write_folder(clip / "images", clip_frames[:3], names)
    _write_folder(clip / "densepose", clip_frames[:3], names)
    (clip / "meta.json").write_text('{"fps": 30}')
    before = {name: (clip / "densepose" / name).read_bytes() for name in names}
    for output in (clip / "densepose", clip / "densepose" / "sub", clip / "meta.json"):
        with pytest.raises(UserError, match="is the input|lies inside the input"):
            matting.matte(clip, output, overwrite=True, segmenter=segmenter)
    assert {name: (clip / "densepose" / name).read_bytes() for name in names} == before
    assert (clip / "meta.json").read_text() == '{"fps": 30}'
    matting.matte(clip, clip / "masks", segmenter=segmenter)  # its own part
    matting.matte(clip, clip / "masks", overwrite=True, segmenter=segmenter)
    assert sorted(p.name for p in (clip / "masks").iterdir()) == names


def test_clip_folder_writes_masks_and_never_overwrites_silently(tmp_path, lite_models, segmenter, clip_frames):
    clip = tmp_path / "clip"
    _write_folder(clip / "images", clip_frames[:3], [media.frame_name(i) for i in range(3)])
    result = matting.matte(clip, models=lite_models, segmenter=segmenter)
    assert result.mode == "clip" and Path(result.output) == clip / "masks"
    assert sorted(p.name for p in (clip / "masks").iterdir()) == sorted(p.name for p in (clip / "images").iterdir())
    before = (clip / "masks" / "00000.png").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        matting.matte(clip, models=lite_models, segmenter=segmenter, soft=True)
    assert (clip / "masks" / "00000.png").read_bytes() == before
    matting.matte(clip, models=lite_models, segmenter=segmenter, soft=True, overwrite=True)
    assert len(np.unique(media.read_map(clip / "masks" / "00000.png"))) > 2
    # a masks video of a clip plays at the clip's rate (meta.json), as densepose's and animate's do
    (clip / "meta.json").write_text(json.dumps({"format": 1, "fps": 30.0}))
    matting.matte(clip, tmp_path / "masks.mp4", models=lite_models, segmenter=segmenter)
    assert media.probe(tmp_path / "masks.mp4").fps == 30


def test_video_in_video_or_folder_out(tmp_path, lite_models, segmenter, clip_frames):
    video = media.write_frames(tmp_path / "in.mp4", clip_frames, fps=10)
    folder = matting.matte(video, tmp_path / "masks", segmenter=segmenter)
    assert folder.mode == "video" and folder.frames == 6
    assert [p.name for p in media.list_frame_files(tmp_path / "masks")] == [media.frame_name(i) for i in range(6)]
    mp4 = matting.matte(video, tmp_path / "masks.mp4", segmenter=segmenter)
    info = media.probe(tmp_path / "masks.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (96, 80, 6, 10.0)
    assert mp4.frames == 6


def test_a_frames_folders_masks_video_plays_at_the_fps_given(tmp_path, lite_models, segmenter, clip_frames):
    # a frames folder has no rate of its own: 25, unless --fps says otherwise (as for densepose);
    # a video keeps its own, and another --fps for it is refused
    _write_folder(tmp_path / "frames", clip_frames[:3], [media.frame_name(i) for i in range(3)])
    matting.matte(tmp_path / "frames", tmp_path / "masks.mp4", segmenter=segmenter, fps=12.5)
    assert media.probe(tmp_path / "masks.mp4").fps == 12.5
    video = media.write_frames(tmp_path / "in.mp4", clip_frames, fps=10)
    with pytest.raises(UserError, match=r"^--fps 12\.5: .*in\.mp4 is read at its own 10 fps; --fps is for a frames folder$"):
        matting.matte(video, tmp_path / "again.mp4", segmenter=segmenter, fps=12.5)
    with pytest.raises(UserError, match=r"^--fps 0:"):
        matting.matte(tmp_path / "frames", tmp_path / "again.mp4", segmenter=segmenter, fps=0)
    assert not (tmp_path / "again.mp4").exists()


def test_a_truncated_video_is_refused_unless_allowed(tmp_path, segmenter, rng):
    media.write_frames(tmp_path / "full.mp4", rng.integers(0, 256, (28, 64, 64, 3), dtype=np.uint8), fps=10)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])  # the header still promises 28 frames
    with pytest.raises(UserError, match=r"half\.mp4: truncated or damaged video"):
        matting.matte(tmp_path / "half.mp4", tmp_path / "masks", segmenter=segmenter)
    assert not (tmp_path / "masks").exists()
    assert 0 < matting.matte(tmp_path / "half.mp4", tmp_path / "masks", segmenter=segmenter, allow_truncated=True).frames < 28


def test_single_image_to_png(tmp_path, lite_models, segmenter):
    from skimage import data

    Image.fromarray(data.astronaut()[::4, ::4]).save(tmp_path / "astronaut.jpg")
    result = matting.matte(tmp_path / "astronaut.jpg", tmp_path / "astronaut-mask.png", segmenter=segmenter)
    mask = media.read_map(tmp_path / "astronaut-mask.png")
    assert mask.shape == (128, 128) and mask.dtype == np.uint8 and result.mode == "image"


# ----------------------------------------------------------------------------- smoothing


@pytest.mark.parametrize("k, frames", [(3, 7), (5, 7), (7, 4), (9, 1)])
def test_temporal_median_is_scipys_median_filter(k, frames):
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(k)
    stack = rng.integers(0, 256, size=(frames, 5, 6), dtype=np.uint8)
    streamed = np.stack(list(matting.temporal_median(iter(stack), k)))
    np.testing.assert_array_equal(streamed, median_filter(stack, size=(k, 1, 1), mode="nearest"))


def test_smoothing_is_a_majority_vote_of_the_frame_masks(tmp_path, lite_models, segmenter, clip_frames):
    from scipy.ndimage import median_filter

    source = _write_folder(tmp_path / "frames", clip_frames, [media.frame_name(i) for i in range(6)])
    matting.matte(source, tmp_path / "raw", segmenter=segmenter)
    result = matting.matte(source, tmp_path / "smooth", smooth=3, segmenter=segmenter)
    raw, smooth = _read_masks(tmp_path / "raw"), _read_masks(tmp_path / "smooth")
    assert result.smooth == 3 and not np.array_equal(raw, smooth)  # the clip moves: smoothing acts
    np.testing.assert_array_equal(smooth, median_filter(raw, size=(3, 1, 1), mode="nearest"))


def test_smooth_0_is_off_as_for_densepose(tmp_path, segmenter, clip_frames):
    """`--smooth 0` was refused (exit 2) although `densepose --smooth 0` is its off; now both 0 and 1 are off."""
    source = _write_folder(tmp_path / "frames", clip_frames, [media.frame_name(i) for i in range(6)])
    one = matting.matte(source, tmp_path / "one", smooth=1, segmenter=segmenter)
    zero = matting.matte(source, tmp_path / "zero", smooth=0, segmenter=segmenter)
    assert zero.frames == one.frames == 6 and zero.smooth == 0
    np.testing.assert_array_equal(_read_masks(tmp_path / "zero"), _read_masks(tmp_path / "one"))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"smooth": 2}, "--smooth 2: .* or an odd number of frames"),
        ({"smooth": -1}, "--smooth -1: use 0 or 1 \\(off\\)"),
        ({"threshold": 0.0}, "--threshold 0.0"),
        ({"threshold": 1.5}, "--threshold 1.5"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"model": "u2net"}, "--model u2net: unknown matting model"),
        ({"device": "tpu"}, "--device tpu"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        matting.matte(tmp_path, tmp_path / "out", **kwargs)


def test_gpu_without_cuda_is_a_user_error(lite_models):
    paddle = matting._import_paddle()
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip("a GPU is visible to Paddle here")
    for device in ("gpu", "cuda"):  # cuda: what the other commands call it
        with pytest.raises(UserError, match=f"--device {device}: this PaddlePaddle has no CUDA device.*use --device cpu"):
            matting.load_segmenter(LITE, lite_models, device=device, download=False)


def test_a_frame_of_another_size_is_refused_before_any_mask_is_made(tmp_path, segmenter, clip_frames):
    """The frames were checked one by one as they were read: a last frame of another size failed the
    run after every mask before it had been computed (in a batch, after the segmenter was loaded)."""

    class Unused:  # the segmenter, but making a mask fails the test
        def __getattr__(self, name):
            return getattr(segmenter, name)

        def __call__(self, frames):
            raise AssertionError("a mask was made")

    frames = _write_folder(tmp_path / "frames", clip_frames[:3], ["00000.png", "00001.png", "00002.png"])
    Image.fromarray(clip_frames[3][:, :-2]).save(frames / "00003.png")
    message = r"00003\.png: size 94x80 differs from the first frame's 96x80; resize the folder"
    with pytest.raises(UserError, match=message):
        matting.check_matte(frames, tmp_path / "masks")
    with pytest.raises(UserError, match=message):
        matting.matte(frames, tmp_path / "masks", segmenter=Unused())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_bad_paths_are_user_errors(tmp_path, clip_frames, segmenter):
    frames = _write_folder(tmp_path / "frames", clip_frames[:1], ["00000.png"])
    with pytest.raises(UserError, match="no such file"):
        matting.matte(tmp_path / "nope", tmp_path / "out", segmenter=segmenter)
    with pytest.raises(UserError, match="not a clip folder .* pass -o"):
        matting.matte(frames, segmenter=segmenter)
    with pytest.raises(UserError, match="is the input itself"):
        matting.matte(frames, frames, segmenter=segmenter, overwrite=True)
    with pytest.raises(UserError, match="masks are PNG"):
        matting.matte(frames, tmp_path / "masks.jpg", segmenter=segmenter)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image frames"):
        matting.matte(tmp_path / "empty", tmp_path / "out", segmenter=segmenter)


# ----------------------------------------------------------------------------- weights


def test_loaded_weights_are_the_checkpoint(lite_models, segmenter):
    saved = matting.read_pdparams(lite_models / matting.MODELS[LITE].relpath)
    loaded = segmenter.network.state_dict()
    assert set(saved) == set(loaded)
    for key, value in loaded.items():
        np.testing.assert_array_equal(value.numpy(), saved[key])
    assert segmenter.sha256 == matting.MODELS[LITE].sha256


def test_wrong_digest_is_refused_before_loading(tmp_path, monkeypatch):
    path = paddleseg_checkpoint(LITE, tmp_path / matting.MODELS[LITE].relpath)
    monkeypatch.setitem(matting.MODELS, LITE, dataclasses.replace(matting.MODELS[LITE], sha256="0" * 64))
    with pytest.raises(UserError, match=r"sha256 .* does not match .*delete it to download it again"):
        matting.load_segmenter(LITE, tmp_path, device="cpu", download=False)
    assert path.is_file()  # the user's file is reported, not deleted


def test_unpinned_weights_load_and_report_their_digest(tmp_path, monkeypatch):
    path = paddleseg_checkpoint(LITE, tmp_path / matting.MODELS[LITE].relpath, seed=3)
    monkeypatch.setitem(matting.MODELS, LITE, dataclasses.replace(matting.MODELS[LITE], sha256=None))
    loaded = matting.load_segmenter(LITE, tmp_path, device="cpu", download=False)
    assert loaded.sha256 == _sha256(path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    path = paddleseg_checkpoint(LITE, tmp_path / matting.MODELS[LITE].relpath)
    path.write_bytes(path.read_bytes()[:100_000])  # cut short, as an interrupted copy would be
    monkeypatch.setitem(matting.MODELS, LITE, dataclasses.replace(matting.MODELS[LITE], sha256=None))
    with pytest.raises(UserError, match="not a readable PaddlePaddle .pdparams"):
        matting.load_segmenter(LITE, tmp_path, device="cpu", download=False)


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"backbone.conv.conv.weight": Payload()}))
    with pytest.raises(UserError, match="not allowed in a weights file"):
        matting.read_pdparams(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_of_another_model_is_refused(tmp_path, monkeypatch):
    other = paddleseg_checkpoint("pp-humansegv1-lite", tmp_path / "other.pdparams")
    path = tmp_path / matting.MODELS[LITE].relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(other.read_bytes())
    monkeypatch.setitem(matting.MODELS, LITE, dataclasses.replace(matting.MODELS[LITE], sha256=None))
    with pytest.raises(UserError, match="weights missing .* pick the matching --model"):
        matting.load_segmenter(LITE, tmp_path, device="cpu", download=False)


def test_optional_keys_may_be_absent(tmp_path):
    """PP-HumanSegV2-Mobile checkpoints predate UAFM_SpAtten's constant ``_scale`` (1.0)."""
    import paddle

    network = matting.build_network("pp-humansegv2-mobile")
    state = {k: v.numpy() for k, v in network.state_dict().items() if not k.endswith("._scale")}
    assert len(state) < len(network.state_dict())
    fresh = matting.build_network("pp-humansegv2-mobile")
    matting.load_state(fresh, state, tmp_path / "x.pdparams", matting.MODELS["pp-humansegv2-mobile"].optional_keys)
    with paddle.no_grad():
        x = paddle.rand([1, 3, 64, 64])
        np.testing.assert_allclose(fresh(x)[0].numpy(), network(x)[0].numpy(), atol=1e-5)


class _ZipServer:
    """A loopback HTTP server with one zip laid out like PaddleSeg's published checkpoints."""

    def __init__(self, root: Path, checkpoint: Path, folder: str):
        self.hits = 0
        with zipfile.ZipFile(root / "weights.zip", "w") as zipped:
            zipped.writestr(f"{folder}/", "")
            zipped.write(checkpoint, f"{folder}/model.pdparams")
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.hits += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str = "weights.zip") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def zip_server(tmp_path):
    (tmp_path / "www").mkdir()
    checkpoint = paddleseg_checkpoint(LITE, tmp_path / "www-src" / "model.pdparams", seed=7)
    server = _ZipServer(tmp_path / "www", checkpoint, matting.MODELS[LITE].folder)
    server.checkpoint = checkpoint
    yield server
    server.close()


def test_download_once_verify_and_load(tmp_path, monkeypatch, zip_server):
    digest = _sha256(zip_server.checkpoint)
    spec = dataclasses.replace(matting.MODELS[LITE], url=zip_server.url(), sha256=digest)
    monkeypatch.setitem(matting.MODELS, LITE, spec)
    models = tmp_path / "models"
    events = []
    loaded = matting.load_segmenter(LITE, models, device="cpu", progress=lambda *e: events.append(e))
    target = models / "matting" / spec.folder / "model.pdparams"
    assert target.is_file() and loaded.weights == target and loaded.sha256 == digest
    assert events and events[-1][0] == "download" and events[-1][1] == events[-1][2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pdparams"]  # no zip, no partials
    matting.load_segmenter(LITE, models, device="cpu")
    assert zip_server.hits == 1  # downloaded once


def test_download_with_wrong_digest_keeps_nothing(tmp_path, monkeypatch, zip_server):
    spec = dataclasses.replace(matting.MODELS[LITE], url=zip_server.url(), sha256="f" * 64)
    monkeypatch.setitem(matting.MODELS, LITE, spec)
    with pytest.raises(UserError, match="refusing to use it"):
        matting.download_weights(LITE, tmp_path / "models")
    assert not (tmp_path / "models").exists()  # not even the folders made for it


def test_download_failures_are_user_errors(tmp_path, monkeypatch, zip_server):
    (tmp_path / "www" / "broken.zip").write_bytes(b"not a zip at all")
    for name, message in (("missing.zip", "download failed"), ("broken.zip", "not a valid zip")):
        spec = dataclasses.replace(matting.MODELS[LITE], url=zip_server.url(name), sha256=None)
        monkeypatch.setitem(matting.MODELS, LITE, spec)
        with pytest.raises(UserError, match=message):
            matting.download_weights(LITE, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_offline_matte_leaves_no_empty_folders(tmp_path, clip_frames, monkeypatch):
    """An offline first run fails in one line (exit 2) and leaves neither the weights folders it
    made nor a masks folder; a models folder that was there before is kept."""
    from typer.testing import CliRunner

    from magicanimate_cli.cli import app

    clip = tmp_path / "clip"
    (clip / "images").mkdir(parents=True)
    for i, frame in enumerate(clip_frames[:2]):
        Image.fromarray(frame).save(clip / "images" / f"{i:05d}.png")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once when huggingface_hub is imported
    (tmp_path / "kept").mkdir()
    for models in (tmp_path / "fresh" / "models", tmp_path / "kept"):
        result = CliRunner().invoke(app, ["matte", str(clip), "--models", str(models)])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert "HF_HUB_OFFLINE" in result.stderr
        assert sorted(p.name for p in clip.iterdir()) == ["images"]
    assert not (tmp_path / "fresh").exists()
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_created_folders_keep_a_partial_download(tmp_path):
    from magicanimate_cli.folders import created_folders

    with pytest.raises(OSError):
        with created_folders(tmp_path / "a" / "b" / "c") as folder:
            (folder / ".model.zip.partial").write_bytes(b"half")  # what a resumed download needs
            raise OSError("connection reset")
    assert (tmp_path / "a" / "b" / "c" / ".model.zip.partial").is_file()
    with pytest.raises(OSError), created_folders(tmp_path / "a" / "x" / "y"):
        raise OSError("offline")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]  # a/ existed: kept; x/y/ removed


# ----------------------------------------------------------------------------- doctor


def test_matting_status(lite_models, tmp_path):
    status = matting.matting_status(lite_models)
    assert status["ok"] is True and status["imports"] == "ok" and status["problem"] is None
    assert status["paddlepaddle"] and status["paddleseg"] == "2.8.0"
    assert status["weights"][LITE]["present"] is True
    assert status["weights"]["pp-humansegv1-server"]["present"] is False
    empty = matting.matting_status(tmp_path, import_check=False)
    assert empty["ok"] is True and empty["imports"] is None and "not downloaded yet" in empty["note"]
    json.dumps(status)  # doctor prints it


# ----------------------------------------------------------------------------- CLI


def test_cli_json_and_exit_codes(tmp_path, lite_models, clip_frames, monkeypatch):
    from typer.testing import CliRunner

    from magicanimate_cli.cli import app

    clip = tmp_path / "clip"
    _write_folder(clip / "images", clip_frames[:2], ["00000.png", "00001.png"])
    runner = CliRunner()
    args = ["matte", str(clip), "--models", str(lite_models), "--device", "cpu", "--json"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["frames"] == 2 and result["output"] == str(clip / "masks")
    again = runner.invoke(app, args + ["--soft"])
    assert again.exit_code == 2
    assert json.loads(again.stdout) == {
        "ok": False,
        "error": f"{clip / 'masks'}: already exists; pass --overwrite to replace it or choose another output",
        "exit_code": 2,
    }
    assert runner.invoke(app, args + ["--soft", "--overwrite", "--smooth", "3"]).exit_code == 0
    bad = runner.invoke(app, ["matte", str(clip), "-o", str(tmp_path / "m"), "--smooth", "4"])
    assert bad.exit_code == 2 and "--smooth 4" in bad.output and "Traceback" not in bad.output


def test_cli_stdout_is_only_json_in_a_fresh_process(tmp_path, lite_models, clip_frames):
    """Paddle's import-time warnings and PaddleSeg's logger must not reach stdout."""
    frames = _write_folder(tmp_path / "frames", clip_frames[:2], ["a.png", "b.png"])
    pin = repr(matting.MODELS[LITE].sha256)  # the fixture's pin, repeated in the new process
    code = (
        "import dataclasses, sys; from magicanimate_cli import cli, matting; "
        f"matting.MODELS[{LITE!r}] = dataclasses.replace(matting.MODELS[{LITE!r}], sha256={pin}); "
        "sys.argv[0] = 'magicanimate'; cli.entrypoint()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "matte", str(frames), "-o", str(tmp_path / "out"), "--models", str(lite_models), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["frames"] == 2
    assert "ccache" not in done.stderr and "[INFO]" not in done.stderr + done.stdout


SIGTERM_IN_SECOND_BATCH = """
import dataclasses, os, signal, sys
from magicanimate_cli import cli, matting
matting.MODELS[{model!r}] = dataclasses.replace(matting.MODELS[{model!r}], sha256={pin!r})
segment, calls = matting.Segmenter.__call__, []
def call(self, frames):  # Slurm's scancel or time limit, while the second batch is segmented
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return segment(self, frames)
matting.Segmenter.__call__ = call
sys.argv[0] = "magicanimate"
cli.entrypoint()
"""


@pytest.mark.parametrize("ignored", [False, True])
def test_sigterm_stops_matte_as_ctrl_c_does_though_paddle_was_imported(tmp_path, lite_models, clip_frames, ignored):
    """Paddle's import put its own C++ handler on SIGTERM over the one the command had set: matte
    died at once (exit 143, Paddle's "FatalError: Termination signal" report, its temporary masks
    folder left); and a SIGTERM ignored when it started (as some launchers start jobs) killed it too."""
    import signal

    frames = _write_folder(tmp_path / "frames", clip_frames[:3], ["a.png", "b.png", "c.png"])
    code = SIGTERM_IN_SECOND_BATCH.format(model=LITE, pin=matting.MODELS[LITE].sha256)
    args = ["matte", str(frames), "-o", str(tmp_path / "masks"), "--models", str(lite_models), "--device", "cpu", "--batch-size", "1", "--json"]
    preexec = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if ignored else None
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, preexec_fn=preexec)
    if ignored:
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a.png", "b.png", "c.png"]
        return
    assert done.returncode == 130, done.stderr
    assert json.loads(done.stdout) == {"ok": False, "error": "interrupted", "exit_code": 130}
    assert "FatalError" not in done.stderr and done.stderr.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no masks, no temporaries


def test_a_gif_whose_stored_masks_would_not_fit_the_disk_is_refused_before_any_mask_is_made(tmp_path, segmenter, clip_frames, monkeypatch):
    import magicanimate_cli.files

    class Unused:  # the segmenter, but making a mask fails the test
        def __getattr__(self, name):
            return getattr(segmenter, name)

        def __call__(self, frames):
            raise AssertionError("a mask was made")

    video = media.write_frames(tmp_path / "in.mp4", clip_frames, fps=10)
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 96 * 80 * 3 * 6 - 1)
    with pytest.raises(UserError, match=r"masks\.gif: its 6 frames of 96x80 are kept uncompressed until the GIF is encoded"):
        matting.matte(video, tmp_path / "masks.gif", segmenter=Unused())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
