//! The tracker's command line: it takes no arguments, and asking for help starts nothing.

use std::process::Command;

#[test]
fn help_names_the_variables_and_starts_no_database_and_an_argument_is_refused() {
    let data_dir = std::env::temp_dir().join(format!("issue-tracker-help-{}", std::process::id()));
    let run = |arg: &str| {
        Command::new(env!("CARGO_BIN_EXE_issue-tracker"))
            .arg(arg)
            .env_remove("DATABASE_URL")
            .env("TENANTRY_DATA_DIR", &data_dir)
            .output()
            .expect("the tracker runs")
    };
    let help = run("--help");
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("DATABASE_URL") && text.contains("ISSUE_TRACKER_LISTEN"),
        "{text}"
    );
    assert!(!data_dir.exists(), "--help made a data directory");

    let refused = run("--port=9000");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("takes no arguments"));
    assert!(!data_dir.exists());
}
