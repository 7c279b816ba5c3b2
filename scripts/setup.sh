#!/usr/bin/env bash
# Create .venv and install retl with its test extras; does nothing when already current.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=".venv/.retl-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
# The vendors' official Node libraries for the conformance tests (test-only), when node is
# here: `npm ci` from the lockfile whenever node_modules is missing or older than it. Without
# node, or if the install fails, those tests skip and say why.
node_dir="retl_assets_tests/conformance/node"
node_stamp="$node_dir/node_modules/.retl-installed"
node_want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
if command -v node >/dev/null && command -v npm >/dev/null \
    && [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
  if (cd "$node_dir" && npm ci --quiet --no-audit --no-fund --ignore-scripts >/dev/null); then
    echo "$node_want" > "$node_stamp"
  else
    echo "setup: npm ci in $node_dir failed; the Node conformance tests will skip" >&2
  fi
fi
