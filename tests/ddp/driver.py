"""Run the real ``transferkit`` CLI once or several times in one launched process.

Usage (under ``torchrun --nproc_per_node N`` or ``accelerate launch``)::

    driver.py MARKS -- run A.yaml --out DIR_A -q -- run B.yaml --out DIR_B -q ...

Each ``--``-separated group is handed to :func:`transferkit.cli.main` in turn (one
launch, one process group, several experiments: it spares the tests a launch per
experiment). After each group the main process writes ``MARKS/done-<i>`` holding the
exit status. A group that starts with ``!`` must fail with a user error (status 2) on
every process; the launch goes on with the next group.

Instrumentation, both for the tests only:

* a write audit (``sys.addaudithook``): every file-system write event (open for writing,
  rename/replace, mkdir, remove, rmtree) under ``$TK_AUDIT_ROOT`` is recorded and dumped
  to ``MARKS/writes-rank<R>.json`` at exit, so a test can assert that ranks other than 0
  write nothing into run directories;
* ``$TK_DIE_IN`` / ``$TK_DIE_AT``: a training whose run directory contains ``TK_DIE_IN``
  ends the process (``os._exit(17)``, no clean-up, like a crash) right after its step
  checkpoint at optimizer step ``TK_DIE_AT`` has been committed by every process.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RANK = int(os.environ.get("RANK", "0"))
_WRITES: list[list[str]] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}


def _under_root(path: Any) -> str | None:
    root = os.environ.get("TK_AUDIT_ROOT")
    if not root or isinstance(path, int) or path is None:
        return None
    p = os.path.abspath(os.fsdecode(path))
    return p if p.startswith(os.path.abspath(root) + os.sep) else None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and args:
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writes = (
            any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        )
        p = _under_root(args[0]) if writes else None
    elif event in _PATH_EVENTS and args:
        p = _under_root(args[1] if event == "os.rename" else args[0])
    else:
        return
    if p is not None:
        _WRITES.append([event, p])


def _dump_writes(marks: Path) -> None:
    with open(marks / f"writes-rank{RANK}.json", "w", encoding="utf-8") as fh:
        json.dump(_WRITES, fh)


def _install_die_hook(marks: Path) -> None:
    """Patch ``Trainer._save`` to end the process after step checkpoint ``TK_DIE_AT``."""
    where, at = os.environ.get("TK_DIE_IN"), int(os.environ.get("TK_DIE_AT", "0"))
    if not where:
        return
    from transferkit.engine.trainer import Trainer

    original = Trainer._save

    def save_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        tag = args[0] if args else kwargs.get("tag")
        if tag == "step" and where in str(self.run_dir) and self.global_step >= at:
            if RANK == 0:
                (marks / "died").write_text(f"{self.global_step}\n")
            _dump_writes(marks)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(17)
        return out

    Trainer._save = save_then_die  # type: ignore[method-assign]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    marks = Path(sys.argv[1])
    marks.mkdir(parents=True, exist_ok=True)
    groups: list[list[str]] = []
    for arg in sys.argv[2:]:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    sys.addaudithook(_audit)
    atexit.register(_dump_writes, marks)
    _install_die_hook(marks)
    from transferkit.cli import main as cli_main

    for i, argv in enumerate(groups):
        expect_failure = argv[:1] == ["!"]
        code = 0
        try:
            cli_main(argv[1:] if expect_failure else argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        if code != (2 if expect_failure else 0):
            sys.exit(code or 3)
        if RANK == 0:
            (marks / f"done-{i}").write_text(f"{code}\n")


if __name__ == "__main__":
    main()
