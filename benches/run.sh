#!/usr/bin/env bash
# Load benchmark of fhir-scheduler on SQLite and PostgreSQL, with a pgbench baseline measured in
# the same run. One command:
#
#   benches/run.sh                       # C=64 clients, D=20 s per scenario, 5 s warm-up
#   C=32 D=10 WARMUP=3 benches/run.sh    # everything is overridable from the environment
#
# For each backend (SQLite in a temp dir, PostgreSQL in a fresh database) it starts the release
# server, seeds the fixed dataset (10k Patients; 500 Schedules x 200 Slots = 100k Slots) through
# transaction Bundles with benches/load.rs, then runs read / create / search at C for D seconds
# each. The baseline is pgbench at the same -c C (-j 2) for the same D against a fresh database
# with a resource-row-shaped table (10k rows, ~500-byte bodies): a primary-key SELECT script and
# a single-row INSERT script. The summary (markdown) goes to stdout and benches/RESULTS.md.
#
# Environment: C, D, WARMUP, GRACE (s an unanswered request may overrun the window: 10), PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), PORT (first
# port tried for the server, 18480), KEEP_DB=1 keeps the two databases, KEEP_WORK=1 the temp dir,
# CARGO_TARGET_DIR (/var/tmp/fhir-scheduler-target).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CMD="C=${C:-64} D=${D:-20} WARMUP=${WARMUP:-5} benches/run.sh"
C=${C:-64}
D=${D:-20}
WARMUP=${WARMUP:-5}
GRACE=${GRACE:-10}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/fhir-scheduler-target}
SRV_DB=fhir_bench_server
PGB_DB=fhir_bench_pgbench
OUT=$ROOT/benches/RESULTS.md

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in pgbench psql createdb dropdb curl jq; do
    if ! command -v "$tool" >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing what provides $tool"
            case $tool in
                jq | curl) pkg=$tool ;;
                *) pkg=postgresql-client ;;
            esac
            apt-get install -y -q "$pkg" >/dev/null || die "cannot install $pkg"
        else
            die "$tool is needed"
        fi
    fi
done
psql -d postgres -Atqc 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PGHOST:$PGPORT"

WORK=$(mktemp -d /tmp/fhir-bench.XXXXXX)
SERVER_PID=
cleanup() {
    stop_server
    if [ "${KEEP_DB:-0}" != 1 ]; then
        dropdb --if-exists "$SRV_DB" 2>/dev/null || true
        dropdb --if-exists "$PGB_DB" 2>/dev/null || true
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build
log "building (release)"
cargo build --release --bin fhir-scheduler >&2
BIN=$CARGO_TARGET_DIR/release/fhir-scheduler
LOAD=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "load" and .executable != null) | .executable' |
    tail -1)
[ -x "$BIN" ] || die "no server binary at $BIN"
[ -n "$LOAD" ] && [ -x "$LOAD" ] || die "the load bench target did not build (cargo bench --bench load --no-run)"

# A free port on 127.0.0.1, from PORT on (20 tries).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
P=${PORT:-18480}
for _ in $(seq 20); do port_free "$P" && break; P=$((P + 1)); done
port_free "$P" || die "no free port from ${PORT:-18480}"
BASE=http://127.0.0.1:$P/fhir

start_server() { # label, then env assignments
    local label=$1
    shift
    env "$@" "$BIN" serve --addr "127.0.0.1:$P" --data-dir "$WORK/$label-data" >"$WORK/$label.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        if curl -sf -o /dev/null "http://127.0.0.1:$P/health"; then
            # An admin token for the load generator (auth is on, as in production).
            FHIR_TOKEN=$(env "$@" "$BIN" admin token --role admin --ttl 3600 --addr "127.0.0.1:$P" \
                --data-dir "$WORK/$label-data" 2>/dev/null | tail -1)
            export FHIR_TOKEN
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    tail -20 "$WORK/$label.log" >&2
    die "the $label server did not come up"
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

bench_backend() { # label
    local label=$1 t0
    log "$label: seeding (10k Patients, 500 Schedules x 200 Slots)"
    t0=$(date +%s)
    "$LOAD" seed --url "$BASE" --out "$WORK/$label-ids.json" >&2 || die "$label: seed failed"
    echo "$label $(($(date +%s) - t0))" >>"$WORK/seed-times"
    if [ "$label" = postgres ]; then
        # What autovacuum would have done by now on a server that has been up a while.
        psql -d "$SRV_DB" -qc 'VACUUM ANALYZE' >&2
    fi
    for scenario in read create search; do
        log "$label: $scenario, $C clients, ${WARMUP}s warm-up + ${D}s"
        "$LOAD" run --url "$BASE" --ids "$WORK/$label-ids.json" --scenario "$scenario" \
            --concurrency "$C" --duration "$D" --warmup "$WARMUP" --grace "$GRACE" --label "$label" | tee -a "$RESULTS" >&2
    done
}

# ------------------------------------------------------------------ SQLite
start_server sqlite
bench_backend sqlite
stop_server

# ------------------------------------------------------------------ pgbench baseline
log "pgbench: preparing $PGB_DB"
dropdb --if-exists "$PGB_DB"
createdb "$PGB_DB"
psql -d "$PGB_DB" -qv ON_ERROR_STOP=1 >&2 <<'SQL'
CREATE TABLE bench (id text PRIMARY KEY, body text NOT NULL);
INSERT INTO bench SELECT 'p' || g, repeat(md5(g::text), 16) FROM generate_series(1, 10000) g;
VACUUM ANALYZE bench;
SQL
cat >"$WORK/select.sql" <<'SQL'
\set n random(1, 10000)
SELECT id, body FROM bench WHERE id = 'p' || :n;
SQL
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO bench (id, body) VALUES (gen_random_uuid()::text, repeat(md5(random()::text), 16));
SQL
pgbench_run() { # name, script
    local name=$1 script=$2 dir=$WORK/pgbench-$1 out
    mkdir -p "$dir"
    # Warm-up, discarded; then the measured run with a per-transaction log for percentiles.
    pgbench -n -M prepared -c "$C" -j 2 -T "$WARMUP" -f "$script" "$PGB_DB" >/dev/null 2>&1 || true
    out=$(cd "$dir" && pgbench -n -M prepared -c "$C" -j 2 -T "$D" -f "$script" -l "$PGB_DB" 2>&1) ||
        { echo "$out" >&2; die "pgbench $name failed"; }
    echo "$out" >"$dir/summary.txt"
    local tps failed n p50 p99 avg
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    avg=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    # Log lines: client_id transaction_no time_us script_no epoch epoch_us.
    cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n >"$dir/lat"
    n=$(wc -l <"$dir/lat")
    p50=$(awk -v n="$n" 'NR == int((n * 50 + 99) / 100) {printf "%.2f", $1 / 1000; exit}' "$dir/lat")
    p99=$(awk -v n="$n" 'NR == int((n * 99 + 99) / 100) {printf "%.2f", $1 / 1000; exit}' "$dir/lat")
    jq -cn --arg s "$name" --argjson tps "${tps:-0}" --argjson n "$n" --argjson f "${failed:-0}" \
        --argjson p50 "${p50:-0}" --argjson p99 "${p99:-0}" --argjson avg "${avg:-0}" \
        '{scenario: $s, backend: "pgbench", requests: $n, errors: $f, unfinished: 0, rps: ($tps * 100 | round / 100), p50_ms: $p50, p99_ms: $p99, mean_ms: $avg}' |
        tee -a "$RESULTS" >&2
}
log "pgbench: SELECT by primary key, -c $C -j 2, ${WARMUP}s warm-up + ${D}s"
pgbench_run select "$WORK/select.sql"
log "pgbench: single-row INSERT, -c $C -j 2, ${WARMUP}s warm-up + ${D}s"
pgbench_run insert "$WORK/insert.sql"

# ------------------------------------------------------------------ PostgreSQL
dropdb --if-exists "$SRV_DB"
createdb "$SRV_DB"
start_server postgres DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$SRV_DB"
bench_backend postgres
stop_server

# ------------------------------------------------------------------ summary
get() { # backend scenario field
    jq -r --arg b "$1" --arg s "$2" --arg f "$3" 'select(.backend == $b and .scenario == $s) | .[$f] // empty' "$RESULTS" | tail -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v x="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "ge") ? (x >= t) : (x <= t); print ok ? "met" : "**missed**" }'; }

SEL=$(get pgbench select rps)
INS=$(get pgbench insert rps)
{
    echo "# fhir-scheduler load benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: nproc $(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; load generator, server and PostgreSQL share it"
    echo "- PostgreSQL: $(psql -d postgres -Atc 'SHOW server_version') at $PGHOST:$PGPORT; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src migrations Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- command: \`$CMD\`"
    echo "- dataset: 10k Patients, 500 Schedules x 200 Slots (100k Slots, 1/3 busy), seeded through transaction Bundles of ~1000 entries (seed time: $(tr '\n' ' ' <"$WORK/seed-times" | sed 's/ \([0-9]*\) / \1 s, /g; s/, $//'))"
    echo "- load: $C concurrent clients (keep-alive HTTP/1.1), ${WARMUP} s warm-up then ${D} s per scenario; pgbench -c $C -j 2 -M prepared, same warm-up and duration"
    echo
    echo "| scenario | backend | req/s | p50 ms | p99 ms | errors / unfinished | reference (pgbench) | ratio | target | |"
    echo "|---|---|---:|---:|---:|---:|---|---:|---|---|"
    for b in sqlite postgres; do
        for s in read create search; do
            rps=$(get $b $s rps)
            p50=$(get $b $s p50_ms)
            p99=$(get $b $s p99_ms)
            err=$(get $b $s errors)
            unf=$(get $b $s unfinished)
            if [ "${unf:-0}" != 0 ]; then p50=">= $p50"; p99=">= $p99"; fi
            case $s in
                read) ref="SELECT $SEL tps"; r=$(ratio "$rps" "$SEL"); tgt="ratio >= 0.50"; v=$(verdict "$r" 0.5 ge) ;;
                create) ref="INSERT $INS tps"; r=$(ratio "$rps" "$INS"); tgt="ratio >= 0.30"; v=$(verdict "$r" 0.3 ge) ;;
                search) ref="-"; r="-"; tgt="p99 <= 20 ms"; v=$(verdict "$(get $b $s p99_ms)" 20 le) ;;
            esac
            [ "${unf:-0}" = 0 ] && [ "$(get $b $s requests)" != 0 ] || v="**missed**"
            [ "${err:-0}" = 0 ] || v="$v, **$err errors**"
            echo "| $s | $b | $rps | $p50 | $p99 | ${err:-?} / ${unf:-?} | $ref | $r | $tgt | $v |"
        done
    done
    for s in select insert; do
        echo "| pgbench $s | postgres | $(get pgbench $s rps) | $(get pgbench $s p50_ms) | $(get pgbench $s p99_ms) | $(get pgbench $s errors) / 0 | - | - | - | |"
    done
    echo
    echo "read = \`GET /fhir/Patient/{random seeded id}\`; create = \`POST /fhir/Patient\` (~400-byte Patient);"
    echo "search = \`GET /fhir/Slot?schedule=Schedule/{random}&start=ge2030-01-{random day 1-20}&status=free\` (a full page of 20)."
    echo "pgbench: \`CREATE TABLE bench(id text primary key, body text)\` with 10k rows of 512-byte bodies;"
    echo "select.sql = \`\\set n random(1, 10000)\` + \`SELECT id, body FROM bench WHERE id = 'p' || :n\`;"
    echo "insert.sql = \`INSERT INTO bench (id, body) VALUES (gen_random_uuid()::text, repeat(md5(random()::text), 16))\`."
    echo "req/s counts successful (2xx) responses completed inside the ${D} s window; p50/p99 are over the successful requests"
    echo "completed after the warm-up. Requests unanswered ${GRACE} s after the window are abandoned (\"unfinished\") and enter the"
    echo "percentiles with their time so far, which are then lower bounds (\">=\"). pgbench percentiles come from its"
    echo "per-transaction log (-l); its mean latency is in the raw results (mean_ms)."
    echo "PostgreSQL backend: \`VACUUM ANALYZE\` after seeding (what autovacuum does on a server that has been up a while);"
    echo "SQLite: as the server leaves it (no ANALYZE)."

    echo
    echo "Raw results (JSON lines):"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "wrote $OUT"
