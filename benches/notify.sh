#!/usr/bin/env bash
# Notification benchmark (issue 5), with a bare RabbitMQ → SMTP pipeline measured in the same run.
# One command:
#
#   benches/notify.sh                        # N=2000 messages, C=16 clients for D=20 s
#   N=5000 C=32 D=30 benches/notify.sh       # everything is overridable from the environment
#
# 0. A fresh RabbitMQ vhost (rabbitmqctl add_vhost + set_permissions for guest), deleted at the end.
# 1. bare (the reference): benches/notify.rs publishes N persistent, publisher-confirmed messages to
#    a durable queue of that vhost and consumes them (prefetch 16, 16 at once), sending each as one
#    SMTP mail with lettre to its own SMTP sink on loopback: messages/s from the first publish until
#    the N-th distinct Message-ID reached the sink.
# 2. The release server on a fresh PostgreSQL database per mode, auth on (an admin token from
#    `fhir-scheduler admin token --role admin`), slot filler off, `--smtp-url` = the generator's
#    sink. Modes (MODES):
#      amqp     AMQP_URL set, the worker inside `serve`
#      workers  AMQP_URL set, `serve --notify-worker false` + WORKERS `fhir-scheduler worker
#               notifications` processes
#      inproc   no AMQP_URL: the in-process worker polls the database
#    In each mode:
#      drain  Patients with email preferences, then N booked Appointments (transaction Bundles of
#             BUNDLE, PARALLEL in flight), each owing one confirmation mail at once: messages/s from
#             the first create until the N-th distinct Message-ID reached the sink, and the tail
#             (last create answered → N-th mail).
#      hook   (modes in HOOK_MODES, once per rate in RATES) a rest-hook receiver + a Subscription
#             (appointment-booked, no filter, id-only), then C clients POST booked Appointments for
#             WARMUP + D s, as fast as answered or paced to a rate; latency =
#             arrival at the receiver − the client's 201, p50/p99/max; delivered / missed.
#    CPU seconds of the server (+ workers), PostgreSQL, RabbitMQ, the generator and the machine, and
#    the database's commits / rows written per run, are recorded around each run.
# The summary (markdown) goes to stdout and benches/NOTIFY.md; whatever follows the line
# `<!-- analysis -->` in an existing NOTIFY.md (notes written by hand) is kept.
#
# Environment: N (2000), C (16), D (20), WARMUP (5), SETTLE (60: s to wait for the last rest-hook
# notifications), WORKERS (2), MODES ("amqp workers inproc"), HOOK_MODES ("amqp workers inproc"),
# RATES ("100 0": hook runs, R = paced to R bookings/s, 0 = closed loops as fast as answered; the paced
# run first, as a closed-loop run leaves a backlog of mails behind it), BACKENDS
# ("postgres"; "postgres sqlite" adds SQLite in a temp dir), BUNDLE (100), PARALLEL (2), TIMEOUT
# (600: s to wait for the mails), PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), AMQP_HOST
# (127.0.0.1:5672), PORT (first port tried, 18520; the SMTP sink and the hook receiver take the
# next free ones), KEEP_DB=1, KEEP_WORK=1, OUT (benches/NOTIFY.md), CARGO_TARGET_DIR
# (/var/tmp/fhir-scheduler-target). On a shared machine wrap it in
# `flock /tmp/fhir-bench.lock benches/notify.sh` so two benchmarks never overlap.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${N:-2000}
C=${C:-16}
D=${D:-20}
WARMUP=${WARMUP:-5}
SETTLE=${SETTLE:-60}
WORKERS=${WORKERS:-2}
MODES=${MODES:-amqp workers inproc}
HOOK_MODES=${HOOK_MODES-amqp workers inproc}
RATES=${RATES:-100 0}
BACKENDS=${BACKENDS:-postgres}
BUNDLE=${BUNDLE:-100}
PARALLEL=${PARALLEL:-2}
TIMEOUT=${TIMEOUT:-600}
AMQP_HOST=${AMQP_HOST:-127.0.0.1:5672}
CMD="N=$N C=$C D=$D WARMUP=$WARMUP benches/notify.sh"
[ "$MODES" = "amqp workers inproc" ] || CMD="MODES=\"$MODES\" $CMD"
[ "$HOOK_MODES" = "amqp workers inproc" ] || CMD="HOOK_MODES=\"$HOOK_MODES\" $CMD"
[ "$RATES" = "100 0" ] || CMD="RATES=\"$RATES\" $CMD"
[ "$BACKENDS" = postgres ] || CMD="BACKENDS=\"$BACKENDS\" $CMD"
[ "$WORKERS" = 2 ] || CMD="WORKERS=$WORKERS $CMD"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/fhir-scheduler-target}
SRV_DB=fhir_notify_server
VHOST=fhir-notify-bench-$$
AMQP=amqp://guest:guest@$AMQP_HOST/$VHOST
OUT=${OUT:-$ROOT/benches/NOTIFY.md}

log() { printf '[notify.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in psql createdb dropdb curl jq rabbitmqctl; do
    if ! command -v "$tool" >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing what provides $tool"
            case $tool in
                jq | curl) pkg=$tool ;;
                rabbitmqctl) pkg=rabbitmq-server ;;
                *) pkg=postgresql-client ;;
            esac
            apt-get install -y -q "$pkg" >/dev/null || die "cannot install $pkg"
        else
            die "$tool is needed"
        fi
    fi
done
psql -d postgres -Atqc 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PGHOST:$PGPORT"
rabbitmqctl -q status >/dev/null 2>&1 || die "RabbitMQ is not running (rabbitmqctl status)"

WORK=$(mktemp -d /tmp/fhir-notify.XXXXXX)
SERVER_PID=
WORKER_PIDS=
VHOST_MADE=
cleanup() {
    stop_server
    if [ "${KEEP_DB:-0}" != 1 ]; then dropdb --if-exists "$SRV_DB" 2>/dev/null || true; fi
    [ -z "$VHOST_MADE" ] || rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
stop_pid() {
    kill -INT "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    local p
    for p in $WORKER_PIDS; do stop_pid "$p"; done
    WORKER_PIDS=
    [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID"
    SERVER_PID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build
log "building (release)"
cargo build --release --bin fhir-scheduler >&2
BIN=$CARGO_TARGET_DIR/release/fhir-scheduler
LOAD=$(cargo bench --bench notify --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "notify" and .executable != null) | .executable' |
    tail -1)
[ -x "$BIN" ] || die "no server binary at $BIN"
[ -n "$LOAD" ] && [ -x "$LOAD" ] || die "the notify bench target did not build (cargo bench --bench notify --no-run)"

# Free ports on 127.0.0.1 from PORT on: the server, the SMTP sink, the rest-hook receiver.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port() {
    local p=$1
    for _ in $(seq 40); do port_free "$p" && { echo "$p"; return; }; p=$((p + 1)); done
    die "no free port from $1"
}
P=$(next_port "${PORT:-18520}")
SP=$(next_port $((P + 1)))
HP=$(next_port $((SP + 1)))
BASE=http://127.0.0.1:$P/fhir
SMTP=127.0.0.1:$SP

# ------------------------------------------------------------------ RabbitMQ vhost
log "RabbitMQ: vhost $VHOST"
rabbitmqctl -q add_vhost "$VHOST" >&2
VHOST_MADE=1
rabbitmqctl -q set_permissions -p "$VHOST" guest ".*" ".*" ".*" >&2

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# CPU ticks: server + workers, every PostgreSQL process, RabbitMQ (beam.smp), the whole machine.
cpu_ticks() {
    local srv=0 pg=0 mq=0 f comm rest pid
    for f in /proc/[0-9]*/stat; do
        rest=$(cat "$f" 2>/dev/null) || continue
        pid=${f#/proc/}
        pid=${pid%/stat}
        comm=${rest#*(}
        comm=${comm%%)*}
        set -- ${rest##*) }
        case " $SERVER_PID $WORKER_PIDS " in
            *" $pid "*) srv=$((srv + ${12} + ${13})) ;;
            *)
                case $comm in
                    postgres) pg=$((pg + ${12} + ${13})) ;;
                    beam.smp) mq=$((mq + ${12} + ${13})) ;;
                esac
                ;;
        esac
    done
    read -r _ u n s _ _ irq sirq steal _ </proc/stat
    echo "$srv $pg $mq $((u + n + s + irq + sirq + steal))"
}
# Commits and rows written in the server's database so far (PostgreSQL only).
db_counts() {
    [ "$1" = postgres ] || { echo "0 0 0 0"; return; }
    psql -d postgres -Atc "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted
        FROM pg_stat_database WHERE datname = '$SRV_DB'" | tr '|' ' '
}
# Lost broker connections so far in the server's and workers' logs (another user of the broker
# may stop it: such a run is flagged).
drops() { cat "$WORK/$1-$2"*.log 2>/dev/null | grep -c 'RabbitMQ session ended' || true; }
# Runs the generator with CPU and database counters around it; appends its JSON line + them.
measured() { # backend mode generator-args...
    local backend=$1 mode=$2 c0 c1 d0 d1 t0 hz b0
    shift 2
    hz=$(getconf CLK_TCK)
    sleep 1 # the statistics collector catches up
    b0=$(drops "$backend" "$mode")
    d0=$(db_counts "$backend")
    c0=$(cpu_ticks)
    t0=$(date +%s.%N)
    "$LOAD" "$@" >"$WORK/run.json" 2>"$WORK/run.err" || { tail -20 "$WORK/run.err" >&2; die "$mode: generator failed: $*"; }
    c1=$(cpu_ticks)
    sleep 1
    d1=$(db_counts "$backend")
    jq -c --arg c0 "$c0" --arg c1 "$c1" --arg d0 "$d0" --arg d1 "$d1" --argjson hz "$hz" \
        --argjson drops "$(($(drops "$backend" "$mode") - b0))" \
        --arg backend "$backend" --arg mode "$mode" --argjson cores "$(nproc)" \
        --argjson wall "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" '
            ($c0 | split(" ") | map(tonumber)) as $a | ($c1 | split(" ") | map(tonumber)) as $b |
            ($d0 | split(" ") | map(tonumber)) as $x | ($d1 | split(" ") | map(tonumber)) as $y |
            . + {backend: $backend, mode: $mode, broker_drops: $drops,
                 cpu_s: {wall: ($wall * 10 | round / 10), cores: $cores,
                         server: (($b[0] - $a[0]) / $hz), postgres: (($b[1] - $a[1]) / $hz),
                         rabbitmq: (($b[2] - $a[2]) / $hz), generator: .generator_cpu_s,
                         machine: (($b[3] - $a[3]) / $hz)},
                 db: {commits: ($y[0] - $x[0]), inserted: ($y[1] - $x[1]),
                      updated: ($y[2] - $x[2]), deleted: ($y[3] - $x[3])}}' "$WORK/run.json" |
        tee -a "$RESULTS" >&2
}

# ------------------------------------------------------------------ bare reference
log "bare: $N messages, lapin → durable queue → lettre → sink"
measured - bare bare --amqp "$AMQP" --smtp "$SMTP" --n "$N" --prefetch 16 --timeout "$TIMEOUT" --label bare

# ------------------------------------------------------------------ the server
start_server() { # backend mode
    local backend=$1 mode=$2 label=$1-$2 env=() i
    env+=(FHIR_SCHEDULER_SLOT_FILL_DAYS=0 FHIR_SCHEDULER_SMTP_URL="smtp://$SMTP")
    case $backend in
        postgres)
            dropdb --if-exists "$SRV_DB"
            createdb "$SRV_DB"
            env+=(DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$SRV_DB")
            ;;
        sqlite) rm -rf "$WORK/$label-data" ;;
    esac
    case $mode in
        amqp) env+=(AMQP_URL="$AMQP") ;;
        workers) env+=(AMQP_URL="$AMQP" FHIR_SCHEDULER_NOTIFY_WORKER=false) ;;
        inproc) ;;
        *) die "unknown mode $mode" ;;
    esac
    env "${env[@]}" "$BIN" serve --addr "127.0.0.1:$P" --data-dir "$WORK/$label-data" \
        >"$WORK/$label.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        if curl -sf -o /dev/null "http://127.0.0.1:$P/health"; then
            FHIR_TOKEN=$(env "${env[@]}" "$BIN" admin token --role admin --ttl 7200 --addr "127.0.0.1:$P" \
                --data-dir "$WORK/$label-data" 2>/dev/null | tail -1)
            export FHIR_TOKEN
            if [ "$mode" = workers ]; then
                for i in $(seq "$WORKERS"); do
                    env "${env[@]}" FHIR_SCHEDULER_NOTIFY_WORKER=true "$BIN" worker notifications \
                        --data-dir "$WORK/$label-data" >"$WORK/$label-worker$i.log" 2>&1 &
                    WORKER_PIDS="$WORKER_PIDS $!"
                done
                sleep 2
            fi
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    tail -20 "$WORK/$label.log" >&2
    die "the $label server did not come up"
}

for backend in $BACKENDS; do
    for mode in $MODES; do
        log "$backend/$mode: starting the server$([ "$mode" != workers ] || echo " and $WORKERS workers")"
        start_server "$backend" "$mode"
        log "$backend/$mode: drain, $N booked appointments (bundles of $BUNDLE, $PARALLEL in flight)"
        measured "$backend" "$mode" drain --url "$BASE" --smtp "$SMTP" --n "$N" --bundle "$BUNDLE" \
            --parallel "$PARALLEL" --timeout "$TIMEOUT" --label "$backend-$mode"
        case " $HOOK_MODES " in
            *" $mode "*)
                for rate in $RATES; do
                    log "$backend/$mode: hook, $C clients$([ "$rate" = 0 ] || echo " at $rate bookings/s"), ${WARMUP}s warm-up + ${D}s"
                    measured "$backend" "$mode" hook --url "$BASE" --smtp "$SMTP" --hook "127.0.0.1:$HP" \
                        --concurrency "$C" --duration "$D" --warmup "$WARMUP" --settle "$SETTLE" \
                        --rate "$rate" --label "$backend-$mode"
                done
                ;;
        esac
        curl -s "http://127.0.0.1:$P/metrics" | grep -E '^notify_' >"$WORK/$backend-$mode-metrics.txt" || true
        # (The SMTP sink leaves with the generator: mails still owed after a run then retry.)
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/$backend-$mode"*.log | grep -E ' (WARN|ERROR) ' |
            sed -E 's/^[^ ]+ +//; s/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/<id>/g' | cut -c1-200 |
            sort | uniq -c | sort -rn | head -5 >"$WORK/$backend-$mode-warnings.txt" || true
        stop_server
    done
done

# ------------------------------------------------------------------ summary
sel() { # scenario backend mode field (jq path)
    jq -r --arg s "$1" --arg b "$2" --arg m "$3" \
        "select(.scenario == \$s and .backend == \$b and .mode == \$m) | $4 // \"-\"" "$RESULTS" | tail -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.1f", a / b; else print "-" }'; }

BARE=$(sel drain - bare .msgs_per_s)
{
    echo "# fhir-scheduler notification benchmark (issue 5)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: nproc $(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; generator, server, workers, PostgreSQL and RabbitMQ share it (and whatever else ran on it: see \"machine\" CPU below)"
    echo "- PostgreSQL $(psql -d postgres -Atc 'SHOW server_version') at $PGHOST:$PGPORT (synchronous_commit $(psql -d postgres -Atc 'SHOW synchronous_commit')); RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?') (vhost made and deleted by the script); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src migrations Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- command: \`flock /tmp/fhir-bench.lock $CMD\`"
    echo "- server: release build, auth on (admin token), audit on, slot filler off, \`--smtp-url\` = the generator's SMTP sink on loopback (accepts every mail); amqp = \`AMQP_URL\` set, worker in \`serve\`; workers = \`AMQP_URL\` set, \`serve --notify-worker false\` + $WORKERS \`fhir-scheduler worker notifications\`; inproc = no \`AMQP_URL\`"
    echo
    echo "## 1. Outbox → (RabbitMQ) → SMTP: $N confirmation mails"
    echo
    echo "| backend | mode | messages/s | drain s (first create → N-th mail) | creates/s | tail s (last create → N-th mail) | first mail s | distinct / repeats / missing | broker drops | reference | ratio |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    for b in $BACKENDS; do
        for m in $MODES; do
            [ "$(sel drain "$b" "$m" .n)" != "-" ] || continue
            r=$(sel drain "$b" "$m" .msgs_per_s)
            echo "| $b | $m | $r | $(sel drain "$b" "$m" .drain_s) | $(sel drain "$b" "$m" .creates_per_s) | $(sel drain "$b" "$m" .tail_s) | $(sel drain "$b" "$m" .first_mail_s) | $(sel drain "$b" "$m" .distinct) / $(sel drain "$b" "$m" .repeats) / $(sel drain "$b" "$m" .missing) | $(sel drain "$b" "$m" .broker_drops) | bare $BARE/s | $(ratio "$r" "$BARE") |"
        done
    done
    echo "| - | bare | $BARE | $(sel drain - bare .drain_s) | $(sel drain - bare .creates_per_s) (published) | $(sel drain - bare .tail_s) | $(sel drain - bare .first_mail_s) | $(sel drain - bare .distinct) / $(sel drain - bare .repeats) / $(sel drain - bare .missing) | - | - | - |"
    echo
    echo "drain: Patients with \`notification-preferences\` (channel email, a time zone, es/en), then $N booked Appointments"
    echo "(3 days ahead, 5 minutes apart, none overlapping) in transaction Bundles of $BUNDLE, $PARALLEL in flight, from the first"
    echo "create on; each owes one confirmation mail at once (the default 24 h reminder is planned, not due). The clock stops at"
    echo "the N-th distinct Message-ID at the sink. bare: the generator alone publishes $N persistent messages (delivery mode 2)"
    echo "to a durable queue of the vhost with publisher confirms (64 outstanding), and consumes them (prefetch 16, 16 at once),"
    echo "each sent as one mail (plain text + .ics, built with lettre, a new SMTP connection each, as the server does) and"
    echo "acknowledged after the sink's 250. broker drops: lost RabbitMQ connections in the server's/workers' logs during the"
    echo "run (something else stopped the broker: the run's figures then include the outage and the relay's redrive)."
    echo
    if [ -n "$HOOK_MODES" ]; then
        echo "## 2. Booking → rest-hook notification latency, $C clients, ${WARMUP} s warm-up + ${D} s"
        echo
        echo "| backend | mode | pace | bookings/s | booking p50 / p99 ms | notified p50 ms | p99 ms | max ms | p50 first / last tenth ms | delivered / missed (window) | errors | mails | broker drops |"
        echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        jq -r 'select(.scenario == "hook") | "| \(.backend) | \(.mode) | \(if .rate > 0 then "\(.rate)/s" else "closed loop" end) | \(.bookings_per_s) | \(.booking_latency.p50_ms) / \(.booking_latency.p99_ms) | \(if .delivered > 0 then .delivery.p50_ms else "-" end) | \(if .delivered > 0 then .delivery.p99_ms else "-" end) | \(if .delivered > 0 then .delivery.max_ms else "-" end) | \(if .delivered > 0 then "\(.delivery_first_tenth_p50_ms) / \(.delivery_last_tenth_p50_ms)" else "-" end) | \(.delivered) / \(.missed) | \(.errors) | \(.mails_distinct) | \(.broker_drops) |"' "$RESULTS"
        echo
        echo "hook: a rest-hook receiver in the generator (HTTP/1.1 on loopback, answers 200) and one Subscription to"
        echo "\`appointment-booked\` (no filter, id-only payload), active before the run; $C clients in closed loops (or paced)"
        echo "\`POST Appointment\` (booked, patients with email preferences as in drain, so each booking also owes a mail)."
        echo "Latency = first arrival of the Appointment's id at the receiver − the moment its client had read the 201, over the"
        echo "appointments answered inside the ${D} s window; the generator waits up to ${SETTLE} s after the run for stragglers"
        echo "(missed = never arrived by then). In paced runs the booking p50/p99 includes each client's wait for its turn"
        echo "($C clients / the rate), not only the answer; p50 first / last tenth: the window's first and last tenth of bookings"
        echo "(a backlog that grows shows as a slower last tenth)."
        echo
    fi
    echo "## CPU and database work per run"
    echo
    echo "CPU seconds over each generator run (people set-up included; $(nproc) cores, so at most wall × $(nproc)); the machine"
    echo "total includes other users of the machine. Commits / rows from \`pg_stat_database\` of the server's database."
    echo
    echo "| scenario | backend | mode | wall s | server(+workers) | PostgreSQL | RabbitMQ | generator | machine | commits | commits per item | rows ins / upd / del |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    jq -r '"| \(.scenario)\(if (.rate // 0) > 0 then " \(.rate)/s" else "" end) | \(.backend) | \(.mode) | \(.cpu_s.wall) | \(.cpu_s.server) | \(.cpu_s.postgres) | \(.cpu_s.rabbitmq) | \(.cpu_s.generator // "-") | \(.cpu_s.machine) | \(.db.commits) | \(if .scenario == "hook" then (.db.commits / ([.booked_total, 1] | max) * 10 | round / 10) elif .mode == "bare" then "-" else (.db.commits / .n * 10 | round / 10) end) | \(.db.inserted) / \(.db.updated) / \(.db.deleted) |"' "$RESULTS"
    echo
    for f in "$WORK"/*-metrics.txt; do
        [ -s "$f" ] || continue
        l=$(basename "$f" -metrics.txt)
        echo "\`/metrics\` of the server after the $l runs (notify_*, non-zero counters):"
        echo
        echo '```'
        grep -vE '_bucket\{|_created' "$f" | awk '$NF != 0' | head -30
        echo '```'
        echo
    done
    for f in "$WORK"/*-warnings.txt; do
        [ -s "$f" ] || continue
        echo "Most frequent warnings in the $(basename "$f" -warnings.txt) logs (after the generator exits, its SMTP sink is gone"
        echo "and the mails still owed are retried: expected):"
        echo
        echo '```'
        cat "$f"
        echo '```'
        echo
    done
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
