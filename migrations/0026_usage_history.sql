-- =============================================================================
-- 0026 usage history: errors, latency and keys per hour; storage over time
--
-- tenant_metrics (the hourly rollup of request_log) gains distinct keys, 4xx
-- and 5xx counts and the p95 latency. A materialized view cannot gain
-- columns, so it is built again here from request_log, which it only
-- summarises: nothing is lost. current_tenant_metrics() returns the new
-- columns, a changed return type: it is dropped here and defined again in
-- repeatable/06_usage.sql.
--
-- storage_samples keeps each tenant's resources and bytes once an hour, for
-- 30 days, written by refresh_tenant_metrics() (the server's periodic
-- refresh); storage_sample_runs records which hours were sampled, so that
-- the first refresh of an hour samples and the others (on any server) do not.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION tenantry.current_tenant_metrics(timestamptz, timestamptz);
DROP MATERIALIZED VIEW tenantry.tenant_metrics;

CREATE MATERIALIZED VIEW tenantry.tenant_metrics AS
SELECT
    tenant_id,
    date_trunc('hour', created_at) AS hour,
    count(*) AS request_count,
    count(DISTINCT user_id) AS unique_users,
    count(DISTINCT resource_id) AS resources_accessed,
    count(DISTINCT key_id) AS unique_keys,
    count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
    count(*) FILTER (WHERE status >= 500) AS server_errors,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms
FROM tenantry.request_log
WHERE created_at > now() - interval '30 days'
GROUP BY tenant_id, date_trunc('hour', created_at);
CREATE UNIQUE INDEX tenant_metrics_tenant_hour_idx ON tenantry.tenant_metrics (tenant_id, hour);
COMMENT ON MATERIALIZED VIEW tenantry.tenant_metrics IS 'Guide view: per tenant and hour over the last 30 days, requests, distinct members, resources and API keys, 4xx and 5xx answers, p95 latency (ms). No RLS on materialized views: never granted to tenant roles; read via current_tenant_metrics() and, by operators, usage_top().';
REVOKE ALL ON tenantry.tenant_metrics FROM PUBLIC;

CREATE TABLE tenantry.storage_samples (
    tenant_id uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    hour      timestamptz NOT NULL,
    resources bigint NOT NULL CHECK (resources >= 0),
    bytes     bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (tenant_id, hour)
);
ALTER TABLE tenantry.storage_samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.storage_samples FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.storage_samples IS 'Each tenant''s resources and bytes (its own rows, wherever its tier keeps them), sampled at the first metrics refresh of each hour; kept 30 days. Written by refresh_tenant_metrics() only.';

CREATE TABLE tenantry.storage_sample_runs (
    hour       timestamptz PRIMARY KEY,
    sampled_at timestamptz NOT NULL DEFAULT now(),
    tenants    integer NOT NULL
);
COMMENT ON TABLE tenantry.storage_sample_runs IS 'The hours whose storage was sampled (one row each, kept 30 days): the first refresh of an hour claims it by inserting its row, so each hour is sampled once across every server. Holds no tenant data; granted to none.';
