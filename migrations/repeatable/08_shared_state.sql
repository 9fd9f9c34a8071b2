-- =============================================================================
-- Built-in state that every role of the database shares.
--
-- PostgreSQL lets every role (PUBLIC) call many built-ins that read or keep
-- state of the whole server: other sessions' locks and queries, counters of
-- every table, the transaction counter, the size of shared tables. Every
-- tenant acts as tenantry_app, so whatever one session can see there about
-- another is one tenant seeing another. What tenantry and its clients (psql's
-- \d commands, tokio-postgres, pgbouncer) do not need is taken from PUBLIC
-- in this database below, each group with its reason; what must stay is
-- listed, with its reason, by the test
-- shared_state_builtins_left_to_the_tenant_roles_are_exactly_the_listed_ones
-- (crates/tenantry-db/tests/attacks/shared_state.rs). Monitoring keeps
-- working: what is taken from PUBLIC (but large objects and advisory locks)
-- is granted to pg_monitor, which no tenantry role is. Some things cannot be
-- taken: the LISTEN and NOTIFY statements, pg_class.reltuples and relpages,
-- partition bounds, and the xmin of a tenant's own rows (docs/security.md,
-- known limits).
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

-- -----------------------------------------------------------------------------
-- Statistics (pg_stat_*, pg_statio_*): exact row, read and write counts of
-- every table (a schema tenant's partition is a table of its own: its exact
-- row and write counts), calls of every function, other sessions' activity,
-- commits of the whole database. Views and the pg_stat_* functions under them
-- (a view's functions are checked against its caller, so both go). Only the
-- built-ins PUBLIC had at initdb (pg_init_privs), so a re-apply finds the
-- same set and superuser-only ones are left as they are.
-- pg_stats (planner statistics) stays: it shows only columns the caller may
-- read, and nothing of tables under RLS.
-- -----------------------------------------------------------------------------
DO $statistics$
DECLARE
    target text;
BEGIN
    FOR target IN
        -- The pg_stat_* functions and views PUBLIC had at initdb.
        SELECT 'EXECUTE ON FUNCTION ' || p.oid::regprocedure::text
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND p.proname ~ '^pg_stat_'
          AND NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_init_privs i
                WHERE i.classoid = 'pg_catalog.pg_proc'::regclass AND i.objoid = p.oid
                  AND NOT aclcontains(i.initprivs, makeaclitem(0, p.proowner, 'EXECUTE', false)))
        UNION ALL
        SELECT 'SELECT ON ' || c.oid::regclass::text
        FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
          AND c.relname ~ '^pg_stat(io)?_'
          AND NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_init_privs i
                WHERE i.classoid = 'pg_catalog.pg_class'::regclass AND i.objoid = c.oid AND i.objsubid = 0
                  AND NOT aclcontains(i.initprivs, makeaclitem(0, c.relowner, 'SELECT', false)))
        ORDER BY 1
    LOOP
        EXECUTE format('REVOKE %s FROM PUBLIC', target);
        EXECUTE format('GRANT %s TO pg_monitor', target);
    END LOOP;
END
$statistics$;

-- -----------------------------------------------------------------------------
-- The rest, by what it shares. Each but the advisory lock functions is
-- granted to pg_monitor (monitoring reads locks, transaction ids and sizes);
-- the advisory lock functions go to tenantry_owner only (tenantry's own
-- definer functions and the migration role's tools). An application of
-- your own that needs advisory locks (a job queue's workers) grants them to
-- its own roles, never to the tenantry roles that act for tenants.
--
-- Advisory locks: one key space for the whole database. A tenant could take
-- or hold the key tenants_before_write() serialises re-parenting with
-- (02_tenants.sql), stalling every administrator, or probe which keys others
-- hold. That trigger runs as tenantry_owner (SECURITY DEFINER), which keeps
-- pg_try_advisory_xact_lock(bigint) (re-parenting, which never queues),
-- pg_advisory_xact_lock(bigint) (define_permission, spare tenant schemas) and
-- pg_advisory_xact_lock_shared(bigint) (creating a child),
-- pg_try_advisory_xact_lock_shared(bigint) (sharing a row, which never
-- queues behind a move), and
-- pg_advisory_lock(bigint) with its unlock, which the migration runner takes
-- (as a superuser, or as a migration role that is a member of tenantry_owner).
--
-- Other sessions: pg_locks (pg_lock_status) lists every session's locks,
-- advisory keys, relation oids and transaction ids; pg_blocking_pids and its
-- kin tell who waits for whom; pg_prepared_xacts lists prepared transactions;
-- pg_get_multixact_members names the transactions locking a row together.
--
-- Transactions of the whole server: txid_current / pg_current_xact_id count
-- every tenant's transactions; the current snapshot lists the ones in flight;
-- txid_status / pg_xact_status and the commit timestamps tell the outcome and
-- time of any transaction id; age(xid) and mxid_age(xid) measure the counters.
-- (The xmin of a row the tenant writes itself still carries the counter:
-- docs/security.md, known limits.)
--
-- WAL and control data: the WAL position grows with every tenant's writes,
-- byte for byte; pg_control_* carries the next transaction id and the WAL
-- position of the last checkpoint; WAL summaries (PostgreSQL 17) name the
-- blocks each range of WAL changed (found running the suite on 17 and 18).
--
-- Sizes: pg_relation_size and its kin measure a schema tenant's partition
-- exactly, and the pooled tables, which grow with every tenant's data. (psql's
-- \dt+, \di+ and \l+ call them: as a tenant role they now fail.)
--
-- Server files: the legacy pg_read_file_old / pg_rotate_logfile_old check
-- for a superuser themselves; nobody else needs them.
-- -----------------------------------------------------------------------------
DO $builtins$
DECLARE
    signature text;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'pg_advisory_lock(bigint)', 'pg_advisory_lock(integer,integer)',
        'pg_advisory_lock_shared(bigint)', 'pg_advisory_lock_shared(integer,integer)',
        'pg_advisory_unlock(bigint)', 'pg_advisory_unlock(integer,integer)',
        'pg_advisory_unlock_shared(bigint)', 'pg_advisory_unlock_shared(integer,integer)',
        'pg_advisory_unlock_all()',
        'pg_advisory_xact_lock(bigint)', 'pg_advisory_xact_lock(integer,integer)',
        'pg_advisory_xact_lock_shared(bigint)', 'pg_advisory_xact_lock_shared(integer,integer)',
        'pg_try_advisory_lock(bigint)', 'pg_try_advisory_lock(integer,integer)',
        'pg_try_advisory_lock_shared(bigint)', 'pg_try_advisory_lock_shared(integer,integer)',
        'pg_try_advisory_xact_lock(bigint)', 'pg_try_advisory_xact_lock(integer,integer)',
        'pg_try_advisory_xact_lock_shared(bigint)', 'pg_try_advisory_xact_lock_shared(integer,integer)',

        'pg_lock_status()', 'pg_blocking_pids(integer)', 'pg_safe_snapshot_blocking_pids(integer)',
        'pg_isolation_test_session_is_blocked(integer,integer[])', 'pg_prepared_xact()',
        'pg_get_multixact_members(xid)',

        'txid_current()', 'txid_current_if_assigned()', 'txid_current_snapshot()', 'txid_status(bigint)',
        'pg_current_xact_id()', 'pg_current_xact_id_if_assigned()', 'pg_current_snapshot()',
        'pg_xact_status(xid8)', 'pg_last_committed_xact()', 'pg_xact_commit_timestamp(xid)',
        'pg_xact_commit_timestamp_origin(xid)', 'age(xid)', 'mxid_age(xid)',

        'pg_current_wal_lsn()', 'pg_current_wal_insert_lsn()', 'pg_current_wal_flush_lsn()',
        'pg_last_wal_receive_lsn()', 'pg_last_wal_replay_lsn()', 'pg_last_xact_replay_timestamp()',
        'pg_control_system()', 'pg_control_checkpoint()', 'pg_control_recovery()', 'pg_control_init()',
        -- PostgreSQL 17's WAL summaries (with summarize_wal on, for
        -- incremental backups): the summarized WAL position, and which
        -- blocks of which relation each range of WAL changed.
        'pg_get_wal_summarizer_state()', 'pg_available_wal_summaries()',
        'pg_wal_summary_contents(bigint,pg_lsn,pg_lsn)',

        'pg_database_size(oid)', 'pg_database_size(name)', 'pg_tablespace_size(oid)', 'pg_tablespace_size(name)',
        'pg_relation_size(regclass)', 'pg_relation_size(regclass,text)', 'pg_total_relation_size(regclass)',
        'pg_table_size(regclass)', 'pg_indexes_size(regclass)',

        'pg_read_file_old(text,bigint,bigint)', 'pg_rotate_logfile_old()'
    ] LOOP
        -- Built-ins of other PostgreSQL versions may be missing: skipped.
        CONTINUE WHEN to_regprocedure('pg_catalog.' || signature) IS NULL;
        EXECUTE format('REVOKE EXECUTE ON FUNCTION pg_catalog.%s FROM PUBLIC', signature);
        CONTINUE WHEN signature LIKE '%\_old(%' OR signature LIKE '%advisory%';
        EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.%s TO pg_monitor', signature);
    END LOOP;
END
$builtins$;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_advisory_xact_lock_shared(bigint),
    pg_catalog.pg_try_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock_shared(bigint) TO tenantry_owner;
-- tenantry migrate serialises runs with a session lock: a migration role that
-- is a member of tenantry_owner (no superuser) must be able to take it. So do
-- the team's migration tools run by that role (node-pg-migrate, Rails and
-- Flyway try pg_try_advisory_lock(bigint), golang-migrate, sqlx and Prisma
-- take pg_advisory_lock(bigint); found by a review of migration tools, whose
-- node-pg-migrate stopped at 42501): every advisory function goes to the
-- owner role, which no role acting for tenants can assume.
GRANT EXECUTE ON FUNCTION
    pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_advisory_lock(integer, integer),
    pg_catalog.pg_advisory_lock_shared(bigint), pg_catalog.pg_advisory_lock_shared(integer, integer),
    pg_catalog.pg_advisory_unlock(bigint), pg_catalog.pg_advisory_unlock(integer, integer),
    pg_catalog.pg_advisory_unlock_shared(bigint), pg_catalog.pg_advisory_unlock_shared(integer, integer),
    pg_catalog.pg_advisory_unlock_all(),
    pg_catalog.pg_advisory_xact_lock(integer, integer), pg_catalog.pg_advisory_xact_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(integer, integer),
    pg_catalog.pg_try_advisory_lock_shared(bigint), pg_catalog.pg_try_advisory_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock(integer, integer), pg_catalog.pg_try_advisory_xact_lock_shared(integer, integer)
    TO tenantry_owner;
-- A batched backfill of an adopted table (tenantry.backfill_prepare, 10_tables.sql)
-- walks the table by pages; migration roles that are members of tenantry_owner
-- (not only superusers) must be able to learn how many there are.
GRANT EXECUTE ON FUNCTION pg_catalog.pg_relation_size(regclass), pg_catalog.pg_relation_size(regclass, text) TO tenantry_owner;

REVOKE SELECT ON pg_catalog.pg_locks, pg_catalog.pg_prepared_xacts FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_locks, pg_catalog.pg_prepared_xacts TO pg_monitor;
-- A move back to the shared tier waits for the transactions of this database
-- that are older than its batches (tenantry.tier_move_wait, 07_schemas.sql):
-- it reads their virtual transaction ids and which database each backend is
-- in, and whether its own transaction has written yet, as the owner.
GRANT SELECT ON pg_catalog.pg_locks TO tenantry_owner;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_lock_status(), pg_catalog.pg_stat_get_activity(integer),
    pg_catalog.pg_current_xact_id_if_assigned() TO tenantry_owner;

-- Everything above is what every Citus worker runs as well, at every
-- tenantry migrate (crates/tenantry-db/src/citus.rs, worker_shared_state):
-- it ends at this switch to the owner role.
SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Extensions a team installs in this database whose objects PostgreSQL leaves
-- to PUBLIC and that read or reach shared state (found by a DBA's review):
-- pg_stat_statements (every session's statements, PostgreSQL 15 keeping
-- utility statements word for word), pg_prewarm (any readable table's exact
-- size, a schema tenant's among them, and whole tables loaded into shared
-- buffers, evicting every tenant's cache), pgrowlocks (other tenants' locked
-- rows, transaction ids and backend pids, past row level security),
-- old_snapshot (transaction ids against time), dblink (connections from the
-- database server to any host it reaches). Taken from PUBLIC at every run of
-- tenantry migrate (by a superuser); one installed since is the doctor's
-- finding (rule shared_state) until then. Monitoring ones go to pg_monitor, the others to no
-- one (an application of your own that needs dblink grants it to its own
-- roles, never to the tenantry roles).
-- -----------------------------------------------------------------------------
/**
 * What of those extensions PUBLIC may use now: the privilege as GRANT and
 * REVOKE name it, what it opens to tenants, and whether pg_monitor keeps it.
 */
CREATE OR REPLACE FUNCTION tenantry.shared_extension_objects()
RETURNS TABLE (extension text, privilege text, reach text, monitoring boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.extname::text,
           CASE d.classid WHEN 'pg_catalog.pg_proc'::regclass
                THEN 'EXECUTE ON FUNCTION ' || d.objid::regprocedure::text
                ELSE 'SELECT ON ' || d.objid::regclass::text END,
           k.reach, k.monitoring
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
    JOIN (VALUES
        ('pg_stat_statements', 'every session''s statements with their counts, every tenant''s among them (PostgreSQL 15 keeps utility statements word for word)', true),
        ('pg_prewarm', 'the exact size of any table it may read, a schema tenant''s among them, and whole tables loaded into shared buffers, evicting every tenant''s cache', false),
        ('pgrowlocks', 'other tenants'' locked rows, their transaction ids and backend pids, past row level security', true),
        ('old_snapshot', 'transaction ids against time, which counts every tenant''s transactions', true),
        ('dblink', 'connections from the database server to any host it reaches', false)
    ) k(extname, reach, monitoring) ON k.extname = e.extname
    LEFT JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objid
    LEFT JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
      AND (p.oid IS NOT NULL AND (p.proacl IS NULL OR aclcontains(p.proacl, makeaclitem(0, p.proowner, 'EXECUTE', false)))
           OR c.oid IS NOT NULL AND c.relkind IN ('r', 'v', 'm')
              AND aclcontains(c.relacl, makeaclitem(0, c.relowner, 'SELECT', false)))
    ORDER BY 1, 2
$$;
COMMENT ON FUNCTION tenantry.shared_extension_objects() IS 'What PUBLIC (so every tenant role) may use now of the extensions that read or reach state shared by every tenant (pg_stat_statements, pg_prewarm, pgrowlocks, old_snapshot, dblink), with what it opens and whether pg_monitor keeps it: every run of tenantry migrate takes each from PUBLIC (close_shared_extension_objects), the doctor names what an extension installed since left open (rule shared_state).';
REVOKE EXECUTE ON FUNCTION tenantry.shared_extension_objects() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.shared_extension_objects() TO tenantry_admin, tenantry_server;

/**
 * Takes from PUBLIC what shared_extension_objects() lists (the monitoring
 * ones to pg_monitor). With the caller's rights: a superuser's (an
 * extension's objects belong to whoever created it), from this file and at
 * every run of tenantry migrate, the definitions changed or not.
 */
CREATE OR REPLACE FUNCTION tenantry.close_shared_extension_objects()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o record;
    closed integer := 0;
BEGIN
    FOR o IN SELECT * FROM tenantry.shared_extension_objects() LOOP
        EXECUTE format('REVOKE %s FROM PUBLIC', o.privilege);
        IF o.monitoring THEN
            EXECUTE format('GRANT %s TO pg_monitor', o.privilege);
        END IF;
        closed := closed + 1;
    END LOOP;
    RETURN closed;
END
$$;
COMMENT ON FUNCTION tenantry.close_shared_extension_objects() IS 'Takes from PUBLIC the objects of extensions that reach shared state which shared_extension_objects() lists, granting the monitoring ones to pg_monitor; returns how many. Run by the migrating superuser (08_shared_state.sql, and every tenantry migrate). Not granted.';
REVOKE EXECUTE ON FUNCTION tenantry.close_shared_extension_objects() FROM PUBLIC;

RESET ROLE;
SELECT tenantry.close_shared_extension_objects();

SET LOCAL ROLE tenantry_owner;
