#!/usr/bin/env bash
# Where a point read's CPU goes, process by process: runs the benchmark's
# api_vs_handwritten figures (tenantry-bench) and, while wrk loads each server,
# counts with `perf stat` the CPU time, system calls and context switches of
# that server process and of every PostgreSQL backend of the benchmark
# database, then divides by the requests the run served. The three servers are
# tenantry with its request log, tenantry without it, and the hand-written
# baseline (crates/tenantry-bench/src/handwritten.rs). docs/benchmarks.md
# ("Where a point read's CPU goes") has the figures and how to read them.
#
#   scripts/point-read-cpu.sh DATA_DIR [OUT.json]
#
# DATA_DIR is a `tenantry-bench --data-dir` directory (its loaded data set is
# reused). Needs perf (linux-perf), wrk, pgbench and a release build of
# tenantry-bench (TENANTRY_BENCH points at another binary, for example one
# built with frame pointers for `perf record -g`). Run on a quiet machine:
# every other process's CPU lands in the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:?usage: scripts/point-read-cpu.sh DATA_DIR [OUT.json]}
out=${2:-target/bench/point-read-cpu.json}
bench=${TENANTRY_BENCH:-target/release/tenantry-bench}
seconds=20
window=15
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"

"$bench" --data-dir "$data_dir" --only api_vs_handwritten --seconds "$seconds" --runs 1 \
    --out "$out" >"$work/bench.log" 2>&1 &
bench_pid=$!

# wrk runs each server first for a second (warm-up), in the order the
# benchmark starts them (logged, unlogged, hand-written), then for the
# measured $seconds: the measured runs are told apart by their duration.
names=(logged unlogged hand)
seen=()
while kill -0 "$bench_pid" 2>/dev/null; do
    read -r url duration < <(ps -eo args | awk '$1 ~ /\/wrk$/ {print $NF, $7; exit}') || true
    if [ -n "${url:-}" ]; then
        index=-1
        for i in "${!seen[@]}"; do [ "${seen[$i]}" = "$url" ] && index=$i; done
        if [ "$index" = -1 ]; then seen+=("$url"); index=$((${#seen[@]} - 1)); fi
        name=${names[$index]:-other}
        if [ "$duration" = "${seconds}s" ] && [ ! -e "$work/$name.server" ]; then
            server=$(ss -ltnpH "sport = :${url##*:}" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
            backends=$(pgrep -d, -f "^postgres: tenantry_(server|bench_handwritten) ")
            sleep 2
            perf stat -x, -e task-clock,raw_syscalls:sys_enter,context-switches -p "$server" \
                -o "$work/$name.server" -- sleep "$window" &
            perf stat -x, -e task-clock,raw_syscalls:sys_enter,context-switches -p "$backends" \
                -o "$work/$name.postgres" -- sleep "$window" &
            wait %2 %3 2>/dev/null || true
        fi
    fi
    sleep 0.3
done
wait "$bench_pid" || { cat "$work/bench.log"; exit 1; }

python3 - "$out" "$work" "$window" <<'PY'
import json, sys
out, work, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
figures = {f["name"]: f for f in json.load(open(out))["figures"]}
rates = {
    "logged": figures["api_point_read"]["runs"][0],
    "unlogged": figures["request_log_overhead"]["baseline_runs"][0],
    "hand": figures["api_vs_handwritten"]["baseline_runs"][0],
}
print(f"{'server':9} {'process':9} {'req/s':>8} {'CPU µs/req':>11} {'syscalls/req':>13} {'switches/req':>13}")
for name, rate in rates.items():
    for side in ("server", "postgres"):
        counts = {}
        try:
            for line in open(f"{work}/{name}.{side}"):
                parts = line.split(",")
                if len(parts) > 3 and parts[0][:1].isdigit():
                    counts[parts[2]] = float(parts[0])
        except FileNotFoundError:
            continue
        requests = rate * window
        print(f"{name:9} {side:9} {rate:8.0f} {counts.get('task-clock', 0) * 1e3 / requests:11.1f} "
              f"{counts.get('raw_syscalls:sys_enter', 0) / requests:13.1f} {counts.get('context-switches', 0) / requests:13.1f}")
PY
