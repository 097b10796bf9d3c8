#!/usr/bin/env bash
# Runs the Java example against a sqlgate of its own: a fresh PostgreSQL
# database, the debug binary on a free port; both are gone afterwards.
# SQLGATE_BIN and SQLGATE_TEST_POSTGRES_URL as for the other client tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=${SQLGATE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/sqlgate}
admin=${SQLGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
name="sqlgate_java_$$_$RANDOM"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)

psql "$admin" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name"
"$binary" serve --listen "127.0.0.1:$port" --database-url "${admin%/*}/$name" >"$log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    psql "$admin" -X -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.1
done
"$here/run.sh" "127.0.0.1:$port"
