#!/usr/bin/env bash
# Scheduling benchmark (issue 3) on PostgreSQL, with a pgbench baseline measured in the same run.
# One command:
#
#   benches/booking.sh                      # C=64 clients, D=20 s per scenario, 5 s warm-up
#   C=32 D=10 WARMUP=3 benches/booking.sh   # everything is overridable from the environment
#
# 1. pgbench, on a fresh database: a `slot` table (PRACTITIONERS x SLOTS_PER rows, shaped like
#    our Slot rows) and an `appointment` table; the script is one transaction, what a booking
#    is at its core: INSERT the appointment row, UPDATE the slot to busy where it is still free
#    (slot drawn uniformly). -c C -j 2 -M prepared, WARMUP s discarded, then D s.
# 2. The release server on a fresh PostgreSQL database, auth on (an admin token from
#    `fhir-scheduler admin token --role admin`), the background slot filler off (it would
#    regenerate every schedule's slots in the middle of a run). benches/booking.rs seeds the
#    fixed dataset through transaction Bundles (5,000 Practitioners with PractitionerRole and
#    Schedule over 20 Locations, 200 Slots per Schedule = 1,000,000 Slots, 1/3 busy), then
#    VACUUM ANALYZE and CHECKPOINT, then (each run once PostgreSQL is idle):
#      book  at C clients: POST Appointment/$book for slots of a hot pool of POOL free slots
#            (clients collide on purpose; a new pool when it is used up)
#      find  at each of FIND_ALSO and C clients, fewest first: GET Appointment/$find over a day
#            or three hours, with no filter, specialty, practitioner, location (± specialty) or
#            language; _count=10
#    CPU time of the server, of PostgreSQL and of the whole machine is sampled around each run,
#    and the booking queue's metrics (/metrics) are kept after the runs.
# The summary (markdown) goes to stdout and benches/BOOKING.md; whatever follows the line
# `<!-- analysis -->` in an existing BOOKING.md (notes written by hand) is kept.
#
# Environment: C (64), D (20), WARMUP (5), GRACE (10: s an unanswered request may overrun the
# window), FIND_ALSO ("8 1": more client counts for find; "" = none), POOL (2000),
# PRACTITIONERS (5000), SLOTS_PER (200), PARALLEL (2: seed Bundles in flight), BACKENDS
# ("postgres"; "postgres sqlite" adds SQLite in a temp dir, without the pgbench ratio), PGHOST
# (127.0.0.1), PGPORT (5432), PGUSER (postgres), PORT (first port tried for the server, 18490),
# KEEP_DB=1 keeps the two databases, KEEP_WORK=1 the temp dir, OUT (the summary file:
# benches/BOOKING.md; another path for trial runs), CARGO_TARGET_DIR
# (/var/tmp/fhir-scheduler-target). On a shared machine wrap it in
# `flock /tmp/fhir-bench.lock benches/booking.sh` so two benchmarks never overlap.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${C:-64}
D=${D:-20}
WARMUP=${WARMUP:-5}
GRACE=${GRACE:-10}
FIND_ALSO=${FIND_ALSO-8 1}
POOL=${POOL:-2000}
PRACTITIONERS=${PRACTITIONERS:-5000}
SLOTS_PER=${SLOTS_PER:-200}
PARALLEL=${PARALLEL:-2}
BACKENDS=${BACKENDS:-postgres}
CMD="C=$C D=$D WARMUP=$WARMUP benches/booking.sh"
[ "$PRACTITIONERS" = 5000 ] && [ "$SLOTS_PER" = 200 ] || CMD="PRACTITIONERS=$PRACTITIONERS SLOTS_PER=$SLOTS_PER $CMD"
[ "$BACKENDS" = postgres ] || CMD="BACKENDS=\"$BACKENDS\" $CMD"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/fhir-scheduler-target}
SRV_DB=fhir_booking_server
PGB_DB=fhir_booking_pgbench
OUT=${OUT:-$ROOT/benches/BOOKING.md}
NSLOTS=$((PRACTITIONERS * SLOTS_PER))

log() { printf '[booking.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
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

WORK=$(mktemp -d /tmp/fhir-booking.XXXXXX)
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
LOAD=$(cargo bench --bench booking --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "booking" and .executable != null) | .executable' |
    tail -1)
[ -x "$BIN" ] || die "no server binary at $BIN"
[ -n "$LOAD" ] && [ -x "$LOAD" ] || die "the booking bench target did not build (cargo bench --bench booking --no-run)"

# A free port on 127.0.0.1, from PORT on (20 tries).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
P=${PORT:-18490}
for _ in $(seq 20); do port_free "$P" && break; P=$((P + 1)); done
port_free "$P" || die "no free port from ${PORT:-18490}"
BASE=http://127.0.0.1:$P/fhir

start_server() { # label, then env assignments
    local label=$1
    shift
    env FHIR_SCHEDULER_SLOT_FILL_DAYS=0 "$@" "$BIN" serve --addr "127.0.0.1:$P" \
        --data-dir "$WORK/$label-data" >"$WORK/$label.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        if curl -sf -o /dev/null "http://127.0.0.1:$P/health"; then
            # An admin token for the load generator (auth is on, as in production).
            FHIR_TOKEN=$(env "$@" "$BIN" admin token --role admin --ttl 7200 --addr "127.0.0.1:$P" \
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

# CPU ticks: the server process (all its threads), every PostgreSQL process, the whole machine.
cpu_ticks() {
    local srv=0 pg=0 f comm rest
    for f in /proc/[0-9]*/stat; do
        rest=$(cat "$f" 2>/dev/null) || continue
        comm=${rest#*(}
        comm=${comm%%)*}
        set -- ${rest##*) }
        if [ "${f#/proc/}" = "$SERVER_PID/stat" ]; then
            srv=$((${12} + ${13}))
        elif [ "$comm" = postgres ]; then
            pg=$((pg + ${12} + ${13}))
        fi
    done
    read -r _ u n s _ _ irq sirq steal _ </proc/stat
    echo "$srv $pg $((u + n + s + irq + sirq + steal))"
}

# ------------------------------------------------------------------ pgbench baseline
log "pgbench: preparing $PGB_DB ($NSLOTS slot rows)"
dropdb --if-exists "$PGB_DB"
createdb "$PGB_DB"
psql -d "$PGB_DB" -qv ON_ERROR_STOP=1 -v nslots="$NSLOTS" -v per="$SLOTS_PER" >&2 <<'SQL'
-- Shaped like our Slot and Appointment rows: a key, the columns a booking touches, a JSON-sized body.
CREATE TABLE slot (
    id bigint PRIMARY KEY, schedule_id bigint NOT NULL, status text NOT NULL,
    start_at timestamptz NOT NULL, end_at timestamptz NOT NULL, body text NOT NULL);
INSERT INTO slot
SELECT g, g / :per, 'free', timestamptz '2030-01-07 09:00Z' + (g % :per) * interval '1 hour',
       timestamptz '2030-01-07 10:00Z' + (g % :per) * interval '1 hour', repeat(md5(g::text), 12)
FROM generate_series(1, :nslots) g;
CREATE TABLE appointment (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, slot_id bigint NOT NULL,
    patient text NOT NULL, status text NOT NULL, body text NOT NULL);
VACUUM ANALYZE;
SQL
cat >"$WORK/book.sql" <<SQL
\set s random(1, $NSLOTS)
BEGIN;
INSERT INTO appointment (slot_id, patient, status, body) VALUES (:s, 'Patient/' || :client_id, 'booked', repeat(md5(random()::text), 20));
UPDATE slot SET status = 'busy' WHERE id = :s AND status = 'free';
COMMIT;
SQL
pgbench_run() { # name, script
    local name=$1 script=$2 dir=$WORK/pgbench-$1 out
    mkdir -p "$dir"
    # Warm-up, discarded; then the measured run with a per-transaction log for percentiles.
    pgbench -n -M prepared -c "$C" -j 2 -T "$WARMUP" -f "$script" "$PGB_DB" >/dev/null 2>&1 || true
    local c0 c1 t0 t1
    c0=$(cpu_ticks)
    t0=$(date +%s.%N)
    out=$(cd "$dir" && pgbench -n -M prepared -c "$C" -j 2 -T "$D" -f "$script" -l "$PGB_DB" 2>&1) ||
        { echo "$out" >&2; die "pgbench $name failed"; }
    c1=$(cpu_ticks)
    t1=$(date +%s.%N)
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
        --argjson p50 "${p50:-0}" --argjson p99 "${p99:-0}" --argjson avg "${avg:-0}" --argjson c "$C" \
        --arg c0 "$c0" --arg c1 "$c1" --argjson hz "$(getconf CLK_TCK)" --argjson cores "$(nproc)" \
        --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" \
        '($c0 | split(" ") | map(tonumber)) as $a | ($c1 | split(" ") | map(tonumber)) as $b |
         {scenario: $s, backend: "pgbench", concurrency: $c, requests: $n, errors: $f, unfinished: 0, rps: ($tps * 100 | round / 100), p50_ms: $p50, p99_ms: $p99, mean_ms: $avg,
          cpu_s: {wall: ($wall * 10 | round / 10), cores: $cores, machine: (($b[2] - $a[2]) / $hz)}}' |
        tee -a "$RESULTS" >&2
}
log "pgbench: INSERT appointment + UPDATE slot, -c $C -j 2, ${WARMUP}s warm-up + ${D}s"
pgbench_run book "$WORK/book.sql"
[ "${KEEP_DB:-0}" = 1 ] || dropdb --if-exists "$PGB_DB"

# ------------------------------------------------------------------ the server
# Waits (up to 5 min) until no statement runs on the server's database.
settle() {
    local n
    for _ in $(seq 300); do
        n=$(psql -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$SRV_DB'
            AND state = 'active' AND pid <> pg_backend_pid()")
        [ "$n" != 0 ] || return 0
        sleep 1
    done
    log "warning: statements still running on $SRV_DB"
}
bench_backend() { # label
    local label=$1 t0
    log "$label: seeding ($PRACTITIONERS practitioners x $SLOTS_PER slots)"
    t0=$(date +%s)
    "$LOAD" seed --url "$BASE" --out "$WORK/$label-ids.json" --practitioners "$PRACTITIONERS" \
        --slots-per-schedule "$SLOTS_PER" --parallel "$PARALLEL" >"$WORK/$label-seed.log" 2>&1 ||
        { tail -5 "$WORK/$label-seed.log" >&2; die "$label: seed failed"; }
    tail -1 "$WORK/$label-seed.log" >&2
    echo "$label $(($(date +%s) - t0))" >>"$WORK/seed-times"
    if [ "$label" = postgres ]; then
        # What autovacuum would have done by now on a server that has been up a while.
        psql -d "$SRV_DB" -qc 'VACUUM ANALYZE' >&2
        # The seed's dirty pages written out now, not by a checkpoint in the middle of a run.
        psql -d "$SRV_DB" -qc 'CHECKPOINT' >&2
        psql -d "$SRV_DB" -Atc "SELECT pg_size_pretty(pg_database_size('$SRV_DB'))" >"$WORK/db-size"
    fi
    # book first; find from the fewest clients to the most (abandoned requests of a run go on in
    # the server and the database: each run waits for PostgreSQL to be idle first).
    local runs="book:$C" r c0 c1 hz t0
    for c in $(printf '%s\n' $FIND_ALSO "$C" | sort -n | uniq); do runs="$runs find:$c"; done
    hz=$(getconf CLK_TCK)
    for r in $runs; do
        local scenario=${r%%:*} conc=${r##*:}
        [ "$label" != postgres ] || settle
        log "$label: $scenario, $conc clients, ${WARMUP}s warm-up + ${D}s"
        # CPU over the run (warm-up included): seconds of the server, PostgreSQL, the machine.
        c0=$(cpu_ticks)
        t0=$(date +%s.%N)
        "$LOAD" run --url "$BASE" --ids "$WORK/$label-ids.json" --scenario "$scenario" --pool "$POOL" \
            --concurrency "$conc" --duration "$D" --warmup "$WARMUP" --grace "$GRACE" --label "$label" \
            >"$WORK/run.json"
        c1=$(cpu_ticks)
        jq -c --arg c0 "$c0" --arg c1 "$c1" --argjson hz "$hz" --argjson cores "$(nproc)" \
            --argjson wall "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" '
                ($c0 | split(" ") | map(tonumber)) as $a | ($c1 | split(" ") | map(tonumber)) as $b |
                . + {cpu_s: {wall: ($wall * 10 | round / 10), cores: $cores,
                             server: (($b[0] - $a[0]) / $hz), postgres: (($b[1] - $a[1]) / $hz),
                             machine: (($b[2] - $a[2]) / $hz)}}' "$WORK/run.json" |
            tee -a "$RESULTS" >&2
    done
    curl -s "http://127.0.0.1:$P/metrics" | grep -E '^booking_' >"$WORK/$label-metrics.txt" || true
}

for backend in $BACKENDS; do
    case $backend in
        postgres)
            dropdb --if-exists "$SRV_DB"
            createdb "$SRV_DB"
            start_server postgres DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$SRV_DB"
            ;;
        sqlite) start_server sqlite ;;
        *) die "unknown backend $backend" ;;
    esac
    bench_backend "$backend"
    stop_server
done

# ------------------------------------------------------------------ summary
get() { # backend scenario concurrency field
    jq -r --arg b "$1" --arg s "$2" --argjson c "$3" --arg f "$4" \
        'select(.backend == $b and .scenario == $s and .concurrency == $c) | .[$f] // empty' "$RESULTS" | tail -1
}
kind() { # backend concurrency kind field
    jq -r --arg b "$1" --argjson c "$2" --arg k "$3" --arg f "$4" \
        'select(.backend == $b and .scenario == "find" and .concurrency == $c) | .by_kind[$k][$f] // empty' "$RESULTS" | tail -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v x="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "ge") ? (x >= t) : (x <= t); print ok ? "met" : "**missed**" }'; }
# mean of a Prometheus histogram: sum / count
hmean() { awk -v n="$2" '$1 == n "_sum" {s = $2} $1 == n "_count" {c = $2} END { if (c > 0) printf "%.1f ms over %d requests", s / c * 1000, c; else print "n/a" }' "$1"; }

PGB=$(get pgbench book "$C" rps)
{
    echo "# fhir-scheduler scheduling benchmark (issue 3)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: nproc $(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; load generator, server and PostgreSQL share it"
    echo "- PostgreSQL: $(psql -d postgres -Atc 'SHOW server_version') at $PGHOST:$PGPORT (shared_buffers $(psql -d postgres -Atc 'SHOW shared_buffers')); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src migrations Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- command: \`flock /tmp/fhir-bench.lock $CMD\`"
    echo "- dataset: $PRACTITIONERS Practitioners, each with a PractitionerRole (7 specialties, 1–2 of 20 Locations, languages) and a Schedule; $SLOTS_PER Slots per Schedule = $NSLOTS Slots (hourly 09–17 UTC on weekdays from 2030-01-07, 1/3 busy), seeded through transaction Bundles of ~800 entries, $PARALLEL in flight (seed time: $(tr '\n' ' ' <"$WORK/seed-times" | sed 's/ \([0-9]*\) / \1 s, /g; s/, $//')$([ -f "$WORK/db-size" ] && echo "; PostgreSQL database $(cat "$WORK/db-size") after VACUUM ANALYZE"))"
    echo "- load: keep-alive HTTP/1.1 clients in closed loops, ${WARMUP} s warm-up then ${D} s per scenario; server with auth on (admin token), audit on, background slot filler off; pgbench -c $C -j 2 -M prepared, same warm-up and duration"
    echo
    echo "| scenario | backend | clients | answers/s | booked/s | 409 / 429 / errors / unfinished | p50 ms | p99 ms | reference | ratio | target | |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"
    for b in $BACKENDS; do
        for sc in "book:$C" $(for c in $(printf '%s\n' $FIND_ALSO "$C" | sort -n | uniq); do echo "find:$c"; done); do
            s=${sc%%:*}
            c=${sc##*:}
            [ "$c" != 0 ] || continue
            [ -n "$(get "$b" "$s" "$c" rps)" ] || continue
            rps=$(get "$b" "$s" "$c" rps)
            okr=$(get "$b" "$s" "$c" ok_rps)
            p50=$(get "$b" "$s" "$c" p50_ms)
            p99=$(get "$b" "$s" "$c" p99_ms)
            cnt="$(get "$b" "$s" "$c" conflicts) / $(get "$b" "$s" "$c" throttled) / $(get "$b" "$s" "$c" errors) / $(get "$b" "$s" "$c" unfinished)"
            unf=$(get "$b" "$s" "$c" unfinished)
            if [ "${unf:-0}" != 0 ]; then p50=">= $p50"; p99=">= $p99"; fi
            if [ "$s" = book ]; then
                if [ "$b" = postgres ]; then
                    ref="pgbench $PGB tps"
                    r=$(ratio "$rps" "$PGB")
                    v=$(verdict "$r" 0.5 ge)
                else
                    ref="-"
                    r="-"
                    v="-"
                fi
                tgt="ratio >= 0.50"
            else
                ref="-"
                r="-"
                tgt="p99 <= 20 ms"
                v=$(verdict "$(get "$b" "$s" "$c" p99_ms)" 20 le)
                okr="-"
            fi
            [ "${unf:-0}" = 0 ] || v="**missed**"
            err=$(get "$b" "$s" "$c" errors)
            [ "${err:-0}" = 0 ] || v="$v, **$err errors**"
            echo "| $s | $b | $c | $rps | $okr | $cnt | $p50 | $p99 | $ref | $r | $tgt | $v |"
        done
    done
    echo "| pgbench book | postgres | $C | $(get pgbench book "$C" rps) | $(get pgbench book "$C" rps) | - / - / $(get pgbench book "$C" errors) / 0 | $(get pgbench book "$C" p50_ms) | $(get pgbench book "$C" p99_ms) | - | - | - | |"
    echo
    echo "\`\$find\` by filter (successful requests; proposals = mean entries returned, of at most 10):"
    echo
    echo "| backend | clients | filter | requests | p50 ms | p99 ms | mean ms | proposals | empty |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for b in $BACKENDS; do
        for c in $(printf '%s\n' $FIND_ALSO "$C" | sort -n | uniq); do
            [ -n "$(get "$b" find "$c" rps)" ] || continue
            for k in window specialty practitioner location location+specialty language; do
                if [ "$(kind "$b" "$c" "$k" n)" = 0 ]; then
                    echo "| $b | $c | $k | 0 | - | - | - | - | - |"
                    continue
                fi
                echo "| $b | $c | $k | $(kind "$b" "$c" "$k" n) | $(kind "$b" "$c" "$k" p50_ms) | $(kind "$b" "$c" "$k" p99_ms) | $(kind "$b" "$c" "$k" mean_ms) | $(kind "$b" "$c" "$k" mean_results) | $(kind "$b" "$c" "$k" empty) |"
            done
        done
    done
    echo
    echo "CPU seconds during each run (warm-up included; $(nproc) cores, so at most wall × $(nproc); pgbench's own backends exit"
    echo "before they can be read, so only the machine total is given for it):"
    echo
    echo "| scenario | backend | clients | wall s | server | PostgreSQL | whole machine | machine busy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    jq -r 'select(.cpu_s != null) | "| \(.scenario) | \(.backend) | \(.concurrency) | \(.cpu_s.wall) | \(.cpu_s.server // "-") | \(.cpu_s.postgres // "-") | \(.cpu_s.machine) | \(.cpu_s.machine / .cpu_s.wall / .cpu_s.cores * 100 | floor) % |"' "$RESULTS"
    echo
    for b in $BACKENDS; do
        m=$WORK/$b-metrics.txt
        [ -s "$m" ] || continue
        echo "Booking admission queue after the runs ($b, \`/metrics\`): mean wait for a worker $(hmean "$m" booking_queue_wait_seconds);"
        echo "outcomes: $(grep '^booking_requests_total' "$m" | sed 's/booking_requests_total//; s/operation="\([a-z-]*\)",outcome="\([a-z_]*\)"/\1 \2/' | tr '\n' ';' | sed 's/;$//; s/;/, /g')."
        echo
    done
    echo "book = \`POST /fhir/Appointment/\$book\` with a Parameters \`appt-resource\` (proposed Appointment: the slot, its start/end,"
    echo "a new Patient reference and the slot's Practitioner); each client picks, at random, a slot of a hot pool of $POOL free slots"
    echo "not yet answered for, so clients collide; a new pool starts when fewer than C remain. answers/s = (201 + 409) per"
    echo "second, booked/s = 201 per second; p50/p99 over the 201 and 409 answers. pgbench: \`slot(id, schedule_id, status,"
    echo "start_at, end_at, body)\` with $NSLOTS rows of 384-byte bodies and \`appointment(id identity, slot_id, patient, status,"
    echo "body)\`; book.sql = \`\\set s random(1, $NSLOTS)\`, \`BEGIN; INSERT INTO appointment … (640-byte body); UPDATE slot"
    echo "SET status = 'busy' WHERE id = :s AND status = 'free'; COMMIT;\`."
    echo "find = \`GET /fhir/Appointment/\$find?start=…&end=…&_count=10\` over one weekday (00:00–24:00 UTC) or three hours of"
    echo "one, with no filter (15 %), \`specialty\` (30 %), \`practitioner\` (20 %), \`location\` (15 %), \`location\` + \`specialty\`"
    echo "(10 %) or \`language\` (10 %)."
    echo "Requests unanswered ${GRACE} s after the window are abandoned (\"unfinished\") and enter the percentiles with their time"
    echo "so far, which are then lower bounds (\">=\"). pgbench percentiles come from its per-transaction log (-l)."
    echo
    echo "Raw results (JSON lines):"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
    if [ -f "$OUT" ] && grep -q '^<!-- analysis -->' "$OUT"; then
        echo
        sed -n '/^<!-- analysis -->/,$p' "$OUT"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "wrote $OUT"
