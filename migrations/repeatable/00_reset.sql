-- =============================================================================
-- Applied first, every time the definitions in this folder are (re)applied.
--
-- The files after this one hold the one current definition of every function,
-- view, trigger, policy and grant of schema tenantry. For that to be true of a
-- database that was built by older migrations, what older definitions granted
-- or created and the files no longer say must go: this removes every policy on
-- the schema's tables and every privilege its tables, views, sequences and
-- functions give to anyone but their owner. The files then put back exactly
-- what they state. It all runs in one transaction with the files, so no other
-- session ever sees the schema without its policies. Tenant schemas
-- (tenant_<hex>) are left alone: their grants and policies are made by
-- secure_tenant_partition().
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $reset$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT p.polname, c.relname
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = 'tenantry'::regnamespace
    LOOP
        EXECUTE format('DROP POLICY %I ON tenantry.%I', obj.polname, obj.relname);
    END LOOP;

    -- Only objects that carry privileges beyond their owner's: the others stay
    -- at their default ACL (NULL), as a fresh object would.
    FOR obj IN
        SELECT c.relname, c.relkind
        FROM pg_class c
        WHERE c.relnamespace = 'tenantry'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND (c.relacl IS NOT NULL OR EXISTS (
                SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL))
    LOOP
        EXECUTE format('REVOKE ALL ON %s tenantry.%I FROM PUBLIC, tenantry_app, tenantry_app_own, '
                       'tenantry_app_shared, tenantry_admin, tenantry_logger, tenantry_server',
                       CASE obj.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, obj.relname);
    END LOOP;

    FOR obj IN
        SELECT p.oid::regprocedure AS signature
        FROM pg_proc p
        WHERE p.pronamespace = 'tenantry'::regnamespace
    LOOP
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC, tenantry_app, tenantry_app_own, '
                       'tenantry_app_shared, tenantry_admin, tenantry_logger, tenantry_server',
                       obj.signature);
    END LOOP;
END
$reset$;

-- The migration runner's bookkeeping: the server reads it at boot (it refuses
-- a schema it does not match), administrators may read it.
GRANT SELECT ON tenantry.schema_migrations, tenantry.schema_definitions TO tenantry_server, tenantry_admin;
