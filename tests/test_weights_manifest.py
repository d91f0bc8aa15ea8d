"""The weights manifest has one source: the copy in the package; models/manifest.json is that file.

``weights_manifest.manifest_path`` prefers ``models/manifest.json`` in a source checkout and falls
back to the copy shipped inside the package (``magicanimate_cli/manifest.json``, the one in the
wheel). If the two ever diverged, a checkout and an installed package would download and verify
different files. The repository keeps ``models/manifest.json`` as a symbolic link to the package
copy; these tests fail if it is replaced by a file of its own or by a link elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from magicanimate_cli import weights_manifest
from magicanimate_cli.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PACKAGE_COPY = REPO / "magicanimate_cli" / "manifest.json"
CHECKOUT_COPY = REPO / "models" / "manifest.json"


def test_models_manifest_is_a_link_to_the_package_copy():
    assert CHECKOUT_COPY.is_symlink(), "models/manifest.json must link to ../magicanimate_cli/manifest.json"
    assert os.readlink(CHECKOUT_COPY) == "../magicanimate_cli/manifest.json"  # relative: works in any clone
    assert CHECKOUT_COPY.resolve() == PACKAGE_COPY.resolve()


def test_both_paths_give_the_same_manifest():
    assert CHECKOUT_COPY.read_bytes() == PACKAGE_COPY.read_bytes()
    from_checkout = weights_manifest.load_manifest(CHECKOUT_COPY)
    from_package = weights_manifest.load_manifest(PACKAGE_COPY)
    assert (from_checkout.sources, from_checkout.files) == (from_package.sources, from_package.files)
    assert json.loads(PACKAGE_COPY.read_text())["files"], "the manifest lists files"


def test_the_package_ships_the_manifest():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'magicanimate_cli = ["manifest.json"]' in pyproject


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["files"][0].update(path="../outside.json"),
        lambda m: m["files"][0].update(path="/etc/outside.json"),
        lambda m: next(iter(m["sources"].values())).update(folder=".."),
        lambda m: next(f for f in m["files"] if f.get("replaced_by")).update(replaced_by="/tmp/converted.safetensors"),
        lambda m: next(f for f in m["files"] if f.get("alternatives")).update(alternatives=["a/../../b.bin"]),
    ],
    ids=["dotdot", "absolute", "source-folder", "replaced-by", "alternative"],
)
def test_a_manifest_path_outside_the_models_folder_is_refused(tmp_path, change):
    """``root / path`` with an absolute path is that path, and ``..`` leaves the folder: a download
    would write (and a check read) outside the models folder."""
    manifest = json.loads(PACKAGE_COPY.read_text())
    change(manifest)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"{path}: .* not inside the models folder"):
        weights_manifest.load_manifest(path)
