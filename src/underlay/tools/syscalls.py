"""The ``vault.*`` syscalls: an organisation's secrets, stored sealed, never shown again.

A secret is used by naming it in ``secrets`` of ``sandbox.create`` or
``sandbox.commands.run``: its value becomes an environment variable of the sandbox or
command, and only if the caller may use it (see ``tools/vault.py``)."""

from __future__ import annotations

from underlay.identity import service as identity
from underlay.kernel.context import CallContext
from underlay.kernel.syscall import SyscallGroup
from underlay.tools import vault
from underlay.tools.models import Grant, PutSecret, SecretInfo, SecretList, SecretRef
from underlay.types import Empty

group = SyscallGroup("tools")


@group.syscall("vault.put", capability="vault.write", mutating=True)
async def put(ctx: CallContext, inp: PutSecret) -> SecretInfo:
    """Store a secret (or a new version of one); its value is never shown again."""
    made = await vault.put(ctx.db, ctx.kernel.sealer, ctx.org_id, ctx.principal.id, inp, ctx.now())
    ctx.audit.update(secret=made.name, version=made.version)
    return made


@group.syscall("vault.list", capability="vault.read")
async def list_secrets(ctx: CallContext, inp: Empty) -> SecretList:
    """The organisation's secrets: names, descriptions, versions and grants, no values."""
    async with ctx.db.read() as conn:
        return SecretList(items=await vault.listing(conn, ctx.org_id))


@group.syscall("vault.delete", capability="vault.write", mutating=True)
async def delete(ctx: CallContext, inp: SecretRef) -> Empty:
    """Delete a secret and its grants (sandboxes already given it keep their copy)."""
    await vault.remove(ctx.db, ctx.org_id, inp.name)
    return Empty()


@group.syscall("vault.grant", capability="vault.write", mutating=True)
async def grant(ctx: CallContext, inp: Grant) -> SecretInfo:
    """Let an agent use a secret in its sandboxes and commands."""
    async with ctx.db.read() as conn:
        agent = (await identity.find_agent(conn, ctx.org_id, inp.agent)).id
    await vault.grant(ctx.db, ctx.org_id, inp.name, agent, ctx.principal.id, ctx.now())
    ctx.audit.update(secret=inp.name, agent=agent)
    async with ctx.db.read() as conn:
        return await vault.info(conn, ctx.org_id, inp.name)


@group.syscall("vault.revoke", capability="vault.write", mutating=True)
async def revoke(ctx: CallContext, inp: Grant) -> SecretInfo:
    """Stop an agent's use of a secret from its next sandbox or command on."""
    async with ctx.db.read() as conn:
        agent = (await identity.find_agent(conn, ctx.org_id, inp.agent)).id
    await vault.revoke(ctx.db, ctx.org_id, inp.name, agent)
    ctx.audit.update(secret=inp.name, agent=agent)
    async with ctx.db.read() as conn:
        return await vault.info(conn, ctx.org_id, inp.name)
