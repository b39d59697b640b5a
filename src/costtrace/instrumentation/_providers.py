"""Which provider serves an LLM API, from the host name: shared by the OpenAI and HTTP instrumentations."""

from __future__ import annotations

# OpenAI-compatible endpoints served by other providers, by host suffix -> gen_ai.provider.name.
HOST_PROVIDERS: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.openai"),
    ("api.deepseek.com", "deepseek"),
    ("api.groq.com", "groq"),
    ("api.x.ai", "x_ai"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    (".amazonaws.com", "aws.bedrock"),
)


def provider_for_host(host: str | None, default: str) -> str:
    """The ``gen_ai.provider.name`` serving ``host``, or ``default`` for a host not in the table.

    Example:
        >>> provider_for_host("api.groq.com", "openai"), provider_for_host("127.0.0.1", "openai")
        ('groq', 'openai')
    """
    if host:
        lowered = host.lower()
        for suffix, name in HOST_PROVIDERS:
            if lowered == suffix.lstrip(".") or lowered.endswith(suffix):
                return name
    return default
