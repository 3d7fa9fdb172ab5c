#!/usr/bin/env python3
"""Rotates one token in a tight loop: PUT /auth/token/ over one keep-alive
connection, taking the new token from each answer, for a number of seconds.
Prints one JSON line: rotations that succeeded, answers 429 (the per-user
rotation limit), other answers, the seconds it ran, and the last token.

    python3 bench/rotate.py <port> <token> <seconds> [read]

With `read`, the same loop sends GET /auth/token/ instead, which revokes
nothing: the control that tells the loop's share of a small machine's
CPU from what its rotations do to other instances.
"""

import http.client
import json
import sys
import time


def main():
    port, token, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    method = "GET" if sys.argv[4:] == ["read"] else "PUT"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = limited = other = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        conn.request(method, "/auth/token/", body=b"",
                     headers={"Authorization": f"Token {token}", "Content-Length": "0"})
        res = conn.getresponse()
        data = res.read()
        if res.status == 200:
            token = json.loads(data).get("token", token)
            ok += 1
        elif res.status == 429:
            limited += 1
        else:
            other += 1
    took = time.monotonic() - start
    print(json.dumps({"ok": ok, "limited": limited, "other": other, "seconds": took, "token": token}))


if __name__ == "__main__":
    main()
