-- =============================================================================
-- 0047 Request-log rows of a bounded size
--
-- A request-log row's method, route and impersonator took text of any
-- length, its status any number and its latency NaN or infinity. A red-team
-- review appended rows of megabytes each (some 17 MB a second from one
-- connection): disk every tenant shares, counted against no tenant's quota
-- and kept until retention. The server's writer never sends such values (it
-- cuts a method or route that would not fit); these bound what any role's
-- insert can write. The other half of that finding, the logger appending in
-- a proven administrative context only, is the policy request_log_append
-- (repeatable/06_usage.sql).
--
-- Rows written before are kept (NOT VALID); partitions made from now on
-- carry the constraints validated.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.request_log
    ADD CONSTRAINT request_log_method_length CHECK (char_length(method) <= 32) NOT VALID,
    ADD CONSTRAINT request_log_route_length CHECK (char_length(route) <= 1000) NOT VALID,
    ADD CONSTRAINT request_log_impersonator_length CHECK (char_length(impersonator) <= 300) NOT VALID,
    ADD CONSTRAINT request_log_status_range CHECK (status BETWEEN 100 AND 999) NOT VALID,
    ADD CONSTRAINT request_log_latency_finite CHECK (latency_ms >= 0 AND latency_ms < 'Infinity') NOT VALID;
COMMENT ON CONSTRAINT request_log_method_length ON tenantry.request_log IS
    'An HTTP method of at most 32 characters (the server cuts a longer made-up one).';
COMMENT ON CONSTRAINT request_log_route_length ON tenantry.request_log IS
    'A route template of at most 1,000 characters (the server cuts a longer one).';
COMMENT ON CONSTRAINT request_log_impersonator_length ON tenantry.request_log IS
    'Who impersonated the member (admin, user:<id>): at most 300 characters.';
COMMENT ON CONSTRAINT request_log_status_range ON tenantry.request_log IS
    'An HTTP status: 100 to 999.';
COMMENT ON CONSTRAINT request_log_latency_finite ON tenantry.request_log IS
    'A handling time in milliseconds: not negative, not NaN, not infinite.';

