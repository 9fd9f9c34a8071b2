-- =============================================================================
-- 0049 One check of the role an administrative context is entered in
--
-- enter_context and enter_context_signed each checked, after
-- checked_context_part(tid, uid, tenant_part), that the request-log writer's
-- administrative context (actor request_log) is entered as tenantry_logger
-- and no other: the same three lines in both. checked_context_part now takes
-- the actor and makes that check itself (repeatable/01_context.sql); this
-- drops the old signature, which nothing calls any more.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.checked_context_part(uuid, uuid, text);
