-- =============================================================================
-- 0038 An active member's id is drawn by the database, never chosen by a tenant
--
-- 0037 made a member named by a person's user id pending until that person
-- accepts, but only on the server's path: raw SQL as the app role (an SQL
-- injection in the team's own code) could still insert
-- (user_id => <anyone's id>, pending => false) and list its tenant among that
-- person's tenants, acting there with their token (found by stop 41's review
-- of what was left out). The trigger tenant_members_consent
-- (repeatable/04_access.sql) now refuses an active member whose id a tenant
-- role chose; to tell a chosen id from a drawn one, user_id has no default
-- any more and the trigger draws it (gen_random_uuid(), as the default did)
-- when the insert leaves it out. Rows already stored are unchanged.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenant_members ALTER COLUMN user_id DROP DEFAULT;
