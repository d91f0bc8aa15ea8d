"""The metric networks' loaders (``extractors.py``, ``r3d.py``) on random weights in their real formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError
from magicanimate_cli.evaluate import extractors as X
from magicanimate_cli.evaluate import weights as W

from evaluate_helpers import clip_set, pair

torch = pytest.importorskip("torch")
runner = CliRunner()


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


class _CreatesFile:
    """A pickle that, when unpickled without ``weights_only``, creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_an_inception_file_swapped_after_its_checks_runs_no_code(tmp_path, monkeypatch):
    """torch-fidelity reads the file a second time, with weights_only=False: a file replaced
    between our weights-only check and that read must still run nothing."""
    needs("torch_fidelity")
    path, marker = tmp_path / "inception.pth", tmp_path / "pwned"
    torch.save({"fc.weight": torch.zeros(1)}, path)
    real = X._torch_load

    def checked_then_swapped(file):
        state = real(file)
        torch.save({"fc.weight": _CreatesFile(marker)}, file)
        return state

    monkeypatch.setattr(X, "_torch_load", checked_then_swapped)
    with pytest.raises(UserError, match=f"{path}: cannot be read as a PyTorch state dict"):
        X.load_inception(path)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # set for that one read only


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


