#!/usr/bin/env bash
# Set up, build the demo warehouse, start the local Customer.io emulator and sync for real.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="$PWD"
export CIO_WRITE_KEY="${CIO_WRITE_KEY:-demo-write-key}"
unset RETL_PROJECT  # the bundled demo project
.venv/bin/python -m retl_assets.demo.generate
if curl -sf http://127.0.0.1:8811/healthz >/dev/null 2>&1; then
  echo "port 8811 is already in use (an emulator left running?); stop it and run again" >&2
  exit 1
fi
.venv/bin/retl emulate customerio --port 8811 > .retl-emulator.log 2>&1 &
emulator=$!
trap 'kill $emulator 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:8811/healthz >/dev/null 2>&1 && break
  kill -0 $emulator 2>/dev/null || { cat .retl-emulator.log >&2; exit 1; }
  sleep 0.2
done
.venv/bin/retl validate
.venv/bin/retl sync contacts
.venv/bin/retl sync companies
echo
echo "The emulator now holds:"
curl -s http://127.0.0.1:8811/_emulator/state | .venv/bin/python -c 'import json, sys
s = json.load(sys.stdin)
print("  %d profiles, %d groups, %d events, %d duplicates dropped" % (
    len(s["profiles"]), len(s["groups"]), len(s["events"]), s["stats"]["duplicates"]))'
cat <<MSG

Next:
  open the Dagster UI on this project (runs above are in its history):
    DAGSTER_HOME=$PWD CIO_WRITE_KEY=$CIO_WRITE_KEY .venv/bin/dagster dev
  or materialise from the command line (\`dagster asset\` reads no project file: name the module):
    export DAGSTER_MODULE_NAME=retl_assets.definitions
    DAGSTER_HOME=$PWD CIO_WRITE_KEY=$CIO_WRITE_KEY .venv/bin/dagster asset materialize \\
      --select models/contacts,diffs/contacts,syncs/contacts_identify --partition <the tick>
  keep an emulator running for syncs started from the UI:
    .venv/bin/retl emulate customerio --port 8811
MSG
