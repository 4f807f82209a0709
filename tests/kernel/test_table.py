"""The syscall table as data: registration rules, lookup, description."""

from __future__ import annotations

import pytest

from kernel.helpers import Done, Work
from underlay import errors
from underlay.kernel.builtin import builtin_table
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup, SyscallTable
from underlay.types import Money


def test_a_handler_needs_a_docstring_and_two_parameters() -> None:
    group = SyscallGroup("t")

    async def undocumented(ctx: CallContext, inp: Work) -> Done:
        return Done(text="", run=0)

    async def three(ctx: CallContext, inp: Work, extra: int) -> Done:
        """Three parameters."""
        return Done(text="", run=0)

    with pytest.raises(TypeError, match="docstring"):
        group.syscall("t.a")(undocumented)
    with pytest.raises(TypeError, match=r"\(ctx, inp\)"):
        group.syscall("t.b")(three)  # type: ignore[arg-type]
    assert group.syscalls == []


def test_registration_reads_models_from_annotations() -> None:
    group = SyscallGroup("t")

    async def work(ctx: CallContext, inp: Work) -> Done:
        """Do the work.

        More text that is not part of the table's doc line.
        """
        return Done(text="", run=0)

    group.syscall("t.work", mutating=True, cost=Money("0.25"))(work)
    [sc] = group.syscalls
    assert (sc.input, sc.output, sc.capability, sc.doc) == (Work, Done, "t.work", "Do the work.")
    assert sc.cost_for(Work()) == Money("0.25")
    row = sc.describe()
    assert (row["cost"], row["mutating"], row["idempotent"]) == ("0.25 USD", True, True)
    assert set(row["input_schema"]["properties"]) == set(Work.model_fields)


def test_a_cost_function_is_described_as_metered() -> None:
    group = SyscallGroup("t")

    async def work(ctx: CallContext, inp: Work) -> Done:
        """Metered."""
        return Done(text="", run=0)

    group.syscall("t.m", cost=lambda inp: Money(len(inp.text)))(work)
    [sc] = group.syscalls
    assert sc.describe()["cost"] == "metered"
    assert sc.cost_for(Work(text="abc")) == Money(3)


def test_the_table_rejects_duplicates_and_unknown_names() -> None:
    table = builtin_table()
    with pytest.raises(ValueError, match="twice"):
        table.add(table.get("system.noop"))
    with pytest.raises(errors.NotFound):
        table.get("system.nope")
    assert "system.noop" in table and "system.nope" not in table


def test_the_builtin_table_is_sorted_complete_and_describable() -> None:
    table = builtin_table()
    names = [sc.name for sc in table]
    assert names == sorted(names) and len(names) == len(table)
    for expected in ("agents.create", "agents.enroll", "audit.verify", "budget.fund",
                     "keys.sign", "orgs.create", "self.whoami", "tokens.revoke"):
        assert expected in table
    for sc in table:
        row = sc.describe()
        assert row["doc"] and row["capability"]
        assert row["input_schema"]["type"] == "object"


def test_an_empty_table() -> None:
    assert len(SyscallTable()) == 0 and list(SyscallTable()) == []
