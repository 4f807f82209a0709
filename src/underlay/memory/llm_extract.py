"""The optional LLM extractor: any OpenAI-compatible chat endpoint, the same :class:`Fact` lists.

It asks the model (``POST {base_url}/chat/completions``, JSON mode, temperature 0) for the
standalone facts one message states, and maps its answer to the facts the deterministic
extractor (:mod:`underlay.memory.extract`) returns, so curation downstream is unchanged:

- ``text`` keeps the speaker's own words, attributed to them ("Ana: I moved to Lyon"),
- ``key`` is ``"<subject>/<attribute>"`` (``subject`` the speaker, else the scope's owner,
  lower-cased) when the model names an attribute and a value (or a retraction),
- ``entities`` starts with the speaker, then the names the model found.

The model's answer is validated strictly; anything else (a non-2xx status, a timeout, a
refused connection, output that is not the expected JSON) raises
:class:`underlay.errors.Unavailable`, which is retryable: the caller decides whether to retry
or fall back to the deterministic extractor. Errors name the endpoint as ``host:port`` and
the problem, never the API key (which is also kept out of ``repr``).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from underlay import errors
from underlay.memory.extract import Fact

SYSTEM_PROMPT = """\
You extract memories from one chat message. The user sends JSON: {"speaker": name, \
"message": text}. Reply with JSON only, exactly of this shape:
{"facts": [{"text": str, "attribute": str | null, "value": str | null, "retract": bool, \
"entities": [str]}]}

Rules:
- One fact per standalone statement the speaker makes. Drop greetings, thanks, small talk, \
questions and filler. A message that states nothing gives {"facts": []}.
- "text": the statement in the speaker's own words, first person kept ("I moved to Lyon"), \
self-contained (resolve "it"/"there" from the message). Do not prefix the speaker's name.
- "attribute": only when the fact states the speaker's own current value of something that \
changes over time, else null. Use one of: location, job, employer, preference, \
"favourite <thing>" (e.g. "favourite drink", "favourite sport"), or another attribute of \
one to three lower-case words (e.g. "dog", "partner"). Facts about other people, plans, \
wishes, hypotheticals and past states have no attribute.
- "value": the attribute's new value, short ("Lyon", "nurse", "tea"); null without attribute.
- "retract": true only when the speaker says the attribute no longer holds ("I no longer \
work at Initech": attribute employer, value null, retract true); else false.
- "entities": the proper names the statement mentions (people, places, organisations), \
as written; [] if none.
"""

_SPACES = re.compile(r"\s+")
_NO_ATTRIBUTE = frozenset({"", "other", "none", "null", "n/a"})


class _LLMFact(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(min_length=1, max_length=2000)
    attribute: str | None = Field(default=None, max_length=60)
    value: str | None = Field(default=None, max_length=200)
    retract: bool = False
    entities: list[str] = Field(default_factory=list, max_length=50)


class _LLMFacts(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    facts: list[_LLMFact] = Field(max_length=200)


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


class LLMExtractor:
    """Facts of a message from an OpenAI-compatible model (see the module docstring)."""

    def __init__(self, settings: LLMSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_seconds)

    async def aclose(self) -> None:
        """Close the HTTP client if this extractor created it."""
        if self._owns_client:
            await self._client.aclose()

    async def extract(self, content: str, speaker: str | None, owner: str) -> list[Fact]:
        """The facts of one message said by ``speaker``; unnamed, it is the scope's ``owner``."""
        subject = (speaker or owner).lower()
        reply = await self._complete(json.dumps({"speaker": speaker or owner, "message": content}))
        facts = (_fact(item, speaker, subject) for item in reply.facts)
        return [f for f in facts if f is not None]

    # -- the call ----------------------------------------------------------------------

    async def _complete(self, user: str) -> _LLMFacts:
        s = self.settings
        body = {
            "model": s.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
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
            return _LLMFacts.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "reply"
            self._fail(f"returned malformed output ({where}: {first['msg']})")

    def _fail(self, problem: str) -> NoReturn:
        key = self.settings.api_key
        message = f"LLM extractor at {self.settings.endpoint}: {problem}"
        if key:
            message = message.replace(key, "***")
        # ``from None``: the httpx error's request carries the Authorization header.
        raise errors.Unavailable(message) from None


def _fact(item: _LLMFact, speaker: str | None, subject: str) -> Fact | None:
    text = _SPACES.sub(" ", item.text).strip()
    if speaker and text.startswith(f"{speaker}:"):  # already attributed
        text = text[len(speaker) + 1 :].strip()
    if not text:
        return None
    attribute = _attribute(item.attribute)
    value = _SPACES.sub(" ", item.value).strip() if item.value else None
    key: str | None = None
    retract = False
    if attribute and item.retract:
        key, value, retract = f"{subject}/{attribute}", None, True
    elif attribute and value:
        key = f"{subject}/{attribute}"
    else:
        value = None  # a value without a key means nothing to curation
    found: list[str] = [speaker] if speaker else []
    for name in item.entities:
        name = _SPACES.sub(" ", name).strip()
        if name and name not in found:
            found.append(name)
    return Fact(f"{speaker}: {text}" if speaker else text, key, value, retract, tuple(found))


def _attribute(raw: str | None) -> str | None:
    """The attribute as the deterministic extractor spells it ("favorite" -> "favourite")."""
    if raw is None:
        return None
    attr = _SPACES.sub(" ", raw.replace("/", " ")).strip().lower()
    attr = re.sub(r"\bfavou?rite\b", "favourite", attr)
    return None if attr in _NO_ATTRIBUTE else attr


__all__ = ["SYSTEM_PROMPT", "LLMExtractor", "LLMSettings"]
