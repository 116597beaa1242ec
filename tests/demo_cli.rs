//! Issue 9: `cohort demo` as a CI smoke test — a shortened run (2 rounds) with the real server
//! and five `cohort join` processes over HTTPS, checked for what it prints and writes, and for
//! leaving no process behind, including when interrupted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-demo-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Processes whose command line mentions `dir` (the demo passes its work dir to every child).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap().as_bytes().to_vec();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

fn demo(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort"));
    cmd.arg("demo").arg("--out").arg(out).args(extra);
    cmd
}

fn percent(cell: &str) -> f64 {
    cell.trim_end_matches('%').parse::<f64>().unwrap()
}

#[test]
fn a_two_round_demo_trains_reports_and_cleans_up() {
    let out = temp_dir("run");
    let started = Instant::now();
    let output = demo(&out, &["--rounds", "2"]).output().unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // One line per round: "r/2  accuracy  sampled  ε h1 .. ε h5  time".
    let rounds: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("1/2") || l.trim_start().starts_with("2/2"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rounds.len(), 2, "{stdout}");
    let mut previous = [0.0f64; 5];
    for cells in &rounds {
        assert_eq!(cells.len(), 9, "{cells:?}");
        let acc = percent(cells[1]);
        assert!((0.0..=100.0).contains(&acc), "{cells:?}");
        assert_eq!(cells[2], "5", "every hospital sampled: {cells:?}");
        for (h, cell) in cells[3..8].iter().enumerate() {
            let eps: f64 = cell.parse().unwrap();
            assert!(
                eps > previous[h] && eps <= 2.0,
                "ε of hospital {h}: {cells:?}"
            );
            previous[h] = eps;
        }
    }
    assert!(stdout.contains("/admin"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("admin token") && l.contains("cohort1.")),
        "{stdout}"
    );

    // The run as JSON: both rounds completed, ε from the server equals each hospital's own.
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    let run = read("demo.json");
    let recorded = run["rounds"].as_array().unwrap();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r["state"] == "completed"), "{run}");
    let final_accuracy = run["final_accuracy"].as_f64().unwrap();
    assert!((final_accuracy * 100.0 - percent(rounds[1][1])).abs() < 0.051);
    for h in run["hospitals"].as_array().unwrap() {
        let server = h["epsilon_spent"].as_f64().unwrap();
        let local = h["local_epsilon"].as_f64().unwrap();
        assert!(
            server > 0.0 && server <= h["epsilon_budget"].as_f64().unwrap(),
            "{h}"
        );
        assert!(
            (server - local).abs() < 1e-3,
            "server and local ledger disagree: {h}"
        );
        assert_eq!(h["rounds"], 2);
    }

    // The simulator's report files: the same numbers, plots, TensorBoard events.
    let summary = read("summary.json");
    assert_eq!(summary["rounds_completed"], 2, "{summary}");
    assert_eq!(summary["final_accuracy"].as_f64(), Some(final_accuracy));
    let metrics = read("metrics.json");
    assert_eq!(metrics.as_array().unwrap().len(), 2);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for plot in ["accuracy_vs_round.svg", "accuracy_vs_epsilon.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{plot}"
        );
        // One marker per round (the series is drawn in blue, the axes in black).
        let markers = svg.matches("<circle").count();
        assert_eq!(markers, 2, "{plot}: {markers} data points");
        assert!(svg.contains(r##"stroke="#0000FF""##), "{plot} has no curve");
    }
    let events: Vec<_> = std::fs::read_dir(out.join("tensorboard"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].metadata().unwrap().len() > 100);
    assert_eq!(processes_using(&out), Vec::<String>::new());
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ctrl_c_stops_the_demo_and_every_child() {
    let out = temp_dir("sigint");
    let mut child = demo(&out, &["--rounds", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines().map_while(Result::ok) {
        let started_rounds = line.trim_start().starts_with("1/50");
        seen.push(line);
        if started_rounds {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.trim_start().starts_with("1/50")),
        "{seen:?}"
    );
    assert!(
        !processes_using(&out).is_empty(),
        "the children should be running"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(processes_using(&out), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_settings_get_one_line_with_the_fix_and_exit_2() {
    let out = temp_dir("bad");
    for (args, expect) in [
        (&["--rounds", "zero"][..], "--rounds must be a whole number"),
        (
            &["--hospitals", "2"][..],
            "--hospitals must be a whole number from 3",
        ),
        (&["--epsilon", "-1"][..], "--epsilon must be > 0"),
    ] {
        let o = demo(&out, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
    }
    // A directory the demo did not make is never cleared.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    let o = demo(&out, &["--rounds", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("choose a new or empty --out"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("precious.txt")).unwrap(),
        "keep me"
    );
    let _ = std::fs::remove_dir_all(&out);
}
