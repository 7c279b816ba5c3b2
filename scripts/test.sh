#!/usr/bin/env bash
# Set up (if needed) and run the test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers: most tests wait on servers (emulators, PostgreSQL, Dagster runs), not the CPU.
exec .venv/bin/python -m pytest -q -n 2 "$@"
