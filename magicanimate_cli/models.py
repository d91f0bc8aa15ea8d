"""Getting, checking and converting the weights.

Which folder holds them, and its layout (the official ``pretrained_models/``, so a folder made for
the official code works as it is), is ``weights_layout``'s (``resolve_models_dir``).

* ``download()`` (``magicanimate models download``): the files of ``models/manifest.json`` that
  are not already there and verified, each fetched with ``huggingface_hub.hf_hub_download`` into
  the official layout (``local_dir``) or, for the DensePose / PaddleSeg weights, from their plain
  URL with a resumable partial file; every file is checked against the hub's sha256 / git blob id
  and the manifest's sha256, and recorded in ``<models>/.magicanimate-checksums.json``.
* ``verify_models()``: the load-time check (cached by size and mtime, see
  ``weights_manifest``).
* ``convert()`` (``magicanimate models convert``): the pickled ``temporal_attention.ckpt`` to
  ``temporal_attention.safetensors``, optionally float16.
* ``list_models()`` (``magicanimate models list``): present / verified / missing per file.

torch and huggingface_hub are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import files
from .errors import NetworkError, UserError, first_line
from .progress import Progress
from .weights_layout import load_tensors, models_root
from .weights_manifest import (
    CORRUPT,
    MISSING,
    REPLACED,
    UNVERIFIED,
    VERIFIED,
    ChecksumRecord,
    FileCheck,
    Manifest,
    ManifestFile,
    check_folder,
    check_recorded,
    download_command,  # noqa: F401 - part of this module's API (errors and doctor suggest it)
    git_blob_sha1,
    human_size,
    load_manifest,
    parse_groups,
    sha256_file,
    update_record,
    verify_models,
)

TEMPORAL_CKPT = "MagicAnimate/temporal_attention/temporal_attention.ckpt"
TEMPORAL_SAFETENSORS = "MagicAnimate/temporal_attention/temporal_attention.safetensors"
_MB = 1_000_000



def _is_network_failure(exc: BaseException) -> bool:
    """No HTTP answer at all (connection, DNS, timeout, cut-off transfer), as opposed to an HTTP error status."""
    if getattr(exc, "response", None) is not None:  # the server answered, with an error status
        return False
    import importlib

    transport: list[type] = [OSError]  # requests' errors (older huggingface_hub) are OSErrors
    for name in ("httpx", "httpx2"):  # the HTTP client huggingface_hub uses, whichever release
        try:
            transport.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return isinstance(exc, tuple(transport))


@contextmanager
def _quiet_hub():
    """huggingface_hub logs a warning for every retry of a transfer ("Trying to resume download...");
    the final error is ours, in one line. ``HF_HUB_VERBOSITY=info`` (or debug) shows the retries."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    if logger.getEffectiveLevel() < logging.WARNING:  # the user asked for more
        yield
        return
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _manifest(manifest: Manifest | Path | str | None) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# ----------------------------------------------------------------------------- verification


def check_models(models: Path | str | None = None, only: str = "animate") -> Path:
    """The models folder, once every file of ``only`` is present and matches its record.

    The early check of ``animate``: no torch, no network, milliseconds (sizes and mtimes; see
    ``verify_models``). Raises one ``UserError`` naming the first missing or damaged file, how
    many there are, and the command that fixes them.
    """
    root = models_root(models)
    verify_models(root, only, missing_ok=False)
    return root


# ----------------------------------------------------------------------------- download


@dataclass
class PlanItem:
    path: str
    group: str
    source: str
    size: int | None
    action: str  # keep | record | download | replace (needs overwrite) | update (a superseded published file)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DownloadResult:
    models: str
    groups: list[str]
    offline: bool
    dry_run: bool
    downloaded: list[str]
    recorded: list[str]
    kept: list[str]
    bytes_to_download: int
    bytes_downloaded: int
    seconds: float
    plan: list[PlanItem] = field(default_factory=list)
    note: str | None = None  # e.g. why the sizes come from the manifest rather than the Hub

    def to_dict(self) -> dict:
        data = asdict(self)
        data["plan"] = [p.to_dict() for p in self.plan]
        return data

    def for_humans(self) -> dict:
        what = "would download" if self.dry_run else "downloaded"
        fetched = len([p for p in self.plan if p.action in FETCH_ACTIONS]) if self.dry_run else len(self.downloaded)
        size = self.bytes_to_download if self.dry_run else self.bytes_downloaded
        return {
            "models": self.models,
            what: f"{fetched} file(s), {human_size(size)}",
            "recorded": f"{len(self.recorded)} file(s) already here, checked and recorded" if self.recorded else None,
            "kept": f"{len(self.kept)} verified file(s)",
            "note": self.note,
            "seconds": self.seconds,
        }


@dataclass
class _Remote:
    size: int | None = None
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git object id (small files)


def _remote_info(items: list[ManifestFile]) -> dict[str, _Remote]:
    """Sizes and checksums from the Hub, one ``get_paths_info`` call per repository."""
    from huggingface_hub import HfApi, constants

    info: dict[str, _Remote] = {}
    by_source: dict[str, list[ManifestFile]] = {}
    for item in items:
        if item.source.kind == "hf":
            by_source.setdefault(item.source.name, []).append(item)
    api = HfApi(endpoint=constants.ENDPOINT)  # HF_ENDPOINT (a mirror) is honoured
    for group in by_source.values():
        source = group[0].source
        try:
            entries = api.get_paths_info(source.repo, [i.remote for i in group], revision=source.revision)
        except Exception as exc:  # network, 404, auth: one line, with the way out
            error = NetworkError if _is_network_failure(exc) else UserError
            raise error(
                f"{source.repo}@{source.revision}: cannot read file information from the Hugging Face Hub "
                f"({exc.__class__.__name__}: {first_line(exc)}); check the network "
                "(HF_ENDPOINT for a mirror), or set HF_HUB_OFFLINE=1 to use only the files already here"
            ) from exc
        found = {e.path: e for e in entries}
        for item in group:
            entry = found.get(item.remote)
            if entry is None or not hasattr(entry, "size"):
                raise UserError(f"{source.repo}@{source.revision}: has no file {item.remote}; the weights manifest is out of date")
            lfs = getattr(entry, "lfs", None)
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            if item.sha256 and sha and sha != item.sha256:
                raise UserError(
                    f"{item.path}: the Hub's sha256 ({sha[:12]}…) differs from the manifest's ({item.sha256[:12]}…) at the pinned "
                    "revision; the manifest is wrong, please report it"
                )
            info[item.path] = _Remote(size=entry.size, sha256=sha, blob_id=None if lfs else entry.blob_id)
    return info


def _expected(item: ManifestFile, remote: _Remote | None) -> tuple[str | None, str | None]:
    """(sha256 the file must have, where that comes from)."""
    if item.sha256:
        return item.sha256, "manifest"
    if remote is not None and remote.sha256:
        return remote.sha256, "hub-lfs"
    return None, None


def _matches(path: Path, item: ManifestFile, remote: _Remote | None, progress: Progress | None) -> tuple[bool | None, str, str | None]:
    """Hash ``path`` and compare: (True/False, or None when nothing is known; sha256; checked_against)."""
    size = path.stat().st_size
    actual = sha256_file(path, progress, total=max(1, size // _MB))
    expected, origin = _expected(item, remote)
    if expected is not None:
        return actual == expected, actual, origin
    if remote is not None and remote.blob_id:
        return git_blob_sha1(path) == remote.blob_id, actual, "hub-blob"
    if remote is not None and remote.size is not None and remote.size != size:
        return False, actual, "hub-size"
    return None, actual, None


def _source_label(item: ManifestFile) -> str:
    return f"{item.source.repo}@{item.source.revision}" if item.source.kind == "hf" else (item.url or item.source.name)


class _Meter:
    """Bytes downloaded across all files, reported as ``progress("download", MB done, MB total)``."""

    def __init__(self, progress: Progress | None, total: int, unit: int = _MB, stage: str = "download") -> None:
        self.progress, self.total, self.done, self.unit, self.stage = progress, total, 0, unit, stage

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            total = max(self.total, self.done) if self.unit == 1 else self.total
            self.progress(self.stage, min(self.done, total) // self.unit, max(1, total // self.unit))

    def tqdm_class(self):
        """A tqdm class for huggingface_hub that counts written bytes into this meter, silently."""
        from tqdm.auto import tqdm

        meter = self

        class _Bar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs.pop("name", None)
                kwargs["disable"] = True
                if kwargs.get("total") and not meter.total:  # one file of unknown size: its Content-Length
                    meter.total = int(kwargs["total"])
                super().__init__(*args, **kwargs)
                if kwargs.get("initial"):
                    meter.add(int(kwargs["initial"]))

            def update(self, n=1):
                if n:
                    meter.add(int(n))

            def update_transfer(self, n=1):  # network bytes of Xet downloads: the written bytes count
                pass

        return _Bar


def _fetch_hf(item: ManifestFile, root: Path, replace: bool, meter: _Meter) -> Path:
    from huggingface_hub import constants, hf_hub_download

    source = item.source
    extra = _supported(hf_hub_download, tqdm_class=meter.tqdm_class())  # huggingface_hub >= 0.3x
    path = hf_hub_download(
        source.repo,
        item.remote,
        revision=source.revision,
        local_dir=root / source.folder,
        force_download=replace,
        endpoint=constants.ENDPOINT,
        **extra,
    )
    return Path(path)


def _supported(function, **kwargs) -> dict:
    """The keyword arguments ``function`` accepts (older huggingface_hub releases lack some)."""
    import inspect

    parameters = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in parameters}


def _fetch_url(item: ManifestFile, root: Path, replace: bool, meter: _Meter) -> Path:
    """A plain-URL manifest file into place (verification happens in ``download``)."""
    dest = root / item.path
    _download_to(item.url, dest, item.size, item.archive_member, meter)
    return dest


def _download_to(url: str, dest: Path, size: int | None, archive_member: str | None, meter: _Meter, final: Path | None = None) -> None:
    """``url`` into ``dest``: through a ``.part`` file kept across runs and resumed with a range
    request; a zip (``archive_member``) is downloaded whole and only that member extracted.
    Folders it had to create are removed again when the download fails."""
    import hashlib

    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    download = dest if not archive_member else dest.with_name(Path(url).name)
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    part = download.with_name(f"{download.name}.{tag}.part")  # a fixed name: the next run resumes it
    resume = part.stat().st_size if part.exists() else 0
    headers = {"user-agent": build_hf_headers().get("user-agent", "magicanimate")}
    extra = _supported(http_get, tqdm_class=meter.tqdm_class())  # a wrong size is caught by the sha256
    try:
        with _quiet_hub(), open(part, "ab") as handle:
            http_get(url, handle, resume_size=resume, headers=headers, **extra)
    except UserError:
        raise
    except Exception as exc:  # httpx/OSError: the network, a 404, a cut-off transfer
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing to resume
        for folder in created:  # innermost first; only the empty ones we made
            with contextlib.suppress(OSError):
                folder.rmdir()
        if _is_network_failure(exc):
            raise NetworkError(f"{url}: download failed, no answer from the server ({first_line(exc)}); check the network and run again "
                               f"(it resumes), or put the file at {final or dest} yourself") from exc
        raise UserError(f"{url}: download failed ({first_line(exc)}); the source moved or is down: put the file at {final or dest} yourself, or retry later") from exc
    if not archive_member:
        files.commit(part, dest, replace=True)
        return
    _extract_member(part, url, archive_member, dest)
    part.unlink()


def _extract_member(archive: Path, url: str, member: str, dest: Path) -> None:
    """Copy one member of a zip to ``dest`` (matched by name; archive paths are never unpacked)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if len(names) != 1:
                raise UserError(f"{url}: expected one {member} in the archive, found {len(names)}; the source changed")
            with files.temporary(dest, replace=True) as tmp, open(tmp, "wb") as out, zf.open(names[0]) as handle:
                shutil.copyfileobj(handle, out, 8 << 20)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise UserError(f"{url}: the download is not a valid zip archive ({exc}); run the command again") from exc


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    archive_member: str | None = None,
    progress: Progress | None = None,
    stage: str = "download",
) -> str:
    """Download ``url`` (or one ``archive_member`` of the zip it serves) to ``dest``; return its sha256.

    The one downloader for weights outside the Hugging Face manifest files (other DensePose and
    PaddleSeg models, metric networks): resumable, and when ``sha256`` is given a mismatching file
    is deleted and refused, never left under ``dest``. Retries are silent; a failure is one line:
    ``NetworkError`` (exit 1) when no server answered, ``UserError`` (exit 2) when the source did.
    Two fetches into one folder at once take turns (``_one_download_at_a_time``); the second takes
    the file the first fetched when it has ``sha256``.
    """
    if not url.startswith(("https://", "http://")):
        raise UserError(f"{url}: only http(s) downloads are supported")
    if _offline():
        raise UserError(f"{url}: HF_HUB_OFFLINE is set; download it yourself and put it at {dest}")
    dest = Path(dest)
    fresh = dest.with_name(f".{dest.name}.fetched")
    with _one_download_at_a_time(dest.parent, progress) as waited:  # another worker fetching it: wait, then take its file
        if waited and sha256 and dest.is_file() and sha256_file(dest) == sha256.lower():
            return sha256.lower()
        _download_to(url, fresh, size, archive_member, _Meter(progress, size or 0, unit=1, stage=stage), final=dest)
        digest = sha256_file(fresh)
        if sha256 and digest != sha256.lower():
            fresh.unlink(missing_ok=True)
            raise UserError(f"{url}: downloaded file has sha256 {digest[:16]}..., expected {sha256.lower()[:16]}...; refusing to use it (retry later, or report a changed upstream file)")
        files.commit(fresh, dest, replace=True)
    return digest


Fetcher = Callable[[ManifestFile, Path, bool, _Meter], Path]


def download(
    *,
    only: str | None = None,
    models: Path | str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_plan: Callable[[list[PlanItem]], None] | None = None,
    manifest: Manifest | Path | str | None = None,
    fetch: Fetcher | None = None,
) -> DownloadResult:
    """Download the weights of ``only`` (animate, densepose, matting; default all) into ``models``.

    Files already recorded and intact are kept without a network call; files present but not
    recorded (a folder made by hand) are hashed and kept when they match the published checksum;
    a file that differs is only replaced with ``overwrite``. ``on_plan`` receives the plan (every
    file, its size and what will happen) before anything is fetched; ``dry_run`` stops there and
    never fails for want of a network: offline (``HF_HUB_OFFLINE=1``) or when the Hub cannot be
    reached, the plan's sizes and checksums come from the pinned manifest. Without ``dry_run``,
    offline means nothing is fetched: present files are checked and recorded, missing ones are an
    error (exit 2); a network failure is a ``NetworkError`` (exit 1). ``manifest`` and ``fetch``
    exist for tests.
    """
    started = time.perf_counter()
    groups = parse_groups(only)
    root = models_root(models)
    man = _manifest(manifest)
    offline = _offline()
    items = man.select(groups)
    with _one_download_at_a_time(root, progress, hold=not dry_run):  # a second one waits, then finds the files here
        record = ChecksumRecord.load(root)

        state = _local_state(items, root, record, progress, write=not dry_run)
        remote, note = _published([i for i in items if state[i.path] not in ("ok", "converted", "alternative")], offline, dry_run)
        plan, to_record = _make_plan(items, root, state, remote, record, progress)
        if on_plan is not None:
            on_plan(plan)
        fetching = [p for p in plan if p.action in FETCH_ACTIONS]
        need = sum(p.size or 0 for p in fetching)
        result = DownloadResult(
            models=str(root),
            groups=list(groups),
            offline=offline,
            dry_run=dry_run,
            downloaded=[],
            recorded=[],
            kept=[p.path for p in plan if p.action == "keep"],
            bytes_to_download=need,
            bytes_downloaded=0,
            seconds=0.0,
            plan=plan,
            note=note,
        )
        if not dry_run:
            result.recorded = _record_present(root, to_record)  # checked here: recorded even if what is missing cannot be fetched
            _refuse(root, fetching, need, offline=offline, overwrite=overwrite)
            _fetch_all(root, fetching, items, remote, fetch, progress, result)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


FETCH_ACTIONS = ("download", "replace", "update")
DOWNLOAD_LOCK = ".magicanimate-download.lock"


@contextmanager
def _one_download_at_a_time(root: Path, progress: Progress | None, hold: bool = True):
    """Within the block, hold ``root``'s download lock: a second download into the folder (another
    ``models download``, or a stage fetching its weights, ``fetch_url``, in a batch worker beside it) waits for it,
    saying so as the progress stage "waiting for another download into ROOT (held by ...)", and then
    plans from what the first left, instead of writing the same ``.part`` file at the same time.
    The lock file is removed when the block ends (with the folders it made that stayed empty);
    a folder that cannot be written (read-only) or locked is used without it: nothing is
    fetched there. As ``files.claim``, but waiting (``files.hold_lock``). Yields whether it waited."""
    try:
        import fcntl  # noqa: F401 (hold_lock needs it)
    except ImportError:  # no flock (Windows): downloads are not kept apart
        hold = False
    made = [folder for folder in (root, *root.parents) if not folder.exists()] if hold else []
    path, held, waited = root / DOWNLOAD_LOCK, None, ""

    def wait() -> None:
        nonlocal waited
        waited = f"waiting for another download into {root}{files.holder_of(path)}"
        if progress is not None:
            progress(waited, 0, 1)

    while hold:
        try:
            root.mkdir(parents=True, exist_ok=True)
            held = files.Claim(root, path, files.hold_lock(path, wait))
        except FileNotFoundError:  # the folder, made by another download that failed, went meanwhile
            continue
        except OSError:  # a read-only folder
            pass
        break
    if waited and progress is not None:
        progress(waited, 1, 1)
    try:
        yield bool(waited)
    finally:
        if held is not None:
            held.release()
        for folder in made:  # innermost first; only the ones it made that stayed empty
            with contextlib.suppress(OSError):
                folder.rmdir()


def _local_state(items: list[ManifestFile], root: Path, record: ChecksumRecord, progress: Progress | None, write: bool = True) -> dict[str, str]:
    """Step 1, no network: each file's state here (ok, converted, outdated, present, alternative, corrupt, missing);
    with ``write``, the record's cached stat of intact files that were hashed again is refreshed."""
    state: dict[str, str] = {}
    rehashed: list[str] = []
    for item in items:
        entry = record.entries.get(item.path)
        if item.replaced_by and not (root / item.path).exists() and (root / item.replaced_by).is_file():
            state[item.path] = "converted"
        elif entry is not None and item.sha256 and entry.sha256 != item.sha256 and (root / item.path).is_file():
            # the manifest now pins another file: updated only while it is still the file we recorded;
            # one changed since (your own, put over it) is judged by its content, as a file placed by hand
            check = check_recorded(root, item.path, entry, progress=progress)
            state[item.path] = "outdated" if check.status == VERIFIED else "present"
        elif entry is not None and entry.source != _source_label(item) and (root / item.path).is_file():
            state[item.path] = "present"  # recorded from another revision or URL: check it again
        elif entry is not None:
            check = check_recorded(root, item.path, entry, progress=progress)
            state[item.path] = {VERIFIED: "ok", CORRUPT: "corrupt", MISSING: "missing"}[check.status]
            if check.rehashed and check.status == VERIFIED:
                rehashed.append(item.path)
        elif (root / item.path).is_file():
            state[item.path] = "present"
        elif any((root / alt).is_file() for alt in item.alternatives):
            state[item.path] = "alternative"  # the loader reads that one instead (a hand-made folder's .bin)
        else:
            state[item.path] = "missing"
    if rehashed and write:  # intact files whose mtime moved: refresh the cache so the next check is instant
        update_record(root, lambda rec: [_refresh_stat(rec, p) for p in rehashed], required=False)
    return state


def _published(pending: list[ManifestFile], offline: bool, dry_run: bool) -> tuple[dict[str, _Remote], str | None]:
    """Step 2: what the Hub says about the files not verified here (sizes, checksums), and a note
    when a dry run had to do without it."""
    if not pending:
        return {}, None
    if offline:
        return {}, "HF_HUB_OFFLINE is set: sizes and checksums from the pinned manifest" if dry_run else None
    try:
        return _remote_info(pending), None
    except NetworkError as exc:
        if not dry_run:
            raise
        return {}, f"the Hub could not be reached ({first_line(exc.__cause__ or exc)}): sizes and checksums from the pinned manifest"


def _make_plan(
    items: list[ManifestFile], root: Path, state: dict[str, str], remote: dict[str, _Remote], record: ChecksumRecord, progress: Progress | None
) -> tuple[list[PlanItem], list[tuple[ManifestFile, str, str | None]]]:
    """Step 3: one ``PlanItem`` per file, and the present files to record as they are."""
    plan: list[PlanItem] = []
    to_record: list[tuple[ManifestFile, str, str | None]] = []
    for item in items:
        info = remote.get(item.path)
        size = info.size if info is not None and info.size is not None else item.display_size
        label = _source_label(item)
        st = state[item.path]
        if st in ("ok", "converted"):
            reason = "verified" if st == "ok" else f"converted to {Path(item.replaced_by).name}"
            plan.append(PlanItem(item.path, item.group, label, (root / (item.path if st == "ok" else item.replaced_by)).stat().st_size, "keep", reason))
        elif st == "alternative":
            alt = next(a for a in item.alternatives if (root / a).is_file())
            plan.append(PlanItem(item.path, item.group, label, (root / alt).stat().st_size, "keep",
                                 f"present as {Path(alt).name}, which the loader reads instead (unverified)"))
        elif st == "present":
            ok, sha, origin = _matches(root / item.path, item, info, progress)
            if ok is False:
                plan.append(PlanItem(item.path, item.group, label, size, "replace", f"differs from the published file ({origin})"))
            else:
                to_record.append((item, sha, origin if ok else "local"))
                why = f"matches the published checksum ({origin})" if ok else "present; nothing published to check it against"
                plan.append(PlanItem(item.path, item.group, label, (root / item.path).stat().st_size, "record", why))
        elif st == "corrupt":
            plan.append(PlanItem(item.path, item.group, label, size, "replace", "differs from its checksum record"))
        elif st == "outdated":  # a published file we recorded, superseded by the manifest: no --overwrite needed
            published = record.entries[item.path].checked_against in ("manifest", "hub-lfs", "hub-blob")
            plan.append(PlanItem(item.path, item.group, label, size, "update" if published else "replace", "the manifest now pins another file"))
        else:
            plan.append(PlanItem(item.path, item.group, label, size, "download", "missing"))
    return plan, to_record


def _refuse(root: Path, fetching: list[PlanItem], need: int, *, offline: bool, overwrite: bool) -> None:
    """Step 4: what stops a real download before anything changes (offline, --overwrite, disk space)."""
    if offline and fetching:
        first = fetching[0]
        raise UserError(
            f"{root / first.path}: {first.reason} and HF_HUB_OFFLINE is set ({len(fetching)} file(s) to fetch); "
            "unset HF_HUB_OFFLINE, or copy the files into the models folder"
        )
    replacing = [p for p in fetching if p.action == "replace"]
    if replacing and not overwrite:
        first = replacing[0]
        raise UserError(f"{root / first.path}: {first.reason}; pass --overwrite to replace it, or move it away")
    free = files.free_bytes(root)
    if need and need > free:
        raise UserError(f"{root}: the download needs {human_size(need)} but only {human_size(free)} is free; free space or use --models on another disk")


def _record_present(root: Path, to_record: list[tuple[ManifestFile, str, str | None]]) -> list[str]:
    """Step 5: record the files already here that matched (or had nothing to match)."""
    if not to_record:
        return []

    def add(rec: ChecksumRecord) -> None:
        for item, sha, origin in to_record:
            rec.put(item.path, sha, group=item.group, source=_source_label(item), checked_against=origin)

    update_record(root, add)
    return [item.path for item, _, _ in to_record]


def _fetch_all(
    root: Path,
    fetching: list[PlanItem],
    items: list[ManifestFile],
    remote: dict[str, _Remote],
    fetch: Fetcher | None,
    progress: Progress | None,
    result: DownloadResult,
) -> None:
    """Step 6: fetch, check and record each file in turn (a finished file is kept if a later one fails)."""
    meter = _Meter(progress, result.bytes_to_download)
    by_path = {i.path: i for i in items}
    for step in fetching:
        item = by_path[step.path]
        fetcher = fetch or (_fetch_hf if item.source.kind == "hf" else _fetch_url)
        before = meter.done
        path = _fetch_one(fetcher, item, root, step.action in ("replace", "update"), meter)
        if meter.done == before:  # a fetcher that does not report bytes
            meter.add(path.stat().st_size)
        ok, sha, origin = _matches(path, item, remote.get(item.path), progress)
        if ok is False:
            path.unlink(missing_ok=True)
            raise UserError(f"{path}: the downloaded file does not match its published checksum ({origin}); run the command again")

        def add_one(rec: ChecksumRecord, item=item, sha=sha, origin=origin) -> None:
            rec.put(item.path, sha, group=item.group, source=_source_label(item), checked_against=origin or "unchecked")

        update_record(root, add_one)
        result.downloaded.append(item.path)
        result.bytes_downloaded += path.stat().st_size
    if fetching and progress is not None:  # sizes from the manifest can be approximate: end the bar full
        progress("download", max(1, meter.total // _MB), max(1, meter.total // _MB))


def _fetch_one(fetcher: Fetcher, item: ManifestFile, root: Path, replace: bool, meter: _Meter) -> Path:
    """One file through ``fetcher``; its failures in one line (``NetworkError`` when nothing answered)."""
    try:
        with _quiet_hub():
            return fetcher(item, root, replace, meter)
    except (UserError, NetworkError, KeyboardInterrupt):
        raise
    except Exception as exc:  # network and hub errors: one line, and the way out
        refusal = files.write_error(exc)  # a full or read-only disk, no permission: the folder's fault, not the network's
        if refusal is not None:
            raise refusal from exc
        error = NetworkError if _is_network_failure(exc) else UserError
        raise error(
            f"{root / item.path}: download from {_source_label(item)} failed ({exc.__class__.__name__}: {first_line(exc)}); "
            "run the command again to continue (finished files are kept)"
        ) from exc


def _refresh_stat(record: ChecksumRecord, relpath: str) -> None:
    entry = record.entries.get(relpath)
    if entry is not None:
        stat = (record.root / relpath).stat()
        entry.size, entry.mtime_ns = stat.st_size, stat.st_mtime_ns


def format_plan(plan: list[PlanItem]) -> str:
    """The plan as lines for a terminal: action, size, file, and the total to fetch."""
    lines = [f"  {p.action:<8} {human_size(p.size):>10}  {p.path}" + (f"  ({p.reason})" if p.action in ("replace", "update", "record") else "") for p in plan]
    fetch = [p for p in plan if p.action in FETCH_ACTIONS]
    total = sum(p.size or 0 for p in fetch)
    unknown = " (+ files of unknown size)" if any(p.size is None for p in fetch) else ""
    lines.append(f"  {len(fetch)} file(s) to download, {human_size(total)}{unknown}; {len(plan) - len(fetch)} already here")
    return "\n".join(lines)


def ensure_weights(
    group: str,
    models: Path | str | None = None,
    progress: Progress | None = None,
    manifest: Manifest | Path | str | None = None,
) -> dict[str, Path]:
    """The files of one manifest group, downloaded first if missing, verified: manifest path -> file.

    For library callers (docs/models.md): ``ensure_weights("densepose")``. The stages fetch their
    own, since they serve every model of their tables and the manifest pins only the default ones
    (``densepose.estimator.ensure_weights``, ``matting.download_weights``).
    A file present but never recorded is hashed and checked once; a differing one is an error
    (``models download --overwrite`` replaces it).
    """
    root = models_root(models)
    groups = parse_groups(group)
    man = _manifest(manifest)
    checks = verify_models(root, groups, progress=progress, manifest=man)
    if any(c.status in (MISSING, UNVERIFIED) for c in checks):
        download(only=",".join(groups), models=root, progress=progress, manifest=man)
    return {item.path: root / item.path for item in man.select(groups)}


# ----------------------------------------------------------------------------- convert


@dataclass
class ConvertResult:
    models: str
    source: str
    output: str
    dtype: str
    tensors: int
    bytes_in: int
    bytes_out: int
    removed_original: bool
    skipped: bool
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _verify_source(root: Path, progress: Progress | None) -> str:
    """The sha256 of the checkpoint: checked against its record, or hashed when never recorded
    (a hand-made folder, or a fine-tuned checkpoint of your own, which is fine to convert)."""
    record = ChecksumRecord.load(root)
    entry = record.entries.get(TEMPORAL_CKPT)
    if entry is None:
        path = root / TEMPORAL_CKPT
        sha = sha256_file(path, progress, total=max(1, path.stat().st_size // _MB))
        published = load_manifest().get(TEMPORAL_CKPT)
        if published is not None and published.sha256 == sha:  # the published file: record it while we are at it
            update_record(
                root,
                lambda rec: rec.put(TEMPORAL_CKPT, sha, group="animate", source=_source_label(published), checked_against="manifest"),
                required=False,
            )
        return sha
    check = check_recorded(root, TEMPORAL_CKPT, entry, progress=progress)
    if check.status != VERIFIED:
        raise UserError(f"{root / TEMPORAL_CKPT}: {check.detail}; run `magicanimate models download --overwrite` before converting")
    return entry.sha256


def convert(
    *,
    models: Path | str | None = None,
    half: bool = False,
    remove_original: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ConvertResult:
    """``temporal_attention.ckpt`` -> ``temporal_attention.safetensors`` (float16 with ``half``).

    The pickle is read with ``torch.load(weights_only=True, mmap=True)``; the safetensors file is
    written under a temporary name in the same folder, read back and compared tensor by tensor
    with the source, then renamed into place and recorded in the checksum record. After that the
    loader reads the safetensors file and never unpickles. ``half`` halves the size; the official
    pipeline casts these weights to float16 on the GPU anyway, so GPU results do not change, but
    float32 (CPU) runs then use float16-rounded weights. ``remove_original`` deletes the 5 GB
    pickle afterwards. Running it again on a converted folder does nothing.
    """

    started = time.perf_counter()
    root = models_root(models)
    src, dst = root / TEMPORAL_CKPT, root / TEMPORAL_SAFETENSORS
    dtype_name = "float16" if half else "float32"
    record = ChecksumRecord.load(root)
    result = ConvertResult(str(root), str(src), str(dst), dtype_name, 0, 0, 0, False, True, 0.0)
    if not src.is_file():
        done = record.entries.get(TEMPORAL_SAFETENSORS)
        if dst.is_file() and done is not None:  # converted earlier and the original removed
            made = (done.derived_from or {}).get("dtype", "?")
            if overwrite or made != dtype_name:  # nothing to convert from: saying "skipped" would leave the wrong precision
                raise UserError(f"{src}: removed after the conversion to {made}, so it cannot be converted again "
                                f"({'--half' if half else 'float32'} asked); delete {dst} and run "
                                f"`{download_command('animate', root)}` to fetch the original, then convert it")
            result.dtype = made
            result.bytes_out, result.removed_original = dst.stat().st_size, True
            return result
        raise UserError(f"{src}: missing; run `{download_command('animate', root)}` first")
    source_sha = _verify_source(root, progress)
    previous = record.entries.get(TEMPORAL_SAFETENSORS)
    if dst.exists():
        same = (
            previous is not None
            and previous.derived_from is not None
            and previous.derived_from.get("dtype") == dtype_name
            and previous.derived_from.get("sha256") == source_sha
            and check_recorded(root, TEMPORAL_SAFETENSORS, previous).status == VERIFIED
        )
        if same and not overwrite:
            return _converted(result, root, src, dst, remove_original, started)
        if not overwrite:
            raise UserError(f"{dst}: exists (converted differently or not recorded); pass --overwrite to convert again")

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = load_tensors(src)  # weights_only=True, mmap=True
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    total = len(state)
    for i, (key, value) in enumerate(state.items()):
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{src}: entry {key!r} is not a tensor; not a plain state dict")
        if half and value.is_floating_point():
            value = value.to(torch.float16)
        ptr = value.untyped_storage().data_ptr()
        if ptr in storages or not value.is_contiguous():  # safetensors stores no shared or strided views
            value = value.contiguous().clone()
        storages.add(value.untyped_storage().data_ptr())
        tensors[key] = value
        if progress is not None:
            progress("convert", i + 1, total * 2)
    metadata = {"format": "pt", "converted_from": src.name, "source_sha256": source_sha, "dtype": dtype_name}
    existed = dst.exists()
    # hidden until complete, synced, then renamed; written inside a private folder, because
    # safetensors writes through a temporary of its own (.tmpXXXXXX) beside the file it is given,
    # which a kill would leave in the weights folder; the next run sweeps the folder
    folder = files.temp_beside(dst)
    try:
        with files.writing(dst):
            tmp = folder / dst.name
            save_file(tensors, str(tmp), metadata=metadata)
            with safe_open(str(tmp), framework="pt") as check:
                if set(check.keys()) != set(tensors):
                    raise RuntimeError("the written file lacks tensors")
                for i, key in enumerate(tensors):
                    if not torch.equal(check.get_tensor(key), tensors[key]):
                        raise RuntimeError(f"tensor {key} differs after writing")
                    if progress is not None:
                        progress("convert", total + i + 1, total * 2)
            os.chmod(tmp, files.file_mode())  # safetensors recreates the file with 0o600
            files.commit(tmp, dst, replace=overwrite)
    finally:
        files.discard(folder)
    del tensors, state
    sha = sha256_file(dst, progress, total=max(1, dst.stat().st_size // _MB))
    derived = {"path": TEMPORAL_CKPT, "sha256": source_sha, "dtype": dtype_name}
    try:
        update_record(
            root, lambda rec: rec.put(TEMPORAL_SAFETENSORS, sha, group="animate", source="converted", checked_against="converted", derived_from=derived)
        )
    except BaseException:
        if not existed:  # unrecorded, it would block the next run ("not recorded"): take it back
            dst.unlink(missing_ok=True)
        raise
    result.tensors, result.skipped = total, False
    return _converted(result, root, src, dst, remove_original, started)


def _converted(result, root: Path, src: Path, dst: Path, remove_original: bool, started: float):
    """Fill in the sizes and timing of a finished (or already done) conversion."""
    result.bytes_in, result.bytes_out = src.stat().st_size, dst.stat().st_size
    if remove_original:
        _remove_original(root)
        result.removed_original = True
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _remove_original(root: Path) -> None:
    (root / TEMPORAL_CKPT).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- list


@dataclass
class ModelsListing:
    models: str
    groups: list[str]
    files: list[FileCheck]
    counts: dict[str, int]
    complete: dict[str, bool]  # group -> every file verified, present or replaced

    def to_dict(self) -> dict:
        return {"models": self.models, "groups": self.groups, "counts": self.counts, "complete": self.complete, "files": [f.to_dict() for f in self.files]}

    def for_humans(self) -> dict:
        lines = []
        for group in self.groups:
            lines.append(f" {group}:")
            for f in (f for f in self.files if f.group == group):
                size = "-" if f.status == REPLACED else human_size(f.size, approx=f.status == MISSING)
                lines.append(f"  {f.status:<10} {size:>10}  {f.path}")
                if f.status in (CORRUPT, REPLACED):
                    lines.append(f"  {'':<10} {'':>10}  ({f.detail})")
        summary = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        if self.counts.get(UNVERIFIED):
            summary += " (unverified: not in the checksum record; `magicanimate models download` checks and records them)"
        return {"models": self.models, "summary": summary or "no files", "files": lines}


def list_models(
    *,
    models: Path | str | None = None,
    only: str | None = None,
    rehash: bool = False,
    progress: Progress | None = None,
    manifest: Manifest | Path | str | None = None,
) -> ModelsListing:
    """Every file of the manifest (and every converted file): verified, unverified, missing,
    corrupt or replaced (the checkpoint after ``convert --remove-original``)."""
    groups = parse_groups(only)
    root = models_root(models)
    checks = check_folder(root, groups, manifest=_manifest(manifest), rehash=rehash, progress=progress)
    counts = {s: sum(c.status == s for c in checks) for s in (VERIFIED, UNVERIFIED, REPLACED, MISSING, CORRUPT)}
    complete = {g: all(c.status in (VERIFIED, UNVERIFIED, REPLACED) for c in checks if c.group == g) for g in groups}
    return ModelsListing(str(root), list(groups), checks, counts, complete)
