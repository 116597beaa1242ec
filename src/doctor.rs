//! `cohort doctor`: one screen that says whether this machine can run Cohort, and how to fix it
//! when it cannot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use cohort_client::runtime::{EXPECTED_LIBTORCH_VERSION, RuntimeInfo};

/// Options of `cohort doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Where data sets live (made by `make data`).
    #[arg(long, env = "COHORT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Where the development CA and credentials live.
    #[arg(long, env = "COHORT_PKI_DIR", default_value = ".cohort/pki")]
    pki_dir: PathBuf,
    /// Also fail when CUDA is not available.
    #[arg(long)]
    require_cuda: bool,
}

/// One line of the report.
#[derive(Debug)]
struct Check {
    label: &'static str,
    value: String,
    /// `Some(fix)` when the check failed.
    problem: Option<String>,
}

/// Prints the report; exits 1 when any check failed.
pub fn run(args: &DoctorArgs) -> ExitCode {
    let info = RuntimeInfo::probe();
    let checks = checks(args, &info);
    for check in &checks {
        let mark = if check.problem.is_some() {
            "FAIL"
        } else {
            "ok"
        };
        println!("{:<4}  {:<13} {}", mark, check.label, check.value);
    }
    let problems: Vec<_> = checks.iter().filter_map(|c| c.problem.as_ref()).collect();
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for fix in problems {
            eprintln!("fix: {fix}");
        }
        ExitCode::FAILURE
    }
}

fn checks(args: &DoctorArgs, info: &RuntimeInfo) -> Vec<Check> {
    let mut checks = Vec::new();

    let library = info
        .library
        .as_ref()
        .map_or_else(|| "unknown path".to_owned(), |p| p.display().to_string());
    let version_problem = match info.release() {
        Some(EXPECTED_LIBTORCH_VERSION) => None,
        Some(other) => Some(format!(
            "libtorch {other} is loaded but Cohort needs {EXPECTED_LIBTORCH_VERSION}: run `make setup` \
             and unset LD_LIBRARY_PATH if it points at another libtorch"
        )),
        None => Some(
            "cannot tell which libtorch is loaded: run `make setup` to (re)create .venv with torch"
                .to_owned(),
        ),
    };
    checks.push(Check {
        label: "libtorch",
        value: format!("{} ({library})", info.version.as_deref().unwrap_or("?")),
        problem: version_problem,
    });

    let tensor_problem = match cohort_client::smoke::train_synthetic(&Default::default()) {
        Ok(report) if report.losses.last() < report.losses.first() => None,
        Ok(_) => Some("a tiny training job did not reduce its loss; libtorch is broken".into()),
        Err(err) => Some(format!("a tiny training job failed: {err}")),
    };
    checks.push(Check {
        label: "training",
        value: if tensor_problem.is_none() {
            "a 50-step MLP trains (loss falls)".into()
        } else {
            "failed".into()
        },
        problem: tensor_problem,
    });

    checks.push(Check {
        label: "threads",
        value: format!(
            "{} intra-op, {} inter-op (set OMP_NUM_THREADS to change)",
            info.intra_op_threads, info.inter_op_threads
        ),
        problem: None,
    });

    checks.push(Check {
        label: "cuda",
        value: if info.cuda_available {
            format!("available, {} device(s)", info.cuda_devices)
        } else {
            "not available (CPU training)".into()
        },
        problem: (args.require_cuda && !info.cuda_available).then(|| {
            "CUDA was required but no device is visible: check the NVIDIA driver and \
             CUDA_VISIBLE_DEVICES"
                .into()
        }),
    });

    checks.push(location_check("data", &args.data_dir, "run `make data`"));
    checks.push(location_check(
        "certificates",
        &args.pki_dir,
        "created by `cohort pki init` or `make demo`",
    ));
    checks
}

/// Data and certificates are made on demand, so their absence is reported, not failed.
fn location_check(label: &'static str, path: &Path, how_to_create: &str) -> Check {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let value = if path.is_dir() {
        format!("{}", shown.display())
    } else {
        format!("{} (not created yet: {how_to_create})", shown.display())
    };
    Check {
        label,
        value,
        problem: None,
    }
}
