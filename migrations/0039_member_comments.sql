-- =============================================================================
-- 0039 The members' comments say what 0037 and 0038 changed
--
-- user_id is a person's identity or an id the database drew (0038); the
-- owner cannot be removed while other *active* members remain (pending ones
-- do not count, repeatable/04_access.sql tenant_members_owner).
--
-- Upgrading past 0038: a server of an earlier release adds a member without
-- a user id by sending an id it drew itself (pending => false); from 0038 on
-- that insert is refused (42501, the API's 403) until the server runs this
-- release (docs/operations.md, "Upgrading"). Team SQL that inserted members
-- with user_id => gen_random_uuid() leaves user_id out instead.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

COMMENT ON TABLE tenantry.tenant_members IS 'Members of a tenant: people (user_id is their global identity; pending until they accept an invitation) and members a tenant added without one (an id the database drew, which no person signs in as); one email per tenant.';
COMMENT ON COLUMN tenantry.tenant_members.user_id IS 'The member''s id: a person''s global identity (a UUID subject of the identity provider, or the UUIDv5 of issuer and subject) while pending or once accepted; drawn by the database (tenant_members_consent) for a member added without one, which no person signs in as. A tenant role names a person only as a pending member.';
COMMENT ON COLUMN tenantry.tenant_members.is_owner IS 'The tenant''s owner: holds every permission, cannot be removed while other active members remain (pending ones do not count); one per tenant (the first active member), handed over with transfer_ownership().';
