"""Normalisation of each provider's usage shape to the GenAI conventions, and fuzzing of bad input."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from costtrace.usage import Usage, usage_from_response


def test_openai_chat_usage_includes_cached_in_input():
    info = usage_from_response(
        {
            "id": "c1",
            "model": "gpt-4o",
            "choices": [{"finish_reason": "length"}],
            "usage": {
                "prompt_tokens": 2000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 1536},
                "completion_tokens_details": {"reasoning_tokens": 128},
            },
        }
    )
    assert info.usage == Usage(2000, 500, cache_read_input_tokens=1536, reasoning_output_tokens=128)
    assert info.response_model == "gpt-4o"
    assert info.finish_reasons == ("length",)


def test_openai_chat_usage_with_none_details():
    """Azure and older replies send cached_tokens=None or no details at all."""
    u = SimpleNamespace(
        prompt_tokens=10,
        completion_tokens=5,
        prompt_tokens_details=SimpleNamespace(cached_tokens=None),
        completion_tokens_details=None,
    )
    info = usage_from_response(SimpleNamespace(model="gpt-4o", usage=u, choices=[]))
    assert info.usage == Usage(10, 5)


def test_litellm_usage_of_an_anthropic_call_keeps_its_cache_writes():
    """LiteLLM (SDK and proxy) gives Anthropic's usage OpenAI's shape, prompt_tokens including the
    cache reads and writes, with Anthropic's fields added; the writes (and their 1-hour share) count."""
    u = {
        "prompt_tokens": 1600,
        "completion_tokens": 20,
        "prompt_tokens_details": {
            "cached_tokens": 1000,
            "cache_creation_tokens": 500,
            "cache_creation_token_details": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
        },
        "cache_creation_input_tokens": 500,
        "cache_read_input_tokens": 1000,
    }
    info = usage_from_response({"model": "claude-haiku-4-5-20251001", "usage": u}, "anthropic")
    assert info.usage == Usage(
        1600, 20, cache_read_input_tokens=1000, cache_write_input_tokens=500, cache_write_1h_input_tokens=300
    )


def test_litellm_responses_usage_of_an_anthropic_call_keeps_its_cache_writes():
    u = {
        "input_tokens": 1300,
        "output_tokens": 20,
        "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 200},
    }
    info = usage_from_response({"object": "response", "status": "completed", "usage": u})
    assert info.usage == Usage(1300, 20, cache_read_input_tokens=1000, cache_write_input_tokens=200)


def test_openai_responses_usage():
    info = usage_from_response(
        {
            "object": "response",
            "model": "o3-mini",
            "status": "completed",
            "usage": {
                "input_tokens": 300,
                "output_tokens": 900,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 700},
                "total_tokens": 1200,
            },
        }
    )
    assert info.usage == Usage(300, 900, reasoning_output_tokens=700)


def test_anthropic_input_excludes_cache_so_it_is_added_back():
    info = usage_from_response(
        {
            "type": "message",
            "model": "claude-sonnet-4-5",
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 50,
                "cache_read_input_tokens": 10000,
                "cache_creation_input_tokens": 3000,
                "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
                "output_tokens": 400,
            },
        }
    )
    assert info.usage == Usage(
        13050,
        400,
        cache_read_input_tokens=10000,
        cache_write_input_tokens=3000,
        cache_write_1h_input_tokens=2000,
    )
    assert info.finish_reasons == ("end_turn",)


def test_gemini_usage_metadata_objects_and_rest_dicts():
    meta = SimpleNamespace(
        prompt_token_count=800,
        candidates_token_count=200,
        thoughts_token_count=300,
        cached_content_token_count=512,
        tool_use_prompt_token_count=None,
    )
    reason = SimpleNamespace(name="STOP", value="STOP")
    info = usage_from_response(
        SimpleNamespace(
            usage_metadata=meta,
            model_version="gemini-2.5-flash",
            candidates=[SimpleNamespace(finish_reason=reason)],
        )
    )
    expected = Usage(800, 500, cache_read_input_tokens=512, reasoning_output_tokens=300)
    assert info.usage == expected
    assert info.response_model == "gemini-2.5-flash"
    assert info.finish_reasons == ("STOP",)
    rest = usage_from_response(
        {
            "usageMetadata": {
                "promptTokenCount": 800,
                "candidatesTokenCount": 200,
                "thoughtsTokenCount": 300,
                "cachedContentTokenCount": 512,
            },
            "modelVersion": "gemini-2.5-flash",
        }
    )
    assert rest.usage == expected


def test_missing_usage_is_none_not_zero():
    assert usage_from_response({"model": "gpt-4o"}).usage is None
    assert usage_from_response(SimpleNamespace(model="x", usage=None)).usage is None
    assert usage_from_response(None).usage is None


def test_subsets_are_clamped_to_totals():
    info = usage_from_response(
        {
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 50},
            }
        }
    )
    assert info.usage.cache_read_input_tokens == 10
    assert info.usage.uncached_input_tokens == 0


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
usage_keys = st.sampled_from(
    [
        "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "prompt_tokens_details", "completion_tokens_details",
        "input_tokens_details", "output_tokens_details", "total_tokens", "unknown_field",
    ]
)  # fmt: skip
usage_dicts = st.dictionaries(
    usage_keys, st.one_of(junk, st.dictionaries(st.sampled_from(["cached_tokens", "reasoning_tokens"]), junk))
)
gemini_dicts = st.dictionaries(
    st.sampled_from(
        ["prompt_token_count", "candidates_token_count", "thoughts_token_count", "cached_content_token_count",
         "tool_use_prompt_token_count"]
    ),
    junk,
)  # fmt: skip
responses = st.one_of(
    junk,
    st.fixed_dictionaries(
        {"usage": st.one_of(junk, usage_dicts)},
        optional={
            "model": junk,
            "choices": st.one_of(junk, st.lists(st.dictionaries(st.just("finish_reason"), junk), max_size=2)),
            "type": st.sampled_from(["message", "response", None]),
            "stop_reason": junk,
        },
    ),
    st.fixed_dictionaries({"usage_metadata": st.one_of(junk, gemini_dicts)}, optional={"candidates": junk}),
)


@settings(max_examples=400, deadline=None)
@given(response=responses, provider=st.sampled_from([None, "openai", "anthropic", "gcp.gemini"]))
def test_fuzzed_responses_never_raise_and_give_sane_counts(response, provider):
    info = usage_from_response(response, provider)
    u = info.usage
    if u is None:
        return
    assert u.source == "provider"
    for value in (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_write_input_tokens,
                  u.cache_write_1h_input_tokens, u.reasoning_output_tokens):  # fmt: skip
        assert isinstance(value, int) and value >= 0
    assert u.cache_read_input_tokens + u.cache_write_input_tokens <= u.input_tokens
    assert u.cache_write_1h_input_tokens <= u.cache_write_input_tokens
    assert u.reasoning_output_tokens <= u.output_tokens


def test_pydantic_responses_read_fields_extras_and_properties_without_a_miss():
    """SDK responses are pydantic models: read straight from their fields, the keys a server added
    (``extra="allow"``), and properties, as ``getattr`` would; an absent name never reaches pydantic's
    slow ``__getattr__`` miss, and the result equals the same response read as a plain dict."""
    from pydantic import BaseModel, ConfigDict

    misses: list[str] = []

    class Model(BaseModel):
        model_config = ConfigDict(extra="allow")

        def __getattr__(self, name: str) -> object:
            misses.append(name)
            return super().__getattr__(name)  # type: ignore[misc]

    class Details(Model):
        cached_tokens: int | None = None

    class CompletionUsage(Model):
        prompt_tokens: int
        completion_tokens: int
        prompt_tokens_details: Details | None = None

        @property
        def completion_tokens_details(self) -> dict[str, int]:  # a property, not a field: read as usual
            return {"reasoning_tokens": 7}

    class Choice(Model):
        finish_reason: str

    class Completion(Model):
        id: str
        model: str
        choices: list[Choice]
        usage: CompletionUsage

    response = Completion(
        id="c1",
        model="gpt-4o",
        choices=[Choice(finish_reason="stop")],
        usage=CompletionUsage(
            prompt_tokens=2000,
            completion_tokens=500,
            prompt_tokens_details=Details(cached_tokens=1536),
            cache_creation_input_tokens=100,  # an extra key the server sent (LiteLLM adds this one)
        ),
    )
    info = usage_from_response(response)
    assert info.usage == Usage(
        2000, 500, cache_read_input_tokens=1536, cache_write_input_tokens=100, reasoning_output_tokens=7
    )
    assert (info.response_model, info.response_id, info.finish_reasons) == ("gpt-4o", "c1", ("stop",))
    assert misses == []
    as_dict = response.model_dump()
    as_dict["usage"]["completion_tokens_details"] = {"reasoning_tokens": 7}
    assert usage_from_response(as_dict) == info
