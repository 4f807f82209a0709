"""Curation: what one ``add`` does with the facts it was given.

For each fact, in order, one operation:

- a key-value fact whose key has no current version, or any other new fact: ``ADD``;
- a key-value fact with the current value again, or an exact duplicate (case, spacing and
  end marks ignored) of a current memory: ``NOOP``;
- a key-value fact with another value: ``UPDATE`` — a new version of the same memory id,
  and the current version's validity ends at the new fact's time;
- a retraction ("I no longer live in ...") of a current key: ``DELETE`` (validity ends).

Facts of one call see each other: a second value for a key in the same call replaces the
first before anything is written, so no version is ever true for no time at all. The
decisions read current versions, so the caller holds the service's write lock from the
first read to the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from underlay.memory.extract import Fact
from underlay.memory.interface import MemoryStore, Plan, Row
from underlay.memory.models import Operation


@dataclass
class Curator:
    store: MemoryStore
    org: str
    scope: dict[str, str]
    at: float
    plan: Plan = field(default_factory=Plan)
    ops: list[Operation] = field(default_factory=list)
    _keys: dict[str, Row] = field(default_factory=dict)  # key -> version written by this call
    _hashes: set[str] = field(default_factory=set)
    _ended: dict[str, int] = field(default_factory=dict)  # memory id -> stored row it ends

    def _insert(self, row: Row, vector: Any, op: Operation) -> None:
        self.plan.inserts.append((row, vector))
        self.ops.append(op)

    def keep(self, row: Row, vector: Any) -> None:
        """Store as is (``infer=False``)."""
        self._insert(row, vector, Operation(id=row.id, event="ADD", memory=row.text))

    async def decide(self, row: Row, vector: Any, fact: Fact) -> None:
        """Apply the rules above to one extracted fact."""
        if fact.key:
            current = self._keys.get(fact.key) or await self.store.current_by_key(
                self.org, self.scope, fact.key
            )
            if current is not None and not current.rowid:
                return self._replace_pending(current, row, vector, fact)
            if fact.retract and current is not None:
                self.plan.ends.append((current.rowid, self.at, "deleted"))
                self.ops.append(Operation(id=current.id, event="DELETE", memory=current.text))
                return None
            if fact.retract:
                row.key, row.value = "", ""  # nothing to retract: a plain fact
            elif current is not None and current.value.lower() == row.value.lower():
                self.ops.append(Operation(id=current.id, event="NOOP", memory=current.text))
                return None
            elif current is not None:
                row.id, row.version = current.id, current.version + 1
                self.plan.ends.append((current.rowid, self.at, "superseded"))
                self._ended[row.id] = current.rowid
                self._keys[fact.key] = row
                return self._insert(
                    row,
                    vector,
                    Operation(
                        id=row.id, event="UPDATE", memory=row.text, previous_memory=current.text
                    ),
                )
            else:
                self._keys[fact.key] = row
        if row.hash in self._hashes or await self.store.current_by_hash(
            self.org, self.scope, row.hash
        ):
            self.ops.append(Operation(id=row.id, event="NOOP", memory=row.text))
            return None
        self._hashes.add(row.hash)
        self._insert(row, vector, Operation(id=row.id, event="ADD", memory=row.text))
        return None

    def _replace_pending(self, pending: Row, row: Row, vector: Any, fact: Fact) -> None:
        """A key set earlier in this same call changes again (or is retracted)."""
        self.plan.inserts = [(r, v) for r, v in self.plan.inserts if r is not pending]
        earlier = next(o for o in self.ops if o.id == pending.id and o.event != "NOOP")
        self.ops.remove(earlier)
        if fact.retract:
            self._keys.pop(fact.key or "", None)
            stored = self._ended.pop(pending.id, None)
            if stored is None:  # added and retracted in one call: nothing to keep
                self.ops.append(Operation(id=row.id, event="NOOP", memory=row.text))
                return
            self.plan.ends = [e for e in self.plan.ends if e[0] != stored]
            self.plan.ends.append((stored, self.at, "deleted"))
            self.ops.append(Operation(id=pending.id, event="DELETE", memory=row.text))
            return
        row.id, row.version = pending.id, pending.version
        self._keys[fact.key or ""] = row
        self._insert(row, vector, earlier.model_copy(update={"memory": row.text}))
