"""semconv.py is the one place for names; docs/telemetry.md must list every one of them."""

from __future__ import annotations

from pathlib import Path

from costtrace import semconv


def _names() -> list[str]:
    values = [getattr(semconv, n) for n in dir(semconv) if n.isupper()]
    return [v for v in values if isinstance(v, str) and "." in v]


def test_every_emitted_name_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "telemetry.md").read_text()
    missing = [n for n in _names() if f"`{n}" not in doc]
    assert missing == []


def test_names_are_lowercase_dotted_and_ours_are_prefixed():
    for name in _names():
        assert name == name.lower(), name
        prefixes = {"gen_ai", "costtrace", "server", "error", "http", "openai"}
        openinference = {"openinference", "input", "output", "llm"}  # OpenInference's own names
        assert name.split(".")[0] in prefixes | openinference, name
