-- =============================================================================
-- 0065 Tenants a person created, counted as such
--
-- signup_policy (0063) counted the tenants a person owned, so a person who
-- left each new tenant, or handed its ownership to a member record they had
-- made and kept every permission, created as many as they liked (found by a
-- review of sign-up). A tenant now records the person who created it
-- (create_my_tenant), and the policy counts those not deleted, whoever owns
-- them now. And a tenant a person creates gets the policy's settings, by
-- default no children: each could otherwise make max_children (100) more.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenants ADD COLUMN created_by_user uuid;
COMMENT ON COLUMN tenantry.tenants.created_by_user IS 'The signed-in person who created it (create_my_tenant); NULL for a tenant the operator or a tenant created. What signup_policy counts. Not readable by tenant roles.';
-- Not led by tenant_id, and readable by no tenant role (like schema_name's).
CREATE INDEX tenants_created_by_user_idx ON tenantry.tenants (created_by_user) WHERE created_by_user IS NOT NULL;

ALTER TABLE tenantry.signup_policy
    ADD COLUMN settings jsonb NOT NULL DEFAULT '{"max_children": 0, "max_descendants": 0}';
COMMENT ON COLUMN tenantry.signup_policy.settings IS 'The settings of a tenant a person creates (limits, quotas, metadata: as PATCH /v1/tenants/{id} takes them); by default no children, so that the number a person may create holds for their subtrees too.';

COMMENT ON TABLE tenantry.signup_policy IS 'One row: how many tenants a signed-in person may create (tenantry.create_my_tenant, POST /v1/me/tenants), counting those not deleted whoever owns them now, and the settings those tenants get; 0, the default, lets only operators and tenants with tenants.create make tenants. Operators change it with UPDATE as the migration role; no server role may.';
COMMENT ON COLUMN tenantry.signup_policy.tenants_per_person IS 'The most tenants a person may have created, counting those not deleted, to create another (0 to 1000).';
