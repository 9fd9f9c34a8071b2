-- =============================================================================
-- 0022 impersonation and key scopes
--
-- An owner (or the operator) acts as a member for a bounded time: the
-- session is a row of impersonations with a one-time token (hashed), and the
-- context of its requests names the impersonator next to the member, so every
-- audit row and request-log row records both. A key may be limited to a
-- subset of its permissions (scopes) and to source addresses; request-log
-- rows name their key, for per-key usage. The context functions that take
-- the impersonator changed signature: dropped here, defined again by the
-- repeatable files.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.enter_context(bytea, bytea, uuid, uuid, text, text[], text);
DROP FUNCTION IF EXISTS tenantry.enter_context_signed(integer, bigint, uuid, uuid, text, text[], text, integer, bytea);
DROP FUNCTION IF EXISTS tenantry.context_value(uuid, uuid, text, text[], text);
DROP FUNCTION IF EXISTS tenantry.issue_api_key(uuid, text, jsonb, uuid, uuid, timestamptz, uuid);

CREATE TABLE tenantry.impersonations (
    tenant_id        uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    impersonation_id uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL,
    impersonator     text NOT NULL,
    reason           text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    token_hash       bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    started_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    PRIMARY KEY (tenant_id, impersonation_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantry.tenant_members (tenant_id, user_id) ON DELETE CASCADE,
    CONSTRAINT impersonations_bounded CHECK (expires_at > started_at AND expires_at <= started_at + interval '8 hours')
);
COMMENT ON TABLE tenantry.impersonations IS 'Sessions in which an owner or the operator acts as a member (at most 8 hours): who, as whom, why, until when, and when it ended. Only the SHA-256 of the session token is stored; removing the member ends them.';
ALTER TABLE tenantry.impersonations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.impersonations FORCE ROW LEVEL SECURITY;

ALTER TABLE tenantry.audit_log ADD COLUMN impersonator text;
COMMENT ON COLUMN tenantry.audit_log.impersonator IS 'Who was acting as the actor (an impersonation), NULL otherwise.';

ALTER TABLE tenantry.request_log ADD COLUMN key_id uuid, ADD COLUMN impersonator text;
COMMENT ON COLUMN tenantry.request_log.key_id IS 'The API key of the request, when a key made it (per-key usage).';
COMMENT ON COLUMN tenantry.request_log.impersonator IS 'Who was acting as the member (an impersonation), NULL otherwise.';

-- Key scopes: a key may hold a subset of what its role (or the tenant) holds,
-- and may be limited to source addresses.
ALTER TABLE tenantry.api_keys ADD COLUMN scopes text[], ADD COLUMN allowed_cidrs cidr[];
COMMENT ON COLUMN tenantry.api_keys.scopes IS 'Permission names the key is limited to (within what its role, member or tenant gives); NULL: no further limit.';
COMMENT ON COLUMN tenantry.api_keys.allowed_cidrs IS 'Source addresses the key may be used from; NULL: any.';

-- "Which tenants am I a member of" without an index the tenant roles could
-- probe: 0021's index on tenant_members (user_id) led with another column
-- than tenant_id, and EXPLAIN ANALYZE by user id counted other tenants'
-- members it filtered out (the oracle test caught it). The lookup moves to a
-- table granted to no role, kept by a trigger, read by my_tenants().
DROP INDEX tenantry.tenant_members_user_idx;
CREATE TABLE tenantry.member_tenants (
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX member_tenants_user_idx ON tenantry.member_tenants (user_id);
COMMENT ON INDEX tenantry.member_tenants_user_idx IS 'A user''s tenants (my_tenants()); the table is granted to no role, so no tenant role can probe it.';
COMMENT ON TABLE tenantry.member_tenants IS 'The tenants each user is a member of (looked up by user), kept by a trigger on tenant_members; granted to no role, read by my_tenants() in a user context only.';
ALTER TABLE tenantry.member_tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.member_tenants FORCE ROW LEVEL SECURITY;
INSERT INTO tenantry.member_tenants (tenant_id, user_id) SELECT tenant_id, user_id FROM tenantry.tenant_members;

-- Explicit ACLs from the start, as the definitions leave them (the migration
-- test compares a fresh database with one whose definitions were re-applied).
REVOKE ALL ON TABLE tenantry.invitations, tenantry.impersonations, tenantry.member_tenants FROM PUBLIC;

-- A database migrated while tier_tables() still returned fewer columns (an
-- intermediate build of 0020) could not take the current definition
-- ("cannot change return type"): drop it here, the definitions make it again.
DROP FUNCTION IF EXISTS tenantry.tier_tables();
