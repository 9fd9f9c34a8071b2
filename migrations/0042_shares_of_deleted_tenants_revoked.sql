-- =============================================================================
-- 0042 Shares that outlived a deleted tenant revoked
--
-- A share made while its target (or its owner) was being deleted could commit
-- after the deletion's trigger had revoked the shares it saw: the late share
-- stayed, recorded in shared_resources (or shared_rows) and in the row's
-- shared_with, and kept counting toward the owner's max_shares (found by a
-- contention audit; share_resource and share_row now hold the target's row
-- first, repeatable/03_resources.sql, hold_share_target).
--
-- This revokes what such races left, as the deletion's trigger
-- (tenants_revoke_shares_on_delete) would have: every share of resources and
-- of rows of adopted tables whose owner or target is deleted. Each revocation
-- goes through the share tables' own triggers, so it is audited
-- (share.revoked) and the owner's share counter goes down with it. Nothing is
-- changed where no such share is left.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $$
DECLARE
    pair record;
BEGIN
    -- Resources: each (owner, target) pair with a deleted side, in the
    -- owner's own table (resources_relation: the pooled table or its schema's).
    FOR pair IN
        SELECT DISTINCT s.tenant_id AS owner_id, s.shared_with AS target_id,
               o.status = 'deleted' AS owner_deleted
        FROM tenantry.shared_resources s
        JOIN tenantry.tenants o ON o.tenant_id = s.tenant_id
        JOIN tenantry.tenants t ON t.tenant_id = s.shared_with
        WHERE o.status = 'deleted' OR t.status = 'deleted'
    LOOP
        DELETE FROM tenantry.shared_resources s
        WHERE s.tenant_id = pair.owner_id AND s.shared_with = pair.target_id;
        IF pair.owner_deleted THEN
            EXECUTE format('UPDATE %s SET shared_with = ''{}'' WHERE tenant_id = $1 AND shared_with <> ''{}''',
                           tenantry.resources_relation(pair.owner_id))
            USING pair.owner_id;
        ELSE
            EXECUTE format('UPDATE %s SET shared_with = array_remove(shared_with, $2)
                            WHERE tenant_id = $1 AND shared_with @> ARRAY[$2]',
                           tenantry.resources_relation(pair.owner_id))
            USING pair.owner_id, pair.target_id;
        END IF;
    END LOOP;
    -- Rows of adopted tables: the record is the share (rows_shared_with_me
    -- and the sharing policy read it).
    DELETE FROM tenantry.shared_rows s
    USING tenantry.tenants t
    WHERE t.status = 'deleted' AND (t.tenant_id = s.tenant_id OR t.tenant_id = s.shared_with);
END
$$;
