"""The public surface: what `import costtrace` exposes and what it must not pull in."""

from __future__ import annotations

import subprocess
import sys

import costtrace


def test_all_is_honest():
    assert sorted(costtrace.__all__) == sorted(set(costtrace.__all__))
    for name in costtrace.__all__:
        assert hasattr(costtrace, name), name
    public = {n for n in dir(costtrace) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(costtrace, n)).__name__ == "module"}
    assert public - modules == set(costtrace.__all__) - {"__version__"}


def test_importing_costtrace_pulls_none_of_the_optional_libraries():
    heavy = [
        "tiktoken", "sqlalchemy", "genai_prices", "openai", "anthropic", "google.genai", "opentelemetry.sdk",
        "opentelemetry.exporter", "pydantic", "click", "typer",
    ]  # fmt: skip
    code = (
        "import sys, costtrace\n"
        f"loaded = [m for m in {heavy!r} if any(k == m or k.startswith(m + '.') for k in sys.modules)]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_task_works_with_no_opentelemetry_sdk_configured():
    """With only the API (no provider set), tasks and calls still compute cost."""
    code = (
        "import costtrace\n"
        "with costtrace.task('t') as t:\n"
        "    costtrace.record_llm_call('openai', 'gpt-4o-mini', 1000, 100)\n"
        "assert t.summary.cost_usd > 0, t.summary\n"
        "assert t.summary.outcome == 'success'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
