//! The newcomer path: the `cohort` binary starts from target/ with libtorch found by its rpath,
//! `cohort doctor` reports the libtorch the issue asks for, and `make setup` fails with a fix-it
//! message when Python is missing.

use std::path::Path;
use std::process::Command;

#[test]
fn doctor_reports_libtorch_2_13_0_from_the_built_binary() {
    // Clearing LD_LIBRARY_PATH proves the binary finds libtorch through its rpath alone.
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("doctor")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("cohort runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "doctor failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let libtorch_line = stdout
        .lines()
        .find(|l| l.contains("libtorch"))
        .expect("a libtorch line");
    assert!(libtorch_line.starts_with("ok"), "{libtorch_line}");
    assert!(libtorch_line.contains("2.13.0"), "{libtorch_line}");
    assert!(stdout.lines().any(|l| l.contains("cuda")));
}

#[test]
fn doctor_fails_with_a_fix_when_cuda_is_required_but_absent() {
    let probe = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["doctor", "--require-cuda"])
        .output()
        .expect("cohort runs");
    let stdout = String::from_utf8_lossy(&probe.stdout);
    let cuda_line = stdout
        .lines()
        .find(|l| l.contains("cuda"))
        .expect("a cuda line");
    if cuda_line.contains("not available") {
        assert!(!probe.status.success());
        assert!(String::from_utf8_lossy(&probe.stderr).contains("fix:"));
    } else {
        assert!(probe.status.success(), "{stdout}");
    }
}

#[test]
fn setup_stops_with_a_clear_message_without_python() {
    let dir = std::env::temp_dir().join(format!("cohort-setup-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A PATH with the tools the script needs but no python3.
    for tool in ["cat", "ln", "dirname", "rm"] {
        let target = Path::new("/usr/bin").join(tool);
        let target = if target.exists() {
            target
        } else {
            Path::new("/bin").join(tool)
        };
        let _ = std::os::unix::fs::symlink(target, bin.join(tool));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-venv.sh");
    let output = Command::new("/bin/bash")
        .arg(script)
        .env("PATH", &bin)
        .env("COHORT_VENV", dir.join("venv"))
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("python3 not found"), "{stderr}");
    assert!(stderr.contains("apt-get install"), "{stderr}");
}
