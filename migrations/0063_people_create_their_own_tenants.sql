-- =============================================================================
-- 0063 People who create their own tenants
--
-- A signed-in person could join a tenant only by an invitation, so a team's
-- sign-up ("create your workspace") needed its own backend holding the admin
-- token to create the tenant and invite the person (three calls, the
-- operator's secret in the sign-up path), where basejump's create_account
-- and Nile's tenant creation let the signed-in user do it. The operator now
-- decides how many tenants a person may create and own at once
-- (0: none, the default); create_my_tenant (04_access.sql) makes a root
-- tenant whose first member, and so owner, is the person.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.signup_policy (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tenants_per_person integer NOT NULL DEFAULT 0 CHECK (tenants_per_person BETWEEN 0 AND 1000)
);
INSERT INTO tenantry.signup_policy DEFAULT VALUES;
COMMENT ON TABLE tenantry.signup_policy IS 'One row: how many tenants a signed-in person may create and own at once (tenantry.create_my_tenant, POST /v1/me/tenants); 0, the default, lets only operators and tenants with tenants.create make tenants. Operators change it with UPDATE as the migration role; no server role may.';
COMMENT ON COLUMN tenantry.signup_policy.tenants_per_person IS 'The most tenants a person may own, counting those not deleted, to create another (0 to 1000).';
