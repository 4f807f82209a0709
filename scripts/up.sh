#!/usr/bin/env bash
# Sets up (see setup.sh) and runs `underlay up` on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/underlay up "$@"
