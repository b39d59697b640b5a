"""costtrace.instrument()/uninstrument(): idempotent, reversible, discoverable by opentelemetry-instrument."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

import pytest

import costtrace
from costtrace.instrumentation import SUPPORTED

# (module, owner class, method) of one patched function per SDK.
PATCHED = {
    "openai": ("openai.resources.chat.completions", "Completions", "create"),
    "anthropic": ("anthropic.resources.messages", "Messages", "create"),
    "google_genai": ("google.genai.models", "Models", "_generate_content"),
    "http": ("httpx", "Client", "send"),
}


def _function(name: str) -> object:
    module, owner, method = PATCHED[name]
    return vars(getattr(importlib.import_module(module), owner))[method]


@pytest.fixture(autouse=True)
def _clean():
    costtrace.uninstrument()
    yield
    costtrace.uninstrument()


def test_instrument_twice_is_a_no_op_and_uninstrument_restores_the_originals(caplog):
    caplog.set_level(logging.WARNING)
    originals = {name: _function(name) for name in SUPPORTED}
    assert sorted(costtrace.instrument()) == sorted(SUPPORTED)
    patched = {name: _function(name) for name in SUPPORTED}
    assert all(patched[n] is not originals[n] for n in SUPPORTED)
    assert sorted(costtrace.instrument()) == sorted(SUPPORTED)
    assert {name: _function(name) for name in SUPPORTED} == patched  # nothing wrapped twice
    assert not [r for r in caplog.records if "already instrumented" in r.getMessage()]
    costtrace.uninstrument()
    assert {name: _function(name) for name in SUPPORTED} == originals


def test_instrument_one_sdk_by_name():
    assert costtrace.instrument("anthropic") == ["anthropic"]
    assert (
        _function("openai") is vars(importlib.import_module("openai.resources.chat.completions").Completions)["create"]
    )
    costtrace.uninstrument("anthropic")


def test_unknown_sdk_name_is_a_config_error():
    with pytest.raises(costtrace.ConfigError, match="supported SDKs are openai, anthropic, google_genai, http"):
        costtrace.instrument("cohere")


def test_instrumentors_are_registered_for_opentelemetry_instrument():
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name.startswith("costtrace")}
    assert set(found) == {"costtrace_openai", "costtrace_anthropic", "costtrace_google_genai", "costtrace_http"}
    for ep in found.values():
        instrumentor = ep.load()()
        if ep.name != "costtrace_http":  # patches whichever of httpx / httpx2 is installed
            assert instrumentor.instrumentation_dependencies()


def test_missing_opentelemetry_instrumentation_is_a_config_error_with_the_install_hint():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['opentelemetry.instrumentation.instrumentor'] = None  # as if not installed\n"
        "import costtrace\n"
        "try:\n"
        "    costtrace.instrument('openai')\n"
        "except costtrace.ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'costtrace[openai]'" in out.stdout
