//! README.md's Rust path is the code of `examples/readme.rs`, which `cargo test` compiles: the README shows it as it is.

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
