//! Embeds the SQL files of `migrations/` (repository root) into the library: the versioned `NNNN_<what>.sql` in version order, and the repeatable definitions of `migrations/repeatable/` in name order.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../migrations");

    let mut migrations: Vec<(u32, String, PathBuf)> = sql_files(&dir)
        .into_iter()
        .filter_map(|(file, path)| {
            let (version, name) = file.strip_suffix(".sql")?.split_once('_')?;
            Some((version.parse().ok()?, name.to_owned(), path))
        })
        .collect();
    migrations.sort();
    for pair in migrations.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share version {}",
            pair[0].0
        );
    }
    embed(
        "migrations.rs",
        migrations.iter().map(|(version, name, path)| {
            let sql = include(path);
            format!("Migration {{ version: {version}, name: {name:?}, sql: {sql} }}")
        }),
    );

    let mut definitions = sql_files(&dir.join("repeatable"));
    definitions.sort();
    embed(
        "definitions.rs",
        definitions.iter().map(|(name, path)| {
            let sql = include(path);
            format!("Definition {{ name: {name:?}, sql: {sql} }}")
        }),
    );
}

/// `(file name, canonical path)` of every `*.sql` file in `dir`; cargo reruns
/// this script when the directory or any of them changes.
fn sql_files(dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-changed={}", dir.display());
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} (at the repository root): {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let file = path.file_name()?.to_str()?.to_owned();
            file.ends_with(".sql")
                .then(|| Some((file, path.canonicalize().ok()?)))?
        })
        .inspect(|(_, path)| println!("cargo:rerun-if-changed={}", path.display()))
        .collect()
}

fn include(path: &Path) -> String {
    format!("include_str!({:?})", path.display().to_string())
}

/// Writes `$OUT_DIR/<name>`: a slice expression of the given items.
fn embed(name: &str, items: impl Iterator<Item = String>) {
    let mut out = String::from("&[\n");
    for item in items {
        out.push_str(&format!("    {item},\n"));
    }
    out.push_str("]\n");
    fs::write(PathBuf::from(env::var("OUT_DIR").unwrap()).join(name), out).unwrap();
}
