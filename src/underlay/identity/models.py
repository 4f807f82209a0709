"""Inputs and outputs of the identity syscalls."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from underlay.types import MoneyField, Secret, StrictModel

Name: Any = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
CapabilityList: Any = Field(default_factory=list, max_length=200)


class Agent(StrictModel):
    id: str
    org_id: str
    name: str
    did: str
    public_key: str
    capabilities: list[str]
    status: Literal["active", "disabled"]
    created_by: str
    metadata: dict[str, str]
    created_at: float


class CreateAgent(StrictModel):
    name: str = Name
    capabilities: list[str] = CapabilityList
    budget: MoneyField | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class AgentRef(StrictModel):
    agent: str = Field(min_length=1, max_length=200, description="agent id or name")


class ListAgents(StrictModel):
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    status: Literal["active", "disabled"] | None = None


class AgentPage(StrictModel):
    items: list[Agent]
    next_cursor: str | None = None


class EnrollmentLimits(StrictModel):
    max_agents: int = Field(default=1, ge=1, le=100_000)
    capabilities: list[str] = CapabilityList
    budget_per_agent: MoneyField | None = None


class CreateToken(StrictModel):
    kind: Literal["agent", "human", "enrollment"] = "agent"
    subject: str | None = Field(default=None, description="agent id or name (kind=agent)")
    name: str = Field(default="token", max_length=200)
    scopes: list[str] | None = Field(default=None, max_length=200)
    ttl_seconds: int | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    limits: EnrollmentLimits | None = None


class Token(StrictModel):
    id: str
    kind: str
    subject_id: str | None
    name: str
    scopes: list[str] | None
    expires_at: float | None
    revoked_at: float | None
    created_at: float
    uses: int = 0
    limits: dict[str, object] = Field(default_factory=dict)


class IssuedToken(StrictModel):
    """A freshly minted token. ``token`` is shown this once and never again."""

    token: Secret
    info: Token


class TokenRef(StrictModel):
    token_id: str = Field(min_length=1, max_length=64)


class ListTokens(StrictModel):
    subject: str | None = None
    include_revoked: bool = False


class TokenList(StrictModel):
    items: list[Token]


class Enroll(StrictModel):
    name: str = Name
    capabilities: list[str] = CapabilityList
    budget: MoneyField | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class Enrolled(StrictModel):
    agent: Agent
    token: Secret


class CreateOrg(StrictModel):
    name: str = Name
    admin_name: str = Field(default="admin", min_length=1, max_length=200)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3,8}$")


class OrgCreated(StrictModel):
    org_id: str
    admin_id: str
    admin_token: Secret


class WhoAmI(StrictModel):
    kind: str
    id: str
    org_id: str
    capabilities: list[str]
    scopes: list[str] | None
    did: str | None = None
    is_operator: bool = False


class Sign(StrictModel):
    message: str = Field(max_length=1_000_000, description="text, or base64 with encoding=base64")
    encoding: Literal["utf-8", "base64"] = "utf-8"


class Signature(StrictModel):
    did: str
    signature: str = Field(description="base64 Ed25519 signature")


class Verify(StrictModel):
    did: str = Field(max_length=200)
    message: str = Field(max_length=1_000_000)
    signature: str = Field(max_length=200)
    encoding: Literal["utf-8", "base64"] = "utf-8"


class Verified(StrictModel):
    valid: bool
