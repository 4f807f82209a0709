"""A repository's checks, run on one commit in a fresh sandbox of their own.

``SandboxChecks(kernel, org_id, git, commands)(commit)``: the commit's files (``git
archive``, no ``.git``) are written into a new sandbox's workspace through the compute
layer — as the organisation (``Principal.system``), so the sandbox-seconds are metered
and every command audited like any other — then the commands run there in order, in
one shell, stopping at the first that fails (``set -e``). The verdict is the exit code;
the output kept is the last ``OUTPUT_TAIL`` characters of stdout and stderr. A timeout
fails the check (the output says so). The sandbox is destroyed whatever happens,
cancellation included (a speculative test whose result no longer matters).
"""

from __future__ import annotations

import base64
import contextlib
import shlex
from dataclasses import dataclass, field
from typing import Any

from underlay import errors
from underlay.coordination.git import Git
from underlay.kernel.context import Principal

OUTPUT_TAIL = 8000
ARCHIVE = ".underlay-checkout.tar"


@dataclass
class SandboxChecks:
    kernel: Any
    org_id: str
    git: Git
    commands: list[str]
    template: str = "default"
    timeout_seconds: float = 600.0
    limits: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, commit: str) -> tuple[bool, str]:
        if not self.commands:
            return True, "no checks configured"
        _, tar = await self.git.run_bytes("archive", "--format=tar", commit)
        system = Principal.system(self.org_id)
        metadata = {"purpose": "merge-queue checks", "commit": commit}
        spec: dict[str, Any] = {
            "template": self.template, "timeout": self.timeout_seconds + 60, "metadata": metadata
        }  # fmt: skip
        if self.limits:
            spec["limits"] = self.limits
        sandbox: Any = await self.kernel.invoke("sandbox.create", spec, principal=system)
        try:
            await self.kernel.invoke(
                "sandbox.files.write",
                {"sandbox": sandbox.id, "path": ARCHIVE, "encoding": "base64",
                 "content": base64.b64encode(tar).decode()},
                principal=system,
            )  # fmt: skip
            script = "\n".join(["set -e", f"tar -xf {ARCHIVE}", f"rm -f {ARCHIVE}", *self.commands])
            ran: Any = await self.kernel.invoke(
                "sandbox.commands.run",
                {"sandbox": sandbox.id, "cmd": f"sh -c {shlex.quote(script)}",
                 "timeout": self.timeout_seconds},
                principal=system,
            )  # fmt: skip
        finally:
            with contextlib.suppress(errors.UnderlayError):
                await self.kernel.invoke(
                    "sandbox.destroy", {"sandbox": sandbox.id}, principal=system
                )
        output = (ran.stdout + ran.stderr)[-OUTPUT_TAIL:]
        if ran.timed_out:
            return False, output + f"\n[checks killed after {self.timeout_seconds:g} s]"
        return ran.exit_code == 0, output
