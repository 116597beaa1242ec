//! `cohort privacy` end to end: the real binary, its stdout, stderr and exit codes.
// Test code: helpers may panic on fixture errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn cohort(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .output()
        .expect("cohort runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn epsilon_json_reports_the_golden_value() {
    let (code, stdout, _) = cohort(&[
        "privacy", "epsilon", "--q", "0.01", "--sigma", "1.1", "--steps", "1000", "--delta",
        "1e-5", "--json",
    ]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!((value["epsilon"].as_f64().unwrap() - 1.7118).abs() < 1e-4);
    assert_eq!(value["accountant"], "rdp");
    assert_eq!(value["delta"].as_f64(), Some(1e-5));
    assert!(value["order"].as_f64().is_some());
}

#[test]
fn pld_is_tighter_than_rdp_for_the_plain_gaussian() {
    let (code, stdout, _) = cohort(&[
        "privacy",
        "epsilon",
        "--q",
        "1",
        "--sigma",
        "1",
        "--steps",
        "1",
        "--delta",
        "1e-5",
        "--accountant",
        "pld",
        "--json",
    ]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let eps = value["epsilon"].as_f64().unwrap();
    // Exact ε of the Gaussian mechanism with σ = 1 at δ = 1e-5 is 4.377178096 (Balle & Wang).
    assert!((4.377178..4.377178 * 1.01).contains(&eps), "{eps}");
    assert_eq!(value["accountant"], "pld");
}

#[test]
fn sigma_json_meets_its_target() {
    let (code, stdout, _) = cohort(&[
        "privacy",
        "sigma",
        "--epsilon",
        "2",
        "--delta",
        "1e-5",
        "--q",
        "0.01",
        "--steps",
        "1000",
        "--json",
    ]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(value["sigma"].as_f64().unwrap() > 0.5);
    assert!(value["achieved_epsilon"].as_f64().unwrap() <= 2.0);
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let bad: [&[&str]; 6] = [
        &[
            "--q", "0", "--sigma", "1", "--steps", "10", "--delta", "1e-5",
        ],
        &[
            "--q", "1.2", "--sigma", "1", "--steps", "10", "--delta", "1e-5",
        ],
        &[
            "--q", "0.1", "--sigma", "-1", "--steps", "10", "--delta", "1e-5",
        ],
        &[
            "--q", "0.1", "--sigma", "1", "--steps", "0", "--delta", "1e-5",
        ],
        &[
            "--q", "0.1", "--sigma", "1", "--steps", "10", "--delta", "1",
        ],
        &[
            "--q", "NaN", "--sigma", "1", "--steps", "10", "--delta", "1e-5",
        ],
    ];
    for args in bad {
        let mut full = vec!["privacy", "epsilon"];
        full.extend_from_slice(args);
        let (code, stdout, stderr) = cohort(&full);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}
