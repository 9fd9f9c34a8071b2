//! Forging the tenant context: SQL injection on a server connection (`tenantry_server`,
//! session role `tenantry_app`, context session opened and tenant A entered exactly as the
//! server does) runs a catalogue of named attempts to make the policies see tenant B. Each
//! attempt reads and changes no row of B, answers exactly alike when it names B and when it
//! names a tenant that does not exist, and either leaves the connection's chain in step (A's
//! next transaction works) or breaks it (the server's next context is refused and the server
//! closes the connection); which of the two is part of each attempt's expectation.

use tokio_postgres::{Client, SimpleQueryMessage};
use uuid::Uuid;

use crate::common::describe;
use crate::helpers::{
    bytea, context_mac, sha256, unix_ms_in, world, ServerConn, World, READABLE_NAMES,
};

/// What an attempt does to the connection's commit-reveal chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// The server's next transaction on the connection enters its tenant as before.
    Kept,
    /// The database refuses the server's next context: the server closes the connection.
    Broken,
}
use Chain::{Broken, Kept};

/// Attempts written as SQL over the values of [`Values`] (`{name}` placeholders).
/// Every one runs inside the server's transaction for tenant A; ` ;; ` separates
/// messages (a message of several statements runs as one implicit transaction).
const DIRECT: &[(&str, Chain, &str)] = &[
    // The carrier of the verified context, every way of writing it.
    ("set_backtrace_functions_for_the_session", Kept, "SET backtrace_functions = '{ctx}'"),
    ("set_local_backtrace_functions", Kept, "SET LOCAL backtrace_functions = '{ctx}'"),
    ("set_config_backtrace_functions_local", Kept, "SELECT set_config('backtrace_functions', '{ctx}', true)"),
    ("set_config_backtrace_functions_for_the_session", Kept, "SELECT set_config('backtrace_functions', '{ctx}', false)"),
    ("append_the_victim_to_the_visible_subtree", Kept, "SELECT set_config('backtrace_functions', current_setting('backtrace_functions') || ',{vh}', true)"),
    ("reset_backtrace_functions", Kept, "RESET backtrace_functions"),
    ("set_backtrace_functions_to_default", Kept, "SET LOCAL backtrace_functions TO DEFAULT"),
    ("update_pg_settings", Kept, "UPDATE pg_settings SET setting = '{ctx}' WHERE name = 'backtrace_functions'"),
    // The settings the old context was made of: settable, read by nothing.
    ("set_old_app_settings_for_the_session", Kept, "SET app.current_tenant_id = '{v}'; SET app.visible_tenant_ids = '{{v}}'; SET app.current_user_id = '{v}'; SET app.actor = 'admin'; SET app.current_tenant_schema = 'tenantry'; SELECT tenantry.setup_connection()"),
    ("set_local_old_app_settings", Kept, "SET LOCAL app.current_tenant_id = '{v}'; SET LOCAL app.visible_tenant_ids = '{{a},{v}}'; SET LOCAL app.current_user_id = '{v}'; SET LOCAL app.actor = 'admin'; SET LOCAL app.current_tenant_schema = 'tenantry'"),
    ("set_config_old_app_settings", Kept, "SELECT set_config('app.current_tenant_id', '{v}', true), set_config('app.visible_tenant_ids', '{{v}}', true), set_config('app.current_user_id', '{v}', false), set_config('app.actor', 'admin', false), set_config('app.current_tenant_schema', 'tenantry', true)"),
    // RESET and DISCARD: they can only empty the setting, never fill it.
    ("reset_all_in_the_transaction", Broken, "RESET ALL"),
    // The connection left in another role: enter_context wants the role the
    // server runs as, so the server's next context is refused.
    ("set_role_for_the_session_after_commit", Broken, "COMMIT ;; SET ROLE tenantry_app_own"),
    ("reset_all_outside_the_transaction", Broken, "COMMIT ;; RESET ALL"),
    ("discard_all_outside_the_transaction", Broken, "COMMIT ;; DISCARD ALL"),
    ("commit_early_and_read_without_a_context", Kept, "COMMIT; SELECT name FROM tenantry.resources"),
    // The guide's setters with the victim's id.
    ("set_tenant_context_with_the_victims_id", Kept, "SELECT tenantry.set_tenant_context('{v}')"),
    ("set_tenant_context_local_with_the_victims_id", Kept, "SELECT tenantry.set_tenant_context_local('{v}', NULL, 'admin')"),
    ("setup_connection_after_set_tenant_context", Kept, "SELECT tenantry.set_tenant_context('{v}'); SELECT tenantry.setup_connection()"),
    ("set_actor_local_carrying_a_set_statement", Kept, "SELECT tenantry.set_actor_local($q$x'; SET LOCAL backtrace_functions = '{ctx}'; --$q$)"),
    // enter_context: the reveal is what the attacker does not have.
    ("enter_context_with_a_random_reveal", Kept, "SELECT tenantry.enter_context({rand}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_with_the_commitment_as_reveal", Kept, "SELECT tenantry.enter_context({commitment}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_with_a_reveal_replayed_from_an_earlier_transaction", Kept, "SELECT tenantry.enter_context({old_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_with_a_reveal_captured_on_another_connection", Kept, "SELECT tenantry.enter_context({other_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL), tenantry.enter_context({other_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_a_second_time_in_the_transaction", Kept, "SELECT tenantry.enter_context({this_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_with_nulls", Kept, "SELECT tenantry.enter_context(NULL, NULL, '{v}', NULL, NULL, NULL, NULL, NULL), tenantry.enter_context(NULL, {next}, '{v}', NULL, NULL, NULL, NULL, ',stenantry,v{vh}'), tenantry.enter_context({rand}, NULL, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_with_a_tenant_part_naming_the_victim", Kept, "SELECT tenantry.enter_context({rand}, {next}, '{a}', NULL, NULL, NULL, NULL, ',stenantry,v{ah},{vh}')"),
    ("enter_context_with_a_forged_subtree_for_the_victim", Kept, "SELECT tenantry.enter_context({rand}, {next}, '{v}', NULL, NULL, NULL, NULL, ',stenantry,v{vh}')"),
    // enter_context_signed: the key is what the attacker does not have.
    ("enter_context_signed_with_a_bad_mac", Kept, "SELECT tenantry.enter_context_signed(0, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {rand})"),
    ("enter_context_signed_with_a_mac_for_a_reused_for_the_victim", Kept, "SELECT tenantry.enter_context_signed(0, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_a})"),
    ("enter_context_signed_for_the_victim_replayed_after_its_expiry", Kept, "SELECT tenantry.enter_context_signed(0, {past}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_v_past})"),
    // Microseconds for milliseconds: valid for tens of thousands of years, were it accepted.
    ("enter_context_signed_for_the_victim_expiring_in_microseconds", Kept, "SELECT tenantry.enter_context_signed(0, {far}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_v_far})"),
    ("enter_context_signed_for_the_victim_captured_on_another_backend", Kept, "SELECT tenantry.enter_context_signed({other_pid}, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_v_other_pid})"),
    ("enter_context_signed_for_the_victim_with_this_backends_pid_and_another_mac", Kept, "SELECT tenantry.enter_context_signed({pid}, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_v_other_pid})"),
    ("enter_context_signed_with_an_unknown_key_id", Kept, "SELECT tenantry.enter_context_signed(0, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, 999, {mac_v_any})"),
    ("enter_context_signed_with_nulls", Kept, "SELECT tenantry.enter_context_signed(NULL, NULL, '{v}', NULL, NULL, NULL, NULL, NULL, NULL, NULL), tenantry.enter_context_signed(0, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, NULL)"),
    // open_context_session: a chain of the attacker's own.
    ("open_context_session_with_a_forged_mac", Kept, "SELECT tenantry.open_context_session({pid}, {open_nonce}, {exp}, {attacker_commitment}, {key_id}, {rand}); SELECT tenantry.enter_context({attacker_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("open_context_session_with_a_mac_for_another_backend", Kept, "SELECT tenantry.open_context_session({other_pid}, {other_open_nonce}, {other_open_exp}, {other_open_commitment}, {key_id}, {other_open_mac}); SELECT tenantry.enter_context({attacker_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    // A captured opening replayed (the draw it is bound to is past): its first reveal is refused.
    ("open_context_session_replayed_then_its_first_reveal", Kept, "SELECT tenantry.open_context_session({pid}, {open_nonce}, {open_exp}, {open_commitment}, {key_id}, {open_mac}); SELECT tenantry.enter_context({open_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("open_context_session_replayed_in_a_new_transaction_then_its_first_reveal", Broken, "ROLLBACK; BEGIN; SELECT tenantry.open_context_session({pid}, {open_nonce}, {open_exp}, {open_commitment}, {key_id}, {open_mac}); SELECT tenantry.enter_context({open_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("open_context_session_replayed_after_discard_sequences", Broken, "COMMIT ;; DISCARD SEQUENCES ;; SELECT tenantry.open_context_session({pid}, {open_nonce}, {open_exp}, {open_commitment}, {key_id}, {open_mac}) ;; BEGIN; SELECT tenantry.enter_context({open_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("draw_a_nonce_then_replay_the_opening", Broken, "SELECT tenantry.context_session_nonce() > 0; SELECT tenantry.open_context_session({pid}, {open_nonce}, {open_exp}, {open_commitment}, {key_id}, {open_mac}); SELECT tenantry.enter_context({open_secret}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    // Ending the server's transaction from inside: the chain's commitment
    // rolls back with it, its draw does not, so no secret it revealed is
    // accepted again (not even this transaction's, captured from a log).
    ("rollback_then_enter_context_with_a_random_reveal", Broken, "ROLLBACK; BEGIN; SELECT tenantry.enter_context({rand}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("rollback_then_enter_context_with_the_rolled_back_commitment", Broken, "ROLLBACK; BEGIN; SELECT tenantry.enter_context(decode(substr(current_setting('backtrace_functions'), 12, 64), 'hex'), {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("rollback_then_enter_context_with_an_earlier_reveal", Broken, "ROLLBACK; BEGIN; SELECT tenantry.enter_context({old_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("rollback_then_enter_context_with_this_transactions_reveal", Broken, "ROLLBACK; BEGIN; SELECT tenantry.enter_context({this_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("rollback_outside_then_enter_context_with_this_transactions_reveal", Broken, "ROLLBACK ;; SELECT tenantry.enter_context({this_reveal}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL); SELECT name FROM tenantry.resources"),
    ("savepoint_rolled_back_around_a_setter", Kept, "SAVEPOINT s; SELECT tenantry.set_tenant_context('{v}'); ROLLBACK TO SAVEPOINT s; SELECT name FROM tenantry.resources"),
    // Prepared statements and DO blocks around the setters.
    ("prepare_and_execute_set_config", Kept, "PREPARE forge_{n}(text) AS SELECT set_config('backtrace_functions', $1, true); EXECUTE forge_{n}('{ctx}')"),
    ("prepare_and_execute_set_tenant_context_local", Kept, "PREPARE forge_{n}(uuid) AS SELECT tenantry.set_tenant_context_local($1); EXECUTE forge_{n}('{v}')"),
    ("prepare_and_execute_enter_context", Kept, "PREPARE forge_{n}(bytea, uuid) AS SELECT tenantry.enter_context($1, {next}, $2, NULL, NULL, NULL, NULL, NULL); EXECUTE forge_{n}({rand}, '{v}')"),
    ("do_block_set_config", Kept, "DO $d$ BEGIN PERFORM set_config('backtrace_functions', '{ctx}', true); END $d$"),
    ("do_block_set_local_by_dynamic_sql", Kept, "DO $d$ BEGIN EXECUTE 'SET LOCAL backtrace_functions = ''{ctx}'''; END $d$"),
    ("do_block_set_tenant_context", Kept, "DO $d$ BEGIN PERFORM tenantry.set_tenant_context('{v}'); END $d$"),
    // Internal functions with crafted arguments: not executable.
    ("context_mac_with_crafted_arguments", Kept, "SELECT tenantry.context_mac({key_id}, 'enter|0|{exp}|{v}||||')"),
    ("context_value_with_crafted_arguments", Kept, "SELECT tenantry.context_value('{v}', NULL, NULL, NULL, NULL, ',stenantry,v{vh}')"),
    ("tenant_context_part_with_crafted_arguments", Kept, "SELECT tenantry.tenant_context_part('{v}')"),
    ("operator_session_called_directly", Kept, "SELECT tenantry.operator_session()"),
    ("read_the_context_keys", Kept, "SELECT key_id, secret FROM tenantry.context_keys"),
    ("mint_a_context_key", Kept, "INSERT INTO tenantry.context_keys (key_id, secret, inner_pad, outer_pad) VALUES (998, {rand}, {rand64}, {rand64})"),
    // Defaults and definitions that would set it for us.
    ("alter_role_set_backtrace_functions", Kept, "ALTER ROLE tenantry_app SET backtrace_functions = '{ctx}'"),
    ("alter_own_login_set_backtrace_functions", Kept, "ALTER ROLE tenantry_server SET backtrace_functions = '{ctx}'"),
    ("alter_database_set_backtrace_functions", Kept, "DO $d$ BEGIN EXECUTE format('ALTER DATABASE %I SET backtrace_functions = %L', current_database(), '{ctx}'); END $d$"),
    ("pg_temp_function_with_a_set_backtrace_functions_clause", Kept, "CREATE FUNCTION pg_temp.forge_{n}() RETURNS bigint LANGUAGE sql SET backtrace_functions = '{ctx}' AS $f$ SELECT count(*) FROM tenantry.resources $f$; SELECT pg_temp.forge_{n}()"),
    ("set_role_owner", Kept, "SET ROLE tenantry_owner"),
    ("set_session_authorization_owner", Kept, "SET SESSION AUTHORIZATION tenantry_owner"),
];

/// The roles the login may assume, and the setters tried as each.
const ROLES: &[&str] = &[
    "tenantry_admin",
    "tenantry_logger",
    "tenantry_app_own",
    "tenantry_app_shared",
    "tenantry_server",
];
const SETTERS_AS_ROLE: &[(&str, &str)] = &[
    ("set_config", "SELECT set_config('backtrace_functions', '{ctx}', true)"),
    ("set_tenant_context", "SELECT tenantry.set_tenant_context('{v}')"),
    ("set_tenant_context_local", "SELECT tenantry.set_tenant_context_local('{v}')"),
    ("enter_context", "SELECT tenantry.enter_context({rand}, {next}, '{v}', NULL, NULL, NULL, NULL, NULL)"),
    ("enter_context_signed", "SELECT tenantry.enter_context_signed(0, {exp}, '{v}', NULL, NULL, NULL, NULL, NULL, {key_id}, {mac_a})"),
];

struct Attempt {
    name: String,
    chain: Chain,
    sql: String,
}

/// Every attempt of the catalogue, named.
fn catalogue() -> Vec<Attempt> {
    let mut all: Vec<Attempt> = DIRECT
        .iter()
        .map(|&(name, chain, sql)| Attempt {
            name: name.to_owned(),
            chain,
            sql: sql.to_owned(),
        })
        .collect();
    for role in ROLES {
        // tenantry_server is the login itself: RESET ROLE reaches it.
        let (switch, for_session) = match *role {
            "tenantry_server" => ("RESET ROLE", "RESET ROLE"),
            _ => ("SET LOCAL ROLE", "SET ROLE"),
        };
        for (setter, sql) in SETTERS_AS_ROLE {
            all.push(Attempt {
                name: format!("set_role_{role}_then_{setter}"),
                chain: Kept,
                sql: format!(
                    "{switch}{}; {sql}",
                    if *role == "tenantry_server" {
                        String::new()
                    } else {
                        format!(" {role}")
                    }
                ),
            });
        }
        // A session-level switch inside the transaction: the attacker's next
        // read fails in that role, the transaction rolls back and takes the
        // SET ROLE with it. (Committed first, it breaks the chain: see
        // set_role_for_the_session_after_commit.)
        all.push(Attempt {
            name: format!("set_role_{role}_for_the_session"),
            chain: Kept,
            sql: if *role == "tenantry_server" {
                for_session.to_owned()
            } else {
                format!("{for_session} {role}")
            },
        });
    }
    all
}

/// The values an attempt's SQL is written over, as the attacker may know them.
struct Values {
    pairs: Vec<(&'static str, String)>,
}

impl Values {
    fn fill(&self, sql: &str) -> String {
        self.pairs.iter().fold(sql.to_owned(), |s, (k, v)| {
            s.replace(&format!("{{{k}}}"), v)
        })
    }
}

/// The other connection an attacker might have captured values from.
struct Elsewhere {
    conn: ServerConn,
}

fn hex_id(t: Uuid) -> String {
    t.simple().to_string()
}

/// A signature over a signed context's fields, as the key's holder makes it.
fn signed_mac(pid: i32, expires_at: i64, t: Uuid) -> Vec<u8> {
    context_mac(&format!("enter|{pid}|{expires_at}|{t}|||*||"))
}

fn values(a: Uuid, victim: Uuid, server: &ServerConn, other: &Elsewhere, n: usize) -> Values {
    let random = |len: usize| bytea(&(0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>());
    let key_id = tenantry_db::testing::context_key().id();
    let exp = unix_ms_in(60);
    let past = unix_ms_in(-1);
    let attacker_secret: [u8; 32] = rand::random();
    let zeros = "0".repeat(32);
    let revealed = &server.revealed;
    let (open_nonce, open_exp, open_commitment, open_mac) = &server.opened_with;
    let (other_open_nonce, other_open_exp, other_open_commitment, other_open_mac) =
        &other.conn.opened_with;
    let pairs = vec![
        ("a", a.to_string()),
        ("v", victim.to_string()),
        ("ah", hex_id(a)),
        ("vh", hex_id(victim)),
        (
            "ctx",
            format!(
                "tenantry_v1_{}_{zeros},a,stenantry,v{}",
                hex_id(victim),
                hex_id(victim)
            ),
        ),
        ("rand64", random(64)),
        ("rand", random(32)),
        ("next", random(32)),
        ("commitment", bytea(&server.commitment())),
        ("this_reveal", bytea(&revealed[revealed.len() - 1])),
        ("old_reveal", bytea(&revealed[revealed.len() - 2])),
        (
            "other_reveal",
            bytea(other.conn.revealed.last().expect("a transaction ran")),
        ),
        ("other_secret", bytea(&other.conn.secret())),
        ("pid", server.pid.to_string()),
        ("other_pid", other.conn.pid.to_string()),
        ("key_id", key_id.to_string()),
        ("exp", exp.to_string()),
        ("past", past.to_string()),
        ("mac_a", bytea(&signed_mac(0, exp, a))),
        ("mac_v_past", bytea(&signed_mac(0, past, victim))),
        ("far", (exp * 1000).to_string()),
        ("mac_v_far", bytea(&signed_mac(0, exp * 1000, victim))),
        (
            "mac_v_other_pid",
            bytea(&signed_mac(other.conn.pid, exp, victim)),
        ),
        ("mac_v_any", bytea(&signed_mac(0, exp, victim))),
        ("attacker_secret", bytea(&attacker_secret)),
        ("attacker_commitment", bytea(&sha256(&attacker_secret))),
        ("open_nonce", open_nonce.to_string()),
        ("open_exp", open_exp.to_string()),
        ("open_secret", bytea(&server.opened_secret)),
        ("open_commitment", bytea(open_commitment)),
        ("open_mac", bytea(open_mac)),
        ("other_open_nonce", other_open_nonce.to_string()),
        ("other_open_exp", other_open_exp.to_string()),
        ("other_open_commitment", bytea(other_open_commitment)),
        ("other_open_mac", bytea(other_open_mac)),
        ("n", n.to_string()),
    ];
    Values { pairs }
}

/// What the attacker got back from an attempt: rows (as text) or the error
/// (SQLSTATE, message, detail), with the named tenant's id scrubbed.
type Transcript = Result<Vec<Vec<Option<String>>>, (String, String, String)>;

async fn run(c: &Client, sql: &str, victim: Uuid) -> Transcript {
    let scrub = |s: &str| {
        s.replace(&victim.to_string(), "<id>")
            .replace(&hex_id(victim), "<id>")
    };
    let mut rows = Vec::new();
    for message in sql.split(" ;; ") {
        match c.simple_query(message).await {
            Ok(messages) => rows.extend(messages.iter().filter_map(|m| {
                match m {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(scrub))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            })),
            Err(e) => {
                let d = e
                    .as_db_error()
                    .unwrap_or_else(|| panic!("{message}: not a database error: {e}"));
                return Err((
                    d.code().code().to_owned(),
                    scrub(d.message()),
                    scrub(d.detail().unwrap_or("")),
                ));
            }
        }
    }
    Ok(rows)
}

/// The attacker's next statements on the same connection, in whatever state
/// the attempt left it: nothing of B may be read, and no row of B changed.
/// An aborted transaction is rolled back first (the attacker's only way on).
/// Returns whether it had to roll the transaction back (an earlier statement had aborted it).
async fn probe(c: &Client, w: &World, name: &str) -> bool {
    let mut rolled_back = false;
    let b = w.b;
    let reads = [
        READABLE_NAMES.to_owned(),
        format!(
            "SELECT name FROM tenantry.resources WHERE tenant_id = '{b}' OR id = '{}'",
            w.rb
        ),
        "SELECT tenantry.current_tenant_id()::text".to_owned(),
        "SELECT unnest(tenantry.visible_tenant_ids())::text".to_owned(),
        format!("SELECT name FROM tenantry.tenants WHERE tenant_id = '{b}'"),
    ];
    for _ in 0..2 {
        let mut aborted = false;
        for sql in &reads {
            match c.simple_query(sql).await {
                Ok(messages) => {
                    for m in messages {
                        if let SimpleQueryMessage::Row(row) = m {
                            let value = row.get(0).unwrap_or("").to_owned();
                            assert!(
                                value != "b-secret"
                                    && value != "tenant-b"
                                    && value != b.to_string(),
                                "{name}: the attacker read {value:?} with {sql}"
                            );
                        }
                    }
                }
                Err(e) => aborted |= e.code().map(|c| c.code()) == Some("25P02"),
            }
        }
        for sql in [
            format!("UPDATE tenantry.resources SET name = 'forged' WHERE tenant_id = '{b}'"),
            format!("DELETE FROM tenantry.resources WHERE id = '{}'", w.rb),
        ] {
            match c.execute(sql.as_str(), &[]).await {
                Ok(n) => assert_eq!(n, 0, "{name}: {sql} changed {n} rows of b"),
                Err(e) => aborted |= e.code().map(|c| c.code()) == Some("25P02"),
            }
        }
        if !aborted {
            break;
        }
        let _ = c.batch_execute("ROLLBACK").await;
        rolled_back = true;
    }
    rolled_back
}

/// B's rows as a superuser sees them: resources, its tenant row, members,
/// roles and keys.
async fn snapshot_of_b(w: &World) -> Vec<String> {
    let su = w.tdb.superuser_client().await;
    let mut all = Vec::new();
    for sql in [
        "SELECT row_to_json(r)::text FROM tenantry.resources r WHERE tenant_id = $1",
        "SELECT concat_ws('|', name, status, parent_id, settings) FROM tenantry.tenants WHERE tenant_id = $1",
        "SELECT row_to_json(m)::text FROM tenantry.tenant_members m WHERE tenant_id = $1",
        "SELECT row_to_json(r)::text FROM tenantry.roles r WHERE tenant_id = $1",
        "SELECT row_to_json(k)::text FROM tenantry.api_keys k WHERE tenant_id = $1",
        "SELECT count(*)::text FROM tenantry.resources",
    ] {
        let rows = su.query(sql.replace("$1", &format!("'{}'", w.b)).as_str(), &[]).await;
        let mut v: Vec<String> = rows
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        all.extend(v);
    }
    all
}

/// One run of `attempt` naming `victim`, on the server's connection (opened
/// anew, as the server would, when the previous attempt broke its chain).
/// Returns what the attacker got back and what became of the chain.
async fn attempt_once(
    w: &World,
    slot: &mut Option<ServerConn>,
    other: &Elsewhere,
    attempt: &Attempt,
    victim: Uuid,
    n: usize,
) -> (Transcript, Chain) {
    if slot.is_none() {
        let mut fresh = ServerConn::open(&w.tdb).await;
        // One earlier transaction, so that there is a reveal to replay.
        assert_eq!(
            fresh.names_seen_by(w.a).await,
            Some(vec!["a-doc".to_owned()])
        );
        *slot = Some(fresh);
    }
    let server = slot.as_mut().unwrap();
    assert!(server.begin(w.a).await.is_some(), "the server enters a");
    let sql = values(w.a, victim, server, other, n).fill(&attempt.sql);
    let transcript = run(&server.client, &sql, victim).await;
    let rolled_back = probe(&server.client, w, &attempt.name).await;
    // The server saw its statement fail (it rolls back) or succeed (it commits).
    if transcript.is_err() || rolled_back {
        server.rollback().await;
    } else {
        server.commit().await;
    }
    // The server's next transaction on this connection, for a.
    let chain = match server.names_seen_by(w.a).await {
        Some(names) => {
            assert_eq!(names, ["a-doc"], "{}: a's next transaction", attempt.name);
            Kept
        }
        None => {
            *slot = None;
            Broken
        }
    };
    (transcript, chain)
}

#[tokio::test]
async fn sql_injection_on_a_server_connection_in_tenant_a_forges_no_context_for_tenant_b() {
    let w = world().await;
    let before = snapshot_of_b(&w).await;
    // Another server connection, which served b: its reveals are the ones captured.
    let mut conn = ServerConn::open(&w.tdb).await;
    assert!(conn.names_seen_by(w.b).await.is_some());
    let other = Elsewhere { conn };
    let missing = Uuid::new_v4();
    let mut slot: Option<ServerConn> = None;
    let attempts = catalogue();
    assert!(attempts.len() >= 25);
    let mut report = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        let (for_b, chain) = attempt_once(&w, &mut slot, &other, attempt, w.b, 2 * i).await;
        let (for_missing, chain_missing) =
            attempt_once(&w, &mut slot, &other, attempt, missing, 2 * i + 1).await;
        assert_eq!(
            for_b, for_missing,
            "{}: b and a missing tenant must answer alike",
            attempt.name
        );
        assert_eq!(chain, chain_missing, "{}", attempt.name);
        report.push(format!("{} | {:?} | {:?}", attempt.name, chain, for_b));
        assert_eq!(
            chain, attempt.chain,
            "{}: the chain, got {for_b:?}",
            attempt.name
        );
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(snapshot_of_b(&w).await, before, "no row of b changed");
    // The positive path: the last connection (or the one the server opens
    // instead of a broken one) still serves a, and b through the proper door.
    let mut server = match slot {
        Some(s) => s,
        None => ServerConn::open(&w.tdb).await,
    };
    assert_eq!(
        server.names_seen_by(w.a).await,
        Some(vec!["a-doc".to_owned()])
    );
    assert_eq!(
        server.names_seen_by(w.b).await,
        Some(vec!["b-secret".to_owned()])
    );
}

/// A reveal or a session opening the attacker captured (from the server's
/// statement log, say: they travel only as bind parameters) is refused once
/// used: after the transaction that revealed it rolled back, and an opening
/// replayed on its own backend (the draw it was bound to is past).
#[tokio::test]
async fn a_captured_reveal_is_useless_after_a_rollback_or_a_replayed_session_opening() {
    let w = world().await;
    let mut server = ServerConn::open(&w.tdb).await;
    assert!(server.names_seen_by(w.a).await.is_some());
    assert!(server.begin(w.a).await.is_some());
    let (nonce, exp, commitment, mac) = server.opened_with.clone();
    let key_id = tenantry_db::testing::context_key().id();
    let replayed_open = format!(
        "SELECT tenantry.open_context_session({}, {nonce}, {exp}, {}, {key_id}, {}); SELECT tenantry.enter_context({}, {}, '{}', NULL, NULL, NULL, NULL, NULL); SELECT name FROM tenantry.resources",
        server.pid,
        bytea(&commitment),
        bytea(&mac),
        bytea(&server.opened_secret),
        bytea(&[7; 32]),
        w.b
    );
    let after_rollback = format!(
        "ROLLBACK; BEGIN; SELECT tenantry.enter_context({}, {}, '{}', NULL, NULL, NULL, NULL, NULL); SELECT name FROM tenantry.resources",
        bytea(server.revealed.last().unwrap()),
        bytea(&[7; 32]),
        w.b
    );
    for sql in [replayed_open, after_rollback] {
        let got = run(&server.client, &sql, w.b).await;
        assert!(!format!("{got:?}").contains("b-secret"), "{sql}: {got:?}");
        server.rollback().await;
        server = ServerConn::open(&w.tdb).await;
        assert!(server.names_seen_by(w.a).await.is_some());
        assert!(server.begin(w.a).await.is_some());
    }
}

/// The same door against the key verification, which runs as one statement
/// without a transaction block on a connection no caller SQL touched: SQL of
/// tenant a replaces the cached verification statement with one that answers
/// b's key for any key. The connection's next verification must not run it:
/// an unknown key stays unknown, and b's identity is never handed out.
#[tokio::test]
async fn a_replaced_key_verification_statement_never_vouches_for_a_key_it_was_not_given() {
    use tenantry_db::{DbError, NewKeyOptions, StatementMode, TenantContext, TenantId};
    let w = world().await;
    let db = w.tdb.database_with(StatementMode::Prepared, 1);
    let (a, b) = (TenantId::from_uuid(w.a), TenantId::from_uuid(w.b));
    let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
    let b_key = scope
        .create_api_key(&NewKeyOptions::default())
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // The verification's statement is prepared and cached on the one connection.
    let b_identity = db.verify_key(b_key.secret.expose()).await.unwrap().unwrap();
    assert_eq!(b_identity.tenant_id, b);
    let forged = format!("tk_{}_{}", "0".repeat(12), "a".repeat(64));
    assert!(db.verify_key(&forged).await.unwrap().is_none());
    // a's request carries injected SQL that knows b's key (the worst case).
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute(
            &format!(
                r#"DO $d$
                 DECLARE s text := (SELECT name FROM pg_prepared_statements
                                    WHERE statement = 'SELECT tenantry.verify_api_key_hash($1, $2)');
                 BEGIN
                     EXECUTE format('DEALLOCATE %I', s);
                     EXECUTE format($p$PREPARE %I (text, bytea) AS SELECT tenantry.verify_api_key_hash('{prefix}', '\x{hash}'::bytea) WHERE $1 IS NOT NULL AND $2 IS NOT NULL$p$, s);
                 END $d$"#,
                prefix = b_key.secret.prefix(),
                hash = hex::encode(b_key.secret.sha256()),
            ),
            &[],
        )
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // The next verification on that connection: refused before it runs (the
    // connection is closed) or the truth; never b's identity for another key.
    match db.verify_key(&forged).await {
        Err(DbError::Unavailable(_) | DbError::Contention(_)) | Ok(None) => {}
        Ok(Some(identity)) => panic!("the replaced statement vouched for {}", identity.tenant_id),
        Err(other) => panic!("unexpected: {other:?}"),
    }
    assert!(db.verify_key(&forged).await.unwrap().is_none());
    assert_eq!(
        db.verify_key(b_key.secret.expose())
            .await
            .unwrap()
            .unwrap()
            .tenant_id,
        b
    );
}

/// SQL run through the library's own door (an application passing text it
/// did not write to `TenantScope::execute`) replaces, by DEALLOCATE and
/// PREPARE under the same name, a statement the library has cached on the
/// connection, with one that copies whatever it reads into a session setting.
/// The connection's next transaction, for another tenant, must not run it:
/// the library checks such a connection's session before the context
/// (`assert_clean_session`), and closes it.
#[tokio::test]
async fn a_cached_statement_replaced_through_the_librarys_sql_door_never_runs_for_another_tenant() {
    use tenantry_db::{DbError, StatementMode, TenantContext, TenantId};
    let w = world().await;
    let db = w.tdb.database_with(StatementMode::Prepared, 1);
    let (a, b) = (TenantId::from_uuid(w.a), TenantId::from_uuid(w.b));
    const READ: &str = "SELECT name FROM tenantry.resources ORDER BY name";
    // b's request: the statement is prepared and cached on the one connection.
    let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
    let names: Vec<(String,)> = scope.query(READ, &[]).await.unwrap();
    assert_eq!(names, [("b-secret".to_owned(),)]);
    scope.commit().await.unwrap();
    // a's request carries injected SQL.
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute(
            r#"DO $d$
             DECLARE s text := (SELECT name FROM pg_prepared_statements
                                WHERE statement = 'SELECT name FROM tenantry.resources ORDER BY name');
             BEGIN
                 EXECUTE format('DEALLOCATE %I', s);
                 EXECUTE format($p$PREPARE %I AS SELECT set_config('app.loot', coalesce((SELECT string_agg(name, ',') FROM tenantry.resources), ''), false) AS name$p$, s);
             END $d$"#,
            &[],
        )
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // b's next request on that connection: refused before its context (the
    // connection is closed), or answered with b's own rows; never the replaced
    // statement in b's context.
    let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
    match scope.query::<(String,)>(READ, &[]).await {
        Err(DbError::Unavailable(_) | DbError::Contention(_)) => {}
        Ok(names) => assert_eq!(names, [("b-secret".to_owned(),)]),
        Err(other) => panic!("unexpected: {other:?}"),
    }
    drop(scope);
    // The retry works, and whatever connection a reads from next holds no loot.
    let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
    let names: Vec<(String,)> = scope.query(READ, &[]).await.unwrap();
    assert_eq!(names, [("b-secret".to_owned(),)]);
    scope.commit().await.unwrap();
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    let (loot,): (Option<String>,) = scope
        .query_one("SELECT current_setting('app.loot', true)", &[])
        .await
        .unwrap();
    assert!(
        !loot.unwrap_or_default().contains("b-secret"),
        "the replaced statement ran in b's context"
    );
}
