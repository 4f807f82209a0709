"""Tables of the kernel, identity and billing, as SQLAlchemy Core metadata.

Conventions: ids are text (``types.new_id``); times are float seconds since the epoch
(portable and exact enough on both engines); money is a ``BigInteger`` count of
nano-units (``types.UNITS_PER_WHOLE``); every row that belongs to a tenant carries
``org_id`` and every query filters on it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = String(64)

orgs = Table(
    "orgs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("currency", String(8), nullable=False),
    Column("created_at", Float, nullable=False),
)

humans = Table(
    "humans",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("is_operator", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("org_id", "name"),
)

agents = Table(
    "agents",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("orgs.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("capabilities", JSON, nullable=False),
    Column("public_key", String(128), nullable=False),
    Column("did", String(128), nullable=False),
    Column("private_key_sealed", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_by", ID, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("org_id", "name"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # human | agent | enrollment
    Column("subject_id", ID, nullable=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("limits", JSON, nullable=False),  # enrollment: max_agents, capabilities, budget
    Column("uses", Integer, nullable=False, default=0),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("orgs.id"), nullable=False),
    Column("owner_kind", String(16), nullable=False),  # org | agent | human | usage
    Column("owner_id", ID, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("allow_negative", Boolean, nullable=False),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("org_id", "owner_kind", "owner_id", "currency"),
)

# Immutable rows. A pending transfer is resolved by exactly one later row (post or
# void) naming its ``seq`` in ``pending_seq``; the unique index forbids a second one.
transfers = Table(
    "transfers",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(128), nullable=False),
    Column("org_id", ID, ForeignKey("orgs.id"), nullable=False),
    Column("kind", String(8), nullable=False),  # single | pending | post | void
    Column("debit_account_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("pending_seq", Integer, nullable=True, unique=True),
    Column("expires_at", Float, nullable=True),
    Column("memo", String(500), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # the task attempt a syscall's hold (and its post) was made for; NULL outside tasks
    Column("task_id", ID, nullable=True),
    Column("attempt", Integer, nullable=True),
    UniqueConstraint("org_id", "id"),
    Index("ix_transfers_expiring", "kind", "expires_at"),
    Index("ix_transfers_task", "org_id", "task_id"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", ID, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", ID, nullable=False),
    Column("syscall", String(100), nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | error | denied | replayed
    Column("error_code", String(64), nullable=True),
    Column("detail", JSON, nullable=False),  # redacted input, result ids, cost
    Column("trace_id", String(32), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("org_id", "seq"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("principal_id", ID, primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("syscall", String(100), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # running | done
    Column("response", JSON, nullable=True),
    Column("locked_until", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)


sandboxes = Table(
    "sandboxes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("owner_kind", String(16), nullable=False),
    Column("owner_id", ID, nullable=False),
    Column("template", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("persistent", Boolean, nullable=False),
    Column("limits", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("env_sealed", Text, nullable=False),  # sealed JSON: env values are secrets
    Column("env_names", JSON, nullable=False),
    Column("network", JSON),  # {"allow": [...]} or null: no network
    Column("host_uid", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("destroyed_at", Float),
    Column("billed_seconds", Float, nullable=False, default=0.0),
    Column("billed_cpu_seconds", Float, nullable=False, default=0.0),
    Column("meter_seq", Integer, nullable=False, default=0),
    Column("secret_names", JSON),  # vault secrets in its environment (names), or null
    Index("ix_sandboxes_org_state", "org_id", "state"),
)

sandbox_snapshots = Table(
    "sandbox_snapshots",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False, index=True),
    Column("sandbox_id", ID, nullable=False),
    Column("template", String(64), nullable=False),
    Column("limits", JSON, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)


# -- orchestration ---------------------------------------------------------------------

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("queue", String(100), nullable=False),
    Column("handler", String(200), nullable=False),
    Column("input", JSON, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # queued|leased|waiting|succeeded|failed|cancelled
    Column("waiting_on", String(100)),  # while waiting: "human:<escalation id>"
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("fence", BigInteger, nullable=False),  # the fencing token of the latest lease
    Column("worker_id", ID),  # the lease holder while leased
    Column("not_before", Float, nullable=False),  # retry backoff
    Column("result", JSON),
    Column("error", JSON),
    Column("submitted_by", ID, nullable=False),
    Column("idempotency_key", String(200)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Index("ix_tasks_ready", "state", "queue", "org_id", "priority", "created_at"),
    Index("ix_tasks_worker", "worker_id", "state"),
    Index("ix_tasks_org", "org_id", "created_at"),
    UniqueConstraint("org_id", "idempotency_key"),
)

task_attempts = Table(
    "task_attempts",
    metadata,
    Column("task_id", ID, primary_key=True),
    Column("fence", BigInteger, primary_key=True),  # one row a lease
    Column("org_id", ID, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", ID, nullable=False),
    Column("handler", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    # running | succeeded | failed | retrying | waiting | lost (its worker died) | cancelled
    Column("outcome", String(16), nullable=False),
    Column("error_class", String(16)),
    Index("ix_task_attempts_org", "org_id", "started_at"),
)

task_queues = Table(
    "task_queues",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("concurrency", Integer, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # alive | dead | stopped
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),  # escalation | approval
    Column("source", String(200), nullable=False),  # task:..., supervisor:..., agent:...
    Column("summary", Text, nullable=False),
    Column("context", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # open | resolved
    Column("resolution", JSON),
    Column("resolved_by", ID),
    Column("task_id", ID),  # the task waiting on the answer, if any
    Column("dedupe_key", String(300), nullable=False),
    Column("raised_by", ID, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    UniqueConstraint("org_id", "dedupe_key"),
    Index("ix_escalations_org_state", "org_id", "state", "created_at"),
)

fleets = Table(
    "fleets",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("applied_by", ID, nullable=False),
    Column("escalation_id", ID),  # set once the root supervisor gave up
    Column("deleted", Boolean, nullable=False),
    Column("updated_at", Float, nullable=False),
)

fleet_members = Table(
    "fleet_members",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("fleet", String(64), primary_key=True),
    Column("agent", String(64), primary_key=True),
    Column("replica", Integer, primary_key=True),
    Column("agent_id", ID),
    Column("task_id", ID),  # the current run: a task (python programs)...
    Column("sandbox_id", ID),  # ...or a sandbox and its command (command programs)
    Column("command_id", ID),
    Column("token_id", ID),  # the command run's token, revoked when the run ends
    Column("feedback", Text),  # an evaluator's, for the next run
    Column("waiting_on", ID),  # paused by an evaluator: the escalation that resumes it
    Column("state", String(16), nullable=False),  # the lifecycle's states
    Column("restarts", Integer, nullable=False),
    Column("generation", Integer, nullable=False),  # of the fleet, at this member's last run
    Column("updated_at", Float, nullable=False),
    Column("run_started_at", Float),  # health: the current run's start, last heartbeat,
    Column("beat_at", Float),  # reported progress and when it last changed
    Column("progress", String(200)),
    Column("progress_at", Float),
    Index("ix_fleet_members_agent", "org_id", "agent_id"),
)

# Coordination: repositories registered per org, and the merge queue's changes.
repositories = Table(
    "repositories",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("path", Text, nullable=False),  # a bare repository (or one with a working tree)
    Column("owned", Boolean, nullable=False),  # underlay created it (under home/repos)
    Column("target", String(200), nullable=False),  # the branch the queue lands on
    Column("settings", JSON, nullable=False),  # checks, template, batch size, tries...
    Column("created_by", ID, nullable=False),
    Column("created_at", Float, nullable=False),
)

merge_changes = Table(
    "merge_changes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("repo", String(64), nullable=False),
    Column("ref", String(200), nullable=False),  # what was submitted: a branch or a sha
    Column("head", String(64), nullable=False),  # the commit, resolved at submission
    Column("submitted_by", ID, nullable=False),
    Column("task_id", ID),  # attribution: the task it came from, if any
    Column("state", String(16), nullable=False),  # queued testing landed rejected conflict...
    Column("tries", Integer, nullable=False),  # conflicts handed back so far (this ref)
    Column("detail", Text, nullable=False),  # failing output, or what it conflicts with
    Column("conflicts", JSON, nullable=False),
    Column("landed_commit", String(64)),
    Column("check_seconds", Float, nullable=False),  # its share of the checks' time
    Column("escalation_id", ID),
    Column("created_at", Float, nullable=False),
    Column("decided_at", Float),
    Index("ix_merge_changes_queue", "org_id", "repo", "state", "created_at"),
)

claims = Table(
    "claims",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("repo", String(64), nullable=False),
    Column("paths", JSON, nullable=False),  # globs: "src/auth/*", "docs/api.md"
    Column("holder", ID, nullable=False),  # the agent (or human) holding it
    Column("task_id", ID),
    Column("note", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("released_at", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_claims_live", "org_id", "repo", "expires_at"),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("repo", String(64), nullable=False),
    Column("owner", ID, nullable=False),  # the agent whose branch and sandbox it is
    Column("branch", String(200), nullable=False),
    Column("sandbox_id", ID, nullable=False),
    Column("base", String(64), nullable=False),  # the target's head when it was created
    Column("synced_head", String(64), nullable=False),  # the branch, as last synced
    Column("state", String(16), nullable=False),  # active | deleted
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_workspaces_repo", "org_id", "repo", "state"),
)

# Coordination: conflict predictions already reported to the agents (one row a pair of
# heads, the two commits in sorted order), so a restart never reports them again.
conflict_notices = Table(
    "conflict_notices",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("repo", String(64), primary_key=True),
    Column("head_a", String(64), primary_key=True),
    Column("head_b", String(64), primary_key=True),
    Column("conflicts", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)


# -- comms -----------------------------------------------------------------------------

SEQ = BigInteger().with_variant(Integer, "sqlite")  # a rowid on SQLite, BIGSERIAL elsewhere

# The event log: append-only, ids increase in commit order within an org (appends to one
# org are serialized, see comms/events.py); ``sqlite_autoincrement`` never reuses an id.
events = Table(
    "events",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("org_id", ID, nullable=False),
    Column("topic", String(100), nullable=False),  # queue.landed, queue.conflict_predicted
    Column("subject", String(200), nullable=False),  # what it is about: a change id...
    Column("payload", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_events_org", "org_id", "id"),
    Index("ix_events_topic", "org_id", "topic", "id"),
    sqlite_autoincrement=True,
)

messages = Table(
    "messages",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("org_id", ID, nullable=False),
    Column("to_agent", ID, nullable=False),  # the addressee: an agent (or a human) id
    Column("sender", ID, nullable=False),  # a principal id, or a layer ("merge-queue")
    Column("subject", String(200), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("read_at", Float),  # set once by messages.ack
    Index("ix_messages_inbox", "org_id", "to_agent", "id"),
    sqlite_autoincrement=True,
)


# -- tools: the credential vault ---------------------------------------------------------

# Envelope encryption: each value is sealed with a key of its own, and that key with the
# installation's master key (so replacing the master key re-seals keys, not values).
vault_secrets = Table(
    "vault_secrets",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False),
    Column("sealed_key", Text, nullable=False),  # the value's key, sealed with the master key
    Column("sealed_value", Text, nullable=False),  # the value, sealed with its own key
    Column("version", Integer, nullable=False),
    Column("created_by", ID, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

vault_grants = Table(
    "vault_grants",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("agent_id", ID, primary_key=True),
    Column("granted_by", ID, nullable=False),
    Column("granted_at", Float, nullable=False),
)
