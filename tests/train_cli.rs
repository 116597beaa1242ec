//! `cohort train` end to end: the real binary on the vendored breast-cancer table, its
//! accuracy line, the saved weights, the ε it reports, and the local ledger refusing a job that
//! would exceed the budget.
// Test code: helpers may panic on fixture errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_client::model::{self, InputKind};
use cohort_client::weights;

const DATA: &str = "csv:client/data/breast_cancer.csv?label=diagnosis";

/// A fresh folder per test (the ledger and the weights live there).
fn scratch(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "cohort-train-{}-{name}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cohort(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("COHORT_LEDGER")
        .args(args)
        .output()
        .expect("cohort runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cohort train` on the breast-cancer table for 4 epochs (callers add the rest).
fn train(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = dir.join("weights.safetensors");
    let ledger = dir.join("ledger.jsonl");
    let mut args = vec![
        "train",
        "--data",
        DATA,
        "--epochs",
        "4",
        "--clip",
        "1",
        "--delta",
        "1e-5",
        "--out",
        path(&out),
        "--ledger",
        path(&ledger),
    ];
    args.extend_from_slice(extra);
    cohort(&args)
}

#[test]
fn trains_to_a_target_epsilon_reports_accuracy_and_saves_weights_that_load_back() {
    let dir = scratch("json");
    let (code, stdout, stderr) = train(
        &dir,
        &[
            "--model",
            "mlp",
            "--batch",
            "64",
            "--epsilon",
            "3",
            "--budget",
            "10",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let epsilon = report["epsilon"].as_f64().unwrap();
    assert!(epsilon > 0.0 && epsilon <= 3.0, "ε {epsilon}");
    assert_eq!(report["target_epsilon"].as_f64(), Some(3.0));
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.85, "accuracy {accuracy}");
    // 569 rows with a 20 % test split: 455 to train, so q = 64 / 455 and 8 steps per epoch.
    assert_eq!(report["steps"].as_u64(), Some(32));
    assert!(report["noise_multiplier"].as_f64().unwrap() > 0.3);
    // The ledger holds the job: its spend equals this one job's ε.
    let spent = report["ledger_spent_epsilon"].as_f64().unwrap();
    assert!((spent - epsilon).abs() < 1e-6, "{spent} vs {epsilon}");
    // Every epoch printed a progress line with ε so far.
    assert_eq!(stderr.matches("ε so far").count(), 4, "{stderr}");

    // The weights load back into the same architecture, every tensor accounted for.
    let spec = model::preset("mlp", &[30], InputKind::Float, 2).unwrap();
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    model::build(&vs.root(), &spec).unwrap();
    weights::load_safetensors_file(&mut vs, &dir.join("weights.safetensors")).unwrap();
    let flat = weights::flatten(&vs).unwrap();
    assert_eq!(
        flat.len() as u64,
        report["parameters"].as_u64().unwrap(),
        "parameter count"
    );
    assert!(flat.iter().all(|x| x.is_finite()));
}

#[test]
fn prints_the_accuracy_line_and_refuses_a_job_over_what_is_left() {
    let dir = scratch("budget");
    let fits = [
        "--model",
        "logistic",
        "--batch",
        "64",
        "--epsilon",
        "1.8",
        "--budget",
        "2",
    ];
    let (code, stdout, stderr) = train(&dir, &fits);
    assert_eq!(code, 0, "{stderr}");
    let accuracy_line = stdout
        .lines()
        .find(|l| l.starts_with("test accuracy: "))
        .unwrap_or_else(|| panic!("no accuracy line in {stdout}"));
    let accuracy: f64 = accuracy_line["test accuracy: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.8, "{accuracy_line}");
    assert!(stdout.contains("(target 1.8)"), "{stdout}");
    assert!(dir.join("weights.safetensors").exists());
    std::fs::remove_file(dir.join("weights.safetensors")).unwrap();

    // The same job again would compose past ε = 2: refused before training, saying what is left.
    let (code, stdout, stderr) = train(
        &dir,
        &["--model", "logistic", "--batch", "64", "--epsilon", "1.8"],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("left ε = 0.2"), "{stderr}");
    assert!(!dir.join("weights.safetensors").exists());
    // The refused job left no reservation behind.
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 2, "{ledger}");
}

#[test]
fn bad_input_gets_one_line_and_exit_code_2() {
    let dir = scratch("usage");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", "mlp", "--noise-multiplier", "1"],
            "--budget",
        ),
        (
            vec!["--model", "vgg", "--noise-multiplier", "1", "--budget", "3"],
            "presets are",
        ),
        (
            vec![
                "--model",
                "mnist-cnn",
                "--noise-multiplier",
                "1",
                "--budget",
                "3",
            ],
            "1×28×28",
        ),
        (
            vec![
                "--model",
                "mlp",
                "--noise-multiplier",
                "1",
                "--epsilon",
                "2",
                "--budget",
                "3",
            ],
            "not both",
        ),
        (
            vec![
                "--model",
                "mlp",
                "--noise-multiplier",
                "1",
                "--budget",
                "3",
                "--batch",
                "5000",
            ],
            "larger than the 455 training examples",
        ),
    ];
    for (extra, needle) in &cases {
        let (code, _, stderr) = train(&dir, extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let (code, _, stderr) = cohort(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "csv:no/such/file.csv?label=y",
        "--noise-multiplier",
        "1",
        "--out",
        "w.safetensors",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    if !tch::Cuda::is_available() {
        let (code, _, stderr) = train(
            &dir,
            &[
                "--model",
                "mlp",
                "--noise-multiplier",
                "1",
                "--device",
                "cuda",
            ],
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("no CUDA device"), "{stderr}");
    }
    // Nothing was reserved or written by any refused command.
    assert!(!dir.join("ledger.jsonl").exists());
    assert!(!dir.join("weights.safetensors").exists());
}
