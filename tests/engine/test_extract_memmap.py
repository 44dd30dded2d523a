"""Streamed (memory-mapped) feature and teacher caches: same values, safe files, atomic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from tests.backbones.conftest import write_tiny_bert
from transferkit.backbones import create_backbone
from transferkit.backbones.base import Backbone
from transferkit.distill import FrozenTeacher, clear_teacher_memory, teacher_outputs
from transferkit.engine.extract import (
    MappedFile,
    NpyWriter,
    cache_key,
    clear_memory_cache,
    extract_features,
    load_cached,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    clear_memory_cache()
    clear_teacher_memory()


def _mlp(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone("tk:mlp", in_features=5, hidden=[7, 3])


def _x(n: int = 23) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32)


def _entry_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_streamed_features_equal_the_in_memory_ones_and_a_plain_forward(tmp_path: Path) -> None:
    bb, x = _mlp(), _x()
    disk = extract_features(bb, x, batch_size=4, cache_dir=tmp_path)
    assert isinstance(disk, np.memmap) and not disk.flags.writeable
    clear_memory_cache()
    memory = extract_features(bb, x, batch_size=4)
    assert type(memory) is np.ndarray and memory.dtype == np.float32
    np.testing.assert_array_equal(disk, memory)  # same batches: bit-identical
    with torch.no_grad():
        np.testing.assert_allclose(disk, bb(torch.as_tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
    many = extract_features(bb, x, batch_size=4, layers=[0, 1], cache_dir=tmp_path)
    assert [f.shape for f in many] == [(23, 7), (23, 3)]
    np.testing.assert_array_equal(many[1], disk)  # the last group is the pooled output


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), words=["good", "movie", "plot"])


def test_text_is_restored_to_input_order_when_streamed(tmp_path: Path, bert_dir: Path) -> None:
    bb = create_backbone(f"hf:{bert_dir}")
    texts = ["good movie with a great plot", "bad", "fun film", "awful boring actor", "plot"]
    disk = extract_features(bb, texts, batch_size=2, cache_dir=tmp_path)
    one_by_one = np.concatenate([extract_features(bb, [t], batch_size=1) for t in texts])
    np.testing.assert_allclose(disk, one_by_one, atol=1e-5)


def test_cache_files_are_plain_npy_read_without_pickle(tmp_path: Path) -> None:
    bb, x = _mlp(), _x()
    feats = extract_features(bb, x, layers=[0, 1], cache_dir=tmp_path)
    key = cache_key(bb, x, [0, 1])
    assert _entry_files(tmp_path) == [
        f"features-{key}-0.npy",
        f"features-{key}-1.npy",
        f"features-{key}.json",
    ]
    manifest = json.loads((tmp_path / f"features-{key}.json").read_text())
    assert manifest["examples"] == 23 and [f["shape"] for f in manifest["files"]] == [
        [23, 7],
        [23, 3],
    ]
    for i, f in enumerate(feats):
        arr = np.load(tmp_path / f"features-{key}-{i}.npy", allow_pickle=False)
        np.testing.assert_array_equal(arr, f)
    clear_memory_cache()  # a new process reads the same entry back, memory-mapped
    again = extract_features(bb, x, layers=[0, 1], cache_dir=tmp_path)
    assert all(isinstance(a, np.memmap) for a in again)
    np.testing.assert_array_equal(again[0], feats[0])


def test_cache_key_is_unchanged_for_memory_mapped_inputs(tmp_path: Path) -> None:
    bb, x = _mlp(), _x(3000)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert cache_key(bb, mapped, None) == cache_key(bb, x, None)
    assert cache_key(bb, x[:-1], None) != cache_key(bb, x, None)
    assert cache_key(_mlp(seed=1), x, None) != cache_key(bb, x, None)


def _explode_at(backbone: nn.Module, call: int) -> nn.Module:
    """Make ``backbone``'s ``call``-th forward raise KeyboardInterrupt (a Ctrl-C mid-run)."""
    inner, calls = backbone.forward, [0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return inner(x)

    backbone.forward = forward  # type: ignore[method-assign]
    return backbone


def test_an_interrupted_write_leaves_no_entry_and_no_temp_file(tmp_path: Path) -> None:
    bb, x = _mlp(), _x()
    key = cache_key(bb, x, None)
    with pytest.raises(KeyboardInterrupt):
        extract_features(_explode_at(bb, 3), x, batch_size=4, cache_dir=tmp_path)
    assert _entry_files(tmp_path) == []
    assert bb.training  # train/eval mode restored after the failure
    assert load_cached(tmp_path, key, len(x)) is None


def test_files_without_manifest_or_with_a_bad_checksum_are_not_an_entry(tmp_path: Path) -> None:
    bb, x = _mlp(), _x()
    good = np.array(extract_features(bb, x, cache_dir=tmp_path))
    key = cache_key(bb, x, None)
    manifest, data = tmp_path / f"features-{key}.json", tmp_path / f"features-{key}-0.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the last feature
    data.write_bytes(bytes(raw))
    assert load_cached(tmp_path, key, len(x)) is None
    manifest.unlink()  # killed after the rename of the data, before the manifest
    assert load_cached(tmp_path, key, len(x)) is None
    clear_memory_cache()
    np.testing.assert_array_equal(extract_features(bb, x, cache_dir=tmp_path), good)
    assert load_cached(tmp_path, key, len(x)) is not None  # recomputed and committed


_KILLED = """
import sys, time, numpy as np, torch
from tests.backbones.conftest import write_tiny_bert
from transferkit.backbones import create_backbone
from transferkit.engine import extract
torch.manual_seed(0)
bb = create_backbone("tk:mlp", in_features=5, hidden=[7, 3])
inner = bb.forward
def slow(x):
    print("batch", flush=True)
    time.sleep(0.05)
    return inner(x)
bb.forward = slow
x = np.random.default_rng(0).normal(size=(4000, 5)).astype(np.float32)
extract.extract_features(bb, x, batch_size=8, cache_dir=sys.argv[1])
"""


@pytest.mark.slow
def test_a_killed_writer_leaves_no_valid_entry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED), str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    for _ in range(3):  # three batches written: the kill lands mid-extraction
        assert proc.stdout.readline().startswith(b"batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    names = _entry_files(tmp_path)
    assert names and all(n.startswith(".features-") and n.endswith(".tmp") for n in names)
    torch.manual_seed(0)
    bb = create_backbone("tk:mlp", in_features=5, hidden=[7, 3])
    x = np.random.default_rng(0).normal(size=(4000, 5)).astype(np.float32)
    assert load_cached(tmp_path, cache_key(bb, x, None), len(x)) is None
    feats = extract_features(bb, x, batch_size=500, cache_dir=tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(feats, bb(torch.as_tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_mapped_writes_keep_few_pages_resident(tmp_path: Path) -> None:
    """After each window the mapping holds no resident pages: RSS cannot grow with N."""
    n, d = 4096, 256  # 4 MiB of float32
    path = tmp_path / "big.npy"
    writer = NpyWriter(path, (n, d))
    writer._file.window_bytes = 1 << 20
    for start in range(0, n, 512):
        writer.write(slice(start, start + 512), np.full((512, d), start, np.float32))
    writer.close()
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    np.testing.assert_array_equal(arr[::512, 0], np.arange(0, n, 512, dtype=np.float32))
    mapped = MappedFile(path)
    view = mapped.ndarray(0, (n * d,), np.uint8)
    view[:] = 1  # touch the first quarter of the file: 1 MiB resident
    assert _resident_pages(mapped) >= 1024
    mapped.release()
    assert _resident_pages(mapped) == 0
    del view
    mapped.close()


def _resident_pages(f: MappedFile) -> int:
    """Resident KiB of ``f``'s mapping, from its ``Rss:`` line in ``/proc/self/smaps``."""
    import ctypes

    probe = ctypes.c_char.from_buffer(f._mm)
    addr = ctypes.addressof(probe)
    del probe  # an exported buffer would keep the mapping from closing
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"([0-9a-f]+)-[0-9a-f]+ ", line)
        if m and int(m.group(1), 16) == addr:
            rss = next(ln for ln in lines[i + 1 :] if ln.startswith("Rss:"))
            return int(rss.split()[1])
    raise AssertionError("the mapping is not in /proc/self/smaps")


def test_teacher_cache_streams_into_a_valid_safetensors_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = create_backbone("tk:smallcnn", in_chans=1, width=4, depth=2)
    teacher = FrozenTeacher(bb, nn.Linear(bb.num_features, 3))
    x = np.random.default_rng(1).integers(0, 255, (19, 8, 8)).astype(np.uint8)
    disk = teacher_outputs(teacher, x, layers=[0], batch_size=4, cache_dir=tmp_path)
    assert all(isinstance(v, np.memmap) and not v.flags.writeable for v in disk.values())
    (path,) = tmp_path.glob("teacher-*.safetensors")
    other_reader = load_file(str(path))  # the reference safetensors reader agrees
    assert set(other_reader) == set(disk) == {"t_logits", "t_embed", "t_feats_0"}
    clear_teacher_memory()
    memory = teacher_outputs(teacher, x, layers=[0], batch_size=7)
    for k, v in memory.items():
        np.testing.assert_array_equal(other_reader[k], disk[k])
        np.testing.assert_allclose(v, disk[k], rtol=1e-6, atol=1e-6)


def test_teacher_cache_with_a_bad_checksum_is_recomputed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = create_backbone("tk:mlp", in_features=5, hidden=[6])
    teacher = FrozenTeacher(bb, nn.Linear(6, 2))
    x = _x(10)
    good = {k: np.array(v) for k, v in teacher_outputs(teacher, x, cache_dir=tmp_path).items()}
    (path,) = tmp_path.glob("teacher-*.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01
    path.write_bytes(bytes(raw))
    clear_teacher_memory()
    again = teacher_outputs(teacher, x, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["t_logits"], good["t_logits"])
    assert load_file(str(path))["t_logits"].tobytes() == good["t_logits"].tobytes()


def test_interrupted_teacher_cache_leaves_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = create_backbone("tk:mlp", in_features=5, hidden=[6])
    teacher = FrozenTeacher(_explode_at(bb, 2), nn.Linear(6, 2))  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        teacher_outputs(teacher, _x(12), batch_size=4, cache_dir=tmp_path)
    assert _entry_files(tmp_path) == []
