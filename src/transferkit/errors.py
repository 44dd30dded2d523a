"""Error types that carry a user-facing message: what was wrong, where, and how to fix it.

The CLI turns any :class:`TransferkitError` into a one-paragraph message and exit status 2
(no traceback unless ``--debug``). Library code raises the most specific subclass.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """Base class for every error caused by user input or environment, not by a bug.

    Args:
        what: what was wrong, in one sentence.
        where: the file, key path, column, row or spec where it happened (optional).
        fix: how to fix it (optional).
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.where:
            parts.append(f"Where: {self.where}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        return " ".join(parts)


class ConfigError(TransferkitError):
    """An invalid experiment configuration (unknown key, wrong type, bad value)."""


class DataError(TransferkitError):
    """A dataset that cannot be loaded or used as asked (missing column, one class, ...)."""


class BackboneError(TransferkitError):
    """A backbone spec that cannot be resolved or loaded."""


class CheckpointError(TransferkitError):
    """A checkpoint or run directory that cannot be written, read or resumed."""


class TrainingError(TransferkitError):
    """Training cannot go on (non-finite loss, diverged run)."""
