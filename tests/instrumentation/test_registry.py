"""costtrace.instrument()/uninstrument(): idempotent, reversible, discoverable by opentelemetry-instrument."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from importlib.metadata import entry_points

import pytest

import costtrace
from costtrace.instrumentation import _REGISTRY, SUPPORTED, _sdk_installed

# (module, owner class or None for the module itself, function) of one patched function per SDK or framework.
PATCHED = {
    "openai": ("openai.resources.chat.completions", "Completions", "create"),
    "anthropic": ("anthropic.resources.messages", "Messages", "create"),
    "google_genai": ("google.genai.models", "Models", "_generate_content"),
    "litellm": ("litellm.main", None, "completion"),
    "http": ("httpx", "Client", "send"),
    "instructor": ("instructor.v2.core.hooks", "Hooks", "emit_parse_error"),
    "pydantic_ai": ("pydantic_ai._agent_graph", "ModelRequestNode", "run"),
}
# LiteLLM and the frameworks are installed in the framework environments only (tests/frameworks).
INSTALLED = [name for name in SUPPORTED if _sdk_installed(_REGISTRY[name][2])]


def _function(name: str) -> object:
    module, owner, method = PATCHED[name]
    loaded = importlib.import_module(module)
    return vars(loaded)[method] if owner is None else vars(getattr(loaded, owner))[method]


@pytest.fixture(autouse=True)
def _clean():
    costtrace.uninstrument()
    yield
    costtrace.uninstrument()


def test_instrument_twice_is_a_no_op_and_uninstrument_restores_the_originals(caplog):
    caplog.set_level(logging.WARNING)
    originals = {name: _function(name) for name in INSTALLED}
    assert sorted(costtrace.instrument()) == sorted(INSTALLED)
    patched = {name: _function(name) for name in INSTALLED}
    assert all(patched[n] is not originals[n] for n in INSTALLED)
    assert sorted(costtrace.instrument()) == sorted(INSTALLED)
    assert {name: _function(name) for name in INSTALLED} == patched  # nothing wrapped twice
    assert not [r for r in caplog.records if "already instrumented" in r.getMessage()]
    costtrace.uninstrument()
    assert {name: _function(name) for name in INSTALLED} == originals


def test_instrument_one_sdk_by_name():
    assert costtrace.instrument("anthropic") == ["anthropic"]
    assert (
        _function("openai") is vars(importlib.import_module("openai.resources.chat.completions").Completions)["create"]
    )
    costtrace.uninstrument("anthropic")


def test_unknown_sdk_name_is_a_config_error():
    supported = "openai, anthropic, google_genai, litellm, http, instructor, pydantic_ai"
    with pytest.raises(costtrace.ConfigError, match=f"supported SDKs are {supported}"):
        costtrace.instrument("cohere")


def test_instrumentors_are_registered_for_opentelemetry_instrument():
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name.startswith("costtrace")}
    assert set(found) == {f"costtrace_{name}" for name in SUPPORTED}
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
