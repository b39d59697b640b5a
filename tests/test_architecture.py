"""The import directions of docs/architecture.md: each layer imports only from itself and the layers below.

Every import in ``src/costtrace`` counts, at the top of a module or inside a function, and type-only
ones too: an arrow that points up is a cycle waiting to happen, even when it is deferred.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # (layer, module prefixes); a module belongs to the first layer with a matching prefix.
    ("base", ("_version", "_moved", "errors", "_internal", "_validate", "_otel", "_money", "semconv", "usage")),
    ("price", ("price",)),
    (
        "record",
        (
            "records",
            "tasks",
            "task_context",
            "task_attributes",
            "task_decorator",
            "calls",
            "call_attributes",
            "caller_usage",
            "metrics",
            "content",
            "span_options",
            "console",
        ),
    ),
    ("instrumentation", ("instrumentation",)),
    ("spend", ("spend",)),
    ("analysis", ("analysis",)),
    ("wiring", ("", "config", "testing", "pytest_plugin")),
    ("apps", ("__main__", "cli", "demo", "integrations")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    """``src/costtrace/spend/alerts.py`` -> ``spend.alerts``; the package itself is ``""``."""
    parts = list(path.relative_to(SRC / "costtrace").with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or (prefix and module.startswith(prefix + ".")):
                return name
    raise AssertionError(f"costtrace.{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def imports_of(path: Path) -> set[str]:
    """The costtrace modules ``path`` imports (relative to the package), by its ``import`` statements."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                names = ["costtrace." + target if target else "costtrace"]
            else:
                names = [node.module or ""]
            # `from costtrace.spend import alerts` imports the submodule spend.alerts, and
            # `from costtrace import semconv` imports semconv, not the package's __init__
            names = [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "costtrace" or name.startswith("costtrace."):
                found.add(_existing(name.removeprefix("costtrace").removeprefix(".")))
    found.discard(module)
    return found


def _existing(module: str) -> str:
    """The longest prefix of ``module`` that is a file or package (drops imported names)."""
    parts = module.split(".") if module else []
    while parts:
        candidate = SRC / "costtrace" / Path(*parts)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return ""


SOURCES = sorted((SRC / "costtrace").rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    for path in SOURCES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p) or "costtrace")
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    mine = RANK[layer_of(module)]
    upward = sorted(
        f"costtrace.{target} ({layer_of(target)})" for target in imports_of(path) if RANK[layer_of(target)] > mine
    )
    assert not upward, f"costtrace.{module} ({layer_of(module)}) imports from a higher layer: {upward}"


def test_the_record_layer_needs_no_spend_analysis_or_cli() -> None:
    """The issue's own arrow, stated once more in plain words: tasks and calls stand alone."""
    for path in SOURCES:
        module = module_name(path)
        if layer_of(module) in ("base", "price", "record"):
            bad = {t for t in imports_of(path) if t.split(".")[0] in ("spend", "analysis", "cli", "demo")}
            assert not bad, f"costtrace.{module} imports {sorted(bad)}"


def test_the_checker_sees_function_level_imports() -> None:
    """The checker itself: a deferred import inside a function counts like one at the top."""
    src = SRC / "costtrace" / "calls.py"
    assert "tasks" in imports_of(src)
    assert layer_of("spend.admission") == "spend" and layer_of("") == "wiring"
    assert _existing("spend.alerts.Alert") == "spend.alerts"
