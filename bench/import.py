#!/usr/bin/env python3
"""The import benchmark (issue 15): builds a SQLite Django database of N
users, each with a DRF token, then times `advanced-token import-django` into
SQLite and into PostgreSQL under /usr/bin/time -v, at N/10 and N users (peak
memory must not grow with N: rows are streamed), and a second run at N
(every row already there). Prints one markdown table. Run it through
bench/import.sh, which builds the release binary first.

BENCH_IMPORT_USERS (default 100000) sets N; ADVANCED_TOKEN_BENCH_POSTGRES
(default postgres://postgres@127.0.0.1:5432/test) the PostgreSQL server,
whose rows are skipped if psql cannot reach it.
"""

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "target/release/advanced-token")
N = int(os.environ.get("BENCH_IMPORT_USERS", "100000"))
PG = os.environ.get("ADVANCED_TOKEN_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
TMP = tempfile.mkdtemp(prefix="advtok-import-bench-")
# One fixed, cheap hash for every user: the import copies hashes, it never
# computes one (Django's test vector for "lètmein").
HASH = "pbkdf2_sha256$390000$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c="

# The tables as Django 5.x and DRF create them on SQLite (see
# tests/suite/django.rs for where the columns come from).
SCHEMA = """
CREATE TABLE "auth_user" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "password" varchar(128) NOT NULL, "last_login" datetime NULL, "is_superuser" bool NOT NULL, "username" varchar(150) NOT NULL UNIQUE, "last_name" varchar(150) NOT NULL, "email" varchar(254) NOT NULL, "is_staff" bool NOT NULL, "is_active" bool NOT NULL, "date_joined" datetime NOT NULL, "first_name" varchar(150) NOT NULL);
CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, "created" datetime NOT NULL, "user_id" integer NOT NULL UNIQUE REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED);
"""


def log(msg):
    print(f"[import-bench] {msg}", file=sys.stderr, flush=True)


def django_db(n):
    path = os.path.join(TMP, f"django-{n}.sqlite3")
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany(
        "INSERT INTO auth_user VALUES (?, ?, NULL, 0, ?, '', '', 0, 1, '2024-01-02 03:04:05.123456', '')",
        ((i, HASH, f"user{i:06d}") for i in range(1, n + 1)),
    )
    db.executemany(
        "INSERT INTO authtoken_token VALUES (?, '2024-02-02 00:00:00', ?)",
        ((os.urandom(20).hex(), i) for i in range(1, n + 1)),
    )
    db.commit()
    db.close()
    return f"sqlite://{path}"


def pg_available():
    try:
        subprocess.run(["psql", PG, "-Atc", "select 1"], check=True, capture_output=True, timeout=5)
        return True
    except Exception:
        return False


def pg_db(name):
    db = f"advtok_import_bench_{name}"
    subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=True, capture_output=True)
    subprocess.run(["psql", PG, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    return PG.rsplit("/", 1)[0] + "/" + db, db


def import_run(target, source, batch=500):
    """Runs one import; returns (seconds, peak RSS MiB, the report's users line)."""
    env = dict(os.environ)
    env["ROCKET_DATABASES"] = f'{{advanced_token={{url="{target}"}}}}'
    env["ROCKET_LOG_LEVEL"] = "critical"
    out = subprocess.run(
        ["/usr/bin/time", "-v", CLI, "import-django", source, "--batch-size", str(batch)],
        env=env, cwd=TMP, capture_output=True, text=True, check=True,
    )
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    users = re.search(r"users: +(.*)", out.stdout).group(1)
    return secs, rss, users


def main():
    if not os.path.exists(CLI):
        sys.exit(f"{CLI} is missing: run bench/import.sh")
    sizes = sorted({max(N // 10, 1), N})
    sources = {}
    for n in sizes:
        log(f"building a Django database of {n} users and {n} tokens")
        sources[n] = django_db(n)
    targets = [("SQLite", lambda n: (f"sqlite://{TMP}/at-{n}.sqlite?mode=rwc", None))]
    if pg_available():
        targets.append(("PostgreSQL", lambda n: pg_db(n)))
    else:
        log(f"PostgreSQL not reachable at {PG}: its rows are skipped")
    rows = []
    for name, make in targets:
        for n in sizes:
            url, pg = make(n)
            log(f"importing {n} users into {name}")
            first = import_run(url, sources[n])
            rows.append((name, n, "first", *first))
            if n == N:
                # The same import in batches of 5,000: how much of the time
                # is per-transaction work.
                url5, pg5 = make(f"{n}_b5000")
                log(f"importing {n} users into {name}, batches of 5000")
                rows.append((name, n, "first, batches of 5,000", *import_run(url5, sources[n], 5000)))
                if pg5:
                    subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {pg5} WITH (FORCE)"], capture_output=True)
            if n == N:
                log(f"importing the same {n} users again into {name}")
                rows.append((name, n, "again", *import_run(url, sources[n])))
            if pg:
                subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {pg} WITH (FORCE)"], capture_output=True)
    print("| target | users + tokens | run | time (s) | users/s | peak RSS (MiB) | report |")
    print("|---|---:|---|---:|---:|---:|---|")
    for name, n, run, secs, rss, users in rows:
        print(f"| {name} | {n:,} + {n:,} | {run} | {secs:.1f} | {n / secs:,.0f} | {rss:.1f} | {users} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
