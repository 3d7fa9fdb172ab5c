#!/usr/bin/env bash
# Two pgbouncers in front of the PostgreSQL on 127.0.0.1:5432, for the
# scale-out tests (issue 13).
#
#   bash .ci/pgbouncer.sh start     # install pgbouncer if missing, start both, check both answer
#   bash .ci/pgbouncer.sh url       # the session-mode URL (database `test`)
#   bash .ci/pgbouncer.sh url-tx    # the transaction-mode URL
#   bash .ci/pgbouncer.sh stop      # stop both, remove their state
#
# pgbouncer's defaults except what it needs to run at all: a port of its own
# (PGBOUNCER_PORT, default 16432, session mode; +1 is transaction mode), trust
# auth with `postgres` in the user list, and a wildcard database entry so the
# databases tests create on the fly are reachable. In particular
# ignore_startup_parameters is NOT set: sqlx sends extra_float_digits, and the
# crate has to cope with a default pgbouncer. pgbouncer refuses to run as
# root, so it runs as `postgres`.
set -euo pipefail

PORT=${PGBOUNCER_PORT:-16432}
TX_PORT=$((PORT + 1))
DIR=${PGBOUNCER_DIR:-${TMPDIR:-/tmp}/advtok-pgbouncer}
RUN_AS=${PGBOUNCER_USER:-postgres}

log() { echo "[pgbouncer] $*" >&2; }

write_ini() { # name, port, pool_mode
    cat >"$DIR/$1.ini" <<EOF
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir = $DIR
pool_mode = $3
auth_type = trust
auth_file = $DIR/userlist.txt
pidfile = $DIR/$1.pid
logfile = $DIR/$1.log
EOF
}

up() { # port
    psql "postgres://postgres@127.0.0.1:$1/test" -Atc 'select 1' >/dev/null 2>&1
}

cmd_start() {
    if ! command -v pgbouncer >/dev/null; then
        log "installing pgbouncer"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq pgbouncer >/dev/null
    fi
    if [ -f "$DIR/session.pid" ] || [ -f "$DIR/transaction.pid" ]; then cmd_stop; fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    echo '"postgres" ""' >"$DIR/userlist.txt"
    write_ini session "$PORT" session
    write_ini transaction "$TX_PORT" transaction
    chown -R "$RUN_AS" "$DIR"
    local name
    for name in session transaction; do
        runuser -u "$RUN_AS" -- pgbouncer -q -d "$DIR/$name.ini"
    done
    local p
    for p in "$PORT" "$TX_PORT"; do
        for _ in $(seq 1 50); do up "$p" && break; sleep 0.1; done
        if ! up "$p"; then
            log "pgbouncer on $p does not answer"; cat "$DIR"/*.log >&2; return 1
        fi
    done
    log "session mode on $PORT, transaction mode on $TX_PORT"
}

cmd_stop() {
    local name pid
    for name in session transaction; do
        if [ -f "$DIR/$name.pid" ]; then
            pid=$(cat "$DIR/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$DIR"
    log "stopped"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) echo "postgres://postgres@127.0.0.1:$PORT/test" ;;
    url-tx) echo "postgres://postgres@127.0.0.1:$TX_PORT/test" ;;
    *) echo "usage: $0 start|stop|url|url-tx" >&2; exit 2 ;;
esac
