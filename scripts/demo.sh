#!/usr/bin/env bash
# Build the extension and run example fits on the bundled sample data (in-memory DuckDB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
bash scripts/build.sh
.venv/bin/python examples/demo.py "$@"
