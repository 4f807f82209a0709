"""The ``sandbox.templates*`` syscalls: list, build (debootstrap) and delete templates."""

from __future__ import annotations

import asyncio
import shutil

from pydantic import Field

from underlay import errors
from underlay.compute import template_build
from underlay.compute.templates import DEFAULT
from underlay.kernel.context import CallContext
from underlay.kernel.policy import FailurePolicy
from underlay.kernel.syscall import SyscallGroup
from underlay.types import Empty, StrictModel

group = SyscallGroup("compute-templates")


class Templates(StrictModel):
    names: list[str]


class BuildTemplate(StrictModel):
    name: str = Field(description="lower-case name: letters, digits, . _ -")
    suite: str = Field(default="bookworm", pattern=r"^[a-z]+$")
    include: list[str] = Field(default_factory=list, description="extra Debian packages")
    mirror: str | None = Field(default=None, description="default: this host's apt mirror")


class TemplateRef(StrictModel):
    name: str


@group.syscall("sandbox.templates", capability="sandbox.read")
async def templates(ctx: CallContext, inp: Empty) -> Templates:
    """The root file system templates sandboxes can start from."""
    return Templates(names=(await ctx.kernel.compute()).driver.templates())


def _store(driver: object) -> template_build.TemplateStore:
    store = getattr(driver, "store", None)
    if not isinstance(store, template_build.TemplateStore):
        raise errors.Unavailable("this sandbox driver does not build templates")
    return store


@group.syscall(
    "sandbox.template_build",
    operator_only=True,
    mutating=True,
    policy=FailurePolicy(timeout_seconds=template_build.BUILD_TIMEOUT_S + 60),
)
async def build(ctx: CallContext, inp: BuildTemplate) -> Templates:
    """Build a Debian root file system template with debootstrap (takes minutes)."""
    m = await ctx.kernel.compute()
    store = _store(m.driver)
    await asyncio.to_thread(
        template_build.build,
        store,
        inp.name,
        suite=inp.suite,
        include=inp.include,
        mirror=inp.mirror,
    )
    ctx.audit.update(template=inp.name)
    return Templates(names=m.driver.templates())


@group.syscall("sandbox.template_delete", operator_only=True, mutating=True)
async def delete(ctx: CallContext, inp: TemplateRef) -> Templates:
    """Delete a built template (sandboxes running from it keep their mount)."""
    if inp.name == DEFAULT:
        raise errors.InvalidInput("the default template is the host's /usr", field="name")
    m = await ctx.kernel.compute()
    store = _store(m.driver)
    store.get(inp.name)
    await asyncio.to_thread(shutil.rmtree, store.path_for(inp.name).parent)
    return Templates(names=m.driver.templates())
