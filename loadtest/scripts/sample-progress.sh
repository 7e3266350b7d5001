#!/usr/bin/env bash
# Prints, every second while an engine answers on PORT (18383 by default, fresh-run.sh's), the
# machine's idle CPU share over that second and the engine's records accepted and written so
# far (from /metrics). Start it before the scenario; it ends when the engine stops answering.
# The phases of a burst show in it: acceptance (accepted grows), the tail of writes after the
# last 202, and whether the cores were idle in either.
#
#   loadtest/scripts/sample-progress.sh > samples.txt &
#   loadtest/scripts/fresh-run.sh target/release/ingest-engine burst --skip-baseline
set -uo pipefail

port=${PORT:-18383}
read -r -a previous < <(head -1 /proc/stat)
answered=""
while true; do
    sleep 1
    metrics=$(curl -s --max-time 1 "http://127.0.0.1:$port/metrics") || metrics=""
    if [ -z "$metrics" ]; then
        [ -n "$answered" ] && break
        continue
    fi
    answered=1
    read -r -a current < <(head -1 /proc/stat)
    idle=$(( current[4] + current[5] - previous[4] - previous[5] ))
    total=0
    for field in 1 2 3 4 5 6 7 8; do
        total=$(( total + current[field] - previous[field] ))
    done
    previous=("${current[@]}")
    sum() { echo "$metrics" | awk -v name="$1" '$1 ~ "^"name {s += $2} END {printf "%d", s}'; }
    echo "$(date -u +%H:%M:%S) idle $(( 100 * idle / (total > 0 ? total : 1) ))% accepted $(sum ingest_records_accepted_total) written $(sum ingest_records_written_total)"
done
