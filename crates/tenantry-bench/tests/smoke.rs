//! The benchmark's smoke mode (tiny data, one short run of every figure), so the harness cannot rot: it must finish and write every figure with its baseline.

use std::process::Command;

const FIGURES: &[&str] = &[
    "api_point_read",
    "api_vs_same_txn",
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
    "sql_verify_key_ms",
    "key_create_per_s",
];

#[test]
fn smoke_mode_measures_every_figure_next_to_its_baseline() {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("results.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tenantry-bench"))
        .args(["--smoke", "--schema-tenants", "--out"])
        .arg(&out)
        .env_remove("DATABASE_URL")
        .output()
        .expect("running tenantry-bench");
    assert!(
        run.status.success(),
        "tenantry-bench --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results.json written")).unwrap();
    assert!(report["cores"].as_u64().unwrap() >= 1);
    let figures = report["figures"].as_array().expect("figures");
    for name in FIGURES {
        let f = figures
            .iter()
            .find(|f| f["name"] == *name)
            .unwrap_or_else(|| panic!("figure {name} missing from {report:#}"));
        let value = f["value"].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{name}: value {value}");
        assert!(
            f["unit"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: unit"
        );
        if *name != "schema_tenants_20_s" {
            let baseline = f["baseline"].as_f64().unwrap_or(f64::NAN);
            let ratio = f["ratio"].as_f64().unwrap_or(f64::NAN);
            assert!(
                baseline.is_finite() && baseline > 0.0,
                "{name}: baseline {baseline}"
            );
            assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
