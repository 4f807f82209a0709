"""Pydantic models of the memory layer: what the ``memory.*`` syscalls take and return.

The API is Mem0-shaped (``add``, ``search``, ``get``, ``get_all``, ``update``, ``delete``,
``delete_all``, ``history``) with two additions: temporal validity (``as_of``) and an
open export format (``export`` / ``import``, JSONL, see docs/memory.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from underlay.types import StrictModel

MAX_MESSAGE_CHARS = 32_000
MAX_MESSAGES = 1_000
MAX_TEXT_CHARS = 8_000
Event = Literal["ADD", "UPDATE", "DELETE", "NOOP"]
UNAUDITED: dict[str, Any] = {"x-audit": False}
"""Marks a field of remembered content: the audit trail records the call, not the text."""


class Scope(StrictModel):
    """Whose memory: at least one of ``user_id``, ``agent_id``, ``run_id`` (always within
    the caller's organisation; a scope of another organisation is simply never seen)."""

    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)
    run_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_at_least(self) -> Scope:
        if not (self.user_id or self.agent_id or self.run_id):
            raise ValueError("give a scope: user_id, agent_id or run_id")
        return self

    def columns(self) -> dict[str, str]:
        """The scope's columns that are set (only those: not the request's other fields)."""
        found = {"user_id": self.user_id, "agent_id": self.agent_id, "run_id": self.run_id}
        return {k: v for k, v in found.items() if v is not None}


class Message(StrictModel):
    """One message of a conversation. ``id`` is kept as the memory's source."""

    role: Literal["user", "assistant", "system", "tool"] = "user"
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    name: str | None = Field(default=None, max_length=200, description="the speaker")
    id: str | None = Field(default=None, max_length=200, description="source message id")

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message content is blank")
        return value


class _Add(StrictModel):
    messages: list[Message] | str = Field(
        description="messages of a conversation, or one text",
        min_length=1,
        json_schema_extra=UNAUDITED,
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    infer: bool = Field(
        default=True,
        description="extract facts and resolve conflicts (false: store each message as is)",
    )
    timestamp: datetime | None = Field(
        default=None, description="when the messages were said (default: now)"
    )

    @field_validator("messages")
    @classmethod
    def _bounded(cls, value: list[Message] | str) -> list[Message] | str:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("text is blank")
            if len(value) > MAX_MESSAGE_CHARS:
                raise ValueError(f"text is over {MAX_MESSAGE_CHARS} characters")
        elif len(value) > MAX_MESSAGES:
            raise ValueError(f"more than {MAX_MESSAGES} messages in one add")
        return value

    def message_list(self) -> list[Message]:
        if isinstance(self.messages, str):
            return [Message(content=self.messages)]
        return self.messages


class AddMemory(Scope, _Add):
    """What to remember and whose it is (positional order: messages, then the scope)."""


class ContextTurn(StrictModel):
    """A turn shown next to a search result (the one after it in the conversation)."""

    id: str
    memory: str
    actor: str | None = None
    sources: list[str] = Field(default_factory=list)
    valid_from: datetime


class Memory(StrictModel):
    """One memory as it stands (or stood, for ``as_of`` and ``history``)."""

    id: str
    memory: str = Field(description="the remembered text")
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    actor: str | None = Field(default=None, description="who said it")
    metadata: dict[str, Any] = Field(default_factory=dict)
    sources: list[str] = Field(default_factory=list, description="source message ids")
    entities: list[str] = Field(default_factory=list)
    key: str | None = Field(default=None, description="subject/attribute of a key-value fact")
    value: str | None = None
    version: int = 1
    valid_from: datetime
    valid_to: datetime | None = Field(default=None, description="null: still true")
    created_at: datetime
    score: float | None = None
    context: list[ContextTurn] = Field(
        default_factory=list, description="neighbouring turns added by search expansion"
    )


class Operation(StrictModel):
    """What one ``add`` did: ADD a memory, UPDATE (supersede) one, DELETE one, or NOOP."""

    id: str
    event: Event
    memory: str
    previous_memory: str | None = None


class AddResult(StrictModel):
    results: list[Operation]


class Filter(StrictModel):
    """A condition on a memory's metadata (or ``actor``, ``key``, ``created_at``)."""

    field: str = Field(min_length=1, max_length=100)
    op: Literal["eq", "ne", "in", "gte", "lte", "contains"] = "eq"
    value: Any


class _Search(StrictModel):
    query: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra=UNAUDITED)
    limit: int = Field(default=10, ge=1, le=100)
    filters: list[Filter] = Field(default_factory=list, max_length=20)
    as_of: datetime | None = Field(default=None, description="what was true at that time")
    expand: bool = Field(
        default=True, description="add neighbouring turns of the top results as context"
    )
    max_tokens: int = Field(
        default=500, ge=0, le=20_000, description="token budget of the expansion"
    )


class SearchMemory(Scope, _Search):
    """A query and whose memories to search."""


class SearchResult(StrictModel):
    results: list[Memory]
    tokens: int = Field(description="word-piece tokens of every returned text")


class MemoryRef(StrictModel):
    memory_id: str = Field(min_length=1, max_length=100)


class UpdateMemory(MemoryRef):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra=UNAUDITED)
    metadata: dict[str, Any] | None = None


class GetAll(Scope):
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None
    filters: list[Filter] = Field(default_factory=list, max_length=20)
    as_of: datetime | None = None


class MemoryPage(StrictModel):
    items: list[Memory]
    next_cursor: str | None = None


class HistoryEntry(StrictModel):
    memory_id: str
    event: Literal["ADD", "UPDATE", "DELETE"]
    version: int
    memory: str
    previous_memory: str | None = None
    at: datetime


class History(StrictModel):
    items: list[HistoryEntry]


class DeleteAll(Scope):
    pass


class Deleted(StrictModel):
    deleted: int


class ExportMemories(Scope):
    history: bool = Field(default=True, description="include superseded and deleted versions")


class Exported(StrictModel):
    jsonl: str
    count: int


class ImportMemories(StrictModel):
    jsonl: str = Field(min_length=1, max_length=64_000_000, json_schema_extra=UNAUDITED)


class Imported(StrictModel):
    imported: int
    skipped: int
