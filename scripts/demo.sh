#!/usr/bin/env bash
# Set up, build the demo warehouse, start the local Customer.io emulator and sync for real.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="$PWD"
export CIO_WRITE_KEY="${CIO_WRITE_KEY:-demo-write-key}"
unset RETL_PROJECT  # the bundled demo project
.venv/bin/python -m retl_assets.demo.generate
.venv/bin/retl emulate customerio --port 8811 > .retl-emulator.log 2>&1 &
emulator=$!
trap 'kill $emulator 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:8811/healthz >/dev/null 2>&1 && break
  sleep 0.2
done
.venv/bin/retl validate
.venv/bin/retl sync contacts 2>/dev/null
.venv/bin/retl sync companies 2>/dev/null
echo
echo "The emulator now holds:"
curl -s http://127.0.0.1:8811/_emulator/state | .venv/bin/python -c \
  'import json,sys; s=json.load(sys.stdin); print(f"  {len(s[\"profiles\"])} profiles, {len(s[\"groups\"])} groups, {len(s[\"events\"])} events, {s[\"stats\"][\"duplicates\"]} duplicates dropped")'
cat <<MSG

Next:
  open the Dagster UI on this project (runs above are in its history):
    DAGSTER_HOME=$PWD CIO_WRITE_KEY=$CIO_WRITE_KEY .venv/bin/dagster dev -w workspace.yaml
  keep an emulator running for syncs started from the UI:
    .venv/bin/retl emulate customerio --port 8811
MSG
