#!/usr/bin/env python3
"""Instructions the server executes per guarded request, against the bare
app: a count, not a time, so it repeats to within about 1% whatever else
the machine is doing (wall-clock ratios on this 2-core VM swing by 0.1).

Each server runs under `valgrind --tool=callgrind` twice, serving N1 and
then N2 sequential keep-alive requests; the difference of the two totals
divided by N2 - N1 is the cost of one request, launch and background tasks
cancelled out. Needs valgrind and the release binaries bench/run.sh builds.

    python3 bench/instructions.py sqlite postgres

Caveat: valgrind hides the SHA extensions from the program, so SHA-256 runs
in software here (about 7,000 instructions per token digest), where the
real CPU, if it has SHA-NI, spends a fraction of that.
"""

import http.client
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

N1, N2 = 2000, 6000


def total_instructions(binary, db_url, settings, token, n):
    port = run.free_port()
    out = os.path.join(run.TMP, f"callgrind.{port}")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
                            env=run.env_for(db_url, settings, port), cwd=run.TMP,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.PROCS.append(proc)
    deadline = time.time() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.connect()
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("the server did not start under valgrind")
            time.sleep(0.2)
    for _ in range(n):
        conn.request("GET", "/api/hello/", headers={"Authorization": f"Token {token}"})
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            raise SystemExit(f"GET /api/hello/ answered {res.status}")
    conn.close()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    with open(out) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit("callgrind wrote no total")


def per_request(binary, db_url, settings, token):
    a = total_instructions(binary, db_url, settings, token, N1)
    b = total_instructions(binary, db_url, settings, token, N2)
    return (b - a) / (N2 - N1)


def main():
    for kind in sys.argv[1:] or ["sqlite"]:
        if kind == "sqlite":
            db_url, name = run.sqlite_db("instructions")
        else:
            db_url, name = run.pg_db("instructions")
        run.cli(db_url, "create-user", "bench", "--password", run.PASSWORD)
        server = run.Server(db_url, {"login_throttle": False})
        token = server.login("bench")
        server.stop()
        guarded = per_request(run.SERVER, db_url, {"login_throttle": False}, token)
        bare = per_request(run.BARE, db_url, {}, token)
        if kind != "sqlite":
            run.pg_drop(name)
        print(f"{kind}: demo's guarded GET {guarded:,.0f} instructions/request, bare app {bare:,.0f}, "
              f"ratio bare / guarded {bare / guarded:.3f}", flush=True)


if __name__ == "__main__":
    main()
