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
SCHEMAS=()
[ -n "${PGRLS_SCHEMAS:-}" ] && SCHEMAS=(--schemas "$PGRLS_SCHEMAS")
rc=0
echo "== pgrls lint"
"$PGRLS" lint --config pgrls.toml "${SCHEMAS[@]}" || rc=1
for mode in anon cross-tenant write; do
  echo "== pgrls verify --mode $mode"
  "$PGRLS" verify --config pgrls.toml "${SCHEMAS[@]}" --mode "$mode" \
    --auth-function tenantry.current_tenant_id --auth-function tenantry.visible_tenant_ids || rc=1
done
exit "$rc"
