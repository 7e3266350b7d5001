#!/usr/bin/env bash
# Times writing 1,000-row chunks into a copy of the activities table as one binary COPY
# statement per chunk, or as 2, 3 or 4 statements in the chunk's transaction, and as 10,000-row
# statements for reference: each variant writes 300,000 rows (one transaction per chunk,
# asynchronous commit), rounds interleaved. Needs a PostgreSQL it may create a database on:
#
#   loadtest/scripts/copy-statement-sizes.sh [ROUNDS] [psql connection options...]
#   loadtest/scripts/copy-statement-sizes.sh 6 -h 127.0.0.1 -p 5432 -U postgres
#
# Prints each variant's seconds per round and their mean. The rows are 1,000 generated
# activities of about 400 bytes each (the load test's size), repeated.
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
# One script per variant: 300 transactions of STATEMENTS statements (or 30 of 10,000 rows).
for statements in 1 2 3 4; do
    rows=$(( (1000 + statements - 1) / statements ))
    for _ in $(seq 300); do
        echo "BEGIN;"
        for _ in $(seq "$statements"); do echo "\\copy activities FROM '$work/rows-$rows.bin' (FORMAT binary)"; done
        echo "COMMIT;"
    done > "$work/chunks-$statements.sql"
done
for _ in $(seq 30); do
    printf 'BEGIN;\n\\copy activities FROM %s (FORMAT binary)\nCOMMIT;\n' "'$work/rows-10000.bin'"
done > "$work/chunks-10000-rows.sql"
for round in $(seq "$rounds"); do
    for variant in 1 2 3 4 10000-rows; do
        sql "$@" -c "TRUNCATE activities"
        started=$(date +%s.%N)
        sql "$@" -c "SET synchronous_commit = off" -f "$work/chunks-$variant.sql" >/dev/null
        echo "$variant $(echo "$(date +%s.%N) - $started" | bc)"
    done
done | awk '{ sum[$1] += $2; n[$1]++; runs[$1] = runs[$1] sprintf(" %.3f", $2) }
    END { for (v in sum) printf "%s statement(s) per 1,000-row chunk: mean %.3f s;%s\n", v, sum[v] / n[v], runs[v] }' \
    | sed 's/^10000-rows statement(s) per 1,000-row chunk/10,000-row statements/' | sort
psql -X -q "$@" -d postgres -c "DROP DATABASE $database"
