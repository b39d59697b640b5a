"""Content capture: off by default, size-limited, redacted, failing closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import costtrace
from costtrace import content
from costtrace import semconv as sc

CANARY_PROMPT = "canary-prompt-7f3a: my card is 4111111111111111"
CANARY_COMPLETION = "canary-completion-91bc"


@pytest.fixture(autouse=True)
def _reset_capture(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv(content.ENV_VAR, raising=False)
    content._reset_for_tests()
    yield
    content._reset_for_tests()


def _call_with_content(spans):
    with costtrace.task("t"):
        with costtrace.llm_call("openai", "gpt-4o-mini") as call:
            call.set_usage(10, 2)
            call.capture_content(input=[{"role": "user", "content": CANARY_PROMPT}], output=CANARY_COMPLETION)
    return spans.calls()[0]


def _everything_exported(spans) -> str:
    parts = []
    for s in spans.all():
        parts.append(s.name)
        parts.extend(f"{k}={v}" for k, v in (s.attributes or {}).items())
        for e in s.events:
            parts.extend(f"{k}={v}" for k, v in (e.attributes or {}).items())
    return "\n".join(parts)


def test_content_is_never_captured_by_default(spans):
    _call_with_content(spans)
    exported = _everything_exported(spans)
    assert "canary-prompt" not in exported
    assert CANARY_COMPLETION not in exported


def test_opt_in_by_environment_variable(spans, monkeypatch):
    monkeypatch.setenv(content.ENV_VAR, "true")
    span = _call_with_content(spans)
    assert CANARY_PROMPT in span.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert span.attributes[sc.GEN_AI_OUTPUT_MESSAGES] == CANARY_COMPLETION


def test_redaction_hook_and_size_limit(spans):
    costtrace.capture_content(True, max_chars=40, redact=lambda s: s.replace("4111111111111111", "[card]"))
    span = _call_with_content(spans)
    captured = span.attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert "4111111111111111" not in captured
    assert captured.endswith(content.TRUNCATION_MARK)
    assert len(captured) == 40 + len(content.TRUNCATION_MARK)


@pytest.mark.parametrize("bad_hook", [lambda s: 1 / 0, lambda s: None])
def test_a_failing_redaction_hook_drops_the_content(spans, caplog, bad_hook):
    costtrace.capture_content(True, redact=bad_hook)
    span = _call_with_content(spans)
    assert span.attributes[sc.GEN_AI_INPUT_MESSAGES] == content.REDACTION_FAILED
    assert "canary" not in _everything_exported(spans)


@pytest.mark.parametrize("kwargs", [{"max_chars": 0}, {"max_chars": "10"}, {"redact": "not callable"}])
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(costtrace.ConfigError):
        costtrace.capture_content(True, **kwargs)
