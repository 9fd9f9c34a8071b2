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
-- (share.revoked) and the owner's share counter goes down with it; a
-- resource's shared_with entry naming a deleted tenant without a record (a
-- revocation lost to a concurrent move back to the shared tier) goes too.
-- A contention re-audit also found the tenants' descendant counts drifted
-- low (a leaf deleted while its parent became a root was subtracted twice;
-- a deletion now takes the hierarchy lock shared): every tenant's children
-- and descendants are recounted from the closure. Nothing is changed where
-- nothing is wrong.
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

-- shared_with entries naming a deleted tenant, with or without a record (one
-- statement over the family, through each table's GIN index on shared_with).
CREATE TEMPORARY TABLE deleted_tenants ON COMMIT DROP AS
SELECT coalesce(array_agg(t.tenant_id), '{}') AS ids FROM tenantry.tenants t WHERE t.status = 'deleted';

UPDATE tenantry.resources r
SET shared_with = ARRAY(SELECT w FROM unnest(r.shared_with) w
                        WHERE w <> ALL ((SELECT d.ids FROM deleted_tenants d)::uuid[]))
WHERE r.shared_with && (SELECT d.ids FROM deleted_tenants d)::uuid[];

UPDATE tenantry.resources r
SET shared_with = '{}'
WHERE r.tenant_id = ANY ((SELECT d.ids FROM deleted_tenants d)::uuid[]) AND r.shared_with <> '{}';

-- Children and descendants of every tenant, from the closure (tenants has no
-- index on parent_id; the closure's rows of depth 1 are the children).
UPDATE tenantry.tenant_limit_usage u
SET children = c.children, descendants = c.descendants
FROM (SELECT t.tenant_id,
             (SELECT count(*) FILTER (WHERE h.depth = 1) FROM tenantry.tenant_hierarchy h
                JOIN tenantry.tenants d ON d.tenant_id = h.child_id
               WHERE h.parent_id = t.tenant_id AND h.depth > 0 AND d.status <> 'deleted') AS children,
             (SELECT count(*) FROM tenantry.tenant_hierarchy h
                JOIN tenantry.tenants d ON d.tenant_id = h.child_id
               WHERE h.parent_id = t.tenant_id AND h.depth > 0 AND d.status <> 'deleted') AS descendants
      FROM tenantry.tenants t) c
WHERE c.tenant_id = u.tenant_id AND (u.children, u.descendants) IS DISTINCT FROM (c.children, c.descendants);
