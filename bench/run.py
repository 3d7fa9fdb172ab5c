#!/usr/bin/env python3
"""The benchmark: loads release builds of the bench server with wrk and
prints one markdown table. Every figure is the median of BENCH_RUNS runs
(default 3) of BENCH_SECONDS seconds (default 4); each comparison is measured
side by side, alternating, in the same run. Run it through bench/run.sh.
"""

import atexit
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target/release/examples/bench_server")
CLI = os.path.join(ROOT, "target/release/advanced-token")
ARGON2 = os.path.join(ROOT, "target/release/examples/argon2_rate")
LUA = os.path.join(ROOT, "bench/wrk_report.lua")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
PG = os.environ.get("ADVANCED_TOKEN_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
PASSWORD = "bench password"

TMP = tempfile.mkdtemp(prefix="advtok-bench-")
PROCS = []


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(TMP, ignore_errors=True)


atexit.register(cleanup)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_inline(settings):
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return str(v)
    return "{" + ",".join(f"{k}={val(v)}" for k, v in settings.items()) + "}"


def env_for(db_url, settings, port=None):
    env = dict(os.environ)
    env.update({
        "ROCKET_DATABASES": f'{{advanced_token={{url="{db_url}"}}}}',
        "ROCKET_ADVANCED_TOKEN": toml_inline(settings),
        "ROCKET_LOG_LEVEL": "off",
        "ROCKET_CLI_COLORS": "false",
        "ROCKET_ADDRESS": "127.0.0.1",
    })
    if port:
        env["ROCKET_PORT"] = str(port)
    return env


def cli(db_url, *args):
    subprocess.run([CLI, *args], env=env_for(db_url, {}), cwd=TMP, check=True,
                   stdout=subprocess.DEVNULL)


class Server:
    def __init__(self, db_url, settings):
        self.port = free_port()
        self.proc = subprocess.Popen([SERVER], env=env_for(db_url, settings, self.port), cwd=TMP,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.append(self.proc)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("the bench server did not start")
                time.sleep(0.05)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def login(self, user):
        req = urllib.request.Request(self.url("/auth/login/"), method="POST",
                                     data=json.dumps({"username": user, "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as res:
            return json.load(res)["token"]

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(url, token=None, conns=32, threads=2, seconds=None, post_json=None, background=False):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(seconds or SECONDS)}s", "--latency", "-s", LUA]
    env = dict(os.environ)
    if token:
        cmd += ["-H", f"Authorization: Token {token}"]
    if post_json is not None:
        env.update({"WRK_METHOD": "POST", "WRK_BODY": json.dumps(post_json),
                    "WRK_CONTENT_TYPE": "application/json"})
    cmd.append(url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if background:
        return proc
    return parse_wrk(proc)


def parse_wrk(proc):
    out, _ = proc.communicate()
    m = re.search(r"RESULT (\S+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    rps, p50, p99, non2xx, errors = m.groups()
    return {"rps": float(rps), "p50": int(p50) / 1000, "p99": int(p99) / 1000,
            "non2xx": int(non2xx), "errors": int(errors)}


def median(results, key):
    return statistics.median(r[key] for r in results)


def check_ok(results, what):
    bad = sum(r["non2xx"] for r in results)
    if bad:
        raise SystemExit(f"{what}: {bad} non-2xx responses: the benchmark is measuring failures")


ROWS = []


def row(measure, value, baseline, ratio, target, rss):
    ROWS.append((measure, value, baseline, ratio, target, rss))


# ----- databases -------------------------------------------------------------

def sqlite_db(name):
    path = os.path.join(TMP, f"{name}.sqlite")
    return f"sqlite://{path}?mode=rwc", path


def pg_available():
    try:
        subprocess.run(["psql", PG, "-Atc", "select 1"], check=True, capture_output=True, timeout=5)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def pg_db(name):
    db = f"advtok_bench_{name}"
    subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=True, capture_output=True)
    subprocess.run(["psql", PG, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    base = PG.rsplit("/", 1)[0]
    return f"{base}/{db}", db


def pg_drop(db):
    subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)


def seed_tokens(kind, target, count):
    """Bulk-inserts `count` tokens for a user named `seed` (no argon2)."""
    now = int(time.time())
    if kind == "sqlite":
        con = sqlite3.connect(target)
        uid = con.execute("SELECT id FROM advanced_token_users WHERE username = 'seed'").fetchone()[0]
        con.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) "
            "SELECT ?, printf('%064x', i), ?, ?, NULL FROM n", (count, uid, now, now))
        con.commit()
        con.execute("ANALYZE")
        con.close()
    else:
        sql = ("INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at) "
               f"SELECT u.id, md5(i::text) || md5((i + 1)::text), {now}, {now} "
               f"FROM generate_series(1, {count}) i, advanced_token_users u WHERE u.username = 'seed'; "
               "ANALYZE advanced_token_tokens;")
        subprocess.run(["psql", target, "-qc", sql], check=True, capture_output=True)


# ----- scenarios -------------------------------------------------------------

def guard_overhead(kind, db_url, cache):
    server = Server(db_url, {"token_cache": cache, "login_throttle": False})
    token = server.login("bench")
    guarded, opened = [], []
    wrk(server.url("/api/hello/"), token, seconds=1)
    wrk(server.url("/bench/open/"), seconds=1)
    for _ in range(RUNS):
        guarded.append(wrk(server.url("/api/hello/"), token))
        opened.append(wrk(server.url("/bench/open/")))
    check_ok(guarded + opened, "guard overhead")
    rss = server.peak_rss_mib()
    server.stop()
    g, o = median(guarded, "rps"), median(opened, "rps")
    label = f"guarded / unguarded GET, {kind}, cache {'on' if cache else 'off'}"
    row(f"{label}: requests/s", f"{g:,.0f}", f"{o:,.0f}", f"{g / o:.2f}", "≥ 0.85" if cache else "", f"{rss:.0f}")
    row(f"{label}: p50 / p99 ms",
        f"{median(guarded, 'p50'):.2f} / {median(guarded, 'p99'):.2f}",
        f"{median(opened, 'p50'):.2f} / {median(opened, 'p99'):.2f}", "", "", "")


def login_vs_argon2(db_url):
    rates = []
    for _ in range(RUNS):
        out = subprocess.run([ARGON2, str(SECONDS)], capture_output=True, text=True, check=True).stdout
        rates.append(float(out.split()[0]))
    limit = statistics.median(rates)
    server = Server(db_url, {"login_throttle": False})
    body = {"username": "bench", "password": PASSWORD}
    wrk(server.url("/auth/login/"), conns=16, seconds=1, post_json=body)
    logins = [wrk(server.url("/auth/login/"), conns=16, post_json=body) for _ in range(RUNS)]
    check_ok(logins, "login")
    rss = server.peak_rss_mib()
    server.stop()
    got = median(logins, "rps")
    row("successful logins/s vs raw argon2id verifications/s (all cores)", f"{got:,.1f}", f"{limit:,.1f}",
        f"{got / limit:.2f}", "≥ 0.9", f"{rss:.0f}")


def flood(db_url):
    server = Server(db_url, {"login_throttle": False})
    token = server.login("bench")
    # Another user floods: its logins must not evict bench's token.
    body = {"username": "flood", "password": PASSWORD}
    idle, loaded, floods = [], [], []
    for _ in range(RUNS):
        idle.append(wrk(server.url("/api/hello/"), token, conns=8, threads=1))
        flooder = wrk(server.url("/auth/login/"), conns=64, threads=1, seconds=SECONDS + 2,
                      post_json=body, background=True)
        time.sleep(1)
        loaded.append(wrk(server.url("/api/hello/"), token, conns=8, threads=1))
        flood_result = parse_wrk(flooder)
        if flood_result["rps"] <= 0:
            raise SystemExit("the login flood made no requests")
        floods.append(flood_result)
    check_ok(idle + loaded, "flood")
    # Rejected logins (a 503 from a full hashing queue, say) would make the
    # flood cheaper than it claims to be: it must be logins that succeed.
    check_ok(floods, "login flood")
    rss = server.peak_rss_mib()
    server.stop()
    i, f = median(idle, "p99"), median(loaded, "p99")
    row("guarded GET p99 ms during a login flood vs idle", f"{f:.2f}", f"{i:.2f}", f"{f / i:.2f}", "≤ 2", f"{rss:.0f}")


def scale(kind):
    results = {}
    rss = {}
    names = []
    for count in (1_000, 1_000_000):
        if kind == "sqlite":
            db_url, target = sqlite_db(f"scale{count}")
        else:
            db_url, name = pg_db(f"scale{count}")
            target = db_url
            names.append(name)
        cli(db_url, "create-user", "bench", "--password", PASSWORD)
        cli(db_url, "create-user", "seed", "--password", PASSWORD)
        log(f"seeding {count:,} tokens into {kind}")
        seed_tokens(kind, target, count)
        server = Server(db_url, {"token_cache": False, "login_throttle": False})
        results[count] = (server, server.login("bench"))
    runs = {1_000: [], 1_000_000: []}
    for count, (server, token) in results.items():
        wrk(server.url("/api/hello/"), token, seconds=1)
    for _ in range(RUNS):
        for count, (server, token) in results.items():
            runs[count].append(wrk(server.url("/api/hello/"), token))
    for count, (server, _) in results.items():
        rss[count] = server.peak_rss_mib()
        server.stop()
    for name in names:
        pg_drop(name)
    check_ok(runs[1_000] + runs[1_000_000], "scale")
    small, big = median(runs[1_000], "p50"), median(runs[1_000_000], "p50")
    row(f"guarded GET p50 ms, 1M vs 1k tokens, {kind}, cache off", f"{big:.2f}", f"{small:.2f}",
        f"{big / small:.2f}", "≤ 1.2", f"{rss[1_000_000]:.0f}")
    rb, rs = median(runs[1_000_000], "rps"), median(runs[1_000], "rps")
    row(f"guarded GET requests/s, 1M vs 1k tokens, {kind}, cache off", f"{rb:,.0f}", f"{rs:,.0f}",
        f"{rb / rs:.2f}", "", "")


def main():
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (bench/run.sh installs it)")
    started = time.time()
    use_pg = pg_available()
    if not use_pg:
        log(f"PostgreSQL not reachable at {PG}: PostgreSQL rows are skipped")

    log("guard overhead")
    for kind in (["sqlite", "postgres"] if use_pg else ["sqlite"]):
        if kind == "sqlite":
            db_url, _ = sqlite_db("guard")
        else:
            db_url, pg_name = pg_db("guard")
        cli(db_url, "create-user", "bench", "--password", PASSWORD)
        for cache in (True, False):
            guard_overhead(kind, db_url, cache)
        if kind == "postgres":
            pg_drop(pg_name)

    log("login against the argon2 limit")
    db_url, _ = sqlite_db("login")
    cli(db_url, "create-user", "bench", "--password", PASSWORD)
    login_vs_argon2(db_url)

    log("login flood")
    db_url, _ = sqlite_db("flood")
    cli(db_url, "create-user", "bench", "--password", PASSWORD)
    cli(db_url, "create-user", "flood", "--password", PASSWORD)
    flood(db_url)

    log("table scale")
    for kind in (["sqlite", "postgres"] if use_pg else ["sqlite"]):
        scale(kind)

    print(f"\n{os.cpu_count()} cores; {RUNS} runs of {SECONDS:g} s per figure (medians); "
          f"wrk and the server share the machine; {time.time() - started:.0f} s in all.\n")
    print("| measurement | value | baseline | ratio | target | server peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
