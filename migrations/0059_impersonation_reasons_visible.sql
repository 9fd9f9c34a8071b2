-- =============================================================================
-- 0059 Impersonation reasons without control or invisible characters
--
-- An impersonation's reason is the one free text an operator reads in
-- `tenantry impersonate list` that a tenant writes (a tenant's owner may
-- start an impersonation of its own members): it took escape sequences, so
-- "\r\e[2K…" rewrote the operator's terminal row and an OSC sequence set its
-- title or clipboard, and a right-to-left override turned it around in the
-- console (found by a review of hostile input). It is held to the rule of
-- 0046's descriptions: tab and line breaks stay allowed; C0 and C1 controls,
-- soft hyphen, zero-width characters, line and paragraph separators,
-- bidirectional embeddings, overrides and isolates, and the byte-order mark
-- are refused on new writes.
--
-- Rows written before are kept (NOT VALID), as 0046's: an export of them
-- imports again.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.impersonations
    ADD CONSTRAINT impersonations_reason_visible
    CHECK (reason !~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u200b-\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\ufeff]')
    NOT VALID;
COMMENT ON CONSTRAINT impersonations_reason_visible ON tenantry.impersonations IS
    'An impersonation''s reason holds no control or invisible formatting characters (tab and line breaks allowed): it reads as what it is, in a terminal too.';
