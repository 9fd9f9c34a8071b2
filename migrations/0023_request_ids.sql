-- =============================================================================
-- 0023 request ids
--
-- Every request has an id: the client's X-Request-Id when it is well-formed
-- (1 to 128 characters of A-Z a-z 0-9 . _ : -), otherwise one the server
-- makes (a UUID). The server echoes it in the response, in problem bodies and
-- in its log line; the request-log row keeps it too, so a support ticket that
-- quotes it finds the row. The server never writes a longer one; the CHECK
-- keeps any other writer to the same bound (existing rows are NULL).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.request_log ADD COLUMN request_id text
    CONSTRAINT request_log_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 128);
COMMENT ON COLUMN tenantry.request_log.request_id IS 'The request''s id (X-Request-Id as the client sent it when well-formed, else made by the server); NULL for rows written before 0023.';
