"""Module paths of earlier releases, still importable (with a DeprecationWarning) until a future release.

costtrace's modules moved into folders named after their layer (docs/architecture.md). Code written
against an earlier release, ``from costtrace.pricing import set_model_alias`` or
``from costtrace.analytics import scope_stats``, keeps working: importing an old path gives a stand-in
module that warns once and hands out each name from the module where it now lives. Names exported at
the top (``costtrace.set_price``, ...) never moved; only the module paths did.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     from costtrace.analytics import scope_stats
    >>> scope_stats.__module__
    'costtrace.analysis.stats'
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

MOVED: dict[str, tuple[str, ...]] = {
    # old path: the modules that now hold its names, searched in order
    "costtrace.pricing": ("costtrace.price.catalog", "costtrace.price.lookup", "costtrace.price.arithmetic"),
    "costtrace.tokens": ("costtrace.price.tokens",),
    "costtrace.spending": ("costtrace.spend.ledger", "costtrace.spend.admission"),
    "costtrace.alerts": ("costtrace.spend.alerts", "costtrace.spend.outcome_rules", "costtrace.spend.webhooks"),
    "costtrace.budgets": ("costtrace.spend.budgets",),
    "costtrace.ledger": ("costtrace.spend",),
    "costtrace.ledger.engine": ("costtrace.spend.engine",),
    "costtrace.ledger.schema": ("costtrace.spend.schema", "costtrace._money"),
    "costtrace.ledger.store": ("costtrace.spend.store", "costtrace.spend.rows", "costtrace.spend.reservations"),
    "costtrace.ledger.writer": ("costtrace.spend.writer", "costtrace.spend.spool", "costtrace.spend.losses"),
    "costtrace.analytics": ("costtrace.analysis.stats",),
    "costtrace.routing": ("costtrace.analysis.routing",),
    "costtrace.tco": ("costtrace.analysis.tco",),
    "costtrace.report": ("costtrace.analysis.report",),
    "costtrace.html_report": ("costtrace.cli.html_report",),
    "costtrace.phoenix": ("costtrace.integrations.phoenix",),
}
"""Every public module path of the previous release that no longer exists (docs/api.md lists them)."""


class MovedModule(ModuleType):
    """Stands in for an old module path: each attribute comes from the module that now defines it."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: use {' / '.join(targets)}.")
        self.__path__: list[str] = []  # so `costtrace.ledger.schema` can be found under `costtrace.ledger`
        self._targets = targets

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (moved to {self._targets[0]})")


class _Finder:
    """Finds and loads the old paths; the importlib protocols without ``importlib.abc``'s base classes.

    ``importlib.abc`` imports ``importlib.resources`` (~7 ms): too much for ``import costtrace``.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, cast("Loader", self))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return MovedModule(spec.name, MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        targets = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {', '.join(targets)} (docs/architecture.md); the old path will be removed "
            "in a future release",
            DeprecationWarning,
            stacklevel=2,
        )


def install() -> None:
    """Make the old module paths importable (once per process; called by ``import costtrace``)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
