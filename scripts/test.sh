#!/usr/bin/env bash
# The test command: installs and starts what the tests need (PostgreSQL, Redis, RabbitMQ), then
# runs the unit and integration tests on SQLite and PostgreSQL, then the independent FHIR
# conformance checker against a live server on each backend.
#   scripts/test.sh            everything
#   SKIP_CONFORMANCE=1 scripts/test.sh   cargo tests only
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/fhir-scheduler-target}
export CARGO_TERM_COLOR=never

have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if [[ -z ${APT_UPDATED:-} ]]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- tools a fresh Debian machine may lack ---------------------------------------------------
have curl || apt_install curl ca-certificates
have python3 || apt_install python3
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
# The real OpenID Connect provider of tests/api/oidc.rs (npm oidc-provider, pinned by
# tests/oidc/package-lock.json). Installed again only when the lockfile changed, so an offline
# machine keeps what it has; `--prefer-offline` takes packages from npm's cache when it can.
# Without node those tests say they are skipped.
have node || apt_install nodejs
have npm || apt_install npm
if have node && have npm; then
  lock_sum=$(sha256sum tests/oidc/package-lock.json | cut -d' ' -f1)
  stamp=tests/oidc/node_modules/.installed-lock-sha256
  if [[ ! -f $stamp || $(cat "$stamp") != "$lock_sum" ]]; then
    (cd tests/oidc && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" >"$stamp"
  fi
else
  echo "note: node/npm not found; the external identity provider tests (tests/api/oidc.rs) will be skipped" >&2
fi

# --- services ------------------------------------------------------------------------------
if ! have pg_ctlcluster; then apt_install postgresql; fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
# Trust auth for local TCP as CI machines have it; a fresh install uses peer/scram instead.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
  sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main reload
  sleep 1
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -c "create database test" >/dev/null
if ! have redis-server; then apt_install redis-server; fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! have rabbitmq-server; then apt_install rabbitmq-server; fi
if ! (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  # A node whose app an interrupted test stopped (tests/api/amqp.rs), or no node at all.
  rabbitmqctl start_app >/dev/null 2>&1 || rabbitmq-server -detached || true
  for _ in $(seq 60); do (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi
export TEST_AMQP_URL=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
# Virtual hosts of interrupted test runs (each RabbitMQ test makes its own `test-…`).
for v in $(rabbitmqctl -q list_vhosts 2>/dev/null | grep '^test-' || true); do
  rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
done

# The tests' databases (one per PostgreSQL test, `t_…`): those an interrupted run left now,
# this run's when it ends, however it ends.
drop_test_databases() {
  psql -h 127.0.0.1 -U postgres -d postgres -Atc "select datname from pg_database where datname like 't\_%'" \
    | while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists \"$db\"" >/dev/null 2>&1 || true; done
}
drop_test_databases
trap drop_test_databases EXIT

# --- cargo tests (both backends) -----------------------------------------------------------
export TEST_POSTGRES_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if have cargo-nextest; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# --- independent conformance checker against a live server, on each backend ----------------
if [[ -z ${SKIP_CONFORMANCE:-} ]]; then
  PY=$(../shared/conformance/setup.sh)
  cargo build --bin fhir-scheduler
  bin=$CARGO_TARGET_DIR/debug/fhir-scheduler
  "$PY" -m pip install -q "fhirclient==4.4.0" >/dev/null
  smart_launch() { # database-url port data-dir admin-token
    local pid_json pid
    DATABASE_URL=$1 "$bin" admin create-client --addr 127.0.0.1:$2 --data-dir "$3" \
      --client-id py-app --kind public --redirect-uri http://localhost:9/cb \
      --scopes "openid fhirUser launch/patient patient/*.rs" >/dev/null
    pid_json=$(curl -sf -X POST "http://127.0.0.1:$2/fhir/Patient" -H "Authorization: Bearer $4" \
      -H 'Content-Type: application/fhir+json' \
      -d '{"resourceType":"Patient","name":[{"family":"Launch","given":["Py"]}]}')
    pid=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$pid_json")
    FHIR_SCHEDULER_NEW_PASSWORD=py-launch-password DATABASE_URL=$1 "$bin" admin create-user \
      --addr 127.0.0.1:$2 --data-dir "$3" --username pylaunch --role patient \
      --fhir-user "Patient/$pid" >/dev/null
    "$PY" tests/smart/fhirclient_launch.py "http://127.0.0.1:$2/fhir" py-app pylaunch \
      py-launch-password "$pid"
  }
  run_check() { # name database-url
    local dir port pid log
    dir=$(mktemp -d); port=$((20000 + RANDOM % 20000)); log=$dir/server.log
    DATABASE_URL=$2 "$bin" serve --addr 127.0.0.1:$port --data-dir "$dir" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
    echo "== conformance ($1)"
    local rc=0
    local token
    token=$(DATABASE_URL=$2 "$bin" admin token --role admin --ttl 1800 --addr 127.0.0.1:$port \
      --data-dir "$dir" | tail -1)
    "$PY" ../shared/conformance/core_check.py "http://127.0.0.1:$port/fhir" --token "$token" || rc=$?
    echo "== SMART launch by an independent client (PyPI fhirclient) ($1)"
    smart_launch "$2" "$port" "$dir" "$token" || rc=$?
    kill "$pid"; wait "$pid" 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then echo "--- server log"; tail -n 50 "$log"; fi
    rm -rf "$dir"
    return $rc
  }
  run_check sqlite "sqlite://$(mktemp -d)/c.db?mode=rwc"
  pgdb="conf_$(date +%s)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "create database $pgdb"
  rc=0; run_check postgres "postgres://postgres@127.0.0.1:5432/$pgdb" || rc=$?
  psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database $pgdb" || true
  exit $rc
fi
