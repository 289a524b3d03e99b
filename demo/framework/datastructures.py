"""Mapping types shared by requests and responses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

V = TypeVar("V")


class MultiValueDict(Mapping[str, V], Generic[V]):
    """A mapping in which a key may carry several values (``?a=1&a=2``).

    Indexing returns the last value, which is what most form handling wants;
    ``getlist()`` still gives access to every value that was sent.
    """

    def __init__(self, pairs: Iterable[tuple[str, V]] = ()) -> None:
        self._lists: dict[str, list[V]] = {}
        for key, value in pairs:
            self.appendlist(key, value)

    def appendlist(self, key: str, value: V) -> None:
        """Add one more value under ``key``."""
        self._lists.setdefault(key, []).append(value)

    def getlist(self, key: str) -> list[V]:
        """Every value sent for ``key``, in order (empty if none)."""
        return list(self._lists.get(key, ()))

    def lists(self) -> list[tuple[str, list[V]]]:
        """All keys with their full value lists."""
        return [(key, list(values)) for key, values in self._lists.items()]

    def to_dict(self) -> dict[str, V | list[V]]:
        """Plain dict for JSON: a lone value stays scalar, repeats become a list."""
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self._lists.items()}

    def __getitem__(self, key: str) -> V:
        return self._lists[key][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:
        return f"<MultiValueDict {self._lists!r}>"


class CaseInsensitiveDict(MutableMapping[str, str]):
    """Header mapping: HTTP field names are case-insensitive.

    The most recently used spelling of each name is kept for output, so
    response headers go on the wire the way the code wrote them.
    """

    def __init__(
        self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> None:
        self._store: dict[str, tuple[str, str]] = {}
        self.update(data)

    def __setitem__(self, key: str, value: str) -> None:
        self._store[key.lower()] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._store[key.lower()][1]

    def __delitem__(self, key: str) -> None:
        del self._store[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"<CaseInsensitiveDict {dict(self.items())!r}>"
