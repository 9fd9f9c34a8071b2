-- =============================================================================
-- Built-in state that every role of the database shares.
--
-- Large objects belong to the role that made them, and every tenant acts as
-- the same role (tenantry_app): with PostgreSQL's defaults any tenant could
-- read, overwrite or unlink another's (lo_get, lo_put, lo_unlink). tenantry
-- stores nothing in large objects, so the functions are taken from PUBLIC in
-- this database. An application of your own that needs them grants EXECUTE to
-- its own roles, never to the tenantry roles. (Server-side lo_import and
-- lo_export are superuser-only already.)
--
-- This part runs as the migrating superuser (the runner resets the role
-- before each file): built-ins belong to the bootstrap superuser.
-- =============================================================================

REVOKE EXECUTE ON FUNCTION
    pg_catalog.lo_create(oid),
    pg_catalog.lo_creat(integer),
    pg_catalog.lo_open(oid, integer),
    pg_catalog.lo_close(integer),
    pg_catalog.loread(integer, integer),
    pg_catalog.lowrite(integer, bytea),
    pg_catalog.lo_lseek(integer, integer, integer),
    pg_catalog.lo_lseek64(integer, bigint, integer),
    pg_catalog.lo_tell(integer),
    pg_catalog.lo_tell64(integer),
    pg_catalog.lo_truncate(integer, integer),
    pg_catalog.lo_truncate64(integer, bigint),
    pg_catalog.lo_unlink(oid),
    pg_catalog.lo_from_bytea(oid, bytea),
    pg_catalog.lo_get(oid),
    pg_catalog.lo_get(oid, bigint, integer),
    pg_catalog.lo_put(oid, bigint, bytea)
FROM PUBLIC;

SET LOCAL ROLE tenantry_owner;
