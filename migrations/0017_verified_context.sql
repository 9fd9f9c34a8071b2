-- =============================================================================
-- 0017 a tenant context SQL cannot forge (docs/security.md, "The tenant context")
--
-- Until now the context was a set of plain settings (app.current_tenant_id,
-- app.visible_tenant_ids): any session holding the server's login could SET
-- them to any tenant. From here on the server proves each transaction's
-- context to the database with a key only the owner role reads:
--
--   context_keys   HMAC-SHA-256 keys shared by the database and the servers.
--                  The first one is made here; a server gets it from the
--                  embedded cluster, the test harness or `tenantry context-key`.
--
-- The verified context is kept in a setting the app roles may not set
-- (repeatable/01_context.sql explains which and why); the functions that
-- write it and read it live there.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.context_keys (
    key_id      integer PRIMARY KEY CHECK (key_id > 0),
    secret      bytea NOT NULL CHECK (length(secret) = 32),
    -- HMAC's inner and outer blocks (RFC 2104), kept so the database hashes
    -- without XOR-ing bytes on every call.
    inner_pad   bytea NOT NULL CHECK (length(inner_pad) = 64),
    outer_pad   bytea NOT NULL CHECK (length(outer_pad) = 64),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenantry.context_keys IS 'Keys (HMAC-SHA-256) with which servers prove a tenant context to the database. Readable by the owner role only: no login or app role may read or mint them. The newest key signs; older ones keep verifying until deleted (rotation).';

-- The first key: 32 bytes from two version-4 UUIDs (244 random bits; the
-- built-in generator, as pgcrypto is not always installed).
DO $key$
DECLARE
    secret bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    block bytea := secret || decode(repeat('00', 32), 'hex');
    inner_pad bytea := block;
    outer_pad bytea := block;
BEGIN
    FOR i IN 0..63 LOOP
        inner_pad := set_byte(inner_pad, i, get_byte(block, i) # 54);   -- 0x36
        outer_pad := set_byte(outer_pad, i, get_byte(block, i) # 92);   -- 0x5c
    END LOOP;
    INSERT INTO tenantry.context_keys (key_id, secret, inner_pad, outer_pad)
    VALUES (1, secret, inner_pad, outer_pad);
END
$key$;

-- The server's half of the old context is gone: the whole context is now
-- verified (repeatable/01_context.sql, enter_context).
DROP FUNCTION IF EXISTS tenantry.complete_tenant_context_local();
