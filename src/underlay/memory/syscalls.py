"""The ``memory.*`` syscalls: Mem0-shaped curated memory through the kernel.

Every call is confined to the caller's organisation (the kernel authenticated it; the
store filters by it), authorized by its capability (``memory.add``, ``memory.search``,
``memory.read``, ``memory.update``, ``memory.delete``, ``memory.import``), metered (a
small fixed price per message added and per search, held before the handler runs) and,
when it writes, audited with the ids it touched — never the remembered text.
"""

from __future__ import annotations

from decimal import Decimal

from underlay import errors
from underlay.kernel.context import CallContext
from underlay.kernel.policy import FailurePolicy
from underlay.kernel.syscall import SyscallGroup
from underlay.memory import filters, portable
from underlay.memory.models import (
    AddMemory,
    AddResult,
    DeleteAll,
    Deleted,
    Exported,
    ExportMemories,
    GetAll,
    History,
    Imported,
    ImportMemories,
    Memory,
    MemoryPage,
    MemoryRef,
    SearchMemory,
    SearchResult,
    UpdateMemory,
)
from underlay.memory.service import MemoryService, memory_model, to_time, valid_at
from underlay.types import Money

group = SyscallGroup("memory")

PRICE_PER_MESSAGE = Decimal("0.0001")
PRICE_PER_SEARCH = Money("0.00005")
EMBEDDING = FailurePolicy(timeout_seconds=120)


def _add_cost(inp: AddMemory) -> Money:
    return Money(PRICE_PER_MESSAGE * len(inp.message_list()))


async def _service(ctx: CallContext) -> MemoryService:
    return await ctx.kernel.memory()


@group.syscall("memory.add", mutating=True, cost=_add_cost, policy=EMBEDDING, backend="memory")
async def add(ctx: CallContext, inp: AddMemory) -> AddResult:
    """Remember messages or a text: extract facts, merge duplicates, supersede contradictions."""
    result = await (await _service(ctx)).add(ctx.org_id, inp, ctx.now())
    ctx.audit.update(**inp.columns(), operations=[f"{o.event}:{o.id}" for o in result.results])
    return result


@group.syscall("memory.search", cost=PRICE_PER_SEARCH, backend="memory")
async def search(ctx: CallContext, inp: SearchMemory) -> SearchResult:
    """The memories most relevant to a query (hybrid: dense, BM25, entities, neighbours)."""
    filters.check(inp.filters)
    return await (await _service(ctx)).search(ctx.org_id, inp)


@group.syscall("memory.get", capability="memory.read", backend="memory")
async def get(ctx: CallContext, inp: MemoryRef) -> Memory:
    """One memory by id, as it stands now (its last version, if deleted)."""
    return memory_model(await (await _service(ctx)).current(ctx.org_id, inp.memory_id))


@group.syscall("memory.get_all", capability="memory.read", backend="memory")
async def get_all(ctx: CallContext, inp: GetAll) -> MemoryPage:
    """Every memory of a scope (true now, or ``as_of`` a time), oldest first, by cursor."""
    filters.check(inp.filters)
    try:
        after = int(inp.cursor or 0)
    except ValueError:
        raise errors.InvalidInput("cursor: not one this call returned", field="cursor") from None
    store = (await _service(ctx)).store
    at = to_time(inp.as_of, 0.0) if inp.as_of else None
    items: list[Memory] = []
    last, more = 0, False
    while not more:
        batch = await store.scan(
            ctx.org_id, inp.columns(), after=after, limit=inp.limit + 1, current=at is None
        )
        for row in batch:
            after = row.rowid
            if (at is None or valid_at(row, at)) and filters.matches(row, inp.filters):
                if len(items) == inp.limit:
                    more = True
                    break
                items.append(memory_model(row))
                last = row.rowid
        if len(batch) <= inp.limit:
            break
    return MemoryPage(items=items, next_cursor=str(last) if more else None)


@group.syscall("memory.update", mutating=True, backend="memory")
async def update(ctx: CallContext, inp: UpdateMemory) -> Memory:
    """Replace a memory's text; the old version stays in its history."""
    ctx.audit.update(memory=inp.memory_id)
    return await (await _service(ctx)).update(
        ctx.org_id, inp.memory_id, inp.text, inp.metadata, ctx.now()
    )


@group.syscall("memory.delete", mutating=True, backend="memory")
async def delete(ctx: CallContext, inp: MemoryRef) -> Memory:
    """End a memory's validity now; it leaves search, and stays in history and ``as_of``."""
    ctx.audit.update(memory=inp.memory_id)
    return await (await _service(ctx)).delete(ctx.org_id, inp.memory_id, ctx.now())


@group.syscall("memory.delete_all", capability="memory.delete", mutating=True, backend="memory")
async def delete_all(ctx: CallContext, inp: DeleteAll) -> Deleted:
    """Delete every memory of a scope (history kept)."""
    count = await (await _service(ctx)).delete_all(ctx.org_id, inp.columns(), ctx.now())
    ctx.audit.update(**inp.columns(), deleted=count)
    return Deleted(deleted=count)


@group.syscall("memory.history", capability="memory.read", backend="memory")
async def history(ctx: CallContext, inp: MemoryRef) -> History:
    """Every change of one memory: ADD, each UPDATE (with the text before), DELETE."""
    versions = await (await _service(ctx)).store.versions(ctx.org_id, inp.memory_id)
    if not versions:
        raise errors.NotFound(f"no memory {inp.memory_id}", field="memory_id")
    return History(items=portable.history(versions))


@group.syscall("memory.export", capability="memory.read", backend="memory")
async def export(ctx: CallContext, inp: ExportMemories) -> Exported:
    """A scope's memories as JSONL (format ``underlay.memory/1``, see docs/memory.md)."""
    lines = await portable.export(await _service(ctx), ctx.org_id, inp, inp.history)
    return Exported(jsonl="".join(line + "\n" for line in lines), count=len(lines))


@group.syscall("memory.import", mutating=True, policy=EMBEDDING, backend="memory")
async def import_(ctx: CallContext, inp: ImportMemories) -> Imported:
    """Load a JSONL export into this organisation: all lines or none."""
    imported, skipped = await portable.import_(await _service(ctx), ctx.org_id, inp.jsonl)
    ctx.audit.update(imported=imported, skipped=skipped)
    return Imported(imported=imported, skipped=skipped)
