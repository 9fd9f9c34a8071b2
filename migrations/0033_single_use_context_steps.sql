-- =============================================================================
-- 0033 Single-use context reveals: a step counter a rollback cannot undo
--
-- A server connection's commit-reveal chain lived only in a setting, and a
-- setting rolls back with its transaction: SQL injected into a server
-- transaction could ROLLBACK and reveal, in a new transaction, the secret the
-- server had just revealed (if it had captured it from a statement log), and
-- a captured open_context_session call could be replayed on its backend for a
-- minute. Sequence values are never rolled back and currval() is per session:
-- each enter_context now draws from this sequence and the session's value
-- records the draw, so a reveal is accepted only while the session's last
-- draw is the one recorded beside its commitment (repeatable/01_context.sql).
-- The session opening is bound to a draw the same way, which ends replays.
-- No role but the owner may use it; tenantry's functions draw from it.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE SEQUENCE tenantry.context_steps AS bigint CACHE 1000;
COMMENT ON SEQUENCE tenantry.context_steps IS 'Steps of server connections'' context sessions: open_context_session and enter_context draw from it; currval() is the session''s last draw, which no rollback undoes. Owner only.';

-- The opening without a draw could be replayed; its successor takes the draw.
DROP FUNCTION IF EXISTS tenantry.open_context_session(integer, bigint, bytea, integer, bytea);
