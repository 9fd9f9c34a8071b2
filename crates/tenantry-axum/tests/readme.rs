//! README.md checked against the code: its Rust path is the code of `examples/readme.rs`, which `cargo test` compiles, and its people walkthrough mints tokens the verifier accepts with a verified email.

#[test]
fn the_readmes_rust_path_is_the_example_that_cargo_test_compiles() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n### Rust path\n")
        .nth(1)
        .expect("README has the Rust path");
    let shown = section
        .split("```rust\n")
        .nth(1)
        .expect("the Rust path shows Rust")
        .split("```")
        .next()
        .unwrap();
    let example = include_str!("../examples/readme.rs");
    // The file without its first line (a module doc) and its main().
    let body = example
        .split_once('\n')
        .unwrap()
        .1
        .split("\nfn main()")
        .next()
        .unwrap();
    assert_eq!(
        shown.trim(),
        body.trim(),
        "README.md's Rust path must be crates/tenantry-axum/examples/readme.rs (without its doc line and main)"
    );
}

/// The README's people walkthrough signs its tokens with a shell function;
/// run it and check what the server it starts would make of them.
#[tokio::test]
async fn the_readmes_people_walkthrough_mints_tokens_whose_verified_email_accepts_invitations() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n### People signing in with your identity provider\n")
        .nth(1)
        .expect("README has the people walkthrough");
    let setting = |name: &str| {
        section
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the walkthrough sets {name}"))
            .to_owned()
    };
    let script = section
        .split("```sh\n")
        .nth(2)
        .expect("the walkthrough's second shell")
        .split("\nALICE=")
        .next()
        .unwrap();
    // The walkthrough makes its secret (never one printed in the README)
    // and hands it to serve; the test makes its own the same way.
    assert_eq!(setting("TENANTRY_JWT_HS256_SECRET"), "\"$JWT_SECRET\"");
    assert!(section.contains("export JWT_SECRET=$(openssl rand -hex 32)"));
    let secret =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "export JWT_SECRET={secret}\n{script}\ntoken 'auth0|alice' alice@acme.test"
        ))
        .output()
        .expect("bash and openssl run the walkthrough");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();

    let mut config = tenantry_axum::jwt::JwtConfig::new(
        setting("TENANTRY_JWT_ISSUER"),
        setting("TENANTRY_JWT_AUDIENCE"),
    );
    config.hs256_secret = Some(secret);
    let verified = tenantry_axum::jwt::JwtVerifier::new(config)
        .unwrap()
        .verify(token.trim())
        .await
        .expect("the walkthrough's token is accepted");
    assert_eq!(verified.email.as_deref(), Some("alice@acme.test"));
    assert!(
        verified.email_verified,
        "the walkthrough's Alice accepts her invitation: her email is verified"
    );
}
