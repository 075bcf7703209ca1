#!/usr/bin/env bash
# Run every test: the Rust core (cargo test), then the SQL tests (pytest) on the
# built extension in Python duckdb 2.0.0 and duckdb-cli 1.5.6 (pinned, in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
cargo test --release
bash scripts/build.sh
.venv/bin/python -m pytest tests/sql -q -p no:cacheprovider "$@"
