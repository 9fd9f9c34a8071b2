#!/usr/bin/env bash
# What proving a tenant context costs the database, in CPU instructions
# counted by callgrind (repeatable to a few instructions, whatever else the
# machine does), per call of tenantry.enter_context: the server's statement
# at the start of every transaction on its own connections.
#
#   scripts/context-cost.sh [calls]              # default 500; ~1 min
#   scripts/context-cost.sh [calls] variant.sql  # the same after running
#                                                # variant.sql (e.g. a CREATE
#                                                # OR REPLACE of the function)
#   scripts/context-cost.sh [calls] trivial      # SELECT set_config(...)
#                                                # instead: a statement's own cost
#
# Builds a throwaway cluster (PostgreSQL server binaries, valgrind and a
# built target/release/tenantry needed), migrates it, makes 50 tenants, then
# runs one backend in single-user mode under callgrind twice: with 0 and N
# calls, each in its own transaction, on a context session opened by hand
# (the commitment written as the superuser, as open_context_session would,
# then SET ROLE tenantry_app) with a chain of reveals. The difference divided
# by N is one call, its statement's parse and plan included (the server's is
# prepared: subtract the trivial form's figure for the function alone).
# docs/benchmarks.md ("enter_context in instructions") has the figures.
set -euo pipefail

n=${1:-500}
variant=${2:-}
[ -z "$variant" ] || [ "$variant" = trivial ] || [ -r "$variant" ] || { echo "no such file: $variant" >&2; exit 2; }
# shellcheck source=callgrind-cluster.sh
source "$(dirname "$0")/callgrind-cluster.sh" context-cost
psql -c "SELECT tenantry.create_tenant('t' || i) FROM generate_series(1, 50) i" >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -w stop >/dev/null

# The input of one backend: COUNT calls, each its own transaction (-j: a
# statement ends with a semicolon and an empty line).
input() {
    python3 - "$1" "$variant" <<'PY'
import hashlib, os, sys
count, variant = int(sys.argv[1]), sys.argv[2]
out = []
out.append("SELECT set_config('tenantry.part', tenantry.tenant_context_part(tenant_id), false), "
           "set_config('tenantry.tenant', tenant_id::text, false) FROM tenantry.tenants ORDER BY tenant_id OFFSET 7 LIMIT 1;")
if variant and variant != "trivial":
    out.append(open(variant).read().replace("\n", " "))
secrets = [os.urandom(32) for _ in range(count + 2)]
out.append("SELECT nextval('tenantry.context_steps');")
out.append("SELECT set_config('backtrace_functions', 'tenantry_c_%s_' || (SELECT max(key_id) FROM tenantry.context_keys) "
           "|| '_' || currval('tenantry.context_steps'), false);" % hashlib.sha256(secrets[0]).hexdigest())
out.append("SET ROLE tenantry_app;")
for i in range(count):
    following = hashlib.sha256(secrets[i + 1]).hexdigest()
    if variant == "trivial":
        out.append("SELECT set_config('tenantry.other', '%s', true);" % following)
    else:
        out.append("SELECT tenantry.enter_context('\\x%s', '\\x%s', current_setting('tenantry.tenant')::uuid, NULL, "
                   "'key:0', NULL, NULL, current_setting('tenantry.part'));" % (secrets[i].hex(), following))
print("\n\n".join(out))
PY
}

run() {
    local count=$1
    local in=$work/in.$count.sql
    input "$count" >"$in"
    [ "$(id -u)" = 0 ] && chown postgres "$in"
    "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$count" \
        "$bindir/postgres" --single -D "$work/data" -j postgres <"$in" >"$work/out.$count" 2>"$work/err.$count"
    if [ "$variant" != trivial ]; then
        local proven
        proven=$(grep -c 'enter_context = ' "$work/out.$count" || true)
        [ "$proven" = "$count" ] || { echo "$proven of $count contexts proven" >&2; exit 1; }
    fi
    grep -o "Collected : [0-9]*" "$work/err.$count" | awk '{print $3}'
}

zero=$(run 0)
full=$(run "$n")
printf '%s: %d instructions per call (%d calls)\n' "${variant:-enter_context}" $(( (full - zero) / n )) "$n"
