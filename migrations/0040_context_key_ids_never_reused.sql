-- =============================================================================
-- 0040 Context key ids are never given twice
--
-- add_context_key gave the next key max(key_id) + 1, so retiring the newest
-- key and adding one gave the new key the retired one's id (found by an
-- operator's audit). Worse than an ambiguous runbook: a server session opened
-- with the retired key records its id, and enter_context ends such a session
-- when no key of that id exists any more; a new key under the same id kept
-- alive a session that had not run a transaction in between. Ids now come
-- from this sequence, which only goes up (repeatable/12_context_keys.sql).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE SEQUENCE tenantry.context_key_ids AS integer MINVALUE 1;
COMMENT ON SEQUENCE tenantry.context_key_ids IS 'Ids of context keys: add_context_key draws from it, so a retired key''s id is never given to another. Owner only.';
-- Keys retired before this migration left no trace: on an upgrade (earlier
-- migrations were recorded by an earlier run), ids start 1000 past the
-- largest present, beyond any such key's; a new install starts after it.
SELECT setval('tenantry.context_key_ids',
              coalesce(max(k.key_id), 1)
              + CASE WHEN EXISTS (SELECT 1 FROM tenantry.schema_migrations m WHERE m.applied_at < now())
                     THEN 1000 ELSE 0 END)
FROM tenantry.context_keys k;
