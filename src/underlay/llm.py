"""One client for any OpenAI-compatible chat endpoint, for the layers that may use a model.

``ChatClient.complete_json(system, user, shape)`` posts ``{base_url}/chat/completions``
(JSON mode, temperature 0) and validates the answer's content against ``shape`` (a
pydantic model). Anything else — a non-2xx status, a timeout, a refused connection,
content that is not the expected JSON — raises :class:`underlay.errors.Unavailable`
(retryable), naming the caller (``label``), the endpoint as ``host:port`` and the
problem, never the API key (kept out of ``repr`` too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from underlay import errors

M = TypeVar("M", bound=BaseModel)


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message


class _Completion(BaseModel):
    """The part of an OpenAI chat completion that is read; other members are ignored."""

    choices: list[_Choice] = Field(min_length=1)


@dataclass(frozen=True)
class LLMSettings:
    """Where the model is. ``api_key`` is sent as a bearer token and never shown."""

    base_url: str  # e.g. "http://127.0.0.1:11434/v1"; "/chat/completions" is appended
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL:
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise errors.InvalidInput("llm base_url must be an http(s) URL", field="base_url")
        if not self.model:
            raise errors.InvalidInput("llm model must be named", field="model")
        if not self.timeout_seconds > 0:
            raise errors.InvalidInput(
                "llm timeout_seconds must be positive", field="timeout_seconds"
            )

    @property
    def endpoint(self) -> str:
        """``host:port`` of the endpoint: how errors name it (no credentials, no path)."""
        url = httpx.URL(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        host = f"[{url.host}]" if ":" in url.host else url.host
        return f"{host}:{port}"


class ChatClient:
    def __init__(
        self, settings: LLMSettings, label: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self.label = label
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_seconds)

    async def aclose(self) -> None:
        """Close the HTTP client if this one created it."""
        if self._owns_client:
            await self._client.aclose()

    async def complete_json(self, system: str, user: str, shape: type[M]) -> M:
        s = self.settings
        body = {
            "model": s.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
        try:
            async with asyncio.timeout(s.timeout_seconds):  # overall, not per read
                response = await self._client.post(
                    self._url,
                    json=body,
                    headers={"Authorization": f"Bearer {s.api_key}"} if s.api_key else None,
                    timeout=s.timeout_seconds,
                )
        except (TimeoutError, httpx.TimeoutException):
            self._fail(f"no answer within {s.timeout_seconds:g}s")
        except httpx.HTTPError as exc:
            self._fail(f"request failed ({type(exc).__name__}: {exc})")
        status = response.status_code
        if status == 429:
            self._fail("rate limited the request (HTTP 429)")
        if 400 <= status < 500:
            self._fail(f"rejected the request (HTTP {status}); check model and api key")
        if not 200 <= status < 300:
            self._fail(f"failed (HTTP {status})")
        try:
            completion = _Completion.model_validate_json(response.content)
            text = completion.choices[0].message.content
            if text is None:
                self._fail("returned no message content")
            return shape.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "reply"
            self._fail(f"returned malformed output ({where}: {first['msg']})")

    def _fail(self, problem: str) -> NoReturn:
        key = self.settings.api_key
        message = f"{self.label} at {self.settings.endpoint}: {problem}"
        if key:
            message = message.replace(key, "***")
        # ``from None``: the httpx error's request carries the Authorization header.
        raise errors.Unavailable(message) from None
