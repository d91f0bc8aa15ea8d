"""magicanimate eval: pixel metrics against scikit-image, DisCo's bugs, Fréchet maths, batching,
the metric networks' loaders on random weights in their real formats, the weight download, CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError
from magicanimate_cli.evaluate import evaluate, pair_clips
from magicanimate_cli.evaluate import extractors as X
from magicanimate_cli.evaluate import frames as F
from magicanimate_cli.evaluate import weights as W
from magicanimate_cli.evaluate.frechet import Batcher, fid_from_features, frechet_distance

from factories import tiny_clip_net, tiny_frame_net

skimage_metrics = pytest.importorskip("skimage.metrics")
torch = pytest.importorskip("torch")
runner = CliRunner()


def pair(rng, shape=(24, 20, 3), noise=30):
    truth = rng.integers(0, 256, shape, dtype=np.uint8)
    generated = np.clip(truth.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return generated, truth


def write_clip(path: Path, frames: np.ndarray) -> Path:
    media.write_frames(path, frames, overwrite=True)
    return path


def clip_set(root: Path, rng, names=("a", "b"), frames=6, size=(24, 20)) -> tuple[Path, Path]:
    for name in names:
        truth = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
        generated = np.clip(truth.astype(int) + rng.integers(-25, 26, truth.shape), 0, 255).astype(np.uint8)
        write_clip(root / "gt" / name, truth)
        write_clip(root / "gen" / name, generated)
    return root / "gen", root / "gt"


# ----------------------------------------------------------------------------- pixel metrics


def test_corrected_pixel_metrics_match_scikit_image_for_uint8_and_float(rng):
    generated, truth = pair(rng)
    g, t = generated.astype(np.float64) / 255, truth.astype(np.float64) / 255

    expected_l1 = np.abs(generated.astype(float) - truth.astype(float)).mean() / 255
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(truth, generated)  # uint8: data_range 255
    expected_ssim = skimage_metrics.structural_similarity(truth, generated, channel_axis=2)
    for a, b in ((generated, truth), (g, t), (g.astype(np.float32), t.astype(np.float32))):
        assert F.l1(a, b) == pytest.approx(expected_l1, rel=1e-6)
        assert F.psnr(a, b) == pytest.approx(expected_psnr, rel=1e-6)
        assert F.ssim_rgb(a, b) == pytest.approx(expected_ssim, rel=1e-6)
    # the float path equals scikit-image on float input with data_range 1
    assert F.psnr(g, t) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(t, g, data_range=1.0), rel=1e-12)
    assert F.ssim_rgb(g, t) == pytest.approx(skimage_metrics.structural_similarity(t, g, channel_axis=2, data_range=1.0), rel=1e-12)
    # luma SSIM: BT.601 weights, float, data_range 1
    luma = lambda x: x @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert F.ssim_gray(generated, truth) == pytest.approx(
        skimage_metrics.structural_similarity(luma(t), luma(g), data_range=1.0), rel=1e-9
    )
    assert F.ssim_gray(generated, truth) != pytest.approx(F.ssim_rgb(generated, truth), rel=1e-6)
    assert math.isinf(F.psnr(truth, truth))


def test_disco_ssim_and_l1_are_disco_definitions(rng):
    cv2 = pytest.importorskip("cv2")
    generated, truth = pair(rng)
    gray_g, gray_t = cv2.cvtColor(generated, cv2.COLOR_RGB2GRAY), cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)
    assert F.disco_ssim(generated, truth) == pytest.approx(skimage_metrics.structural_similarity(gray_g, gray_t), rel=1e-12)
    height, width = truth.shape[:2]
    assert F.disco_l1(generated, truth) == pytest.approx(F.l1(generated, truth) * 255 / (height * width), rel=1e-12)
    with pytest.raises(TypeError):
        F.disco_psnr(generated.astype(np.float32), truth)


def test_disco_psnr_wraps_around_in_uint8():
    truth = np.zeros((8, 8, 3), np.uint8)
    # difference 16: 16**2 = 256 wraps to 0 in uint8, so DisCo sees a perfect frame (100 dB)
    generated = np.full_like(truth, 16)
    assert F.disco_psnr(generated, truth) == 100.0
    assert F.psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 16))
    # difference 17: 289 wraps to 33, the MSE drops from 289 to 33
    generated = np.full_like(truth, 17)
    assert F.disco_psnr(generated, truth) == pytest.approx(20 * math.log10(255 / math.sqrt(33)))
    assert F.psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 17))
    # truth above generated: 0 - 250 wraps to 6 before squaring; small differences (< 16) are exact
    generated, truth = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 250, np.uint8)
    assert F.disco_psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 6))
    generated, truth = np.full((4, 4, 3), 3, np.uint8), np.full((4, 4, 3), 10, np.uint8)
    assert F.disco_psnr(generated, truth) == pytest.approx(F.psnr(generated, truth))


def test_disco_l1_divides_by_height_times_width():
    truth = np.zeros((2, 5, 3), np.uint8)
    generated = np.full_like(truth, 10)
    assert F.disco_l1(generated, truth) == pytest.approx(10 / (2 * 5))
    assert F.l1(generated, truth) == pytest.approx(10 / 255)


# ----------------------------------------------------------------------------- Fréchet maths


def test_frechet_distance_matches_direct_scipy_computation(rng):
    from scipy import linalg

    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 0.3
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    # the symmetric form Tr((S1^1/2 S2 S1^1/2)^1/2) equals Tr((S1 S2)^1/2)
    root1 = linalg.sqrtm(s1).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(root1 @ s2 @ root1).real))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-8)
    assert fid_from_features(a, b) == pytest.approx(direct, rel=1e-8)
    # closed form for diagonal covariances: |mu1-mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(1 + 4 + 1 + 1, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(UserError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_features_do_not_depend_on_batch_size(rng):
    extractor = X.FrameExtractor(tiny_frame_net(), "tiny", size=16)
    frames = rng.integers(0, 256, (11, 20, 28, 3), dtype=np.uint8)
    prepared = [extractor.prepare(f) for f in frames]
    results = []
    for batch_size in (1, 3, 11, 32):
        batcher = Batcher(extractor, batch_size)
        for p in prepared:
            batcher.add(p)
        results.append(batcher.result())
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)
    assert results[0].shape == (11, 5)
    # and so the Fréchet distance
    half = len(frames) // 2
    fids = [fid_from_features(r[:half], r[half:]) for r in results]
    assert max(fids) - min(fids) < 1e-6 * max(1.0, abs(fids[0]))


def test_group_averaging_is_per_clip():
    batcher = Batcher(lambda batch: batch.reshape(len(batch), -1)[:, :2], batch_size=2)
    for value, group in ((1.0, "a"), (3.0, "a"), (10.0, "b"), (5.0, "a"), (20.0, "b")):
        batcher.add(np.full((2,), value), group=group)
    np.testing.assert_allclose(batcher.result(average_groups=True), [[3.0, 3.0], [15.0, 15.0]])
    assert batcher.result().shape == (5, 2)


def test_clean_resize_is_float_bicubic_per_channel(rng):
    from PIL import Image

    frame = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out = X.clean_resize(frame, 17)
    assert out.dtype == np.float32 and out.shape == (17, 17, 3)
    red = np.asarray(Image.fromarray(frame[:, :, 0].astype(np.float32), mode="F").resize((17, 17), Image.BICUBIC))
    np.testing.assert_array_equal(out[:, :, 0], red)
    assert not np.allclose(out, np.round(out))  # not quantized


# ----------------------------------------------------------------------------- evaluate() end to end


def injected():
    def lpips_like(generated, truth):  # a stand-in scorer: mean absolute difference per frame
        return np.abs(generated.astype(float) - truth.astype(float)).mean(axis=(1, 2, 3))

    return {
        "fid": X.FrameExtractor(tiny_frame_net(), "tiny-frame-net", size=16),
        "fvd": X.ClipExtractor(tiny_clip_net(), "tiny-clip-net", size=12, scale=lambda x: x / 127.5 - 1),
        "fid-vid": X.ClipExtractor(tiny_clip_net(seed=1), "tiny-clip-net-2", size=12, scale=lambda x: x - 110),
        "lpips": _Scorer(lpips_like),
    }


class _Scorer:
    name = "stand-in lpips"

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, generated, truth):
        return self.fn(generated, truth)


def test_evaluate_end_to_end_with_injected_networks(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, names=("a", "b", "c"), frames=8)
    result = evaluate(generated, truth, metrics="all", clip_length=4, batch_size=3, extractors=injected())
    data = result.to_dict()
    assert data["protocol"] == "corrected"
    assert [c["name"] for c in data["clips"]] == ["a", "b", "c"]
    assert set(data["overall"]) == {"l1", "psnr", "ssim", "ssim_gray", "lpips", "fid", "fid-vid", "fvd"}
    for scores in [data["overall"]] + [c["scores"] for c in data["clips"]]:
        for score in scores.values():
            assert {"value", "protocol", "clip_length", "extractor"} <= set(score)
            assert score["protocol"] == "corrected"
    assert data["overall"]["fvd"]["clip_length"] == 4 and data["overall"]["fvd"]["samples"] == 6  # 3 clips x 2
    assert data["overall"]["fvd"]["extractor"] == "tiny-clip-net"
    assert data["overall"]["fid"]["samples"] == 24 and data["overall"]["fid"]["extractor"] == "tiny-frame-net"
    assert data["overall"]["l1"]["clip_length"] == 8 and data["overall"]["l1"]["samples"] == 24
    # overall frame metrics are the mean over all frames; per clip over the clip's frames
    clip_l1 = [c["scores"]["l1"]["value"] for c in data["clips"]]
    assert data["overall"]["l1"]["value"] == pytest.approx(np.mean(clip_l1))
    json.dumps(data, allow_nan=False)

    # batch size does not move any number
    again = evaluate(generated, truth, metrics="all", clip_length=4, batch_size=1, extractors=injected()).to_dict()
    for key, score in data["overall"].items():
        rel = 1e-4 if key in ("fid", "fvd", "fid-vid") else 1e-9  # float32 networks: last-bit differences between batchings
        assert again["overall"][key]["value"] == pytest.approx(score["value"], rel=rel), key


def test_disco_video_protocol_samples_whole_videos(tmp_path, rng):
    pytest.importorskip("cv2")
    generated, truth = clip_set(tmp_path, rng, names=("a", "b", "c"), frames=10)
    result = evaluate(generated, truth, metrics="l1,psnr,ssim,fvd,fid-vid", protocol="disco", clip_length=4, extractors=injected())
    overall = result.to_dict()["overall"]
    assert set(overall) == {"l1", "psnr", "ssim", "fvd", "fid-vid"}  # no ssim_gray: DisCo's SSIM is grayscale
    assert overall["fvd"]["samples"] == 3 and overall["fvd"]["clip_length"] == 10
    assert overall["fid-vid"]["samples"] == 3 and overall["fid-vid"]["clip_length"] == 4
    assert all(s["protocol"] == "disco" for s in overall.values())


def test_resize_and_length_mismatch_are_reported(tmp_path, rng):
    truth = rng.integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (4, 12, 16, 3), dtype=np.uint8)
    write_clip(tmp_path / "truth", truth)
    media.write_frames(tmp_path / "gen.mp4", generated)
    result = evaluate(tmp_path / "gen.mp4", tmp_path / "truth", metrics="l1,psnr")
    clip = result.clips[0]
    assert clip.frames == 4 and clip.frames_ground_truth == 5 and clip.resized_from == (12, 16)
    assert any("compared the first 4" in n for n in result.notes) and any("Pillow bicubic" in n for n in result.notes)
    cv2 = pytest.importorskip("cv2")
    disco = evaluate(tmp_path / "gen.mp4", tmp_path / "truth", metrics="l1", protocol="disco")
    assert any("OpenCV bilinear" in n for n in disco.notes)
    decoded = media.read_frames(tmp_path / "gen.mp4").array
    expected = np.mean([F.disco_l1(cv2.resize(g, (32, 24)), t) for g, t in zip(decoded, truth)])
    assert disco.clips[0].scores["l1"].value == pytest.approx(expected, rel=1e-12)


def test_inputs_are_paired_by_name_and_mismatches_are_one_line_errors(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, names=("x", "y"), frames=2)
    assert [p[0] for p in pair_clips(generated, truth)] == ["x", "y"]
    write_clip(tmp_path / "gen" / "z", rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="no clip named z"):
        pair_clips(generated, truth)
    with pytest.raises(UserError, match="is one clip but"):
        pair_clips(generated / "x", truth)
    with pytest.raises(UserError, match="no such file"):
        pair_clips(tmp_path / "nope", truth)
    (tmp_path / "empty").mkdir()  # was "x: is one clip but empty is a folder of clips"
    with pytest.raises(UserError, match=r"empty: empty folder \(GENERATED\); give a clip"):
        pair_clips(tmp_path / "empty", truth / "x")
    # clip folders of the TikTok layout read their images/
    write_clip(tmp_path / "tiktok" / "images", rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8))
    assert pair_clips(tmp_path / "tiktok", truth / "x")[0][1] == tmp_path / "tiktok" / "images"


# ----------------------------------------------------------------------------- real networks, random weights


def needs(package: str) -> None:
    """Skip unless ``package`` is installed (it may import only through the torchvision stand-in)."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed ({X.INSTALL[package]})")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """Random VGG16 weights in torchvision's file format (features.N.* + classifier.*)."""
    needs("lpips")
    from magicanimate_cli.evaluate._torchvision import _vgg16

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in _vgg16().features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files hold the classifier too; it is ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_lpips_loads_torchvision_vgg_weights_without_torchvision(vgg_file, tmp_path, rng):
    state = torch.load(vgg_file, weights_only=True)
    model = X.load_lpips_model(vgg_file)
    np.testing.assert_array_equal(model.net.slice2._modules["5"].weight.detach().numpy(), state["features.5.weight"].numpy())
    assert float(model.lin4.model[1].weight.abs().sum()) > 0 and model.lins[4] is model.lin4

    generated, truth = pair(rng, shape=(2, 32, 32, 3), noise=60)
    corrected = X.LPIPSScorer(model, "lpips", "corrected")(generated, truth)
    disco = X.LPIPSScorer(model, "lpips", "disco")(generated, truth)
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    with torch.no_grad():
        np.testing.assert_allclose(corrected, model(to_tensor(generated), to_tensor(truth), normalize=True).flatten().numpy(), rtol=1e-5)
        np.testing.assert_allclose(disco, model(to_tensor(generated), to_tensor(truth)).flatten().numpy(), rtol=1e-5)
    assert not np.allclose(corrected, disco)
    assert X.LPIPSScorer(model, "lpips", "corrected")(truth, truth) == pytest.approx(0.0, abs=1e-7)

    state = dict(state)
    del state["features.28.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="missing net.slice5.28.weight"):
        X.load_lpips_model(tmp_path / "broken.pth")


def test_cli_lpips_from_the_models_folder(vgg_file, tmp_path, rng, monkeypatch):
    """The whole path: weight found in MODELS/metrics, hashed and recorded, lpips built, table printed."""
    import shutil

    models = tmp_path / "models"
    (models / "metrics").mkdir(parents=True)
    shutil.copy(vgg_file, models / "metrics" / "vgg16-397923af.pth")
    # random weights cannot carry the published hash prefix: check against a record of this file instead
    monkeypatch.setitem(W.WEIGHTS, "vgg16", W.WeightFile("vgg16", "vgg16-397923af.pth", None, "test copy"))
    generated, truth = clip_set(tmp_path, rng, frames=2, size=(32, 32))
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "lpips,l1", "--models", str(models), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "LPIPS" in result.stdout and "VGG16" in result.stdout
    assert (models / "metrics" / "vgg16-397923af.pth.sha256").is_file()
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "lpips", "--models", str(models), "--json", "--protocol", "disco"])
    score = json.loads(result.stdout)["overall"]["lpips"]
    assert score["extractor"].startswith("LPIPS v0.1 VGG16") and score["protocol"] == "disco" and score["value"] > 0


def test_inception_pool3_on_float_input_equals_torch_fidelity_forward(tmp_path, monkeypatch):
    needs("torch_fidelity")
    from magicanimate_cli.evaluate._torchvision import import_module

    module = import_module("torch_fidelity.feature_extractor_inceptionv3")
    cls = module.FeatureExtractorInceptionV3
    with monkeypatch.context() as patch:  # build it with random weights instead of downloading
        patch.setattr(module, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(cls, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        random_model = cls("inception-v3-compat", ["2048"])
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in random_model.state_dict().items()}, tmp_path / "inception.pth")
    model = X.load_inception(tmp_path / "inception.pth")
    assert model.Mixed_7c.branch1x1.conv.weight.dtype == torch.float32
    torch.testing.assert_close(model.fc.weight, random_model.fc.weight.half().float())
    x = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(x)[0]
        got = X.InceptionPool3(model)(x.float())
    torch.testing.assert_close(got, expected)


def test_i3d_and_r3d_load_their_checkpoint_formats(tmp_path):
    from magicanimate_cli.evaluate import r3d

    torch.manual_seed(0)
    net = r3d.r3d50(16)
    state = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"arch": "resnet-50", "state_dict": state}, tmp_path / "r3d.pth")  # DataParallel keys, as published
    loaded = r3d.load_r3d50(tmp_path / "r3d.pth", 16)
    for key, value in net.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value
        torch.testing.assert_close(loaded.state_dict()[key].to(expected.dtype), expected)
    small = r3d.r3d50(16, sample_size=32).eval()
    with torch.no_grad():
        assert small(torch.randn(1, 3, 16, 32, 32)).shape == (1, 2048)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="does not match"):
        r3d.load_r3d50(tmp_path / "bad.pth")

    needs("cdfvd")
    from magicanimate_cli.evaluate._torchvision import import_module

    i3d = import_module("cdfvd.third_party.i3d.pytorch_i3d").InceptionI3d(400, in_channels=3)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in i3d.state_dict().items()}, tmp_path / "i3d.pt")
    loaded = X.load_i3d(tmp_path / "i3d.pt")
    torch.testing.assert_close(loaded.state_dict()["logits.conv3d.weight"], i3d.state_dict()["logits.conv3d.weight"].half().float())


def test_torchvision_stand_in_explains_itself():
    from magicanimate_cli.evaluate._torchvision import _Unavailable

    with pytest.raises(ImportError, match="needs a working torchvision"):
        _Unavailable("torchvision.datasets.CIFAR10")()


# ----------------------------------------------------------------------------- weight download


class _Server:
    """A loopback HTTP server serving ``files`` (name -> bytes)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        files_ = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = files_.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verifies_sha256_records_it_and_checks_it_at_load(tmp_path):
    payload = b"weights" * 5000
    digest = hashlib.sha256(payload).hexdigest()
    seen = []
    with _Server({"w.pth": payload}) as server:
        good = W.WeightFile("t", "w.pth", f"{server.url}/w.pth", "test", sha256=digest)
        path = W.ensure(good, tmp_path, progress=lambda stage, done, total: seen.append((stage, done, total)))
        assert path.read_bytes() == payload and path == tmp_path / "metrics" / "w.pth"
        assert (tmp_path / "metrics" / "w.pth.sha256").read_text().split()[0] == digest
        assert seen[-1] == ("download w.pth", len(payload), len(payload))

        wrong = W.WeightFile("t", "x.pth", f"{server.url}/w.pth", "test", sha256_prefix="00000000")
        with pytest.raises(UserError, match="does not start with 00000000"):
            W.ensure(wrong, tmp_path)
        assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["w.pth", "w.pth.sha256"]  # nothing half-written

        with pytest.raises(UserError, match="download failed"):
            W.ensure(W.WeightFile("t", "y.pth", f"{server.url}/missing", "test"), tmp_path)

    path.write_bytes(payload[:-1])  # truncated after download
    with pytest.raises(UserError, match="recorded at download"):
        W.verify(good, tmp_path)
    with pytest.raises(UserError, match="missing; run without --no-download to fetch http://127.0.0.1"):
        W.ensure(good, tmp_path / "elsewhere", download=False)
    manual = W.WeightFile("t", "m.pth", None, "hand-placed")
    with pytest.raises(UserError, match="no public download"):
        W.ensure(manual, tmp_path)


def test_every_pinned_weight_has_a_source():
    for weight in W.WEIGHTS.values():
        assert weight.url or "DisCo" in weight.source
        if weight.sha256 and weight.sha256_prefix:
            assert weight.sha256.startswith(weight.sha256_prefix)
        if weight.sha256_prefix:
            assert weight.sha256_prefix in weight.filename


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_a_table_and_json(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng)
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "l1,psnr,ssim"])
    assert result.exit_code == 0, result.output
    assert "protocol corrected" in result.stdout and "SSIM gray" in result.stdout and "overall" in result.stdout
    for name in ("a", "b"):
        assert f"│ {name} " in result.stdout

    result = runner.invoke(app, ["eval", str(generated), str(truth), "--metrics", "psnr,l1", "--protocol", "disco", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["protocol"] == "disco" and list(data["overall"]) == ["l1", "psnr"]
    assert data["overall"]["psnr"]["clip_length"] == 6 and "extractor" in data["overall"]["psnr"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "l1,fancy"], "unknown fancy"),
        (["--protocol", "disc"], "choose corrected or disco"),
        (["--metrics", "fid-vid"], "fid-vid: "),
        (["--metrics", "fvd", "--no-download"], "fvd: "),
        (["--clip-length", "4", "--metrics", "fvd"], "at least 10 frames"),
        (["--metrics", "l1", "--device", "tpu"], "--device tpu: choose one of auto, cuda, cpu"),  # once ignored with pixel metrics
        (["--metrics", "l1", "--device", "cuda:999"], "--device cuda:999: "),  # no GPU here, or not a thousand
        (["--metrics", "l1", "--device", "cuda:\u00b2"], "choose one of auto, cuda, cpu"),  # "²".isdigit(), yet no number
    ],
)
def test_cli_bad_options_and_unavailable_metrics_exit_2_in_one_line(tmp_path, rng, args, message):
    generated, truth = clip_set(tmp_path, rng, frames=2)
    result = runner.invoke(app, ["eval", str(generated), str(truth), "--models", str(tmp_path / "models"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    if "--no-download" in args:
        assert "without --no-download" in lines[0] or "pip install" in lines[0]


def test_cli_bad_input_exits_2_with_json_error(tmp_path, rng):
    generated, truth = clip_set(tmp_path, rng, frames=2)
    result = runner.invoke(app, ["eval", str(generated / "a"), str(truth), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False and "is one clip but" in data["error"] and data["exit_code"] == 2
    (tmp_path / "notes.txt").write_text("hi")
    result = runner.invoke(app, ["eval", str(tmp_path / "notes.txt"), str(truth / "a")])
    assert result.exit_code == 2 and "not a video" in result.stderr


def test_animate_grid_outputs_beside_results_are_not_clips(tmp_path):
    from magicanimate_cli.evaluate import pair_clips

    gen, gt = tmp_path / "gen", tmp_path / "gt"
    for folder in (gen, gt):
        folder.mkdir()
        media.write_frames(folder / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    media.write_frames(gen / "clip_grid.mp4", np.zeros((2, 16, 48, 3), np.uint8))
    assert [name for name, _, _ in pair_clips(gen, gt)] == ["clip"]
