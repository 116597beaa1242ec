//! `cohort audit dp-sgd` end to end: the negative control of issue 20. Training without noise
//! while the run claims ε = 2, the white-box audit with 1000 canaries must find ε_LB > 2, say
//! so in red, exit with code 3 and leave its report, scores and plot behind.
// Test code: helpers may panic on fixture errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const DATA: &str = "csv:client/data/breast_cancer.csv?label=diagnosis";

#[test]
fn no_noise_while_claiming_epsilon_2_fails_the_audit() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("cohort-audit-{}-{nanos}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "audit",
            "dp-sgd",
            "--model",
            "mlp",
            "--data",
            DATA,
            "--canaries",
            "1000",
            "--epsilon",
            "2",
            "--epochs",
            "10",
            "--batch",
            "32",
            "--danger-no-noise",
            "--json",
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .expect("cohort runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("AUDIT FAILED"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let claimed = report["accountant_epsilon"].as_f64().unwrap();
    let audited = report["audited_epsilon_lower_bound"].as_f64().unwrap();
    assert!(
        (claimed - 2.0).abs() < 0.01,
        "σ was calibrated to ε = 2, got {claimed}"
    );
    assert!(audited > 2.0, "ε_LB {audited}");
    assert_eq!(report["verdict"], "contradiction");
    assert_eq!(report["danger_no_noise"], true);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("audit.json")).unwrap()).unwrap();
    assert_eq!(written, report);
    let csv = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1001);
    let svg = std::fs::read_to_string(dir.join("scores.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("not included"));
    std::fs::remove_dir_all(&dir).unwrap();
}
