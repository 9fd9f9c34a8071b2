-- =============================================================================
-- Tenants: settings, lifecycle, hierarchy (transitive closure), audit log,
-- creating tenants.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Settings: a closed set of keys, validated by the database.
-- -----------------------------------------------------------------------------

/**
 * Raises TN422 naming the offending key when settings hold an unknown key or a
 * value of the wrong type; returns true otherwise. Known keys:
 * max_resources, max_storage_bytes and the limits max_children,
 * max_descendants, max_api_keys, max_roles, max_members, max_shares
 * (09_limits.sql; integers 0 .. 2^63-1), rate_limit_per_second and
 * child_creation_rate_per_second (numbers > 0), rate_limit_burst (integer 1 .. 2^32-1), metadata (object,
 * free-form). The Rust library's TenantSettings applies the same bounds.
 */
CREATE OR REPLACE FUNCTION tenantry.validate_tenant_settings(settings jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF settings IS NULL THEN
        RETURN true;
    END IF;
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'settings must be a JSON object' USING ERRCODE = 'TN422', HINT = 'settings';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(settings) LOOP
        CASE k
        WHEN 'max_resources', 'max_storage_bytes', 'max_children', 'max_descendants', 'max_api_keys',
             'max_roles', 'max_members', 'max_shares' THEN
            -- Counted in bigint (tenant_quota_usage, tenant_limit_usage): the largest quota is the largest bigint.
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 0 OR v::numeric > 9223372036854775807
               OR v::numeric <> trunc(v::numeric) THEN
                RAISE EXCEPTION 'settings.% must be an integer from 0 to 9223372036854775807', k
                    USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'rate_limit_burst' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 1 OR v::numeric > 4294967295
               OR v::numeric <> trunc(v::numeric) THEN
                RAISE EXCEPTION 'settings.% must be an integer from 1 to 4294967295', k
                    USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'rate_limit_per_second', 'child_creation_rate_per_second' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <= 0 THEN
                RAISE EXCEPTION 'settings.% must be a number > 0', k USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'metadata' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'settings.metadata must be a JSON object' USING ERRCODE = 'TN422', HINT = 'settings.metadata';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown settings key "%"', k
                USING ERRCODE = 'TN422', HINT = 'settings.' || k,
                      DETAIL = 'known keys: max_resources, max_storage_bytes, max_children, max_descendants, max_api_keys, '
                               'max_roles, max_members, max_shares, rate_limit_per_second, rate_limit_burst, '
                               'child_creation_rate_per_second, metadata';
        END CASE;
    END LOOP;
    RETURN true;
END
$$;
COMMENT ON FUNCTION tenantry.validate_tenant_settings(jsonb) IS 'Validates tenants.settings: raises TN422 naming the bad key, returns true otherwise.';
GRANT EXECUTE ON FUNCTION tenantry.validate_tenant_settings(jsonb) TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- Names people tell apart: one form for what looks the same.
-- -----------------------------------------------------------------------------

/**
 * A time as the API writes times, RFC 3339 in UTC
 * (`2027-01-01T00:00:00.000000Z`), for messages: `%` of a timestamptz in a
 * RAISE spells it in the session's TimeZone (`2026-12-31 19:00:00-05`),
 * which a review of clocks found in answers whose JSON said `Z`.
 */
CREATE OR REPLACE FUNCTION tenantry.rfc3339(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;
COMMENT ON FUNCTION tenantry.rfc3339(timestamptz) IS 'A time as RFC 3339 in UTC, for messages (the API''s spelling, whatever the session''s TimeZone). Internal; not granted.';

/**
 * Whether text holds a control or invisible character (with `lines`, tab,
 * line feed and carriage return are text). Refused: C0 and C1 controls, soft
 * hyphen, zero-width space, directional marks, line and paragraph separators
 * (control characters in a name, which a trim would not remove),
 * bidirectional embeddings, overrides and isolates, word joiner and the
 * invisible operators, the byte-order mark, and the blank look-alikes a
 * review of hostile input found passing (combining grapheme joiner, Arabic
 * letter mark, Hangul fillers, Khmer inherent vowels, Mongolian selectors,
 * braille blank, interlinear annotation characters). The zero-width
 * non-joiner and joiner (U+200C, U+200D) spell Persian and Indic words and
 * emoji sequences ('می‌خواهم', '👩‍💻'): allowed between two characters that
 * are not ASCII or white space, where they shape what is around them, and
 * refused anywhere else, where they are only invisible ('ad‍min'); the same
 * review found Persian names refused.
 */
CREATE OR REPLACE FUNCTION tenantry.invisible_text(value text, lines boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT value ~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u00ad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060-\\u206f\\u2800\\u3164\\ufeff\\uffa0\\ufff0-\\ufffb\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a]'
        OR (NOT lines AND value ~ E'[\\t\\n\\r]')
        -- A joiner where it shapes nothing: at an end, or next to ASCII,
        -- white space (spelt out: \s follows the database's LC_CTYPE, and
        -- under C it is ASCII only), another joiner, or a letter of a
        -- script whose letters never join (Latin, Greek, Cyrillic, Armenian,
        -- Hebrew, Thai, Lao, Georgian, Hangul, Ethiopic, Cherokee, Coptic,
        -- kana, Bopomofo, CJK ideographs, full and half width forms).
        OR value ~ E'(^|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u200c\\u200d\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u0e00-\\u0eff\\u10a0-\\u10ff\\u1100-\\u11ff\\u1200-\\u139f\\u13a0-\\u13ff\\u1c80-\\u1c8f\\u1e00-\\u1fff\\u2c60-\\u2cff\\u2de0-\\u2dff\\u3040-\\u30ff\\u3100-\\u312f\\u3130-\\u318f\\u31a0-\\u31bf\\u3400-\\u4dbf\\u4e00-\\u9fff\\ua640-\\ua69f\\ua720-\\ua7ff\\uab30-\\uab6f\\uac00-\\ud7af\\uf900-\\ufaff\\uff00-\\uffef\\U00020000-\\U0003134f])[\\u200c\\u200d]|[\\u200c\\u200d]($|[\\x01-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u0e00-\\u0eff\\u10a0-\\u10ff\\u1100-\\u11ff\\u1200-\\u139f\\u13a0-\\u13ff\\u1c80-\\u1c8f\\u1e00-\\u1fff\\u2c60-\\u2cff\\u2de0-\\u2dff\\u3040-\\u30ff\\u3100-\\u312f\\u3130-\\u318f\\u31a0-\\u31bf\\u3400-\\u4dbf\\u4e00-\\u9fff\\ua640-\\ua69f\\ua720-\\ua7ff\\uab30-\\uab6f\\uac00-\\ud7af\\uf900-\\ufaff\\uff00-\\uffef\\U00020000-\\U0003134f])'
        -- A variation selector that selects nothing: at the start, or after
        -- ASCII (but a keycap's digit, # or *, followed by its U+20E3),
        -- white space, a joiner, another selector or a letter of those
        -- scripts but for ideographs and kana ('Admin\ufe0f' beside 'Admin').
        OR value ~ E'(^|[\\x01-\\x22\\x24-\\x29\\x2b-\\x2f\\x3a-\\x7f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u200c\\u200d\\ufe00-\\ufe0f\\u00c0-\\u02af\\u0370-\\u058f\\u0591-\\u05f4\\u0e00-\\u0eff\\u10a0-\\u10ff\\u1100-\\u11ff\\u1200-\\u139f\\u13a0-\\u13ff\\u1c80-\\u1c8f\\u1e00-\\u1fff\\u2c60-\\u2cff\\u2de0-\\u2dff\\u3130-\\u318f\\ua640-\\ua69f\\ua720-\\ua7ff\\uab30-\\uab6f\\uac00-\\ud7af\\uff00-\\uffef])[\\ufe00-\\ufe0f]|[0-9#*][\\ufe00-\\ufe0f](?!\\u20e3)'
        -- Tag characters, invisible, but for a subdivision's flag (U+1F3F4,
        -- two to six tags of its id, the cancel tag: '🏴󠁧󠁢󠁳󠁣󠁴󠁿'; UTS #51).
        OR regexp_replace(value, E'\\U0001f3f4[\\U000e0061-\\U000e007a]{2}[\\U000e0030-\\U000e0039\\U000e0061-\\U000e007a]{1,4}\\U000e007f', '', 'g') ~ E'[\\U000e0000-\\U000e007f]'
        -- Ideographic variation selectors, but after an ideograph.
        OR value ~ E'(^|[^\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff\\U00020000-\\U0003134f])[\\U000e0100-\\U000e01ef]'
$$;
COMMENT ON FUNCTION tenantry.invisible_text(text, boolean) IS 'Whether text holds a control or invisible character (with lines: tab and line breaks allowed); the zero-width joiner and non-joiner only count where they are invisible (at an end, or next to ASCII, white space or a letter of a script whose letters never join), variation selectors where they select nothing, tag characters outside a subdivision flag, ideographic variation selectors outside an ideograph. The rule of names (clean_name), descriptions and impersonation reasons.';
GRANT EXECUTE ON FUNCTION tenantry.invisible_text(text, boolean) TO tenantry_app, tenantry_admin;

/**
 * A name as stored: Unicode NFC (so "café" typed two ways is one name),
 * without leading or trailing Unicode white space (no-break and ideographic
 * spaces included). Control characters and invisible formatting characters
 * (zero-width, bidirectional overrides, soft hyphen, byte-order mark) are
 * refused with TN422 naming `field`: two names that look the same must be the
 * same name. Look-alike letters of different scripts are not folded.
 */
CREATE OR REPLACE FUNCTION tenantry.clean_name(value text, field text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- On the value as given: a control character at an end is refused, not
    -- trimmed, and a joiner beside the white space the trim takes is refused
    -- there (invisible_text names every space), never stored at an end.
    IF tenantry.invisible_text(value, false) THEN
        RAISE EXCEPTION '% must not contain control or invisible characters', field
            USING ERRCODE = 'TN422', HINT = field;
    END IF;
    -- Look-alike letters: a Latin letter directly next to a Cyrillic or Greek
    -- one (combining accents between them count as next), as in 'pаypal' with a
    -- Cyrillic 'а'. Words of different scripts side by side are fine
    -- ('Ivan Иванов'); whole-script look-alikes ('рау' in Cyrillic) are not
    -- caught (docs/security.md, known limits).
    IF value ~ E'[A-Za-z\\u00c0-\\u00d6\\u00d8-\\u00f6\\u00f8-\\u024f\\u1e00-\\u1eff][\\u0300-\\u036f]*[\\u0370-\\u03ff\\u0400-\\u052f\\u1f00-\\u1fff]'
       OR value ~ E'[\\u0370-\\u03ff\\u0400-\\u052f\\u1f00-\\u1fff][\\u0300-\\u036f]*[A-Za-z\\u00c0-\\u00d6\\u00d8-\\u00f6\\u00f8-\\u024f\\u1e00-\\u1eff]' THEN
        RAISE EXCEPTION '% must not mix Latin letters with Cyrillic or Greek ones in one word (look-alike letters)', field
            USING ERRCODE = 'TN422', HINT = field;
    END IF;
    -- Trimmed, and the other spaces inside it written as the ASCII one:
    -- 'Acme Corp' with a no-break space was a second 'Acme Corp' (found by a
    -- verification review).
    RETURN normalize(
        regexp_replace(
            regexp_replace(value,
                E'^[\\s\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000]+|[\\s\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000]+$',
                '', 'g'),
            E'[\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000]', ' ', 'g'),
        NFC);
END
$$;
COMMENT ON FUNCTION tenantry.clean_name(text, text) IS 'A name as stored: NFC, trimmed of Unicode white space, other spaces inside it written as U+0020; TN422 for control or invisible characters (tenantry.invisible_text: zero-width joiner and non-joiner allowed only where they shape letters), and for a word mixing Latin with Cyrillic or Greek letters (look-alikes). Used by the triggers on tenants, roles and members.';
GRANT EXECUTE ON FUNCTION tenantry.clean_name(text, text) TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- Tenants and their closure: who reads what
-- -----------------------------------------------------------------------------

CREATE POLICY tenant_self_and_descendants ON tenantry.tenants
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY tenant_self_and_descendants ON tenantry.tenants IS 'A tenant reads its own row and its descendants'' rows, never its parent''s or siblings''.';

-- The admin policies that read need the proven administrative context too:
-- the server's login may become tenantry_admin, so SQL run through the
-- library (an injection) read every tenant's name, settings and audit rows
-- with SET LOCAL ROLE tenantry_admin (found by an audit of a team's
-- service, 2026-12-03).
CREATE POLICY admin_all_tenants ON tenantry.tenants
    FOR SELECT TO tenantry_admin
    USING (tenantry.admin_context());
COMMENT ON POLICY admin_all_tenants ON tenantry.tenants IS 'Administrators read every tenant (they still cannot read resources), with a proven administrative context only.';

CREATE POLICY admin_manages_tenants ON tenantry.tenants
    FOR UPDATE TO tenantry_admin
    USING (tenantry.admin_context()) WITH CHECK (tenantry.admin_context());
COMMENT ON POLICY admin_manages_tenants ON tenantry.tenants IS 'Administrators change tenants (name, settings, status, parent) only with a proven administrative context: the server''s login may become tenantry_admin, and moving another tenant under one''s own would widen its subtree.';

-- Not schema_name: its unique index does not lead with tenant_id, so a tenant
-- role able to name the column could use it as an EXPLAIN ANALYZE oracle. A
-- tenant's own schema is current_tenant_schema().
GRANT SELECT (tenant_id, name, created_at, updated_at, settings, status, parent_id, isolation)
    ON tenantry.tenants TO tenantry_app;
GRANT SELECT ON tenantry.tenants TO tenantry_admin;
GRANT UPDATE (name, settings, status, parent_id) ON tenantry.tenants TO tenantry_admin;

CREATE POLICY hierarchy_within_subtree ON tenantry.tenant_hierarchy
    FOR SELECT TO tenantry_app
    USING (child_id = ANY (tenantry.visible_tenant_ids()) AND parent_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY hierarchy_within_subtree ON tenantry.tenant_hierarchy IS 'A tenant sees the closure rows inside its own subtree only.';

CREATE POLICY admin_whole_hierarchy ON tenantry.tenant_hierarchy
    FOR SELECT TO tenantry_admin USING (tenantry.admin_context());
COMMENT ON POLICY admin_whole_hierarchy ON tenantry.tenant_hierarchy IS 'Administrators read the whole hierarchy, with a proven administrative context only.';

GRANT SELECT ON tenantry.tenant_hierarchy TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- Audit log: append-only, written by the database.
-- -----------------------------------------------------------------------------

CREATE POLICY audit_own_tenant ON tenantry.audit_log
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY audit_own_tenant ON tenantry.audit_log IS 'A tenant reads only its own audit rows.';
-- The table's comment as it is now (0002 wrote 'Never updated or deleted'
-- before the log had a retention and purges took a tenant's events).
COMMENT ON TABLE tenantry.audit_log IS 'Append-only record of security-relevant changes (keys, roles, permissions, shares, tenants, exports and imports), written by triggers and tenantry''s functions: the server''s roles cannot change or delete its rows, and a trigger refuses UPDATE and DELETE to the owner too, but for tenantry.expire_audit_log() (the migration role''s retention) and a tenant''s purge (purge_tenant(), that tenant''s events). The owner and superusers can turn that trigger off: against them, only a copy kept elsewhere is evidence.';

CREATE POLICY admin_all_audit ON tenantry.audit_log
    FOR SELECT TO tenantry_admin USING (tenantry.admin_context());
COMMENT ON POLICY admin_all_audit ON tenantry.audit_log IS 'Administrators read every tenant''s audit rows, with a proven administrative context only.';

-- Not audit_id: it comes from a sequence all tenants share, so the gaps between
-- a tenant's own ids would count other tenants' events. Tenants see event_id.
GRANT SELECT (tenant_id, event_id, occurred_at, actor, action, target_type, target_id, details, impersonator)
    ON tenantry.audit_log TO tenantry_app;
GRANT SELECT ON tenantry.audit_log TO tenantry_admin;

/** Refuses UPDATE and DELETE on audit_log (and operator_audit_log) for everyone, the owner included. */
CREATE OR REPLACE FUNCTION tenantry.audit_log_is_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'TN403';
END
$$;
COMMENT ON FUNCTION tenantry.audit_log_is_append_only() IS 'Trigger: audit_log and operator_audit_log rows can be neither updated nor deleted.';
CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON tenantry.audit_log
    FOR EACH ROW EXECUTE FUNCTION tenantry.audit_log_is_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON tenantry.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.audit_log_is_append_only();

-- -----------------------------------------------------------------------------
-- The operator's audit log (0061): what was done to every tenant at once.
-- -----------------------------------------------------------------------------

CREATE POLICY admin_reads_operator_audit ON tenantry.operator_audit_log
    FOR SELECT TO tenantry_admin USING (tenantry.admin_context());
COMMENT ON POLICY admin_reads_operator_audit ON tenantry.operator_audit_log IS 'Administrators read the operator''s audit log, with a proven administrative context only; only tenantry''s functions (write_operator_audit, as the owner) write it.';
GRANT SELECT ON tenantry.operator_audit_log TO tenantry_admin;
CREATE OR REPLACE TRIGGER operator_audit_log_append_only
    BEFORE UPDATE OR DELETE ON tenantry.operator_audit_log
    FOR EACH ROW EXECUTE FUNCTION tenantry.audit_log_is_append_only();
CREATE OR REPLACE TRIGGER operator_audit_log_no_truncate
    BEFORE TRUNCATE ON tenantry.operator_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.audit_log_is_append_only();

/**
 * Appends one row to the operator's audit log; the actor comes from the
 * session (current_actor: the CLI's cli:<name>, the admin context's admin,
 * else db:<session user>). Called by the functions that change what every
 * tenant lives under, each when it changed something (adopting a table
 * again as before writes nothing), and by the trigger of the policies
 * operators change with plain SQL (policy_changed_audit), which on Citus,
 * where a reference table's trigger fires on every node's copy of it,
 * writes on the coordinator only, where this log stays.
 */
CREATE OR REPLACE FUNCTION tenantry.write_operator_audit(
    p_action text, p_target_type text, p_target_id text, p_details jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tenantry.operator_audit_log (actor, action, target_type, target_id, details)
    VALUES (tenantry.current_actor(), p_action, p_target_type, p_target_id, coalesce(p_details, '{}'));
END
$$;
COMMENT ON FUNCTION tenantry.write_operator_audit(text, text, text, jsonb) IS 'Internal: appends a row to the operator''s audit log as the owner, the actor from the session. Called by adopt_table, release_table, alter_tenant_table, define_permission, add_context_key, retire_context_key, expire_audit_log and the policies'' trigger (policy_changed_audit); not granted to anyone (operators reach it as members of its owner).';

/**
 * Row trigger on the one-row policies operators change with plain SQL
 * (tenantry.signup_policy: whether and how many tenants signed-in people
 * create; tenantry.purge_policy: the grace period before a deleted tenant
 * may be purged): records policy.changed in the operator's audit log, with
 * the columns that changed before and after, when any did. Without it a
 * change of who may sign up left no trace but the database's own log. On
 * Citus the policies are reference tables whose every copy fires it: only
 * the coordinator's records (on_citus_worker()).
 */
CREATE OR REPLACE FUNCTION tenantry.policy_changed_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    before jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) - 'singleton' END;
    after jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) - 'singleton' END;
    changed text[];
BEGIN
    IF tenantry.on_citus_worker() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        -- The row is gone with no OLD to show; without it the policies are
        -- their defaults (no sign-up; a purge waits 30 days).
        PERFORM tenantry.write_operator_audit('policy.changed', 'policy', TG_TABLE_NAME,
                                              jsonb_build_object('operation', 'truncate'));
        RETURN NULL;
    END IF;
    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO changed
      FROM (SELECT jsonb_object_keys(coalesce(before, '{}') || coalesce(after, '{}')) AS k) keys
     WHERE before -> k IS DISTINCT FROM after -> k;
    IF cardinality(changed) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM tenantry.write_operator_audit(
        'policy.changed', 'policy', TG_TABLE_NAME,
        jsonb_build_object('operation', lower(TG_OP),
                           'before', (SELECT jsonb_object_agg(k, before -> k) FROM unnest(changed) k WHERE before IS NOT NULL),
                           'after', (SELECT jsonb_object_agg(k, after -> k) FROM unnest(changed) k WHERE after IS NOT NULL)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.policy_changed_audit() IS 'Trigger: records policy.changed (the policy table''s name, the columns that changed before and after) in the operator''s audit log when an operator changes signup_policy or purge_policy with plain SQL; nothing when no value changed, and only on the coordinator on Citus. Not granted.';

CREATE OR REPLACE TRIGGER signup_policy_audited
    AFTER INSERT OR UPDATE OR DELETE ON tenantry.signup_policy
    FOR EACH ROW EXECUTE FUNCTION tenantry.policy_changed_audit();
COMMENT ON TRIGGER signup_policy_audited ON tenantry.signup_policy IS 'A change of whether and how many tenants signed-in people create is recorded in the operator''s audit log (policy_changed_audit).';
CREATE OR REPLACE TRIGGER purge_policy_audited
    AFTER INSERT OR UPDATE OR DELETE ON tenantry.purge_policy
    FOR EACH ROW EXECUTE FUNCTION tenantry.policy_changed_audit();
COMMENT ON TRIGGER purge_policy_audited ON tenantry.purge_policy IS 'A change of the grace period before a deleted tenant may be purged is recorded in the operator''s audit log (policy_changed_audit).';
CREATE OR REPLACE TRIGGER signup_policy_truncate_audited
    AFTER TRUNCATE ON tenantry.signup_policy
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.policy_changed_audit();
COMMENT ON TRIGGER signup_policy_truncate_audited ON tenantry.signup_policy IS 'Emptying the sign-up policy (TRUNCATE, which row triggers do not see) is recorded in the operator''s audit log (policy_changed_audit).';
CREATE OR REPLACE TRIGGER purge_policy_truncate_audited
    AFTER TRUNCATE ON tenantry.purge_policy
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.policy_changed_audit();
COMMENT ON TRIGGER purge_policy_truncate_audited ON tenantry.purge_policy IS 'Emptying the purge policy (TRUNCATE, which row triggers do not see) is recorded in the operator''s audit log (policy_changed_audit).';

/**
 * Keeps the audit log to a retention period: deletes rows that occurred
 * more than `older_than` ago (at least a day), at most `max_rows` of them,
 * each tenant's oldest first, then the operator's log's, and returns how
 * many; call it until it returns 0. Each call that deleted rows says so in
 * the operator's log (audit_log.expired), so the log's shortening is on
 * record too. The log is append-only for every role, the owner's included
 * (audit_log_append_only): this is its one way out, for the role that runs
 * the migrations (a superuser or a member of tenantry_owner), never for the
 * server's roles, which could otherwise erase what was done through them.
 * Every tenant generates rows at the rate it writes, and nothing else bounds
 * them (found by a review as a hostile tenant). Row locks only; each
 * tenant's rows through its (tenant_id, occurred_at) index.
 */
CREATE OR REPLACE FUNCTION tenantry.expire_audit_log(older_than interval, max_rows integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz;
    n bigint;
    operator_rows bigint := 0;
BEGIN
    cutoff := now() - older_than;
    -- The cutoff itself, not the interval: an interval compares with a month
    -- as 30 days, and '-2 mons +61 days' passed `>= 1 day` while its cutoff
    -- was tomorrow (found by a verification review: it deleted the whole log).
    IF cutoff IS NULL OR cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'older_than must reach at least 1 day back' USING ERRCODE = 'TN422', HINT = 'older_than';
    ELSIF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'TN422', HINT = 'max_rows';
    END IF;
    -- The append-only trigger, off for this delete alone (as purge_tenant).
    PERFORM set_config('session_replication_role', 'replica', true);
    DELETE FROM tenantry.audit_log a
    USING (SELECT o.tenant_id, o.audit_id
           FROM tenantry.tenants t
           CROSS JOIN LATERAL (SELECT x.tenant_id, x.audit_id FROM tenantry.audit_log x
                               WHERE x.tenant_id = t.tenant_id AND x.occurred_at < cutoff
                               ORDER BY x.occurred_at LIMIT max_rows) o
           LIMIT max_rows) old
    WHERE a.tenant_id = old.tenant_id AND a.audit_id = old.audit_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Then the operator's log, within what is left of max_rows.
    IF n < max_rows THEN
        DELETE FROM tenantry.operator_audit_log a
        WHERE a.event_id IN (SELECT o.event_id FROM tenantry.operator_audit_log o
                             WHERE o.occurred_at < cutoff ORDER BY o.occurred_at LIMIT max_rows - n);
        GET DIAGNOSTICS operator_rows = ROW_COUNT;
    END IF;
    PERFORM set_config('session_replication_role', 'origin', true);
    IF n + operator_rows > 0 THEN
        PERFORM tenantry.write_operator_audit('audit_log.expired', 'audit_log', NULL,
            jsonb_build_object('older_than', older_than::text, 'cutoff', tenantry.rfc3339(cutoff),
                               'tenant_rows', n, 'operator_rows', operator_rows));
    END IF;
    RETURN n + operator_rows;
END
$$;
COMMENT ON FUNCTION tenantry.expire_audit_log(interval, integer) IS 'Deletes audit rows (tenants'', then the operator''s log''s) older than older_than (at least 1 day), at most max_rows per call (call until 0), and records each call that deleted any in the operator''s log (audit_log.expired); for the migration role (superuser or tenantry_owner member) only: the server''s roles cannot shorten the log.';
GRANT EXECUTE ON FUNCTION tenantry.expire_audit_log(interval, integer) TO tenantry_owner;

/**
 * Appends one audit row; the actor comes from the transaction context.
 * PL/pgSQL, not SQL: an SQL function with a SET clause is never inlined, and
 * PostgreSQL parses and plans its INSERT again in every statement that calls
 * it (2.5x the cost of a whole audited call, measured); PL/pgSQL keeps the
 * plan for the session.
 */
CREATE OR REPLACE FUNCTION tenantry.write_audit(
    p_tenant_id uuid, p_action text, p_target_type text, p_target_id text, p_details jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tenantry.audit_log (tenant_id, actor, impersonator, action, target_type, target_id, details)
    VALUES (p_tenant_id, tenantry.current_actor(), tenantry.current_impersonator(), p_action, p_target_type, p_target_id,
            coalesce(p_details, '{}'));
END
$$;
COMMENT ON FUNCTION tenantry.write_audit(uuid, text, text, text, jsonb) IS 'Internal: appends an audit row (actor, and the impersonator when someone acts as the member) as the owner. Called by audit triggers only; not granted to anyone.';

/**
 * Audits a share declined by its target (decline_share, decline_row_share):
 * `share.declined` in the owner's log, its actor the target tenant (not its
 * key or member: another tenant's actors are not the owner's to read), and
 * in the target's log with its own actor. `details` gains `shared_with` in
 * the owner's row and `owner` in the target's.
 */
CREATE OR REPLACE FUNCTION tenantry.audit_share_declined(owner_id uuid, target_tenant uuid, p_target_type text, p_target text, p_details jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tenantry.audit_log (tenant_id, actor, action, target_type, target_id, details)
    VALUES (owner_id, 'tenant:' || target_tenant, 'share.declined', p_target_type, p_target,
            p_details || jsonb_build_object('shared_with', target_tenant));
    PERFORM tenantry.write_audit(target_tenant, 'share.declined', p_target_type, p_target,
        p_details || jsonb_build_object('owner', owner_id));
END
$$;
COMMENT ON FUNCTION tenantry.audit_share_declined(uuid, uuid, text, text, jsonb) IS 'Internal: audits a share declined by its target in both tenants'' logs (the owner''s naming the target tenant as actor). Called by the share audit triggers only; not granted.';

-- -----------------------------------------------------------------------------
-- Tenant triggers: lifecycle, hierarchy closure, audit.
-- -----------------------------------------------------------------------------

/**
 * Tries for the hierarchy lock (shared, or exclusively) `attempts` times,
 * 10 ms apart, never queueing for it: false when it stayed taken. Moves
 * (lock_hierarchy_for_move) and shares (share_maker_reaches) take it so.
 */
CREATE OR REPLACE FUNCTION tenantry.try_hierarchy_lock(shared boolean, attempts integer)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken boolean;
BEGIN
    FOR attempt IN 1..attempts LOOP
        IF shared THEN
            taken := pg_try_advisory_xact_lock_shared(hashtext('tenantry.tenant_hierarchy'));
        ELSE
            taken := pg_try_advisory_xact_lock(hashtext('tenantry.tenant_hierarchy'));
        END IF;
        IF taken THEN
            RETURN true;
        END IF;
        IF attempt < attempts THEN
            PERFORM pg_sleep(0.01);
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION tenantry.try_hierarchy_lock(boolean, integer) IS 'Internal (lock_hierarchy_for_move, share_maker_reaches): tries for the hierarchy lock, shared or exclusively, that many times 10 ms apart without queueing; false when it stayed taken. Not granted.';

/**
 * The hierarchy lock a move takes (any change of a tenant's parent, to a
 * root too), exclusively: moves serialise with each other and with
 * creations of children (which share it), so no closure is extended from
 * ancestors that are moving meanwhile. For up to 5 s a move tries for it
 * between the creations for 300 ms without queueing, then waits in the
 * lock's queue for 100 ms at most, and again. PostgreSQL queues a shared
 * request behind a waiting exclusive one: a wait without a bound would
 * hold every tenant's child creation behind one tenant's long transaction
 * that made a child, and these waits hold a creation 100 ms at most. Without
 * them, a steady stream of creations by many tenants, each within its
 * rate, left no gap between them (found by a contention review: half of an
 * operator's moves answered 503 after 21 s while 32 tenants created
 * children); in the queue, the move comes next once the creations holding
 * the lock end. Then 55P03 naming the tenant (retried, or 503).
 */
CREATE OR REPLACE FUNCTION tenantry.lock_hierarchy_for_move(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller_wait text := current_setting('lock_timeout');
    give_up timestamptz := clock_timestamp() + interval '5 s';
BEGIN
    LOOP
        IF tenantry.try_hierarchy_lock(false, 30) THEN
            RETURN;
        END IF;
        EXIT WHEN clock_timestamp() >= give_up;
        PERFORM set_config('lock_timeout', '100ms', true);
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('tenantry.tenant_hierarchy'));
            PERFORM set_config('lock_timeout', caller_wait, true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', caller_wait, true);
        END;
        EXIT WHEN clock_timestamp() >= give_up;
    END LOOP;
    RAISE EXCEPTION 'the tenant hierarchy stayed locked by child creations or another move for 5 s; the move of tenant % was not made', tid
        USING ERRCODE = '55P03',
              HINT = 'retry the move; a transaction that made a child tenant or shared a row holds the lock until it ends: a superuser finds one kept open in pg_stat_activity joined to pg_locks (locktype advisory), and ends it with pg_terminate_backend';
END
$$;
COMMENT ON FUNCTION tenantry.lock_hierarchy_for_move(uuid) IS 'Internal: the exclusive hierarchy lock of a move (tenants_before_write, for any change of parent_id): for up to 5 s, tried for 300 ms between creations without queueing, then waited for in the queue for 100 ms at most (a creation waits behind it that long at most), and again; 55P03 naming the tenant then. Not granted.';

/** The most a tenant's settings.metadata may hold, as JSON text: 16 KiB. */
CREATE OR REPLACE FUNCTION tenantry.metadata_max_bytes()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 16384 $$;
COMMENT ON FUNCTION tenantry.metadata_max_bytes() IS 'The most a tenant''s settings.metadata may hold, as JSON text (16 KiB): checked by tenants_before_write where metadata is written.';

/** Checks a tenant row before it is written: lifecycle, parent and cycles. */
CREATE OR REPLACE FUNCTION tenantry.tenants_before_write()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent_status text;
BEGIN
    -- A name written anew only: one stored under an older rule stays as it
    -- is while the tenant is suspended, deleted or reconfigured (a
    -- verification review: such a tenant could no longer be suspended).
    IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
        NEW.name := tenantry.clean_name(NEW.name, 'name');
    END IF;
    -- The guide's tenants.settings is nullable: NULL means no settings.
    NEW.settings := coalesce(NEW.settings, '{}');
    -- On Citus this fires once per copy of the tenants reference table. A
    -- worker's copy takes the row as the coordinator's does (same name, same
    -- times); the checks read other tables and run on the coordinator only.
    IF tenantry.on_citus_worker() THEN
        IF TG_OP = 'UPDATE' THEN
            NEW.created_at := OLD.created_at;
            NEW.updated_at := tenantry.write_time();
        END IF;
        RETURN NEW;
    END IF;
    -- Free-form, but not free: a tenant key may write its children's
    -- metadata, and nothing counts it against a quota (an outside review
    -- stored 100 MB through one tenant's 98 children, then made every
    -- listing of them read it). Checked where it changes only: a tenant
    -- holding more from before keeps it until its metadata is next written.
    IF (TG_OP = 'INSERT' OR NEW.settings->'metadata' IS DISTINCT FROM OLD.settings->'metadata')
       AND octet_length((NEW.settings->'metadata')::text) > tenantry.metadata_max_bytes() THEN
        RAISE EXCEPTION 'settings.metadata must be at most % bytes as JSON (it is %)',
            tenantry.metadata_max_bytes(), octet_length((NEW.settings->'metadata')::text)
            USING ERRCODE = 'TN422', HINT = 'settings.metadata';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = 'deleted' THEN
            -- Its schema still takes the team's tenant-schema steps during
            -- the grace period (migrate_tenant_schema records the version),
            -- so that it can be exported and tenantry migrate goes on past
            -- it; nothing else of it changes, its times included.
            IF NEW.schema_version IS NOT DISTINCT FROM OLD.schema_version
               OR (to_jsonb(NEW) - 'schema_version') IS DISTINCT FROM (to_jsonb(OLD) - 'schema_version') THEN
                RAISE EXCEPTION 'tenant % is deleted', OLD.tenant_id USING ERRCODE = 'TN409';
            END IF;
            RETURN NEW;
        END IF;
        IF NEW.tenant_id <> OLD.tenant_id THEN
            RAISE EXCEPTION 'tenant_id cannot change' USING ERRCODE = 'TN422', HINT = 'tenant_id';
        END IF;
        NEW.created_at := OLD.created_at;
        NEW.updated_at := tenantry.write_time();
        IF NEW.status = 'deleted' THEN
            -- The row FOR UPDATE, the one lock FOR KEY SHARE waits for: a
            -- share made with this tenant (hold_share_tenant, 03_resources.sql)
            -- holds its row FOR KEY SHARE until it commits, and the deletion
            -- waits for it here, so that its trigger revokes that share too;
            -- a share that comes later waits for the deletion and finds the
            -- tenant deleted. (This UPDATE alone locks the row FOR NO KEY
            -- UPDATE, which such a share does not wait for, nor it for the
            -- share: so that a tier move, which locks its tenant's row the
            -- same way, is never held back by another tenant's open share.)
            -- Not on a Citus cluster, as for the parent's row below.
            IF to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT tenantry.citus_distributed() THEN
                PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = NEW.tenant_id FOR UPDATE;
            END IF;
            -- The hierarchy lock, shared as a creation takes it: the deletion
            -- takes the tenant out of its ancestors' counts (09_limits.sql),
            -- which a concurrent move was rewriting; both subtracted it, and
            -- the counts drifted low (found by a contention re-audit). Moves
            -- take it exclusively, and never wait in its queue.
            PERFORM pg_advisory_xact_lock_shared(hashtext('tenantry.tenant_hierarchy'));
            IF EXISTS (
                -- Children through the closure table: tenants has no index on
                -- parent_id (a tenant role could probe it, issue 10 finding 8).
                SELECT 1 FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants c ON c.tenant_id = h.child_id
                WHERE h.parent_id = NEW.tenant_id AND h.depth = 1 AND c.status <> 'deleted'
            ) THEN
                RAISE EXCEPTION 'tenant % still has children that are not deleted', NEW.tenant_id
                    USING ERRCODE = 'TN409', HINT = 'delete or move its children first';
            END IF;
            -- A deleted tenant can be neither moved on nor given back its tier
            -- (nothing changes a deleted tenant), nor purged while a move is
            -- under way: the move ends first.
            IF OLD.moving_to IS NOT NULL THEN
                RAISE EXCEPTION 'tenant % is being moved to the % tier: finish or abort the move before deleting it', NEW.tenant_id, OLD.moving_to
                    USING ERRCODE = 'TN409', HINT = 'tenantry tenant move <tenant> --abort (or run the move to its end)';
            END IF;
        END IF;
    END IF;
    -- Made a root: no parent row to hold, but the same lock as any move
    -- (without it, a move under its old subtree extended the closure this
    -- move was cutting, and the old ancestors kept the mover's rows).
    IF TG_OP = 'UPDATE' AND NEW.parent_id IS NULL AND OLD.parent_id IS NOT NULL THEN
        PERFORM tenantry.lock_hierarchy_for_move(NEW.tenant_id);
    END IF;
    IF NEW.parent_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.parent_id IS DISTINCT FROM OLD.parent_id) THEN
        -- The parent's row FOR SHARE, first: the parent's deletion (an UPDATE
        -- of its row) waits for this child to commit, then finds it and
        -- refuses; or this waits for the deletion and finds the parent
        -- deleted. (Read without the lock, both committed and left a live
        -- child under a deleted parent.) Before the hierarchy lock below, so
        -- that a creation never holds that lock while it waits for a row a
        -- move holds.
        IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL AND tenantry.citus_distributed() THEN
            -- Not on a Citus cluster: there FOR SHARE on the tenants reference
            -- table locks its whole shard, which every tenant's INSERT holds
            -- a conflicting lock on (concurrent creations deadlocked). The
            -- race with a deletion stays open there (docs/scale-out.md).
            SELECT status INTO parent_status FROM tenantry.tenants WHERE tenant_id = NEW.parent_id;
        ELSE
            SELECT status INTO parent_status FROM tenantry.tenants WHERE tenant_id = NEW.parent_id FOR SHARE;
        END IF;
        -- Serialise re-parenting so two concurrent moves cannot build a cycle,
        -- and so a new tenant's closure and counts (09_limits.sql) are taken
        -- from ancestors that do not move meanwhile. A new tenant has no
        -- descendants and cannot close a cycle: creations share the lock, so
        -- tenants creating children never queue on each other, only on a move.
        IF TG_OP = 'INSERT' THEN
            PERFORM pg_advisory_xact_lock_shared(hashtext('tenantry.tenant_hierarchy'));
        ELSE
            PERFORM tenantry.lock_hierarchy_for_move(NEW.tenant_id);
        END IF;
        -- The operator, who sees deleted tenants, is told so (found by an
        -- operator's audit: "not found" for a tenant they could show); a
        -- tenant's caller gets the answer of a tenant that does not exist.
        IF parent_status = 'deleted' AND (tenantry.admin_context() OR tenantry.operator_session()) THEN
            RAISE EXCEPTION 'parent tenant % is deleted: a tenant cannot be created or moved under it', NEW.parent_id
                USING ERRCODE = 'TN409', HINT = 'parent_id';
        END IF;
        IF parent_status IS NULL OR parent_status = 'deleted' THEN
            RAISE EXCEPTION 'parent tenant % not found', NEW.parent_id USING ERRCODE = 'TN404', HINT = 'parent_id';
        END IF;
        IF NEW.parent_id = NEW.tenant_id THEN
            RAISE EXCEPTION 'a tenant cannot be its own parent' USING ERRCODE = 'TN422', HINT = 'parent_id';
        END IF;
        IF TG_OP = 'UPDATE' AND EXISTS (
            SELECT 1 FROM tenantry.tenant_hierarchy
            WHERE parent_id = NEW.tenant_id AND child_id = NEW.parent_id
        ) THEN
            RAISE EXCEPTION 'moving tenant % under % would create a cycle', NEW.tenant_id, NEW.parent_id
                USING ERRCODE = 'TN409', HINT = 'parent_id';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_before_write() IS 'Trigger: cleans the name, takes NULL settings as none ({}, the guide''s column is nullable), refuses settings.metadata written larger than metadata_max_bytes() (TN422), enforces the status lifecycle (no deletion with live children or while a tier move is under way; a deletion takes its row FOR UPDATE, waiting for open shares with the tenant), an existing live parent (its row held FOR SHARE, so that its concurrent deletion cannot leave the new child behind), and rejects self-parenting and cycles.';

/**
 * After `tid` moved, with the closure as it is now: ends every live
 * impersonation in its subtree that was started from a tenant which is no
 * longer the session's own or one of its ancestors (migration 0053 records
 * it). verify_impersonation refuses such a session anyway; ending it keeps
 * it from coming back when the subtree is moved back (found by a
 * verification review) and from counting toward the tenant's 100 live
 * sessions. One statement per tenant of the subtree, by its tenant_id.
 */
CREATE OR REPLACE FUNCTION tenantry.end_impersonations_past_hierarchy(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    member uuid;
    reach uuid[];
    at timestamptz := now();
BEGIN
    FOR member IN SELECT h.child_id FROM tenantry.tenant_hierarchy h WHERE h.parent_id = tid ORDER BY h.child_id LOOP
        reach := ARRAY(SELECT a.parent_id FROM tenantry.tenant_hierarchy a WHERE a.child_id = member);
        UPDATE tenantry.impersonations i SET ended_at = at
        WHERE i.tenant_id = member AND i.ended_at IS NULL
          AND i.impersonator_tenant IS NOT NULL AND i.impersonator_tenant <> ALL (reach);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.end_impersonations_past_hierarchy(uuid) IS 'Internal (tenants_after_write, on re-parenting): ends the live impersonations in the moved subtree started from a tenant that is no longer the session''s own or an ancestor of it (0053). Not granted.';

/**
 * After `tid` moved (detached, or under another parent), with the closure as
 * it is now: revokes every share of a resource or row owned in its subtree
 * that was made by a tenant which no longer reads it through the hierarchy
 * (a former ancestor: the share named a tenant it may control, and through
 * it the former ancestor kept reading the subtree's data). Shares made by
 * the owner itself, by an ancestor it keeps, or before migration 0045 (no
 * maker recorded) stay. Each owner's row is held as its deletion's
 * revocation holds it (tenants_revoke_shares_on_delete), so that a batch of
 * its move between tiers cannot move a row from under the revocation.
 */
CREATE OR REPLACE FUNCTION tenantry.revoke_shares_past_hierarchy(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner uuid;
    makers uuid[];
    gone record;
    tiers boolean := to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT tenantry.citus_distributed();
BEGIN
    FOR owner IN SELECT h.child_id FROM tenantry.tenant_hierarchy h WHERE h.parent_id = tid ORDER BY h.child_id LOOP
        -- The owner and its ancestors as they are now (depth 0: itself).
        makers := ARRAY(SELECT a.parent_id FROM tenantry.tenant_hierarchy a WHERE a.child_id = owner);
        IF NOT EXISTS (SELECT 1 FROM tenantry.shared_resources s
                       WHERE s.tenant_id = owner AND s.shared_by_tenant <> ALL (makers))
           AND NOT EXISTS (SELECT 1 FROM tenantry.shared_rows s
                           WHERE s.tenant_id = owner AND s.shared_by_tenant <> ALL (makers)) THEN
            CONTINUE;
        END IF;
        IF tiers AND owner <> tid THEN
            PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = owner FOR SHARE;
        END IF;
        FOR gone IN
            DELETE FROM tenantry.shared_resources s
            WHERE s.tenant_id = owner AND s.shared_by_tenant <> ALL (makers)
            RETURNING s.resource_id, s.shared_with
        LOOP
            EXECUTE format('UPDATE %s SET shared_with = array_remove(shared_with, $3)
                            WHERE tenant_id = $1 AND id = $2',
                           tenantry.resources_relation(owner))
            USING owner, gone.resource_id, gone.shared_with;
        END LOOP;
        DELETE FROM tenantry.shared_rows s
        WHERE s.tenant_id = owner AND s.shared_by_tenant <> ALL (makers);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_shares_past_hierarchy(uuid) IS 'Internal (tenants_after_write, on re-parenting): revokes the shares of resources and adopted tables'' rows owned in the moved subtree that were made by a tenant no longer the owner or one of its ancestors (shares made before migration 0045 record no maker and stay). Not granted.';

/** Maintains tenant_hierarchy and writes the tenant audit rows. */
CREATE OR REPLACE FUNCTION tenantry.tenants_after_write()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Citus: once, from the coordinator's copy of the tenants reference table
    -- (a worker's copy of the row fires it too; on_citus_worker()).
    IF tenantry.on_citus_worker() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- Two statements, not one INSERT ... SELECT ... UNION ALL: Citus
        -- prunes such a statement to no shard at all when the ancestors'
        -- branch cannot match (a root tenant's NULL parent), and the tenant's
        -- own row went missing with it.
        INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
        VALUES (NEW.tenant_id, NEW.tenant_id, 0);
        IF NEW.parent_id IS NOT NULL THEN
            INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
            SELECT h.parent_id, NEW.tenant_id, h.depth + 1
            FROM tenantry.tenant_hierarchy h
            WHERE h.child_id = NEW.parent_id;
        END IF;
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.created', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('name', NEW.name, 'parent_id', NEW.parent_id, 'isolation', NEW.isolation));
        IF NEW.parent_id IS NOT NULL THEN
            PERFORM tenantry.write_audit(NEW.parent_id, 'tenant.child_created', 'tenant', NEW.tenant_id::text,
                jsonb_build_object('name', NEW.name));
        END IF;
        RETURN NULL;
    END IF;

    IF NEW.parent_id IS DISTINCT FROM OLD.parent_id THEN
        -- Detach the subtree from its old ancestors ...
        DELETE FROM tenantry.tenant_hierarchy h
        USING tenantry.tenant_hierarchy sub, tenantry.tenant_hierarchy anc
        WHERE sub.parent_id = NEW.tenant_id
          AND anc.child_id = NEW.tenant_id AND anc.depth > 0
          AND h.parent_id = anc.parent_id AND h.child_id = sub.child_id;
        -- ... and attach it under the new parent's ancestors. A duplicate closure
        -- row means one statement moved several tenants into a loop (the BEFORE
        -- check sees the closure as it was when the statement started).
        BEGIN
            INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
            SELECT anc.parent_id, sub.child_id, anc.depth + sub.depth + 1
            FROM tenantry.tenant_hierarchy anc, tenantry.tenant_hierarchy sub
            WHERE anc.child_id = NEW.parent_id AND sub.parent_id = NEW.tenant_id;
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'moving tenant % under % would create a cycle', NEW.tenant_id, NEW.parent_id
                USING ERRCODE = 'TN409', HINT = 'parent_id';
        END;
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.reparented', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.parent_id, 'to', NEW.parent_id));
        -- No share outlives the hierarchy it came from: a former ancestor's
        -- shares of the subtree's rows end here.
        PERFORM tenantry.revoke_shares_past_hierarchy(NEW.tenant_id);
        -- Nor an impersonation started from a former ancestor (0053): ended
        -- for good, not only refused while the move lasts.
        PERFORM tenantry.end_impersonations_past_hierarchy(NEW.tenant_id);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tenantry.write_audit(NEW.tenant_id,
            CASE NEW.status WHEN 'active' THEN 'tenant.activated'
                            WHEN 'suspended' THEN 'tenant.suspended'
                            ELSE 'tenant.deleted' END,
            'tenant', NEW.tenant_id::text, jsonb_build_object('from', OLD.status, 'to', NEW.status));
    END IF;
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.renamed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.name, 'to', NEW.name));
    END IF;
    IF NEW.settings IS DISTINCT FROM OLD.settings THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.settings_changed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.settings, 'to', NEW.settings));
    END IF;
    IF NEW.isolation IS DISTINCT FROM OLD.isolation THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.isolation_changed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.isolation, 'to', NEW.isolation));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_after_write() IS 'Trigger: maintains the tenant_hierarchy closure on insert and re-parenting, and audits tenant changes.';

CREATE OR REPLACE TRIGGER tenants_before_write
    BEFORE INSERT OR UPDATE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_before_write();
CREATE OR REPLACE TRIGGER tenants_after_write
    AFTER INSERT OR UPDATE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_after_write();

/**
 * The gate of the administrative functions that change tenants: a proven
 * administrative context (admin_context(), the admin_manages_tenants
 * policy's condition) or a trusted operator's session; 42501 naming `what`
 * otherwise.
 */
CREATE OR REPLACE FUNCTION tenantry.require_admin_context(what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (tenantry.admin_context() OR tenantry.operator_session()) THEN
        RAISE EXCEPTION '% needs a proven administrative context', what USING ERRCODE = '42501';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.require_admin_context(text) IS 'Internal: 42501 ("<what> needs a proven administrative context") unless the transaction has a proven administrative context or the session is a trusted operator''s. Not granted.';

/**
 * Re-parents a tenant (parent NULL: a root) and answers its row; no row for
 * an unknown tenant, TN409 for a cycle (tenants_before_write,
 * tenants_after_write). The gate is the admin_manages_tenants policy's: a
 * proven administrative context (or an operator's session). The update and
 * the closure rows its trigger rewrites are written by one role: on Citus a
 * re-parenting written as tenantry_admin whose trigger rewrote the closure as
 * the owner met itself as a distributed deadlock on the reference tables.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_parent(tid uuid, parent uuid)
RETURNS SETOF tenantry.tenants
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    waited text := current_setting('lock_timeout');
BEGIN
    PERFORM tenantry.require_admin_context('re-parenting a tenant');
    -- The hierarchy lock first, holding nothing while it is tried and waited for (the
    -- trigger's own call then finds it held). Taken in the trigger alone,
    -- after the UPDATE had locked the tenant's row, a move that tried for it
    -- held that row meanwhile, a wait the deadlock detector cannot see: a
    -- share or deletion waiting on the row and a move holding the lock and
    -- waiting on that share's counter row stalled each other, and every
    -- child creation behind them, for 5 s (found by a contention re-audit).
    -- Under the lock, the rows it then needs (the tenant's, held by its own
    -- writers; the new parent's; limit counters) are waited for 100 ms at
    -- most (55P03: retried, or 503), so that no creation waits longer on a
    -- move than that.
    PERFORM tenantry.lock_hierarchy_for_move(tid);
    -- Not on a Citus cluster, where the UPDATE of the tenants reference
    -- table waits on every node for locks that tenants' writes hold there.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT tenantry.citus_distributed() THEN
        PERFORM set_config('lock_timeout', '100ms', true);
    END IF;
    RETURN QUERY
        UPDATE tenantry.tenants t SET parent_id = parent WHERE t.tenant_id = tid RETURNING t.*;
    PERFORM set_config('lock_timeout', waited, true);
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_parent(uuid, uuid) IS 'Admin: moves a tenant under another (NULL: makes it a root), with its subtree; answers the tenant''s row, none for an unknown tenant; TN409 for a cycle. Takes the hierarchy lock before any row, then waits 100 ms at most for each row it needs (55P03). Needs a proven administrative context (or an operator''s session), like the admin_manages_tenants policy.';
GRANT EXECUTE ON FUNCTION tenantry.set_tenant_parent(uuid, uuid) TO tenantry_admin;

/** Refuses hard deletes: a tenant is deleted by setting its status. */
CREATE OR REPLACE FUNCTION tenantry.tenants_no_hard_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'tenants are deleted by setting status = ''deleted''; rows are kept' USING ERRCODE = 'TN409';
END
$$;
COMMENT ON FUNCTION tenantry.tenants_no_hard_delete() IS 'Trigger: tenants are soft-deleted (status deleted) so that audit and usage history stay intact.';
CREATE OR REPLACE TRIGGER tenants_no_hard_delete
    BEFORE DELETE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_no_hard_delete();

-- -----------------------------------------------------------------------------
-- Creating tenants
-- -----------------------------------------------------------------------------

/** A tenant row (root or child, any isolation), checked; the one insert of both creators below. */
CREATE OR REPLACE FUNCTION tenantry.insert_tenant(
    name text, parent_id uuid, isolation text, settings jsonb)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN tenantry.insert_tenant_by(name, parent_id, isolation, settings, NULL);
END
$$;
COMMENT ON FUNCTION tenantry.insert_tenant(text, uuid, text, jsonb) IS 'Internal: inserts a checked tenant row (and its schema for schema isolation), for create_tenant and create_child_tenant, which run as the owner. Not granted.';

/** insert_tenant, recording the signed-in person who creates it (create_my_tenant). */
CREATE OR REPLACE FUNCTION tenantry.insert_tenant_by(
    name text, parent_id uuid, isolation text, settings jsonb, created_by uuid)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid;
BEGIN
    IF isolation IS NULL OR isolation NOT IN ('shared', 'schema') THEN
        RAISE EXCEPTION 'isolation must be "shared" or "schema"' USING ERRCODE = 'TN422', HINT = 'isolation';
    END IF;
    IF name IS NULL OR length(btrim(name)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'name must be 1 to 200 characters' USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    -- Refused before anything is written (on a Citus coordinator, or while
    -- a foreign key would break the tier).
    IF isolation = 'schema' THEN
        PERFORM tenantry.require_schema_tier();
    END IF;
    -- A schema tenant's row says so from its INSERT, with the schema
    -- version its tables are about to be copied at (make_schema_tenant
    -- checks it still is): an UPDATE after the schema's DDL (which resets
    -- every cached plan) ran the row triggers again, planned afresh, and
    -- audited a tier change that never happened (issue 13: about 1.5 ms of
    -- each creation).
    -- Its schema is a spare made ahead (take_spare_tenant_schema): making a
    -- schema here would reset every session's cached plans at every
    -- creation. A pooled tenant reserves a name of the same form (the
    -- column's default) for a later move.
    INSERT INTO tenantry.tenants (name, parent_id, isolation, settings, schema_version, schema_name, created_by_user)
    VALUES (name, parent_id, isolation, coalesce(settings, '{}'),
            CASE WHEN isolation = 'schema' THEN tenantry.tenant_schema_latest() END,
            CASE WHEN isolation = 'schema' THEN tenantry.take_spare_tenant_schema()
                 ELSE tenantry.new_tenant_schema_name() END,
            created_by)
    RETURNING tenants.tenant_id INTO tid;
    IF isolation = 'schema' THEN
        PERFORM tenantry.make_schema_tenant(tid);
    END IF;
    RETURN tid;
END
$$;
COMMENT ON FUNCTION tenantry.insert_tenant_by(text, uuid, text, jsonb, uuid) IS 'Internal: insert_tenant recording the person who created the tenant (tenants.created_by_user, what signup_policy counts). Not granted.';

/** Administrators create tenants (root or child, any isolation). */
CREATE OR REPLACE FUNCTION tenantry.create_tenant(
    name text, parent_id uuid DEFAULT NULL, isolation text DEFAULT 'shared', settings jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_admin_context('creating tenants');
    RETURN tenantry.insert_tenant(name, parent_id, isolation, settings);
END
$$;
COMMENT ON FUNCTION tenantry.create_tenant(text, uuid, text, jsonb) IS 'Admin: creates a tenant (optionally under a parent, optionally schema-isolated) and returns its id.';

/** A tenant creates a child of itself. */
CREATE OR REPLACE FUNCTION tenantry.create_child_tenant(name text, settings jsonb DEFAULT '{}', isolation text DEFAULT 'shared')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    mine record;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    -- As the API: the function runs as the owner, so it checks the
    -- permission itself (found by a review of the hierarchy: a member with no
    -- role created children from SQL).
    IF NOT tenantry.authorize('tenants.create') THEN
        RAISE EXCEPTION 'creating child tenants needs tenants.create' USING ERRCODE = 'TN401';
    END IF;
    SELECT t.status, t.settings INTO mine FROM tenantry.tenants t WHERE t.tenant_id = me;
    IF mine.status = 'suspended' THEN
        -- Suspended since the server let the request in: the answer every
        -- other request of the tenant gets (found by a contention review:
        -- 403 forbidden instead).
        RAISE EXCEPTION 'tenant % is suspended', me USING ERRCODE = 'TN403', HINT = 'tenant_suspended';
    ELSIF mine.status IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'tenant % is not active', me USING ERRCODE = 'TN403';
    END IF;
    -- A schema tenant costs catalog space and backend memory (a table per
    -- tenant table, docs/architecture.md, "Tiers"): an operator's decision.
    -- NULL is the default (it was refused as a schema
    -- tenant: a review of the psql path); anything else is no isolation.
    IF isolation = 'schema' THEN
        RAISE EXCEPTION 'only an operator can create a schema-isolated tenant' USING ERRCODE = 'TN403', HINT = 'isolation';
    ELSIF isolation IS NOT NULL AND isolation <> 'shared' THEN
        RAISE EXCEPTION 'isolation is shared or schema, not %', isolation USING ERRCODE = 'TN422', HINT = 'isolation';
    END IF;
    -- No more than the parent has itself (09_limits.sql): limits, quotas, rate.
    RETURN tenantry.insert_tenant(name, me, 'shared', tenantry.settings_for_child(mine.settings, settings));
END
$$;
COMMENT ON FUNCTION tenantry.create_child_tenant(text, jsonb, text) IS 'Creates a pooled child of the current tenant and returns its id (needs tenants.create: TN401; schema isolation is for operators: TN403; settings above the parent''s own: TN403). The new child becomes visible to the parent in its next transaction.';

/**
 * A direct child of the current tenant, by id: unlike a read of
 * tenantry.tenants, whose policy sees the subtree proven when the
 * transaction entered its context, it also sees a child created earlier in
 * the same transaction, so that the creation can answer with the child's
 * row (its settings as capped by the parent's) without a second
 * transaction. No row for any other tenant, nor for a deleted child (the
 * subtree holds live tenants only).
 */
CREATE OR REPLACE FUNCTION tenantry.child_tenant(child uuid)
RETURNS TABLE (tenant_id uuid, name text, status text, parent_id uuid, isolation text, settings jsonb, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.tenant_id, t.name, t.status, t.parent_id, t.isolation, t.settings, t.created_at, t.updated_at
    FROM tenantry.tenants t
    WHERE t.tenant_id = child AND t.parent_id = tenantry.current_tenant_id() AND t.status <> 'deleted'
$$;
COMMENT ON FUNCTION tenantry.child_tenant(uuid) IS 'A live direct child of the current tenant by id, including one created earlier in this transaction (which tenantry.tenants shows the parent from its next transaction on); no row for any other tenant or a deleted child.';

GRANT EXECUTE ON FUNCTION tenantry.create_tenant(text, uuid, text, jsonb) TO tenantry_admin;
GRANT EXECUTE ON FUNCTION tenantry.create_child_tenant(text, jsonb, text) TO tenantry_app;
GRANT EXECUTE ON FUNCTION tenantry.child_tenant(uuid) TO tenantry_app;
