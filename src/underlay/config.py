"""Configuration: embedded defaults, overridden by ``$UNDERLAY_HOME/config.yaml`` and env.

With no file and no variables, underlay runs in one process on SQLite under
``~/.underlay`` (or ``$UNDERLAY_HOME``). Scale is a change of URLs, not of code:
``database_url: postgresql://...`` moves every table to PostgreSQL.

Precedence, highest first: arguments to ``Config.load``, ``UNDERLAY_*`` environment
variables (``UNDERLAY_DATABASE_URL``, ``UNDERLAY_PORT`` ...), the YAML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from underlay.errors import InvalidInput


def default_home() -> Path:
    return Path(os.environ.get("UNDERLAY_HOME") or Path.home() / ".underlay")


class ComputeConfig(BaseModel):
    """Settings of the compute layer (``compute:`` in config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    driver: str = "bwrap"
    pool_size: int = Field(default=2, ge=0, le=256, description="warm sandboxes kept ready")
    pool_template: str = "default"  # the template the warm pool's sandboxes start from
    launchers: int = Field(
        default=2, ge=0, le=64,
        description="launchers kept waiting in fresh cgroups for cold creates (root only)",
    )  # fmt: skip
    max_sandboxes: int = Field(default=64, ge=1, description="live sandboxes on this host")
    price_per_sandbox_second: str = "0.00001"
    price_per_cpu_second: str = "0.00005"
    meter_every_seconds: float = Field(default=10.0, gt=0)
    uid_base: int = Field(default=200_000, ge=1000, description="first host uid of sandboxes")
    uid_registry: str = "/var/lib/underlay/uids"  # host-wide claims, shared by installations
    require_limits: bool = True  # refuse to start sandboxes whose limits cannot be enforced


class LLMConfig(BaseModel):
    """An OpenAI-compatible chat endpoint for the memory layer's optional LLM extractor.
    The key is read from the environment variable ``api_key_env``, never from a file."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    api_key_env: str = "UNDERLAY_MEMORY_LLM_API_KEY"
    timeout_seconds: float = Field(default=30.0, gt=0)
    fallback: bool = True  # when the endpoint fails, use the built-in extractor


class MemoryConfig(BaseModel):
    """Settings of the memory layer (``memory:`` in config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    driver: str = "sqlite"  # or "postgres" (pgvector)
    path: Path | None = None  # sqlite: default home/memory.db
    url: str | None = None  # postgres: default the installation's database_url
    embedder: str = "minilm"  # all-MiniLM-L6-v2, run locally
    extractor: str = "rules"  # or "llm" (needs llm:)
    llm: LLMConfig | None = None


class OrchestrationConfig(BaseModel):
    """Settings of durable tasks and their workers (``orchestration:`` in config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    worker: bool = True  # ``underlay up`` starts ``underlay worker`` as a child process
    concurrency: int = Field(default=16, ge=1, le=1024)  # tasks one worker runs at once
    queues: list[str] = Field(default_factory=lambda: ["default"])
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    dead_after_seconds: float = Field(default=3.0, gt=0)  # silent this long: declared dead
    poll_seconds: float = Field(default=0.05, gt=0)
    dbos_url: str | None = None  # DBOS's system database; default home/dbos.sqlite or database_url
    retention_days: float | None = Field(
        default=7.0,
        ge=0,
        description="finished tasks (with attempts and DBOS workflows) older than this are "
        "deleted by `underlay up`; None or 0: keep forever",
    )
    retention_every_seconds: float = Field(default=3600.0, gt=0)  # how often it prunes


class CoordinationConfig(BaseModel):
    """Settings of the merge queue's helpers (``coordination:`` in config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    notices: bool = True  # ``underlay up`` tells agents of predicted conflicts early
    notice_every_seconds: float = Field(
        default=5.0, gt=0, description="how often in-flight branches are predicted pairwise"
    )


class CommsConfig(BaseModel):
    """Settings of the event log and the inboxes (``comms:`` in config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float | None = Field(
        default=30.0,
        ge=0,
        description="events, and read messages, older than this are deleted by `underlay "
        "up` (unread messages are kept); None or 0: keep forever",
    )
    retention_every_seconds: float = Field(default=3600.0, gt=0)


class Config(BaseModel):
    """Every setting of one underlay installation, with its embedded default."""

    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None  # None: sqlite file under home
    host: str = "127.0.0.1"
    port: int = Field(default=7700, ge=0, le=65535)
    currency: str = "USD"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    token_cache_seconds: float = Field(default=1.0, ge=0)
    audit_reads: bool = False  # audit successful read-only calls too
    hold_ttl_seconds: int = Field(default=900, ge=1)
    idempotency_wait_seconds: float = Field(default=30.0, ge=0)
    sqlite_busy_timeout_ms: int = 30_000
    pool_size: int = Field(default=10, ge=1)
    master_key: str | None = None  # base64; default: home/master.key, created on first start
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)
    comms: CommsConfig = Field(default_factory=CommsConfig)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'underlay.db'}"

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Defaults ← config.yaml ← environment ← ``overrides``; clear error on bad values."""
        home = Path(overrides.get("home") or default_home())
        values: dict[str, Any] = {}
        path = home / "config.yaml"
        if path.exists():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise InvalidInput(f"{path}: expected a mapping of settings")
            values.update(loaded)
        for name, info in cls.model_fields.items():
            if info.annotation in (
                ComputeConfig, MemoryConfig, OrchestrationConfig, CoordinationConfig,
            ):  # fmt: skip
                continue
            env = os.environ.get(f"UNDERLAY_{name.upper()}")
            if env is not None:
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = home
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"config: {field}: {first['msg']}", field=field) from exc
