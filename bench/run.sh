#!/usr/bin/env bash
# The benchmark, in one command: builds the release binaries, makes sure wrk
# is installed, loads the servers it starts on 127.0.0.1, prints one markdown
# table (medians, ratios side by side), then the criterion micro-benchmark.
# Every process it starts is stopped when it ends. A few minutes on 2 cores.
#
#   bash bench/run.sh
#
# BENCH_RUNS (default 3) and BENCH_SECONDS (default 4) set the runs per
# figure; ADVANCED_TOKEN_BENCH_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test) the PostgreSQL server whose rows
# are skipped if it is unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[bench] installing wrk from Debian's packages" >&2
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        echo "wrk is missing: install it (Debian: apt-get install wrk)" >&2
        exit 1
    fi
fi

echo "[bench] building release binaries" >&2
cargo build --release --quiet --bin advanced-token --example bench_server --example bare_server --example argon2_rate

python3 bench/run.py

echo
echo "Micro-benchmark (criterion): the hot path that needs no database"
cargo bench --quiet --bench hot_path -- --noplot 2>&1 | grep -E "time:" || true
