//! README.md's curl walkthroughs run as written (bash, curl, jq) against a real server, and every line whose comment says what it prints prints that.

use std::process::Command;

use crate::helpers::TestApp;

/// The body of the `n`th (from 0) ```sh block after `heading`.
fn sh_block(readme: &str, heading: &str, n: usize) -> String {
    readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has {heading:?}"))
        .split("```sh\n")
        .nth(n + 1)
        .unwrap_or_else(|| panic!("{heading:?} has shell block {n}"))
        .split("```")
        .next()
        .unwrap()
        .to_owned()
}

/// What a walkthrough line's comment says it prints: a JSON string, array
/// or number, or `true`, at the start of the comment; `only` before it
/// means every printed line is that value. `None` for comments that
/// describe rather than show (`# acme's resources`).
fn expected(comment: &str) -> Option<(String, bool)> {
    let (only, value) = match comment.strip_prefix("only ") {
        Some(rest) => (true, rest),
        None => (false, comment),
    };
    let end = if let Some(quoted) = value.strip_prefix('"') {
        quoted.find('"').map(|i| i + 2)?
    } else if value.starts_with('[') {
        value.find(']').map(|i| i + 1)?
    } else if value.starts_with(|c: char| c.is_ascii_digit()) {
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len())
    } else if value.starts_with("true") {
        4
    } else {
        return None;
    };
    Some((value[..end].to_owned(), only))
}

/// Instruments `script`: each top-level line whose trailing comment says
/// what it prints is wrapped in markers, so its output can be told apart.
/// Returns the script and, per checked line, the line and its expectation.
fn instrument(script: &str) -> (String, Vec<(String, String, bool)>) {
    let mut out = String::new();
    let mut checks = Vec::new();
    for line in script.lines() {
        let comment = line
            .split_once("   # ")
            .or_else(|| line.split_once("  # "))
            .filter(|(code, _)| !code.trim().is_empty() && !code.contains("() {"))
            .map(|(_, comment)| comment.trim());
        match comment.and_then(expected) {
            Some((value, only)) => {
                let n = checks.len();
                out.push_str(&format!("echo '@@begin {n}'\n{line}\necho '@@end {n}'\n"));
                checks.push((line.to_owned(), value, only));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (out, checks)
}

/// The output between the markers of check `n`.
fn output_of(stdout: &str, n: usize) -> &str {
    let begin = format!("@@begin {n}\n");
    let after = stdout
        .split_once(&begin)
        .unwrap_or_else(|| panic!("check {n} ran: {stdout}"))
        .1;
    after
        .split_once(&format!("@@end {n}\n"))
        .unwrap_or_else(|| panic!("check {n} ended: {stdout}"))
        .0
}

#[test]
fn a_walkthrough_comment_names_the_value_it_shows_or_nothing() {
    assert_eq!(expected("\"plan\""), Some(("\"plan\"".into(), false)));
    assert_eq!(
        expected("only \"eu-report\""),
        Some(("\"eu-report\"".into(), true))
    );
    assert_eq!(
        expected("2: own and the child's"),
        Some(("2".into(), false))
    );
    assert_eq!(
        expected("[\"acme\",true]"),
        Some(("[\"acme\",true]".into(), false))
    );
    assert_eq!(expected("true, same id"), Some(("true".into(), false)));
    assert_eq!(expected("404 problem+json"), Some(("404".into(), false)));
    assert_eq!(expected("acme's resources"), None);
}

/// Both walkthroughs in one shell, as a reader runs them: the first block
/// while `serve` runs, the people block after a restart that trusts the
/// identity provider (here one server trusting it from the start: API keys
/// work the same either way). The only edits are the server's address and
/// where the admin token is read from.
#[tokio::test]
async fn the_readmes_curl_walkthroughs_run_as_written_and_print_what_their_comments_say() {
    let readme = include_str!("../../../../README.md");
    let people = readme
        .split("\n### People signing in with your identity provider\n")
        .nth(1)
        .expect("README has the people walkthrough");
    let setting = |name: &str| {
        people
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the walkthrough sets {name}"))
            .to_owned()
    };
    let mut jwt = tenantry_axum::jwt::JwtConfig::new(
        setting("TENANTRY_JWT_ISSUER"),
        setting("TENANTRY_JWT_AUDIENCE"),
    );
    // A secret of its own, never one printed in the README (a review found
    // the README's example secret accepted, so that a walkthrough copied to
    // production let any reader sign in as anyone).
    assert!(
        people.contains("export JWT_SECRET=$(openssl rand -hex 32)")
            && setting("TENANTRY_JWT_HS256_SECRET") == "\"$JWT_SECRET\"",
        "the walkthrough makes its secret and hands it to serve"
    );
    let secret = format!("{:032x}{:032x}", rand_u128(), rand_u128());
    jwt.hs256_secret = Some(secret.clone());
    let app = TestApp::spawn_with(move |s| s.jwt = Some(jwt)).await;

    let keys = sh_block(readme, "\n## Walkthrough with curl\n", 0);
    for written in [
        "API=http://127.0.0.1:8080\n",
        "$(cat .tenantry/admin.token)",
    ] {
        assert!(keys.contains(written), "the walkthrough has {written:?}");
    }
    let keys = keys
        .replace(
            "API=http://127.0.0.1:8080\n",
            &format!("API={}\n", app.base),
        )
        .replace("$(cat .tenantry/admin.token)", &app.admin_token);
    let script = format!(
        "export JWT_SECRET={secret}\n{keys}\n{}",
        sh_block(
            readme,
            "\n### People signing in with your identity provider\n",
            1
        )
    );
    let (script, checks) = instrument(&script);
    assert!(
        checks.len() >= 12,
        "the walkthroughs' comments show what {} lines print; expected at least 12",
        checks.len()
    );

    let run = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(std::env::temp_dir())
            .output()
    })
    .await
    .unwrap()
    .expect(
        "bash runs the walkthroughs; they need curl, jq and openssl \
         (apt-get install curl jq openssl)",
    );
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "the walkthroughs ran to the end: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    for (n, (line, value, only)) in checks.iter().enumerate() {
        let printed = output_of(&stdout, n);
        if *only {
            assert!(
                !printed.trim().is_empty() && printed.lines().all(|l| l.trim() == value),
                "{line}\nprinted {printed:?}, only {value} expected"
            );
        } else {
            assert!(
                printed.contains(value.as_str()),
                "{line}\nprinted {printed:?}, {value} expected"
            );
        }
    }
}

/// 128 random bits.
fn rand_u128() -> u128 {
    u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes())
}
