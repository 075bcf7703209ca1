#!/usr/bin/env bash
# Run every test: the Rust core (cargo test), then, on the built extension,
# `dbt build` of examples/dbt (its seeds, models and dbt tests) and the SQL
# tests (pytest) in Python duckdb 2.0.0 and duckdb-cli 1.5.6, with the Python
# example's smoke test (everything pinned, in .venv); then the Python
# package (pip install ./python, bundling the built extension) and lmm.spark
# on a local Spark cluster of two workers (tests/spark; a JDK is installed
# from Debian when none is found).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
cargo test --release
bash scripts/build.sh
bash scripts/dbt_build.sh
bash scripts/setup_java.sh
.venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
.venv/bin/python -m pytest tests/sql tests/examples tests/python tests/spark -q -p no:cacheprovider "$@"
