//! README.md and docs/*.md cite only what exists: every test (or named attack) they cite by its sentence of a name is in the sources, every file of the repository they name is there (an outside review found a renamed test and a moved directory still cited).

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

/// The repository's root (this crate is `crates/tenantry-api`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir` whose name ends with one of `extensions`, build
/// output left out.
fn sources(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, extensions, out);
            }
        } else if extensions.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// The documents a user reads.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    sources(&root().join("docs"), &[".md"], &mut docs);
    docs.sort();
    docs
}

/// A test's name as the docs cite it: a sentence of at least six words in
/// snake case, without digits (the benchmark figures' names carry numbers
/// and are made with `format!`).
fn is_sentence_name(code: &str) -> bool {
    code.split('_').count() >= 6
        && code
            .split('_')
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '\''))
        && !code.contains('\'')
}

/// The spans between backticks of a line.
fn code_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// Paths into the repository a line names (`crates/…`, `docs/…`, …), with
/// trailing punctuation taken off; placeholders (`NN_`, `<…>`, `*`) left out.
fn repository_paths(line: &str) -> Vec<String> {
    const TOPS: [&str; 6] = [
        "crates/",
        "migrations/",
        "scripts/",
        "docs/",
        ".ci/",
        "examples/",
    ];
    let mut found = Vec::new();
    for (at, _) in line.char_indices() {
        let rest = &line[at..];
        let Some(top) = TOPS.iter().find(|t| rest.starts_with(**t)) else {
            continue;
        };
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || "_/.-".contains(c)) {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || "_-./".contains(c)))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(['.', ',', ')', '/', ':']);
        if path.len() > top.len() && !path.contains("NN") {
            found.push(path.to_owned());
        }
    }
    found
}

#[test]
fn the_docs_cite_only_tests_and_files_that_exist() {
    let mut files = Vec::new();
    for dir in ["crates", "examples", "migrations", "scripts"] {
        sources(
            &root().join(dir),
            &[".rs", ".sql", ".sh", ".toml", ".js"],
            &mut files,
        );
    }
    assert!(files.len() > 100, "the sources were found: {}", files.len());
    let mut words = HashSet::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.is_empty() {
                words.insert(word.to_owned());
            }
        }
    }
    let mut missing = Vec::new();
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("reading a document");
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for code in code_spans(line) {
                let code = code.trim();
                if is_sentence_name(code) && !words.contains(code) {
                    missing.push(format!("{name}:{}: test {code}", n + 1));
                }
            }
            for path in repository_paths(line) {
                if !root().join(&path).exists() {
                    missing.push(format!("{name}:{}: file {path}", n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited in the docs, found nowhere:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checks_of_the_docs_find_what_they_look_for() {
    assert!(is_sentence_name(
        "tenant_a_cannot_read_tenant_b_resource_by_id"
    ));
    assert!(!is_sentence_name("key_cache_ttl_ms"));
    assert!(!is_sentence_name("api_point_read_4000_schema_tenants"));
    assert_eq!(
        repository_paths("see crates/tenantry-db/src/scope.rs, and (docs/security.md)."),
        ["crates/tenantry-db/src/scope.rs", "docs/security.md"]
    );
    assert!(repository_paths("migrations/NNNN_<what>.sql").is_empty());
    assert!(repository_paths("a/crates/x").is_empty());
}
