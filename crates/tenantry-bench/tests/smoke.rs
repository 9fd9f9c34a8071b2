//! The benchmark's smoke mode (tiny data, one short run of every figure), so the harness cannot rot: it must finish and write every figure with its baseline. Values are never compared with goals here: timing belongs to the benchmark's report, not to a test.

use std::{path::Path, process::Command};

const FIGURES: &[&str] = &[
    "api_point_read",
    "api_vs_same_txn",
    "api_vs_handwritten",
    "api_list",
    "request_log_overhead",
    "server_rss_mb",
    "rls_point",
    "rls_list",
    "rls_shared_with_me",
    "rls_hierarchy_sharing",
    "metrics_read_ms",
    "tenant_create_per_s",
    "schema_tenants_20_s",
    "schema_tenant_create_ms",
    "schema_tenant_create_max_ms",
    "other_tenant_write_wait_max_ms_create",
    "other_tenant_write_wait_max_ms_move",
    "tier_move_1k_rows_s",
    "tier_move_back_1k_rows_s",
    "tier_move_cutover_ms",
    "tier_move_back_cutover_ms",
    "tier_move_back_adopted_cutover_ms",
    "api_point_read_20_schema_tenants",
    "rls_point_20_schema_tenants",
    "adopted_rls_point_20_schema_tenants",
    "sql_verify_key_ms",
    "key_create_per_s",
    "api_point_read_jwt",
    "authorize_write_policy",
    "authorize_us",
];

/// Runs `tenantry-bench --smoke <args>` writing into a fresh directory and
/// returns its report's figures.
fn smoke_run(name: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("results.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tenantry-bench"))
        .arg("--smoke")
        .args(args)
        .arg("--out")
        .arg(&out)
        .env_remove("DATABASE_URL")
        .output()
        .expect("running tenantry-bench");
    assert!(
        run.status.success(),
        "tenantry-bench --smoke {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report = read_report(&out);
    assert!(report["cores"].as_u64().unwrap() >= 1);
    let _ = std::fs::remove_dir_all(&dir);
    report["figures"].as_array().expect("figures").clone()
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("results.json written")).unwrap()
}

/// The figure's value, baseline and ratio are positive numbers.
fn assert_measured(figures: &[serde_json::Value], name: &str, with_baseline: bool) {
    let f = figures
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("figure {name} missing from {figures:#?}"));
    let value = f["value"].as_f64().unwrap_or(f64::NAN);
    assert!(value.is_finite() && value > 0.0, "{name}: value {value}");
    assert!(
        f["unit"].as_str().is_some_and(|u| !u.is_empty()),
        "{name}: unit"
    );
    if with_baseline {
        let baseline = f["baseline"].as_f64().unwrap_or(f64::NAN);
        let ratio = f["ratio"].as_f64().unwrap_or(f64::NAN);
        assert!(
            baseline.is_finite() && baseline > 0.0,
            "{name}: baseline {baseline}"
        );
        assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
    }
}

#[test]
fn smoke_mode_measures_every_figure_next_to_its_baseline() {
    let figures = smoke_run("smoke", &["--schema-tenants"]);
    for name in FIGURES {
        assert_measured(&figures, name, true);
    }
}

#[test]
fn beyond_1000_tenants_point_reads_over_all_of_them_are_measured_against_1000_of_them() {
    let figures = smoke_run(
        "scale",
        &[
            "--tenants",
            "2000",
            "--only",
            "api_point_read_2000_tenants,server_rss_mb_2000_tenants",
        ],
    );
    assert_measured(&figures, "api_point_read_2000_tenants", true);
    assert_measured(&figures, "server_rss_mb_2000_tenants", true);
    assert_eq!(
        figures.len(),
        2,
        "--only names exactly these figures: {figures:#?}"
    );
}
