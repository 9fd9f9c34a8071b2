#!/usr/bin/env bash
# What the tenant policy costs a point read, in CPU instructions counted by
# callgrind (repeatable to the instruction, whatever else the machine does;
# tps ratios such as rls_point's move by ±5-15 % between runs on 2 cores).
#
#   scripts/policy-cost.sh [executions]     # default 1000; ~2 min
#
# Builds a throwaway cluster (PostgreSQL server binaries, valgrind and a
# built target/release/tenantry needed), migrates it, adopts a table of 200
# tenants × 100 rows with hierarchy and sharing, then runs one backend in
# single-user mode under callgrind, twice per statement form: with the
# prepared point read executed 0 and N times. The difference divided by N is
# the cost of one execution (parse of EXECUTE, executor start, index scan,
# output), the same work in both forms except the row filter:
#
#   rls       as tenantry_app, through the table's policy
#             (tenant_id = ANY (tenantry.visible_tenant_ids()))
#   constant  as the owner, WHERE tenant_id = ANY ('{<tenant>}'::uuid[]):
#             the baseline of rls_point / adopted_rls_point
#
# To price a variant of the policy's expression, give SQL to run as the
# superuser once the table is loaded (POLICY_COST_SQL, e.g. CREATE OR REPLACE
# FUNCTION tenantry.visible_tenant_ids() ...: policies inline it when the
# statement is planned) and, if it reads a setting of its own, statements for
# the measured session before the reads (POLICY_COST_SESSION, e.g. SET
# app.vis = '{...}'; $tenant is the tenant read).
#
# docs/benchmarks.md ("The policy's cost in instructions") has the figures.
set -euo pipefail

n=${1:-1000}
# shellcheck source=callgrind-cluster.sh
source "$(dirname "$0")/callgrind-cluster.sh" policy-cost
psql <<'SQL'
\o /dev/null
CREATE SCHEMA bench;
CREATE TABLE bench.invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                             amount int, note text, PRIMARY KEY (tenant_id, id));
SELECT tenantry.adopt_table('bench.invoices', hierarchy => true, sharing => true);
DO $$ DECLARE t uuid; BEGIN
    FOR i IN 1..200 LOOP
        t := tenantry.create_tenant('t' || i);
        INSERT INTO bench.invoices (tenant_id, amount, note) SELECT t, g, 'n' FROM generate_series(1, 100) g;
    END LOOP;
END $$;
VACUUM ANALYZE bench.invoices;
SQL
if [ -n "${POLICY_COST_SQL:-}" ]; then psql -c "$POLICY_COST_SQL"; fi
read -r tenant id < <(psql -At -F ' ' -c "SELECT tenant_id, id FROM bench.invoices ORDER BY tenant_id, id OFFSET 500 LIMIT 1")
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -w stop >/dev/null

# run FORM EXECUTIONS: instructions of one single-user backend
run() {
    local form=$1 count=$2 in=$work/in.$1.$2.sql
    {
        echo "SELECT tenantry.set_tenant_context('$tenant');"
        if [ -n "${POLICY_COST_SESSION:-}" ]; then echo "${POLICY_COST_SESSION//\$tenant/$tenant}"; fi
        case $form in
            rls) echo "SET ROLE tenantry_app;"
                 echo "PREPARE q AS SELECT id, amount, note FROM bench.invoices WHERE id = '$id';" ;;
            constant) echo "PREPARE q AS SELECT id, amount, note FROM bench.invoices WHERE tenant_id = ANY ('{$tenant}'::uuid[]) AND id = '$id';" ;;
        esac
        for ((k = 0; k < count; k++)); do echo "EXECUTE q;"; done
    } >"$in"
    [ "$(id -u)" = 0 ] && chown postgres "$in"
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$form.$count" \
        "$bindir/postgres" --single -D "$work/data" -j postgres <"$in" >"$work/out.$form.$count" 2>"$work/err.$form.$count"
    local rows
    rows=$(grep -c "id = \"$id\"" "$work/out.$form.$count" || true)
    [ "$rows" = "$count" ] || { echo "$form: $rows rows for $count executions" >&2; exit 1; }
    grep -o "Collected : [0-9]*" "$work/err.$form.$count" | awk '{print $3}'
}

declare -A per
for form in constant rls; do
    zero=$(run "$form" 0)
    full=$(run "$form" "$n")
    per[$form]=$(( (full - zero) / n ))
done
printf '%-9s %9s instructions per execution\n' constant "${per[constant]}" rls "${per[rls]}"
awk -v r="${per[rls]}" -v c="${per[constant]}" 'BEGIN {
    printf "policy    %9d instructions (ratio %.3f)\n", r - c, r / c }'
