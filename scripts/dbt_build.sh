#!/usr/bin/env bash
# Run `dbt build` (seeds, models and their tests) on the example project in
# examples/dbt with the extension in build/release (run scripts/build.sh first)
# and dbt from .venv (scripts/setup_venv.sh). Extra arguments go to dbt build.
# Everything dbt writes stays in examples/dbt/{target,logs} (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
[ -f build/release/lmm.duckdb_extension ] || { echo "build/release/lmm.duckdb_extension is missing: run scripts/build.sh" >&2; exit 1; }
# No usage statistics, no version check: nothing but local work.
export DO_NOT_TRACK=1 DBT_SEND_ANONYMOUS_USAGE_STATS=false DBT_VERSION_CHECK=false
# plain text logs
export DBT_USE_COLORS=false
# profiles.yml starts its paths (database, extension) here
export LMM_DBT_DIR="$ROOT/examples/dbt"
# A fresh database each run, so the run shows that everything builds from the seeds.
rm -f "$LMM_DBT_DIR/target/lmm_example.duckdb" "$LMM_DBT_DIR/target/lmm_example.duckdb.wal"
# The seeds copied from tests/fixtures must still match their sources.
.venv/bin/python examples/dbt/scripts/make_seeds.py --check
cd "$LMM_DBT_DIR"
"$ROOT/.venv/bin/dbt" build --profiles-dir . --project-dir . "$@"
