#!/usr/bin/env bash
# Server CPU of writing 1,000-row chunks one transaction per chunk (as a writer applies a chunk
# alone) against four chunks of different scans per transaction (a shared transaction), with the
# statements a writer sends: a fence-like row lock, taking the staged chunk (a TOASTed payload of
# about 50 kB, deleted with RETURNING), COPY, the scan's update and the category counts' upsert,
# asynchronous commit. Variants: `single` (two COPY statements of 500 rows per chunk, as the
# engine copies a chunk alone), `shared-one-copy` (one COPY of the four chunks' 4,000 rows, as
# the engine copies a shared transaction), `shared-500s` (the same four chunks in eight COPY
# statements of 500 rows: the transaction's saving without the larger statement's). Each variant
# writes 400 chunks, rounds interleaved. Needs a PostgreSQL on this machine it may create a
# database on (the server process's CPU time is read from /proc):
#
#   loadtest/scripts/shared-transactions.sh [ROUNDS] [psql connection options...]
#   loadtest/scripts/shared-transactions.sh 4 -h 127.0.0.1 -p 5432 -U postgres
#
# Prints each round's wall time and server CPU seconds per variant, then each variant's mean.
set -euo pipefail
rounds=${1:-4}
shift || true
work=$(mktemp -d /tmp/shared-transactions.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
database=shared_transactions
psql -X -q "$@" -d postgres -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" 2>/dev/null
sql() { psql -X -q "$@" -d "$database"; }
sql "$@" <<'SQL'
CREATE TABLE activities (id uuid NOT NULL, tenant_id uuid NOT NULL, scan_id uuid,
    record_index integer NOT NULL, activity_name text NOT NULL, pdpl_category text NOT NULL,
    data_fields text[] NOT NULL, purpose text, legal_basis text, retention_period text,
    data_recipients text[], created_at timestamptz NOT NULL);
CREATE INDEX ON activities (tenant_id, id);
CREATE INDEX ON activities (tenant_id, pdpl_category);
CREATE TABLE source AS SELECT gen_random_uuid() AS id,
    '6b0b6a0e-1111-4222-8333-444455556666'::uuid AS tenant_id, gen_random_uuid() AS scan_id,
    i AS record_index, 'Customer onboarding activity number ' || i AS activity_name,
    'basic' AS pdpl_category,
    ARRAY['full_name', 'email', 'phone_number', 'date_of_birth', 'address'] AS data_fields,
    'To verify identity and open an account for the customer as required ' || i AS purpose,
    'contract' AS legal_basis, '5 years after account closure' AS retention_period,
    ARRAY['payment processor', 'credit bureau'] AS data_recipients, now() AS created_at
FROM generate_series(1, 1000) AS i;
CREATE TABLE staged (chunk_id bigint PRIMARY KEY, scan int, payload bytea);
ALTER TABLE staged ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE TABLE scans (scan int PRIMARY KEY, processed bigint NOT NULL DEFAULT 0);
INSERT INTO scans SELECT g FROM generate_series(0, 3) AS g;
CREATE TABLE counts (scan int, category text, n bigint, PRIMARY KEY (scan, category));
SQL
sql "$@" -c "\\copy (SELECT * FROM source ORDER BY record_index LIMIT 500) TO '$work/rows-500.bin' (FORMAT binary)"
sql "$@" -c "\\copy (SELECT source.* FROM source, generate_series(1, 4)) TO '$work/rows-4000.bin' (FORMAT binary)"
server_cpu_prologue='SELECT pg_backend_pid() AS pid \gset
\setenv SERVER_PID :pid'
server_cpu_epilogue="\\! awk '{ print \$14 + \$15 }' /proc/\$SERVER_PID/stat"
chunks=400
stage="INSERT INTO staged SELECT g, g % 4, decode(repeat(md5(g::text), 1600), 'hex') FROM generate_series(1, $chunks) AS g"
advance() {
    echo "UPDATE scans SET processed = processed + 1000 WHERE scan = $1;"
    echo "INSERT INTO counts VALUES ($1, 'basic', 1000) ON CONFLICT (scan, category) DO UPDATE SET n = counts.n + excluded.n;"
}
{
    echo "$server_cpu_prologue"
    for chunk in $(seq "$chunks"); do
        scan=$((chunk % 4))
        echo "BEGIN;"
        echo "SELECT 1 FROM scans WHERE scan = $scan FOR SHARE;"
        echo "DELETE FROM staged WHERE chunk_id = $chunk RETURNING payload \\g /dev/null"
        echo "\\copy activities FROM '$work/rows-500.bin' (FORMAT binary)"
        echo "\\copy activities FROM '$work/rows-500.bin' (FORMAT binary)"
        advance "$scan"
        echo "COMMIT;"
    done
    echo "$server_cpu_epilogue"
} > "$work/single.sql"
shared() { # $1: one (a single COPY of 4,000 rows) or 500s (eight of 500)
    echo "$server_cpu_prologue"
    for first in $(seq 1 4 "$chunks"); do
        echo "BEGIN;"
        for scan in 0 1 2 3; do echo "SELECT 1 FROM scans WHERE scan = $scan FOR SHARE;"; done
        for chunk in $(seq "$first" $((first + 3))); do
            echo "DELETE FROM staged WHERE chunk_id = $chunk RETURNING payload \\g /dev/null"
        done
        if [ "$1" = one ]; then
            echo "\\copy activities FROM '$work/rows-4000.bin' (FORMAT binary)"
        else
            for _ in $(seq 8); do echo "\\copy activities FROM '$work/rows-500.bin' (FORMAT binary)"; done
        fi
        for scan in 0 1 2 3; do advance "$scan"; done
        echo "COMMIT;"
    done
    echo "$server_cpu_epilogue"
}
shared one > "$work/shared-one-copy.sql"
shared 500s > "$work/shared-500s.sql"
ticks_per_second=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
    for variant in single shared-one-copy shared-500s; do
        sql "$@" -c "TRUNCATE activities, staged" -c "$stage" -c "VACUUM staged" >/dev/null
        started=$(date +%s.%N)
        ticks=$(sql "$@" -c "SET synchronous_commit = off" -f "$work/$variant.sql" | tail -1)
        echo "round $round: $variant $(echo "$(date +%s.%N) - $started" | bc) s wall, $(echo "scale=3; $ticks / $ticks_per_second" | bc) s server CPU"
    done
done | tee "$work/runs"
awk '{ cpu[$3] += $7; wall[$3] += $4; n[$3]++ } END { for (v in cpu) printf "%s: mean %.3f s wall, %.3f s server CPU over %d rounds\n", v, wall[v] / n[v], cpu[v] / n[v], n[v] }' "$work/runs" | sort
psql -X -q "$@" -d postgres -c "DROP DATABASE $database"
