"""Pydantic models of the compute layer: what the ``sandbox.*`` syscalls take and return."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from underlay.tools.models import SECRET_NAME
from underlay.types import Secret, StrictModel

SandboxState = Literal["running", "paused", "stopped", "destroyed"]

WORKSPACE = "/workspace"
"""Where the sandbox's writable, size-capped workspace is mounted inside it."""

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Limits(StrictModel):
    """Resource limits of one sandbox, enforced by its cgroup and workspace mount."""

    memory_mb: int = Field(default=512, ge=16, le=65536, description="memory cap (MiB)")
    pids: int = Field(default=256, ge=8, le=32768, description="max processes and threads")
    cpus: float = Field(default=1.0, ge=0.05, le=64, description="CPU quota, in cores")
    disk_mb: int = Field(default=1024, ge=1, le=1_048_576, description="workspace size cap")


def _check_env(env: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for key, value in env.items():
        if not re.match(_ENV_NAME, key):
            raise ValueError(f"invalid environment variable name {key!r}")
        if "\0" in value.get_secret_value():
            raise ValueError(f"environment variable {key} contains a NUL byte")
    return env


EnvVars = Annotated[dict[str, Secret], AfterValidator(_check_env)]
"""Environment variables: values are secrets, redacted in the audit trail and logs."""


def _check_secrets(secrets: dict[str, str]) -> dict[str, str]:
    for variable, name in secrets.items():
        if not re.match(_ENV_NAME, variable):
            raise ValueError(f"invalid environment variable name {variable!r}")
        if not re.match(SECRET_NAME, name):
            raise ValueError(f"invalid secret name {name!r} (for {variable})")
    return secrets


VaultVars = Annotated[dict[str, str], AfterValidator(_check_secrets), Field(max_length=64)]
"""Environment variables from the vault, ``{VARIABLE: secret name}``: the caller must be
allowed to use each secret (tools/vault.py); only the names are ever recorded."""


def _env_or_secret(model: Any) -> Any:
    both = sorted(set(model.env) & set(model.secrets))
    if both:
        raise ValueError(f"{both[0]} is given both in env and in secrets")
    return model


_ALLOW_ENTRY = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")


def _check_allow(entries: list[str]) -> list[str]:
    for e in entries:
        if not _ALLOW_ENTRY.match(e.lower()):
            raise ValueError(f"invalid allow-list entry {e!r} (host, *.domain, optional :port)")
    return [e.lower() for e in entries]


class Network(StrictModel):
    """Opt-in egress through the sandbox's proxy; hosts outside ``allow`` are refused."""

    allow: Annotated[list[str], AfterValidator(_check_allow)] = Field(
        min_length=1, max_length=256, description="hosts or *.domains, optional :port"
    )


class CreateSandbox(StrictModel):
    template: str = Field(default="default", description="root filesystem template")
    timeout: float | None = Field(
        default=300,
        gt=0,
        le=30 * 86400,
        description="seconds until an ephemeral sandbox is destroyed; null (persistent only)"
        " for none",
    )
    env: EnvVars = Field(default_factory=dict, description="variables of every command")
    secrets: VaultVars = Field(
        default_factory=dict,
        description="variables of every command, from the vault: {VARIABLE: secret name}",
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    persistent: bool = Field(default=False, description="survives restarts, files included")
    network: Network | None = Field(default=None, description="null: no network at all")

    _disjoint = model_validator(mode="after")(_env_or_secret)


class SandboxRef(StrictModel):
    sandbox: str = Field(description="sandbox id")


class SetTimeout(SandboxRef):
    timeout: float | None = Field(gt=0, le=30 * 86400, description="seconds from now")


class Sandbox(StrictModel):
    """A sandbox as its owner sees it. Environment values are never shown, only names."""

    id: str
    template: str
    state: SandboxState
    persistent: bool
    created_at: float
    expires_at: float | None
    limits: Limits
    metadata: dict[str, str]
    env_names: list[str]
    owner: str
    network: Network | None = None


class SandboxPage(StrictModel):
    items: list[Sandbox]
    next_cursor: str | None = None


class ListSandboxes(StrictModel):
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None
    state: SandboxState | None = None


class RunCommand(SandboxRef):
    cmd: str | list[str] = Field(description="a shell line (run by /bin/sh -c) or an argv")
    env: EnvVars = Field(default_factory=dict)
    secrets: VaultVars = Field(
        default_factory=dict, description="variables from the vault: {VARIABLE: secret name}"
    )
    cwd: str = WORKSPACE
    timeout: float = Field(default=60, gt=0, le=86400, description="seconds; killed after")
    stdin: str | None = Field(default=None, description="text written to stdin first")
    open_stdin: bool = Field(
        default=False, description="keep stdin open for sandbox.commands.stdin (background)"
    )
    background: bool = Field(default=False, description="return at once; read output later")
    max_output_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, v: str | list[str]) -> str | list[str]:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("the command is empty")
        return v

    _disjoint = model_validator(mode="after")(_env_or_secret)


class CommandResult(StrictModel):
    """A command's outcome (or, while ``running``, what it printed so far)."""

    id: str
    sandbox: str
    running: bool
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    error: str | None = None
    duration_ms: float | None = None
    pid: int | None = None


class CommandRef(SandboxRef):
    command: str


class ReadOutput(CommandRef):
    stdout_offset: int = Field(default=0, ge=0, description="bytes of stdout already read")
    stderr_offset: int = Field(default=0, ge=0)
    wait: float = Field(default=0, ge=0, le=60, description="seconds to wait for news")


class SendStdin(CommandRef):
    data: str = ""
    close: bool = False


class KillCommand(CommandRef):
    signal: int = Field(default=9, ge=1, le=64)


class Metrics(StrictModel):
    sandbox: str
    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int
    disk_used_bytes: int
    uptime_seconds: float
    pids: int


class Snapshot(StrictModel):
    id: str
    sandbox: str
    created_at: float
    size_bytes: int


class SnapshotRef(StrictModel):
    snapshot: str


class RestoreSnapshot(SandboxRef):
    snapshot: str


class ForkSnapshot(SnapshotRef):
    timeout: float | None = Field(default=300, gt=0, le=30 * 86400)
    persistent: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)


class FilePath(SandboxRef):
    path: str = Field(description="inside /workspace; relative paths start there")


class WriteFile(FilePath):
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: int = Field(default=0o644, ge=0, le=0o777)


class FileContent(StrictModel):
    path: str
    content: str
    encoding: Literal["utf-8", "base64"]
    size: int


class ListFiles(FilePath):
    path: str = WORKSPACE
    depth: int = Field(default=1, ge=1, le=16)


class FileInfo(StrictModel):
    path: str
    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    modified_at: float


class FileList(StrictModel):
    items: list[FileInfo]


class RemoveFile(FilePath):
    recursive: bool = False


class WatchFiles(FilePath):
    path: str = WORKSPACE
    since: str | None = Field(default=None, description="cursor from the previous watch")
    wait: float = Field(default=0, ge=0, le=60)


class FileEvent(StrictModel):
    path: str
    type: Literal["created", "modified", "removed"]


class FileEvents(StrictModel):
    events: list[FileEvent]
    cursor: str
