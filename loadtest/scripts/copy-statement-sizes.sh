#!/usr/bin/env bash
# Times writing 1,000-row chunks into a copy of the activities table as one binary COPY
# statement per chunk, or as 2, 3 or 4 statements in the chunk's transaction, and as 10,000-row
# statements for reference: each variant writes 300,000 rows (one transaction per chunk,
# asynchronous commit), rounds interleaved. Needs a PostgreSQL on this machine it may create a
# database on (the server process's CPU time is read from /proc):
#
#   loadtest/scripts/copy-statement-sizes.sh [ROUNDS] [psql connection options...]
#   loadtest/scripts/copy-statement-sizes.sh 6 -h 127.0.0.1 -p 5432 -U postgres
#
# Prints each variant's mean over the rounds of the wall time and of the CPU seconds of the
# server process that ran it, then each round's figures. The wall time is one connection's,
# waiting on every round trip; the CPU seconds are what the variant costs a server whose cores
# are busy with other connections too (the engine's writers run four at once). The rows are
# 1,000 generated activities of about 400 bytes each (the load test's size), repeated.
set -euo pipefail
rounds=${1:-6}
shift || true
work=$(mktemp -d /tmp/copy-statement-sizes.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
database=copy_statement_sizes
psql -X -q "$@" -d postgres -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" 2>/dev/null
sql() { psql -X -q "$@" -d "$database"; }
sql "$@" <<'SQL'
CREATE TABLE activities (id uuid NOT NULL, tenant_id uuid NOT NULL, scan_id uuid,
    record_index integer NOT NULL, activity_name text NOT NULL, pdpl_category text NOT NULL,
    data_fields text[] NOT NULL, purpose text, legal_basis text, retention_period text,
    data_recipients text[], created_at timestamptz NOT NULL);
-- Not unique, so the same rows can be written again; the same shape as the primary key.
CREATE INDEX ON activities (tenant_id, id);
CREATE TABLE source AS SELECT gen_random_uuid() AS id,
    '6b0b6a0e-1111-4222-8333-444455556666'::uuid AS tenant_id, gen_random_uuid() AS scan_id,
    i AS record_index, 'Customer onboarding activity number ' || i AS activity_name,
    'basic' AS pdpl_category,
    ARRAY['full_name', 'email', 'phone_number', 'date_of_birth', 'address'] AS data_fields,
    'To verify identity and open an account for the customer as required ' || i AS purpose,
    'contract' AS legal_basis, '5 years after account closure' AS retention_period,
    ARRAY['payment processor', 'credit bureau'] AS data_recipients, now() AS created_at
FROM generate_series(1, 1000) AS i;
SQL
for rows in 1000 500 334 250; do
    sql "$@" -c "\\copy (SELECT * FROM source ORDER BY record_index LIMIT $rows) TO '$work/rows-$rows.bin' (FORMAT binary)"
done
sql "$@" -c "\\copy (SELECT source.* FROM source, generate_series(1, 10)) TO '$work/rows-10000.bin' (FORMAT binary)"
# One script per variant: 300 transactions of STATEMENTS statements (or 30 of 10,000 rows),
# ending with the CPU time (utime + stime, in clock ticks) of the server process that ran it.
server_cpu_prologue='SELECT pg_backend_pid() AS pid \gset
\setenv SERVER_PID :pid'
server_cpu_epilogue="\\! awk '{ print \$14 + \$15 }' /proc/\$SERVER_PID/stat"
for statements in 1 2 3 4; do
    rows=$(( (1000 + statements - 1) / statements ))
    {
        echo "$server_cpu_prologue"
        for _ in $(seq 300); do
            echo "BEGIN;"
            for _ in $(seq "$statements"); do echo "\\copy activities FROM '$work/rows-$rows.bin' (FORMAT binary)"; done
            echo "COMMIT;"
        done
        echo "$server_cpu_epilogue"
    } > "$work/chunks-$statements.sql"
done
{
    echo "$server_cpu_prologue"
    for _ in $(seq 30); do
        printf 'BEGIN;\n\\copy activities FROM %s (FORMAT binary)\nCOMMIT;\n' "'$work/rows-10000.bin'"
    done
    echo "$server_cpu_epilogue"
} > "$work/chunks-10000-rows.sql"
ticks_per_second=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
    for variant in 1 2 3 4 10000-rows; do
        sql "$@" -c "TRUNCATE activities"
        started=$(date +%s.%N)
        ticks=$(sql "$@" -c "SET synchronous_commit = off" -f "$work/chunks-$variant.sql" | tail -1)
        echo "$variant $(echo "$(date +%s.%N) - $started" | bc) $(echo "scale=3; $ticks / $ticks_per_second" | bc)"
    done
done | awk '{ wall[$1] += $2; cpu[$1] += $3; n[$1]++; runs[$1] = runs[$1] sprintf(" %.3f/%.2f", $2, $3) }
    END { for (v in wall) printf "%s statement(s) per 1,000-row chunk: mean %.3f s wall, %.3f s server CPU; each round (wall/CPU):%s\n", v, wall[v] / n[v], cpu[v] / n[v], runs[v] }' \
    | sed 's/^10000-rows statement(s) per 1,000-row chunk/10,000-row statements/' | sort
psql -X -q "$@" -d postgres -c "DROP DATABASE $database"
