"""Data files shipped in the package (profiles, L0 models), loaded by name or from a path.

One loader serves every such table: a name is looked up in the package folder and parsed once
(then cached); anything with '/' or ending in '.toml' is a user's file, parsed on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

from .exceptions import InvalidArgument, ProfileError

__all__ = ["BundledFiles"]

T = TypeVar("T")


class BundledFiles(Generic[T]):
    """The ``*.toml`` files of one package folder, parsed by ``parse(text, where)``."""

    def __init__(self, folder: str, kind: str, parse: Callable[[str, str], T]) -> None:
        self.folder, self.kind, self._parse = folder, kind, parse
        self._loaded: dict[str, T] = {}

    def _entries(self) -> dict[str, Any]:
        folder = resources.files(__package__).joinpath(self.folder)
        return {
            entry.name.removesuffix(".toml"): entry
            for entry in folder.iterdir()
            if entry.name.endswith(".toml")
        }

    def names(self) -> list[str]:
        """The names of the shipped files, sorted."""
        return sorted(self._entries())

    def load(self, name_or_path: str) -> T:
        """A shipped file by name, or a file by path (anything with '/' or '.toml')."""
        if "/" in name_or_path or name_or_path.endswith(".toml"):
            path = Path(name_or_path)
            try:
                text = path.read_text()
            except OSError as exc:
                raise ProfileError(str(path), "-", f"cannot read: {exc.strerror}") from None
            return self._parse(text, str(path))
        cached = self._loaded.get(name_or_path)
        if cached is not None:
            return cached
        entries = self._entries()
        entry = entries.get(name_or_path)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none"
            raise InvalidArgument(
                f"unknown {self.kind} {name_or_path!r} (known: {known}; or give a .toml path)"
            )
        loaded = self._loaded[name_or_path] = self._parse(
            entry.read_text(), f"{self.folder}/{entry.name}"
        )
        return loaded
