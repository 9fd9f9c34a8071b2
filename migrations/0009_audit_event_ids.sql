-- =============================================================================
-- 0009 audit events get ids that order nothing across tenants
--
-- audit_log.audit_id comes from one sequence shared by all tenants, and the
-- audit cursor carried it: the gap between two of a tenant's own rows counted
-- every other tenant's security events in between. Tenants now see a random
-- event_id, pages follow (occurred_at, event_id), and the tenant roles cannot
-- read audit_id at all (column grants in repeatable/02_tenants.sql). audit_id
-- stays the table's internal key.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.audit_log ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid();
COMMENT ON COLUMN tenantry.audit_log.event_id IS 'The id a tenant sees: random, so it says nothing about other tenants'' events (audit_id, from a shared sequence, would).';
CREATE UNIQUE INDEX audit_log_tenant_event_idx ON tenantry.audit_log (tenant_id, event_id);
DROP INDEX tenantry.audit_log_tenant_time_idx;
CREATE INDEX audit_log_tenant_time_idx ON tenantry.audit_log (tenant_id, occurred_at DESC, event_id DESC);
