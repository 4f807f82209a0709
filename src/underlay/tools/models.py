"""Pydantic models of the ``vault.*`` syscalls. No output ever carries a secret's value."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from underlay.types import Secret, StrictModel

SECRET_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_VALUE_BYTES = 64 * 1024


def _check_value(value: Secret) -> Secret:
    raw = value.get_secret_value()
    if not raw:
        raise ValueError("a secret's value must not be empty")
    if "\0" in raw:
        raise ValueError("a secret's value must not contain a NUL byte")
    if len(raw.encode()) > MAX_VALUE_BYTES:
        raise ValueError(f"a secret's value is at most {MAX_VALUE_BYTES} bytes")
    return value


def _check_name(name: str) -> str:
    if not re.match(SECRET_NAME, name):
        raise ValueError(
            f"{name!r} is not a secret name: 1 to 64 of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


SecretName = Annotated[
    str,
    AfterValidator(_check_name),
    Field(description="1 to 64 of a-z, 0-9, '_' and '-'", max_length=64),
]


class PutSecret(StrictModel):
    name: SecretName
    value: Annotated[Secret, AfterValidator(_check_value)] = Field(
        description="the secret (at most 64 KiB); never shown again, by any call"
    )
    description: str = Field(default="", max_length=500)


class SecretRef(StrictModel):
    name: SecretName


class Grant(SecretRef):
    agent: str = Field(description="the agent (id or name) that may use the secret")


class SecretInfo(StrictModel):
    """What the vault tells about a secret: everything but its value."""

    name: str
    description: str
    version: int = Field(description="1, then one more each time its value is replaced")
    created_at: float
    updated_at: float
    grants: list[str] = Field(description="ids of the agents that may use it")


class SecretList(StrictModel):
    items: list[SecretInfo]
