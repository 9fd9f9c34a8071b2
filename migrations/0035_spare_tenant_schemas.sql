-- =============================================================================
-- 0035 Spare tenant schemas: a schema tenant's creation changes no schema
--
-- Creating or changing a schema (pg_namespace) makes every session of the
-- cluster drop every cached plan: each schema tenant's creation made the
-- creating session plan all its statements again, and every server
-- connection its prepared statements (issue 13: about 2 ms of each creation,
-- measured on the benchmark's data set). Schemas are now made ahead, empty,
-- a batch at a time, and a schema tenant takes one at its creation
-- (repeatable/07_schemas.sql, take_spare_tenant_schema): one reset per batch
-- instead of one per tenant. A spare holds nothing and names no tenant; its
-- name has the form of every tenant schema's and becomes the tenant's
-- tenants.schema_name. Owner only.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.spare_tenant_schemas (
    schema_name text PRIMARY KEY CONSTRAINT spare_tenant_schemas_name_opaque CHECK (schema_name ~ '^tenant_[0-9a-f]{20}$'),
    made_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenantry.spare_tenant_schemas IS 'Empty tenant schemas made ahead, a batch at a time: a schema tenant''s creation takes one, so it changes no schema (which would reset every session''s cached plans). No tenant data; owner only.';
COMMENT ON COLUMN tenantry.spare_tenant_schemas.schema_name IS 'The empty schema (tenant_ and 20 random hex digits, as tenants.schema_name).';
COMMENT ON COLUMN tenantry.spare_tenant_schemas.made_at IS 'When it was made.';
REVOKE ALL ON tenantry.spare_tenant_schemas FROM PUBLIC;
