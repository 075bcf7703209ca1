#!/usr/bin/env bash
# Run every test: the Rust core (cargo test), then, on the built extension,
# `dbt build` of examples/dbt (its seeds, models and dbt tests) and the SQL
# tests (pytest) in Python duckdb 2.0.0 and duckdb-cli 1.5.6, with the Python
# example's smoke test (everything pinned, in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
cargo test --release
bash scripts/build.sh
bash scripts/dbt_build.sh
.venv/bin/python -m pytest tests/sql tests/examples -q -p no:cacheprovider "$@"
