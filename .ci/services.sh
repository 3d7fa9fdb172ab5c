#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and
# MariaDB (127.0.0.1:3306, root without password, database `test`) are
# running: starts them if they are installed but stopped, installs them from
# Debian's packages if absent. Exits non-zero if either cannot be reached.
set -euo pipefail

log() { echo "[services] $*" >&2; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, command...
    local name=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "$name is not reachable"; return 1
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

ensure_postgres() {
    if command -v pg_isready >/dev/null && pg_up; then log "PostgreSQL is running"; else
        if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
            log "installing PostgreSQL"; apt_install postgresql
            local conf; conf=$(ls -d /etc/postgresql/*/main | head -1)
            # trust auth on loopback, as on the CI machines
            sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
            sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$conf/pg_hba.conf"
        fi
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        wait_for PostgreSQL pg_up
    fi
    if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
        psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
    fi
    psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null
}

my_up() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1'; }

ensure_mariadb() {
    if command -v mariadb >/dev/null && my_up >/dev/null 2>&1; then log "MariaDB is running"; else
        if [ ! -x /usr/sbin/mariadbd ]; then
            log "installing MariaDB"; apt_install mariadb-server
        fi
        log "starting MariaDB"
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        wait_for MariaDB mariadb -u root -e 'select 1'
        # A fresh Debian install authenticates root by socket only: allow the
        # empty-password TCP login the tests use.
        if ! my_up >/dev/null 2>&1; then
            mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
        fi
        wait_for MariaDB my_up
    fi
    mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test'
}

ensure_postgres
ensure_mariadb
log "both servers are up"
