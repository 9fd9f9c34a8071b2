//! Embeds the SQL files of `migrations/` (repository root) into the library: the versioned `NNNN_<what>.sql` in version order, and the repeatable definitions of `migrations/repeatable/` in name order.

use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(u32, String, PathBuf)> = fs::read_dir(&dir)
        .expect("migrations/ directory at the repository root")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let file = path.file_name()?.to_str()?.to_owned();
            let stem = file.strip_suffix(".sql")?;
            let (version, name) = stem.split_once('_')?;
            Some((
                version.parse().ok()?,
                name.to_owned(),
                path.canonicalize().ok()?,
            ))
        })
        .collect();
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share version {}",
            pair[0].0
        );
    }
    let mut out = String::from("&[\n");
    for (version, name, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!(
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({:?}) }},\n",
            path.display().to_string()
        ));
    }
    out.push_str("]\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("migrations.rs"),
        out,
    )
    .unwrap();

    let repeatable = dir.join("repeatable");
    println!("cargo:rerun-if-changed={}", repeatable.display());
    let mut definitions: Vec<(String, PathBuf)> = fs::read_dir(&repeatable)
        .expect("migrations/repeatable/ directory at the repository root")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let file = path.file_name()?.to_str()?.to_owned();
            file.ends_with(".sql")
                .then(|| Some((file, path.canonicalize().ok()?)))?
        })
        .collect();
    definitions.sort();
    let mut out = String::from("&[\n");
    for (name, path) in &definitions {
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!(
            "    Definition {{ name: {name:?}, sql: include_str!({:?}) }},\n",
            path.display().to_string()
        ));
    }
    out.push_str("]\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("definitions.rs"),
        out,
    )
    .unwrap();
}
