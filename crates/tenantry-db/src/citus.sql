-- =============================================================================
-- The Citus form of tenantry's schema: the definitions a Citus coordinator
-- needs instead of (or beside) those of the migrations.
--
-- Installed by crates/tenantry-db/src/citus.rs on a Citus coordinator only,
-- after the first install's migrations and before the schema is distributed
-- (so that the workers get these definitions); a single-node database never
-- sees this file, and its plans do not change. docs/scale-out.md ("The Citus
-- form of the schema") says why each one.
--
-- Most of it carries the tenant context to the workers. The verified
-- context lives in backtrace_functions, which only the owner role's SECURITY
-- DEFINER functions set (01_context.sql). Citus opens its worker connections
-- as the current role and replays on them only the SET LOCAL statements of
-- the transaction (citus.propagate_set_commands = 'local'), never
-- set_config(), and the app roles may not set backtrace_functions on the
-- workers anyway. So on a worker, policies would see no tenant and read no
-- rows.
--
-- How: whenever an owner function sets a transaction's context, it also runs
-- `SET LOCAL tenantry.context = '<key id>.<mac>.<value>'` (propagated), where
-- mac is HMAC-SHA-256 under the newest context key of
-- 'citus|<value>|<distributed transaction id>'. Citus gives the coordinator's
-- transaction and its worker transactions the same distributed id
-- (initiator node, number, stamp: get_current_transaction_id()), and a new
-- one to every other transaction. On each node the read functions take the
-- context from citus_context(): backtrace_functions as long as
-- tenantry.context is the value last checked in this transaction, else the
-- value checked now (citus_verify_context, once per worker transaction),
-- stored in backtrace_functions for the rest of the transaction. A forged,
-- replayed or missing value sets the empty context: no tenant, no rows, no
-- error. docs/scale-out.md has the threat model.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/**
 * The distributed transaction id of this transaction as text
 * (initiator:number:stamp as Unix seconds), or NULL when Citus has not given
 * it one (the coordinator assigns it at the first distributed statement).
 * The same on the coordinator and on every worker transaction it opened.
 * PL/pgSQL, not SQL: an SQL function with a SET clause is planned again at
 * every call, through Citus's planner, which cost a point read's
 * transaction on the cluster about 30 % (measured with pgbench, 8 clients:
 * 4,573 against 6,463 transactions/s without the call; 6,210 as PL/pgSQL).
 */
CREATE OR REPLACE FUNCTION tenantry.citus_transaction()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    t := pg_catalog.get_current_transaction_id();
    RETURN CASE WHEN t.transaction_number <> 0 AND t.transaction_stamp IS NOT NULL
                THEN t.initiator_node_identifier || ':' || t.transaction_number || ':'
                     || extract(epoch FROM t.transaction_stamp)::text
           END;
END
$$;
COMMENT ON FUNCTION tenantry.citus_transaction() IS 'Internal (Citus): this transaction''s distributed id as initiator:number:epoch, shared by the coordinator and its worker transactions; NULL before Citus assigned one. Not granted.';

/**
 * Carries the context this transaction just set (backtrace_functions) to the
 * workers: a SET LOCAL of tenantry.context, which Citus replays on every
 * worker connection of the transaction, signed with the newest context key
 * over the value and the distributed transaction id. Reading the key through
 * Citus is the transaction's first distributed statement when nothing else
 * was, so the id is assigned before it is signed. Called by the owner's
 * functions right after they set a transaction-local context.
 */
CREATE OR REPLACE FUNCTION tenantry.citus_carry_context()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
DECLARE
    value text := current_setting('backtrace_functions');
    k record;
    txn text;
    carried text := '';
BEGIN
    -- One read of the key for both: it assigns the distributed id (see
    -- above) and gives the pads, so the MAC (context_mac's, which
    -- citus_verify_context checks) is computed here rather than by a
    -- second read through context_mac.
    SELECT c.key_id, c.inner_pad, c.outer_pad INTO k
    FROM tenantry.context_keys c ORDER BY c.key_id DESC LIMIT 1;
    txn := tenantry.citus_transaction();
    IF value <> '' AND k.key_id IS NOT NULL AND txn IS NOT NULL THEN
        carried := k.key_id || '.'
            || encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to('citus|' || value || '|' || txn, 'UTF8'))), 'hex')
            || '.' || value;
    END IF;
    EXECUTE 'SET LOCAL citus.propagate_set_commands = ''local''';
    EXECUTE format('SET LOCAL tenantry.context = %L', carried);
    -- This node set the value itself: nothing to check here.
    PERFORM set_config('tenantry.verified', carried, true);
END
$$;
COMMENT ON FUNCTION tenantry.citus_carry_context() IS 'Internal (Citus): propagates this transaction''s context to the workers as SET LOCAL tenantry.context, HMAC-signed with the newest context key over the value and the distributed transaction id. Not granted.';

/**
 * Checks tenantry.context against this transaction's distributed id and the
 * context key it names; stores the value in backtrace_functions (the empty
 * context when the check fails) for the rest of the transaction, and returns
 * it. Reads the context_keys reference table from inside a shard's query
 * (its local copy), which Citus refuses unless nested execution is allowed
 * for that one statement.
 */
CREATE OR REPLACE FUNCTION tenantry.citus_verify_context()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
DECLARE
    carried text := coalesce(current_setting('tenantry.context', true), '');
    nested text := coalesce(current_setting('citus.allow_nested_distributed_execution', true), 'off');
    txn text := tenantry.citus_transaction();
    claimed text;
    expected bytea;
    value text := '';
BEGIN
    IF carried ~ '^[0-9]{1,9}\.[0-9a-f]{64}\.tenantry_' AND txn IS NOT NULL THEN
        claimed := substr(carried, length(split_part(carried, '.', 1)) + 67);
        -- The same HMAC as every other context check (context_mac, an
        -- unknown key gives NULL).
        PERFORM set_config('citus.allow_nested_distributed_execution', 'on', true);
        expected := tenantry.context_mac(split_part(carried, '.', 1)::integer,
                                         'citus|' || claimed || '|' || txn);
        PERFORM set_config('citus.allow_nested_distributed_execution', nested, true);
        IF encode(expected, 'hex') = split_part(carried, '.', 2) THEN
            value := claimed;
        END IF;
    END IF;
    PERFORM set_config('backtrace_functions', value, true);
    PERFORM set_config('tenantry.verified', carried, true);
    RETURN value;
END
$$;
COMMENT ON FUNCTION tenantry.citus_verify_context() IS 'Internal (Citus): verifies the propagated tenantry.context (context key HMAC over the value and the distributed transaction id) and stores the value, or the empty context when it fails, in backtrace_functions for this transaction. Called by citus_context() only.';

/**
 * The verified context on a Citus node: backtrace_functions while
 * tenantry.context is the value last checked (or set) in this transaction,
 * else the newly carried value once checked. Inlined into the read functions
 * (current_tenant_id() and its siblings), which on Citus read it instead of
 * backtrace_functions: three settings read per call, the check once per
 * worker transaction.
 */
CREATE OR REPLACE FUNCTION tenantry.citus_context()
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN COALESCE(pg_catalog.current_setting('tenantry.context', true), '')
                     OPERATOR(pg_catalog.=) COALESCE(pg_catalog.current_setting('tenantry.verified', true), '')
                THEN pg_catalog.current_setting('backtrace_functions')
                ELSE tenantry.citus_verify_context()
           END
$$;
COMMENT ON FUNCTION tenantry.citus_context() IS 'Citus: the verified context of this transaction on this node (backtrace_functions, filled on a worker from the checked tenantry.context). The read functions (current_tenant_id() ...) read it on Citus.';

/**
 * tenant_context_row of 01_context.sql, in PL/pgSQL: Citus cannot plan a SQL
 * function that reads distributed tables with a parameter ("parameterized
 * queries for SQL functions referencing distributed tables are not
 * supported"), and the context setters look tenants up with one. The same
 * query, planned by Citus with the tenant id bound.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_context_row(tid uuid)
RETURNS TABLE (status text, visible uuid[], schema_name text, mixed boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT t.status,
           ARRAY(SELECT h.child_id FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants c ON c.tenant_id = h.child_id
                 WHERE h.parent_id = t.tenant_id AND c.status <> 'deleted' ORDER BY h.depth, h.child_id),
           CASE WHEN t.isolation = 'schema' THEN t.schema_name ELSE 'tenantry' END,
           EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
                   WHERE h.parent_id = t.tenant_id AND d.status <> 'deleted'
                     AND d.tenant_id <> t.tenant_id AND (t.isolation = 'schema' OR d.isolation = 'schema'))
    FROM tenantry.tenants t
    WHERE t.tenant_id = tid;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_context_row(uuid) IS 'Internal: status, visible subtree (self first), resources schema of a tenant and whether a descendant''s rows are outside its own tables (mixed), for the context setters; no row when the tenant does not exist. PL/pgSQL on Citus (parameterized SQL functions over distributed tables are not planned). Not granted.';

/**
 * tenant_tier_lock of 03_resources.sql, on Citus: takes no lock. It exists
 * for a tier move's cut-over, and Citus has no schema tenants to move to
 * (docs/scale-out.md); on the workers, where the shards' statement triggers
 * fire, locking a row of the tenants reference table locks it on every node,
 * and a statement on many shards at once (a DELETE by id alone) deadlocked
 * its own connections.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_tier_lock()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_tier_lock() IS 'Trigger (BEFORE each write statement on a tenant table), on Citus: takes no lock (no tier moves on Citus; a lock on the tenants reference table from the shards deadlocks multi-shard statements).';

-- verify_api_key_hash of 05_keys.sql, on Citus: Citus cannot plan its
-- lateral subquery with OFFSET 0 over distributed tables. The same function
-- with the key found by the primary key its prefix's lookup gives (a
-- subquery Citus runs first, on every shard: the prefix does not name the
-- tenant), planned afresh for each call.
DO $verify$
DECLARE
    def text := pg_catalog.pg_get_functiondef('tenantry.verify_api_key_hash(text, bytea)'::pg_catalog.regprocedure);
    citus text;
BEGIN
    citus := regexp_replace(def,
        'FROM tenantry\.api_key_lookup l\s.*JOIN tenantry\.tenants t ON t\.tenant_id = l\.tenant_id\s+WHERE l\.prefix = key_prefix',
        'FROM tenantry.api_keys a JOIN tenantry.tenants t ON t.tenant_id = a.tenant_id
     WHERE (a.tenant_id, a.key_id) = (SELECT lk.tenant_id, lk.key_id FROM tenantry.api_key_lookup lk WHERE lk.prefix = key_prefix)');
    IF citus = def THEN
        RAISE EXCEPTION 'verify_api_key_hash no longer has the lookup this file rewrites for Citus';
    END IF;
    EXECUTE citus;
END
$verify$;

/**
 * Appends a batch of request-log rows, for the logger on Citus: the logger's
 * INSERT ... SELECT FROM unnest(...) is run by Citus as a COPY into the
 * shards, which PostgreSQL refuses under row-level security. The same insert
 * as the owner (not subject to RLS), granted to the logger alone, which may
 * append rows for any tenant anyway (policy request_log_append), in a proven
 * administrative context as that policy has it.
 */
CREATE OR REPLACE FUNCTION tenantry.append_request_log(
    tenants uuid[], times timestamptz[], users uuid[], resources uuid[], methods text[], routes text[],
    statuses int2[], latencies float8[], keys uuid[], impersonators text[], request_ids text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- As the policy request_log_append has the logger's own inserts: only the
    -- server's writer, in its proven administrative context.
    IF NOT tenantry.admin_context() THEN
        RAISE EXCEPTION 'request-log rows are appended in a proven administrative context only'
            USING ERRCODE = '42501';
    END IF;
    -- PL/pgSQL: Citus does not plan a SQL function's statement with its parameters.
    -- Dated around now, as the policy request_log_dated_now has the logger's
    -- own inserts (the owner is not subject to it): a day far ahead or back
    -- would land in the default partition.
    INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, resource_id, method, route, status, latency_ms,
                                      key_id, impersonator, request_id)
    SELECT u.t, LEAST(GREATEST(u.at, now() - interval '29 days'), now()), u.u, u.r, left(u.m, 32), left(u.ro, 1000),
           u.s, u.l, u.k, u.i, u.q
      FROM unnest(tenants, times, users, resources, methods, routes, statuses, latencies, keys,
                  impersonators, request_ids) AS u (t, at, u, r, m, ro, s, l, k, i, q);
END
$$;
COMMENT ON FUNCTION tenantry.append_request_log(uuid[], timestamptz[], uuid[], uuid[], text[], text[], int2[], float8[], uuid[], text[], text[]) IS 'Citus: the logger''s batch of request-log rows, appended as the owner (Citus copies INSERT ... SELECT into the shards, which RLS refuses), in a proven administrative context only (42501 otherwise). Granted to tenantry_logger only.';
REVOKE EXECUTE ON FUNCTION tenantry.append_request_log(uuid[], timestamptz[], uuid[], uuid[], text[], text[], int2[], float8[], uuid[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.append_request_log(uuid[], timestamptz[], uuid[], uuid[], text[], text[], int2[], float8[], uuid[], text[], text[]) TO tenantry_logger;

GRANT EXECUTE ON FUNCTION tenantry.citus_context(), tenantry.citus_verify_context()
TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger, tenantry_server;
REVOKE EXECUTE ON FUNCTION tenantry.citus_transaction(), tenantry.citus_carry_context() FROM PUBLIC;

-- Every read function of the context reads it through citus_context(): the
-- SQL functions of the schema that read backtrace_functions.
-- Every owner function that sets a transaction's context carries it: after
-- each set_config('backtrace_functions', ..., true) in a PL/pgSQL function.
DO $rewrite$
DECLARE
    f record;
    def text;
    rewritten text;
BEGIN
    FOR f IN
        SELECT p.oid, l.lanname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'tenantry'::regnamespace
          AND p.proname NOT IN ('citus_context', 'citus_verify_context', 'citus_carry_context')
          AND p.prosrc LIKE '%backtrace_functions%'
    LOOP
        def := pg_catalog.pg_get_functiondef(f.oid);
        IF f.lanname = 'sql' THEN
            rewritten := regexp_replace(def, '(pg_catalog\.)?current_setting\(''backtrace_functions''\)',
                                        'tenantry.citus_context()', 'g');
        ELSE
            rewritten := regexp_replace(def, '(set_config\(''backtrace_functions'',[^;]*,\s*true\);)(?! PERFORM tenantry\.citus_carry_context)',
                                        '\1 PERFORM tenantry.citus_carry_context();', 'g');
        END IF;
        IF rewritten <> def THEN
            EXECUTE rewritten;
        END IF;
    END LOOP;
END
$rewrite$;

-- SQL functions that read tenantry's tables become PL/pgSQL of the same
-- query: Citus does not plan a SQL function's statement over distributed
-- tables with its parameters ("parameterized queries for SQL functions
-- referencing distributed tables are not supported"), while PL/pgSQL's are
-- planned with the values bound. Columns win over parameters of the same
-- name, as in SQL functions (#variable_conflict use_column). Functions
-- returning rows return the query; the others, one SELECT, return its value;
-- functions of several statements, or returning nothing, stay SQL.
DO $plpgsql$
DECLARE
    f record;
    def text;
    body text;
BEGIN
    FOR f IN
        SELECT p.oid, p.proretset, p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'tenantry'::regnamespace AND l.lanname = 'sql'
          AND p.prorettype <> 'pg_catalog.void'::regtype
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind IN ('r', 'p')
                        AND p.prosrc ~ ('tenantry\.' || c.relname || '\M'))
    LOOP
        body := regexp_replace(f.prosrc, ';\s*$', '');
        CONTINUE WHEN strpos(body, ';') > 0 OR (NOT f.proretset AND body !~* '^\s*(--[^\n]*\n\s*)*select\M');
        def := pg_catalog.pg_get_functiondef(f.oid);
        def := replace(left(def, strpos(def, 'AS $function$') - 1), E'\n LANGUAGE sql\n', E'\n LANGUAGE plpgsql\n')
            || E'AS $citus$\n#variable_conflict use_column\nBEGIN\n'
            || CASE WHEN f.proretset THEN 'RETURN QUERY ' || body || E'\n;\n' ELSE 'RETURN (' || body || E'\n);\n' END
            || E'END\n$citus$';
        EXECUTE def;
    END LOOP;
END
$plpgsql$;

-- authorize_permission_id of 04_access.sql, on Citus: role_permissions'
-- restrictive write policies call it on the shards (citus.rs,
-- restrict_shard_policies), where its read of the permissions reference
-- table is a distributed query inside a shard's statement, which Citus
-- refuses unless told it may (as citus_verify_context is).
CREATE OR REPLACE FUNCTION tenantry.authorize_permission_id(pid integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nested text := coalesce(current_setting('citus.allow_nested_distributed_execution', true), 'off');
    permission text;
BEGIN
    PERFORM set_config('citus.allow_nested_distributed_execution', 'on', true);
    SELECT p.name INTO permission FROM tenantry.permissions p WHERE p.permission_id = pid;
    PERFORM set_config('citus.allow_nested_distributed_execution', nested, true);
    RETURN tenantry.authorize(permission);
END
$$;

-- expire_idempotency_keys of 13_idempotency.sql, on Citus: Citus plans no
-- DELETE over a CTE of a lateral join of distributed tables ("could not
-- create distributed plan"), and the keys were never deleted there. The
-- oldest keys of both tables, by a cutoff computed once, in batches.
CREATE OR REPLACE FUNCTION tenantry.expire_idempotency_keys(batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - interval '24 hours';
    tenants_keys integer;
    operators_keys integer;
    people_keys integer;
BEGIN
    DELETE FROM tenantry.idempotency_keys k
     WHERE k.created_at <= cutoff
       AND (k.tenant_id, k.idempotency_key) IN (
           SELECT e.tenant_id, e.idempotency_key FROM tenantry.idempotency_keys e
            WHERE e.created_at <= cutoff ORDER BY e.created_at LIMIT greatest(batch, 0));
    GET DIAGNOSTICS tenants_keys = ROW_COUNT;
    DELETE FROM tenantry.operator_idempotency_keys o
     WHERE o.created_at <= cutoff
       AND o.idempotency_key IN (
           SELECT x.idempotency_key FROM tenantry.operator_idempotency_keys x
            WHERE x.created_at <= cutoff ORDER BY x.created_at LIMIT greatest(batch, 0));
    GET DIAGNOSTICS operators_keys = ROW_COUNT;
    DELETE FROM tenantry.person_idempotency_keys p
     WHERE p.created_at <= cutoff
       AND (p.user_id, p.idempotency_key) IN (
           SELECT x.user_id, x.idempotency_key FROM tenantry.person_idempotency_keys x
            WHERE x.created_at <= cutoff ORDER BY x.created_at LIMIT greatest(batch, 0));
    GET DIAGNOSTICS people_keys = ROW_COUNT;
    RETURN greatest(tenants_keys, operators_keys, people_keys);
END
$$;

-- Citus's entry points to other nodes and its functions that reach past one
-- tenant's rows are taken from PUBLIC on the coordinator and the workers by
-- every migrate (citus.rs, harden_nodes: one list for both). The owner role,
-- whose SECURITY DEFINER functions run plans that need a connection back to
-- the coordinator (a local table such as tenant_metrics joined with
-- distributed ones, as usage_top does), keeps the distributed transaction
-- id's assignment, which Citus then sends as the current role.
RESET ROLE;
GRANT EXECUTE ON FUNCTION pg_catalog.assign_distributed_transaction_id(integer, bigint, timestamptz) TO tenantry_owner;
