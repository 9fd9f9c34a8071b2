#!/usr/bin/env bash
# pgrls against a migrated tenantry database, as crates/tenantry-db/tests/pgrls.rs runs it
# (which also adds a schema-isolated tenant and decides which unproven policies are by design):
# lint (fails on any error or warning) and verify in the anon, cross-tenant and write modes
# (fails on any leak; prints every unproven table).
#
#   scripts/pgrls.sh 'postgresql://postgres@/tenantry?host=/path/to/socket/dir'
#   DATABASE_URL=... PGRLS_SCHEMAS=tenantry,tenant_<hex> scripts/pgrls.sh
#
# pgrls comes from $TENANTRY_PGRLS or target/pytools/bin/pgrls (.ci/run installs it, pinned).
# Your own adopted tables: PGRLS_SCHEMAS=tenantry,public (psql must reach the database: the
# triggers tenantry made on them are read from it and allowlisted, pgrls.toml `@adopted-tables@`).
set -uo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${1:-${DATABASE_URL:?give the database URL as the argument or in DATABASE_URL}}
PGRLS=${TENANTRY_PGRLS:-target/pytools/bin/pgrls}
[ -x "$PGRLS" ] || {
  echo "pgrls.sh: $PGRLS is missing: python3 -m venv target/pytools && target/pytools/bin/pip install pgrls==0.57.1" >&2
  exit 2
}
# pgrls.toml names a schema-isolated tenant's objects `tenant_<hex>.…`: a
# config of its own per tenant schema named in PGRLS_SCHEMAS (one run each,
# as the test does; without it only the other schemas are checked and a
# tenant schema's allowlisted findings failed the run: found by an outside
# check).
# The triggers tenantry made on the tables adopted in this database, which
# pgrls cannot tell from the team's own (SEC013): allowlisted by name, each
# only while its definition is tenantry's (pgrls.toml, `@adopted-tables@`).
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BASE=$WORK/pgrls.toml
# Under a fixed search_path: pg_get_triggerdef leaves out the schema of a
# function on the session's path (tenantry on it, as the README sets for psql),
# and adopted_table_triggers writes it. Schema tenants' copies of the adopted
# tables carry the same triggers (family_copies).
psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -c "SET search_path = pg_catalog, pg_temp" -c "
  WITH adopted AS (
    SELECT tt.table_id AS tbl, tt.sharing FROM tenantry.tenant_tables tt
    UNION ALL
    SELECT f.copy, tt.sharing
    FROM tenantry.family_copies() f
    JOIN tenantry.tenant_tables tt ON tt.table_id = f.template
  )
  SELECT format('    %s, # tenantry''s own trigger (adopt_table)',
                to_json(format('%s.%s.%s', n.nspname, c.relname, t.tgname)))
  FROM adopted d
  JOIN pg_class c ON c.oid = d.tbl
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
  JOIN LATERAL tenantry.adopted_table_triggers(d.tbl, d.sharing) a
    ON a.tgname = t.tgname AND a.definition = pg_get_triggerdef(t.oid)
  ORDER BY 1" > "$WORK/adopted" || { echo "pgrls.sh: cannot read the adopted tables with psql" >&2; exit 2; }
sed "/@adopted-tables@/r $WORK/adopted" pgrls.toml > "$BASE"
rc=0
CONFIGS=()
GIVEN=${PGRLS_SCHEMAS:-}
SHARED=$(printf '%s' "$GIVEN" | tr ',' '\n' | grep -v '^tenant_[0-9a-f]\{20\}$' | paste -sd, -)
TENANTS=$(printf '%s' "$GIVEN" | tr ',' '\n' | grep '^tenant_[0-9a-f]\{20\}$')
if [ -z "$TENANTS" ]; then
  CONFIGS+=("$BASE|$SHARED")
else
  for t in $TENANTS; do
    sed "s/tenant_<hex>/$t/g" "$BASE" > "$WORK/$t.toml"
    CONFIGS+=("$WORK/$t.toml|${SHARED:+$SHARED,}$t")
  done
fi
for entry in "${CONFIGS[@]}"; do
  config=${entry%%|*}
  schemas=${entry#*|}
  SCHEMAS=()
  [ -n "$schemas" ] && SCHEMAS=(--schemas "$schemas")
  echo "== pgrls lint ${schemas:-(default schemas)}"
  "$PGRLS" lint --config "$config" "${SCHEMAS[@]}" || rc=1
  for mode in anon cross-tenant write; do
    echo "== pgrls verify --mode $mode ${schemas:-(default schemas)}"
    "$PGRLS" verify --config "$config" "${SCHEMAS[@]}" --mode "$mode" \
      --auth-function tenantry.current_tenant_id --auth-function tenantry.visible_tenant_ids || rc=1
  done
done
exit "$rc"
