"""What the instructor and pydantic-ai instrumentations share (costtrace.instrumentation._retries), without
the frameworks: the retry is recorded once per failed attempt, and validation errors fit on one line.
The frameworks themselves are tested in tests/frameworks (their own environments)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

import costtrace
from costtrace.instrumentation._retries import describe_error, describe_error_details, record_retry, snapshot


class Item(BaseModel):
    name: str
    qty: int

    @field_validator("name")
    @classmethod
    def upper(cls, v: str) -> str:
        if v != v.upper():
            raise ValueError("name must be uppercase")
        return v


def test_a_failed_attempt_is_retried_once_even_when_the_user_retried_it_first() -> None:
    with costtrace.task("extract") as t:
        costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10)
        failed = snapshot()
        assert failed is not None and failed.attempt == 1
        t.retry("schema_error", "by hand")  # the user's own hook
        assert record_retry(failed, "name: must be uppercase") is False
        costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10)
        failed = snapshot()
        assert failed is not None
        assert record_retry(failed, "qty: must be positive") is True
        costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10)
    s = t.summary
    assert (s.attempts, s.retries, s.first_pass) == (3, 2, False)


def test_no_retry_outside_the_task_of_the_failure() -> None:
    with costtrace.task("a"):
        failed = snapshot()
    assert failed is not None
    with costtrace.task("b") as b:
        assert record_retry(failed, "x") is False
    assert b.summary.retries == 0
    assert snapshot() is None


def test_validation_errors_in_one_line() -> None:
    with pytest.raises(ValidationError) as info:
        Item(name="apple", qty="many")  # type: ignore[arg-type]
    assert describe_error(info.value) == (
        "name: Value error, name must be uppercase; "
        "qty: Input should be a valid integer, unable to parse string as an integer"
    )
    assert describe_error(ValueError("plain")) == "plain"


def test_many_errors_are_bounded() -> None:
    errors = [{"loc": ("items", i), "msg": "bad"} for i in range(25)]
    text = describe_error_details(errors)
    assert text.startswith("items.0: bad; items.1: bad")
    assert text.endswith("... 15 more")
    assert text.count("bad") == 10
