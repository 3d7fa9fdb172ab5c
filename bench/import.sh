#!/usr/bin/env bash
# The import benchmark (issue 15): 100,000 users and 100,000 DRF tokens from
# a SQLite Django database into SQLite and into PostgreSQL, time and peak
# memory. A few minutes on 2 cores. See bench/import.py for the settings.
#
#   bash bench/import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[import-bench] building the release binary" >&2
cargo build --release --quiet --bin advanced-token
python3 bench/import.py
