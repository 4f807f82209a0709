"""The ``sandbox.*`` syscalls: E2B-shaped sandboxes through the kernel.

File operations run in worker threads: a sandbox controls what they touch, so none of
them may ever hold the event loop that serves every other caller.

Every call is authorized (``sandbox.create``, ``sandbox.commands.run`` ...), and every
mutating one is audited, so each command run leaves an audit event (its argv[0] and a
digest of the line; environment values are secrets and never recorded). An agent uses
only its own sandboxes unless it holds ``compute.admin``; admins see the whole org's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import shlex
import signal
from typing import Any

from sqlalchemy import select

from underlay import errors
from underlay.compute import files as fileops
from underlay.compute.commands import CommandRun
from underlay.compute.manager import S, sandbox_model
from underlay.compute.models import (
    CommandRef,
    CommandResult,
    CreateSandbox,
    FileContent,
    FileEvents,
    FileList,
    FilePath,
    ForkSnapshot,
    KillCommand,
    ListFiles,
    ListSandboxes,
    Metrics,
    ReadOutput,
    RemoveFile,
    RestoreSnapshot,
    RunCommand,
    Sandbox,
    SandboxPage,
    SandboxRef,
    SendStdin,
    SetTimeout,
    Snapshot,
    SnapshotRef,
    WatchFiles,
    WriteFile,
)
from underlay.kernel.context import CallContext
from underlay.kernel.policy import FailurePolicy, RetryPolicy
from underlay.kernel.syscall import SyscallGroup
from underlay.tools import vault
from underlay.types import Empty

group = SyscallGroup("compute")

UNBOUNDED = FailurePolicy(timeout_seconds=None)  # the command's own timeout bounds it
SLOW = FailurePolicy(timeout_seconds=600)
START = FailurePolicy(timeout_seconds=120, retry=RetryPolicy(max_attempts=2))


async def _row(ctx: CallContext, sid: str, *, live: bool = True) -> Any:
    return await (await ctx.kernel.compute()).row(ctx.principal, sid, live=live)


def _audit_secrets(ctx: CallContext, secrets: dict[str, str]) -> None:
    """Which vault secrets a call used: names only, a value is never recorded."""
    if secrets:
        ctx.audit.update(secrets=sorted(set(secrets.values())))


@group.syscall("sandbox.create", mutating=True, policy=START, backend="bwrap")
async def create(ctx: CallContext, inp: CreateSandbox) -> Sandbox:
    """Start a sandbox (from the warm pool when its shape allows) and return it."""
    sbx = await (await ctx.kernel.compute()).create(ctx.principal, inp, ctx.commit_with_audit)
    ctx.audit.update(sandbox=sbx.id)
    _audit_secrets(ctx, inp.secrets)
    return sbx


@group.syscall("sandbox.get", capability="sandbox.read")
async def get(ctx: CallContext, inp: SandboxRef) -> Sandbox:
    """One sandbox by id (also a destroyed one)."""
    return sandbox_model(await _row(ctx, inp.sandbox, live=False))


@group.syscall("sandbox.list", capability="sandbox.read")
async def list_(ctx: CallContext, inp: ListSandboxes) -> SandboxPage:
    """The caller's sandboxes (an admin's: the org's), newest first, by cursor."""
    p = ctx.principal
    q = select(S).where(S.c.org_id == ctx.org_id).order_by(S.c.id.desc()).limit(inp.limit + 1)
    if p.kind != "human" and not p.allows("compute.admin"):
        q = q.where(S.c.owner_kind == p.kind, S.c.owner_id == p.id)
    if inp.state:
        q = q.where(S.c.state == inp.state)
    if inp.cursor:
        q = q.where(S.c.id < inp.cursor)
    async with ctx.db.read() as conn:
        rows = (await conn.execute(q)).all()
    items = [sandbox_model(r) for r in rows[: inp.limit]]
    return SandboxPage(items=items, next_cursor=items[-1].id if len(rows) > inp.limit else None)


@group.syscall("sandbox.destroy", mutating=True)
async def destroy(ctx: CallContext, inp: SandboxRef) -> Sandbox:
    """Kill every process of the sandbox and delete its files."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    await m.end(row, destroy=True)
    return sandbox_model(row).model_copy(update={"state": "destroyed"})


@group.syscall("sandbox.pause", mutating=True)
async def pause(ctx: CallContext, inp: SandboxRef) -> Sandbox:
    """Freeze every process of the sandbox; its timeout keeps running."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    if row.state == "running":
        await m.driver.pause(await m.instance(row))
        await m._set(row.id, state="paused")
    return sandbox_model(await _row(ctx, inp.sandbox))


@group.syscall("sandbox.resume", mutating=True)
async def resume(ctx: CallContext, inp: SandboxRef) -> Sandbox:
    """Thaw a paused sandbox (or start a stopped persistent one again)."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    inst = m.instances.get(row.id)
    if row.state == "paused" and inst is not None:
        await m.driver.resume(inst)
        await m._set(row.id, state="running")
    elif row.state in ("paused", "stopped"):
        await m._set(row.id, state="stopped")
        await m.instance(await m.row(ctx.principal, inp.sandbox))
    return sandbox_model(await _row(ctx, inp.sandbox))


@group.syscall("sandbox.set_timeout", mutating=True)
async def set_timeout(ctx: CallContext, inp: SetTimeout) -> Sandbox:
    """Move the sandbox's end to ``timeout`` seconds from now (null: none, persistent only)."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    if inp.timeout is None and not row.persistent:
        raise errors.InvalidInput("only a persistent sandbox may have no timeout", field="timeout")
    await m._set(row.id, expires_at=ctx.now() + inp.timeout if inp.timeout else None)
    return sandbox_model(await _row(ctx, inp.sandbox))


@group.syscall("sandbox.metrics", capability="sandbox.read")
async def metrics(ctx: CallContext, inp: SandboxRef) -> Metrics:
    """CPU-seconds, memory (now and peak), disk used, processes, uptime."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    inst = m.instances.get(row.id)
    if inst is None:
        raise errors.Conflict(f"sandbox {row.id} is {row.state}", field="sandbox")
    u = m.driver.usage(inst)
    return Metrics(
        sandbox=row.id,
        cpu_seconds=u.cpu_seconds,
        memory_bytes=u.memory_bytes,
        memory_peak_bytes=u.memory_peak_bytes,
        disk_used_bytes=u.disk_used_bytes,
        uptime_seconds=ctx.now() - row.created_at,
        pids=u.pids,
    )


# -- commands --------------------------------------------------------------------------


@group.syscall("sandbox.commands.run", mutating=True, policy=UNBOUNDED, backend="bwrap")
async def run(ctx: CallContext, inp: RunCommand) -> CommandResult:
    """Run a command; wait for it, or (``background``) return at once with its id."""
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    granted = await vault.resolve(ctx.db, ctx.kernel.sealer, ctx.principal, inp.secrets)
    inst = await m.instance(row)
    argv = ["/bin/sh", "-c", inp.cmd] if isinstance(inp.cmd, str) else inp.cmd
    _audit_secrets(ctx, inp.secrets)
    env = m.command_env(row) | {k: v.get_secret_value() for k, v in inp.env.items()} | granted
    line = inp.cmd if isinstance(inp.cmd, str) else shlex.join(inp.cmd)
    ctx.audit.update(
        sandbox=row.id,
        program=(inp.cmd.split() or [""])[0] if isinstance(inp.cmd, str) else inp.cmd[0],
        line_sha256=hashlib.sha256(line.encode()).hexdigest(),
    )
    piped = inp.stdin is not None or inp.open_stdin
    proc = await inst.supervisor.start(argv, env=env, cwd=inp.cwd, stdin=piped)
    cmd = CommandRun(row.id, proc, timeout=inp.timeout, max_output=inp.max_output_bytes)
    m.commands.setdefault(row.id, {})[cmd.id] = cmd
    if inp.stdin:
        await proc.write_stdin(inp.stdin.encode())
    if piped and not inp.open_stdin:
        await proc.close_stdin()
    ctx.audit.update(command=cmd.id)
    if inp.background:
        return cmd.result()
    result = await cmd.wait()
    m.commands[row.id].pop(cmd.id, None)
    ctx.audit.update(exit_code=result.exit_code, timed_out=result.timed_out)
    return result


async def _command(ctx: CallContext, inp: CommandRef) -> CommandRun:
    m = await ctx.kernel.compute()
    row = await m.row(ctx.principal, inp.sandbox)
    cmd = m.commands.get(row.id, {}).get(inp.command)
    if cmd is None:
        raise errors.NotFound(f"no background command {inp.command!r}", field="command")
    return cmd


@group.syscall(
    "sandbox.commands.output", capability="sandbox.commands.run", policy=SLOW, backend="bwrap"
)
async def output(ctx: CallContext, inp: ReadOutput) -> CommandResult:
    """A background command's output past the given offsets (waits up to ``wait`` s)."""
    cmd = await _command(ctx, inp)
    return await cmd.read(inp.stdout_offset, inp.stderr_offset, inp.wait)


@group.syscall("sandbox.commands.stdin", capability="sandbox.commands.run", mutating=True)
async def stdin(ctx: CallContext, inp: SendStdin) -> CommandResult:
    """Write to a background command's stdin (``close`` ends it)."""
    cmd = await _command(ctx, inp)
    if inp.data:
        await cmd.process.write_stdin(inp.data.encode())
    if inp.close:
        await cmd.process.close_stdin()
    return cmd.result(len(cmd.stdout.data), len(cmd.stderr.data))


@group.syscall("sandbox.commands.kill", capability="sandbox.commands.run", mutating=True)
async def kill(ctx: CallContext, inp: KillCommand) -> CommandResult:
    """Send a signal (default SIGKILL) to a background command's process group."""
    cmd = await _command(ctx, inp)
    await cmd.process.kill(signal.Signals(inp.signal))
    return cmd.result(len(cmd.stdout.data), len(cmd.stderr.data))


# -- files ------------------------------------------------------------------------------


async def _files(ctx: CallContext, sid: str) -> fileops.WorkspaceFiles:
    m = await ctx.kernel.compute()
    return (await m.instance(await m.row(ctx.principal, sid))).files


@group.syscall("sandbox.files.read", capability="sandbox.files.read")
async def read(ctx: CallContext, inp: FilePath) -> FileContent:
    """A file's content: text when it is UTF-8, else base64."""
    data, path = await asyncio.to_thread((await _files(ctx, inp.sandbox)).read, inp.path)
    content, encoding = fileops.encode(data)
    return FileContent(path=path, content=content, encoding=encoding, size=len(data))


@group.syscall("sandbox.files.write", capability="sandbox.files.write", mutating=True)
async def write(ctx: CallContext, inp: WriteFile) -> FileContent:
    """Write a file (parents created), durable on return; returns its path and size."""
    if inp.encoding == "base64":
        try:
            data = base64.b64decode(inp.content, validate=True)
        except binascii.Error as exc:
            raise errors.InvalidInput("content is not valid base64", field="content") from exc
    else:
        data = inp.content.encode()
    files = await _files(ctx, inp.sandbox)
    path = await asyncio.to_thread(files.write, inp.path, data, inp.mode)
    ctx.audit.update(sandbox=inp.sandbox, path=path, size=len(data))
    return FileContent(path=path, content="", encoding=inp.encoding, size=len(data))


@group.syscall("sandbox.files.list", capability="sandbox.files.read")
async def list_files(ctx: CallContext, inp: ListFiles) -> FileList:
    """Entries under a directory, ``depth`` levels deep; symlinks are listed, not followed."""
    files = await _files(ctx, inp.sandbox)
    return FileList(items=await asyncio.to_thread(files.list, inp.path, inp.depth))


@group.syscall("sandbox.files.watch", capability="sandbox.files.read", policy=SLOW)
async def watch(ctx: CallContext, inp: WatchFiles) -> FileEvents:
    """Paths created, modified or removed under ``path`` since ``since`` (waits ``wait`` s)."""
    m = await ctx.kernel.compute()
    files = await _files(ctx, inp.sandbox)
    return await m.watches.watch(inp.sandbox, files, inp.path, inp.since, inp.wait)


@group.syscall("sandbox.files.remove", capability="sandbox.files.write", mutating=True)
async def remove(ctx: CallContext, inp: RemoveFile) -> Empty:
    """Remove a file, or a directory with ``recursive``."""
    files = await _files(ctx, inp.sandbox)
    await asyncio.to_thread(files.remove, inp.path, inp.recursive)
    ctx.audit.update(sandbox=inp.sandbox, path=inp.path)
    return Empty()


# -- snapshots ---------------------------------------------------------------------------


@group.syscall("sandbox.snapshot", mutating=True, policy=SLOW, backend="bwrap")
async def snapshot(ctx: CallContext, inp: SandboxRef) -> Snapshot:
    """Copy the sandbox's files at one instant (it is frozen meanwhile)."""
    m = await ctx.kernel.compute()
    snap = await m.snapshots.take(ctx.principal, await m.row(ctx.principal, inp.sandbox))
    ctx.audit.update(snapshot=snap.id)
    return snap


@group.syscall("sandbox.restore", mutating=True, policy=SLOW, backend="bwrap")
async def restore(ctx: CallContext, inp: RestoreSnapshot) -> Sandbox:
    """Put a snapshot's files back into a sandbox; its running commands are killed."""
    m = await ctx.kernel.compute()
    await m.snapshots.restore(ctx.principal, await m.row(ctx.principal, inp.sandbox), inp.snapshot)
    return sandbox_model(await _row(ctx, inp.sandbox))


@group.syscall(
    "sandbox.fork", capability="sandbox.create", mutating=True, policy=SLOW, backend="bwrap"
)
async def fork(ctx: CallContext, inp: ForkSnapshot) -> Sandbox:
    """Start a new sandbox from a snapshot's files (same template and limits)."""
    m = await ctx.kernel.compute()
    sbx = await m.snapshots.fork(
        ctx.principal,
        inp.snapshot,
        timeout=inp.timeout,
        persistent=inp.persistent,
        metadata=inp.metadata,
    )
    ctx.audit.update(sandbox=sbx.id, snapshot=inp.snapshot)
    return sbx


@group.syscall("sandbox.snapshot_delete", capability="sandbox.snapshot", mutating=True)
async def snapshot_delete(ctx: CallContext, inp: SnapshotRef) -> Empty:
    """Delete a snapshot and its files."""
    await (await ctx.kernel.compute()).snapshots.delete(ctx.principal, inp.snapshot)
    return Empty()
