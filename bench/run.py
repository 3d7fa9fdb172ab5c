#!/usr/bin/env python3
"""The benchmark: loads release builds of the bench server with wrk and
prints one markdown table. Every figure is the median of BENCH_RUNS runs
(default 3) of BENCH_SECONDS seconds (default 4); each comparison is measured
side by side, alternating, in the same run. Run it through bench/run.sh.
"""

import atexit
import hashlib
import json
import math
import os
import random
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
BARE = os.path.join(ROOT, "target/release/examples/bare_server")
ROTATE = os.path.join(ROOT, "bench/rotate.py")
CLI = os.path.join(ROOT, "target/release/advanced-token")
ARGON2 = os.path.join(ROOT, "target/release/examples/argon2_rate")
LUA = os.path.join(ROOT, "bench/wrk_report.lua")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
PG = os.environ.get("ADVANCED_TOKEN_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
PASSWORD = "bench password"
# BENCH_PIN=1: servers on CPU 0 and wrk on CPU 1 (taskset), so the two do
# not trade cores between runs; what is measured is then the server's own
# cost per request, steadier on a noisy machine.
PIN = os.environ.get("BENCH_PIN") == "1"
SERVER_CPU = ["taskset", "-c", "0"] if PIN else []
WRK_CPU = ["taskset", "-c", "1"] if PIN else []

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


def on_cpu(cpu, default):
    """The command prefix that runs a process on CPU `cpu` (taskset), or
    `default` when `cpu` is None."""
    return default if cpu is None else ["taskset", "-c", str(cpu)]


class Server:
    def __init__(self, db_url, settings, binary=None, cpu=None):
        self.port = free_port()
        self.proc = subprocess.Popen(on_cpu(cpu, SERVER_CPU) + [binary or SERVER], env=env_for(db_url, settings, self.port), cwd=TMP,
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

    def cpu_seconds(self):
        """User + system CPU time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self):
        return self.status_kib("VmHWM") / 1024

    def rss_kib(self):
        return self.status_kib("VmRSS")

    def status_kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return float("nan")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(url, token=None, conns=32, threads=2, seconds=None, post_json=None, background=False,
        tokens_file=None, order=None, cpu=None):
    cmd = on_cpu(cpu, WRK_CPU) + ["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(seconds or SECONDS)}s", "--latency", "-s", LUA]
    env = dict(os.environ)
    if token:
        cmd += ["-H", f"Authorization: Token {token}"]
    if tokens_file:
        env["WRK_TOKENS"] = tokens_file
        if order:
            env["WRK_TOKENS_ORDER"] = order
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
    m = re.search(r"RESULT (\S+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    rps, p50, p99, non2xx, errors, requests = m.groups()
    return {"rps": float(rps), "p50": int(p50) / 1000, "p99": int(p99) / 1000,
            "non2xx": int(non2xx), "errors": int(errors), "requests": int(requests)}


def warm_cache(url, tokens_file, count):
    """Requests each of the `count` tokens once, in order, so the cache
    holds them all before anything is measured: on a slow host a pass of
    fixed length left half the tokens cold on PostgreSQL, and the figure
    measured the lookups. A pass too short for `count` is run again, longer
    (each pass starts over from the top of the list). Returns the last
    pass's result."""
    seconds = int(min(count, 100_000) / 10_000) + 2
    while True:
        res = wrk(url, seconds=seconds, tokens_file=tokens_file, order="seq")
        if res["requests"] >= count * 1.05 or seconds >= 600:
            return res
        seconds = min(600, math.ceil(seconds * count * 1.2 / max(res["requests"], 1)))


def median(results, key):
    return statistics.median(r[key] for r in results)


def paired(a, b, key="rps"):
    """The median of the per-round ratios a/b (each round ran a and b back
    to back, so a slow spell of the machine hits both), with a 95%
    bootstrap interval of that median: (median, low, high)."""
    ratios = [x[key] / y[key] for x, y in zip(a, b)]
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), meds[50], meds[-51]


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


def side_by_side(a, b, runs=None, servers=None, **kw):
    """Alternates wrk runs on two (url, token) targets; returns both lists.
    With `servers` (the two Server objects), each result also says the
    server's CPU time per request, in µs ("cpu_us")."""
    ra, rb = [], []
    for _ in range(runs or RUNS):
        for target, out, server in ((a, ra, servers and servers[0]), (b, rb, servers and servers[1])):
            out.append(wrk_on(server, *target, **kw) if server else wrk(*target, **kw))
    return ra, rb


def wrk_on(server, *args, **kw):
    """`wrk(*args, **kw)` against `server`; the result also says the
    server's CPU time per request, in µs ("cpu_us")."""
    before = server.cpu_seconds()
    res = wrk(*args, **kw)
    res["cpu_us"] = (server.cpu_seconds() - before) * 1e6 / max(res["requests"], 1)
    return res


def guarded_vs_bare(kind, db_url):
    """Issue 11: the demo's guarded route against a separate minimal Rocket
    app serving the same JSON at the same path, with no fairing at all."""
    server = Server(db_url, {"login_throttle": False})
    bare = Server(db_url, {}, binary=BARE)
    token = server.login("bench")
    g_url, b_url = server.url("/api/hello/"), bare.url("/api/hello/")
    wrk(g_url, token, seconds=1)
    wrk(b_url, token, seconds=1)
    guarded, plain = side_by_side((g_url, token), (b_url, token), servers=(server, bare))
    check_ok(guarded + plain, "guarded vs bare")
    rss, bare_rss = server.peak_rss_mib(), bare.peak_rss_mib()
    server.stop()
    bare.stop()
    g, b = median(guarded, "rps"), median(plain, "rps")
    label = f"demo's guarded GET / bare Rocket app, {kind}, cache on"
    row(f"{label}: requests/s", f"{g:,.0f}", f"{b:,.0f}", f"{g / b:.2f}", "≥ 0.93", f"{rss:.0f} / {bare_rss:.0f}")
    gc, bc = median(guarded, "cpu_us"), median(plain, "cpu_us")
    row(f"{label}: server CPU µs per request (ratio bare / guarded)", f"{gc:.1f}", f"{bc:.1f}", f"{bc / gc:.2f}",
        "≥ 0.93", "")
    m, lo, hi = paired(guarded, plain)
    row(f"{label}: per-round ratio, median of {len(guarded)} (95% bootstrap interval)", "", "",
        f"{m:.3f} ({lo:.3f}-{hi:.3f})", "≥ 0.93", "")
    row(f"{label}: p50 / p99 ms",
        f"{median(guarded, 'p50'):.2f} / {median(guarded, 'p99'):.2f}",
        f"{median(plain, 'p50'):.2f} / {median(plain, 'p99'):.2f}", "", "", "")


# The live tokens instance A serves in the rotation attack, each requested
# at random: an instance's working set. (With one token, a cache dropped
# on every rotation refills with one lookup and the attack hides.)
ROTATION_WORKING_SET = 10_000


def rotation_attack(limit, isolated=False):
    """Issue 12 item 2: two instances on one PostgreSQL; A's guarded
    requests/s (its working set of live tokens, at random) while one user
    rotates its token in a tight loop on B, against A's baseline,
    alternated. A control runs the same loop reading (GET token/, which
    revokes nothing): on a small machine the loop, B and PostgreSQL take
    CPU from A and wrk whatever the loop sends.

    `isolated`: A and its wrk on CPU 0, B and the loop on CPU 1, as two
    hosts would be (PostgreSQL, shared, runs where the kernel puts it).
    What is left of the attack's effect on A is then what reaches it
    through the database and its cache, not the loop's share of a core."""
    label = f"rotate{limit or 'default'}{'pinned' if isolated else ''}"
    db_url, name, path, _ = seeded_db("postgres", label, ROTATION_WORKING_SET)
    cli(db_url, "create-user", "rotator", "--password", PASSWORD)
    settings = {"login_throttle": False}
    if limit:
        settings["rotation_max_per_minute"] = limit
    cpus = (0, 1) if isolated else (None, None)
    a, b = Server(db_url, settings, cpu=cpus[0]), Server(db_url, settings, cpu=cpus[1])
    rot = b.login("rotator")
    url = a.url("/api/hello/")
    warm = warm_cache(url, path, ROTATION_WORKING_SET)
    idle, reading, attacked, rotations, b_cores = [], [], [], [], []
    for _ in range(RUNS):
        idle.append(wrk_on(a, url, tokens_file=path, cpu=cpus[0]))
        reading.append(under_loop(a, b, (url, path, rot), "read", cpus)[0])
        res, r, cores = under_loop(a, b, (url, path, rot), "rotate", cpus)
        attacked.append(res)
        rot = r["token"]
        rotations.append(r)
        b_cores.append(cores)
    if not sum(r["ok"] for r in rotations):
        raise SystemExit("the rotation loop rotated nothing")
    check_ok([warm] + idle + reading + attacked, "rotation attack")
    rss = a.peak_rss_mib()
    a.stop()
    b.stop()
    pg_drop(name)
    what = f"rotation_max_per_minute {limit:,}" if limit else "rotation_max_per_minute default (30)"
    if isolated:
        what += ", A and B on a core each"
    rotation_rows(what, idle, reading, attacked, rotations, b_cores, rss)


def under_loop(a, b, target, mode, cpus):
    """wrk on A (`target`: url, A's tokens file, B's token) while
    bench/rotate.py loops on B (`mode` "rotate" or "read"): A's result, the
    loop's report, B's cores in use. `cpus`: A's and B's CPU, or None."""
    url, path, rot = target
    extra = ["read"] if mode == "read" else []
    loop = subprocess.Popen(on_cpu(cpus[1], []) + [sys.executable, ROTATE, str(b.port), rot, str(SECONDS + 2)]
                            + extra, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    b_before, started = b.cpu_seconds(), time.time()
    res = wrk_on(a, url, tokens_file=path, cpu=cpus[0])
    cores = (b.cpu_seconds() - b_before) / (time.time() - started)
    out, _ = loop.communicate()
    r = json.loads(out)
    if r["other"]:
        raise SystemExit(f"the {mode} loop got answers other than 200 and 429: {r}")
    return res, r, cores


def rotation_rows(what, idle, reading, attacked, rotations, b_cores, rss):
    """The rows of `rotation_attack`."""
    i, c, x = median(idle, "rps"), median(reading, "rps"), median(attacked, "rps")
    took = sum(r["seconds"] for r in rotations)
    ok = sum(r["ok"] for r in rotations) / took
    refused = sum(r["limited"] for r in rotations) / took
    row(f"instance A's guarded requests/s ({ROTATION_WORKING_SET:,} tokens at random) while a user rotates "
        f"in a loop on B / idle, postgres, {what}",
        f"{x:,.0f}", f"{i:,.0f}", f"{x / i:.2f}", "≥ 0.8", f"{rss:.0f}")
    row(f"  the same, against the same loop on B reading (GET token/) instead, {what}",
        f"{x:,.0f}", f"{c:,.0f}", f"{x / c:.2f}", "", "")
    row(f"  B: rotations/s served (200) / refused (429) over all runs, {what}", f"{ok:,.0f} / {refused:,.0f}", "", "", "", "")
    # A's CPU per request says whether the attack makes A work harder (a
    # cache dropped on every rotation would), apart from the CPU it takes.
    ci, cx = median(idle, "cpu_us"), median(attacked, "cpu_us")
    row(f"  A's server CPU µs per request, attacked / idle (ratio idle / attacked); B's CPU meanwhile "
        f"{statistics.median(b_cores):.2f} cores, {what}", f"{cx:.1f}", f"{ci:.1f}", f"{ci / cx:.2f}", "", "")


def token_file(count):
    """`count` known tokens (64 lowercase hex) in a file, one a line, and
    their digests (lowercase hex SHA-256 of the token string)."""
    path = os.path.join(TMP, f"tokens{count}.txt")
    tokens = [hashlib.sha256(f"bench token {i}".encode()).hexdigest() for i in range(count)]
    with open(path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    return path, tokens


def seed_known_tokens(kind, target, tokens):
    """Bulk-inserts live tokens whose strings are known, for user `bench`,
    last used now (so no use is due to be recorded for a minute)."""
    now = int(time.time())
    digests = (hashlib.sha256(t.encode()).hexdigest() for t in tokens)
    if kind == "sqlite":
        con = sqlite3.connect(target)
        uid = con.execute("SELECT id FROM advanced_token_users WHERE username = 'bench'").fetchone()[0]
        con.executemany("INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) "
                        "VALUES (?, ?, ?, ?, NULL)", ((uid, d, now, now) for d in digests))
        con.commit()
        con.execute("ANALYZE")
        con.close()
    else:
        uid = subprocess.run(["psql", target, "-Atc", "SELECT id FROM advanced_token_users WHERE username = 'bench'"],
                             check=True, capture_output=True, text=True).stdout.strip()
        data = "".join(f"{uid}\t{d}\t{now}\t{now}\n" for d in digests)
        subprocess.run(["psql", target, "-qc",
                        "COPY advanced_token_tokens (user_id, digest, created_at, last_used_at) FROM STDIN"],
                       input=data, check=True, capture_output=True, text=True)
        subprocess.run(["psql", target, "-qc", "ANALYZE advanced_token_tokens"], check=True, capture_output=True)


def seeded_db(kind, label, count):
    """A database with user `bench` and `count` known live tokens (see
    `token_file`), each marked used an hour from now: (URL, PostgreSQL
    database name or None, tokens file, tokens)."""
    name = None
    if kind == "sqlite":
        db_url, target = sqlite_db(label)
    else:
        db_url, name = pg_db(label)
        target = db_url
    cli(db_url, "create-user", "bench", "--password", PASSWORD)
    log(f"seeding {count:,} known tokens into {kind}")
    path, tokens = token_file(count)
    seed_known_tokens(kind, target, tokens)
    # Used an hour from now, once seeding is over, however long it took: no
    # use is due to be recorded (at most once a minute) while the scenario
    # runs, however long the runs take, so no request writes.
    now_sql = f"UPDATE advanced_token_tokens SET last_used_at = {int(time.time()) + 3600}"
    if kind == "sqlite":
        con = sqlite3.connect(target)
        con.execute(now_sql)
        con.commit()
        con.close()
    else:
        subprocess.run(["psql", target, "-qc", now_sql], check=True, capture_output=True)
    return db_url, name, path, tokens


def cache_at_size(kind, count):
    """Issue 12, the cache at size: `count` different live tokens requested
    uniformly at random, guarded vs the bare app, alternated."""
    db_url, name, path, tokens = seeded_db(kind, f"size{count}", count)
    server = Server(db_url, {"login_throttle": False})
    bare = Server(db_url, {}, binary=BARE)
    g_url, b_url = server.url("/api/hello/"), bare.url("/api/hello/")
    # The process warmed up on one token, then every token once, in order.
    wrk(g_url, tokens[0], seconds=1)
    before = server.rss_kib()
    n_warm = min(count, 100_000)
    warm = warm_cache(g_url, path, n_warm)
    after = server.rss_kib()
    wrk(b_url, seconds=1, tokens_file=path)
    # Beyond the capacity most requests miss: the same guarded app with the
    # cache off, alternated with the other two, says what the misses cost.
    off = Server(db_url, {"login_throttle": False, "token_cache": False}) if count > 100_000 else None
    guarded, plain, uncached = [], [], []
    for _ in range(RUNS):
        guarded.append(wrk(g_url, tokens_file=path))
        plain.append(wrk(b_url, tokens_file=path))
        if off:
            uncached.append(wrk(off.url("/api/hello/"), tokens_file=path))
    check_ok([warm] + guarded + plain + uncached, f"cache at size {count}")
    rss = server.peak_rss_mib()
    server.stop()
    bare.stop()
    if off:
        off.stop()
    if kind == "postgres":
        pg_drop(name)
    g, b = median(guarded, "rps"), median(plain, "rps")
    row(f"guarded GET / bare app, {count:,} live tokens at random, {kind}, cache on (capacity 100,000)",
        f"{g:,.0f}", f"{b:,.0f}", f"{g / b:.2f}", "≥ 0.85" if count <= 100_000 else "", f"{rss:.0f}")
    if uncached:
        u = median(uncached, "rps")
        row(f"  the same, cache off / bare app ({count:,} tokens, {kind})", f"{u:,.0f}", f"{b:,.0f}", f"{u / b:.2f}",
            "", "")
    if warm["requests"] >= n_warm and count >= 100_000:
        row(f"  RSS growth over a pass through {n_warm:,} tokens ({kind}), bytes per cached token",
            f"{(after - before) * 1024 / n_warm:,.0f}", "", "", "", "")


def pg_counters(name, db_url):
    """Index scans on the tokens table, then transactions committed + rolled
    back in database `name` (read from another database, after the
    connection that read the scans has gone, so no reading is counted)."""
    scans = subprocess.run(["psql", db_url, "-Atc", "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                            "WHERE relname = 'advanced_token_tokens'"], check=True, capture_output=True,
                           text=True).stdout
    xacts = subprocess.run(["psql", PG, "-Atc", "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            f"WHERE datname = '{name}'"], check=True, capture_output=True, text=True).stdout
    return int(xacts.strip()), int(scans.strip())


def statements_per_1000():
    """Issue 13: database work per 1,000 guarded requests, cache on and off,
    on PostgreSQL. Counters are read with no server connected (a backend
    reports its statistics when it exits), so the delta covers the server's
    whole life: launch, polls, and the requests."""
    for cache in (True, False):
        db_url, name = pg_db(f"stmts{int(cache)}")
        cli(db_url, "create-user", "bench", "--password", PASSWORD)
        first = Server(db_url, {"login_throttle": False, "token_cache": cache})
        token = first.login("bench")
        first.stop()
        time.sleep(1)
        x0, s0 = pg_counters(name, db_url)
        server = Server(db_url, {"login_throttle": False, "token_cache": cache})
        res = wrk(server.url("/api/hello/"), token)
        server.stop()
        time.sleep(1)
        x1, s1 = pg_counters(name, db_url)
        pg_drop(name)
        check_ok([res], "statement count")
        k = res["requests"] / 1000
        row(f"PostgreSQL transactions / token index scans per 1,000 guarded GETs, cache {'on' if cache else 'off'} "
            f"({res['requests']:,} requests, launch and polls included)",
            f"{(x1 - x0) / k:,.2f} / {(s1 - s0) / k:,.2f}", "", "", "", "")


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
        guarded_vs_bare(kind, db_url)
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

    if use_pg:
        log("rotation in a loop on another instance")
        for isolated in (True, False):
            for limit in (1_000_000, None):
                rotation_attack(limit, isolated)
        log("database statements per 1,000 guarded requests")
        statements_per_1000()

    log("the cache at size")
    for kind in (["sqlite", "postgres"] if use_pg else ["sqlite"]):
        for count in (100_000, 1_000_000):
            cache_at_size(kind, count)

    print(f"\n{os.cpu_count()} cores; {RUNS} runs of {SECONDS:g} s per figure (medians); "
          f"wrk and the server share the machine; {time.time() - started:.0f} s in all.\n")
    print("| measurement | value | baseline | ratio | target | server peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
