"""A tiny name -> constructor registry shared by models, attacks, datasets and defenses.

Strings live at the edges (CLI, app, configs); everything inside works with the objects a
registry builds. Unknown names fail with the list of known ones so users can correct typos.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lowercase name to a constructor."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REG.register("pgd")`` adds the decorated constructor under ``name``."""

        def add(fn: Callable[..., T]) -> Callable[..., T]:
            key = name.lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = fn
            return fn

        return add

    def get(self, name: str) -> Callable[..., T]:
        """Return the constructor for ``name``; raise ``KeyError`` naming the known entries."""
        key = str(name).lower()
        if key not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[key]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
