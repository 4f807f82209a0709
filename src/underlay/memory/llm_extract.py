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

import json
import re

import httpx
from pydantic import BaseModel, ConfigDict, Field

from underlay.llm import ChatClient, LLMSettings
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


class LLMExtractor:
    """Facts of a message from an OpenAI-compatible model (see the module docstring)."""

    def __init__(self, settings: LLMSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._chat = ChatClient(settings, "LLM extractor", client)

    async def aclose(self) -> None:
        """Close the HTTP client if this extractor created it."""
        await self._chat.aclose()

    async def extract(self, content: str, speaker: str | None, owner: str) -> list[Fact]:
        """The facts of one message said by ``speaker``; unnamed, it is the scope's ``owner``."""
        subject = (speaker or owner).lower()
        user = json.dumps({"speaker": speaker or owner, "message": content})
        reply = await self._chat.complete_json(SYSTEM_PROMPT, user, _LLMFacts)
        facts = (_fact(item, speaker, subject) for item in reply.facts)
        return [f for f in facts if f is not None]


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
