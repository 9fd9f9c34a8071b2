-- =============================================================================
-- 0059 Zero-width joiners in descriptions where they shape letters
--
-- 0046 refused control and invisible characters in key and role
-- descriptions, the zero-width non-joiner and joiner (U+200C, U+200D) among
-- them. Those two are part of Persian and Indic spelling and of emoji
-- sequences ('می‌خواهم', '👩‍💻'), which were refused (found by a review of
-- hostile input, for names and descriptions alike). They are now allowed
-- between two characters that are not ASCII or white space, where they
-- shape what is around them, and refused anywhere else, where they are only
-- invisible ('ad‍min'). Names follow the same rule (tenantry.invisible_text,
-- 02_tenants.sql), as do impersonation reasons.
--
-- The rule is looser than 0046's and nothing else changes: a description
-- that passed 0046 passes it. (A constraint binds every insert, a tenant
-- import's included: rows written before 0046, which it left in place, do
-- not import again until their description is edited.)
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.api_keys DROP CONSTRAINT api_keys_description_visible;
ALTER TABLE tenantry.api_keys
    ADD CONSTRAINT api_keys_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]' AND description !~ E'(^|[\\x01-\\x7f\\s\\u200c\\u200d])[\\u200c\\u200d]|[\\u200c\\u200d]($|[\\x01-\\x7f\\s])')
    NOT VALID;
COMMENT ON CONSTRAINT api_keys_description_visible ON tenantry.api_keys IS
    'A key''s description holds no control or invisible formatting characters (tab and line breaks allowed; the zero-width joiners only between two characters that are not ASCII or white space): it reads as what it is.';

ALTER TABLE tenantry.roles DROP CONSTRAINT roles_description_visible;
ALTER TABLE tenantry.roles
    ADD CONSTRAINT roles_description_visible
    CHECK (description !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]' AND description !~ E'(^|[\\x01-\\x7f\\s\\u200c\\u200d])[\\u200c\\u200d]|[\\u200c\\u200d]($|[\\x01-\\x7f\\s])')
    NOT VALID;
COMMENT ON CONSTRAINT roles_description_visible ON tenantry.roles IS
    'A role''s description holds no control or invisible formatting characters (tab and line breaks allowed; the zero-width joiners only between two characters that are not ASCII or white space): it reads as what it is.';
