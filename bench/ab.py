#!/usr/bin/env python3
"""Two builds of the bench server against the bare app, alternated in one
run: what a change to the guard's path is worth, measured side by side.
The new build's unguarded `/bench/open/` runs beside them, to split what
is left into the guard and the rest of what the crate adds.

    BENCH_PIN=1 python3 bench/ab.py OLD_BENCH_SERVER NEW_BENCH_SERVER sqlite|postgres TOKENS ROUNDS

TOKENS live tokens are seeded as for `cache_at_size` in bench/run.py and
requested at random (a single token is sent as a fixed header, as
`guarded_vs_bare` sends it); `token_cache_ttl` is raised for both builds so that no
entry expires during the run. Build the old binary from another checkout
(`git worktree add`, then `cargo build --release --example bench_server`
there, in its own target directory); the bare app and the CLI come from
this checkout's release build, as in bench/run.sh.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    old, new = (os.path.abspath(p) for p in sys.argv[1:3])
    kind, count, rounds = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    db_url, name, path, tokens = run.seeded_db(kind, f"ab{count}", count)
    # One token: sent as a fixed header, as `guarded_vs_bare` sends it
    # (wrk's script then picks nothing per request).
    send = {"token": tokens[0]} if count == 1 else {"tokens_file": path}
    settings = {"login_throttle": False, "token_cache_ttl": 3600}
    servers = {"old": run.Server(db_url, settings, binary=old),
               "new": run.Server(db_url, settings, binary=new),
               "bare": run.Server(db_url, {}, binary=run.BARE)}
    url = {k: s.url("/api/hello/") for k, s in servers.items()}
    # The new build's unguarded twin of the route: what the crate costs a
    # request that does not use the guard (fairing, routes, binary).
    servers["new-open"], url["new-open"] = servers["new"], servers["new"].url("/bench/open/")
    for k in ("old", "new"):
        run.warm_cache(url[k], path, min(count, 100_000))
    res = {k: [] for k in servers}
    for i in range(rounds):
        for k in (["old", "new", "new-open", "bare"] if i % 2 == 0 else ["new", "old", "bare", "new-open"]):
            res[k].append(run.wrk_on(servers[k], url[k], **send))
    run.check_ok(sum(res.values(), []), "ab")
    b, bc = run.median(res["bare"], "rps"), run.median(res["bare"], "cpu_us")
    for k in ("old", "new", "new-open", "bare"):
        g, c = run.median(res[k], "rps"), run.median(res[k], "cpu_us")
        print(f"{kind} {count:,} tokens, {k}: {g:,.0f} requests/s, / bare {g / b:.3f}; "
              f"server CPU {c:.2f} µs a request, bare / this {bc / c:.3f}; peak RSS {servers[k].peak_rss_mib():.0f} MiB; "
              f"runs {[round(x['rps']) for x in res[k]]}", flush=True)
    for s in set(servers.values()):
        s.stop()
    if name:
        run.pg_drop(name)


if __name__ == "__main__":
    main()
