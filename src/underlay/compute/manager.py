"""The live sandboxes of one host: records, instances, timeouts, the warm pool.

``ComputeManager`` is the state behind the ``sandbox.*`` syscalls. A sandbox's record
(a ``sandboxes`` row) is written before its instance is handed out and marked
``destroyed`` before its files are deleted, so a crash never leaves a running sandbox
without a record. On start the manager reconciles: ephemeral sandboxes of a previous
run are destroyed (their processes died with it); persistent ones are ``stopped`` and
start again, files intact, on their next use.

Usage is metered into the ledger by ``metering.Meter``; records of sandboxes with an
instance on this host are kept in memory, since only this host changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from underlay import errors
from underlay.compute.commands import CommandRun
from underlay.compute.egress import PROXY_PORT, EgressProxy, Reporter
from underlay.compute.interface import Instance, InstanceSpec, SandboxDriver
from underlay.compute.metering import Meter
from underlay.compute.models import CreateSandbox, Limits, Network, Sandbox
from underlay.compute.pool import WarmPool
from underlay.compute.snapshots import Snapshots
from underlay.compute.uids import UidRegistry
from underlay.compute.watch import Watches
from underlay.config import ComputeConfig
from underlay.storage import schema
from underlay.storage.rows import in_org
from underlay.tools import vault
from underlay.types import new_id

if TYPE_CHECKING:
    from underlay.kernel.context import Committer, Principal
    from underlay.kernel.kernel import Kernel

log = logging.getLogger("underlay.compute")
S = schema.sandboxes
_INSERT = S.insert()  # built once, with the record as parameters: compiled once
LIVE_STATES = ("running", "paused")


class ComputeManager:
    def __init__(self, kernel: Kernel, driver: SandboxDriver, config: ComputeConfig) -> None:
        self.kernel = kernel
        self.driver = driver
        self.config = config
        self.instances: dict[str, Instance] = {}
        self._cache: dict[str, SimpleNamespace] = {}  # records of this host's instances
        self.proxies: dict[str, EgressProxy] = {}
        self.meter = Meter(self)
        self.commands: dict[str, dict[str, CommandRun]] = {}
        runtime = getattr(driver, "dir", kernel.config.home / "compute")
        registry = Path(config.uid_registry) if os.geteuid() == 0 else Path(runtime) / "uids"
        self.uids = UidRegistry(registry, config.uid_base, owner=str(Path(runtime).resolve()))
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._aborts: set[asyncio.Future[None]] = set()  # undoing creates whose caller left
        self.pool = WarmPool(self, config.pool_size, config.pool_template)
        driver.keep_launchers(config.launchers)
        self.driver_home = kernel.config.home / "compute"  # snapshots: the host's only
        self.snapshots = Snapshots(self)
        self.watches = Watches()

    # -- lifecycle of the manager -------------------------------------------------

    async def start(self) -> None:
        """Reconcile records left by a previous run, then start the background loops."""
        async with self.kernel.db.write() as conn:
            rows = (await conn.execute(select(S).where(S.c.state.in_(LIVE_STATES)))).all()
            for r in rows:
                if r.persistent:
                    await conn.execute(update(S).where(S.c.id == r.id).values(state="stopped"))
                else:
                    await conn.execute(
                        update(S)
                        .where(S.c.id == r.id)
                        .values(state="destroyed", destroyed_at=self.kernel.clock.now())
                    )
        for r in rows:
            if not r.persistent:
                await self.driver.purge(self._spec_of(r))
        async with self.kernel.db.read() as conn:
            kept = await conn.execute(select(S.c.host_uid).where(S.c.state != "destroyed"))
            self.uids.reconcile(set(kept.scalars()))
        self._tasks = [
            asyncio.create_task(self._expire_loop()),
            asyncio.create_task(self.meter.loop()),
        ]

    async def close(self) -> None:
        """Stop every instance: ephemeral ones are destroyed, persistent ones stopped."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._aborts, return_exceptions=True)
        await self.pool.close()
        for sid in list(self.instances):
            await self.end(
                await self._row_any(sid), destroy=not self.instances[sid].spec.persistent
            )

    # -- records -------------------------------------------------------------------

    def allocate_uid(self, sandbox: str) -> int:
        return self.uids.claim(sandbox)

    def release_uid(self, uid: int) -> None:
        self.uids.release(uid)

    def spec(self, sid: str, inp: CreateSandbox, uid: int) -> InstanceSpec:
        egress = inp.network is not None
        return InstanceSpec(sid, inp.template, inp.limits, inp.persistent, uid, uid, egress)

    def _spec_of(self, row: Any) -> InstanceSpec:
        limits = Limits(**row.limits)
        return InstanceSpec(
            row.id, row.template, limits, row.persistent, row.host_uid, row.host_uid,
            egress=row.network is not None,
        )  # fmt: skip

    async def _start(self, spec: InstanceSpec, network: Network | None) -> Instance:
        """Start an instance; with ``network``, its egress proxy first, then ulfwd in it."""
        if network is None:
            return await self.driver.start(spec)
        proxy = EgressProxy(
            self.driver.egress_socket(spec), network.allow, self._egress_reporter(spec.id), spec.uid
        )
        await proxy.start()
        try:
            inst = await self.driver.start(spec)
        except BaseException:
            await proxy.close()
            raise
        self.proxies[spec.id] = proxy
        await inst.supervisor.start(
            ["/.ul/fwd", str(PROXY_PORT), "/.ul/egress.sock"], env={}, cwd="/"
        )
        return inst

    def _egress_reporter(self, sid: str) -> Reporter:
        async def report(event: dict[str, Any]) -> None:
            row = await self._row_any(sid)
            outcome = "ok" if event.get("allowed") else "denied"
            try:
                await self.kernel.record(
                    row.org_id, (row.owner_kind, row.owner_id), "sandbox.egress", outcome,
                    {"sandbox": sid, **event},
                )  # fmt: skip
            except Exception:  # the audit write failing must not break the proxy
                log.exception("recording egress of sandbox %s failed", sid)

        return report

    def command_env(self, row: Any) -> dict[str, str]:
        """Variables every command of ``row`` gets: defaults, the proxy, the sandbox's env."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace", "USER": "user"}
        if row.network is not None:
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            env |= {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy,
                    "https_proxy": proxy}  # fmt: skip
        return env | self.env_of(row)

    async def create(
        self, principal: Principal, inp: CreateSandbox, commit: Committer | None = None
    ) -> Sandbox:
        """Start a sandbox (a warm one when the pool has its shape) and write its record.

        A warm hand-out with ``commit`` (a call's ``CallContext.commit_with_audit``) has its
        record written with the call's audit event, one commit for both, and is registered
        once that committed; otherwise the record is written while the sandbox starts.
        Either way the caller gets the sandbox only after its record is durable, and a
        failed start or write leaves no instance, record or uid behind.
        """
        if inp.timeout is None and not inp.persistent:
            raise errors.InvalidInput(
                "only a persistent sandbox may have no timeout", field="timeout"
            )
        if inp.template not in self.driver.templates():
            known = ", ".join(self.driver.templates())
            raise errors.NotFound(
                f"no template {inp.template!r} (known: {known})", field="template"
            )
        if len(self.instances) >= self.config.max_sandboxes:
            raise errors.LimitExceeded(
                f"this host runs at most {self.config.max_sandboxes} sandboxes", field="sandbox"
            )
        granted = await vault.resolve(self.kernel.db, self.kernel.sealer, principal, inp.secrets)
        warm = self.pool.take(inp)
        sid = warm.id if warm else new_id("sbx")
        uid = warm.spec.uid if warm else self.allocate_uid(sid)
        row = self._new_record(principal, inp, sid, uid, granted)
        insert = functools.partial(_insert_record, row)

        def register(started: Instance) -> None:
            self.instances[sid] = started
            self._remember(row)
            self.pool.refill()

        if warm is not None and commit is not None:
            # a hand-out is ready at once: its record goes with the call's audit event
            undo = functools.partial(self._abort_create, row, warm)
            commit(insert, then=functools.partial(register, warm), undo=undo)
            return sandbox_model(row)
        # a start takes milliseconds: the record is written meanwhile
        both = asyncio.ensure_future(asyncio.gather(
            _ready(warm) if warm else self._start(self.spec(sid, inp, uid), inp.network),
            self.kernel.db.run_write(insert),
            return_exceptions=True,
        ))  # fmt: skip
        try:
            started, written = await asyncio.shield(both)
        except asyncio.CancelledError:  # both go on: undo what they did once they are done
            both.add_done_callback(lambda done: self._abort_later(row, *done.result()))
            raise
        failure = next((r for r in (started, written) if isinstance(r, BaseException)), None)
        if isinstance(started, Instance) and not started.enforced and self.config.require_limits:
            failure = errors.Unavailable(
                "this host cannot enforce sandbox limits (cgroups need root); set "
                "compute.require_limits: false to run without them"
            )
        if failure is not None:
            await asyncio.shield(self._abort_create(row, started, recorded=written is None))
            raise failure
        assert isinstance(started, Instance)
        register(started)
        return sandbox_model(row)

    def _new_record(
        self, principal: Principal, inp: CreateSandbox, sid: str, uid: int, granted: dict[str, str]
    ) -> dict[str, Any]:
        now = self.kernel.clock.now()
        env = {k: v.get_secret_value() for k, v in inp.env.items()} | granted
        return dict(
            id=sid,
            org_id=principal.org_id,
            owner_kind=principal.kind,
            owner_id=principal.id,
            template=inp.template,
            state="running",
            persistent=inp.persistent,
            limits=inp.limits.model_dump(),
            metadata=inp.metadata,
            env_sealed=self.kernel.sealer.seal(json.dumps(env).encode()),
            env_names=sorted(env),
            network=inp.network.model_dump() if inp.network else None,
            host_uid=uid,
            created_at=now,
            expires_at=now + inp.timeout if inp.timeout else None,
            billed_seconds=0.0,
            billed_cpu_seconds=0.0,
            meter_seq=0,
            secret_names=sorted(set(inp.secrets.values())) or None,
        )

    def _abort_later(self, row: dict[str, Any], started: Any, written: Any) -> None:
        """``_abort_create`` for a create whose caller is gone (kept until it is done)."""
        task = asyncio.ensure_future(self._abort_create(row, started, recorded=written is None))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort_create(
        self, row: dict[str, Any], started: Any, recorded: bool = False
    ) -> None:
        """Undo what half of a failed create did: no instance, record or uid is left."""
        if isinstance(started, Instance):
            await self.driver.destroy(started)
            proxy = self.proxies.pop(started.id, None)
            if proxy is not None:
                await proxy.close()
        if recorded:
            await self._set(row["id"], state="destroyed", destroyed_at=self.kernel.clock.now())
        self.release_uid(row["host_uid"])

    async def row(self, principal: Principal, sid: str, *, live: bool = True) -> Any:
        """The record of ``sid`` if ``principal`` may use it (own, or ``compute.admin``,
        and for one not its owner, every vault secret in its environment).

        Records of sandboxes with an instance on this host come from memory: only this
        host changes them (through ``_set``), so the copy is never stale.
        """
        r: Any = self._cache.get(sid)
        if r is None or r.org_id != principal.org_id:
            r = await in_org(self.kernel.db, S, principal.org_id, sid)
        if r is None or (live and r.state == "destroyed"):
            raise errors.NotFound(f"no sandbox {sid!r}", field="sandbox")
        mine = r.owner_kind == principal.kind and r.owner_id == principal.id
        if not mine and principal.kind != "human" and not principal.allows("compute.admin"):
            raise errors.PermissionDenied(f"sandbox {sid} belongs to another principal")
        if not mine and r.secret_names:  # its environment holds them: only for their users
            await vault.check(self.kernel.db, principal, r.secret_names)
        return r

    def _remember(self, row: Any) -> None:
        mapping = row if isinstance(row, dict) else dict(row._mapping)
        self._cache[mapping["id"]] = SimpleNamespace(**mapping)

    async def _row_any(self, sid: str) -> Any:
        cached = self._cache.get(sid)
        if cached is not None:
            return cached
        async with self.kernel.db.read() as conn:
            return (await conn.execute(select(S).where(S.c.id == sid))).one()

    async def _set(self, sid: str, **values: Any) -> None:
        statement = update(S).where(S.c.id == sid).values(**values)
        await self.kernel.db.run_write(lambda conn: conn.execute(statement))
        cached = self._cache.get(sid)
        if cached is not None:
            for key, value in values.items():
                setattr(cached, key, value)

    def lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    async def instance(self, row: Any) -> Instance:
        """The running instance of a sandbox, starting a stopped persistent one again."""
        if row.state == "paused":
            raise errors.Conflict(f"sandbox {row.id} is paused; resume it first", field="sandbox")
        crashed = self.instances.get(row.id)
        if crashed is not None and not crashed.supervisor.alive:
            await self._crashed(row)
        async with self.lock(row.id):
            inst = self.instances.get(row.id)
            if inst is not None:
                return inst
            if row.state != "stopped":
                raise errors.Conflict(f"sandbox {row.id} is not running", field="sandbox")
            network = Network(**row.network) if row.network else None
            inst = await self._start(self._spec_of(row), network)
            self.instances[row.id] = inst
            self._remember(row)
            await self._set(row.id, state="running")
            return inst

    async def _crashed(self, row: Any) -> None:
        """The sandbox's supervisor died (its memory limit, most often): end it cleanly,
        record why, and tell the caller what became of it."""
        await self.kernel.record(
            row.org_id, (row.owner_kind, row.owner_id), "sandbox.crashed", "error",
            {"sandbox": row.id, "persistent": row.persistent}, error_code="unavailable",
        )  # fmt: skip
        await self.end(row, destroy=not row.persistent)
        after = "stopped; its next use starts it again" if row.persistent else "destroyed"
        raise errors.Conflict(
            f"sandbox {row.id} crashed (out of memory?) and was {after}", field="sandbox"
        )

    def env_of(self, row: Any) -> dict[str, str]:
        env: dict[str, str] = json.loads(self.kernel.sealer.open(row.env_sealed))
        return env

    # -- ending ------------------------------------------------------------------------

    async def end(self, row: Any, *, destroy: bool) -> None:
        """Charge the last interval and end the sandbox (destroyed, or stopped)."""
        final_state = self._final_state(row, destroy)
        written = await self.meter.charge(row, final=True, finish=final_state)
        await self._end(row, destroy=destroy, state_written=written)

    def _final_state(self, row: Any, destroy: bool) -> dict[str, Any]:
        if destroy:
            return {"state": "destroyed", "destroyed_at": self.kernel.clock.now()}
        return {} if row.state == "destroyed" else {"state": "stopped"}

    async def _end(self, row: Any, *, destroy: bool, state_written: bool = False) -> None:
        async with self.lock(row.id):
            final_state = self._final_state(row, destroy)
            if final_state and not state_written:
                await self._set(row.id, **final_state)
            for run in self.commands.pop(row.id, {}).values():
                await run.cancel()
            inst = self.instances.pop(row.id, None)
            self._cache.pop(row.id, None)
            self.meter.forget(row.id)
            self.watches.forget(row.id)
            if inst is not None:
                await (self.driver.destroy(inst) if destroy else self.driver.stop(inst))
            proxy = self.proxies.pop(row.id, None)
            if proxy is not None:
                await proxy.close()
            elif destroy:
                await self.driver.purge(self._spec_of(row))
            if destroy:
                self.release_uid(row.host_uid)
        self._locks.pop(row.id, None)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = self.kernel.clock.now()
            async with self.kernel.db.read() as conn:
                due = (await conn.execute(
                    select(S).where(S.c.state.in_(LIVE_STATES), S.c.expires_at <= now)
                )).all()  # fmt: skip
            for r in due:
                with contextlib.suppress(Exception):
                    await self.end(r, destroy=not r.persistent)


def _insert_record(row: dict[str, Any], conn: Connection) -> None:
    conn.execute(_INSERT, row)


async def _ready(inst: Instance) -> Instance:
    return inst


def sandbox_model(row: Any) -> Sandbox:
    """The caller's view of a ``sandboxes`` record (a Row, a cached copy, or a dict)."""
    r: dict[str, Any] = (
        row
        if isinstance(row, dict)
        else vars(row)
        if isinstance(row, SimpleNamespace)
        else dict(row._mapping)
    )
    return Sandbox(
        id=r["id"],
        template=r["template"],
        state=r["state"],
        persistent=r["persistent"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        limits=Limits(**r["limits"]),
        metadata=r["metadata"],
        env_names=r["env_names"],
        owner=f"{r['owner_kind']}:{r['owner_id']}",
        network=Network(**r["network"]) if r.get("network") else None,
    )
