"""A tiny name -> object registry with close-match suggestions for typos."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from transferkit.errors import TransferkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    ``get`` raises a :class:`TransferkitError` that lists the closest registered names.
    """

    def __init__(self, kind: str, error: type[TransferkitError] = TransferkitError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else ""
            raise self.error(
                f"unknown {self.kind} {name!r}",
                fix=(hint + " " if hint else "")
                + f"known {self.kind}s: {', '.join(sorted(self._items))}",
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        yield from sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items
