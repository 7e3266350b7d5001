#!/usr/bin/env bash
# Samples what each busy connection of the engine's database is doing, every 50 ms, until
# stopped: one line per connection and sample (application, state, wait type, wait event,
# start of the query). Count them afterwards, for instance:
#   loadtest/scripts/pg-waits.sh .data/postgres/postmaster.pid /tmp/waits.txt &
#   ... run a scenario ...; kill %1
#   grep '^ingest-engine|' /tmp/waits.txt | cut -d'|' -f3,4 | sort | uniq -c | sort -rn
set -u
pid_file=${1:?usage: pg-waits.sh <postmaster.pid> <output file>}
output=${2:?usage: pg-waits.sh <postmaster.pid> <output file>}
port=$(sed -n 4p "$pid_file")
while true; do
  psql -h 127.0.0.1 -p "$port" -U ingest -d postgres -AtX -c \
    "SELECT coalesce(application_name, ''), state, coalesce(wait_event_type, 'CPU'),
            coalesce(wait_event, 'running'), left(query, 20)
       FROM pg_stat_activity
      WHERE datname = 'ingest' AND state <> 'idle' AND pid <> pg_backend_pid()" \
    >> "$output" 2>/dev/null
  sleep 0.05
done
