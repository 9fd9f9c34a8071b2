-- =============================================================================
-- 0061 The operator's audit log
--
-- A tenant's audit log records what was done to that tenant. What an
-- operator does to every tenant at once left no row anywhere: adopting,
-- changing or releasing a table, a change run on an adopted table, a
-- permission defined, a context key added or retired, the audit log's own
-- rows expired (found by a review as an auditor). They are recorded here,
-- by the functions that do them (02_tenants.sql, write_operator_audit),
-- and read by administrators (GET /v1/operator/audit) and operators.
--
-- No tenant_id: on Citus it stays on the coordinator, where every one of
-- those functions runs.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.operator_audit_log (
    event_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text NOT NULL,
    target_id   text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX operator_audit_log_time_idx ON tenantry.operator_audit_log (occurred_at DESC, event_id DESC);
COMMENT ON TABLE tenantry.operator_audit_log IS 'Append-only record of what operators and administrators did to every tenant at once (tables adopted, changed, altered or released; permissions defined; context keys added or retired; audit rows expired), written by the functions that do it. Administrators read it in an administrative context; no server role writes it.';
COMMENT ON COLUMN tenantry.operator_audit_log.actor IS 'Who acted: cli:<name> (the CLI; TENANTRY_ACTOR), admin (the admin token), the app.actor a session set, else db:<session user>.';

ALTER TABLE tenantry.operator_audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.operator_audit_log FORCE ROW LEVEL SECURITY;
