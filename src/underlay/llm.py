"""One client for any OpenAI-compatible chat endpoint, for the layers that may use a model.

``ChatClient.complete_json(system, user, shape)`` posts ``{base_url}/chat/completions``
(JSON mode, temperature 0) and validates the answer's content against ``shape`` (a
pydantic model). ``ChatClient.chat(messages, tools)`` is one turn of a conversation with
function tools (the built-in agent loop): the assistant's message, its text and its tool
calls. Anything else — a non-2xx status, a timeout, a refused connection,
content that is not the expected JSON — raises :class:`underlay.errors.Unavailable`
(retryable), naming the caller (``label``), the endpoint as ``host:port`` and the
problem, never the API key (kept out of ``repr`` too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from underlay import errors

M = TypeVar("M", bound=BaseModel)


class _Function(BaseModel):
    name: str
    arguments: str = "{}"


class _ToolCall(BaseModel):
    id: str
    type: str = "function"
    function: _Function


class _Message(BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    message: _Message


class _Completion(BaseModel):
    """The part of an OpenAI chat completion that is read; other members are ignored."""

    choices: list[_Choice] = Field(min_length=1)
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it (it may not parse)


@dataclass(frozen=True)
class Reply:
    """One assistant turn: its text, the tools it calls, and the tokens it used."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    tokens: int

    def as_message(self) -> dict[str, Any]:
        """The turn as the ``assistant`` message the next request must repeat."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]  # fmt: skip
        return message


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
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        completion = await self._post(
            {"messages": messages, "response_format": {"type": "json_object"}}
        )
        text = completion.choices[0].message.content
        if text is None:
            self._fail("returned no message content")
        try:
            return shape.model_validate_json(text)
        except ValidationError as exc:
            self._malformed(exc)

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Reply:
        """One assistant turn after ``messages``, offered ``tools`` (function schemas)."""
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        completion = await self._post(body)
        message = completion.choices[0].message
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
        )
        if message.content is None and not calls:
            self._fail("returned neither text nor tool calls")
        tokens = int((completion.usage or {}).get("total_tokens") or 0)
        return Reply(message.content, calls, tokens)

    async def _post(self, body: dict[str, Any]) -> _Completion:
        s = self.settings
        body = {"model": s.model, **body, "temperature": 0}
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
            return _Completion.model_validate_json(response.content)
        except ValidationError as exc:
            self._malformed(exc)

    def _malformed(self, exc: ValidationError) -> NoReturn:
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
