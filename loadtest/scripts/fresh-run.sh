#!/usr/bin/env bash
# Runs one scenario against an engine on a fresh private cluster, then stops the engine.
#
#   loadtest/scripts/fresh-run.sh ENGINE SCENARIO [SCENARIO OPTIONS...]
#
# ENGINE is an engine binary (say target/release/ingest-engine, or a copy of an older build);
# it starts on a new data directory under /var/tmp with PostgreSQL's settings from
# config/postgresql.conf, the scenario runs with `--no-psql-copy`, and the printed summary is
# followed by the engine's admission counters and per-stage submission times from /metrics.
# Needs `cargo build --release --workspace --bins` first (for target/release/loadtest).
set -euo pipefail
cd "$(dirname "$0")/../.."

engine=${1:?engine binary}
shift
port=${PORT:-18383}
work=$(mktemp -d /var/tmp/fresh-run.XXXXXX)
chmod 755 "$work"   # PostgreSQL runs as another OS user when the engine runs as root
engine_pid=""
cleanup() {
    if [ -n "$engine_pid" ]; then kill -TERM "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

INGEST__HTTP__PORT=$port INGEST__DATABASE__EMBEDDED__DATA_DIR="$work/pg" \
    "$engine" >"$work/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$engine_pid" 2>/dev/null || { cat "$work/engine.log" >&2; exit 1; }
    sleep 1
done
status=0
target/release/loadtest --engine-url "http://127.0.0.1:$port" \
    --postmaster-pid "$work/pg/postmaster.pid" --token "$(cat "$work/admin-token")" \
    --no-psql-copy "$@" || status=$?
curl -s "http://127.0.0.1:$port/metrics" \
    | grep -E '^ingest_(admission_refusals_total|submission_stage_duration_seconds_(sum|count))' || true
exit $status
