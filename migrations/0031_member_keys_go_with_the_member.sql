-- =============================================================================
-- 0031 a removed member's API keys go with the member
--
-- api_keys referenced tenant_members without an ON DELETE action, so removing
-- a member who held a key (even a revoked one) failed on the foreign key, and
-- the member could never be removed. Removing a member now removes the keys
-- bound to them: the removal is audited (tenant_members_audit), and each
-- deleted key is dropped from every server's cache (api_keys_invalidate_deleted,
-- repeatable/11_invalidation.sql). The constraint is added NOT VALID and then
-- validated, so the table is not locked against writes while its rows are
-- checked.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.api_keys
    DROP CONSTRAINT api_keys_tenant_id_user_id_fkey,
    ADD CONSTRAINT api_keys_tenant_id_user_id_fkey
        FOREIGN KEY (tenant_id, user_id) REFERENCES tenantry.tenant_members (tenant_id, user_id)
        ON DELETE CASCADE NOT VALID;
ALTER TABLE tenantry.api_keys VALIDATE CONSTRAINT api_keys_tenant_id_user_id_fkey;
