"""The metric networks' weight files: where they come from, download once, verify by sha256.

Files live in ``<models>/metrics/`` (``weights_layout.resolve_models_dir``). A download streams to a
temporary name in that folder, hashes while it writes, and is renamed only when the hash
matches; the verified hash is recorded beside the file (``NAME.sha256``, ``sha256sum`` format)
and checked again every time the file is loaded, so a truncated or swapped file is a one-line
error instead of a crash inside torch.

What is pinned: a full sha256 where a published one is known, else the sha256 prefix that the
upstream file name carries (the torch.hub ``check_hash`` convention: ``vgg16-397923af.pth``
has a sha256 starting ``397923af``). Files without either are recorded on first download or
first use and checked against that record from then on.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import UserError, first_line
from ..weights_manifest import sha256_file

log = logging.getLogger(__name__)
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}
"""Why a sha256 record may not be written beside weights that are otherwise fine."""

SUBFOLDER = "metrics"


@dataclass(frozen=True)
class WeightFile:
    """One weight file of a metric network."""

    key: str
    filename: str
    url: str | None
    source: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    size_mb: int | None = None

    def path(self, models_dir: Path) -> Path:
        return Path(models_dir) / SUBFOLDER / self.filename


WEIGHTS: dict[str, WeightFile] = {
    w.key: w
    for w in (
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision VGG16 ImageNet weights (IMAGENET1K_V1), the LPIPS backbone",
            sha256_prefix="397923af",
            size_mb=528,
        ),
        WeightFile(
            "inception",
            "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "TensorFlow FID Inception (2015-12-05) converted by torch-fidelity",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            sha256_prefix="6726825d",
            size_mb=92,
        ),
        WeightFile(
            "i3d",
            "i3d_pretrained_400.pt",
            "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
            "Kinetics-400 I3D used for FVD by VideoGPT/TATS, DisCo and cd-fvd",
            size_mb=50,
        ),
        WeightFile(
            "r3d50",
            "resnet-50-kinetics.pth",
            None,
            "3D ResNet-50 Kinetics-400 of 3D-ResNets-PyTorch, DisCo's eval_fvd/resnet-50-kinetics.pth",
        ),
    )
}


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_record(path: Path) -> str | None:
    record = _record_path(path)
    if not record.is_file():
        return None
    text = record.read_text().split()
    return text[0].lower() if text else None


def _write_record(path: Path, digest: str) -> None:
    files.write_text(_record_path(path), f"{digest}  {path.name}\n", replace=True)


def _check_pinned(weight: WeightFile, digest: str, where: str) -> None:
    if weight.sha256 and digest != weight.sha256:
        raise UserError(f"{where}: sha256 {digest[:16]}... is not the published {weight.sha256[:16]}...; delete it and download it again")
    if weight.sha256_prefix and not digest.startswith(weight.sha256_prefix):
        raise UserError(
            f"{where}: sha256 {digest[:16]}... does not start with {weight.sha256_prefix} as its published name says; "
            "delete it and download it again"
        )


def verify(weight: WeightFile, models_dir: Path) -> Path:
    """The verified path of ``weight`` in ``models_dir`` (UserError when missing or altered)."""
    path = weight.path(models_dir)
    if not path.is_file():
        raise UserError(f"{path}: missing; {fetch_hint(weight, models_dir)}")
    digest = sha256_file(path)
    recorded = _read_record(path)
    if recorded is not None and digest != recorded:
        raise UserError(f"{path}: sha256 differs from the one recorded at download ({recorded[:16]}...); the file changed, download it again")
    _check_pinned(weight, digest, str(path))
    if recorded is None:
        try:
            _write_record(path, digest)
        except (UserError, OSError) as exc:  # a shared, read-only models folder: checked, just not remembered
            cause = exc.__cause__ if isinstance(exc, UserError) else exc
            if getattr(cause, "errno", None) not in _UNWRITABLE:
                raise
            log.debug("%s: cannot record its sha256 (%s); it is hashed again next time", path, first_line(cause))
    return path


def fetch_hint(weight: WeightFile, models_dir: Path, download: bool = True) -> str:
    target = weight.path(models_dir)
    if weight.url and not download:
        return f"run without --no-download to fetch {weight.url}, or put that file at {target}"
    if weight.url:
        return f"run `magicanimate eval` with network access once (it downloads {weight.url}) or put that file at {target}"
    return f"no public download: put {weight.filename} ({weight.source}) at {target}"


def ensure(weight: WeightFile, models_dir: Path, download: bool = True, progress=None) -> Path:
    """Download ``weight`` into ``models_dir`` if it is missing, then verify it."""
    path = weight.path(models_dir)
    if not path.is_file():
        if not download or not weight.url:
            raise UserError(f"{path}: missing; {fetch_hint(weight, models_dir, download)}")
        fetch(weight, models_dir, progress=progress)
    return verify(weight, models_dir)


def fetch(weight: WeightFile, models_dir: Path, progress=None) -> Path:
    """Download ``weight.url`` to its place (resumable, sha256-checked) and record its digest."""
    from ..models import fetch_url

    path = weight.path(models_dir)  # its folders are made by fetch_url, and taken back if the download fails
    digest = fetch_url(weight.url, path, sha256=weight.sha256, progress=progress, stage=f"download {weight.filename}")
    try:
        _check_pinned(weight, digest, weight.url)
    except UserError:
        path.unlink(missing_ok=True)
        raise
    _write_record(path, digest)
    return path
