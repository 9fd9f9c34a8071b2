-- =============================================================================
-- 0051 Tenant-schema steps of adopted tables that outlive their table
--
-- adopt_table records a step that makes each schema tenant's table of a
-- newly adopted table; it named the table as a regclass literal
-- ('public.tags'::regclass), which is resolved when the step runs. A table
-- dropped before tenantry migrate ran (released first, or dropped and then
-- released by the doctor's fix) made that cast fail in every schema tenant,
-- for ever: every later step stayed behind it, an alter_tenant_table's
-- column never reached the schema tenants, and the doctor's own fix
-- (migrate_tenant_schema) failed the same way (found by a review as a new
-- user). Steps now name the table as text, resolved by
-- tenantry.add_adopted_table_copy(text, text), which does nothing for a
-- table that is gone (repeatable/07_schemas.sql); the steps recorded before
-- are rewritten to it, the same table named the same way.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

UPDATE tenantry.tenant_schema_steps
SET statement = regexp_replace(statement,
        '^SELECT tenantry\.add_tenant_schema_table\((E?''(?:[^'']|'''')*'')::regclass, current_schema\(\)\)$',
        'SELECT tenantry.add_adopted_table_copy(\1, current_schema())')
WHERE statement ~ '^SELECT tenantry\.add_tenant_schema_table\(E?''(?:[^'']|'''')*''::regclass, current_schema\(\)\)$';
