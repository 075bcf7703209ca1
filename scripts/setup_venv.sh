#!/usr/bin/env bash
# Create .venv with the pinned Python packages of requirements-test.txt and the
# files it includes (idempotent: reinstalls when any of them changed).
set -euo pipefail
cd "$(dirname "$0")/.."
REQS="requirements-test.txt examples/dbt/requirements.txt examples/python/requirements.txt"
if [ ! -x .venv/bin/python ] || ! cat $REQS | cmp -s - .venv/.requirements 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
  cat $REQS > .venv/.requirements
fi
