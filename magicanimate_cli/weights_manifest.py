"""The weights manifest, the checksum record of a models folder, and file verification.

* The **manifest** (``models/manifest.json`` of the repository) names every file magicanimate
  reads from a models folder: its group (``animate``, ``densepose``, ``matting``), where it comes
  from (a Hugging Face repository pinned to a commit, or a plain URL) and, where it is published,
  its sha256.
* The **checksum record** (``<models>/.magicanimate-checksums.json``) holds the sha256 of every
  file that ``magicanimate models download`` (or ``models convert``) put there and checked, with
  the file's size and modification time when it was hashed.
* **Verification** compares a file with its record. Hashing 10 GB takes tens of seconds, so a
  file whose size and ``mtime_ns`` still equal the recorded ones counts as verified without being
  read again; a file whose mtime moved is re-hashed once and its record refreshed. A file cut
  short or replaced is caught whenever its size or mtime changed, which is what copying,
  truncating or re-downloading does; only a same-size rewrite that also restores the old mtime
  escapes the cache (``--rehash`` reads everything).

Nothing here imports torch or huggingface_hub.
"""

from __future__ import annotations

import hashlib
import json
import stat as stat_mode
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from . import files
from .errors import UserError
from .progress import Progress

GROUPS = ("animate", "densepose", "matting")
RECORD_NAME = ".magicanimate-checksums.json"
MANIFEST_NAME = "manifest.json"
_CHUNK = 8 << 20
_MB = 1_000_000



# ----------------------------------------------------------------------------- manifest


def inside(relpath: object) -> bool:
    """Whether ``relpath`` names a place inside a folder: a relative "/"-separated path without
    ``..``, so that ``root / relpath`` can never leave ``root`` (an absolute path would replace
    ``root`` altogether). What the manifest and the checksum record may hold."""
    if not isinstance(relpath, str) or not relpath or "\\" in relpath or "\0" in relpath:
        return False
    path = PurePosixPath(relpath)
    return not path.is_absolute() and ".." not in path.parts


@dataclass(frozen=True)
class Source:
    """Where a group of files comes from: a pinned Hugging Face repository or plain URLs."""

    name: str
    kind: str  # "hf" or "url"
    folder: str  # folder inside the models folder (the official layout)
    repo: str | None = None
    revision: str | None = None
    license: str | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "hf":
            return f"{self.repo}@{self.revision[:7] if self.revision and len(self.revision) == 40 else self.revision}"
        return self.name


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to the models folder, "/"-separated
    group: str
    source: Source
    size: int | None = None  # exact size in bytes where known
    approx_size: int | None = None  # for display only
    sha256: str | None = None
    url: str | None = None  # plain-URL sources
    archive_member: str | None = None  # the file is this member of the zip at ``url``
    replaced_by: str | None = None  # a converted file that makes this one unnecessary
    provisional: bool = False
    alternatives: tuple[str, ...] = ()  # other files the loader reads instead (a .bin variant of a hand-made folder)

    @property
    def remote(self) -> str:
        """The file's name inside its Hugging Face repository."""
        prefix = self.source.folder + "/"
        return self.path[len(prefix) :] if self.path.startswith(prefix) else self.path

    @property
    def display_size(self) -> int | None:
        return self.size if self.size is not None else self.approx_size


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, Source]
    files: tuple[ManifestFile, ...]
    origin: str = ""

    def select(self, groups: Iterable[str]) -> list[ManifestFile]:
        wanted = set(groups)
        return [f for f in self.files if f.group in wanted]

    def get(self, path: str) -> ManifestFile | None:
        return next((f for f in self.files if f.path == path), None)

    def replacement_of(self, path: str) -> ManifestFile | None:
        """The manifest file that ``path`` (a converted file) stands in for."""
        return next((f for f in self.files if f.replaced_by == path), None)


def manifest_path() -> Path:
    """``models/manifest.json`` of the source checkout, else the copy shipped inside the package."""
    checkout = Path(__file__).resolve().parent.parent / "models" / MANIFEST_NAME
    if checkout.is_file():
        return checkout
    return Path(__file__).resolve().parent / MANIFEST_NAME


def load_manifest(path: Path | str | None = None) -> Manifest:
    path = Path(path) if path is not None else manifest_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: weights manifest missing; reinstall magicanimate") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); restore it from the repository") from exc
    sources = {name: Source(name=name, **spec) for name, spec in data["sources"].items()}
    for source in sources.values():
        if not inside(source.folder):
            raise UserError(f"{path}: source {source.name!r} has folder {source.folder!r}, which is not inside the models folder; restore it from the repository")
    files = []
    for spec in data["files"]:
        spec = dict(spec)
        source = sources[spec.pop("source")]
        spec["alternatives"] = tuple(spec.get("alternatives", ()))
        if spec["group"] not in GROUPS:
            raise UserError(f"{path}: unknown group {spec['group']!r} for {spec['path']}")
        for where in (spec["path"], *filter(None, [spec.get("replaced_by")]), *spec["alternatives"]):
            if not inside(where):
                raise UserError(f"{path}: file path {where!r} is not inside the models folder (absolute, or with ..); restore it from the repository")
        files.append(ManifestFile(source=source, **spec))
    return Manifest(sources=sources, files=tuple(files), origin=str(path))


def parse_groups(only: str | Iterable[str] | None) -> tuple[str, ...]:
    """``None`` -> every group; ``"animate"``, ``"animate,densepose"`` or a list -> those groups."""
    if only is None or only == "" or only == "all":
        return GROUPS
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise UserError(f"--only {','.join(names) or only!r}: choose from {', '.join(GROUPS)} (comma-separated)")
    return tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path, progress: Progress | None = None, stage: str = "verify", offset: int = 0, total: int = 0) -> str:
    """The sha256 of a file, read in 8 MiB chunks; progress in MB (``offset`` MB already done)."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    done = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            done += n
            if progress is not None:
                progress(stage, offset + done // _MB, total)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a small file (what the Hub reports for files not stored in LFS)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ----------------------------------------------------------------------------- checksum record


@dataclass
class RecordEntry:
    sha256: str
    size: int
    mtime_ns: int
    group: str
    source: str  # "repo@revision", a URL, or "converted"
    checked_against: str | None  # "manifest", "hub-lfs", "hub-blob", "local" (trust on first use), "converted"
    recorded_at: str
    derived_from: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["derived_from"] is None:
            del data["derived_from"]
        return data


@dataclass
class ChecksumRecord:
    """``<models>/.magicanimate-checksums.json``: path -> RecordEntry."""

    root: Path
    entries: dict[str, RecordEntry] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / RECORD_NAME

    @classmethod
    def load(cls, root: Path | str) -> ChecksumRecord:
        root = Path(root)
        path = root / RECORD_NAME
        if not path.is_file():
            return cls(root)
        try:
            data = json.loads(path.read_text())
            entries = {p: RecordEntry(**e) for p, e in data.get("files", {}).items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise UserError(
                f"{path}: damaged checksum record ({exc.__class__.__name__}); delete it and run `magicanimate models download`"
            ) from exc
        outside = next((p for p in entries if not inside(p)), None)
        if outside is not None:  # a record from elsewhere must not make a check read (or hang on) any file outside the folder
            raise UserError(
                f"{path}: damaged checksum record (entry {outside!r} is not inside the models folder); "
                "delete it and run `magicanimate models download`"
            )
        return cls(root, entries)

    def save(self) -> None:
        data = {"schema": 1, "files": {p: self.entries[p].to_dict() for p in sorted(self.entries)}}
        files.write_text(self.path, json.dumps(data, indent=1) + "\n", replace=True)

    def put(self, relpath: str, sha256: str, *, group: str, source: str, checked_against: str | None, derived_from: dict | None = None) -> RecordEntry:
        stat = (self.root / relpath).stat()
        entry = RecordEntry(
            sha256=sha256,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            group=group,
            source=source,
            checked_against=checked_against,
            recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            derived_from=derived_from,
        )
        self.entries[relpath] = entry
        return entry


def update_record(root: Path, change: Callable[[ChecksumRecord], None], *, required: bool = True) -> ChecksumRecord | None:
    """Load, change and save the record under a file lock (several jobs may share one folder).

    With ``required=False`` (a cache refresh at load time) a read-only folder is not an error.
    """
    from filelock import FileLock, Timeout

    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / (RECORD_NAME + ".lock")), timeout=60):
            record = ChecksumRecord.load(root)
            change(record)
            record.save()
            return record
    except (OSError, Timeout) as exc:
        if required:
            raise UserError(f"{root / RECORD_NAME}: cannot update the checksum record ({exc}); check the folder's permissions") from exc
        return None


# ----------------------------------------------------------------------------- checking files

VERIFIED, UNVERIFIED, MISSING, CORRUPT, REPLACED = "verified", "unverified", "missing", "corrupt", "replaced"


@dataclass
class FileCheck:
    path: str
    group: str
    status: str  # verified | unverified | missing | corrupt | replaced
    size: int | None = None  # on disk; the expected size for missing files when known
    detail: str = ""
    rehashed: bool = False

    @property
    def problem(self) -> bool:
        return self.status == CORRUPT

    def to_dict(self) -> dict:
        return asdict(self)


def check_recorded(root: Path, relpath: str, entry: RecordEntry, *, rehash: bool = False, progress: Progress | None = None) -> FileCheck:
    """Compare one file with its record (cached by size and mtime unless ``rehash``)."""
    path = root / relpath
    try:
        stat = path.stat()
    except FileNotFoundError:
        return FileCheck(relpath, entry.group, MISSING, entry.size, "recorded but missing")
    if not stat_mode.S_ISREG(stat.st_mode):  # a device or a pipe (through a link): hashing it would never end
        return FileCheck(relpath, entry.group, CORRUPT, None, "not a regular file")
    if stat.st_size != entry.size:
        how = "truncated" if stat.st_size < entry.size else "longer than recorded"
        return FileCheck(relpath, entry.group, CORRUPT, stat.st_size, f"{how}: {stat.st_size} bytes, recorded {entry.size}")
    if not rehash and stat.st_mtime_ns == entry.mtime_ns:
        return FileCheck(relpath, entry.group, VERIFIED, stat.st_size, "size and mtime unchanged since hashed")
    actual = sha256_file(path, progress, total=max(1, stat.st_size // _MB))
    if actual != entry.sha256:
        return FileCheck(relpath, entry.group, CORRUPT, stat.st_size, f"checksum mismatch: sha256 {actual[:12]}…, recorded {entry.sha256[:12]}…", True)
    return FileCheck(relpath, entry.group, VERIFIED, stat.st_size, "re-hashed", True)


def _stale(check: FileCheck, entry: RecordEntry, record: ChecksumRecord, root: Path) -> FileCheck:
    """``check`` of a converted file, or corrupt when the checkpoint it was converted from has been
    replaced since by another recorded one (``models download`` fetching a newer pinned file): the
    loader prefers the conversion and would silently use the old weights."""
    source = (entry.derived_from or {}).get("path")
    origin = record.entries.get(source) if isinstance(source, str) else None
    if origin is None or origin.sha256 == entry.derived_from.get("sha256") or not (root / source).is_file():
        return check
    return FileCheck(check.path, check.group, CORRUPT, check.size, f"converted from another {Path(source).name} than the one here now (stale)")


def check_folder(
    root: Path | str,
    groups: Iterable[str] = GROUPS,
    *,
    manifest: Manifest | None = None,
    rehash: bool = False,
    progress: Progress | None = None,
    refresh_cache: bool = True,
) -> list[FileCheck]:
    """The state of every manifest file of ``groups`` and every recorded file, in manifest order.

    Files re-hashed because their mtime moved (and found intact) get their record refreshed so
    the next check is instant again; a read-only folder just skips that.
    """
    root = Path(root)
    groups = tuple(groups)
    manifest = manifest or load_manifest()
    record = ChecksumRecord.load(root)
    checks: list[FileCheck] = []
    seen: set[str] = set()

    for item in manifest.select(groups):
        seen.add(item.path)
        entry = record.entries.get(item.path)
        if item.replaced_by and not (root / item.path).exists() and (root / item.replaced_by).is_file():
            detail = f"converted to {Path(item.replaced_by).name}"
            checks.append(FileCheck(item.path, item.group, REPLACED, None, detail))
            continue
        if entry is not None:
            checks.append(check_recorded(root, item.path, entry, rehash=rehash, progress=progress))
        elif (root / item.path).is_file():
            checks.append(FileCheck(item.path, item.group, UNVERIFIED, (root / item.path).stat().st_size, "not in the checksum record"))
        elif (alt := next((a for a in item.alternatives if (root / a).is_file()), None)) is not None:
            checks.append(FileCheck(item.path, item.group, UNVERIFIED, (root / alt).stat().st_size, f"present as {Path(alt).name}, which the loader reads instead"))
        else:
            checks.append(FileCheck(item.path, item.group, MISSING, item.display_size, "not downloaded"))
    for relpath, entry in record.entries.items():  # converted files and anything else recorded
        if relpath in seen or entry.group not in groups:
            continue
        replaced = manifest.replacement_of(relpath)
        if replaced is not None and not (root / relpath).exists() and (root / replaced.path).is_file():
            continue  # a converted file that was removed again: the original is used
        check = check_recorded(root, relpath, entry, rehash=rehash, progress=progress)
        checks.append(_stale(check, entry, record, root) if check.status == VERIFIED else check)

    refreshed = [c.path for c in checks if c.rehashed and c.status == VERIFIED]
    if refreshed and refresh_cache:

        def refresh(rec: ChecksumRecord) -> None:
            for relpath in refreshed:
                old = rec.entries.get(relpath)
                if old is not None:
                    stat = (root / relpath).stat()
                    old.size, old.mtime_ns = stat.st_size, stat.st_mtime_ns

        update_record(root, refresh, required=False)
    return checks


def human_size(n: int | None, approx: bool = False) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{'~' if approx else ''}{n / scale:.2f} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------- verdicts


def download_command(group: str | None = None, models: Path | str | None = None, *, overwrite: bool = False) -> str:
    """The ``magicanimate models download`` command line that fetches ``group`` into ``models``
    (``--models`` only when that folder is not the one the command finds without it)."""
    return _models_command("download", *(["--only", group] if group else []), models=models, overwrite=overwrite)


def _models_command(*words: str, models: Path | str | None, overwrite: bool) -> str:
    """``magicanimate models WORDS`` for the weights folder ``models`` (``--models`` only when it
    is not the one the command finds without it)."""
    import shlex

    from .weights_layout import resolve_models_dir  # the one place that knows the default folder

    parts = ["magicanimate", "models", *words]
    if models is not None and Path(models).expanduser().resolve() != resolve_models_dir().expanduser().resolve():
        parts += ["--models", str(models)]
    return shlex.join(parts + (["--overwrite"] if overwrite else []))


def fix_for(check: FileCheck, manifest: Manifest, root: Path | None = None) -> str:
    """The command that repairs the file of ``check`` in the weights folder ``root``."""
    if manifest.get(check.path) is None and manifest.replacement_of(check.path) is not None:
        return f"run `{_models_command('convert', models=root, overwrite=True)}` (or delete it to use the original checkpoint)"
    if check.status == CORRUPT:
        return f"run `{download_command(None, root, overwrite=True)}` to fetch it again"
    return f"run `{download_command(check.group, root)}`"


def problems(checks: Iterable[FileCheck], record: ChecksumRecord, *, missing_ok: bool = False) -> list[FileCheck]:
    """The checks that stop a stage: corrupt files, recorded files that disappeared, and (unless
    ``missing_ok``) every missing file. The one rule behind ``verify_models``, ``models list``'s
    ``complete`` and ``doctor``."""
    return [c for c in checks if c.status == CORRUPT or (c.status == MISSING and (not missing_ok or c.path in record.entries))]


def verify_models(
    root: Path | str,
    only: str | Iterable[str] | None = "animate",
    *,
    rehash: bool = False,
    missing_ok: bool = True,
    progress: Progress | None = None,
    manifest: Manifest | Path | str | None = None,
) -> list[FileCheck]:
    """Check the files of ``only`` against ``<root>/.magicanimate-checksums.json``; no torch, no network.

    Raises ``UserError("<file>: checksum mismatch ...; run magicanimate models download")`` when a
    recorded file is missing, cut short or changed, and with ``missing_ok=False`` when any file of
    the groups is absent. Files never recorded (a folder assembled by hand, test fixtures) are
    not an error: ``magicanimate models download`` checks and records them. Fast: a file whose
    size and mtime equal the recorded ones is not read again.
    """
    root = Path(root)
    man = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    checks = check_folder(root, parse_groups(only), manifest=man, rehash=rehash, progress=progress)
    record = ChecksumRecord.load(root)
    bad = problems(checks, record, missing_ok=missing_ok)
    if bad:
        first = bad[0]
        absent = [c for c in bad if c.status == MISSING and c.path not in record.entries]  # never downloaded
        if len(absent) == len(bad):
            size = human_size(sum(c.size or 0 for c in absent), approx=True)
            raise UserError(
                f"{root / first.path}: missing ({len(absent)} file(s) of the {first.group} weights, {size}, are not in {root}); "
                f"{fix_for(first, man, root)}, or point --models / MAGICANIMATE_MODELS at a folder in the official layout"
            )
        more = f" (and {len(bad) - 1} more file{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise UserError(f"{root / first.path}: {first.detail}{more}; {fix_for(first, man, root)}")
    return checks
