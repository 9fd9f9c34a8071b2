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
rc=0
CONFIGS=()
GIVEN=${PGRLS_SCHEMAS:-}
SHARED=$(printf '%s' "$GIVEN" | tr ',' '\n' | grep -v '^tenant_[0-9a-f]\{20\}$' | paste -sd, -)
TENANTS=$(printf '%s' "$GIVEN" | tr ',' '\n' | grep '^tenant_[0-9a-f]\{20\}$')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$TENANTS" ]; then
  CONFIGS+=("pgrls.toml|$SHARED")
else
  for t in $TENANTS; do
    sed "s/tenant_<hex>/$t/g" pgrls.toml > "$WORK/$t.toml"
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
