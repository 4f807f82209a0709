"""History and the open export format of memories (JSONL, ``underlay.memory/1``).

Each line of an export is one *version* of one memory, as JSON::

    {"format": "underlay.memory/1", "id": "mem_…", "version": 1, "memory": "Ana lives in Lyon",
     "user_id": "ana", "agent_id": null, "run_id": null, "actor": "Ana",
     "key": "Ana/location", "value": "Lyon", "metadata": {}, "sources": ["m1"],
     "entities": ["Ana", "Lyon"], "chunk": "chk_…", "seq": 0,
     "valid_from": "2026-01-01T00:00:00+00:00", "valid_to": null, "end_reason": null,
     "created_at": "2026-01-01T00:00:00+00:00"}

Vectors are not exported: the importer embeds again with its own model, so an export
moves between installations with different embedders. Import is all or nothing: the first
invalid line is named in the error and nothing is written. Versions already present (same
id and version in the organisation) are skipped, so importing twice is harmless.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationError

from underlay import errors
from underlay.memory.interface import Plan, Row
from underlay.memory.models import HistoryEntry, Scope
from underlay.memory.service import MemoryService, digest, from_time, public_fields, to_time
from underlay.types import StrictModel

FORMAT: Literal["underlay.memory/1"] = "underlay.memory/1"


class ExportRecord(StrictModel):
    format: Literal["underlay.memory/1"] = FORMAT
    id: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    memory: str = Field(min_length=1, max_length=32_000)
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    actor: str | None = None
    key: str | None = None
    value: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    sources: list[str] = Field(default_factory=list)
    entities: list[str] = Field(default_factory=list)
    chunk: str | None = None
    seq: int = 0
    valid_from: datetime
    valid_to: datetime | None = None
    end_reason: Literal["superseded", "deleted"] | None = None
    created_at: datetime


def history(versions: list[Row]) -> list[HistoryEntry]:
    """ADD for the first version, UPDATE for each later one, DELETE where one was deleted."""
    out: list[HistoryEntry] = []
    for i, row in enumerate(versions):
        out.append(
            HistoryEntry(
                memory_id=row.id,
                event="ADD" if i == 0 else "UPDATE",
                version=row.version,
                memory=row.text,
                previous_memory=versions[i - 1].text if i else None,
                at=from_time(row.valid_from) or from_time(row.created_at),
            )
        )
        if row.end_reason == "deleted" and row.valid_to is not None:
            out.append(
                HistoryEntry(
                    memory_id=row.id,
                    event="DELETE",
                    version=row.version,
                    memory=row.text,
                    at=from_time(row.valid_to),
                )
            )
    return out


def record(row: Row) -> str:
    return ExportRecord(
        **public_fields(row),
        chunk=row.chunk or None,
        seq=row.seq,
        end_reason=row.end_reason or None,
    ).model_dump_json()


async def export(service: MemoryService, org: str, scope: Scope, with_history: bool) -> list[str]:
    lines, after = [], 0
    while batch := await service.store.scan(
        org, scope.columns(), after=after, limit=1000, current=not with_history
    ):
        lines += [record(r) for r in batch]
        after = batch[-1].rowid
    return lines


def parse(jsonl: str) -> list[ExportRecord]:
    records = []
    for n, line in enumerate(jsonl.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(ExportRecord.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise errors.InvalidInput(f"jsonl line {n}: {reason}", field="jsonl") from exc
        if not (records[-1].user_id or records[-1].agent_id or records[-1].run_id):
            raise errors.InvalidInput(
                f"jsonl line {n}: no scope (user_id, agent_id, run_id)", field="jsonl"
            )
    return records


async def import_(service: MemoryService, org: str, jsonl: str) -> tuple[int, int]:
    """Write every new version of ``jsonl`` in one transaction; (imported, skipped)."""
    records = parse(jsonl)
    fresh = []
    for rec in records:
        known = {r.version for r in await service.store.versions(org, rec.id)}
        if rec.version not in known:
            fresh.append(rec)
    if not fresh:
        return 0, len(records)
    texts = [r.memory for r in fresh]
    vectors, tokens = await service.embed(texts)
    rows = [
        Row(
            id=r.id,
            version=r.version,
            org=org,
            text=r.memory,
            hash=digest(r.memory),
            valid_from=to_time(r.valid_from, 0.0),
            created_at=to_time(r.created_at, 0.0),
            user_id=r.user_id or "",
            agent_id=r.agent_id or "",
            run_id=r.run_id or "",
            actor=r.actor or "",
            key=r.key or "",
            value=r.value or "",
            metadata=r.metadata,
            sources=r.sources,
            entities=r.entities,
            chunk=r.chunk or "",
            seq=r.seq,
            tokens=tokens[i],
            end_reason=r.end_reason or "",
            valid_to=to_time(r.valid_to, 0.0) if r.valid_to else None,
        )
        for i, r in enumerate(fresh)
    ]
    async with service.writing:
        await service.store.apply(Plan(inserts=list(zip(rows, vectors, strict=True))))
    return len(rows), len(records) - len(rows)
