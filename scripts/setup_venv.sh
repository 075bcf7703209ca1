#!/usr/bin/env bash
# Create .venv with the pinned Python packages of requirements-test.txt (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! cmp -s requirements-test.txt .venv/.requirements 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
  cp requirements-test.txt .venv/.requirements
fi
