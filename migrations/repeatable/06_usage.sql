-- =============================================================================
-- Usage: request log (partitioned by day), tenant_metrics, resource usage.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE POLICY request_log_own ON tenantry.request_log
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY request_log_own ON tenantry.request_log IS 'A tenant reads and appends only its own request-log rows.';

-- The server's login may SET ROLE tenantry_logger, so SQL injected into a
-- tenant's transaction could too: the logger appends only in a proven
-- administrative context, which the server's request-log writer enters with
-- its context key and a tenant's transaction never holds (found by a
-- red-team review: rows planted for another tenant made its key usage
-- hundreds of megabytes and filled the shared disk outside any quota).
CREATE POLICY request_log_append ON tenantry.request_log
    FOR INSERT TO tenantry_logger
    WITH CHECK (tenantry.admin_context());
COMMENT ON POLICY request_log_append ON tenantry.request_log IS 'The logger appends rows for any tenant (batched by the server) in a proven administrative context only, and reads none.';

-- Rows are dated around now: a day far ahead or far back lands in the
-- default partition, which ensure_request_log_partitions then leaves in
-- place of that day's own partition, and whose old rows retention only
-- deletes row by row (found by a red-team review).
CREATE POLICY request_log_dated_now ON tenantry.request_log
    AS RESTRICTIVE FOR INSERT TO tenantry_app, tenantry_logger
    WITH CHECK (created_at >= now() - interval '30 days' AND created_at <= now() + interval '1 hour');
COMMENT ON POLICY request_log_dated_now ON tenantry.request_log IS 'The tenant role and the logger append rows dated from 30 days back to an hour ahead only (a server''s buffered entries after an outage, clocks a little apart); other dates would land in the default partition.';

-- A row a tenant's own transaction appends (the guide's request_log) names
-- no impersonator: request_log.impersonator is the record of what an
-- operator or owner did as a member, which only the server's writer keeps
-- (an audit review planted rows naming 'admin' from a tenant's SQL).
CREATE POLICY request_log_app_names_no_impersonator ON tenantry.request_log
    AS RESTRICTIVE FOR INSERT TO tenantry_app
    WITH CHECK (impersonator IS NULL);
COMMENT ON POLICY request_log_app_names_no_impersonator ON tenantry.request_log IS 'A tenant''s own appends name no impersonator: that column records who acted as a member, written by the server''s request-log writer only.';

GRANT SELECT, INSERT ON tenantry.request_log TO tenantry_app;
GRANT INSERT ON tenantry.request_log TO tenantry_logger;

/**
 * Claims a request-log batch's id (0054) for the statement that appends its
 * rows: true the first time, false once that batch committed, so a batch
 * retried after a commit in doubt (its connection lost after COMMIT was
 * sent) appends nothing the second time. The id is the server's random
 * choice: a caller learns nothing it did not send.
 */
CREATE OR REPLACE FUNCTION tenantry.claim_request_log_batch(batch_id uuid)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- As the log's own appends (policy request_log_append): SQL that takes
    -- the logger's role in a tenant's transaction claims nothing (a
    -- verification review claimed a million ids, 88 MB, in 14 s).
    PERFORM tenantry.require_admin_context('claim_request_log_batch');
    IF batch_id IS NULL THEN
        RETURN true;
    END IF;
    INSERT INTO tenantry.request_log_batches (batch_id) VALUES (claim_request_log_batch.batch_id)
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenantry.claim_request_log_batch(uuid) IS 'The request-log writer: claims a batch id in the statement that appends the batch; false when that batch was written already (a retry after a commit in doubt), and the statement then appends nothing. NULL claims nothing (true). Needs a proven administrative context (the writer''s) or an operator''s session (42501). Granted to tenantry_logger.';
GRANT EXECUTE ON FUNCTION tenantry.claim_request_log_batch(uuid) TO tenantry_logger;

/**
 * Partitions of request_log carry the parent's tenant policy too. Nobody is
 * granted a partition (rows are reached through request_log), so this changes
 * no access; it keeps "RLS enabled, no policy" (deny-all by accident) out of
 * the schema, so a grant added by mistake would still be tenant-scoped.
 * Idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.secure_request_log_partition(part text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE tenantry.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE tenantry.%I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('DROP POLICY IF EXISTS request_log_own ON tenantry.%I', part);
    EXECUTE format('CREATE POLICY request_log_own ON tenantry.%I FOR ALL TO tenantry_app '
                   'USING (tenant_id = tenantry.current_tenant_id()) '
                   'WITH CHECK (tenant_id = tenantry.current_tenant_id())', part);
    EXECUTE format('COMMENT ON POLICY request_log_own ON tenantry.%I IS %L', part,
                   'As on request_log: a tenant''s own request-log rows only.');
END
$$;
COMMENT ON FUNCTION tenantry.secure_request_log_partition(text) IS 'Internal: RLS (forced) and the tenant policy of request_log on one of its partitions. Not granted.';

/**
 * Creates the daily partitions of request_log from yesterday to days_ahead
 * days from now. A partition's creation locks request_log (and its default
 * partition) ACCESS EXCLUSIVE, which waits for every transaction reading the
 * log (a tenant's usage over 30 days takes seconds) while every later reader
 * and the log's writer queue behind it: found by a review, a server's first
 * upkeep held every tenant's usage reads for 6 s. So each creation waits at
 * most 100 ms for its locks (2 s for today and tomorrow, which are about to
 * be written) and a day it could not lock is left for the next call (a
 * NOTICE says so): the server calls this every minute, a week ahead, in a
 * transaction of its own.
 */
CREATE OR REPLACE FUNCTION tenantry.ensure_request_log_partitions(days_ahead integer DEFAULT 7)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
-- Days are UTC's whatever the database's or the session's TimeZone: under
-- another zone a day's bounds moved by its offset and overlapped the days
-- made before, and the upkeep failed every minute (found by a review of
-- clocks: ALTER DATABASE … SET TimeZone, or a restore onto a host whose
-- initdb took its local zone).
SET TimeZone = 'UTC'
AS $$
DECLARE
    d date;
    part text;
    created integer := 0;
BEGIN
    -- tenantry_admin is a role the server's login can assume: its work on
    -- every tenant's log needs the proven administrative context.
    PERFORM tenantry.require_admin_context('ensure_request_log_partitions');
    IF days_ahead IS NULL OR days_ahead NOT BETWEEN 0 AND 366 THEN
        RAISE EXCEPTION 'days_ahead must be 0 to 366' USING ERRCODE = 'TN422', HINT = 'days_ahead';
    END IF;
    -- Batch claims outlive the server's retries of a batch (a minute). Left
    -- to the next call while another server's upkeep deletes them.
    BEGIN
        DELETE FROM tenantry.request_log_batches b WHERE b.claimed_at < now() - interval '1 hour';
    EXCEPTION WHEN lock_not_available THEN
        NULL;
    END;
    FOR d IN SELECT generate_series(current_date - 1, current_date + days_ahead, interval '1 day')::date LOOP
        part := 'request_log_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('tenantry.%I', part)) IS NULL THEN
            -- A day about to be written waits longer for its lock (2 s): a
            -- tenant whose reads of the log overlap without a gap would
            -- otherwise keep it from being made at all (a verification
            -- review), and its rows would land in the default partition.
            PERFORM set_config('lock_timeout', CASE WHEN d <= current_date + 1 THEN '2s' ELSE '100ms' END, true);
            BEGIN
                EXECUTE format('CREATE TABLE tenantry.%I PARTITION OF tenantry.request_log FOR VALUES FROM (%L) TO (%L)',
                               part, d::timestamptz, (d + 1)::timestamptz);
                PERFORM tenantry.secure_request_log_partition(part);
                EXECUTE format('COMMENT ON TABLE tenantry.%I IS %L', part, 'request_log rows of ' || d);
                created := created + 1;
            EXCEPTION
                WHEN check_violation THEN
                    -- Rows for that day already sit in the default partition; they stay there.
                    RAISE NOTICE 'request_log partition for % skipped: the default partition holds its rows', d;
                WHEN invalid_object_definition THEN
                    -- A partition made under another TimeZone (before these
                    -- days were UTC's) covers part of this day: its rows go
                    -- to that partition and the default one; the days after
                    -- it are made as usual.
                    RAISE NOTICE 'request_log partition for % skipped: a partition made in another time zone overlaps it', d;
                WHEN lock_not_available THEN
                    RAISE NOTICE 'request_log partition for % not created yet: request_log is busy', d;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION tenantry.ensure_request_log_partitions(integer) IS 'Creates missing daily request_log partitions (UTC days, yesterday .. today + days_ahead, 0 to 366; a day a partition made in another time zone overlaps is skipped with a NOTICE), each waiting at most 100 ms for its locks, 2 s for today and tomorrow (a day it could not lock is left, with a NOTICE, for the next call); deletes batch claims older than an hour; returns how many it created. The server calls it every minute in a transaction of its own. Needs a proven administrative context or an operator''s session (42501).';

/** Drops daily request_log partitions that end before now() - keep. */
CREATE OR REPLACE FUNCTION tenantry.drop_request_log_partitions(keep interval DEFAULT interval '35 days')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- UTC's days, as the partitions' (ensure_request_log_partitions).
SET TimeZone = 'UTC'
AS $$
DECLARE
    part record;
    dropped integer := 0;
    -- The first UTC day kept, as a time: Citus refuses the DELETE below
    -- comparing the column with a date (a STABLE cross-type operator over a
    -- column of a distributed table), and the retention failed every time
    -- there (found running the server on a Citus cluster).
    cutoff timestamptz;
BEGIN
    PERFORM tenantry.require_admin_context('drop_request_log_partitions');
    -- Today's and yesterday's partitions are never dropped (the log's writer
    -- and the hourly metrics read them).
    IF keep IS NULL OR keep < interval '2 days' THEN
        RAISE EXCEPTION 'keep must be at least 2 days' USING ERRCODE = 'TN422', HINT = 'keep';
    END IF;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tenantry.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$'
          AND to_date(substr(c.relname, 13), 'YYYYMMDD') + 1 < (now() - keep)::date
    LOOP
        EXECUTE format('DROP TABLE tenantry.%I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    -- Days without a partition of their own: their rows age out of the
    -- default partition row by row.
    cutoff := (now() - keep)::date;
    DELETE FROM tenantry.request_log_default d WHERE d.created_at < cutoff;
    RETURN dropped;
END
$$;
COMMENT ON FUNCTION tenantry.drop_request_log_partitions(interval) IS 'Retention: drops daily request_log partitions older than keep (default 35 days, at least 2), and deletes the default partition''s rows as old. Needs a proven administrative context or an operator''s session (42501).';

-- The partitions that exist (the reset before these files dropped their policies).
DO $partitions$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tenantry.request_log'::regclass
    LOOP
        PERFORM tenantry.secure_request_log_partition(part);
    END LOOP;
END
$partitions$;

GRANT EXECUTE ON FUNCTION
    tenantry.ensure_request_log_partitions(integer),
    tenantry.drop_request_log_partitions(interval)
TO tenantry_admin;

-- -----------------------------------------------------------------------------
-- tenant_metrics (guide): materialized, owned by tenantry_owner (BYPASSRLS, so
-- a refresh sees every tenant). Never granted to tenant roles: read through
-- current_tenant_metrics() which filters to the caller's subtree.
-- -----------------------------------------------------------------------------

/**
 * The hourly usage as it is now (tenant_metrics' definition, migration
 * 0058): the hours rolled up from tenant_metric_hours, the later ones
 * counted from request_log's partitions of those days alone. Read by
 * current_tenant_metrics() and usage_top() for one subtree or a few days,
 * whose filters reach both halves (tenant_id, a grouping column, by the
 * log's (tenant_id, created_at) index).
 */
CREATE OR REPLACE VIEW tenantry.tenant_metrics_now WITH (security_invoker = true) AS
SELECT h.tenant_id, h.hour, h.request_count, h.unique_users, h.resources_accessed,
       h.unique_keys, h.client_errors, h.server_errors, h.p95_latency_ms
FROM tenantry.tenant_metric_hours h
WHERE h.hour > now() - interval '30 days' - interval '1 hour'
UNION ALL
SELECT
    l.tenant_id,
    date_trunc('hour', l.created_at, 'UTC') AS hour,
    count(*) AS request_count,
    count(DISTINCT l.user_id) AS unique_users,
    count(DISTINCT l.resource_id) AS resources_accessed,
    count(DISTINCT l.key_id) AS unique_keys,
    count(*) FILTER (WHERE l.status BETWEEN 400 AND 499) AS client_errors,
    count(*) FILTER (WHERE l.status >= 500) AS server_errors,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY l.latency_ms) AS p95_latency_ms
FROM tenantry.request_log l
WHERE l.created_at > now() - interval '30 days'
  AND l.created_at >= (SELECT coalesce(max(r.hour) + interval '1 hour', '-infinity')
                       FROM tenantry.tenant_metric_rollups r)
GROUP BY l.tenant_id, date_trunc('hour', l.created_at, 'UTC');
COMMENT ON VIEW tenantry.tenant_metrics_now IS 'Per tenant and hour (UTC) over the last 30 days, as tenant_metrics, live: the hours rolled up (tenant_metric_hours) and the later ones counted from request_log. security_invoker and granted to none: read by the owner''s functions (current_tenant_metrics(), usage_top()) and copied into tenant_metrics.';

CREATE POLICY tenant_metric_hours_no_direct_access ON tenantry.tenant_metric_hours AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY tenant_metric_hours_no_direct_access ON tenantry.tenant_metric_hours IS 'No role reads or writes the rolled-up hours directly: roll_up_tenant_metrics() writes them and tenant_metrics reads them, both as the owner (BYPASSRLS; the table is granted to none).';

/**
 * Counts the request log's rows of [from_time, to_time) (whole hours: the
 * range is on created_at, so only those days' partitions are read) into
 * tenant_metric_hours, per tenant and hour (UTC), of every tenant or of
 * `tid` alone (by the log's (tenant_id, created_at) index); an hour of a
 * tenant counted already is left as it is. Returns how many rows it wrote.
 */
CREATE OR REPLACE FUNCTION tenantry.count_usage_hours(from_time timestamptz, to_time timestamptz, tid uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO tenantry.tenant_metric_hours (tenant_id, hour, request_count, unique_users,
                                             resources_accessed, unique_keys, client_errors,
                                             server_errors, p95_latency_ms)
    SELECT l.tenant_id, date_trunc('hour', l.created_at, 'UTC'), count(*),
           count(DISTINCT l.user_id), count(DISTINCT l.resource_id), count(DISTINCT l.key_id),
           count(*) FILTER (WHERE l.status BETWEEN 400 AND 499),
           count(*) FILTER (WHERE l.status >= 500),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY l.latency_ms)
    FROM tenantry.request_log l
    WHERE l.created_at >= from_time AND l.created_at < to_time
      AND (tid IS NULL OR l.tenant_id = tid)
    GROUP BY l.tenant_id, date_trunc('hour', l.created_at, 'UTC')
    ON CONFLICT (tenant_id, hour) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION tenantry.count_usage_hours(timestamptz, timestamptz, uuid) IS 'Internal (roll_up_tenant_metrics, recount_tenant_metrics): counts request_log''s rows of [from_time, to_time) per tenant and UTC hour into tenant_metric_hours, of every tenant (tid NULL) or of tid alone; hours counted already are left. Returns how many rows it wrote. Not granted.';

/**
 * Counts the hours that ended (five minutes ago at least: a server's
 * request-log writer retries a batch for a minute) and are not rolled up
 * yet into tenant_metric_hours, at most `max_hours` of them from the oldest
 * up (by default every one of the last 30 days: the first refresh after an
 * upgrade counts them as the old refresh did, once; later ones the hour or
 * two since the last), in one scan of request_log, and records each in tenant_metric_rollups
 * (an hour without requests too). Its callers run one at a time
 * (keep_usage's lock); the hours are claimed first all the same, so that
 * no two calls count one hour.
 * Rows and records older than 31 days go. Returns how many hours it rolled
 * up. A request-log row that arrives for an hour already rolled up (a
 * tenant role appending one dated in the past) is not counted.
 */
CREATE OR REPLACE FUNCTION tenantry.roll_up_tenant_metrics(max_hours integer DEFAULT 744)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first_hour timestamptz;
    last_hour timestamptz := date_trunc('hour', now() - interval '5 minutes', 'UTC');
    hours integer;
BEGIN
    -- Retention first (as sample_tenant_storage: on Citus a DELETE after
    -- the INSERT ... SELECT below was refused), each tenant's oldest rows
    -- walked by the primary key.
    DELETE FROM tenantry.tenant_metric_hours m
    USING tenantry.tenants t
    WHERE m.tenant_id = t.tenant_id AND m.hour < now() - interval '31 days';
    DELETE FROM tenantry.tenant_metric_rollups r WHERE r.hour < now() - interval '31 days';
    SELECT greatest(coalesce(max(r.hour) + interval '1 hour', '-infinity'),
                    date_trunc('hour', now() - interval '30 days', 'UTC'))
      INTO first_hour
      FROM tenantry.tenant_metric_rollups r;
    hours := least(max_hours, (extract(epoch FROM last_hour - first_hour) / 3600)::integer);
    IF hours IS NULL OR hours < 1 THEN
        RETURN 0;
    END IF;
    -- Claimed first (its callers run one at a time, keep_usage's lock): a
    -- call that got past it all the same would wait here for this one's
    -- commit, then find these hours taken and roll up nothing.
    INSERT INTO tenantry.tenant_metric_rollups (hour)
    SELECT first_hour + g * interval '1 hour' FROM generate_series(0, hours - 1) g
    ON CONFLICT (hour) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM tenantry.count_usage_hours(first_hour, first_hour + hours * interval '1 hour', NULL);
    RETURN hours;
END
$$;
COMMENT ON FUNCTION tenantry.roll_up_tenant_metrics(integer) IS 'Internal (keep_usage): counts each ended hour of request_log once (five minutes after its end) into tenant_metric_hours, at most max_hours from the oldest not rolled up (within the last 30 days), recording each in tenant_metric_rollups; drops rows older than 31 days. Returns how many hours it rolled up. Not granted.';

/**
 * Counts one tenant's rolled-up hours again from request_log (its rows of
 * the last 30 days up to the last hour rolled up, read by its tenant_id
 * index): what an import or a backfill of request-log rows dated in the
 * past needs, since the roll-up counts each hour once. Returns how many of
 * its hours it holds now.
 */
CREATE OR REPLACE FUNCTION tenantry.recount_tenant_metrics(tid uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rolled_until timestamptz;
BEGIN
    PERFORM tenantry.require_admin_context('recount_tenant_metrics');
    -- No roll-up between the bound read here and the counting below (the
    -- hour it rolled up would be deleted and not counted again).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('tenantry.keep_usage', 0));
    SELECT coalesce(max(r.hour) + interval '1 hour', '-infinity') INTO rolled_until
      FROM tenantry.tenant_metric_rollups r;
    DELETE FROM tenantry.tenant_metric_hours m WHERE m.tenant_id = tid;
    RETURN tenantry.count_usage_hours(date_trunc('hour', now() - interval '30 days', 'UTC'), rolled_until, tid);
END
$$;
COMMENT ON FUNCTION tenantry.recount_tenant_metrics(uuid) IS 'Counts one tenant''s rolled-up hours (tenant_metric_hours) again from its request_log rows of the last 30 days: after an import or a backfill of rows dated in the past, which the hourly roll-up (each hour counted once) leaves out; tenant_metrics shows them at its next refresh. Returns how many of its hours are rolled up. Operators only (a superuser or a member of tenantry_owner; granted to no role).';

/**
 * Samples every tenant's storage (resources and bytes) for the current hour,
 * once an hour: the first call of an hour claims it in storage_sample_runs
 * (a concurrent call on another server waits for that row, then finds it and
 * returns), the others return at once. Each tenant's rows are counted in the
 * table its tier keeps them in (ONLY: never a whole table family), with row
 * locks and ACCESS SHARE only. Samples and runs older than 30 days go.
 */
CREATE OR REPLACE FUNCTION tenantry.sample_tenant_storage()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    this_hour timestamptz := date_trunc('hour', now(), 'UTC');
    h record;
    sampled integer := 0;
    n integer;
BEGIN
    INSERT INTO tenantry.storage_sample_runs (hour, tenants) VALUES (this_hour, 0)
    ON CONFLICT (hour) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Retention first, once an hour. Walks each tenant's oldest samples by
    -- the primary key (tenant_id, hour) rather than the whole table. Before
    -- the samples: on Citus their INSERT ... SELECT writes shards over
    -- several connections, after which this DELETE (each shard with the
    -- tenants reference table) was refused ("placements that were modified
    -- over multiple connections").
    DELETE FROM tenantry.storage_samples s
    USING tenantry.tenants t
    WHERE s.tenant_id = t.tenant_id AND s.hour < this_hour - interval '30 days';
    DELETE FROM tenantry.storage_sample_runs r WHERE r.hour < this_hour - interval '30 days';
    FOR h IN
        SELECT * FROM tenantry.resources_relations(ARRAY(SELECT t.tenant_id FROM tenantry.tenants t))
    LOOP
        EXECUTE format('INSERT INTO tenantry.storage_samples (tenant_id, hour, resources, bytes)
                        SELECT u.tid, $2, count(r.tenant_id), coalesce(sum(r.size_bytes), 0)::bigint
                        FROM unnest($1::uuid[]) AS u(tid)
                        LEFT JOIN %s r ON r.tenant_id = u.tid
                        GROUP BY u.tid
                        ON CONFLICT (tenant_id, hour) DO NOTHING', h.relation)
        USING h.tenant_ids, this_hour;
        GET DIAGNOSTICS n = ROW_COUNT;
        sampled := sampled + n;
    END LOOP;
    UPDATE tenantry.storage_sample_runs r SET tenants = sampled WHERE r.hour = this_hour;
    RETURN sampled;
END
$$;
COMMENT ON FUNCTION tenantry.sample_tenant_storage() IS 'Internal (refresh_tenant_metrics): the first call of each hour writes every tenant''s resources and bytes for that hour to storage_samples and drops samples older than 30 days; later calls in the hour do nothing. Returns how many tenants were sampled. Not granted.';

/**
 * The usage upkeep's steps, for refresh_tenant_metrics() and
 * usage_upkeep(): request-log rows a server's writer sent for a tenant
 * while it was purged, and what was rolled up of them, deleted; the hours
 * that ended rolled up; tenant_metrics (the guide's copy) refreshed
 * concurrently when `refresh_copy` or when an hour was rolled up; the
 * hour's storage sample taken (once an hour). Returns how many hours it
 * rolled up.
 */
CREATE OR REPLACE FUNCTION tenantry.keep_usage(refresh_copy boolean)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- tenant_metrics' hours are UTC's: its date_trunc('hour', created_at) cut
-- hours in the session's time zone, and a database set to one half an hour
-- off (Asia/Kolkata, initdb's default there) labelled 10:30Z the start of an
-- hour (found by a review of time-based behaviour).
SET TimeZone = 'UTC'
AS $$
DECLARE
    gone uuid;
    rolled integer;
BEGIN
    -- One upkeep at a time across servers, under a transaction lock that
    -- recount_tenant_metrics() takes too: a server's periodic run finds
    -- another's under way and leaves the work to it (each waited on the
    -- other's claimed hours for its whole run, up to its lock timeout, and
    -- counted a failure every hour: a verification review); an explicit
    -- refresh waits its turn.
    IF refresh_copy THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('tenantry.keep_usage', 0));
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('tenantry.keep_usage', 0)) THEN
        RETURN 0;
    END IF;
    -- On Citus, the roll-up's INSERT ... SELECT into tenant_metric_hours
    -- wrote its shards over several connections per node, and the storage
    -- sample's DELETE on the colocated storage_samples afterwards was
    -- refused ("placements that were modified over multiple connections"):
    -- one connection per node for this transaction's multi-shard writes.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    -- Rows a server's request-log writer sent for a tenant while it was
    -- purged (its batch reached the database after the purge's commit) go
    -- before they are counted: a purge leaves nothing of the tenant behind
    -- for longer than a refresh (found by a review of offboarding: a row
    -- outlived the purge and the refresh put the tenant back into
    -- tenant_metrics). A writer gives up a batch after a minute, so a day
    -- of purges covers them.
    -- One tenant at a time: on Citus each is one shard's delete.
    FOR gone IN
        SELECT p.tenant_id FROM tenantry.purged_tenants p WHERE p.purged_at > now() - interval '1 day'
    LOOP
        DELETE FROM tenantry.request_log l WHERE l.tenant_id = gone;
        DELETE FROM tenantry.tenant_metric_hours m WHERE m.tenant_id = gone;
    END LOOP;
    rolled := tenantry.roll_up_tenant_metrics();
    -- The copy: refreshing it every minute cost as much as its whole 30
    -- days (8.4 s at 3 million rows over 2,000 tenants), while tenantry's
    -- own reads use the live tenant_metrics_now.
    IF refresh_copy OR rolled > 0 THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY tenantry.tenant_metrics;
    END IF;
    PERFORM tenantry.sample_tenant_storage();
    RETURN rolled;
END
$$;
COMMENT ON FUNCTION tenantry.keep_usage(boolean) IS 'Internal (refresh_tenant_metrics, usage_upkeep), in UTC, one at a time across servers (a transaction advisory lock: the periodic run returns 0 at once when another holds it, an explicit refresh waits): deletes request-log and rolled-up rows that arrived for a tenant after its purge (purges of the last day), rolls up the hours that ended (roll_up_tenant_metrics), refreshes tenant_metrics concurrently as its owner when asked or when it rolled an hour up, and samples storage at the first call of each hour. Returns how many hours it rolled up. Not granted.';

/**
 * Refreshes tenant_metrics (the guide's copy) now, concurrently (readers
 * are not blocked), after the upkeep's other steps (keep_usage).
 */
CREATE OR REPLACE FUNCTION tenantry.refresh_tenant_metrics()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_admin_context('refresh_tenant_metrics');
    PERFORM tenantry.keep_usage(true);
END
$$;
COMMENT ON FUNCTION tenantry.refresh_tenant_metrics() IS 'Brings the usage up to date now: rolls up the hours that ended and refreshes tenant_metrics (hours in UTC whatever the database''s time zone) concurrently as its owner (sees every tenant), after deleting rows that arrived for a tenant after its purge; samples storage at the first call of each hour (keep_usage). Needs a proven administrative context or an operator''s session (42501).';
GRANT EXECUTE ON FUNCTION tenantry.refresh_tenant_metrics() TO tenantry_admin;

/**
 * The server's periodic usage upkeep: refresh_tenant_metrics(), but
 * tenant_metrics is refreshed only when an hour was rolled up (about once
 * an hour). Returns how many hours it rolled up.
 */
CREATE OR REPLACE FUNCTION tenantry.usage_upkeep()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_admin_context('usage_upkeep');
    RETURN tenantry.keep_usage(false);
END
$$;
COMMENT ON FUNCTION tenantry.usage_upkeep() IS 'The server''s periodic usage upkeep (keep_usage): as refresh_tenant_metrics(), but tenant_metrics (the guide''s copy; tenantry''s own reads use tenant_metrics_now) is refreshed only when an hour was rolled up. Returns how many hours it rolled up. Needs a proven administrative context or an operator''s session (42501).';
GRANT EXECUTE ON FUNCTION tenantry.usage_upkeep() TO tenantry_admin;

CREATE POLICY storage_samples_own ON tenantry.storage_samples
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY storage_samples_own ON tenantry.storage_samples IS 'A tenant reads its own storage samples (its descendants'' through current_tenant_metrics()); nobody but the owner''s sampling function writes them.';
GRANT SELECT ON tenantry.storage_samples TO tenantry_app;

/**
 * The caller's hourly usage: its own tenant and its descendants
 * (is_descendant marks the latter), optionally bounded by hour. A row per
 * tenant and hour with requests (tenant_metrics) or a storage sample
 * (storage_samples), or both: request columns are 0 and the p95 NULL in an
 * hour without requests, the storage columns NULL in an hour not sampled.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_metrics(from_hour timestamptz DEFAULT NULL, to_hour timestamptz DEFAULT NULL)
RETURNS TABLE (tenant_id uuid, hour timestamptz, request_count bigint, unique_users bigint,
               resources_accessed bigint, is_descendant boolean, unique_keys bigint,
               client_errors bigint, server_errors bigint, p95_latency_ms double precision,
               storage_resources bigint, storage_bytes bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH m AS (
        SELECT m.* FROM tenantry.tenant_metrics_now m
        WHERE m.tenant_id = ANY (tenantry.visible_tenant_ids())
          AND (from_hour IS NULL OR m.hour >= from_hour)
          AND (to_hour IS NULL OR m.hour < to_hour)
    ), s AS (
        SELECT s.* FROM tenantry.storage_samples s
        WHERE s.tenant_id = ANY (tenantry.visible_tenant_ids())
          AND s.hour > now() - interval '30 days'
          AND (from_hour IS NULL OR s.hour >= from_hour)
          AND (to_hour IS NULL OR s.hour < to_hour)
    )
    SELECT coalesce(m.tenant_id, s.tenant_id), coalesce(m.hour, s.hour),
           coalesce(m.request_count, 0), coalesce(m.unique_users, 0), coalesce(m.resources_accessed, 0),
           coalesce(m.tenant_id, s.tenant_id) <> tenantry.current_tenant_id(),
           coalesce(m.unique_keys, 0), coalesce(m.client_errors, 0), coalesce(m.server_errors, 0),
           m.p95_latency_ms, s.resources, s.bytes
    FROM m FULL JOIN s ON s.tenant_id = m.tenant_id AND s.hour = m.hour
    ORDER BY 2, 1
$$;
COMMENT ON FUNCTION tenantry.current_tenant_metrics(timestamptz, timestamptz) IS 'Per-tenant read of tenant_metrics joined with storage_samples: hourly rows of the current tenant and its descendants only. Empty without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.current_tenant_metrics(timestamptz, timestamptz) TO tenantry_app;

/**
 * The operator's noisy-neighbour view over the last `days` days (1..30):
 * every tenant with requests or a storage sample in the period, ranked by
 * `by`: requests, errors (4xx + 5xx), p95 (the hourly p95 latencies averaged
 * with each hour weighted by its requests: the period's exact p95 is not
 * kept) or storage (the latest sample's bytes); ties by tenant id. At most
 * max_rows (1..100) rows.
 */
CREATE OR REPLACE FUNCTION tenantry.usage_top(days integer, by text, max_rows integer)
RETURNS TABLE (tenant_id uuid, name text, status text, request_count bigint, client_errors bigint,
               server_errors bigint, p95_latency_ms double precision, storage_resources bigint,
               storage_bytes bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    since timestamptz;
BEGIN
    -- Every tenant's figures: for a proven administrative context (or an
    -- operator in psql) only, not for any session that assumed tenantry_admin.
    PERFORM tenantry.require_admin_context('usage_top');
    IF days IS NULL OR days NOT BETWEEN 1 AND 30 THEN
        RAISE EXCEPTION 'days must be 1 to 30' USING ERRCODE = 'TN422', HINT = 'days';
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'limit must be 1 to 100' USING ERRCODE = 'TN422', HINT = 'limit';
    END IF;
    IF by IS NULL OR by NOT IN ('requests', 'errors', 'p95', 'storage') THEN
        RAISE EXCEPTION 'by must be requests, errors, p95 or storage' USING ERRCODE = 'TN422', HINT = 'by';
    END IF;
    -- Whole 24-hour days: a day subtracted in a session zone with daylight
    -- saving is 23 or 25 hours across its change (a review of clocks).
    since := date_trunc('hour', now(), 'UTC') - make_interval(hours => 24 * days);
    RETURN QUERY
    WITH m AS (
        SELECT m.tenant_id, sum(m.request_count)::bigint AS requests,
               sum(m.client_errors)::bigint AS client_errors, sum(m.server_errors)::bigint AS server_errors,
               sum(m.p95_latency_ms * m.request_count) / nullif(sum(m.request_count), 0) AS p95
        FROM tenantry.tenant_metrics_now m
        WHERE m.hour >= since
        GROUP BY m.tenant_id
    ), s AS (
        SELECT DISTINCT ON (s.tenant_id) s.tenant_id, s.resources, s.bytes
        FROM tenantry.storage_samples s
        WHERE s.hour >= since
        ORDER BY s.tenant_id, s.hour DESC
    ), ranked AS (
        SELECT coalesce(m.tenant_id, s.tenant_id) AS tid, coalesce(m.requests, 0) AS requests,
               coalesce(m.client_errors, 0) AS client_errors, coalesce(m.server_errors, 0) AS server_errors,
               m.p95, s.resources, s.bytes
        FROM m FULL JOIN s ON s.tenant_id = m.tenant_id
    )
    SELECT r.tid, t.name, t.status, r.requests, r.client_errors, r.server_errors, r.p95, r.resources, r.bytes
    FROM ranked r
    JOIN tenantry.tenants t ON t.tenant_id = r.tid
    ORDER BY CASE by
                 WHEN 'requests' THEN r.requests::double precision
                 WHEN 'errors' THEN (r.client_errors + r.server_errors)::double precision
                 WHEN 'p95' THEN r.p95
                 ELSE r.bytes::double precision
             END DESC NULLS LAST, r.tid
    LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION tenantry.usage_top(integer, text, integer) IS 'Operators: the tenants with the most requests, errors (4xx + 5xx), the highest p95 latency (hourly p95s weighted by requests) or the most storage (latest sample) over the last 1..30 days, from tenant_metrics and storage_samples; at most 100 rows. TN422 for a bad argument (HINT names it). Needs a proven administrative context or an operator''s session (42501).';
GRANT EXECUTE ON FUNCTION tenantry.usage_top(integer, text, integer) TO tenantry_admin;

-- -----------------------------------------------------------------------------
-- Adopted tables with the caller's row counts.
-- -----------------------------------------------------------------------------

/**
 * The adopted tables (the team's, the same for every tenant), with the table
 * holding the current tenant's rows of each: its schema's copy for a schema
 * tenant (when the family has one), the adopted table otherwise. Empty
 * without a tenant context.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_table_homes()
RETURNS TABLE (table_name text, hierarchy boolean, sharing boolean, write_permission text,
               adopted_at timestamptz, home_schema name, home_table name, partitioned boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL: family_templates() is defined in a later file (07_schemas).
    RETURN QUERY
    SELECT tt.table_id::text, tt.hierarchy, tt.sharing, tt.write_permission::text, tt.adopted_at,
           coalesce(own.schema_name, n.nspname), coalesce(own.table_name, c.relname), c.relkind = 'p'
    FROM tenantry.tenant_tables tt
    JOIN pg_class c ON c.oid = tt.table_id
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN LATERAL (
        SELECT t.schema_name::name AS schema_name, f.template_table AS table_name
        FROM tenantry.tenants t, tenantry.family_templates() f
        WHERE t.tenant_id = tenantry.current_tenant_id() AND t.isolation = 'schema'
          AND f.template = tt.table_id
    ) own ON true
    WHERE tenantry.current_tenant_id() IS NOT NULL
    ORDER BY tt.table_id::text;
END
$$;
COMMENT ON FUNCTION tenantry.current_tenant_table_homes() IS 'Internal (current_tenant_tables): each adopted table''s name and options, and the schema and name of the table that holds the current tenant''s rows of it (a tenant moving back to the shared tier keeps them in its schema until the cut-over). Empty without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.current_tenant_table_homes() TO tenantry_app;

/**
 * The adopted tables with the current tenant's own rows in each, counted as
 * the caller (its policies apply) in the one table holding them, by the
 * index every adopted table has on tenant_id: the cost grows with the
 * tenant's rows, never with other tenants'.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_tables()
RETURNS TABLE (table_name text, hierarchy boolean, sharing boolean, write_permission text,
               adopted_at timestamptz, row_count bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM tenantry.current_tenant_table_homes() LOOP
        table_name := t.table_name;
        hierarchy := t.hierarchy;
        sharing := t.sharing;
        write_permission := t.write_permission;
        adopted_at := t.adopted_at;
        -- ONLY on a plain table: never the whole family (every schema
        -- tenant's copy); a partitioned table has no rows of its own.
        EXECUTE format(CASE WHEN t.partitioned
                            THEN 'SELECT count(*) FROM %I.%I WHERE tenant_id = $1'
                            ELSE 'SELECT count(*) FROM ONLY %I.%I WHERE tenant_id = $1' END,
                       t.home_schema, t.home_table)
        USING tenantry.current_tenant_id() INTO row_count;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.current_tenant_tables() IS 'The adopted tables with the current tenant''s own row count in each, counted under the caller''s policies in the table holding its rows (ONLY: never a whole family).';
GRANT EXECUTE ON FUNCTION tenantry.current_tenant_tables() TO tenantry_app;

-- -----------------------------------------------------------------------------
-- tenant_resource_usage (guide): security_invoker, so the caller's RLS applies
-- to both tenants and resources; a tenant sees itself and its descendants.
-- -----------------------------------------------------------------------------

-- security_barrier too: a caller's own predicates on the view are applied after
-- its rows are filtered, never pushed below (only leakproof ones, such as uuid
-- equality on tenant_id, still reach the index).
/** The relation holding a visible tenant's resources (resources_relation); NULL for any other tenant (no tier oracle). */
CREATE OR REPLACE FUNCTION tenantry.visible_resources_relation(tid uuid)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.resources_relation(tid) WHERE tid = ANY (tenantry.visible_tenant_ids())
$$;
COMMENT ON FUNCTION tenantry.visible_resources_relation(uuid) IS 'The relation holding a tenant''s resources (ONLY its own table; the whole family while it moves back to the shared tier), quoted, for the current tenant and its descendants only; NULL for every other tenant, existing or not.';
GRANT EXECUTE ON FUNCTION tenantry.visible_resources_relation(uuid) TO tenantry_app;

/**
 * A visible tenant's resource count, bytes and last change, read from its
 * own table only (never the whole family), as the caller: its policy applies.
 * NULLs for a tenant the caller cannot read (tenant_resource_usage leaves it
 * out rather than show it empty), except for a role that bypasses row
 * security without a tenant context (an operator's overview, every tenant's
 * real totals).
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_resource_totals(
    tid uuid, OUT total_resources bigint, OUT storage_used bigint, OUT last_modified timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    home text := tenantry.visible_resources_relation(tid);
BEGIN
    IF home IS NULL AND tenantry.current_tenant_id() IS NULL
       AND (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) THEN
        home := tenantry.resources_relation(tid);
    END IF;
    IF home IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*), coalesce(sum(r.size_bytes), 0)::bigint, max(r.updated_at)
                    FROM %s r WHERE r.tenant_id = $1', home)
    USING tid
    INTO total_resources, storage_used, last_modified;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_resource_totals(uuid) IS 'Resource count, bytes and last change of the current tenant or a descendant, from its own table, under the caller''s policy; NULLs for any other tenant, but for a role that bypasses row security without a tenant context (every tenant''s totals). Used by tenant_resource_usage.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_resource_totals(uuid) TO tenantry_app;

-- Each tenant's totals from its own table: a join with tenantry.resources would
-- read (and lock) every schema tenant's table.
CREATE OR REPLACE VIEW tenantry.tenant_resource_usage WITH (security_invoker = true, security_barrier = true) AS
SELECT
    t.tenant_id,
    t.name AS tenant_name,
    u.total_resources,
    u.storage_used,
    u.last_modified
FROM tenantry.tenants t
CROSS JOIN LATERAL tenantry.tenant_resource_totals(t.tenant_id) u
-- Tenants whose totals the caller cannot read are left out, not shown empty.
WHERE u.total_resources IS NOT NULL;
COMMENT ON VIEW tenantry.tenant_resource_usage IS 'Guide view: resource count, storage and last modification per tenant: the current tenant and its descendants (security_invoker: the caller''s RLS applies, so no other tenant''s rows ever appear); every tenant for a role that bypasses row security without a tenant context (an operator''s overview).';
GRANT SELECT ON tenantry.tenant_resource_usage TO tenantry_app;
