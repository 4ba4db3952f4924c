#!/usr/bin/env bash
# The default scenario from a fresh machine in one command: install what is missing
# (scripts/setup.sh, idempotent, ~45 s when nothing is), then the emulation with its
# interactive CLI. Extra arguments go to `python -m emulation.run` (e.g. --batch
# --report R.json, --backend hwsim, a scenario file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "demo: .venv/bin/python -m emulation.run $*"
exec .venv/bin/python -m emulation.run "$@"
