"""The syscall table of a standard installation: every subsystem's group."""

from __future__ import annotations

from underlay.billing.syscalls import group as billing
from underlay.comms.syscalls import group as comms
from underlay.compute.syscalls import group as compute
from underlay.compute.template_syscalls import group as compute_templates
from underlay.coordination.syscalls import group as coordination
from underlay.identity.syscalls import group as identity
from underlay.kernel.syscall import SyscallTable
from underlay.kernel.syscalls import group as kernel
from underlay.memory.syscalls import group as memory
from underlay.orchestration.escalation_syscalls import group as escalations
from underlay.orchestration.fleet_syscalls import group as fleets
from underlay.orchestration.retention_syscalls import group as retention
from underlay.orchestration.syscalls import group as orchestration
from underlay.tools.syscalls import group as tools


def builtin_table() -> SyscallTable:
    return SyscallTable(
        [
            kernel,
            identity,
            billing,
            compute,
            compute_templates,
            memory,
            orchestration,
            escalations,
            fleets,
            retention,
            coordination,
            comms,
            tools,
        ]
    )
