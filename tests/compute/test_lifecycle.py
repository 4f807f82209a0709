"""Every sandbox operation, through the kernel, on real bubblewrap sandboxes."""

from __future__ import annotations

import asyncio
import base64

import pytest
from sqlalchemy import select

from underlay import errors
from underlay.compute import manager
from underlay.kernel.kernel import Kernel
from underlay.sdk.client import AsyncUnderlay
from underlay.storage import schema


async def test_create_run_destroy(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, metadata={"purpose": "test"})
    assert sbx.state == "running" and sbx.metadata == {"purpose": "test"}
    out = await ul.sandbox.commands.run(sbx.id, "python3 -c 'print(6*7)'")
    assert (out.exit_code, out.stdout, out.running) == (0, "42\n", False)
    gone = await ul.sandbox.destroy(sbx.id)
    assert gone.state == "destroyed"
    with pytest.raises(errors.NotFound):
        await ul.sandbox.commands.run(sbx.id, "true")


async def test_stdout_stderr_exit_code_cwd_and_argv(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    out = await ul.sandbox.commands.run(sbx.id, "echo out; echo err >&2; pwd; exit 3")
    assert out.stdout == "out\n/workspace\n" and out.stderr == "err\n" and out.exit_code == 3
    argv = await ul.sandbox.commands.run(sbx.id, ["printf", "%s|", "a b", "c"])
    assert argv.stdout == "a b|c|"
    missing = await ul.sandbox.commands.run(sbx.id, ["no-such-program"])
    assert missing.exit_code == 127 and missing.error


async def test_env_is_only_what_was_given(ul: AsyncUnderlay, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOST_SECRET", "must-not-leak")
    sbx = await ul.sandbox.create(timeout=60, env={"FROM_CREATE": "a"})
    out = await ul.sandbox.commands.run(sbx.id, "env", env={"FROM_RUN": "b"})
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env["FROM_CREATE"] == "a" and env["FROM_RUN"] == "b"
    assert "HOST_SECRET" not in env and "must-not-leak" not in out.stdout
    assert set(env) <= {"FROM_CREATE", "FROM_RUN", "PATH", "HOME", "USER", "PWD", "SHLVL", "_"}
    assert sbx.env_names == ["FROM_CREATE"]


async def test_env_values_never_reach_the_audit_trail(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=60, env={"DB_URL": "postgres://u:hunter2@db/x"})
    await ul.sandbox.commands.run(sbx.id, "true", env={"OTHER": "hunter2-again"})
    page = await ul.audit.tail(limit=10)
    dumped = str([e.detail for e in page.items])
    assert "hunter2" not in dumped
    runs = [e for e in page.items if e.syscall == "sandbox.commands.run"]
    assert runs and runs[0].detail["result"]["program"] == "true"


async def test_stdin_is_passed_and_closed(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    out = await ul.sandbox.commands.run(sbx.id, "wc -c", stdin="12345")
    assert out.stdout.strip() == "5"


async def test_command_timeout_kills_it(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    out = await ul.sandbox.commands.run(sbx.id, "sleep 30", timeout=0.5)
    assert out.timed_out and out.exit_code == 137
    assert out.duration_ms < 5000


async def test_huge_output_is_capped_with_a_marker(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    out = await ul.sandbox.commands.run(
        sbx.id, "head -c 5000000 /dev/zero | tr '\\0' x", max_output_bytes=4096
    )
    assert out.exit_code == 0 and out.stdout_truncated
    assert out.stdout.startswith("x" * 4096) and "output truncated at 4096 bytes" in out.stdout


async def test_background_command_streams_takes_stdin_and_is_killed(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    echo = await ul.sandbox.commands.run(
        sbx.id, "while :; do echo tick; sleep 0.05; done", background=True
    )
    first = await ul.sandbox.commands.output(sbx.id, echo.id, wait=5)
    assert "tick" in first.stdout
    later = await ul.sandbox.commands.output(
        sbx.id, echo.id, stdout_offset=len(first.stdout), wait=5
    )
    assert later.stdout.startswith("tick")
    killed = await ul.sandbox.commands.kill(sbx.id, echo.id)
    done = killed
    while done.running:  # each read returns at new output or at the exit
        seen = len(done.stdout) if done is not killed else 10**9
        done = await ul.sandbox.commands.output(sbx.id, echo.id, stdout_offset=seen, wait=5)
    assert killed.pid and done.exit_code == 137
    with pytest.raises(errors.NotFound):
        await ul.sandbox.commands.output(sbx.id, "cmd_nope")

    cat = await ul.sandbox.commands.run(sbx.id, "tr a-z A-Z", background=True, open_stdin=True)
    await ul.sandbox.commands.stdin(sbx.id, cat.id, data="hello ")
    await ul.sandbox.commands.stdin(sbx.id, cat.id, data="stdin", close=True)
    result = await ul.sandbox.commands.output(sbx.id, cat.id, wait=5)
    while result.running:
        result = await ul.sandbox.commands.output(sbx.id, cat.id, stdout_offset=10**9, wait=5)
    full = await ul.sandbox.commands.output(sbx.id, cat.id)
    assert (full.stdout, full.exit_code) == ("HELLO STDIN", 0)


async def test_files_round_trip_and_are_visible_to_commands(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    await ul.sandbox.files.write(sbx.id, "src/main.py", "print('hi from file')")
    out = await ul.sandbox.commands.run(sbx.id, "python3 src/main.py")
    assert out.stdout == "hi from file\n"
    await ul.sandbox.commands.run(sbx.id, "printf '\\377\\000' > bin.dat")
    blob = await ul.sandbox.files.read(sbx.id, "/workspace/bin.dat")
    assert blob.encoding == "base64" and base64.b64decode(blob.content) == b"\xff\x00"
    listing = await ul.sandbox.files.list(sbx.id, depth=2)
    assert {f.path for f in listing.items} >= {"/workspace/src/main.py", "/workspace/bin.dat"}
    await ul.sandbox.files.remove(sbx.id, "src", recursive=True)
    assert (await ul.sandbox.commands.run(sbx.id, "ls")).stdout == "bin.dat\n"
    # files written through the API belong to the sandbox user
    assert (await ul.sandbox.commands.run(sbx.id, "touch bin.dat && echo ok")).stdout == "ok\n"


async def test_files_api_refuses_symlinks_planted_by_the_sandbox(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    await ul.sandbox.commands.run(sbx.id, "ln -s /etc/shadow s && mkdir d && ln -s / d/root")
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.files.read(sbx.id, "s")
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.files.write(sbx.id, "d/root/tmp/planted", "x")
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.files.read(sbx.id, "../../etc/passwd")


async def test_pause_freezes_and_resume_thaws(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    bg = await ul.sandbox.commands.run(
        sbx.id, "i=0; while :; do i=$((i+1)); echo $i > n; sleep 0.02; done", background=True
    )
    await asyncio.sleep(0.3)
    paused = await ul.sandbox.pause(sbx.id)
    assert paused.state == "paused"
    with pytest.raises(errors.Conflict):
        await ul.sandbox.commands.run(sbx.id, "true")
    m = await ul.sandbox.metrics(sbx.id)
    cpu_before = m.cpu_seconds
    await asyncio.sleep(0.4)
    assert (await ul.sandbox.metrics(sbx.id)).cpu_seconds == cpu_before
    resumed = await ul.sandbox.resume(sbx.id)
    assert resumed.state == "running"
    before = int((await ul.sandbox.commands.run(sbx.id, "cat n")).stdout)
    await asyncio.sleep(0.3)
    assert int((await ul.sandbox.commands.run(sbx.id, "cat n")).stdout) > before
    await ul.sandbox.commands.kill(sbx.id, bg.id)


async def test_timeout_destroys_an_ephemeral_sandbox(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=0.5)
    for _ in range(40):
        if (await ul.sandbox.get(sbx.id)).state == "destroyed":
            break
        await asyncio.sleep(0.1)
    assert (await ul.sandbox.get(sbx.id)).state == "destroyed"


async def test_set_timeout_extends_life(ul: AsyncUnderlay) -> None:
    sbx = await ul.sandbox.create(timeout=0.5)
    longer = await ul.sandbox.set_timeout(sbx.id, 60)
    assert longer.expires_at > sbx.expires_at + 30
    await asyncio.sleep(1.0)
    assert (await ul.sandbox.get(sbx.id)).state == "running"
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.set_timeout(sbx.id, None)


async def test_metrics_report_cpu_and_memory(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    await ul.sandbox.commands.run(
        sbx.id, "python3 -c 'b = bytearray(64 << 20); sum(range(3_000_000))'"
    )
    m = await ul.sandbox.metrics(sbx.id)
    assert m.cpu_seconds > 0.05
    assert m.memory_peak_bytes > 64 << 20
    assert m.uptime_seconds > 0


async def test_bad_input_is_named(ul: AsyncUnderlay) -> None:
    with pytest.raises(errors.NotFound, match="template"):
        await ul.sandbox.create(template="nope")
    with pytest.raises(errors.InvalidInput) as info:
        await ul.sandbox.create(limits={"memory_mb": 1})
    assert "memory_mb" in str(info.value.field or info.value.message)
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.create(timeout=None)
    with pytest.raises(errors.InvalidInput):
        await ul.sandbox.create(env={"BAD NAME": "x"})


async def test_agents_use_only_their_own_sandboxes(ul: AsyncUnderlay) -> None:
    a = await ul.agents.create("a", capabilities=["sandbox.*"])
    b = await ul.agents.create("b", capabilities=["sandbox.*"])
    ua, ub = await ul.as_agent(a), await ul.as_agent(b)
    sbx = await ua.sandbox.create(timeout=60)
    with pytest.raises(errors.PermissionDenied):
        await ub.sandbox.commands.run(sbx.id, "true")
    assert [s.id for s in (await ub.sandbox.list()).items] == []
    assert [s.id for s in (await ua.sandbox.list()).items] == [sbx.id]
    assert sbx.id in [s.id for s in (await ul.sandbox.list()).items]


async def test_usage_is_metered_into_the_ledger(ul: AsyncUnderlay, kernel: Kernel) -> None:
    agent = await ul.agents.create("metered", capabilities=["sandbox.*"], budget="1.00 USD")
    ua = await ul.as_agent(agent)
    sbx = await ua.sandbox.create(timeout=60)
    await ua.sandbox.commands.run(sbx.id, "python3 -c 'sum(range(2_000_000))'")
    await asyncio.sleep(0.5)
    await ua.sandbox.destroy(sbx.id)
    xfers = (await ua.budget.transfers()).items
    meters = [t for t in xfers if t.id.startswith(f"meter:{sbx.id}:")]
    assert meters and all(t.memo.startswith(f"sandbox {sbx.id}") for t in meters)
    bal = await ua.budget.balance()
    assert bal.available.amount < 1


async def test_out_of_budget_stops_the_sandbox(ul: AsyncUnderlay) -> None:
    agent = await ul.agents.create("poor", capabilities=["sandbox.*"], budget="0.000001 USD")
    ua = await ul.as_agent(agent)
    sbx = await ua.sandbox.create(timeout=60)
    for _ in range(50):
        if (await ua.sandbox.get(sbx.id)).state == "destroyed":
            break
        await asyncio.sleep(0.1)
    assert (await ua.sandbox.get(sbx.id)).state == "destroyed"


@pytest.mark.parametrize("compute_settings", [{"pool_size": 2, "meter_every_seconds": 5}])
async def test_warm_pool_hands_out_and_refills(ul: AsyncUnderlay, kernel: Kernel) -> None:
    m = await kernel.compute()
    await m.pool.wait_full()
    warm_ids = {i.id for i in m.pool.ready}
    sbx = await ul.sandbox.create()
    assert sbx.id in warm_ids and m.pool.handed_out == 1
    assert (await ul.sandbox.commands.run(sbx.id, "echo warm")).stdout == "warm\n"
    custom = await ul.sandbox.create(limits={"memory_mb": 128})
    assert custom.id not in warm_ids
    await m.pool.wait_full()
    assert len(m.pool.ready) == 2


@pytest.mark.parametrize("compute_settings", [{"pool_size": 1, "meter_every_seconds": 5}])
async def test_closing_the_pool_as_it_is_woken_stops_it(kernel: Kernel) -> None:
    """A refill's wake-up landing as close() cancels the filler. On Python 3.11 an
    ``asyncio.wait_for`` there can swallow the cancellation (it returns the wake-up
    instead), and close() then waited forever: the filler now also stops on a flag."""
    m = await kernel.compute()
    await m.pool.wait_full()
    await asyncio.sleep(0.05)  # the filler waits for a wake-up
    m.pool._wake.set()
    await asyncio.sleep(0)  # the wake-up is delivered, the filler not yet resumed
    async with asyncio.timeout(20):
        await m.pool.close()
    assert m.pool.ready == [] and m.pool._filler is not None and m.pool._filler.done()


async def test_files_watch_reports_changes_since_a_cursor(ul: AsyncUnderlay, sbx) -> None:  # type: ignore[no-untyped-def]
    await ul.sandbox.files.write(sbx.id, "keep.txt", "1")
    await ul.sandbox.files.write(sbx.id, "gone.txt", "1")
    start = await ul.sandbox.files.watch(sbx.id)
    assert start.events == [] and start.cursor
    await ul.sandbox.commands.run(
        sbx.id, "(sleep 0.3; mkdir d; echo new > d/new.txt; echo 22 > keep.txt; rm gone.txt) &"
    )
    seen = await ul.sandbox.files.watch(sbx.id, since=start.cursor, wait=5)
    while len(seen.events) < 4:  # changes may land in more than one poll
        more = await ul.sandbox.files.watch(sbx.id, since=start.cursor, wait=2)
        if more.events == seen.events:
            break
        seen = more
    got = {(e.path, e.type) for e in seen.events}
    assert got == {
        ("/workspace/d", "created"),
        ("/workspace/d/new.txt", "created"),
        ("/workspace/keep.txt", "modified"),
        ("/workspace/gone.txt", "removed"),
    }
    quiet = await ul.sandbox.files.watch(sbx.id, since=seen.cursor, wait=0.3)
    assert quiet.events == []
    with pytest.raises(errors.NotFound):
        await ul.sandbox.files.watch(sbx.id, since="watch_nope")


@pytest.mark.parametrize("compute_settings", [{"pool_size": 1, "meter_every_seconds": 5}])
@pytest.mark.parametrize("warm", [True, False], ids=["hand-out", "cold"])
async def test_a_create_whose_record_cannot_be_written_leaves_nothing(
    ul: AsyncUnderlay, kernel: Kernel, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    """The record is written with the create's audit event; when that fails, the
    sandbox (warm or cold) is destroyed, its uid released, and nothing is recorded."""
    m = await kernel.compute()
    await m.pool.wait_full()
    [pooled] = m.pool.ready

    def refuse(row: object, conn: object) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(manager, "_insert_record", refuse)
    shape = {} if warm else {"limits": {"memory_mb": 128}}
    with pytest.raises(errors.InternalError, match=r"sandbox\.create"):
        await ul.sandbox.create(**shape)
    monkeypatch.undo()
    assert m.instances == {} and m.pool.handed_out == (1 if warm else 0)
    await m.pool.wait_full()
    alive = {i.spec.uid for i in m.pool.ready}
    claims = {int(p.name) for p in m.uids.dir.iterdir() if p.read_text().startswith(m.uids.owner)}
    assert claims == alive  # the failed sandbox's uid was released
    on_disk = {p.name for p in (m.driver.dir / "sandboxes").iterdir()}  # type: ignore[attr-defined]
    assert on_disk == {i.id for i in m.pool.ready}
    if warm:
        assert pooled.id not in on_disk  # the handed-out sandbox did not go back
    created = schema.audit_events.c.syscall == "sandbox.create"
    async with kernel.db.read() as conn:
        recorded = (await conn.execute(select(schema.sandboxes.c.id))).scalars().all()
        outcomes = await conn.execute(select(schema.audit_events.c.outcome).where(created))
        outcomes = outcomes.scalars().all()
    assert recorded == [] and "ok" not in outcomes
    sbx = await ul.sandbox.create(**shape)  # and the next create works
    assert (await ul.sandbox.commands.run(sbx.id, "echo ok")).stdout == "ok\n"


async def test_a_create_cancelled_while_it_starts_leaves_nothing(
    ul: AsyncUnderlay, kernel: Kernel
) -> None:
    """The caller goes away mid-start: the start and the record's write go on, and what
    they made is undone once they are done (no instance, no live record, no uid)."""
    m = await kernel.compute()
    started = asyncio.Event()
    start = m._start

    async def noticed_start(*args: object) -> object:
        started.set()
        return await start(*args)  # type: ignore[arg-type]

    m._start = noticed_start  # type: ignore[method-assign]
    call = asyncio.create_task(ul.sandbox.create(limits={"memory_mb": 128}))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def states() -> set[str]:
        async with kernel.db.read() as conn:
            return set((await conn.execute(select(schema.sandboxes.c.state))).scalars())

    for _ in range(250):  # the start finishes by itself, then is undone
        if await states() == {"destroyed"} and not m._aborts:
            break
        await asyncio.sleep(0.02)
    assert await states() == {"destroyed"} and m.instances == {} and not m._aborts
    assert [p for p in m.uids.dir.iterdir() if p.read_text().startswith(m.uids.owner)] == []
