"""The kernel: the syscall table, the invoke chain and the services the chain uses.

``Kernel.invoke`` is the only way into a layer, for agents and for layers alike. A
``Kernel`` is opened with ``Kernel.open(config)``: it creates the home directory,
migrates the database, and on first start bootstraps the ``default`` org with an admin
whose token is written to ``home/admin-token`` (mode 0600).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import select

from underlay import errors
from underlay.billing.ledger import Ledger
from underlay.config import Config
from underlay.identity import service as identity
from underlay.identity.authn import TokenAuthenticator
from underlay.identity.keys import Sealer, load_master_key
from underlay.kernel import audit as audit_log
from underlay.kernel.chain import Call, compose
from underlay.kernel.clock import Clock, SystemClock
from underlay.kernel.context import Principal
from underlay.kernel.idempotency import IdempotencyStore
from underlay.kernel.policy import PolicyRunner
from underlay.kernel.syscall import SyscallTable
from underlay.storage import schema
from underlay.storage.engine import Database
from underlay.storage.migrations import migrate

if TYPE_CHECKING:
    from underlay.compute.manager import ComputeManager
    from underlay.memory.service import MemoryService
    from underlay.orchestration.queue import TaskQueue
    from underlay.orchestration.worker import Worker

log = logging.getLogger("underlay.kernel")


@dataclass(frozen=True)
class Bootstrap:
    org_id: str
    admin_id: str
    admin_token_path: str


class Kernel:
    def __init__(
        self,
        config: Config,
        db: Database,
        table: SyscallTable,
        *,
        master_key: bytes,
        clock: Clock | None = None,
        tracer: Any = None,
    ) -> None:
        self.config = config
        self.db = db
        self.table = table
        self.clock = clock or SystemClock()
        self.tracer = tracer
        self.sealer = Sealer(master_key)
        # keys the hashes of idempotent requests (their inputs may carry secrets)
        self.request_key = hashlib.sha256(b"underlay request hash\0" + master_key).digest()
        self.authn = TokenAuthenticator(db, self.clock.now, config.token_cache_seconds)
        self.ledger = Ledger(db, self.clock.now)
        self.idempotency = IdempotencyStore(db, self.clock.now, config.idempotency_wait_seconds)
        self.policies = PolicyRunner(self.clock.now, self.clock.sleep)
        self._chain = compose(self)
        self.bootstrap_info: Bootstrap | None = None
        self._compute: ComputeManager | None = None
        self._compute_lock = asyncio.Lock()
        self._memory: MemoryService | None = None
        self._memory_lock = asyncio.Lock()
        self._tasks: TaskQueue | None = None
        self.workers: list[Worker] = []  # the in-process workers ``underlay up`` started

    @classmethod
    async def open(
        cls,
        config: Config | None = None,
        *,
        table: SyscallTable | None = None,
        clock: Clock | None = None,
        tracer: Any = None,
    ) -> Kernel:
        """Open (and on first use, create) an installation described by ``config``."""
        config = config or Config.load()
        config.home.mkdir(parents=True, exist_ok=True)
        db = Database(
            config.resolved_database_url,
            busy_timeout_ms=config.sqlite_busy_timeout_ms,
            pool_size=config.pool_size,
        )
        await migrate(db)
        if table is None:
            from underlay.kernel.builtin import builtin_table

            table = builtin_table()
        master = load_master_key(config.home, config.master_key)
        kernel = cls(config, db, table, master_key=master, clock=clock, tracer=tracer)
        kernel.bootstrap_info = await kernel.bootstrap()
        return kernel

    async def invoke(
        self,
        name: str,
        payload: dict[str, Any] | BaseModel | None = None,
        *,
        token: str | None = None,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
        trail: list[str] | None = None,
    ) -> BaseModel:
        """Run syscall ``name`` through the whole chain and return its output model."""
        call = Call(
            syscall=self.table.get(name),
            payload=payload if payload is not None else {},
            token=token,
            principal=principal,
            idempotency_key=idempotency_key,
        )
        if trail is not None:
            call.trail = trail
        return await self._chain(call)

    async def bootstrap(self) -> Bootstrap:
        """Create the default org and its operator admin once; keep an admin token on disk."""
        token_path = self.config.home / "admin-token"
        async with self.db.read() as conn:
            org = (
                await conn.execute(select(schema.orgs).where(schema.orgs.c.name == "default"))
            ).first()
        if org is None:
            try:
                created = await identity.create_org(
                    self, "default", admin_name="admin", operator=True
                )
            except errors.Conflict:  # another process bootstrapped first
                return await self.bootstrap()
            org_id, admin_id = created.org_id, created.admin_id
            _write_secret(token_path, created.admin_token)
        else:
            org_id = org.id
            admin_id = await identity.first_operator(self, org_id)
            if not await self._token_file_valid(token_path):
                token = await identity.mint_human_token(
                    self, org_id, admin_id, name="admin (local)"
                )
                _write_secret(token_path, token)
        return Bootstrap(org_id=org_id, admin_id=admin_id, admin_token_path=str(token_path))

    async def _token_file_valid(self, path: Any) -> bool:
        try:
            await self.authn.authenticate(path.read_text().strip())
            return True
        except (OSError, errors.Unauthenticated):
            return False

    def admin_token(self) -> str:
        """The local admin token (embedded use: whoever can read ``home`` is the admin)."""
        return (self.config.home / "admin-token").read_text().strip()

    async def expire_holds_forever(self, every_seconds: float = 5.0) -> None:
        """Background task of ``underlay up``: void holds past their expiry."""
        while True:
            try:
                await self.ledger.expire_holds()
            except errors.UnderlayError:  # e.g. the database is briefly away: try next round
                log.warning("expiring holds failed; retrying in %s s", every_seconds, exc_info=True)
            await asyncio.sleep(every_seconds)

    async def record(
        self,
        org_id: str,
        actor: tuple[str, str],
        event: str,
        outcome: str,
        detail: dict[str, Any],
        *,
        error_code: str | None = None,
    ) -> None:
        """Append an audit event for something a layer observed outside a syscall (an
        egress request, a sandbox stopped for lack of budget); redacted like any event."""
        await audit_log.record(
            self.db,
            org_id=org_id,
            ts=self.clock.now(),
            actor_kind=actor[0],
            actor_id=actor[1],
            syscall=event,
            outcome=outcome,
            error_code=error_code,
            detail=detail,
            trace_id=None,
        )

    async def compute(self) -> ComputeManager:
        """The compute layer of this host, started on first use (driver, pool, loops)."""
        if self._compute is None:
            async with self._compute_lock:
                if self._compute is None:
                    from underlay.compute.drivers.registry import load_driver
                    from underlay.compute.manager import ComputeManager

                    cfg = self.config.compute
                    driver = await asyncio.to_thread(load_driver, cfg.driver, self.config.home)
                    manager = ComputeManager(self, driver, cfg)
                    await manager.start()
                    self._compute = manager
        return self._compute

    async def memory(self) -> MemoryService:
        """The memory layer: its store and embedding model, opened on first use."""
        if self._memory is None:
            async with self._memory_lock:
                if self._memory is None:
                    from underlay.memory.drivers.registry import open_memory

                    self._memory = await open_memory(self.config)
        return self._memory

    def tasks(self) -> TaskQueue:
        """The durable task queue in this installation's database."""
        if self._tasks is None:
            from underlay.orchestration.queue import TaskQueue

            self._tasks = TaskQueue(self.db)
        return self._tasks

    def wake_workers(self) -> None:
        """A task was submitted: in-process workers claim it without waiting for a poll."""
        for worker in self.workers:
            worker.poke()

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        self.workers = []
        if self._memory is not None:
            await self._memory.close()
            self._memory = None
        if self._compute is not None:
            await self._compute.close()
            await self._compute.driver.close()
            self._compute = None
        await self.db.dispose()


def _write_secret(path: Any, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
