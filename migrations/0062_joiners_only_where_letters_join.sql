-- =============================================================================
-- 0062 Zero-width joiners in descriptions only where letters join
--
-- 0059 allowed the zero-width non-joiner and joiner (U+200C, U+200D) between
-- two characters that are neither ASCII nor white space. Two gaps (found by a
-- review of the API's patterns with generated clients):
-- - its `\s` follows the database's LC_CTYPE: under C (the embedded
--   cluster's) it is ASCII alone, so a joiner beside a no-break or
--   ideographic space passed, where the OpenAPI document's pattern refused it;
-- - between two letters of a script whose letters never join (Latin, Greek,
--   Cyrillic, Hebrew, CJK, ...) a joiner shapes nothing and is only
--   invisible ('И‌ван' beside 'Иван').
-- The white space is now spelt out, and those scripts' letters count as
-- neighbours a joiner may not have. Names (tenantry.invisible_text,
-- 02_tenants.sql) and impersonation reasons follow the same rule.
--
-- NOT VALID as before: rows that passed 0059 stay; a tenant import of such
-- a row (a description with a joiner beside one of those letters or spaces)
-- is refused until the description is edited.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.api_keys DROP CONSTRAINT api_keys_description_visible;
ALTER TABLE tenantry.api_keys
    ADD CONSTRAINT api_keys_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]' AND description !~ E'(^|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u200c\\u200d\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u10a0-\\u10ff\\u1e00-\\u1fff\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uac00-\\ud7af])[\\u200c\\u200d]|[\\u200c\\u200d]($|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u10a0-\\u10ff\\u1e00-\\u1fff\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uac00-\\ud7af])')
    NOT VALID;
COMMENT ON CONSTRAINT api_keys_description_visible ON tenantry.api_keys IS
    'A key''s description holds no control or invisible formatting characters (tab and line breaks allowed; the zero-width joiners only where letters join: not at an end, nor beside ASCII, white space or a letter of a script whose letters never join): it reads as what it is.';

ALTER TABLE tenantry.roles DROP CONSTRAINT roles_description_visible;
ALTER TABLE tenantry.roles
    ADD CONSTRAINT roles_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]' AND description !~ E'(^|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u200c\\u200d\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u10a0-\\u10ff\\u1e00-\\u1fff\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uac00-\\ud7af])[\\u200c\\u200d]|[\\u200c\\u200d]($|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u10a0-\\u10ff\\u1e00-\\u1fff\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uac00-\\ud7af])')
    NOT VALID;
COMMENT ON CONSTRAINT roles_description_visible ON tenantry.roles IS
    'A role''s description holds no control or invisible formatting characters (tab and line breaks allowed; the zero-width joiners only where letters join: not at an end, nor beside ASCII, white space or a letter of a script whose letters never join): it reads as what it is.';
