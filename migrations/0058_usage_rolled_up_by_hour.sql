-- =============================================================================
-- 0058 usage rolled up once per hour
--
-- tenant_metrics (the guide's hourly usage) was refreshed from request_log
-- alone: every refresh counted the distinct users, keys and resources and
-- the p95 latency of every request of the last 30 days again, whatever had
-- changed (41 s at 3.25 million rows; a busy tenant's log made every
-- refresh cost the database more for everyone). Each hour is now counted
-- once, after it ended (and the request-log writers' retries with it), into
-- tenant_metric_hours; the view keeps its name, columns and meaning (the
-- last 30 days per tenant and hour, the guide's `REFRESH MATERIALIZED VIEW
-- CONCURRENTLY tenant_metrics` included) and reads the hours rolled up from
-- there and only the hours since from request_log. The roll-up is
-- refresh_tenant_metrics()'s first step (repeatable/06_usage.sql): until it
-- has caught up with the last 30 days, the view reads the hours it has not
-- rolled up from request_log, as before.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.tenant_metric_hours (
    tenant_id          uuid NOT NULL,
    hour               timestamptz NOT NULL,
    request_count      bigint NOT NULL,
    unique_users       bigint NOT NULL,
    resources_accessed bigint NOT NULL,
    unique_keys        bigint NOT NULL,
    client_errors      bigint NOT NULL,
    server_errors      bigint NOT NULL,
    p95_latency_ms     double precision,
    PRIMARY KEY (tenant_id, hour)
);
ALTER TABLE tenantry.tenant_metric_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_metric_hours FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenantry.tenant_metric_hours FROM PUBLIC;
COMMENT ON TABLE tenantry.tenant_metric_hours IS 'Each tenant''s usage in one ended hour (UTC), counted once from request_log by roll_up_tenant_metrics(): what tenant_metrics shows for the hours rolled up. No policy: only the owner''s functions read and write it (no tenant role is granted it); kept 31 days; a purge deletes a tenant''s rows.';

CREATE TABLE tenantry.tenant_metric_rollups (
    hour      timestamptz PRIMARY KEY,
    rolled_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenantry.tenant_metric_rollups FROM PUBLIC;
COMMENT ON TABLE tenantry.tenant_metric_rollups IS 'The hours (UTC) whose usage is in tenant_metric_hours, one row each with when it was; they run without a gap from the oldest kept to metrics_rolled_until(). Holds no tenant data; granted to none.';

DROP MATERIALIZED VIEW tenantry.tenant_metrics;
-- The guide's view, as it is now: the hours rolled up from
-- tenant_metric_hours, the later ones counted from request_log (only
-- those days' partitions are read). The same columns as before (0026), in
-- the same order; hours cut in UTC whatever the session's time zone (a
-- refresh by an operator's psql in Asia/Kolkata cut them at half past).
-- The same query is the view tenant_metrics_now (repeatable/06_usage.sql),
-- which current_tenant_metrics() and usage_top() read live; this is its
-- copy, refreshed by the server when an hour was rolled up and by
-- refresh_tenant_metrics().
CREATE MATERIALIZED VIEW tenantry.tenant_metrics AS
SELECT h.tenant_id, h.hour, h.request_count, h.unique_users, h.resources_accessed,
       h.unique_keys, h.client_errors, h.server_errors, h.p95_latency_ms
FROM tenantry.tenant_metric_hours h
WHERE h.hour > now() - interval '30 days' - interval '1 hour'
UNION ALL
SELECT
    l.tenant_id,
    date_trunc('hour', l.created_at, 'UTC') AS hour,
    count(*) AS request_count,
    count(DISTINCT l.user_id) AS unique_users,
    count(DISTINCT l.resource_id) AS resources_accessed,
    count(DISTINCT l.key_id) AS unique_keys,
    count(*) FILTER (WHERE l.status BETWEEN 400 AND 499) AS client_errors,
    count(*) FILTER (WHERE l.status >= 500) AS server_errors,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY l.latency_ms) AS p95_latency_ms
FROM tenantry.request_log l
WHERE l.created_at > now() - interval '30 days'
  AND l.created_at >= (SELECT coalesce(max(r.hour) + interval '1 hour', '-infinity')
                       FROM tenantry.tenant_metric_rollups r)
GROUP BY l.tenant_id, date_trunc('hour', l.created_at, 'UTC');
CREATE UNIQUE INDEX tenant_metrics_tenant_hour_idx ON tenantry.tenant_metrics (tenant_id, hour);
COMMENT ON MATERIALIZED VIEW tenantry.tenant_metrics IS 'Guide view: per tenant and hour (UTC) over the last 30 days, requests, distinct members, resources and API keys, 4xx and 5xx answers, p95 latency (ms): a copy of tenant_metrics_now, refreshed by the server when an hour was rolled up and by refresh_tenant_metrics(). No RLS on materialized views: never granted to tenant roles; tenants read their usage via current_tenant_metrics().';
REVOKE ALL ON tenantry.tenant_metrics FROM PUBLIC;
