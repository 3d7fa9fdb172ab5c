#!/usr/bin/env bash
# Fuzzes the demo server against its own OpenAPI document (openapi.json,
# served at GET /auth/openapi.json) with schemathesis: no 5xx, and every
# status, content type, header and body as documented.
#
# Builds the debug binary (the profile the tests use), starts
# `advanced-token serve` on a fresh SQLite database and a free port, creates
# users, logs them in with curl, and runs schemathesis with their tokens:
# first every operation but the ones that kill the token (PUT token/,
# logout/, DELETE token/ and DELETE tokens/{id}/), so that the token stays valid throughout; then each of those on
# its own, with a user and token of its own (after its first rotation or
# logout the rest answer 401, which is documented).
#
# Usage: bash .ci/schemathesis.sh (needs python3 with venv, curl, and PyPI).
# Overrides: SCHEMATHESIS_MAX_EXAMPLES (examples per operation),
# SCHEMATHESIS_SEED (fixed by default, so that runs repeat),
# SCHEMATHESIS_CHECKS (comma-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
# Not among the checks: unsupported_method. The crate answers every
# standard method it does not serve with 405 and Allow (tested in the
# behaviour suite), but Rocket rejects methods it does not know, such as
# QUERY, with 400 before any route runs.
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20261128}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,ignored_auth,allow_header_conformance}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/advtok-schemathesis.XXXXXX")
SERVER_PID=
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$TMP/server.log" ]; then
        echo "-- last lines of the server log:" >&2
        tail -n 40 "$TMP/server.log" >&2 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "-- building the demo server"
cargo build --bin advanced-token
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug/advanced-token"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

echo "-- installing schemathesis $SCHEMATHESIS_VERSION in a virtualenv"
python3 -m venv "$TMP/venv"
timeout 300 "$TMP/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$TMP/venv/bin/schemathesis" --version

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
BASE="http://127.0.0.1:$PORT"

# The server and the admin commands read the same configuration. Run them in
# the temp dir so that no Rocket.toml is picked up and nothing is written
# into the work tree.
export ROCKET_ADDRESS=127.0.0.1
export ROCKET_PORT="$PORT"
export ROCKET_LOG_LEVEL=critical
export ROCKET_DATABASES="{advanced_token={url=\"sqlite://$TMP/db.sqlite?mode=rwc\"}}"
unset ROCKET_ADVANCED_TOKEN ROCKET_CONFIG

cd "$TMP"
echo "-- starting the demo server on $BASE"
"$BIN" serve >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$BASE/auth/openapi.json" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
    sleep 0.2
done
curl -fsS -o "$TMP/served.json" "$BASE/auth/openapi.json"
python3 - "$ROOT/openapi.json" "$TMP/served.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a == b else "the served document is not openapi.json")
PY

PASSWORD="fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
# One user for the operations that keep the token alive, and one for each
# operation that kills it (a logout deletes every token of its user).
USERS="fuzzer rotate logout-get logout-post logout-device delete-token"
for user in $USERS; do
    printf '%s\n' "$PASSWORD" | "$BIN" create-user "$user" --password-stdin
done

# The user of the document's login example, so that the examples phase gets
# a 200 from POST login/ and checks its body against the document.
IFS=$'\t' read -r EXAMPLE_USER EXAMPLE_PASSWORD < <(python3 - "$ROOT/openapi.json" <<'PY'
import json, sys
props = json.load(open(sys.argv[1]))["components"]["schemas"]["Credentials"]["properties"]
print(props["username"]["example"], props["password"]["example"], sep="\t")
PY
)
printf '%s\n' "$EXAMPLE_PASSWORD" | "$BIN" create-user "$EXAMPLE_USER" --password-stdin

login() {
    curl -fsS -X POST "$BASE/auth/login/" -H 'Content-Type: application/json' \
        --data "{\"username\": \"$1\", \"password\": \"$PASSWORD\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
# Every token now: once the fuzzer's failed logins pass the per-IP limit,
# every login from 127.0.0.1 gets 429 for the rest of the window.
declare -A TOKEN
for user in $USERS; do
    TOKEN[$user]=$(login "$user")
    # Make sure the token works before blaming the fuzzer.
    curl -fsS -o /dev/null -H "Authorization: Token ${TOKEN[$user]}" "$BASE/auth/token/"
done

# run_schemathesis SECONDS TOKEN [ARGS...]: one bounded schemathesis run.
run_schemathesis() {
    local seconds=$1 token=$2
    shift 2
    timeout --kill-after=10 "$seconds" "$TMP/venv/bin/schemathesis" run "$BASE/auth/openapi.json" \
        --url "$BASE" \
        --header "Authorization: Token $token" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" \
        --workers 1 \
        --seed "$SEED" \
        --request-timeout 10 \
        --generation-database none \
        --no-color \
        "$@"
}

echo "-- pass 1: every operation that keeps the token alive"
run_schemathesis 150 "${TOKEN[fuzzer]}" --exclude-operation-id rotateToken \
    --exclude-operation-id logoutGet --exclude-operation-id logoutPost \
    --exclude-operation-id logoutDevice --exclude-operation-id deleteToken

echo "-- pass 2: token rotation (200 once, then 401: the token is rotated away)"
run_schemathesis 30 "${TOKEN[rotate]}" --include-operation-id rotateToken

echo "-- pass 3: GET logout (200 once, then 401)"
run_schemathesis 30 "${TOKEN[logout-get]}" --include-operation-id logoutGet

echo "-- pass 4: POST logout (200 once, then 401)"
run_schemathesis 30 "${TOKEN[logout-post]}" --include-operation-id logoutPost

echo "-- pass 5: DELETE token/ (200 once, then 401)"
run_schemathesis 30 "${TOKEN[logout-device]}" --include-operation-id logoutDevice

echo "-- pass 6: DELETE tokens/{id}/ (404 for ids not the user's; 200 once for its own, then 401)"
run_schemathesis 30 "${TOKEN[delete-token]}" --include-operation-id deleteToken

# The server must have survived the fuzzing.
curl -fsS -o /dev/null "$BASE/auth/openapi.json"
echo "-- schemathesis passed"
