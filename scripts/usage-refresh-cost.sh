#!/usr/bin/env bash
# What the usage upkeep costs (docs/benchmarks.md, "Usage counted once an
# hour"): the guide's tenant_metrics over 30 days of request_log refreshed
# as the guide defines it, against tenantry's upkeep that counts each hour
# once (migration 0058), and what the live usage reads cost, on one scratch
# database `bench` holding ROWS request-log rows over 30 days of TENANTS
# tenants.
#
#   PGHOST=/path/to/socket PGPORT=5432 scripts/usage-refresh-cost.sh [ROWS] [TENANTS]
#
# The cluster's superuser is `postgres`; TENANTRY names the tenantry binary
# (default target/release/tenantry). The database `bench` is dropped first.
set -euo pipefail
ROWS=${1:-3000000}
TENANTS=${2:-2000}
TENANTRY=${TENANTRY:-target/release/tenantry}
P="psql -U postgres -v ON_ERROR_STOP=1 -qAt"
$P -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
DATABASE_URL="postgres://postgres@$(printf %s "${PGHOST:-/var/run/postgresql}" | sed 's|/|%2F|g'):${PGPORT:-5432}/bench" "$TENANTRY" migrate > /dev/null
$P -d bench -v tenants="$TENANTS" <<'SQL'
SET ROLE tenantry_owner;
DO $$ DECLARE d date; n text; BEGIN
  FOR d IN SELECT generate_series(current_date - 31, current_date - 2, interval '1 day')::date LOOP
    n := 'request_log_bench_' || to_char(d, 'YYYYMMDD');
    EXECUTE format('CREATE TABLE tenantry.%I PARTITION OF tenantry.request_log FOR VALUES FROM (%L) TO (%L)', n, d, d + 1);
    PERFORM tenantry.secure_request_log_partition(n);
  END LOOP; END $$;
RESET ROLE;
SELECT count(tenantry.create_tenant('t' || i)) FROM generate_series(1, :tenants) i;
SQL
echo "tenants made"
$P -d bench -v tenants="$TENANTS" -v rows="$ROWS" <<'SQL'
INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, key_id, resource_id, method, route, status, latency_ms)
SELECT t.tenant_id[1 + (i % :tenants)], now() - random() * interval '30 days',
       CASE WHEN i % 3 = 0 THEN NULL ELSE gen_random_uuid() END, gen_random_uuid(),
       CASE WHEN i % 2 = 0 THEN gen_random_uuid() END, 'GET', '/v1/resources', 200 + (i % 5) * 100, random() * 40
FROM (SELECT array_agg(tenant_id) AS tenant_id FROM tenantry.tenants) t, generate_series(1, :rows) i;
ANALYZE tenantry.request_log;
CREATE MATERIALIZED VIEW guide_metrics AS
SELECT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS request_count,
       count(DISTINCT user_id) AS unique_users, count(DISTINCT resource_id) AS resources_accessed,
       count(DISTINCT key_id) AS unique_keys, count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
       count(*) FILTER (WHERE status >= 500) AS server_errors,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms
FROM tenantry.request_log WHERE created_at > now() - interval '30 days' GROUP BY 1, 2;
CREATE UNIQUE INDEX ON guide_metrics (tenant_id, hour);
SQL
echo "rows: $($P -d bench -c 'SELECT count(*) FROM tenantry.request_log')"
t() { local s=$(date +%s.%N); $P -d bench -c "$1" > /dev/null; echo "$2: $(echo "$(date +%s.%N) - $s" | bc) s"; }
t "REFRESH MATERIALIZED VIEW CONCURRENTLY guide_metrics" "guide definition, refresh 1"
t "REFRESH MATERIALIZED VIEW CONCURRENTLY guide_metrics" "guide definition, refresh 2"
t "SELECT tenantry.refresh_tenant_metrics()" "roll-up, first refresh (catches up 30 days)"
t "SELECT tenantry.usage_upkeep()" "upkeep, run 2 (no hour to roll up)"
t "SELECT tenantry.usage_upkeep()" "upkeep, run 3"
t "SELECT tenantry.refresh_tenant_metrics()" "refresh_tenant_metrics (copy refreshed)"
T=$($P -d bench -c "SELECT tenant_id FROM tenantry.tenants ORDER BY tenant_id LIMIT 1")
t "BEGIN; SELECT tenantry.set_tenant_context_local('$T'); SELECT count(*) FROM tenantry.current_tenant_metrics(); COMMIT" "current_tenant_metrics, one tenant, live"
t "BEGIN; SELECT count(*) FROM tenantry.tenant_metrics WHERE tenant_id = '$T'; COMMIT" "the copy, one tenant"
t "SELECT count(*) FROM tenantry.usage_top(30, 'requests', 10)" "usage_top, 30 days"
t "SELECT count(*) FROM tenantry.usage_top(1, 'requests', 10)" "usage_top, 1 day"
echo "view rows: $($P -d bench -c 'SELECT count(*) FROM tenantry.tenant_metrics'), guide rows: $($P -d bench -c 'SELECT count(*) FROM guide_metrics')"
echo "differences: $($P -d bench -c "SELECT count(*) FROM ((SELECT tenant_id, hour, request_count, unique_users, resources_accessed, unique_keys, client_errors, server_errors, round(p95_latency_ms::numeric, 6) FROM tenantry.tenant_metrics EXCEPT SELECT tenant_id, hour, request_count, unique_users, resources_accessed, unique_keys, client_errors, server_errors, round(p95_latency_ms::numeric, 6) FROM guide_metrics) UNION ALL (SELECT tenant_id, hour, request_count, unique_users, resources_accessed, unique_keys, client_errors, server_errors, round(p95_latency_ms::numeric, 6) FROM guide_metrics EXCEPT SELECT tenant_id, hour, request_count, unique_users, resources_accessed, unique_keys, client_errors, server_errors, round(p95_latency_ms::numeric, 6) FROM tenantry.tenant_metrics)) d")"
