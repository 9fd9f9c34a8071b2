#!/usr/bin/env bash
# Schemathesis against the server's own /openapi.json: a release server over a
# fresh embedded cluster, then three runs: a tenant key (tenant routes), a
# second key of that tenant (the key routes) and the admin token (admin
# routes). Checks: all of them (`--checks all`:
# no 5xx; status, content type, headers and body as documented; schema-valid
# requests accepted and schema-violating ones rejected; stateful links; auth),
# except what scripts/schemathesis.toml turns off, each with its reason.
# crates/tenantry-api/tests/schemathesis.rs runs a short form in `cargo test`.
#
#   scripts/schemathesis.sh                    # ~2-4 minutes on 2 cores
#   ST_MAX_EXAMPLES=200 scripts/schemathesis.sh  # longer
#   ST_SEED=42 scripts/schemathesis.sh           # reproduce a run
#   ST_BIN=target/debug/tenantry scripts/schemathesis.sh  # no release build
#
# Needs python3 with the venv module (Debian: apt-get install python3-venv) and
# network access to PyPI for the first run; schemathesis goes into
# target/pytools (shared with the pgrls test), pinned below. Exits non-zero when a run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-25}
SEED=${ST_SEED:-$RANDOM}
CHECKS=${ST_CHECKS:-all}
# What --checks all cannot apply to this API, each with its reason.
CONFIG=$PWD/scripts/schemathesis.toml
# The same venv as the pgrls test (crates/tenantry-db/tests/pgrls.rs); .ci/run fills it.
VENV=$PWD/target/pytools
# ST_BIN: a tenantry binary to test instead of building the release one (e.g. target/debug/tenantry).
BIN=${ST_BIN:-target/release/tenantry}

command -v python3 >/dev/null || {
  echo "schemathesis.sh: python3 is missing (Debian: apt-get install python3 python3-venv)" >&2
  exit 2
}
if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || {
    echo "schemathesis.sh: python3 lacks venv/ensurepip, so pip cannot be set up (Debian: apt-get install python3-venv)" >&2
    exit 2
  }
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || {
    echo "schemathesis.sh: pip is missing in $VENV (Debian: apt-get install python3-pip python3-venv)" >&2
    exit 2
  }
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
command -v curl >/dev/null || { echo "schemathesis.sh: curl is missing (apt-get install curl)" >&2; exit 2; }

[ -n "${ST_BIN:-}" ] || cargo build --release -q -p tenantry-cli

WORK=$(mktemp -d /tmp/tenantry-schemathesis-XXXXXX)
chmod 755 "$WORK"  # the embedded cluster may run as the postgres user
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TENANTRY_DATA_DIR=$WORK/data TENANTRY_ADMIN_TOKEN=tadm_schemathesis_$RANDOM$RANDOM
export TENANTRY_LISTEN=127.0.0.1:$PORT TENANTRY_METRICS_REFRESH_SECS=0
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
B=http://127.0.0.1:$PORT
for _ in $(seq 300); do curl -sf "$B/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$B/readyz" >/dev/null || { echo "server did not become ready:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

# Some data, so reads and listings return real rows: a tenant with a key,
# resources, a member, a role, a child and a share.
ADMIN="Authorization: Bearer $TENANTRY_ADMIN_TOKEN"
JSON='content-type: application/json'
field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
T=$(curl -sf -X POST -H "$ADMIN" -H "$JSON" -d '{"name":"schemathesis"}' "$B/v1/tenants" | field '["tenant_id"]')
OTHER=$(curl -sf -X POST -H "$ADMIN" -H "$JSON" -d '{"name":"other"}' "$B/v1/tenants" | field '["tenant_id"]')
KEY=$(curl -sf -X POST -H "$ADMIN" -H "$JSON" -d '{"description":"schemathesis"}' "$B/v1/tenants/$T/keys" | field '["key"]')
TK="Authorization: Bearer $KEY"
# X-Tenant-Id on tenant routes: the seeded tenant's (schemathesis.toml, [parameters]).
export TENANTRY_ST_TENANT_ID=$T
for i in 1 2 3; do
  R=$(curl -sf -X POST -H "$TK" -H "$JSON" -d "{\"name\":\"r$i\",\"data\":{\"n\":$i}}" "$B/v1/resources" | field '["id"]')
done
curl -sf -X POST -H "$TK" -H "$JSON" -d "{\"tenant_id\":\"$OTHER\"}" "$B/v1/resources/$R/shares" >/dev/null
curl -sf -X POST -H "$TK" -H "$JSON" -d '{"email":"a@example.com","display_name":"A"}' "$B/v1/members" >/dev/null
curl -sf -X POST -H "$TK" -H "$JSON" -d '{"name":"reader","description":"reads"}' "$B/v1/roles" >/dev/null
curl -sf -X POST -H "$TK" -H "$JSON" -d '{"name":"child"}' "$B/v1/tenants" >/dev/null

# One worker: with two, Python 3.11 before 3.11.8 can fail inside ast.parse
# ("AST constructor recursion depth mismatch", a CPython thread-safety bug).
run() {  # run NAME AUTH-HEADER FILTER-ARGS...
  local name=$1 auth=$2
  shift 2
  echo "== schemathesis $ST_VERSION, $name run (max $MAX_EXAMPLES examples per operation, seed $SEED)"
  local rc=0
  # From the scratch directory: schemathesis keeps a .schemathesis/ cache in its working directory.
  (cd "$WORK" && "$VENV/bin/st" --config-file "$CONFIG" run "$B/openapi.json" --checks "$CHECKS" \
    --exclude-checks ensure_resource_availability --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" --workers 1 --request-timeout 10 --no-color --generation-database none \
    --suppress-health-check all --header "$auth" "$@") >"$WORK/$name.out" 2>&1 || rc=$?
  cat "$WORK/$name.out"
  # The closing line, e.g. "==== 1234 passed in 56.78s ====", tagged with the run.
  echo "[$name] $(grep -E '^=+ .* in [0-9.]+s =+$' "$WORK/$name.out" | tail -1 | tr -s '=' | sed 's/^= //; s/ =$//') (exit code $rc)"
  return "$rc"
}
FAILED=0
# The key routes' run has a key of its own, made now: the tenant run may use up
# the tenant's max_api_keys (100) with keys it makes when ST_MAX_EXAMPLES is high.
KEYS_KEY=$(curl -sf -X POST -H "$ADMIN" -H "$JSON" -d '{"description":"schemathesis keys"}' "$B/v1/tenants/$T/keys" | field '["key"]')
# Tenant routes with the tenant key (POST /v1/tenants: a child of the key's tenant), but the
# two that end the key itself: schemathesis finds the id of the key it calls with, rotates it
# with grace_seconds 0 or revokes it, and every later request of the run would be a 401.
run tenant "$TK" --exclude-path-regex '^/v1/tenants/|^/(healthz|readyz|metrics)$' --exclude-operation-id list_tenants \
  --exclude-operation-id rotate_key --exclude-operation-id revoke_key || FAILED=1
# The key routes, with their own key.
run keys "Authorization: Bearer $KEYS_KEY" --include-path-regex '^/v1/keys' || FAILED=1
# Admin routes, the operator's (usage, statistics, its audit log, impersonations) and the
# system routes with the admin token.
run admin "$ADMIN" --include-path-regex '^/v1/(tenants|usage/top|stats/tenants|operator/audit|impersonations)|^/(healthz|readyz|metrics)$' || FAILED=1
# A panic answers 500 (which the runs catch), but say so plainly; so do logged errors.
if grep -qE 'panicked|ERROR.{0,12}tenantry' "$WORK/serve.log"; then
  echo "server log has panics or errors:"; grep -E -A2 'panicked|ERROR.{0,12}tenantry' "$WORK/serve.log" | head -40
  FAILED=1
fi
[ "$FAILED" -eq 0 ] && echo "schemathesis: all three runs passed" || echo "schemathesis: FAILED"
exit "$FAILED"
