#!/usr/bin/env bash
# First figure for GET /v1/resources/{id}: the server under wrk (8 connections,
# 100 tenants' keys) next to pgbench on the same database in the same run:
#   - the bare primary-key SELECT (superuser, explicit tenant_id), and
#   - the transaction the server runs (BEGIN; SET LOCAL ROLE; set context; SELECT; COMMIT).
# Needs: a release build (cargo build --release), wrk (apt-get install wrk), pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/tenantry
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
WORK=$(mktemp -d /tmp/tenantry-bench-XXXXXX)
chmod 755 "$WORK"  # the embedded cluster may run as the postgres user
PORT=${PORT:-18181}
export TENANTRY_DATA_DIR=$WORK/data TENANTRY_ADMIN_TOKEN=tadm_bench TENANTRY_LISTEN=127.0.0.1:$PORT
export TENANTRY_METRICS_REFRESH_SECS=0
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
B=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf $B/readyz >/dev/null && break; sleep 0.2; done
curl -sf $B/readyz >/dev/null || { cat "$WORK/serve.log"; exit 1; }
H="Authorization: Bearer $TENANTRY_ADMIN_TOKEN"
: >"$WORK/pairs"
for i in $(seq 100); do
  T=$(curl -sf -X POST -H "$H" -H 'content-type: application/json' -d "{\"name\":\"t$i\"}" $B/v1/tenants | python3 -c 'import sys,json;print(json.load(sys.stdin)["tenant_id"])')
  K=$(curl -sf -X POST -H "$H" -H 'content-type: application/json' -d '{}' $B/v1/tenants/$T/keys | python3 -c 'import sys,json;print(json.load(sys.stdin)["key"])')
  for j in $(seq 10); do
    R=$(curl -sf -X POST -H "Authorization: Bearer $K" -H 'content-type: application/json' -d "{\"name\":\"r$j\",\"data\":{\"n\":$j}}" $B/v1/resources | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
    echo "$T $K $R" >>"$WORK/pairs"
  done
done
SOCK=$(cd "$TENANTRY_DATA_DIR" && pwd)
PG="host=$SOCK port=5432 dbname=tenantry"
# wrk: every request picks a random tenant's key and one of its resources.
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
# One resource per tenant: 100 pairs (pgbench accepts at most 128 scripts).
pairs, seen = [], set()
for t, k, r in (l.split() for l in open(f"{work}/pairs")):
    if t not in seen:
        seen.add(t)
        pairs.append((t, k, r))
with open(f"{work}/point.lua", "w") as f:
    f.write("local p = {\n")
    for t, k, r in pairs:
        f.write(f'  {{"{k}", "{r}"}},\n')
    f.write("}\nrequest = function()\n  local x = p[math.random(#p)]\n")
    f.write('  return wrk.format("GET", "/v1/resources/" .. x[2], {["Authorization"] = "Bearer " .. x[1]})\nend\n')
for i, (t, k, r) in enumerate(pairs):
    with open(f"{work}/bare{i}.sql", "w") as f:
        f.write(f"SELECT id, tenant_id, name, data, size_bytes, created_at, updated_at, created_by FROM tenantry.resources WHERE tenant_id = '{t}' AND id = '{r}';\n")
    with open(f"{work}/txn{i}.sql", "w") as f:
        f.write("BEGIN;\nSET LOCAL ROLE tenantry_app;\n")
        f.write(f"SELECT tenantry.set_tenant_context_local('{t}', NULL, 'bench');\n")
        f.write(f"SELECT id, tenant_id, name, data, size_bytes, created_at, updated_at, created_by, tenant_id = ANY (tenantry.visible_tenant_ids()) FROM tenantry.resources WHERE id = '{r}';\nCOMMIT;\n")
PY
scripts() { for f in "$WORK"/$1*.sql; do printf -- '-f %s ' "$f"; done; }
tps() { grep -oP 'tps = \K[0-9.]+' | head -1; }
wrk -t2 -c"$CONNS" -d2s -s "$WORK/point.lua" $B >/dev/null  # warm-up
API=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$WORK/point.lua" $B | grep -oP 'Requests/sec:\s+\K[0-9.]+')
BARE=$(pgbench -n -M prepared -c "$CONNS" -j 2 -T "$DURATION" -U postgres $(scripts bare) "$PG" 2>/dev/null | tps)
TXN=$(pgbench -n -M prepared -c "$CONNS" -j 2 -T "$DURATION" -U tenantry_server $(scripts txn) "$PG" 2>/dev/null | tps)
ERRORS=$(grep -c ' 5[0-9][0-9] ' "$WORK/serve.log" || true)
printf 'cores: %s  connections: %s  duration: %ss  tenants: 100\n' "$(nproc)" "$CONNS" "$DURATION"
printf 'GET /v1/resources/{id}          %10.0f req/s\n' "$API"
printf 'pgbench bare PK SELECT          %10.0f tps   ratio api/bare = %.2f\n' "$BARE" "$(awk -v a="$API" -v b="$BARE" 'BEGIN{print a/b}')"
printf 'pgbench same-tenant transaction %10.0f tps   ratio api/txn  = %.2f\n' "$TXN" "$(awk -v a="$API" -v b="$TXN" 'BEGIN{print a/b}')"
