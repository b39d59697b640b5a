"""Where Phoenix is and how to authenticate: its base URL and the API key's bearer header.

The base URL comes from an argument, else ``$PHOENIX_BASE_URL``, else ``http://127.0.0.1:6006``; the API
key (when Phoenix's authentication is on) from an argument, else ``$PHOENIX_API_KEY``.

Example:
    >>> check_endpoint("http://127.0.0.1:6006/", "endpoint")
    'http://127.0.0.1:6006'
    >>> auth_headers("px-secret")
    {'authorization': 'Bearer px-secret'}
"""

from __future__ import annotations

import os
import urllib.parse

from costtrace.errors import ConfigError

DEFAULT_ENDPOINT = "http://127.0.0.1:6006"
ENV_BASE_URL = "PHOENIX_BASE_URL"
ENV_API_KEY = "PHOENIX_API_KEY"


def check_endpoint(endpoint: str, setting: str) -> str:
    """``endpoint`` without its trailing slash; a ConfigError naming ``setting`` unless it is an http(s) URL."""
    if not isinstance(endpoint, str):
        raise ConfigError(f"{setting}={endpoint!r} must be a URL such as {DEFAULT_ENDPOINT}")
    url = endpoint.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{setting}={endpoint!r} is not an http(s) URL; write e.g. {DEFAULT_ENDPOINT}")
    return url


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer header for ``api_key`` (default ``$PHOENIX_API_KEY``); none without a key."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")
    return {"authorization": f"Bearer {key.strip()}"} if key and key.strip() else {}
