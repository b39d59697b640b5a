"""Tests through the libraries apps call models with (LiteLLM, LangChain, the Agents SDK, pydantic-ai,
instructor, LlamaIndex), each in its current release, talking to the local test server.

They need environments of their own (see .ci/frameworks/*.txt): ``bash .ci/frameworks/run`` builds
them and runs this folder in each. In the dev environment every module here skips, naming its library.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instrumentation.fake_server import FakeLLMServer


def need(module: str) -> None:
    """Skip the calling test module unless ``module`` is installed (one of .ci/frameworks/*.txt)."""
    pytest.importorskip(module, reason=f"{module} is not installed here: bash .ci/frameworks/run installs it")


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    yield server
    server.close()
