"""``underlay budget``: balances, funding, grants and the transfer history."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from underlay.cli import render
from underlay.cli.runtime import IdemOpt, JsonOpt, collect_pages, execute
from underlay.sdk.client import AsyncUnderlay

app = typer.Typer(
    help="Budgets: balances, funding and grants between agents.", no_args_is_help=True
)

Memo = Annotated[str, typer.Option(help="A note kept with the transfer.")]
TransferId = Annotated[
    str | None, typer.Option(help="Client-chosen transfer id (a repeat is not applied twice).")
]


@app.command("balance")
def balance(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option(help="Agent id or name (default: the caller).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """What an account has: posted, held (pending) and available."""

    async def action(ul: AsyncUnderlay) -> Any:
        return await ul.budget.balance(agent=agent)

    def show(bal: Any, console: Console) -> None:
        console.print(render.fields(bal, only=("owner", "available", "posted", "pending")))

    execute(ctx, action, show, json_=json_, label="reading balance")


def _move(
    ctx: typer.Context,
    syscall: str,
    agent: str,
    amount: str,
    memo: str,
    transfer_id: str | None,
    idempotency_key: str | None,
    json_: bool,
) -> None:
    async def action(ul: AsyncUnderlay) -> Any:
        fields: dict[str, Any] = {"to": agent, "amount": amount, "memo": memo}
        if transfer_id:
            fields["transfer_id"] = transfer_id
        return await ul.call(syscall, idempotency_key=idempotency_key, **fields)

    def show(xfer: Any, console: Console) -> None:
        verb = "funded" if syscall == "budget.fund" else "granted"
        console.print(Text(f"{verb} {xfer.amount} to {agent} (transfer {xfer.id})", style="green"))

    execute(ctx, action, show, json_=json_, label="moving budget")


@app.command("fund")
def fund(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent id or name.")],
    amount: Annotated[list[str], typer.Argument(help="e.g. '5.00 USD' or 5.00 USD.")],
    memo: Memo = "",
    transfer_id: TransferId = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Move budget from the org's account to an agent."""
    _move(ctx, "budget.fund", agent, " ".join(amount), memo, transfer_id, idempotency_key, json_)


@app.command("grant")
def grant(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent id or name.")],
    amount: Annotated[list[str], typer.Argument(help="e.g. '1.00 USD' or 1.00 USD.")],
    memo: Memo = "",
    transfer_id: TransferId = None,
    idempotency_key: IdemOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Give part of the caller's own budget to another agent (run it with the agent's token)."""
    _move(ctx, "budget.grant", agent, " ".join(amount), memo, transfer_id, idempotency_key, json_)


@app.command("transfers")
def transfers(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option(help="Agent id or name (default: the caller).")
    ] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Fetch every page.")] = False,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Transfers in and out of an account, oldest first."""

    async def page(ul: AsyncUnderlay, after: Any) -> Any:
        return await ul.budget.transfers(agent=agent, cursor=after, limit=limit)

    def show(result: Any, console: Console) -> None:
        console.print(
            render.table(
                result.items,
                (
                    "id",
                    "kind",
                    "amount",
                    "debit_account_id",
                    "credit_account_id",
                    "memo",
                    "created_at",
                ),
                headers=("id", "kind", "amount", "from", "to", "memo", "when"),
            )
        )
        render.more_hint(console, result.next_cursor)

    execute(ctx, collect_pages(page, all_pages), show, json_=json_, label="listing transfers")
