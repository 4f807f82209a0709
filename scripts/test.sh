#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the test suite. UNDERLAY_TEST_DB=postgres runs it
# against PostgreSQL (UNDERLAY_TEST_PG_URL, default the local server, user postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
