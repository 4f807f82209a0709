"""Run the real ``underlay`` CLI in-process against a fresh installation per test.

``UNDERLAY_HOME`` is the test's home and ``UNDERLAY_DATABASE_URL`` the fresh database of
the shared ``config`` fixture, so these tests run on SQLite or, with
``UNDERLAY_TEST_DB=postgres``, on PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from underlay.cli.main import app
from underlay.config import Config


@dataclass
class Cli:
    env: dict[str, str | None]
    runner: CliRunner = field(default_factory=CliRunner)

    def __call__(
        self, *args: str, env: dict[str, str | None] | None = None, input: str | None = None
    ) -> Result:
        return self.runner.invoke(app, list(args), env={**self.env, **(env or {})}, input=input)

    def ok(self, *args: str, **kw: Any) -> Result:
        result = self(*args, **kw)
        assert result.exit_code == 0, (
            f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def json(self, *args: str, **kw: Any) -> Any:
        """Run with ``--json``; stdout must be exactly one JSON document."""
        return json.loads(self.ok("--json", *args, **kw).stdout)


@pytest.fixture
def cli_env(config: Config) -> dict[str, str | None]:
    return {
        "UNDERLAY_HOME": str(config.home),
        "UNDERLAY_DATABASE_URL": config.resolved_database_url,
        "UNDERLAY_URL": None,
        "UNDERLAY_TOKEN": None,
        "COLUMNS": None,
        "NO_COLOR": "1",
    }


@pytest.fixture
def cli(cli_env: dict[str, str | None]) -> Cli:
    return Cli(cli_env)
