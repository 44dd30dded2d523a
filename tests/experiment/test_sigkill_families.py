"""SIGKILL at random points, then `transferkit resume`, for every gradient-trained family.

For domain adaptation (DANN: an extra discriminator), multi-task learning (PCGrad, and
uncertainty weighting with its learned log-variances) and distillation (a teacher stage,
then a student on cached teacher outputs): `transferkit run` is killed at a random
optimizer step in an epoch, `transferkit resume` is killed in the middle of a checkpoint
write (half a file written), and a last `transferkit resume` finishes. The final weights,
metrics, stage records and logs must equal those of an uninterrupted run, and the half
written checkpoint must never load as valid.

The killed commands run in a forked child of the test process (``os.fork`` then
``transferkit.cli.main(argv)``, the console script's entry point), which kills itself
with SIGKILL at the chosen point: no interpreter start-up per command, and the kill point
is exact rather than timed. The random choices come from a generator seeded per family.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from transferkit.cli import main
from transferkit.engine import CheckpointStore, Trainer
from transferkit.errors import CheckpointError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
EVERY = 3  # checkpoint_every_steps


def _npz(path: Path, n: int, classes: int, shift: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.7, (n, 6)).astype(np.float32)
    x[:, 0] += y * 1.5 + shift * 0.5
    x[:, 1] += shift + (y % 2)
    np.savez(path, x=x, y=y)
    return path


def _train(**kw: Any) -> dict[str, Any]:
    return {
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.01,
        "mixed_precision": "no",
        "checkpoint_every_steps": EVERY,
        "checkpoint_min_interval_s": 0,
        "log_every_steps": 2,
        "early_stopping": {"enabled": False},
        **kw,
    }


MLP = {"backbone": "tk:mlp", "pretrained": False, "backbone_options": {"in_features": 6}}


def da_config(d: Path) -> dict[str, Any]:
    return {
        "name": "da",
        "data": {
            "source": str(_npz(d / "src.npz", 128, 2, 0.0, 0)),
            "target": str(_npz(d / "tgt.npz", 128, 2, 2.0, 1)),
        },
        "model": {**MLP, "backbone_options": {"in_features": 6, "hidden": [12]}},
        "method": {"name": "dann", "params": {"backbone_lr_mult": 1.0}},
        "train": _train(),
        "adaptation": {"selector": "entropy", "selection_examples": 20, "domain_gap": False},
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
    }


def mtl_config(d: Path, weighting: str) -> dict[str, Any]:
    return {
        "name": f"mtl-{weighting}",
        "data": {"target": str(_npz(d / "digits.npz", 160, 4, 0.0, 2))},
        "model": {**MLP, "backbone_options": {"in_features": 6, "hidden": [12]}},
        "tasks": [{"name": "digit"}, {"name": "parity", "derive": "parity"}],
        "method": {
            "name": "multitask",
            "params": {"weighting": weighting, "backbone_lr_mult": 1.0, "head_dropout": 0.2},
        },
        "train": _train(),
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
    }


def kd_config(d: Path) -> dict[str, Any]:
    return {
        "name": "kd",
        "data": {"target": str(_npz(d / "kd.npz", 160, 3, 0.0, 3))},
        "model": {**MLP, "backbone_options": {"in_features": 6, "hidden": [6]}},
        "teacher": {
            "backbone": "tk:mlp",
            "backbone_lr_mult": 1.0,
            "cache_outputs": True,
            "backbone_options": {"in_features": 6, "hidden": [24]},
        },
        "method": {"name": "distill", "params": {"losses": {"kd": 1.0}}},
        "train": _train(),
        "baselines": {"enabled": False},
        "deployment": False,
        "bootstrap_samples": 100,  # the teacher is a baseline: keep the verdict cheap
        "seeds": [0],
        "report": False,
    }


# ----------------------------------------------------------------- kill plans (child only)
def kill_at_random_step(rng: random.Random, stage: str, note: Path) -> None:
    """SIGKILL after a random optimizer step of ``stage`` that no checkpoint follows."""
    real = Trainer._after_optimizer_step
    chosen: dict[str, int] = {}

    def patched(self: Trainer) -> None:
        real(self)
        if not self.run_dir.name.startswith(stage):
            return
        if "step" not in chosen:
            spe, total = self.steps_per_epoch, self.total_steps
            ok = [s for s in range(EVERY + 1, total) if s % EVERY and s % spe]
            chosen["step"] = rng.choice(ok)
            note.write_text(json.dumps({"step": chosen["step"], "dir": str(self.run_dir)}))
        if self.global_step == chosen["step"]:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._after_optimizer_step = patched  # type: ignore[method-assign]


def kill_mid_write(rng: random.Random, note: Path) -> None:
    """SIGKILL halfway through writing the weights or the trainer state of a checkpoint."""
    from transferkit.engine import checkpoint

    which = rng.choice(["weights", "state"])
    target_call = rng.randint(1, 2)  # at least an epoch-end and a final save remain
    module, attr = (checkpoint, "save_file") if which == "weights" else (torch, "save")
    real = getattr(module, attr)
    calls = [0]

    def patched(obj: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        out = real(obj, path, *args, **kwargs)
        if calls[0] == target_call:
            p = Path(path)
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
            note.write_text(json.dumps({"file": str(p), "which": which}))
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(module, attr, patched)


def _fresh_caches() -> None:
    """Forget in-memory teacher outputs, so a run reads its own on-disk teacher cache."""
    from transferkit.distill.cache import clear_teacher_memory

    clear_teacher_memory()


def cli(argv: list[str], kill: Callable[[], None] | None = None) -> None:
    """``transferkit <argv>`` here, or (``kill``) in a forked child that must die by SIGKILL."""
    _fresh_caches()
    if kill is None:
        main([*argv, "-q"])
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 3
        try:
            kill()
            main([*argv, "-q"])
            code = 4  # finished without being killed
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"child was not killed: status {status:#x}"
    )


# ----------------------------------------------------------------- comparisons
def _weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        p.parent.name: load_file(str(p))
        for p in sorted((run / "checkpoints").glob("*/*.safetensors"))
    }


def _records(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("timing", "deployment"):
        metrics.pop(key, None)
    stages = {}
    for p in sorted((run / "stages").glob("*.json")):
        rec = json.loads(p.read_text())
        rec.pop("seconds", None)
        stages[p.name] = rec
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    log = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    return {"metrics": metrics, "stages": stages, "log": log}


def assert_same_run(ref: Path, run: Path) -> None:
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and a
    for stage in a:
        assert a[stage].keys() == b[stage].keys()
        for k in a[stage]:
            assert torch.equal(a[stage][k], b[stage][k]), f"{stage}: {k}"
    assert _records(ref) == _records(run)


def check_after_step_kill(run: Path, note: Path) -> None:
    killed = json.loads(note.read_text())
    store = CheckpointStore(Path(killed["dir"]) / "checkpoints")
    latest = store.latest()
    assert latest is not None
    _, state = store.load(latest)
    assert 0 < state["global_step"] < killed["step"] and not state["finished"]
    assert not (run / "metrics.json").exists()


def check_after_write_kill(note: Path) -> None:
    """The half-written checkpoint is a hidden temporary directory that never loads."""
    killed = json.loads(note.read_text())
    tmp = Path(killed["file"]).parent
    assert tmp.name.startswith(".tmp-ckpt-") and tmp.is_dir()
    with pytest.raises(CheckpointError):
        CheckpointStore(tmp.parent).load(tmp)
    latest = CheckpointStore(tmp.parent).latest()
    if latest is not None:  # what resume will use is complete and verified
        CheckpointStore(tmp.parent).load(latest)


def kill_twice_then_finish(
    tmp_path: Path,
    cfg: dict[str, Any],
    stage: str,
    between: Callable[[Path], None] | None = None,
) -> Path:
    """Reference run; run killed at a random step of ``stage``; ``between(run)``; resume
    killed mid-write; resume to the end. Asserts the result equals the reference."""
    rng = random.Random(zlib.crc32(cfg["name"].encode()))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli(["run", str(path), "--out", str(ref)])

    note = tmp_path / "kill.json"
    cli(["run", str(path), "--out", str(run)], lambda: kill_at_random_step(rng, stage, note))
    check_after_step_kill(run, note)
    if between is not None:
        between(run)
    cli(["resume", str(run)], lambda: kill_mid_write(rng, note))
    check_after_write_kill(note)
    cli(["resume", str(run)])
    assert_same_run(ref, run)
    return run


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused_resume(run: Path, edit: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """Edit the run's config.yaml as a user would, resume: exit 2, nothing else changed."""
    cfg = run / "config.yaml"
    original = cfg.read_text()
    assert edit[0] in original
    cfg.write_text(original.replace(edit[0], edit[1], 1))
    before = tree(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli(["resume", str(run)])
    assert info.value.code == 2
    assert tree(run) == before
    cfg.write_text(original)
    return " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_domain_adaptation_dann(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refusals(run: Path) -> None:
        """A config changed between run and resume is refused, naming the difference."""
        err = refused_resume(run, ("lr: 0.01", "lr: 0.02"), capsys)
        assert "lr=0.01 (now 0.02)" in err and "Fix: resume with the original settings" in err
        err = refused_resume(run, ("name: dann", "name: dan"), capsys)
        assert "method transferkit.methods.da_adversarial.DANN (now" in err
        other = _npz(tmp_path / "other.npz", 128, 2, 2.0, 9)
        err = refused_resume(run, (str(tmp_path / "tgt.npz"), str(other)), capsys)
        assert "training data's content" in err

    kill_twice_then_finish(tmp_path, da_config(tmp_path), "target", refusals)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["pcgrad", "uncertainty"])
def test_multitask(tmp_path: Path, weighting: str) -> None:
    run = kill_twice_then_finish(tmp_path, mtl_config(tmp_path, weighting), "target")
    if weighting == "uncertainty":  # the learned log-variances came back exactly too
        (w,) = _weights(run).values()
        assert [k for k in w if k.endswith("log_vars")]


@pytest.mark.slow
def test_distillation_with_teacher_cache(tmp_path: Path) -> None:
    run = kill_twice_then_finish(tmp_path, kd_config(tmp_path), "target")
    assert list((run / "cache").glob("teacher-*.safetensors"))  # the resumed student read it
