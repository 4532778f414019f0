"""One OpenAI-compatible endpoint, and every way a call to it can fail, as a value.

:func:`chat` makes one attempt and sorts the outcome into three kinds: a :class:`Reply`; a
:class:`ProviderError` worth retrying (429, 408, 5xx, a reset, a timeout, a cut or unreadable
body), carrying the server's Retry-After when it sent one; or :class:`Rejected`, a 4xx that
another attempt would only repeat.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import httpx

from course_utils.apps.retry import Retryable

__all__ = ["Provider", "ProviderError", "Rejected", "Reply", "chat", "retry_after_s"]


@dataclass(frozen=True)
class Provider:
    """Where to send a chat request: ``base_url`` ends in /v1, as the openai client wants it."""

    name: str
    base_url: str
    model: str
    timeout_s: float = 10.0  # per attempt, connect to last byte
    price_as: str | None = None  # the price-table row its calls are costed as in traces (None: not costed)


@dataclass(frozen=True)
class Reply:
    text: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


class ProviderError(Retryable):
    """A failed attempt worth retrying; ``kind`` names the failure (rate_limit, server_error,
    timeout, connection, truncated, malformed), ``status`` the HTTP status when there was one."""

    def __init__(self, provider: str, kind: str, detail: str, status: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(f"{provider}: {kind} ({detail})", retry_after_s)
        self.provider, self.kind, self.status = provider, kind, status


class Rejected(Exception):
    """The provider refused the request itself (a 4xx other than 408 and 429): do not retry it."""

    def __init__(self, provider: str, status: int, detail: str):
        super().__init__(f"{provider}: HTTP {status} ({detail})")
        self.provider, self.status = provider, status


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The wait a 429 or 503 asks for: OpenAI's ``retry-after-ms``, else ``Retry-After`` in
    seconds; None when absent or not a finite non-negative number (an HTTP date is ignored)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


async def chat(http: httpx.AsyncClient, provider: Provider, messages: list[dict[str, str]],
               max_tokens: int = 16, temperature: float = 0.0, seed: int | None = None) -> Reply:
    """One attempt at ``POST /chat/completions`` on ``provider``; raises ProviderError or Rejected."""
    body = {"model": provider.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        body["seed"] = seed
    try:
        response = await http.post(provider.base_url.rstrip("/") + "/chat/completions", json=body,
                                   timeout=provider.timeout_s)
    except httpx.TimeoutException as err:
        raise ProviderError(provider.name, "timeout", type(err).__name__) from None
    except httpx.RemoteProtocolError as err:
        raise ProviderError(provider.name, "truncated", str(err) or type(err).__name__) from None
    except httpx.TransportError as err:
        raise ProviderError(provider.name, "connection", str(err) or type(err).__name__) from None
    status = response.status_code
    if status == 429:
        raise ProviderError(provider.name, "rate_limit", "HTTP 429", status, retry_after_s(response.headers))
    if status == 408 or status >= 500:
        raise ProviderError(provider.name, "server_error", f"HTTP {status}", status, retry_after_s(response.headers))
    if status >= 400:
        raise Rejected(provider.name, status, response.text[:200])
    try:
        payload = response.json()
        text = payload["choices"][0]["message"]["content"]
        usage = payload.get("usage") or {}
        if not isinstance(text, str):
            raise TypeError("content is not a string")
        return Reply(text, provider.name, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                     str(payload["choices"][0].get("finish_reason") or "stop"))
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise ProviderError(provider.name, "malformed", f"{type(err).__name__}: {err}", status) from None
