from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instrumentation.fake_server import FakeLLMServer


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    yield server
    server.close()
