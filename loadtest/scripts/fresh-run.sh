#!/usr/bin/env bash
# Runs one scenario against an engine on a fresh private cluster, then stops the engine.
#
#   loadtest/scripts/fresh-run.sh ENGINE SCENARIO [SCENARIO OPTIONS...]
#
# ENGINE is an engine binary (say target/release/ingest-engine, or a copy of an older build);
# it starts on a new data directory under /var/tmp with PostgreSQL's settings from
# config/postgresql.conf, the scenario runs with `--no-psql-copy` (after the load test has
# created the cluster's WAL segment files, unless `--cold-wal` is given), and the printed summary is
# followed by the engine's admission counters, per-stage submission times and chunks per writer
# transaction (and shared transactions redone chunk by chunk) from /metrics, the
# CPU seconds of the engine and of PostgreSQL (the postmaster with every process it started,
# exited ones included) over the run, PostgreSQL's WAL (with its full-page images and the
# checkpoints that caused them) and autovacuum figures (the baseline's share included unless
# the scenario runs with --skip-baseline), and the deadlocks
# and rolled-back transactions of the engine's database (a shared writer transaction that
# failed shows among them, and its copied rows, up to 4,000, among the rows inserted).
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
postmaster=$(head -1 "$work/pg/postmaster.pid")
pg_port=$(sed -n 4p "$work/pg/postmaster.pid")
# utime + stime of a process, and (for the postmaster) of its children it has reaped.
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
postgres_ticks() {
    local total
    total=$(cpu_ticks "$postmaster")
    for stat in /proc/[0-9]*/stat; do
        total=$((total + $(awk -v parent="$postmaster" '$4 == parent {t = $14 + $15} END {print t + 0}' "$stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
engine_before=$(cpu_ticks "$engine_pid")
postgres_before=$(postgres_ticks)
status=0
target/release/loadtest --engine-url "http://127.0.0.1:$port" \
    --postmaster-pid "$work/pg/postmaster.pid" --token "$(cat "$work/admin-token")" \
    --no-psql-copy "$@" || status=$?
curl -s "http://127.0.0.1:$port/metrics" \
    | grep -E '^ingest_(admission_refusals_total|submission_stage_duration_seconds_(sum|count)|writer_chunks_per_transaction_(bucket|count)|writer_shared_transactions_redone_total)' || true
hz=$(getconf CLK_TCK)
echo "CPU seconds over the run: engine $(( ($(cpu_ticks "$engine_pid") - engine_before) / hz )), PostgreSQL $(( ($(postgres_ticks) - postgres_before) / hz ))"
psql -X -q -h 127.0.0.1 -p "$pg_port" -U ingest -d ingest -c "
    SELECT pg_size_pretty(wal_bytes) AS wal, wal_records, wal_fpi,
           checkpoints_timed + checkpoints_req AS checkpoints
    FROM pg_stat_wal, pg_stat_bgwriter" -c "
    SELECT deadlocks, xact_rollback AS rolled_back FROM pg_stat_database
    WHERE datname = current_database()" -c "
    SELECT relname, autovacuum_count, n_tup_ins, n_tup_del,
           pg_size_pretty(pg_total_relation_size(relid)) AS size
    FROM pg_stat_all_tables
    WHERE autovacuum_count > 0 OR n_tup_ins > 1000
    ORDER BY pg_total_relation_size(relid) DESC LIMIT 8" || true
exit $status
