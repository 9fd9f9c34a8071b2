-- =============================================================================
-- 0012 tenant schemas get names that say nothing about the tenant
--
-- A schema-isolated tenant's schema was tenant_<its id in hex>, and its
-- partition carried a CHECK constraint and comments naming the id: anyone who
-- can read the catalog (every role: pg_namespace, pg_constraint and
-- pg_description are readable by PUBLIC) listed the ids of every schema
-- tenant. Each tenant now has a random schema name of its own,
-- tenant_<20 random hex digits>, kept in tenants.schema_name (given to every
-- tenant, used while it is schema-isolated); existing tenant schemas are
-- renamed to it. The CHECK constraint that let ATTACH PARTITION skip its scan
-- is dropped once the partition is attached (07_schemas.sql). The comments
-- are rewritten by 07_schemas.sql, which brings every tenant schema to the
-- current definitions.
--
-- What still names a schema tenant's id in the catalog: its partition bound
-- (FOR VALUES IN ('<id>')), which a LIST partition cannot do without.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- A volatile default: every existing row gets a name of its own.
ALTER TABLE tenantry.tenants
    ADD COLUMN schema_name text NOT NULL
        DEFAULT 'tenant_' || left(encode(sha256(uuid_send(gen_random_uuid())), 'hex'), 20)
        CONSTRAINT tenants_schema_name_key UNIQUE
        CONSTRAINT tenants_schema_name_opaque CHECK (schema_name ~ '^tenant_[0-9a-f]{20}$');
COMMENT ON COLUMN tenantry.tenants.schema_name IS 'The schema holding the tenant''s resources while it is schema-isolated: tenant_ and 20 random hex digits, never derived from its id (the catalog is readable by every role). Reserved for every tenant, so moving between models keeps it.';
COMMENT ON TABLE tenantry.tenants IS 'A customer of the SaaS. Status lifecycle active <-> suspended -> deleted (terminal, data kept). isolation: shared (pooled tables under RLS) or schema (own schema, named by schema_name). A global (reference) table.';

DO $rename$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tenant_id, schema_name FROM tenantry.tenants
        WHERE isolation = 'schema'
        ORDER BY tenant_id
    LOOP
        EXECUTE format('ALTER SCHEMA %I RENAME TO %I', 'tenant_' || replace(t.tenant_id::text, '-', ''), t.schema_name);
        EXECUTE format('ALTER TABLE %I.resources DROP CONSTRAINT IF EXISTS resources_tenant', t.schema_name);
    END LOOP;
END
$rename$;

-- Replaced by tenants.schema_name: it derived the name from the id, and it
-- told any caller the schema of any tenant.
DROP FUNCTION tenantry.tenant_schema_name(uuid);
