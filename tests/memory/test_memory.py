"""The memory.* syscalls through the kernel: curation, retrieval, history, isolation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from underlay import errors
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay

JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)


async def test_add_infers_facts_and_resolves_conflicts(ul: AsyncUnderlay) -> None:
    first = await ul.memory.add(
        [{"name": "Ana", "content": "Hi there! I live in Lyon. I work as a nurse.", "id": "m1"}],
        user_id="ana",
        timestamp=JAN,
    )
    assert [o.event for o in first.results] == ["ADD", "ADD"]  # the greeting is not a fact
    lyon = first.results[0]
    moved = await ul.memory.add(
        [{"name": "Ana", "content": "I moved to Berlin last month.", "id": "m2"}],
        user_id="ana",
        timestamp=MAR,
    )
    assert [(o.event, o.id) for o in moved.results] == [("UPDATE", lyon.id)]
    assert moved.results[0].previous_memory == "Ana: I live in Lyon."
    again = await ul.memory.add(
        [{"name": "Ana", "content": "I moved to Berlin last month.", "id": "m3"}],
        user_id="ana",
        timestamp=MAR,
    )
    assert [o.event for o in again.results] == ["NOOP"]
    now = await ul.memory.get(lyon.id)
    assert (now.memory, now.value, now.version, now.sources) == (
        "Ana: I moved to Berlin last month.",
        "Berlin",
        2,
        ["m2"],
    )
    history = await ul.memory.history(lyon.id)
    assert [(h.event, h.memory) for h in history.items] == [
        ("ADD", "Ana: I live in Lyon."),
        ("UPDATE", "Ana: I moved to Berlin last month."),
    ]
    then = await ul.memory.search(
        "Where does Ana live?", user_id="ana", as_of=datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert then.results[0].memory == "Ana: I live in Lyon."
    assert "Ana: I live in Lyon." not in [
        m.memory for m in (await ul.memory.search("Where does Ana live?", user_id="ana")).results
    ]
    retracted = await ul.memory.add("I no longer live in Berlin.", user_id="ana", timestamp=JUN)
    assert [(o.event, o.id) for o in retracted.results] == [("DELETE", lyon.id)]
    assert (await ul.memory.get(lyon.id)).valid_to == JUN


async def test_infer_false_keeps_every_message_with_its_source(ul: AsyncUnderlay) -> None:
    msgs = [
        {"name": "Bo", "content": "Hey!", "id": "t1"},
        {"name": "Cy", "content": "I adopted a cat called Miso.", "id": "t2"},
        {"name": "Bo", "content": "Hey!", "id": "t3"},
    ]
    out = await ul.memory.add(msgs, user_id="chat", infer=False)
    assert [o.event for o in out.results] == ["ADD", "ADD", "ADD"]
    found = await ul.memory.search("What is the name of Cy's cat?", user_id="chat", limit=1)
    top = found.results[0]
    assert (top.memory, top.sources, top.actor) == (
        "Cy: I adopted a cat called Miso.",
        ["t2"],
        "Cy",
    )
    assert [c.sources for c in top.context] == [["t3"]]  # the next turn, as context
    assert found.tokens > 0


async def test_search_is_scoped_and_filtered(ul: AsyncUnderlay) -> None:
    await ul.memory.add(
        "The deploy key rotates every Monday.",
        user_id="ops",
        metadata={"team": "infra"},
        infer=False,
    )
    await ul.memory.add(
        "The deploy key rotates every Friday.", user_id="dev", metadata={"team": "app"}, infer=False
    )
    ops = await ul.memory.search("When does the deploy key rotate?", user_id="ops")
    assert [m.memory for m in ops.results] == ["The deploy key rotates every Monday."]
    assert (
        await ul.memory.search(
            "deploy key", user_id="ops", filters=[{"field": "team", "op": "eq", "value": "app"}]
        )
    ).results == []
    with pytest.raises(errors.InvalidInput) as info:
        await ul.memory.search(
            "x", user_id="ops", filters=[{"field": "team", "op": "in", "value": "infra"}]
        )
    assert info.value.field == "filters[0]"


async def test_update_delete_delete_all_and_paging(ul: AsyncUnderlay) -> None:
    ids = [
        (await ul.memory.add(f"Fact number {n} about pipelines.", run_id="r1", infer=False))
        .results[0]
        .id
        for n in range(5)
    ]
    page = await ul.memory.get_all(run_id="r1", limit=2)
    assert [m.id for m in page.items] == ids[:2] and page.next_cursor
    rest = await ul.memory.get_all(run_id="r1", limit=10, cursor=page.next_cursor)
    assert [m.id for m in rest.items] == ids[2:] and rest.next_cursor is None
    updated = await ul.memory.update(ids[0], "Fact zero, corrected.")
    assert (updated.version, updated.memory) == (2, "Fact zero, corrected.")
    deleted = await ul.memory.delete(ids[1])
    assert deleted.valid_to is not None
    with pytest.raises(errors.Conflict):
        await ul.memory.delete(ids[1])
    assert [h.event for h in (await ul.memory.history(ids[1])).items] == ["ADD", "DELETE"]
    assert (await ul.memory.delete_all(run_id="r1")).deleted == 4
    assert (await ul.memory.get_all(run_id="r1")).items == []
    with pytest.raises(errors.NotFound):
        await ul.memory.get("mem_unknown")


async def test_export_import_round_trip_is_all_or_nothing(ul: AsyncUnderlay) -> None:
    await ul.memory.add(
        [{"name": "Ana", "content": "I live in Lyon.", "id": "a"}], user_id="ana", timestamp=JAN
    )
    await ul.memory.add(
        [{"name": "Ana", "content": "I live in Oslo.", "id": "b"}], user_id="ana", timestamp=MAR
    )
    exported = await ul.memory.export(user_id="ana")
    lines = [json.loads(x) for x in exported.jsonl.splitlines()]
    assert exported.count == 2 and {x["format"] for x in lines} == {"underlay.memory/1"}
    assert [x["end_reason"] for x in lines] == ["superseded", None]
    moved = [dict(x, user_id="ana2", id=x["id"] + "x") for x in lines]
    bad = "\n".join([json.dumps(moved[0]), '{"format": "underlay.memory/1", "id": 3}'])
    with pytest.raises(errors.InvalidInput) as info:
        await ul.memory.import_(bad)
    assert "line 2" in info.value.message
    assert (await ul.memory.get_all(user_id="ana2")).items == []  # nothing partly written
    good = "\n".join(json.dumps(x) for x in moved)
    assert (await ul.memory.import_(good)).imported == 2
    assert (await ul.memory.import_(good)).skipped == 2
    hist = await ul.memory.history(moved[0]["id"])
    assert [h.memory for h in hist.items] == ["Ana: I live in Lyon.", "Ana: I live in Oslo."]


async def test_bad_input_is_refused_with_its_field(ul: AsyncUnderlay) -> None:
    for payload, field in [
        ({"messages": "   ", "user_id": "u"}, "messages"),
        ({"messages": "x" * 40_000, "user_id": "u"}, "messages"),
        ({"messages": "hello world again"}, None),
        ({"messages": "hello", "user_id": "u", "tenant": "t"}, "tenant"),
    ]:
        with pytest.raises(errors.InvalidInput) as info:
            await ul.call("memory.add", **payload)
        if field:
            assert info.value.field is not None and field in info.value.field
    assert (await ul.memory.get_all(user_id="u")).items == []


async def test_orgs_never_see_each_other(kernel: Kernel, ul: AsyncUnderlay) -> None:
    mine = (
        (await ul.memory.add("Our launch code name is Bluebird.", user_id="shared", infer=False))
        .results[0]
        .id
    )
    other = await ul.orgs.create("other-org")
    theirs = ul.with_token(other.admin_token.get_secret_value())
    assert (await theirs.memory.search("launch code name", user_id="shared")).results == []
    with pytest.raises(errors.NotFound):
        await theirs.memory.get(mine)
    with pytest.raises(errors.NotFound):
        await theirs.memory.delete(mine)


async def test_capabilities_metering_and_audit(ul: AsyncUnderlay, kernel: Kernel) -> None:
    reader = await ul.agents.create("reader", capabilities=["memory.search"], budget="1.00 USD")
    token = (await ul.tokens.create(subject=reader.id)).token.get_secret_value()
    agent = ul.with_token(token)
    with pytest.raises(errors.PermissionDenied):
        await agent.memory.add("The vault is behind the painting.", user_id="x")
    await ul.memory.add("The vault is behind the painting.", user_id="x", infer=False)
    assert (await agent.memory.search("where is the vault", user_id="x")).results
    balance = await ul.budget.balance(agent=reader.id)
    assert balance.available.amount < 1
    events = [e async for e in kernel_events(kernel)]
    adds = [e for e in events if e["syscall"] == "memory.add" and e["outcome"] == "ok"]
    assert adds and all("painting" not in json.dumps(e) for e in events)


async def kernel_events(kernel: Kernel):  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    async with kernel.db.read() as conn:
        for row in await conn.execute(text("SELECT syscall, outcome, detail FROM audit_events")):
            yield {"syscall": row[0], "outcome": row[1], "detail": row[2]}


async def test_one_call_that_changes_a_fact_twice(ul: AsyncUnderlay) -> None:
    once = await ul.memory.add("I live in Lyon. I moved to Oslo.", user_id="eve", timestamp=JAN)
    assert [(o.event, o.memory) for o in once.results] == [("ADD", "I moved to Oslo.")]
    mid = once.results[0].id
    assert [h.event for h in (await ul.memory.history(mid)).items] == ["ADD"]
    gone = await ul.memory.add(
        "I moved to Rome. I no longer live in Rome.", user_id="eve", timestamp=MAR
    )
    assert [(o.event, o.id) for o in gone.results] == [("DELETE", mid)]
    versions = (await ul.memory.history(mid)).items
    assert [(h.event, h.memory) for h in versions] == [
        ("ADD", "I moved to Oslo."), ("DELETE", "I moved to Oslo.")]
    assert (await ul.memory.search("where does eve live", user_id="eve")).results == []
