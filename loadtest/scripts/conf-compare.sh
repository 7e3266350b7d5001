#!/usr/bin/env bash
# Compares PostgreSQL settings files for the engine's private cluster with the `scans` scenario.
#
#   loadtest/scripts/conf-compare.sh ROUNDS NAME=FILE[@ENGINE] [NAME=FILE[@ENGINE] ...]
#
# Each round runs every variant once, in the order given (so a slow spell of the machine hits
# all of them alike): a fresh private cluster started by the release engine with FILE as its
# settings (a missing file means PostgreSQL's defaults), the `scans` scenario with its plain
# COPY baseline (no psql baseline), then a clean stop. ENGINE, when given, is the engine binary
# to run instead of target/release/ingest-engine (to compare two builds the same way). Reports go to
# loadtest/reports/conf-compare-<time>/<name>-<round>/; the last lines printed are one row per
# run: engine records/s, baseline records/s, their ratio, POST /data-scans p99, the CPU
# seconds and minor page faults of the engine process over the scenario, and the CPU seconds of
# the PostgreSQL processes alive at both ends of the scenario (the engine's connections and the
# server's own workers; the baseline's connections have exited by then and are not counted),
# all from /proc.
# Needs `cargo build --release --workspace --bins` first. Extra arguments for the scenario can
# be given in SCANS_ARGS (for example SCANS_ARGS="--tenants 50").
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:?rounds}
shift
[ "$#" -gt 0 ] || { echo "give at least one NAME=FILE" >&2; exit 2; }
port=${PORT:-18282}
out="loadtest/reports/conf-compare-$(date -u +%Y%m%dT%H%M%SZ)"
work=$(mktemp -d /var/tmp/conf-compare.XXXXXX)
chmod 755 "$work"   # PostgreSQL runs as another OS user when the engine runs as root
mkdir -p "$out"
engine_pid=""
cleanup() {
    if [ -n "$engine_pid" ]; then kill "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# "pid ticks" of each child of the postmaster whose pid is on the first line of $1.
postgres_children_ticks() {
    local postmaster
    postmaster=$(head -1 "$1")
    for stat in /proc/[0-9]*/stat; do
        awk -v parent="$postmaster" '$4 == parent {print $1, $14 + $15}' "$stat" 2>/dev/null || true
    done
}

for round in $(seq 1 "$rounds"); do
    for variant in "$@"; do
        name=${variant%%=*}
        file=${variant#*=}
        engine=target/release/ingest-engine
        if [[ "$file" == *@* ]]; then
            engine=${file#*@}
            file=${file%%@*}
        fi
        data="$work/$name-$round"
        mkdir -p "$data"
        INGEST__HTTP__PORT=$port \
            INGEST__DATABASE__EMBEDDED__DATA_DIR="$data/pg" \
            INGEST__DATABASE__EMBEDDED__CONFIG_FILE="$file" \
            "$engine" >"$data/engine.log" 2>&1 &
        engine_pid=$!
        for _ in $(seq 1 120); do
            curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
            kill -0 "$engine_pid" 2>/dev/null || { cat "$data/engine.log" >&2; exit 1; }
            sleep 1
        done
        report="$out/$name-$round"
        mkdir -p "$report"
        before=$(awk '{print $10, $14 + $15}' "/proc/$engine_pid/stat")
        postgres_children_ticks "$data/pg/postmaster.pid" >"$report/postgres-before.txt"
        # shellcheck disable=SC2086
        target/release/loadtest --engine-url "http://127.0.0.1:$port" \
            --postmaster-pid "$data/pg/postmaster.pid" --token "$(cat "$data/admin-token")" \
            --report-dir "$report" --no-psql-copy scans ${SCANS_ARGS:-} >"$report/output.txt" 2>&1 || true
        after=$(awk '{print $10, $14 + $15}' "/proc/$engine_pid/stat")
        postgres_children_ticks "$data/pg/postmaster.pid" >"$report/postgres-after.txt"
        echo "$before $after $(getconf CLK_TCK)" >"$report/engine-cpu.txt"
        kill -TERM "$engine_pid"
        wait "$engine_pid" || true
        engine_pid=""
        rm -rf "$data"
    done
done

python3 - "$out" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print(f"{'run':<24}{'engine rec/s':>14}{'COPY rec/s':>12}{'ratio':>8}{'POST p99 ms':>13}"
      f"{'engine CPU s':>14}{'page faults':>13}{'postgres CPU s':>16}")

def ticks_by_pid(path):
    if not os.path.exists(path):
        return {}
    return {int(pid): int(ticks) for pid, ticks in (line.split() for line in open(path) if line.strip())}

for path in sorted(glob.glob(os.path.join(out, "*", "scans-*.json"))):
    report = json.load(open(path))
    run = os.path.basename(os.path.dirname(path))
    engine = report["engine_throughput"]["records_per_second"]
    baseline = report["baseline"]["throughput"]["records_per_second"]
    post = report["endpoints"].get("POST /data-scans")
    p99 = post["latency_success"]["p99_ms"] if post else float("nan")
    cpu_path = os.path.join(os.path.dirname(path), "engine-cpu.txt")
    faults_before, ticks_before, faults_after, ticks_after, ticks_per_second = map(
        int, open(cpu_path).read().split()) if os.path.exists(cpu_path) else (0, 0, 0, 0, 1)
    cpu = (ticks_after - ticks_before) / ticks_per_second
    faults = faults_after - faults_before
    postgres_before = ticks_by_pid(os.path.join(os.path.dirname(path), "postgres-before.txt"))
    postgres_after = ticks_by_pid(os.path.join(os.path.dirname(path), "postgres-after.txt"))
    postgres_cpu = sum(ticks - postgres_before.get(pid, 0)
                       for pid, ticks in postgres_after.items()) / ticks_per_second
    print(f"{run:<24}{engine:>14,.0f}{baseline:>12,.0f}{engine / baseline:>8.3f}{p99:>13,.0f}"
          f"{cpu:>14.2f}{faults:>13,}{postgres_cpu:>16.2f}")
EOF
