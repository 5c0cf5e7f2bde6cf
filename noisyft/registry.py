"""Name → factory registries for backbones, methods and datasets.

One small class serves all three so that adding a backbone, method or dataset
touches one file (a decorated function), in the manner of timm's
``register_model``. Unknown names fail with the nearest known names suggested.
An entry may carry a settings dataclass (``register(name, settings=Cls)``):
methods declare their typed options this way, and ``fit`` checks ``--extra``
against it.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Optional, TypeVar

from noisyft.errors import UserError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A named collection of factories with helpful lookup errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._settings: dict[str, Optional[type]] = {}

    def register(self, name: str, settings: Optional[type] = None) -> Callable[[T], T]:
        """Decorator: register ``fn`` under ``name`` (names are unique), with its settings dataclass if any."""

        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            self._settings[name] = settings
            return fn

        return deco

    def get(self, name: str) -> T:
        """Return the factory for ``name`` or raise a one-line UserError."""
        if name in self._items:
            return self._items[name]
        near = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UserError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})")

    def settings(self, name: str) -> Optional[type]:
        """The settings dataclass registered with ``name`` (None: it takes no settings); unknown names fail as in get."""
        self.get(name)
        return self._settings[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
