-- =============================================================================
-- 0057 The server's sessions get PostgreSQL's messages untranslated
--
-- The server tells some refusals apart only by PostgreSQL's message (a
-- privilege its role lacks, "permission denied for table …", is its own
-- misconfiguration, answered 503; a row still referenced on delete is 409,
-- a missing reference 404), and those words are translated by the
-- database's lc_messages: on a cluster set up in German, a table of the
-- application's that was never adopted answered 403 with the table's name
-- instead of 503, and a row still referenced 404 instead of 409. A role's
-- own setting is applied at every login of it, ahead of the database's and
-- the cluster's, and only a superuser may store it (lc_messages is a
-- superuser's parameter): the migrations run as one. The server's messages
-- in the server log are untranslated too. A login role of the team's own
-- that acts for tenants gets the same with
-- `ALTER ROLE <login> SET lc_messages = 'C'` (README.md, "Use it for your
-- own tables"); the server warns at start when its session's messages are
-- translated.
-- =============================================================================

ALTER ROLE tenantry_server SET lc_messages = 'C';

-- Nothing of the owner's follows; every migration runs its objects' work
-- as tenantry_owner, and this one has none.
SET LOCAL ROLE tenantry_owner;
