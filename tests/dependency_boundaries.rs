//! The crate boundaries of the design brief, enforced: the server and the privacy crate must
//! build and deploy without libtorch, and dependencies run one way
//! (privacy ← protocol ← {server, client} ← cohort).

use std::process::Command;

/// Every package name (without version) in `cargo tree -p PACKAGE`, normal and build edges.
fn dependency_names(package: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|err| panic!("cargo tree could not start: {err}"));
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn assert_lacks(package: &str, forbidden: &[&str]) {
    let names = dependency_names(package);
    assert!(!names.is_empty(), "cargo tree -p {package} printed nothing");
    for name in forbidden {
        assert!(
            !names.iter().any(|n| n == name),
            "{package} must not depend on {name}"
        );
    }
}

#[test]
fn server_does_not_link_libtorch() {
    assert_lacks("cohort-server", &["tch", "torch-sys", "cohort-client"]);
}

#[test]
fn privacy_is_pure_and_at_the_bottom() {
    assert_lacks(
        "cohort-privacy",
        &[
            "tch",
            "torch-sys",
            "tokio",
            "cohort-protocol",
            "cohort-server",
            "cohort-client",
        ],
    );
}

#[test]
fn evaluation_is_pure_and_above_privacy_only() {
    assert_lacks(
        "cohort-evaluation",
        &[
            "tch",
            "torch-sys",
            "tokio",
            "cohort-protocol",
            "cohort-server",
            "cohort-client",
        ],
    );
}

#[test]
fn protocol_depends_only_downward() {
    assert_lacks(
        "cohort-protocol",
        &["tch", "torch-sys", "cohort-server", "cohort-client"],
    );
}

#[test]
fn client_links_libtorch_but_not_the_server() {
    let names = dependency_names("cohort-client");
    assert!(names.iter().any(|n| n == "tch"));
    assert!(!names.iter().any(|n| n == "cohort-server"));
}
