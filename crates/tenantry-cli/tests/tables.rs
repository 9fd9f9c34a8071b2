//! `tenantry table adopt|release|alter|list`, `tenantry doctor` and the server's boot check on adopted tables, run as a team would: the migration role's DATABASE_URL for table commands, the server's for `serve`.

use std::process::{Command, Output, Stdio};

use tenantry_db::testing::TestDatabase;

fn run(url: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.args(args)
        .env("DATABASE_URL", url)
        .env(
            "TENANTRY_CONTEXT_KEY",
            tenantry_db::testing::context_key().expose(),
        )
        .env_remove("TENANTRY_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("running tenantry");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("tenantry {args:?} did not exit within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Its stdout, once the command succeeded (else its stderr, failing).
fn succeeds(out: &Output) -> String {
    let (stdout, err) = text(out);
    assert!(out.status.success(), "{err}");
    stdout
}

/// Two tables of a team's, linked by a foreign key that pairs tenant_id.
const BOARDS_AND_CARDS: &str =
    "CREATE TABLE public.boards (tenant_id uuid NOT NULL, id int NOT NULL, PRIMARY KEY (tenant_id, id));
     CREATE TABLE public.cards (tenant_id uuid NOT NULL, id int NOT NULL, board_id int NOT NULL,
                                PRIMARY KEY (tenant_id, id),
                                FOREIGN KEY (tenant_id, board_id) REFERENCES public.boards (tenant_id, id));";

/// A schema tenant `silo`, made by the operator; its schema's name.
async fn schema_tenant(su: &tokio_postgres::Client) -> String {
    let silo: uuid::Uuid = su
        .query_one(
            "SELECT tenantry.create_tenant('silo', NULL, 'schema', '{}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    su.query_one(
        "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1",
        &[&silo],
    )
    .await
    .unwrap()
    .get(0)
}

/// `tenantry serve --allow-table-problems` (and `extra` arguments) on `db`,
/// stopped once it serves; what it wrote to stderr.
fn serve_with_problems_allowed(db: &TestDatabase, extra: &[&str]) -> String {
    let mut args = vec!["--allow-table-problems"];
    args.extend_from_slice(extra);
    serve_until_serving(db, &args)
}

/// `tenantry serve` with `extra` arguments on `db`, which must start, stopped
/// once it serves; what it wrote to stderr.
fn serve_until_serving(db: &TestDatabase, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("DATABASE_URL", db.server_url())
        .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .env_remove("TENANTRY_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("serving on"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tenantry serve` as the server's login, which must refuse to start: its stderr.
fn serve_refused(db: &TestDatabase) -> String {
    let out = run(
        &db.server_url(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("TENANTRY_ADMIN_TOKEN", "tadm_test")],
    );
    assert!(!out.status.success(), "serve started");
    text(&out).1
}

#[tokio::test]
async fn table_adopt_backfills_existing_rows_then_list_and_doctor_report_it_and_release_undoes_it()
{
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let tenant: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('acme')", &[])
        .await
        .unwrap()
        .get(0);
    su.batch_execute(
        "CREATE TABLE public.invoices (id bigserial, amount numeric NOT NULL);
         INSERT INTO public.invoices (amount) SELECT i FROM generate_series(1, 3000) i;",
    )
    .await
    .unwrap();
    let url = db.superuser_url();

    // Rows without a tenant and no owner given: refused, naming the rule and the fix.
    let out = run(&url, &["table", "adopt", "invoices"], &[]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("3000 rows have no tenant") && err.contains("existing_rows_tenant"),
        "{err}"
    );

    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "invoices",
            "--existing-rows-tenant",
            &tenant.to_string(),
            "--pages-per-batch",
            "2",
            "--json",
        ],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let adopted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(adopted["table"], "invoices");
    assert_eq!(adopted["hierarchy"], true);
    let owned: i64 = su
        .query_one(
            "SELECT count(*) FROM public.invoices WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 3000);
    // Whose the rows became is on the operator's record, beside the adoption.
    let recorded: Vec<(String, serde_json::Value)> = su
        .query(
            "SELECT action, details FROM tenantry.operator_audit_log
              WHERE target_id = 'public.invoices' ORDER BY occurred_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0].0, "table.backfilled");
    assert_eq!(recorded[0].1["existing_rows_tenant"], tenant.to_string());
    assert_eq!(recorded[0].1["rows"], 3000);
    assert_eq!(recorded[1].0, "table.adopted");

    let out = run(&url, &["table", "list"], &[]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.starts_with("TABLE") && stdout.contains("invoices"),
        "{stdout}"
    );

    let out = run(&url, &["doctor"], &[]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.contains("1 adopted table(s), no problem found (database "),
        "the doctor says which database it checked: {stdout}"
    );

    // Someone switches RLS off: the doctor names it, with the fix, and exits 1.
    su.batch_execute("ALTER TABLE public.invoices DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let out = run(&url, &["doctor", "--json"], &[]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    let problems: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(problems[0]["rule"], "rls", "{problems}");
    assert!(
        problems[0]["fix"]
            .as_str()
            .unwrap()
            .contains("ENABLE ROW LEVEL SECURITY"),
        "{problems}"
    );
    // In text, the failure names the database checked too.
    let out = run(&url, &["doctor"], &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 problem(s) with adopted tables, tenant schemas or login roles (database "),
        "{err}"
    );

    // The server refuses to start on it, unless told to serve anyway (loudly).
    let err = serve_refused(&db);
    assert!(
        err.contains("refusing to serve tenant traffic")
            && err.contains("public.invoices [rls]")
            && err.contains("--allow-table-problems"),
        "{err}"
    );
    let err = serve_with_problems_allowed(&db, &[]);
    // stdout is no terminal here: JSON logs, the warning one of their lines.
    assert!(
        err.lines().any(|l| l.starts_with('{')
            && l.contains("adopted table breaks tenantry's rules (--allow-table-problems)")),
        "{err}"
    );
    assert!(
        err.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('{')),
        "{err}"
    );
    // Text logs: the warning once, as a block for people (it was printed a
    // second time through the text log, found by a new user's review).
    let err = serve_with_problems_allowed(&db, &["--log-format", "text"]);
    assert_eq!(
        err.matches("adopted table breaks tenantry's rules").count(),
        1,
        "{err}"
    );

    // Release: the table is the team's again, rows and tenant_id kept.
    let out = run(&url, &["table", "release", "invoices"], &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let row = su
        .query_one(
            "SELECT relowner::regrole::text, relrowsecurity, (SELECT count(*) FROM tenantry.tenant_tables)
               FROM pg_class WHERE oid = 'public.invoices'::regclass",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i64>(2), 0);
    let out = run(&url, &["table", "release", "invoices"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("is not an adopted table"));
}

#[tokio::test]
async fn table_adopt_with_sharing_records_the_option_adopting_again_keeps_it_and_no_sharing_revokes_every_share(
) {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let (a, b): (uuid::Uuid, uuid::Uuid) = (
        su.query_one("SELECT tenantry.create_tenant('a')", &[])
            .await
            .unwrap()
            .get(0),
        su.query_one("SELECT tenantry.create_tenant('b')", &[])
            .await
            .unwrap()
            .get(0),
    );
    su.batch_execute(
        "CREATE TABLE public.docs (tenant_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id))",
    )
    .await
    .unwrap();
    let url = db.superuser_url();
    let out = run(
        &url,
        &["table", "adopt", "docs", "--sharing", "--json"],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let adopted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(adopted["sharing"], true, "{adopted}");
    let out = run(&url, &["table", "list"], &[]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("SHARING"), "{stdout}");

    // a shares a row with b, as the server's role would.
    let app = db.server_client().await;
    app.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(&app, a).await;
    app.batch_execute(&format!(
        "INSERT INTO public.docs (id) VALUES (1);
         SELECT tenantry.share_row('public.docs', '1', '{b}'); COMMIT;"
    ))
    .await
    .unwrap();
    let shares = || async {
        su.query_one("SELECT count(*) FROM tenantry.shared_rows", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(shares().await, 1);

    // Adopting again without the flag (a deploy script run twice) keeps it.
    let out = run(&url, &["table", "adopt", "docs", "--json"], &[]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let adopted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(adopted["sharing"], true, "{adopted}");
    assert_eq!(shares().await, 1);

    let out = run(
        &url,
        &["table", "adopt", "docs", "--no-sharing", "--json"],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let adopted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(adopted["sharing"], false, "{adopted}");
    assert_eq!(shares().await, 0);
}

/// `tenantry table alter` changes an adopted table and every schema tenant's
/// table of it in one command (the tenant-schema step, then the schemas);
/// with `--no-migrate` it only records the step, `tenantry doctor` names the
/// schema behind, and `tenantry migrate` brings it; a table that is not
/// adopted, or a change tenantry keeps for itself, is refused.
#[tokio::test]
async fn table_alter_changes_the_teams_table_and_every_schema_tenants_table_of_it() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                       name text NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.projects');",
    )
    .await
    .unwrap();
    let schema = schema_tenant(&su).await;
    let has_column = |column: &'static str| {
        let su = &su;
        let schema = schema.clone();
        async move {
            let n: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relname = 'projects' AND n.nspname = ANY (ARRAY['public', $1])
                        AND a.attname = $2 AND NOT a.attisdropped",
                    &[&schema, &column],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    let url = db.superuser_url();

    let out = run(
        &url,
        &["table", "alter", "projects", "ADD COLUMN due date"],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("altered projects"), "{stdout}");
    assert!(
        stdout.contains("1 tenant schema(s) brought to it"),
        "{stdout}"
    );
    assert_eq!(
        has_column("due").await,
        2,
        "the team's table and the schema's"
    );

    let out = run(
        &url,
        &[
            "table",
            "alter",
            "projects",
            "ADD COLUMN note text",
            "--no-migrate",
            "--json",
        ],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["tenant_schema_step"].as_i64().is_some(), "{v}");
    assert!(v["tenant_schemas_migrated"].is_null(), "{v}");
    assert_eq!(has_column("note").await, 1, "the team's table only");
    let out = run(&url, &["doctor"], &[]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("tenant_schema_version") && stdout.contains(&schema),
        "{stdout}"
    );
    let out = run(&url, &["migrate"], &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(has_column("note").await, 2);
    let out = run(&url, &["doctor"], &[]);
    assert!(out.status.success(), "{:?}", text(&out));

    su.batch_execute("CREATE TABLE public.loose (id int)")
        .await
        .unwrap();
    for (args, said) in [
        (
            &["table", "alter", "loose", "ADD COLUMN x int"][..],
            "is not an adopted table",
        ),
        (
            &["table", "alter", "projects", "RENAME TO plans"][..],
            "not its name, schema, owner",
        ),
    ] {
        let out = run(&url, args, &[]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    let loose_x: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.loose'::regclass AND attname = 'x'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(loose_x, 0);
    assert_eq!(has_column("name").await, 2, "projects was not renamed");
}

#[tokio::test]
async fn doctor_and_migrate_with_the_servers_login_say_which_role_they_need_and_repeat_nothing() {
    let db = TestDatabase::new().await;
    let tenant = uuid::Uuid::new_v4().to_string();
    for (args, command) in [
        (&["doctor"][..], "tenantry doctor"),
        (&["migrate"][..], "tenantry migrate"),
        (
            &["tenant", "export", tenant.as_str(), "--out", "-"][..],
            "tenantry tenant export",
        ),
        (&["context-key", "rotate"][..], "tenantry context-key"),
        (&["table", "adopt", "no_such_table"][..], "tenantry table"),
        (
            &["table", "alter", "no_such_table", "ADD COLUMN x int"][..],
            "tenantry table",
        ),
    ] {
        let out = run(&db.server_url(), args, &[]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        if command == "tenantry doctor" {
            // Could not check: 2, not the 1 of problems found.
            assert_eq!(out.status.code(), Some(2), "{err}");
        }
        assert!(
            err.contains(&format!(
                "{command} runs as the role that runs your migrations (a superuser, or a member of tenantry_owner)"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("permission denied"), "{args:?}: {err}");
        assert!(!err.contains("db error: db error"), "{args:?}: {err}");
        assert_eq!(
            err.matches("permission denied").count(),
            1,
            "the database's words once: {err}"
        );
    }
}

#[tokio::test]
async fn the_guides_policy_snippets_run_as_written_on_tenantrys_own_tables_are_named_by_the_doctor_and_refused_at_boot(
) {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let url = db.superuser_url();
    let out = run(&url, &["doctor"], &[]);
    assert!(out.status.success(), "{}", text(&out).1);

    // The guide's snippets, as a reader would paste them (search_path
    // tenantry first); tenant_isolation exists already and is refused.
    su.batch_execute(
        "SET search_path = tenantry, public;
         CREATE POLICY tenant_sharing ON resources FOR SELECT
             USING (tenant_id = current_tenant_id()
                    OR id = ANY (SELECT resource_id FROM shared_resources WHERE shared_with = current_tenant_id()));
         CREATE POLICY tenant_data ON resources FOR ALL USING (tenant_id = current_tenant_id());
         CREATE POLICY tenant_hierarchy ON resources FOR ALL
             USING (tenant_id IN (SELECT child_id FROM tenant_hierarchy WHERE parent_id = current_tenant_id()));
         ALTER POLICY members_read_subtree ON tenant_members USING (true);
         DROP POLICY resources_delete_needs_permission ON resources;
         RESET search_path;",
    )
    .await
    .unwrap();
    let out = run(&url, &["doctor", "--json"], &[]);
    assert!(!out.status.success());
    let problems: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    let found: Vec<String> = problems
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["rule"] == "own_policies")
        .map(|p| format!("{} | {} | {}", p["table"], p["problem"], p["fix"]))
        .collect();
    assert_eq!(found.len(), 5, "{found:#?}");
    for (table, policy, fix) in [
        ("tenantry.resources", "policy tenant_sharing is not one of tenantry's", "DROP POLICY tenant_sharing ON tenantry.resources;"),
        ("tenantry.resources", "policy tenant_data is not one of tenantry's", "DROP POLICY tenant_data ON tenantry.resources;"),
        ("tenantry.resources", "policy tenant_hierarchy is not one of tenantry's", "DROP POLICY tenant_hierarchy ON tenantry.resources;"),
        ("tenantry.resources", "tenantry's policy resources_delete_needs_permission is gone", "DELETE FROM tenantry.schema_definitions;"),
        ("tenantry.tenant_members", "tenantry's policy members_read_subtree was changed to: PERMISSIVE FOR SELECT TO tenantry_app USING (true)", "DELETE FROM tenantry.schema_definitions;"),
    ] {
        assert!(
            found.iter().any(|f| f.contains(table) && f.contains(policy) && f.contains(fix)),
            "{policy} not reported: {found:#?}"
        );
    }
    // A clause the policy does not have is not printed as an empty one.
    assert!(
        found
            .iter()
            .all(|f| !f.contains("USING ()") && !f.contains("WITH CHECK ()")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|f| f.contains("tenant_sharing")
            && f.contains("PERMISSIVE FOR SELECT TO PUBLIC USING (")),
        "{found:#?}"
    );

    // The server does not serve tenant traffic over them.
    let err = serve_refused(&db);
    assert!(
        err.contains("refusing to serve tenant traffic") && err.contains("tenant_sharing"),
        "{err}"
    );

    // The fixes the doctor gives, as given: then nothing is left to report.
    su.batch_execute(
        "DROP POLICY tenant_sharing ON tenantry.resources;
         DROP POLICY tenant_data ON tenantry.resources;
         DROP POLICY tenant_hierarchy ON tenantry.resources;
         DELETE FROM tenantry.schema_definitions;",
    )
    .await
    .unwrap();
    let out = run(&url, &["migrate"], &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = run(&url, &["doctor"], &[]);
    assert!(out.status.success(), "{}{}", text(&out).0, text(&out).1);
}

#[tokio::test]
async fn table_adopt_sets_keeps_and_removes_a_write_permission_and_list_shows_it() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                PRIMARY KEY (tenant_id, id));
         SELECT tenantry.define_permission('invoices.write', 'Create, change and delete invoices');",
    )
    .await
    .unwrap();
    let url = db.superuser_url();
    let listed = || {
        let out = run(&url, &["table", "list", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out).1);
        let list: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
        list[0]["write_permission"].clone()
    };
    // `tenantry table adopt invoices` with these flags.
    let adopt = |flags: &[&str]| {
        run(
            &url,
            &[&["table", "adopt", "invoices"], flags].concat(),
            &[],
        )
    };
    let out = adopt(&["--write-permission", "invoices.write"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("invoices.write"), "{}", text(&out).0);
    assert_eq!(listed(), "invoices.write");
    // Adopting again without the flag keeps it.
    let out = adopt(&[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(listed(), "invoices.write");
    // An unknown permission is refused, naming it; nothing changes.
    let out = adopt(&["--write-permission", "invoices.wirte"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("invoices.wirte"), "{}", text(&out).1);
    assert_eq!(listed(), "invoices.write");
    // "" removes it.
    let out = adopt(&["--write-permission", ""]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(listed(), serde_json::Value::Null);
}

/// `tenantry table adopt` brings schema tenants' tables along, as `table
/// alter` does (found by a new user's review: adopting with a write
/// permission left the schema tenants' tables without its policies until
/// `tenantry migrate` ran, and said nothing); `--no-migrate` leaves the step
/// to `tenantry migrate` and says so (the policies of the tables schema
/// tenants have already change at once). The target options are accepted after
/// the subcommand too (`table list --data-dir ...`).
#[tokio::test]
async fn table_adopt_brings_the_schema_tenants_tables_along_with_their_write_permission() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('invoices');
         SELECT tenantry.define_permission('invoices.write', 'Create, change and delete invoices');",
    )
    .await
    .unwrap();
    let schema = schema_tenant(&su).await;
    let policies_of_copy = || {
        let su = &su;
        let table = format!("{schema}.invoices");
        async move {
            su.query_one(
                "SELECT count(*) FROM pg_policy p
                  WHERE p.polrelid = $1::text::regclass
                    AND p.polname IN (SELECT w.polname FROM tenantry.write_permission_policies() w)",
                &[&table],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(policies_of_copy().await, 0);
    let url = db.superuser_url();
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "invoices",
            "--write-permission",
            "invoices.write",
            "--no-migrate",
        ],
        &[],
    );
    let stdout = succeeds(&out);
    assert!(stdout.contains("tenantry migrate"), "{stdout}");
    // The policies reach the schema tenant's existing table in adopt_table's
    // own transaction (since 2026-12-03); the rest of the step (tables it
    // lacks, rows to move) is still tenantry migrate's.
    assert_eq!(
        policies_of_copy().await,
        3,
        "a write permission holds in the schema tenant's table at once"
    );
    // --json says the same.
    let adopt = |flags: &[&str]| {
        run(
            &url,
            &[&["table", "adopt", "invoices"], flags].concat(),
            &[],
        )
    };
    let json =
        |out: Output| -> serde_json::Value { serde_json::from_str(&succeeds(&out)).expect("JSON") };
    let v = json(adopt(&["--write-permission", "", "--no-migrate", "--json"]));
    assert_eq!(v["table"], "invoices", "{v}");
    assert_eq!(v["tenant_schemas_behind"], true, "{v}");
    assert!(v["tenant_schemas_migrated"].is_null(), "{v}");
    let stdout = succeeds(&adopt(&["--write-permission", "invoices.write"]));
    assert!(
        stdout.contains("tenant schema(s) brought along"),
        "{stdout}"
    );
    let v = json(adopt(&["--json"]));
    assert_eq!(v["write_permission"], "invoices.write", "{v}");
    assert_eq!(v["tenant_schemas_behind"], false, "{v}");
    assert!(
        policies_of_copy().await > 0,
        "the schema's table has them now"
    );
    let out = run(&url, &["doctor"], &[]);
    assert!(out.status.success(), "{}", text(&out).0);
    let out = run(
        &url,
        &[
            "table",
            "list",
            "--json",
            "--data-dir",
            "/nonexistent/tenantry",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out).1);
}

/// The tenant commands with the role that runs migrations (a member of
/// tenantry_owner, not a superuser) say which role they need, instead of
/// only PostgreSQL's "permission denied to set role" (found by a review
/// following README on a fresh clone).
#[tokio::test]
async fn tenant_commands_with_the_migration_role_say_which_role_they_need() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let role = format!("migrator_{}", uuid::Uuid::new_v4().simple());
    su.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE tenantry_owner"))
        .await
        .unwrap();
    let mut config = db.superuser_config();
    config.user(&role);
    let url = tenantry_db::conninfo(&config);
    let tenant = uuid::Uuid::new_v4().to_string();
    for (args, command) in [
        (&["tenant", "list"][..], "tenantry tenant"),
        (&["key", "list", tenant.as_str()][..], "tenantry key"),
        (&["role", "list", tenant.as_str()][..], "tenantry role"),
    ] {
        let out = run(&url, args, &[]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{command} acts through tenantry's roles, and DATABASE_URL names a role that may not become them"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("permission denied to set role"),
            "{args:?}: {err}"
        );
    }
}

/// Found by a review of the CLI, as a migration role that is no superuser (a
/// member of tenantry_owner, as README sets it up): a backfilling adoption
/// that adopt_table then refused for its options (sharing without a primary
/// key (tenant_id, one column)) had already added tenant_id, its constraints
/// and rows' tenants and handed the table to tenantry_owner; and a successful
/// one recorded tenantry_owner as the owner to give the table back to.
#[tokio::test]
async fn a_backfilling_adoption_refused_for_its_options_changes_nothing_and_release_returns_the_table(
) {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let tenant: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('acme')", &[])
        .await
        .unwrap()
        .get(0);
    let (login, config) = db.login_role("mig", &["tenantry_owner"]).await;
    su.batch_execute(&format!(
        "GRANT CREATE ON SCHEMA public TO {login}, tenantry_owner;
         SET ROLE {login};
         CREATE TABLE public.legacy (id int, note text);
         INSERT INTO public.legacy SELECT i, 'n' FROM generate_series(1, 10) i;
         RESET ROLE;"
    ))
    .await
    .unwrap();
    let url = tenantry_db::conninfo(&config);
    let shape = "SELECT c.relowner::regrole::text || ' ' || (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                        || ' ' || (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid)
                   FROM pg_class c WHERE c.oid = 'public.legacy'::regclass";
    let before: String = su.query_one(shape, &[]).await.unwrap().get(0);
    let tenant_arg = tenant.to_string();
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "legacy",
            "--sharing",
            "--existing-rows-tenant",
            &tenant_arg,
        ],
        &[],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot share rows"), "{err}");
    let after: String = su.query_one(shape, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "the refused adoption changed the table");
    assert_eq!(before, format!("{login} 2 0"));

    // A rule that runs with tenantry_owner's rights once it owns the table:
    // the check before the backfill judged it with its owner of before, and
    // the adoption after the backfill was refused with the table changed
    // (found by a review of the psql path).
    su.batch_execute(&format!(
        "SET ROLE {login};
         CREATE TABLE public.legacy_log (note text);
         CREATE RULE legacy_rule AS ON INSERT TO public.legacy DO ALSO INSERT INTO public.legacy_log VALUES (NEW.note);
         RESET ROLE;"
    ))
    .await
    .unwrap();
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "legacy",
            "--existing-rows-tenant",
            &tenant_arg,
        ],
        &[],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("[rules]"), "{err}");
    assert_eq!(
        su.query_one(shape, &[]).await.unwrap().get::<_, String>(0),
        before
    );
    su.batch_execute(&format!(
        "SET ROLE {login}; DROP RULE legacy_rule ON public.legacy; DROP TABLE public.legacy_log; RESET ROLE;"
    ))
    .await
    .unwrap();

    // Without sharing it is adopted, and released back to its owner.
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "legacy",
            "--existing-rows-tenant",
            &tenant_arg,
            "--json",
        ],
        &[],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let adopted: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(adopted["previous_owner"], login.as_str(), "{adopted}");
    let out = run(&url, &["table", "release", "legacy"], &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let owner: String = su
        .query_one(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'public.legacy'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, login);
    su.batch_execute(&format!(
        "DROP TABLE public.legacy; REVOKE CREATE ON SCHEMA public FROM {login}; REVOKE tenantry_owner FROM {login}; DROP ROLE {login};"
    ))
    .await
    .unwrap();
}

/// A first install by a role that may not create roles (it owns the
/// database, but is no superuser) says to run it as a superuser and why,
/// before PostgreSQL refuses anything, and leaves no `tenantry` schema behind.
#[tokio::test]
async fn migrate_by_a_role_that_cannot_create_roles_says_to_use_a_superuser_and_changes_nothing() {
    let db = TestDatabase::new().await;
    let (login, config) = db.login_role("migrator", &[]).await;
    let name = db.scratch_database(&login).await;
    let mut fresh = config.clone();
    fresh.dbname(&name);
    let url = tenantry_db::provision::conninfo(&fresh);

    let out = run(&url, &["migrate"], &[]);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "run it as a superuser (the database URL names {login}, which may not); nothing was changed"
        )),
        "{err}"
    );
    assert!(
        err.contains("BYPASSRLS") && err.contains("from PUBLIC"),
        "{err}"
    );
    assert_eq!(
        err.matches("ERROR: ").count(),
        0,
        "said in tenantry's words before the database refuses anything: {err}"
    );
    assert!(
        !db.has_tenantry_schema(&name).await,
        "a refused install left a tenantry schema"
    );
    db.drop_scratch(&name, &login).await;
}

/// Tables linked by a foreign key switch their hierarchy option together:
/// `table adopt boards cards --no-hierarchy` (tenantry.adopt_tables, through
/// the library's `adopt_tables`), where one at a time each is refused for
/// the other (found by an outside review: only SQL could do it). Several
/// tables and a backfill are refused before anything changes.
#[tokio::test]
async fn table_adopt_of_several_tables_switches_linked_tables_hierarchy_together() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(&format!(
        "{BOARDS_AND_CARDS}
             SELECT tenantry.adopt_tables(ARRAY['public.boards', 'public.cards']::regclass[]);"
    ))
    .await
    .unwrap();
    let url = db.superuser_url();
    let hierarchy = || async {
        su.query(
            "SELECT table_id::text, hierarchy FROM tenantry.tenant_tables ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
        .collect::<Vec<_>>()
    };
    let out = run(&url, &["table", "adopt", "boards", "--no-hierarchy"], &[]);
    assert!(!out.status.success(), "{}", text(&out).0);
    assert_eq!(
        hierarchy().await,
        [("boards".to_owned(), true), ("cards".to_owned(), true)]
    );
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "boards",
            "cards",
            "--no-hierarchy",
            "--json",
        ],
        &[],
    );
    let listed: serde_json::Value = serde_json::from_str(&succeeds(&out)).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(
        hierarchy().await,
        [("boards".to_owned(), false), ("cards".to_owned(), false)]
    );
    let out = run(
        &url,
        &[
            "table",
            "adopt",
            "boards",
            "cards",
            "--hierarchy",
            "--existing-rows-tenant",
            &uuid::Uuid::new_v4().to_string(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("adopt_tables gives existing rows no tenant"),
        "{}",
        text(&out).1
    );
    assert_eq!(
        hierarchy().await,
        [("boards".to_owned(), false), ("cards".to_owned(), false)]
    );
}

/// `table release` takes several tables, as `table adopt` does, in one
/// transaction: a table another of them references goes after it whatever
/// the order given (a chain took one command per table, in order: found by
/// a review adopting a team's schema). A table referenced by one left
/// adopted is refused, and nothing is released. A name SQL would not find
/// is answered with how to name it.
#[tokio::test]
async fn table_release_of_several_tables_releases_a_chain_in_any_order_or_none() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        &format!(
            "{BOARDS_AND_CARDS}
             CREATE TABLE public.\"Card Notes\" (tenant_id uuid NOT NULL, id int NOT NULL, card_id int NOT NULL,
                                    PRIMARY KEY (tenant_id, id),
                                    FOREIGN KEY (tenant_id, card_id) REFERENCES public.cards (tenant_id, id));
             SELECT tenantry.adopt_tables(ARRAY['public.boards', 'public.cards', 'public.\"Card Notes\"']::regclass[]);"
        ),
    )
    .await
    .unwrap();
    let url = db.superuser_url();
    let adopted = || async {
        su.query(
            "SELECT table_id::text FROM tenantry.tenant_tables ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };
    // Cards are still referenced by the notes, which stay adopted: nothing goes.
    let out = run(&url, &["table", "release", "boards", "cards"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("adopted tables reference it"),
        "{}",
        text(&out).1
    );
    assert_eq!(adopted().await.len(), 3);
    let out = run(&url, &["table", "release", "Card Notes"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("in double quotes"),
        "{}",
        text(&out).1
    );
    let out = run(
        &url,
        &[
            "table",
            "release",
            "boards",
            "cards",
            "\"Card Notes\"",
            "--json",
        ],
        &[],
    );
    let released: serde_json::Value = serde_json::from_str(&succeeds(&out)).unwrap();
    assert_eq!(
        released["released"].as_array().map(Vec::len),
        Some(3),
        "{released}"
    );
    assert!(adopted().await.is_empty());
}

/// A dropped `tenant_id` default (what an ORM's schema sync does when its
/// model has none) breaks no isolation: `tenantry doctor` names it, with its
/// fix, and exits 1, but the server starts, warning, instead of refusing on
/// every deployment until someone fixes it (found by a review of the rule).
#[tokio::test]
async fn a_dropped_tenant_default_is_named_by_the_doctor_and_serve_starts_with_a_warning() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.page_views (path text NOT NULL);
         SELECT tenantry.adopt_table('public.page_views');
         ALTER TABLE public.page_views ALTER COLUMN tenant_id DROP DEFAULT;",
    )
    .await
    .unwrap();
    let out = run(&db.superuser_url(), &["doctor"], &[]);
    assert!(!out.status.success());
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("warning: public.page_views [tenant_default]: "),
        "the doctor says it is a warning, as table_problems()' severity does: {stdout}{stderr}"
    );
    let err = serve_until_serving(&db, &["--log-format", "text"]);
    assert!(
        err.contains("a warning: served") && err.contains("tenant_default"),
        "{err}"
    );
}

/// An adopted table dropped by a routine migration leaves no row to reach:
/// `tenantry doctor` names it with `release_table` as the fix (status 1),
/// and the server starts, warning, instead of refusing every restart until
/// someone runs it (found by an outside review of schema changes).
#[tokio::test]
async fn a_dropped_adopted_table_is_named_by_the_doctor_and_serve_starts_with_a_warning() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.tasks_archive (tenant_id uuid NOT NULL, id int NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.tasks_archive');
         DROP TABLE public.tasks_archive;",
    )
    .await
    .unwrap();
    let out = run(&db.superuser_url(), &["doctor"], &[]);
    assert!(!out.status.success());
    let (stdout, stderr) = text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("[exists]")
            && format!("{stdout}{stderr}").contains("tenantry.release_table("),
        "{stdout}{stderr}"
    );
    let err = serve_until_serving(&db, &["--log-format", "text"]);
    assert!(
        err.contains("a warning: served") && err.contains("exists"),
        "{err}"
    );
}

/// A team's migration that adds a UNIQUE to its table with plain SQL while a
/// schema tenant exists (found by a review of migration tools): the doctor
/// names what the schema tenant's table lacks (rule `copy_constraints`,
/// status 1); and when that tenant already holds two rows the key refuses,
/// its move back fails at the cut-over saying that the move is still under
/// way and how to resume it or give it up, which `--abort` does with every
/// row where it was. A serial column's shared sequence is a note on stderr,
/// which fails nothing (adoption said it only in a NOTICE, which migration
/// tools do not show).
#[tokio::test]
async fn a_unique_added_without_a_step_is_named_by_the_doctor_and_the_move_back_it_fails_says_how_to_go_on(
) {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let url = db.superuser_url();
    su.batch_execute(
        "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                       color text, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.projects');
         CREATE TABLE public.notes (tenant_id uuid NOT NULL, id serial, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.notes');",
    )
    .await
    .unwrap();
    let schema = schema_tenant(&su).await;
    let silo: uuid::Uuid = su
        .query_one(
            "SELECT tenant_id FROM tenantry.tenants WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    let silo = silo.to_string();

    let out = run(&url, &["doctor"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "a note fails nothing: {stdout}{stderr}"
    );
    assert!(
        stderr.contains("note: public.notes [shared_sequence]: column \"id\" numbers its rows from public.notes_id_seq")
            && stderr.contains("ADD GENERATED BY DEFAULT AS IDENTITY"),
        "{stderr}"
    );
    // The schema tenant has a table of it, drawing from the same sequence.
    let before: i64 = su
        .query_one("SELECT nextval('public.notes_id_seq')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stdout.contains("no problem found"), "{stdout}");
    // Its fix, as printed, by the role that adopted the table: no note then.
    let fix = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("fix: "))
        .expect("a fix")
        .to_owned();
    su.batch_execute(&fix).await.unwrap();
    // The schema tenant's table draws from the identity column's sequence
    // through a default, which needs the grant: the note stays, saying that
    // only other keys end it (the note went silent: found by a review).
    let out = run(&url, &["doctor"], &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let notes = text(&out).1;
    assert!(
        notes.contains("note: public.notes [shared_sequence]")
            && notes.contains("key its rows by uuid")
            && !notes.contains("ADD GENERATED"),
        "{notes}"
    );
    // Both tables draw from the identity column's sequence, past the old one.
    let next: i64 = su
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('public.notes', 'id'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(next > before, "{next} after {before}");
    let copy_default: String = su
        .query_one(
            &format!(
                "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                 JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                 WHERE d.adrelid = '{schema}.notes'::regclass AND a.attname = 'id'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        copy_default.contains("notes_id_seq") && !copy_default.contains("_serial"),
        "{copy_default}"
    );

    su.batch_execute(&format!(
        "INSERT INTO {schema}.projects (tenant_id, color) VALUES ('{silo}', 'red'), ('{silo}', 'red');
         ALTER TABLE public.projects ADD CONSTRAINT projects_color_key UNIQUE (tenant_id, color);"
    ))
    .await
    .unwrap();
    let out = run(&url, &["doctor"], &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{schema}.projects [copy_constraints]"))
            && stdout.contains(&format!(
                "fix: ALTER TABLE {schema}.projects ADD UNIQUE (tenant_id, color)"
            )),
        "{stdout}"
    );

    let out = run(&url, &["tenant", "move", &silo, "--to", "shared"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the move of tenant {silo} to shared is still under way"
        )) && stderr.contains(&format!("tenantry tenant move {silo} --abort"))
            && stderr.contains("color"),
        "says what failed, where the move is and how to go on: {stderr}"
    );
    let aborted = succeeds(&run(&url, &["tenant", "move", &silo, "--abort"], &[]));
    assert!(aborted.contains("move aborted"), "{aborted}");
    let kept: i64 = su
        .query_one(&format!("SELECT count(*) FROM {schema}.projects"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2);
}

/// A lock held without end on a table the doctor reads (a prepared
/// transaction of SQL injected into the app, which the doctor itself would
/// name) made `tenantry doctor` wait for ever: it waits ten seconds, then
/// says it could not check (exit status 2), naming the lock.
#[tokio::test]
async fn doctor_behind_a_lock_held_on_tenantrys_tables_says_it_could_not_check_instead_of_waiting()
{
    let db = TestDatabase::new().await;
    let url = db.superuser_url();
    let holder = db.superuser_client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE tenantry.resources IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // (`run` fails the test when the doctor has not exited within a minute.)
    let out = run(&url, &["doctor"], &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("lock timeout"), "{err}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let out = run(&url, &["doctor"], &[]);
    succeeds(&out);
}

/// With schema tenants, adopting a table that a table not adopted
/// references (its foreign key then looks only at the pooled table), or
/// releasing the one of an adopted pair that references the other, went
/// through without a word, and the next `tenantry serve` refused to start
/// on the doctor's rule `tiers` (a new operator's review): both say so on
/// standard error, with the fix.
#[tokio::test]
async fn adopting_or_releasing_half_of_a_foreign_key_pair_with_schema_tenants_warns_of_the_tiers_rule(
) {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE pb (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), PRIMARY KEY (tenant_id, id));
         CREATE TABLE pc (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), pb_id uuid NOT NULL,
                          PRIMARY KEY (tenant_id, id), FOREIGN KEY (tenant_id, pb_id) REFERENCES pb (tenant_id, id));",
    )
    .await
    .unwrap();
    let _schema = schema_tenant(&su).await;
    let url = db.superuser_url();
    let out = run(&url, &["table", "adopt", "pb"], &[]);
    succeeds(&out);
    let (_, err) = text(&out);
    assert!(
        err.contains("public.pc [tiers]") && err.contains("tenantry serve"),
        "{err}"
    );
    // Both adopted: nothing to say.
    let out = run(&url, &["table", "adopt", "pc"], &[]);
    succeeds(&out);
    assert!(!text(&out).1.contains("[tiers]"), "{}", text(&out).1);
    // Releasing the one that references the other.
    let out = run(&url, &["table", "release", "pc"], &[]);
    succeeds(&out);
    let (_, err) = text(&out);
    assert!(err.contains("public.pc [tiers]"), "{err}");
}
