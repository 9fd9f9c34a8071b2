-- =============================================================================
-- 0021 end users: owners, invitations, permissions in the context
--
-- People sign in with the team's identity provider (the server verifies the
-- token) and act in a tenant they are a member of, through the roles they
-- hold there. What the database needs for it:
--   * one owner per tenant (tenant_members.is_owner): holds every permission,
--     cannot be removed, hands ownership over with transfer_ownership();
--   * an index to answer "which tenants am I a member of";
--   * invitations: a one-time token (stored hashed, like keys) that makes its
--     holder a member with a role;
--   * a write permission an adopted table's write policies require
--     (tenant_tables.write_permission), checked by tenantry.authorize() from
--     the permission set the verified context carries (repeatable/01_context.sql).
-- The functions that changed signature are dropped here and defined again by
-- the repeatable files.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.enter_context(bytea, bytea, uuid, uuid, text, text);
DROP FUNCTION IF EXISTS tenantry.enter_context_signed(integer, bigint, uuid, uuid, text, text, integer, bytea);
DROP FUNCTION IF EXISTS tenantry.context_value(uuid, uuid, text, text);
DROP FUNCTION IF EXISTS tenantry.adopt_table(regclass, boolean, boolean, uuid, text);
DROP FUNCTION IF EXISTS tenantry.secure_tenant_table(regclass, boolean, boolean);

ALTER TABLE tenantry.tenant_members ADD COLUMN is_owner boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenantry.tenant_members.is_owner IS 'The tenant''s owner: holds every permission, cannot be removed while other members remain; one per tenant (the first member), handed over with transfer_ownership().';
-- The first member of each tenant that has members owns it.
UPDATE tenantry.tenant_members m SET is_owner = true
FROM (SELECT DISTINCT ON (tenant_id) tenant_id, user_id
      FROM tenantry.tenant_members ORDER BY tenant_id, created_at, user_id) f
WHERE m.tenant_id = f.tenant_id AND m.user_id = f.user_id;
CREATE UNIQUE INDEX tenant_members_one_owner_idx ON tenantry.tenant_members (tenant_id) WHERE is_owner;
COMMENT ON INDEX tenantry.tenant_members_one_owner_idx IS 'At most one owner per tenant.';
CREATE INDEX tenant_members_user_idx ON tenantry.tenant_members (user_id);
COMMENT ON INDEX tenantry.tenant_members_user_idx IS 'The tenants a user is a member of (my_tenants()); read by the owner''s functions only, in a context that names the user.';

CREATE TABLE tenantry.invitations (
    tenant_id     uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    invitation_id uuid NOT NULL DEFAULT gen_random_uuid(),
    email         text CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    user_id       uuid,
    role_id       uuid,
    token_hash    bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    created_by    text NOT NULL DEFAULT tenantry.current_actor(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz,
    accepted_by   uuid,
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, invitation_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES tenantry.roles (tenant_id, role_id) ON DELETE CASCADE,
    CONSTRAINT invitations_names_someone CHECK (email IS NOT NULL OR user_id IS NOT NULL),
    CONSTRAINT invitations_expire_later CHECK (expires_at > created_at)
);
COMMENT ON TABLE tenantry.invitations IS 'Invitations to become a member of a tenant with a role: for an email or a user id, until expires_at, accepted once. Only the SHA-256 of the token is stored; the token names the tenant and the invitation, so accepting it needs no global lookup.';
COMMENT ON COLUMN tenantry.invitations.token_hash IS 'SHA-256 of the whole token (tinv_<tenant hex><invitation hex><secret hex>). The token itself is shown once.';
ALTER TABLE tenantry.invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.invitations FORCE ROW LEVEL SECURITY;

ALTER TABLE tenantry.tenant_tables ADD COLUMN write_permission text REFERENCES tenantry.permissions (name);
COMMENT ON COLUMN tenantry.tenant_tables.write_permission IS 'Permission a tenant''s caller must hold (tenantry.authorize) to insert, update or delete rows of the table; NULL: none beyond the tenant policy.';

-- Built-in permissions people need.
INSERT INTO tenantry.permissions (permission_id, name, description) VALUES
    (15, 'members.invite', 'Invite members and revoke invitations')
ON CONFLICT DO NOTHING;
