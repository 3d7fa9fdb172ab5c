#!/usr/bin/env bash
# A throw-away 3-node MariaDB Galera cluster on loopback, for the scale-out
# tests (issue 13).
#
#   bash .ci/galera.sh start   # install galera-4/rsync if missing, start, wait for Synced x3
#   bash .ci/galera.sh urls    # mysql://root@127.0.0.1:P/test for the three nodes, comma-separated
#   bash .ci/galera.sh stop    # kill the three nodes, remove all state
#   bash .ci/galera.sh kill N / restart N   # crash node N (0-2) / rejoin it (IST), for the tests
#
# Ports (override the base with GALERA_PORT_BASE, default 13306): node i
# (0, 1, 2) serves SQL on BASE+i, gcomm on 14567+10i, IST on 14568+10i and
# rsync SST on 14444+10i (these move with GALERA_GCOMM_BASE/GALERA_SST_BASE).
# Nothing is shared with a system MariaDB: each node has its own
# --defaults-file (so /etc/mysql is not read), datadir, socket, pid file and
# error log under GALERA_DIR (default ${TMPDIR:-/tmp}/advtok-galera).
# root has an empty password over TCP, and database `test` exists.
set -euo pipefail

SQL_BASE=${GALERA_PORT_BASE:-13306}
GCOMM_BASE=${GALERA_GCOMM_BASE:-14567}
SST_BASE=${GALERA_SST_BASE:-14444}
DIR=${GALERA_DIR:-${TMPDIR:-/tmp}/advtok-galera}
PROVIDER=/usr/lib/galera/libgalera_smm.so
NODES=(0 1 2)

log() { echo "[galera] $*" >&2; }

sql_port() { echo $((SQL_BASE + $1)); }
gcomm_port() { echo $((GCOMM_BASE + 10 * $1)); }
ist_port() { echo $((GCOMM_BASE + 1 + 10 * $1)); }
sst_port() { echo $((SST_BASE + 10 * $1)); }

q() { # node, sql: one value, no headers; uses TCP and our port only
    mariadb --no-defaults -h 127.0.0.1 -P "$(sql_port "$1")" -u root -N -B -e "$2"
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

ensure_packages() {
    local missing=()
    [ -f "$PROVIDER" ] || missing+=(galera-4)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

write_cnf() { # node
    local n=$1 addrs="" i
    for i in "${NODES[@]}"; do addrs+="${addrs:+,}127.0.0.1:$(gcomm_port "$i")"; done
    cat >"$DIR/node$n.cnf" <<EOF
[mysqld]
user = mysql
datadir = $DIR/node$n/data
socket = $DIR/node$n/mysqld.sock
pid-file = $DIR/node$n/mysqld.pid
log-error = $DIR/node$n/error.log
port = $(sql_port "$n")
bind-address = 127.0.0.1
default_storage_engine = InnoDB
binlog_format = ROW
innodb_autoinc_lock_mode = 2
# small and fast: a test cluster on a shared 2-core machine
innodb_buffer_pool_size = 64M
innodb_log_file_size = 16M
innodb_flush_log_at_trx_commit = 2
performance_schema = OFF
max_connections = 500
wsrep_on = ON
wsrep_provider = $PROVIDER
wsrep_cluster_name = advtok
wsrep_cluster_address = gcomm://$addrs
wsrep_node_name = node$n
wsrep_node_address = 127.0.0.1:$(gcomm_port "$n")
wsrep_provider_options = "gmcast.listen_addr=tcp://127.0.0.1:$(gcomm_port "$n");ist.recv_addr=127.0.0.1:$(ist_port "$n");gcache.size=32M"
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:$(sst_port "$n")
wsrep_slave_threads = 2
EOF
}

start_node() { # node [extra mariadbd args]
    local n=$1; shift
    # setsid: the node (and the rsync daemons its SST scripts spawn) in a
    # process group of its own, which `stop` kills by id.
    setsid /usr/sbin/mariadbd --defaults-file="$DIR/node$n.cnf" "$@" \
        >>"$DIR/node$n/stdout.log" 2>&1 </dev/null &
    echo $! >"$DIR/node$n.pgid"
}

synced() { # node
    local state size
    state=$(q "$1" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE_COMMENT'" 2>/dev/null) || return 1
    size=$(q "$1" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_CLUSTER_SIZE'" 2>/dev/null) || return 1
    [ "$state" = Synced ] && [ "$size" = "${2:-3}" ]
}

wait_until() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then
            log "timed out waiting for $what"
            local n
            for n in "${NODES[@]}"; do
                [ -f "$DIR/node$n/error.log" ] && { log "--- node$n error.log (tail)"; tail -n 25 "$DIR/node$n/error.log" >&2; }
            done
            return 1
        fi
        sleep 0.2
    done
}

alive() { # node
    [ -f "$DIR/node$1.pgid" ] && kill -0 "$(cat "$DIR/node$1.pgid")" 2>/dev/null
}

cmd_start() {
    local t0=$SECONDS n
    if [ -d "$DIR" ]; then
        if alive 0 || alive 1 || alive 2; then
            log "already running under $DIR (run stop first)"; return 1
        fi
        rm -rf "$DIR"
    fi
    ensure_packages
    for n in "${NODES[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$(sql_port "$n")") 2>/dev/null; then
            log "port $(sql_port "$n") is already in use"; return 1
        fi
    done
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    for n in "${NODES[@]}"; do mkdir -p "$DIR/node$n"; write_cnf "$n"; done
    # One mariadb-install-db; the joiners get a copy (rsync SST replaces it
    # with node 0's state anyway, so installing three times only costs time).
    mariadb-install-db --defaults-file="$DIR/node0.cnf" --user=mysql \
        --auth-root-authentication-method=normal --skip-test-db \
        --wsrep-on=OFF >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; return 1; }
    for n in 1 2; do cp -a "$DIR/node0/data" "$DIR/node$n/data"; done
    chown -R mysql:mysql "$DIR"

    start_node 0 --wsrep-new-cluster
    wait_until 60 "node0 to bootstrap" synced 0 1
    # root with an empty password over TCP (install-db makes root@localhost
    # only); DDL replicates to the joiners.
    q 0 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
         CREATE DATABASE IF NOT EXISTS test;"
    # Both joiners at once: node 0 donates to one, the other waits its turn.
    start_node 1
    start_node 2
    for n in "${NODES[@]}"; do wait_until 60 "node$n to be Synced in a cluster of 3" synced "$n" 3; done
    log "3 nodes Synced (cluster_size=3) in $((SECONDS - t0)) s: $(cmd_urls)"
}

cmd_stop() {
    local n pg
    for n in "${NODES[@]}"; do
        if alive "$n"; then
            pg=$(cat "$DIR/node$n.pgid")
            # The state is thrown away: no need for a clean shutdown.
            kill -KILL -- "-$pg" 2>/dev/null || kill -KILL "$pg" 2>/dev/null || true
        fi
    done
    for n in "${NODES[@]}"; do
        if [ -f "$DIR/node$n.pgid" ]; then
            pg=$(cat "$DIR/node$n.pgid")
            while kill -0 "$pg" 2>/dev/null; do sleep 0.1; done
        fi
    done
    rm -rf "$DIR"
    log "stopped"
}

cmd_kill() { # node index: SIGKILL, as a crash would
    local n=$1
    alive "$n" || { log "node$n is not running"; return 1; }
    local pg; pg=$(cat "$DIR/node$n.pgid")
    kill -KILL -- "-$pg" 2>/dev/null || kill -KILL "$pg"
    while kill -0 "$pg" 2>/dev/null; do sleep 0.1; done
    log "node$n killed"
}

cmd_restart() { # node index: recover its position, rejoin (IST), wait for Synced
    local n=$1 t0=$SECONDS pos
    if alive "$n"; then log "node$n is running"; return 0; fi
    # A crashed node does not know its last seqno (grastate.dat says -1):
    # --wsrep-recover reads it from InnoDB, so the node can ask for IST
    # rather than a full SST.
    /usr/sbin/mariadbd --defaults-file="$DIR/node$n.cnf" --wsrep-recover \
        --log-error="$DIR/node$n/recover.log" >/dev/null 2>&1 || true
    pos=$(sed -n 's/.*WSREP: Recovered position: *\([^ ]*\).*/\1/p' "$DIR/node$n/recover.log" | tail -n 1)
    if [ -n "$pos" ]; then
        start_node "$n" --wsrep-start-position="$pos"
    else
        start_node "$n"
    fi
    wait_until 60 "node$n to rejoin" synced "$n" 3
    log "node$n rejoined at ${pos:-?} in $((SECONDS - t0)) s"
}

cmd_urls() {
    local out="" n
    for n in "${NODES[@]}"; do out+="${out:+,}mysql://root@127.0.0.1:$(sql_port "$n")/test"; done
    echo "$out"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    urls) cmd_urls ;;
    kill) cmd_kill "${2:?node index 0-2}" ;;
    restart) cmd_restart "${2:?node index 0-2}" ;;
    *) echo "usage: $0 start|stop|urls|kill N|restart N" >&2; exit 2 ;;
esac
