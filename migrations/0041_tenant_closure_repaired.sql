-- =============================================================================
-- 0041 The tenant closure repaired after a race
--
-- A tenant made a root (its parent set to NULL) took no hierarchy lock, so a
-- concurrent move or child creation under its old subtree could extend the
-- closure that move was cutting: the old ancestors kept closure rows to
-- tenants no longer below them, and read and changed their rows through the
-- hierarchy policies (found by a contention audit; repeatable/02_tenants.sql
-- now takes the lock for every change of a parent). The limit counters built
-- on that closure drifted with it.
--
-- This removes the closure rows the parent links do not give, adds those they
-- give that are missing, and recounts children and descendants of the tenants
-- whose closure changed. Nothing is changed where the closure is right.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TEMPORARY TABLE closure_walked ON COMMIT DROP AS
WITH RECURSIVE up (parent_id, child_id, depth) AS (
    SELECT t.tenant_id, t.tenant_id, 0 FROM tenantry.tenants t
    UNION ALL
    SELECT t.parent_id, up.child_id, up.depth + 1
    FROM up JOIN tenantry.tenants t ON t.tenant_id = up.parent_id
    WHERE t.parent_id IS NOT NULL AND up.depth < 10000
)
SELECT parent_id, child_id, depth FROM up;

CREATE TEMPORARY TABLE closure_changed ON COMMIT DROP AS
SELECT h.parent_id FROM tenantry.tenant_hierarchy h
WHERE NOT EXISTS (SELECT 1 FROM closure_walked w
                  WHERE w.parent_id = h.parent_id AND w.child_id = h.child_id AND w.depth = h.depth)
UNION
SELECT w.parent_id FROM closure_walked w
WHERE NOT EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h
                  WHERE h.parent_id = w.parent_id AND h.child_id = w.child_id AND h.depth = w.depth);

DELETE FROM tenantry.tenant_hierarchy h
WHERE h.parent_id IN (SELECT c.parent_id FROM closure_changed c)
  AND NOT EXISTS (SELECT 1 FROM closure_walked w
                  WHERE w.parent_id = h.parent_id AND w.child_id = h.child_id AND w.depth = h.depth);

INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
SELECT w.parent_id, w.child_id, w.depth FROM closure_walked w
WHERE w.parent_id IN (SELECT c.parent_id FROM closure_changed c)
  AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h
                  WHERE h.parent_id = w.parent_id AND h.child_id = w.child_id AND h.depth = w.depth);

UPDATE tenantry.tenant_limit_usage u
SET children = (SELECT count(*) FROM tenantry.tenants c WHERE c.parent_id = u.tenant_id AND c.status <> 'deleted'),
    descendants = (SELECT count(*) FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
                   WHERE h.parent_id = u.tenant_id AND h.depth > 0 AND d.status <> 'deleted')
WHERE u.tenant_id IN (SELECT c.parent_id FROM closure_changed c);
