"""Snapshots of a sandbox's workspace: take one, restore it, or fork it into a new sandbox.

A snapshot is a point-in-time copy of ``/workspace``: the sandbox is frozen while it
is copied, so no process changes a file half-way through, then thawed. Process memory
is not part of a snapshot (there is no checkpointing of processes here): a restore or
a fork starts with the files and no running command. Snapshots are owned by the org and
kept until deleted; they outlive the sandbox they came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from underlay import errors
from underlay.compute.files import clear_dir
from underlay.compute.interface import Instance
from underlay.compute.models import CreateSandbox, Limits, Sandbox, Snapshot
from underlay.storage import schema
from underlay.storage.rows import in_org
from underlay.types import new_id

if TYPE_CHECKING:
    from underlay.compute.manager import ComputeManager
    from underlay.kernel.context import Principal

T = schema.sandbox_snapshots


def _copy_tree(src: Path, dst: Path, uid: int, gid: int) -> None:
    """Copy the contents of ``src`` into ``dst`` (never following symlinks), owned by uid."""
    try:
        subprocess.run(
            ["cp", "-a", "--reflink=auto", "--no-dereference", f"{src}/.", f"{dst}/"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["chown", "-R", "--no-dereference", f"{uid}:{gid}", str(dst)],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        msg = exc.stderr.decode(errors="replace").strip()
        if "No space left" in msg:
            raise errors.LimitExceeded("the snapshot does not fit the workspace (disk_mb)") from exc
        raise errors.Unavailable(f"copying the workspace failed: {msg[:300]}") from exc


def _clear(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        clear_dir(fd)  # the sandbox may still race us: never follow what it planted
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


class Snapshots:
    def __init__(self, manager: ComputeManager) -> None:
        self.m = manager
        self.dir = manager.driver_home / "snapshots"

    async def take(self, principal: Principal, row: Any) -> Snapshot:
        inst = await self.m.instance(row)
        sid = new_id("snap")
        target = self.dir / sid
        target.mkdir(parents=True, mode=0o700)
        await self.m.driver.pause(inst)
        try:
            await asyncio.to_thread(_copy_tree, inst.workspace_dir, target, 0, 0)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            await self.m.driver.resume(inst)
        snap = dict(
            id=sid,
            org_id=principal.org_id,
            sandbox_id=row.id,
            template=row.template,
            size_bytes=await asyncio.to_thread(_size, target),
            created_at=self.m.kernel.clock.now(),
        )
        async with self.m.kernel.db.write() as conn:
            await conn.execute(T.insert().values(**snap, limits=row.limits))
        return Snapshot(
            id=sid, sandbox=row.id, created_at=snap["created_at"], size_bytes=snap["size_bytes"]
        )

    async def row(self, principal: Principal, snapshot_id: str) -> Any:
        r = await in_org(self.m.kernel.db, T, principal.org_id, snapshot_id)
        if r is None:
            raise errors.NotFound(f"no snapshot {snapshot_id!r}", field="snapshot")
        await self.m.row(principal, r.sandbox_id, live=False)  # the same owner rule
        return r

    async def _fill(self, inst: Instance, snapshot_id: str) -> None:
        src = self.dir / snapshot_id
        await asyncio.to_thread(_clear, inst.workspace_dir)
        await asyncio.to_thread(_copy_tree, src, inst.workspace_dir, inst.spec.uid, inst.spec.gid)

    async def restore(self, principal: Principal, row: Any, snapshot_id: str) -> None:
        """Put the snapshot's files back into ``row``'s sandbox; its commands are killed."""
        await self.row(principal, snapshot_id)
        inst = await self.m.instance(row)
        for run in self.m.commands.pop(row.id, {}).values():
            await run.cancel()
        await self._fill(inst, snapshot_id)

    async def fork(
        self, principal: Principal, snapshot_id: str, *, timeout: float | None,
        persistent: bool, metadata: dict[str, str],
    ) -> Sandbox:  # fmt: skip
        """A new sandbox (same template and limits) starting from the snapshot's files."""
        snap = await self.row(principal, snapshot_id)
        inp = CreateSandbox(
            template=snap.template,
            timeout=timeout,
            persistent=persistent,
            metadata=metadata,
            limits=Limits(**snap.limits),
        )
        sbx = await self.m.create(principal, inp)
        await self._fill(self.m.instances[sbx.id], snapshot_id)
        return sbx

    async def delete(self, principal: Principal, snapshot_id: str) -> None:
        await self.row(principal, snapshot_id)
        async with self.m.kernel.db.write() as conn:
            await conn.execute(T.delete().where(T.c.id == snapshot_id))
        await asyncio.to_thread(shutil.rmtree, self.dir / snapshot_id, True)
