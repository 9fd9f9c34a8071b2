-- =============================================================================
-- 0013 member emails compare case-insensitively in every script
--
-- The unique index on tenant_members compared lower(email) in the database's
-- C collation, which folds ASCII letters only: 'ZOË@example.com' and
-- 'zoë@example.com' were two members. The index now folds with the ICU root
-- locale ("und-x-icu", present in every PostgreSQL built with ICU, as the
-- Debian and Docker builds are). Emails are stored as given (NFC, trimmed:
-- see repeatable/04_access.sql); only the comparison folds.
--
-- If an existing tenant already holds two members whose emails differ only in
-- non-ASCII case, creating the index fails and the whole upgrade rolls back:
-- remove one of the two members, then migrate again.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP INDEX tenantry.tenant_members_email_idx;
CREATE UNIQUE INDEX tenant_members_email_idx
    ON tenantry.tenant_members (tenant_id, lower(email COLLATE "und-x-icu"));
COMMENT ON INDEX tenantry.tenant_members_email_idx IS 'One member per email and tenant; emails compare after NFC (trigger) and Unicode lower-casing (ICU root locale).';
