"""The module paths of the previous release still import, warn, and hand out the same objects."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from costtrace import _moved

# (old path, name, where it lives now): the names docs and examples of the previous release used
DOCUMENTED = [
    ("costtrace.pricing", "set_model_alias", "costtrace.price"),
    ("costtrace.pricing", "default_catalog", "costtrace.price"),
    ("costtrace.pricing", "set_price", "costtrace.price"),
    ("costtrace.tokens", "encoding_for_model", "costtrace.price.tokens"),
    ("costtrace.analytics", "scope_stats", "costtrace.analysis.stats"),
    ("costtrace.analytics", "model_costs", "costtrace.analysis.stats"),
    ("costtrace.analytics", "Filters", "costtrace.analysis.stats"),
    ("costtrace.routing", "advise", "costtrace.analysis.routing"),
    ("costtrace.report", "summarize", "costtrace.analysis.report"),
    ("costtrace.report", "TaskStats", "costtrace.analysis.report"),
    ("costtrace.alerts", "add_webhook", "costtrace.spend"),
    ("costtrace.alerts", "default_dispatcher", "costtrace.spend"),
    ("costtrace.ledger.engine", "make_engine", "costtrace.spend.engine"),
    ("costtrace.ledger.schema", "migrate", "costtrace.spend.schema"),
    ("costtrace.ledger.schema", "to_nano", "costtrace._money"),
    ("costtrace.phoenix", "OutcomeAnnotations", "costtrace.integrations.phoenix"),
    ("costtrace.spending", "configure_ledger", "costtrace.spend.ledger"),
    ("costtrace.spending", "worst_case", "costtrace.spend.admission"),
    ("costtrace.alerts", "OutcomeRule", "costtrace.spend.outcome_rules"),
    ("costtrace.alerts", "Webhook", "costtrace.spend.webhooks"),
    ("costtrace.pricing", "Cost", "costtrace.price.arithmetic"),
    ("costtrace.pricing", "unpriced_counts", "costtrace.price.lookup"),
]


@pytest.fixture(autouse=True)
def _forget_old_paths():
    """Importing an old path sets it on its parent (``costtrace.pricing``): undo that for the other tests."""
    yield
    for old in _moved.MOVED:
        sys.modules.pop(old, None)
        parent, _, name = old.rpartition(".")
        if isinstance(getattr(sys.modules.get(parent), name, None), _moved.MovedModule):
            delattr(sys.modules[parent], name)


def _fresh_import(path: str) -> object:
    for name in [m for m in sys.modules if m == path or m.startswith(path + ".")]:
        del sys.modules[name]
    return importlib.import_module(path)


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_path_imports_with_a_deprecation_warning_naming_the_new_one(old: str) -> None:
    with pytest.warns(DeprecationWarning) as warned:  # costtrace.ledger.schema warns for costtrace.ledger too
        module = _fresh_import(old)
    assert f"{old} moved to {', '.join(_moved.MOVED[old])}" in [str(w.message).split(" (docs/")[0] for w in warned]
    assert isinstance(module, _moved.MovedModule)
    for target in _moved.MOVED[old]:
        importlib.import_module(target)  # every target exists


@pytest.mark.parametrize(("old", "name", "new_home"), DOCUMENTED, ids=[f"{o}.{n}" for o, n, _ in DOCUMENTED])
def test_documented_names_are_the_same_objects_as_in_their_new_module(old: str, name: str, new_home: str) -> None:
    with pytest.warns(DeprecationWarning):
        module = _fresh_import(old)
    obj = getattr(module, name)
    assert obj.__module__.startswith(new_home)
    assert obj is getattr(importlib.import_module(obj.__module__), name)


def test_an_unknown_name_says_where_the_module_went() -> None:
    with pytest.warns(DeprecationWarning):
        module = _fresh_import("costtrace.analytics")
    with pytest.raises(AttributeError, match=re.escape("moved to costtrace.analysis.stats")):
        module.no_such_name


def test_new_paths_never_warn(recwarn: pytest.WarningsRecorder) -> None:
    for path in ("costtrace.price.catalog", "costtrace.analysis.stats", "costtrace.spend.schema"):
        importlib.import_module(path)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_the_api_reference_lists_every_moved_path() -> None:
    """docs/api.md's table is the user's view of ``_moved.MOVED``: the same rows, in the same order."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("## Moved modules", 1)[1]
    rows = re.findall(r"^\| `(costtrace[\w.]*)` \| (.+) \|$", table, flags=re.M)
    assert rows == [(old, ", ".join(f"`{m}`" for m in new)) for old, new in _moved.MOVED.items()]
