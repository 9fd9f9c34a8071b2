-- Everything the migrations define in schema tenantry, one line per fact, for
-- comparing two databases' catalogs (tests/migrations.rs). Data is left out,
-- and so is what follows from data: the clones of a foreign key onto the
-- partitions it references (one per tenant schema).
SELECT line FROM (
    SELECT 'function ' || p.oid::regprocedure::text
           || ' secdef=' || p.prosecdef || ' volatile=' || p.provolatile::text
           || ' config=' || coalesce(p.proconfig::text, '-')
           || ' acl=' || coalesce(p.proacl::text, '-')
           || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
           || E'\n' || pg_get_functiondef(p.oid) AS line
    FROM pg_proc p WHERE p.pronamespace = 'tenantry'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text
           || ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity
           || ' options=' || coalesce(c.reloptions::text, '-')
           || ' acl=' || coalesce(c.relacl::text, '-')
           || ' owner=' || c.relowner::regrole::text
           || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
    FROM pg_class c WHERE c.relnamespace = 'tenantry'::regnamespace
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull
           || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
           || ' acl=' || coalesce(a.attacl::text, '-')
           || ' comment=' || coalesce(col_description(c.oid, a.attnum), '-')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'tenantry'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c WHERE c.connamespace = 'tenantry'::regnamespace AND c.conparentid = 0
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = 'tenantry'::regnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
           || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '-')
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'tenantry'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'policy ' || c.relname || '.' || p.polname || ' cmd=' || p.polcmd::text
           || ' permissive=' || p.polpermissive
           || ' roles=' || (SELECT string_agg(r::regrole::text, ',' ORDER BY r::regrole::text) FROM unnest(p.polroles) r)
           || ' using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
           || ' check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
           || ' comment=' || coalesce(obj_description(p.oid, 'pg_policy'), '-')
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
    WHERE c.relnamespace = 'tenantry'::regnamespace
    UNION ALL
    SELECT 'view ' || c.relname || E'\n' || pg_get_viewdef(c.oid)
    FROM pg_class c WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT 'schema ' || n.nspname || ' owner=' || n.nspowner::regrole::text
           || ' acl=' || coalesce(n.nspacl::text, '-')
           || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
    FROM pg_namespace n WHERE n.nspname = 'tenantry'
    UNION ALL
    SELECT 'default privileges ' || d.defaclrole::regrole::text || ' ' || d.defaclobjtype::text || ' ' || d.defaclacl::text
    FROM pg_default_acl d
    WHERE d.defaclrole::regrole::text LIKE 'tenantry%'
) facts
ORDER BY line
