-- =============================================================================
-- 0046 Descriptions of keys and roles without invisible characters
--
-- Names refuse control and invisible formatting characters (clean_name);
-- the descriptions of API keys and roles took them, so a description could
-- read differently from what it is: a right-to-left override makes
-- "gnp.exe" show as "exe.png" in the console and in `tenantry key list`
-- (found by a review of the console). Descriptions may hold several lines
-- (tab, line feed and carriage return stay allowed); C0 and C1 controls,
-- soft hyphen, zero-width characters, line and paragraph separators,
-- bidirectional embeddings, overrides and isolates, and the byte-order mark
-- are refused on new writes.
--
-- Rows written before are kept (the constraints are NOT VALID): a tenant
-- export of them imports them again, and
-- `ALTER TABLE … VALIDATE CONSTRAINT …` checks them once they are edited.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.api_keys
    ADD CONSTRAINT api_keys_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b-\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]')
    NOT VALID;
COMMENT ON CONSTRAINT api_keys_description_visible ON tenantry.api_keys IS
    'A key''s description holds no control or invisible formatting characters (tab and line breaks allowed): it reads as what it is.';

ALTER TABLE tenantry.roles
    ADD CONSTRAINT roles_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b-\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]')
    NOT VALID;
COMMENT ON CONSTRAINT roles_description_visible ON tenantry.roles IS
    'A role''s description holds no control or invisible formatting characters (tab and line breaks allowed): it reads as what it is.';
