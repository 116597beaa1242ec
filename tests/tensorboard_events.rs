//! The simulator's TensorBoard event files, opened by TensorBoard itself: TensorBoard 2.21.0
//! from PyPI in a throwaway venv (`scripts/setup-tensorboard.sh`, under the target dir so CI's
//! cache keeps it) reads the file with `EventAccumulator`, the loader behind
//! `tensorboard --logdir`, and every tag, step and value must come back; a copy with one
//! corrupted byte must lose its record, which shows the reader checks our CRCs.
//!
//! If the venv cannot be made (no python3, PyPI unreachable), the test fails with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cohort::report::{ReportWriter, RoundRecord};
use serde_json::Value;

/// Reads every event file under argv[1] with TensorBoard's own loader and prints the file
/// version and each scalar series as JSON.
const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({
    "file_version": acc.file_version,
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]},
}))
"#;

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tensorboard-venv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-tensorboard.sh");
    let out = Command::new(&script).arg(&venv).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PYTHON="))
        .expect("setup-tensorboard.sh prints PYTHON=");
    PathBuf::from(path)
}

fn read_with_tensorboard(python: &Path, logdir: &Path) -> Value {
    let out = Command::new(python)
        .args(["-c", READER])
        .arg(logdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "TensorBoard's reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn record(round: u64) -> RoundRecord {
    let r = round as f64;
    RoundRecord {
        round,
        status: "completed".into(),
        accuracy: 0.5 + 0.1 * r,
        loss: 1.0 / r,
        epsilon_record_max: 0.3 * r,
        epsilon_record_mean: 0.2 * r,
        epsilon_client_level: (round != 2).then_some(0.05 * r),
        participants: 10 + round as u32,
        contributed: 9,
        stage_s: BTreeMap::from([
            ("open".to_owned(), 0.01 * r),
            ("secagg_unmask".to_owned(), 1.5),
        ]),
    }
}

/// The (tag → [(step, value)]) TensorBoard should show for `records`, as f32 like the file.
fn expected(records: &[RoundRecord]) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for r in records {
        let step = r.round as i64;
        let mut put = |tag: &str, v: f64| out.entry(tag.into()).or_default().push((step, v as f32));
        put("accuracy", r.accuracy);
        put("loss", r.loss);
        put("epsilon/record_max", r.epsilon_record_max);
        put("epsilon/record_mean", r.epsilon_record_mean);
        put("clients/participants", f64::from(r.participants));
        put("clients/contributed", f64::from(r.contributed));
        if let Some(e) = r.epsilon_client_level {
            put("epsilon/client_level", e);
        }
        for (stage, secs) in &r.stage_s {
            put(&format!("time/{stage}_s"), *secs);
        }
    }
    out
}

fn scalars(read: &Value) -> BTreeMap<String, Vec<(i64, f32)>> {
    read["scalars"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
                .collect();
            (tag.clone(), points)
        })
        .collect()
}

#[test]
fn tensorboard_reads_every_scalar_the_report_wrote() {
    let python = python();
    let dir = std::env::temp_dir().join(format!("cohort-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let records: Vec<RoundRecord> = (1..=3).map(record).collect();
    let mut writer = ReportWriter::create(&dir).unwrap();
    for r in &records {
        writer.record(r.clone()).unwrap();
    }
    drop(writer);

    let logdir = dir.join("tensorboard");
    let read = read_with_tensorboard(&python, &logdir);
    assert_eq!(read["file_version"], 2.0, "{read}");
    assert_eq!(scalars(&read), expected(&records), "{read}");

    // A flipped byte in the last record's data: TensorBoard's reader must notice the CRC
    // mismatch and drop that record (round 3), keeping the first two rounds.
    let file = std::fs::read_dir(&logdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("tfevents"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join(file.file_name().unwrap()), &bytes).unwrap();
    let damaged = scalars(&read_with_tensorboard(&python, &corrupt));
    assert_eq!(damaged, expected(&records[..2]), "{damaged:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
