"""``underlay up`` (REST + MCP over HTTP) and ``underlay mcp`` (MCP over stdio).

Both open the embedded kernel under ``--home`` in this process and hand it to a
surface: ``underlay.server.app.serve`` or ``underlay.mcp.stdio.run_stdio``. ``up``
prints where it listens and where the admin token file is (never the token), then
serves until Ctrl-C or SIGTERM and shuts down cleanly with exit code 0. Beside the
server, ``up`` runs the fleet reconciler, the retention loops of tasks
(``retention.forever``) and of events and read messages (``comms.retention.forever``),
the merge queue (``MergeQueue.forever``) and its conflict notices
(``ConflictNotices.forever``, unless ``coordination.notices`` is off).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Annotated, Any

import typer
from rich.text import Text

from underlay import errors
from underlay.cli.runtime import JsonOpt, emit_json, err, guard, out, state, wants_json
from underlay.comms import retention as comms_retention
from underlay.config import Config
from underlay.coordination.notices import ConflictNotices
from underlay.coordination.queue import MergeQueue
from underlay.kernel.kernel import Kernel
from underlay.orchestration import retention
from underlay.orchestration.child import WorkerChild
from underlay.orchestration.reconciler import FleetReconciler

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(BaseException):
    """Raised by our signal handler: unwinds ``asyncio.run`` so every ``finally`` runs."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def _surface(module: str, name: str) -> Callable[..., Awaitable[Any]]:
    """A surface entry point, imported late (only these commands need FastAPI / MCP)."""
    try:
        fn: Callable[..., Awaitable[Any]] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise errors.Unavailable(f"{module}.{name} is not available: {exc}") from None
    return fn


def _announce(url: str, kernel: Kernel, as_json: bool) -> None:
    base = url.rstrip("/")
    info = {
        "url": base,
        "rest": f"{base}/v1",
        "mcp": f"{base}/mcp",
        "admin_token_file": str(kernel.config.home / "admin-token"),
        "home": str(kernel.config.home),
    }
    if as_json:  # one line: a supervisor reads it while the server keeps running
        emit_json(info, one_line=True)
        return
    console = out()
    console.print(Text("underlay is up", style="bold green"))
    labels = {"url": "url", "rest": "rest", "mcp": "mcp", "admin_token_file": "admin token"}
    for key, label in {**labels, "home": "home"}.items():
        console.print(Text.assemble((f"  {label:<12}", "cyan"), info[key]), soft_wrap=True)
    hint = f"export UNDERLAY_URL={base} UNDERLAY_TOKEN=$(cat {info['admin_token_file']})"
    console.print(Text(f"  use it: {hint}", style="dim"), soft_wrap=True)
    console.print(Text("Ctrl-C to stop", style="dim"))
    sys.stdout.flush()


async def _up(config: Config, serve: Callable[..., Awaitable[Any]], as_json: bool) -> None:
    kernel = await Kernel.open(config)
    try:
        compute = None
        try:
            compute = await kernel.compute()  # reconciles the last run's sandboxes
        except errors.UnderlayError as exc:
            err().print(Text(f"warning: sandboxes unavailable: {exc.message}", style="yellow"))

        def ready(url: str) -> None:
            _announce(url, kernel, as_json)
            reconciler.api_url = url  # what sandboxed fleet programs reach
            if compute is not None:
                compute.pool.start()  # warm up once listening: a failed bind starts nothing
            if config.orchestration.worker:
                child.start()

        child = WorkerChild(config.home)
        reconciler = FleetReconciler(kernel)
        fleets = asyncio.create_task(reconciler.forever(), name="fleet-reconciler")
        pruner = asyncio.create_task(retention.forever(kernel.db, config), name="retention")
        merges = asyncio.create_task(MergeQueue(kernel).forever(), name="merge-queue")
        comms_pruner = asyncio.create_task(
            comms_retention.forever(kernel.db, config), name="comms-retention"
        )
        loops = [fleets, pruner, merges, comms_pruner]
        if config.coordination.notices:
            every = config.coordination.notice_every_seconds
            notices = ConflictNotices(kernel).forever(every)
            loops.append(asyncio.create_task(notices, name="conflict-notices"))
        try:
            await serve(kernel, config.host, config.port, ready=ready)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await child.stop()
    finally:
        await kernel.close()


def _run_until_signal(main: Awaitable[None]) -> None:
    """Run ``main``; Ctrl-C / SIGTERM unwind it cleanly (the server stops, the kernel closes)."""
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        asyncio.run(main)  # type: ignore[arg-type]
    except Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on; 0 picks a free one [default: 7700].")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the REST API (/v1) and MCP (/mcp) until Ctrl-C or SIGTERM."""
    as_json = wants_json(ctx, json_)
    with guard(as_json):
        serve = _surface("underlay.server.app", "serve")
        config = Config.load(home=state(ctx).home, host=host, port=port)
        _run_until_signal(_up(config, serve, as_json))
    err().print(Text("underlay stopped", style="dim"))


async def _mcp(config: Config, token: str | None, run_stdio: Callable[..., Awaitable[Any]]) -> None:
    kernel = await Kernel.open(config)
    try:
        await run_stdio(kernel, token or kernel.admin_token())  # a bad token fails at once
    finally:
        await kernel.close()


def mcp(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Serve MCP over stdio as UNDERLAY_TOKEN (default: the local admin); logs go to stderr.

    stdout carries only the protocol, so errors are reported on stderr even with --json.
    """
    st = state(ctx)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if st.url:
        err().print(
            Text(
                f"note: `underlay mcp` serves the embedded kernel; ignoring --url {st.url}",
                style="dim",
            )
        )
    with guard(False):
        run_stdio = _surface("underlay.mcp.stdio", "run_stdio")
        config = Config.load(home=st.home)
        _run_until_signal(_mcp(config, st.token, run_stdio))


def worker(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="A queue to serve (repeatable).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run at once.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Run a task worker on this installation's database until Ctrl-C or SIGTERM.

    Workers on many hosts share one PostgreSQL installation (``database_url``); each leases
    tasks, runs their steps durably, heartbeats, and adopts the tasks of dead workers.
    With --json, one line {"worker": id, "queues": [...]} on stdout once it is started.
    """
    from underlay.orchestration.worker import run_worker

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {}
    if queue:
        overrides["queues"] = queue
    if concurrency:
        overrides["concurrency"] = concurrency
    with guard(False):
        config = Config.load(home=state(ctx).home)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:  # a clean stop: leases handed back, DBOS shut down
                loop.add_signal_handler(sig, stop.set)
            await run_worker(config, stop, announce=as_json, **overrides)

        as_json = wants_json(ctx, json_)
        asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("worker")(worker)
    app.command("mcp")(mcp)
