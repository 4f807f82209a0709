"""What the ``events.*`` and ``messages.*`` syscalls take and return."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator

from underlay.comms.events import MAX_WAIT_SECONDS, TOPIC_FILTER, TOPIC_HELP
from underlay.types import StrictModel

MAX_BODY_BYTES = 65_536
_FILTER = re.compile(TOPIC_FILTER)
Wait = Field(
    default=0.0, ge=0, le=MAX_WAIT_SECONDS,
    description=f"wait up to this long (at most {MAX_WAIT_SECONDS:g} s) for one to arrive",
)  # fmt: skip


class ListEvents(StrictModel):
    topic: str | None = Field(
        default=None, max_length=200,
        description="only topics under this prefix: queue, queue.landed, queue.*, *",
    )  # fmt: skip
    after: int = Field(default=0, ge=0, description="the cursor: events with a larger id")
    limit: int = Field(default=100, ge=1, le=1000)
    wait_seconds: float = Wait

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and not _FILTER.match(value):
            raise ValueError(f"{value!r} is not a topic filter: {TOPIC_HELP}, or ending in .*")
        return value


class Event(StrictModel):
    id: int
    topic: str
    subject: str = Field(description="what it is about: a change id, a repository...")
    payload: dict[str, Any]
    created_at: float


class EventPage(StrictModel):
    items: list[Event]
    cursor: int = Field(description="pass as `after` to read on: the last id seen")


class Inbox(StrictModel):
    agent: str | None = Field(
        default=None, max_length=100, description="whose inbox (default: the caller's own)"
    )
    unread: bool = Field(default=True, description="only messages not marked read yet")
    after: int = Field(default=0, ge=0, description="the cursor: messages with a larger id")
    limit: int = Field(default=100, ge=1, le=1000)
    wait_seconds: float = Wait


class Message(StrictModel):
    id: int
    to_agent: str
    sender: str
    subject: str
    body: dict[str, Any]
    created_at: float
    read_at: float | None


class MessagePage(StrictModel):
    items: list[Message]
    cursor: int = Field(description="pass as `after` to read on: the last id seen")


class Ack(StrictModel):
    ids: list[int] = Field(min_length=1, max_length=1000, description="message ids")

    @field_validator("ids")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(i < 1 for i in value):
            raise ValueError("message ids are positive integers")
        return value


class Acked(StrictModel):
    items: list[Message]


class SendMessage(StrictModel):
    to: str = Field(min_length=1, max_length=100, description="an agent of the org, id or name")
    subject: str = Field(min_length=1, max_length=200)
    body: dict[str, Any] = Field(default_factory=dict, description="a JSON object, up to 64 KiB")

    @field_validator("body")
    @classmethod
    def _size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > MAX_BODY_BYTES:
            raise ValueError(f"at most {MAX_BODY_BYTES} bytes of JSON")
        return value
