#!/usr/bin/env bash
# Build the DuckDB extension: build/release/lmm.duckdb_extension.
# Extra arguments go to append_footer.py (e.g. --platform linux_amd64).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
python3 scripts/append_footer.py "$@"
