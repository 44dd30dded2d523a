"""Safety: no pickle on load, archives cannot escape the cache, no remote code unless asked,
no network traffic except explicit downloads.

* Every ``torch.load`` in the package passes ``weights_only=True``; nothing calls
  ``pickle``/``dill``/``joblib`` loaders, ``numpy.load(allow_pickle=True)``, an unsafe YAML
  loader or ``trust_remote_code=True`` (a scan of the source's syntax trees); a checkpoint
  whose trainer state carries a pickled payload is refused without running it.
* :func:`transferkit.data.fetch.extract_archive` refuses zip / tar members with absolute
  paths, ``..``, links leaving the cache directory (also through a chain of links) and
  device files, before anything lands outside it.
* ``hf:`` backbones pass ``trust_remote_code=False`` to transformers unless the user sets it.
* A whole tiny experiment (training, baselines, report) opens no socket.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import io
import json
import socket
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import transferkit
from transferkit.data.fetch import extract_archive, fetch_url
from transferkit.engine import CheckpointStore
from transferkit.errors import CheckpointError, DataError

SRC = Path(transferkit.__file__).parent
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


# ----------------------------------------------------------------- no pickle on load
def _dotted(node: ast.AST) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _safe_yaml_loader(node: ast.expr | None, module: str) -> bool:
    if node is None:
        return False
    name = _dotted(node).split(".")[-1]
    if name in ("SafeLoader", "CSafeLoader"):
        return True
    loader = getattr(importlib.import_module(module), name, None)
    return isinstance(loader, type) and issubclass(loader, yaml.SafeLoader)


def unsafe_calls(source: str, module: str) -> Iterator[tuple[int, str]]:
    """``(line, reason)`` for every call that could unpickle or run untrusted code."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        root, _, attr = name.rpartition(".")
        if name == "torch.load" and not _is_true(_kw(node, "weights_only")):
            yield node.lineno, "torch.load without weights_only=True"
        if root in PICKLERS and attr in ("load", "loads", "open", "Unpickler"):
            yield node.lineno, f"{name} unpickles"
        if attr == "read_pickle":
            yield node.lineno, f"{name} unpickles"
        if name in ("np.load", "numpy.load") and _is_true(_kw(node, "allow_pickle")):
            yield node.lineno, "numpy.load with allow_pickle=True"
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            yield node.lineno, f"{name} can build arbitrary objects"
        if name in ("yaml.load", "yaml.load_all") and not _safe_yaml_loader(
            _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None), module
        ):
            yield node.lineno, "yaml.load without a SafeLoader"
        if _is_true(_kw(node, "trust_remote_code")):
            yield node.lineno, "trust_remote_code=True hard-coded"


def test_the_scanner_catches_each_pattern() -> None:
    bad = (
        "import torch, pickle, yaml, numpy as np\n"
        "torch.load('f')\n"
        "torch.load('f', weights_only=False)\n"
        "pickle.loads(b'')\n"
        "np.load('f', allow_pickle=True)\n"
        "yaml.load('a: 1')\n"
        "yaml.load('a: 1', Loader=yaml.FullLoader)\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\n"
    )
    assert [line for line, _ in unsafe_calls(bad, "yaml")] == [2, 3, 4, 5, 6, 7, 8]
    good = "torch.load('f', map_location='cpu', weights_only=True)\nyaml.safe_load('a')\n"
    assert list(unsafe_calls(good, "yaml")) == []


def test_no_source_file_loads_with_pickle_or_trusts_remote_code() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        for line, why in unsafe_calls(path.read_text(encoding="utf-8"), module):
            found.append(f"{rel}:{line}: {why}")
    assert found == []


class Payload:
    """Unpickling this would create ``path`` (it must never happen)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_pickled_payload_in_a_checkpoint_is_refused_unexecuted(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpts")
    ckpt = store.save("ckpt-00000001-step", {"w": torch.ones(2)}, {"global_step": 1})
    marker = tmp_path / "pwned"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    state = {
        "global_step": 1,
        "format": 1,
        "weights_sha256": manifest["files"]["model.safetensors"],
    }
    torch.save({**state, "evil": Payload(marker)}, ckpt / "trainer_state.pt")
    digest = hashlib.sha256((ckpt / "trainer_state.pt").read_bytes()).hexdigest()
    manifest["files"]["trainer_state.pt"] = digest  # the attacker fixes the checksum too
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="trainer state cannot be read"):
        store.load(ckpt)
    assert not marker.exists()


# ----------------------------------------------------------------- archive extraction
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info, None


EVIL_TARS = {
    "absolute path": [_file("ok.txt"), _file("/tmp/transferkit-escape-abs.txt")],
    "dot-dot": [_file("ok.txt"), _file("sub/../../escaped.txt")],
    "absolute symlink": [_link("etc", "/etc"), _file("etc/escaped.txt")],
    "relative symlink out": [_link("out", "../.."), _file("out/escaped.txt")],
    "hard link out": [_link("hard", "../outside.txt", tarfile.LNKTYPE)],
    "link chain out": [  # each link alone points inside; together they leave the cache
        _link("a/up", ".."),
        _link("a/upup", "up/.."),
        _file("a/upup/escaped.txt"),
    ],
    "device file": [_device("dev/null")],
}


@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_malicious_tar_is_refused_and_writes_nothing_outside(tmp_path: Path, case: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", EVIL_TARS[case])
    (tmp_path / "outside.txt").write_text("keep me")
    dest = tmp_path / "cache" / "x"
    with pytest.raises(DataError, match=r"archive|outside the cache") as info:
        extract_archive(archive, dest)
    assert info.value.where == str(archive) and "malicious" in (info.value.fix or "")
    assert not dest.exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/tmp/transferkit-escape-abs.txt").exists()
    assert (tmp_path / "outside.txt").read_text() == "keep me"


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("members", "symlink", "match"),
    [
        ({"ok.txt": b"1", "/abs/escaped.txt": b"2"}, None, "outside the cache"),
        ({"ok.txt": b"1", "a/../../escaped.txt": b"2"}, None, "outside the cache"),
        ({"ok.txt": b"1"}, "data/passwd", "symbolic link"),
    ],
)
def test_malicious_zip_is_refused(
    tmp_path: Path, members: dict[str, bytes], symlink: str | None, match: str
) -> None:
    archive = _zip(tmp_path / "evil.zip", members, symlink)
    with pytest.raises(DataError, match=match):
        extract_archive(archive, tmp_path / "cache" / "x")
    assert not (tmp_path / "cache" / "x").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_a_clean_tar_extracts_with_its_internal_links(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [_file("data/a.txt", b"alpha"), _file("data/sub/b.txt", b"beta"), _link("latest", "data")],
    )
    files = extract_archive(archive, tmp_path / "x", prefixes=["data/", "latest"])
    assert files == {
        "data/a.txt": hashlib.sha256(b"alpha").hexdigest(),
        "data/sub/b.txt": hashlib.sha256(b"beta").hexdigest(),
    }
    assert (tmp_path / "x" / "latest" / "sub" / "b.txt").read_bytes() == b"beta"


def test_fetch_url_extracts_once_and_refuses_a_malicious_archive(tmp_path: Path) -> None:
    good = _tar(tmp_path / "good.tar.gz", [_file("d/a.txt", b"alpha")])
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    root = fetch_url(good.as_uri(), sha, tmp_path / "c", extract=True)
    assert root == tmp_path / "c" / "urls" / "good.tar.gz.d"
    assert (root / "d" / "a.txt").read_bytes() == b"alpha"
    good.unlink()  # cached and verified: no download, no re-extraction
    assert fetch_url(good.as_uri(), sha, tmp_path / "c", extract=True) == root

    evil = _tar(tmp_path / "evil.tar.gz", EVIL_TARS["relative symlink out"])
    sha = hashlib.sha256(evil.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="outside the cache"):
        fetch_url(evil.as_uri(), sha, tmp_path / "c", extract=True)
    assert not (tmp_path / "c" / "urls" / "evil.tar.gz.d").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


# ----------------------------------------------------------------- trust_remote_code
@pytest.fixture
def hf_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every transformers ``Auto*.from_pretrained`` / ``from_config`` call's kwargs."""
    import transformers

    calls: list[tuple[str, dict[str, Any]]] = []
    for cls_name in ("AutoModel", "AutoConfig", "AutoTokenizer", "AutoImageProcessor"):
        cls = getattr(transformers, cls_name)
        for meth in ("from_pretrained", "from_config"):
            real = getattr(cls, meth, None)
            if real is None:
                continue

            def spy(*args: Any, _real: Any = real, _n: str = f"{cls_name}.{meth}", **kw: Any):
                calls.append((_n, kw))
                return _real(*args, **kw)

            monkeypatch.setattr(cls, meth, spy)
    return calls


def test_hf_backbones_do_not_trust_remote_code_unless_asked(
    tmp_path: Path, hf_calls: list[tuple[str, dict[str, Any]]]
) -> None:
    from tests.backbones.conftest import write_tiny_bert
    from transferkit.backbones import create_backbone

    model_dir = write_tiny_bert(tmp_path / "bert")
    create_backbone(f"hf:{model_dir}")
    create_backbone(f"hf:{model_dir}", pretrained=False)
    assert {n for n, _ in hf_calls} >= {
        "AutoModel.from_pretrained",
        "AutoTokenizer.from_pretrained",
    }
    assert all(kw.get("trust_remote_code", False) is False for _, kw in hf_calls)

    hf_calls.clear()
    create_backbone(f"hf:{model_dir}", trust_remote_code=True)
    asked = {n: kw.get("trust_remote_code") for n, kw in hf_calls}
    assert asked["AutoModel.from_pretrained"] is True
    assert asked["AutoTokenizer.from_pretrained"] is True


# ----------------------------------------------------------------- no network
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to resolve a name or open a connection is recorded and refused."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError("network access is blocked in this test")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def test_a_tiny_experiment_makes_no_network_call(tmp_path: Path, no_network: list[str]) -> None:
    from transferkit.experiment import run

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    x = rng.normal(0, 1, (120, 5)).astype(np.float32) + y[:, None]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = {
        "name": "offline",
        "data": {"target": str(tmp_path / "d.npz")},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 5},
        },
        "method": {"name": "finetune", "params": {"backbone_lr_mult": 1.0}},
        "train": {"epochs": 1, "batch_size": 32, "mixed_precision": "no"},
        "bootstrap_samples": 100,
        "seeds": [0],
        "report": True,
    }
    result = run(cfg, out=tmp_path / "run", quiet=True)
    assert no_network == []
    assert set(result.metrics["baselines"])  # the baselines ran too
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for auto_fetch in ('src="http', "src='http", "url(http", "@import"):
        assert auto_fetch not in html  # nothing a browser would fetch either

    with pytest.raises(DataError, match="could not download"):  # the guard is live
        fetch_url("https://example.invalid/data.csv", "0" * 64, tmp_path / "c")
    assert no_network
