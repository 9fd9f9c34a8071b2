-- =============================================================================
-- 0053 Who an impersonation's authority came from, so that it ends with it
--
-- An impersonation session lived until it expired or was ended, whatever
-- became of whoever started it (found by a review of the people path): an
-- owner who handed the tenant over and was removed, or a key revoked at an
-- offboarding, left sessions of up to 8 hours acting as a member. A session
-- now records the standing it was started on, and verify_impersonation
-- (repeatable code) refuses it once that standing is gone:
--
--   impersonator_tenant  the tenant whose context started it (the session's
--                        tenant or an ancestor);
--   impersonator_user    a person who was that tenant's owner: the session
--                        lives while they are its owner and it is still an
--                        ancestor of (or) the session's tenant;
--   impersonator_key     a key of that tenant: the session lives while the
--                        key is neither revoked nor expired (a rotation's
--                        grace included).
--
-- NULL where the authority was not a member's or a key's (the operator, a
-- context a team's own code set up with the library) and for sessions
-- started before this migration, which keep their expiry. Not readable by
-- the app roles (no column privilege): what the impersonator column shows is
-- unchanged. Nullable without a default: adding them rewrites nothing.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.impersonations
    ADD COLUMN impersonator_tenant uuid,
    ADD COLUMN impersonator_user uuid,
    ADD COLUMN impersonator_key uuid;
COMMENT ON COLUMN tenantry.impersonations.impersonator_tenant IS 'The tenant whose context started the session (its own or an ancestor), when a member or a key of it did; NULL otherwise.';
COMMENT ON COLUMN tenantry.impersonations.impersonator_user IS 'The owner of impersonator_tenant who started the session: it ends when they no longer own that tenant or it no longer is an ancestor of (or) the session''s tenant.';
COMMENT ON COLUMN tenantry.impersonations.impersonator_key IS 'The key of impersonator_tenant that started the session: it ends when the key is revoked or expires.';
