-- =============================================================================
-- 0064 Descriptions checked when they are written, not on every update
--
-- 0046, 0059 and 0062 held key and role descriptions to the rule of visible
-- text with NOT VALID CHECK constraints, so that rows written before each
-- stayed. But PostgreSQL checks a NOT VALID constraint again on every UPDATE
-- of a row, whatever the update changes: a key whose description an earlier
-- rule allowed failed every request once its last_used_at was due again,
-- and could be neither revoked nor rotated (found by a verification
-- review). The rule moves to a trigger that checks a description when it is
-- inserted or changed (tenantry.descriptions_visible, 04_access.sql), with
-- the names' rule (tenantry.invisible_text, line breaks allowed).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.api_keys DROP CONSTRAINT api_keys_description_visible;
ALTER TABLE tenantry.roles DROP CONSTRAINT roles_description_visible;
