#!/usr/bin/env bash
# What creating a pooled tenant costs in the database, in CPU instructions
# counted by callgrind (repeatable whatever else the machine does; the
# harness's tenant_create_per_s moves with the machine's hours).
#
#   scripts/create-cost.sh [creations]     # default 300; ~2 min
#
# Builds a throwaway cluster (PostgreSQL server binaries, valgrind and a
# built target/release/tenantry needed), migrates it with 1,000 tenants in
# it, then runs one backend in single-user mode under callgrind with
# `SELECT tenantry.create_tenant(…)` 0 and N times, each its own transaction
# (an operator's session: the superuser). The difference divided by N is one
# creation: the function, its triggers, the audit row, the commit. What the
# server adds on top (its context proof, the read of the new row, the round
# trips) is not in it.
#
# CREATE_COST_SQL: SQL run as the superuser before measuring (to price a
# variant, e.g. CREATE OR REPLACE FUNCTION ...).
# docs/benchmarks.md ("What a tenant's creation costs") has the figures.
set -euo pipefail

n=${1:-300}
# shellcheck source=callgrind-cluster.sh
source "$(dirname "$0")/callgrind-cluster.sh" create-cost
psql -c "SELECT count(tenantry.create_tenant('seed ' || i)) FROM generate_series(1, 1000) i" >/dev/null
if [ -n "${CREATE_COST_SQL:-}" ]; then psql -c "$CREATE_COST_SQL"; fi
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -w stop >/dev/null

# run COUNT: instructions of one single-user backend creating COUNT tenants
run() {
    local count=$1 in=$work/in.$1.sql
    {
        echo "SET synchronous_commit = off;"
        # A first creation in both runs: plans and caches are warm in each.
        echo "SELECT tenantry.create_tenant('warm');"
        for ((k = 0; k < count; k++)); do echo "SELECT tenantry.create_tenant('made $k');"; done
    } >"$in"
    [ "$(id -u)" = 0 ] && chown postgres "$in"
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$count" \
        "$bindir/postgres" --single -D "$work/data" -j postgres <"$in" >"$work/out.$count" 2>"$work/err.$count"
    if grep -q "ERROR" "$work/out.$count" "$work/err.$count"; then
        grep -h "ERROR" "$work/out.$count" "$work/err.$count" | head -3 >&2
        exit 1
    fi
    grep -o "Collected : [0-9]*" "$work/err.$count" | awk '{print $3}'
}

zero=$(run 0)
full=$(run "$n")
printf 'creation %9d instructions each (%d creations)\n' $(( (full - zero) / n )) "$n"
if [ -n "${CREATE_COST_KEEP:-}" ]; then cp "$work/cg.$n" "$CREATE_COST_KEEP"; fi
