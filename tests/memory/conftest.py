"""The memory tests run on the memory driver that matches the test database: SQLite
(sqlite-vec, FTS5) by default; with ``UNDERLAY_TEST_DB=postgres``, PostgreSQL with
pgvector (a pgserver instance, one schema per test), so the whole layer passes on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from underlay.testing import databases, pgvector


@pytest.fixture
def memory_settings() -> Iterator[dict[str, object] | None]:
    if databases.backend() != "postgres":
        yield None
        return
    url = pgvector.fresh_schema()
    yield {"driver": "postgres", "url": url}
    pgvector.drop_schema(url)
