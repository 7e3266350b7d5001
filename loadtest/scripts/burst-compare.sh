#!/usr/bin/env bash
# Compares engine builds with the `burst` scenario, round after round.
#
#   loadtest/scripts/burst-compare.sh ROUNDS NAME=ENGINE [NAME=ENGINE ...]
#
# Each round runs every build once, in the order given (so a slow spell of the machine hits all
# of them alike), through `fresh-run.sh ENGINE burst`: a fresh private cluster, the burst with its
# plain COPY baseline, a clean stop. Each run's full output goes to
# /var/tmp/burst-compare-<time>/<name>-<round>.log (reports to loadtest/reports/ as usual); one
# line per run is printed: ratio to COPY, last 202, last completion, COPY's rate, scans
# accepted at the first try, peak RSS, the CPU seconds of the engine and PostgreSQL, the report.
# Needs `cargo build --release --workspace --bins` first (for target/release/loadtest).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:?rounds}
shift
[ "$#" -gt 0 ] || { echo "give at least one NAME=ENGINE" >&2; exit 2; }
logs="/var/tmp/burst-compare-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$logs"
field() { grep -o "$1" "$2" | head -1 | grep -o "$3" || echo "?"; }
for round in $(seq "$rounds"); do
    for spec in "$@"; do
        name=${spec%%=*}
        engine=${spec#*=}
        log="$logs/$name-$round.log"
        loadtest/scripts/fresh-run.sh "$engine" burst >"$log" 2>&1 || echo "$name-$round failed, see $log" >&2
        echo "$name-$round" \
            "ratio=$(field 'Engine / plain COPY = [0-9.]*' "$log" '[0-9.]*$')" \
            "last202=$(field 'Last 202 after [0-9.]* s' "$log" '[0-9.]* s')" \
            "done=$(field 'last completion after [0-9.]* s' "$log" '[0-9.]* s')" \
            "copy=$(field 'Plain binary COPY[^=]*= [0-9,]* records/s' "$log" '[0-9,]* records/s$')" \
            "first_try=$(field '([0-9]* at the first try' "$log" '[0-9][0-9]*')" \
            "rss=$(field 'Engine peak RSS [0-9.]* MiB' "$log" '[0-9.]* MiB')" \
            "| $(grep 'CPU seconds' "$log" || echo 'CPU seconds: ?')" \
            "| $(field 'burst-[0-9TZ]*\.json' "$log" '.*')"
    done
done
