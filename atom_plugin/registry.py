"""timm-style registries: one name -> one builder, with metadata, for every extension point.

Each kind of component has a :class:`Registry`; the package-level functions are thin
wrappers (``register_detector`` / ``create_detector`` / ``list_detectors`` in
:mod:`atom_plugin.detectors`, ``register_attack`` / ``create_attack`` / ``list_attacks``
in :mod:`atom_plugin.attacks`, ``register_task`` / ``list_tasks`` in
:mod:`atom_plugin.evaluation`).  The CLI reads its choices and help text from them, so a
component registered in one place appears everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List

__all__ = ["Registry", "Entry"]


@dataclass(frozen=True)
class Entry:
    """One registered component: its ``name``, the ``builder`` (a class or a function),
    a one-line ``help`` (defaults to the builder's docstring summary) and free ``meta``."""

    name: str
    builder: Callable[..., Any]
    help: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:  # entry.needs_fit etc. read the metadata
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(key) from None


def _summary(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    first = doc.split("\n\n")[0] if doc else ""  # the first paragraph, on one line
    text = " ".join(first.replace("``", "").split())
    text = text.split(". ")[0].rstrip(".;:")
    return text if len(text) <= 90 else text[:87].rstrip() + "..."


class Registry:
    """A name -> :class:`Entry` table for one ``kind`` of component (e.g. ``"detector"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, builder: Callable[..., Any] | None = None, *, help: str | None = None,
                 **meta: Any):
        """Register ``builder`` under ``name``; usable as a decorator (``@reg.register("msp")``).
        Registering a taken name is an error (names are the public, stable identifiers)."""
        if not isinstance(name, str) or not name or name != name.strip() or not name.replace("_", "").replace(
                "-", "").isalnum():
            raise ValueError(f"a {self.kind} name must be a non-empty word like 'my_{self.kind}', got {name!r}.")

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(obj):
                raise TypeError(f"register_{self.kind}({name!r}) needs a class or a function, got {type(obj).__name__}.")
            old = self._entries.get(name)
            if old is not None and old.builder is not obj:
                raise ValueError(f"the {self.kind} name {name!r} is already registered (by {old.builder!r}); "
                                 "pick another name.")
            self._entries[name] = Entry(name, obj, help if help is not None else _summary(obj), dict(meta))
            return obj

        return deco(builder) if builder is not None else deco

    def get(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name is a ``ValueError`` that lists the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}.") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).builder(*args, **kwargs)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def help_text(self) -> str:
        """``name: help`` lines, for CLI help."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name
                         for e in map(self.get, self.names())).replace("%", "%%")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
