#!/usr/bin/env bash
# The whole test suite from a fresh machine in one command (what CI runs): install what is
# missing (scripts/setup.sh, idempotent, ~45 s when nothing is), then the test command.
# Extra arguments go to pytest (e.g. -m "not live" for the host-side tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: .venv/bin/python -m pytest -rs $*"
exec .venv/bin/python -m pytest -rs "$@"
