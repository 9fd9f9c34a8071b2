-- The issue tracker's own tables. Every key leads with tenant_id and every
-- foreign key pairs it, so a row can only point at rows of its own tenant
-- (tenantry.adopt_table refuses anything else). Idempotent: it runs at every
-- start-up, before the tables are adopted (again, which changes nothing).

CREATE TABLE IF NOT EXISTS projects (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
COMMENT ON TABLE projects IS 'Issue tracker: a project of a tenant; its issues go with it.';

CREATE TABLE IF NOT EXISTS issues (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    state      text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS issues_by_project ON issues (tenant_id, project_id, created_at);
COMMENT ON TABLE issues IS 'Issue tracker: an issue of a project, open or closed.';

CREATE TABLE IF NOT EXISTS comments (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    issue_id   uuid NOT NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, issue_id) REFERENCES issues (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS comments_by_issue ON comments (tenant_id, issue_id, created_at);
COMMENT ON TABLE comments IS 'Issue tracker: a comment on an issue.';
