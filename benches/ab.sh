#!/usr/bin/env bash
# Release binaries side by side on PostgreSQL (or SQLite, BACKEND=sqlite): each on a database of
# its own, seeded by itself
# with the load benchmark's dataset (benches/load.rs seed), then ROUNDS rounds in which each
# binary in turn serves read / create / search at C clients for WARMUP + D seconds. For a
# change's effect on the same machine in the same hour (its speed drifts by tens of percent
# within an hour: compare binaries, not runs). Prints one JSON line per measurement:
#
#   cargo build --release && cp "$CARGO_TARGET_DIR/release/fhir-scheduler" /tmp/new
#   (build the other commit the same way into /tmp/old)
#   ROUNDS=3 benches/ab.sh /tmp/old /tmp/new
#
# Environment: BACKEND (postgres | sqlite), ROUNDS (2), C (64), D (8), WARMUP (2), PORT (18592), PGHOST/PGUSER
# (127.0.0.1/postgres), CARGO_TARGET_DIR (/var/tmp/fhir-scheduler-target). The databases
# ab_0, ab_1, … are dropped at the end.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: benches/ab.sh BINARY..." >&2; exit 2; }
BINS=("$@")
BACKEND=${BACKEND:-postgres} ROUNDS=${ROUNDS:-2} C=${C:-64} D=${D:-8} WARMUP=${WARMUP:-2} P=${PORT:-18592}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/fhir-scheduler-target}
cd "$(dirname "$0")/.."
LOAD=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "load" and .executable != null) | .executable' |
    tail -1)
[ -x "$LOAD" ] || { echo "the load bench target did not build" >&2; exit 1; }
W=$(mktemp -d /tmp/fhir-ab.XXXXXX)
BASE=http://127.0.0.1:$P/fhir
PID=
db_env() { # database: env's arguments for PostgreSQL's database, or SQLite in the data dir
    if [ "$BACKEND" = sqlite ]; then
        echo "-u DATABASE_URL"
    else
        echo "DATABASE_URL=postgres://$PGUSER@$PGHOST/$1"
    fi
}
start() { # binary database
    # shellcheck disable=SC2046 # db_env's words are env's arguments
    env $(db_env "$2") "$1" serve --addr 127.0.0.1:$P --data-dir "$W/$2" >"$W/$2.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$P/health" && break; sleep 0.2; done
    # shellcheck disable=SC2046
    FHIR_TOKEN=$(env $(db_env "$2") "$1" admin token --role admin --ttl 3600 \
        --addr 127.0.0.1:$P --data-dir "$W/$2" 2>/dev/null | tail -1)
    export FHIR_TOKEN
}
stop() {
    [ -n "$PID" ] || return 0
    kill -INT "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}
cleanup() {
    stop
    if [ "$BACKEND" = postgres ]; then
        for i in "${!BINS[@]}"; do dropdb --if-exists "ab_$i" 2>/dev/null || true; done
    fi
    rm -rf "$W"
}
trap cleanup EXIT
for i in "${!BINS[@]}"; do
    if [ "$BACKEND" = postgres ]; then
        dropdb --if-exists "ab_$i"
        createdb "ab_$i"
    fi
    start "${BINS[$i]}" "ab_$i"
    "$LOAD" seed --url "$BASE" --out "$W/ids-$i.json" >&2
    [ "$BACKEND" = sqlite ] || psql -d "ab_$i" -qc 'VACUUM ANALYZE'
    stop
done
for r in $(seq "$ROUNDS"); do
    for i in "${!BINS[@]}"; do
        start "${BINS[$i]}" "ab_$i"
        for s in read create search; do
            "$LOAD" run --url "$BASE" --ids "$W/ids-$i.json" --scenario "$s" --concurrency "$C" \
                --duration "$D" --warmup "$WARMUP" --grace 10 --label "$BACKEND" |
                jq -c --arg bin "${BINS[$i]}" --argjson round "$r" \
                    '{bin: $bin, round: $round, scenario, rps, p50_ms, p99_ms}'
        done
        stop
    done
done
