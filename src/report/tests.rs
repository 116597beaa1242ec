#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tensorboard::{crc32c, masked_crc32c};
use super::*;

fn record(round: u64, accuracy: f64, eps: f64) -> RoundRecord {
    RoundRecord {
        round,
        status: "completed".into(),
        accuracy,
        loss: 1.0 / round as f64,
        epsilon_record_max: eps,
        epsilon_record_mean: eps / 2.0,
        epsilon_client_level: round.is_multiple_of(2).then_some(0.5 * round as f64),
        participants: 5,
        contributed: 4,
        stage_s: BTreeMap::from([("train_mean".to_owned(), 0.25), ("open".to_owned(), 0.01)]),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cohort-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    // 32 zero bytes: the iSCSI test vector.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    // The mask is a rotation plus a constant, so it changes every value.
    assert_ne!(masked_crc32c(b"123456789"), crc32c(b"123456789"));
}

/// A minimal protobuf reader: (field, wire type, payload) triples.
fn fields(mut bytes: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = bytes[0];
            *bytes = &bytes[1..];
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let payload = match wire {
            0 => varint(&mut bytes).to_le_bytes().to_vec(),
            1 => {
                let (a, b) = bytes.split_at(8);
                bytes = b;
                a.to_vec()
            }
            2 => {
                let n = varint(&mut bytes) as usize;
                let (a, b) = bytes.split_at(n);
                bytes = b;
                a.to_vec()
            }
            5 => {
                let (a, b) = bytes.split_at(4);
                bytes = b;
                a.to_vec()
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((field, wire, payload));
    }
    out
}

/// Splits an event file into records, checking both masked CRCs of each.
fn records(file: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = file;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
        assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC");
        let data = &rest[12..12 + len];
        let data_crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked_crc32c(data), "data CRC");
        out.push(data.to_vec());
        rest = &rest[16 + len..];
    }
    out
}

#[test]
fn event_files_decode_with_valid_crcs_and_the_written_scalars() {
    let dir = temp_dir("tb");
    let mut w = ReportWriter::create(&dir).unwrap();
    w.record(record(1, 0.5, 0.3)).unwrap();
    w.record(record(2, 0.75, 0.6)).unwrap();
    let tb = std::fs::read_dir(dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("tfevents"))
        .expect("an event file");
    let events = records(&std::fs::read(tb).unwrap());
    assert_eq!(events.len(), 3, "version record + one per round");

    let first = fields(&events[0]);
    assert!(
        first
            .iter()
            .any(|(f, w, p)| *f == 3 && *w == 2 && p == b"brain.Event:2")
    );
    let wall = first.iter().find(|(f, _, _)| *f == 1).unwrap();
    assert_eq!(wall.1, 1);
    assert!(f64::from_le_bytes(wall.2.clone().try_into().unwrap()) > 1.6e9);

    let second = fields(&events[2]);
    let step = second.iter().find(|(f, _, _)| *f == 2).unwrap();
    assert_eq!(u64::from_le_bytes(step.2.clone().try_into().unwrap()), 2);
    let summary = &second.iter().find(|(f, _, _)| *f == 5).unwrap().2;
    let mut scalars = BTreeMap::new();
    for (field, wire, value) in fields(summary) {
        assert_eq!((field, wire), (1, 2));
        let v = fields(&value);
        let tag = String::from_utf8(v.iter().find(|x| x.0 == 1).unwrap().2.clone()).unwrap();
        let simple = v.iter().find(|x| x.0 == 2).unwrap();
        assert_eq!(simple.1, 5, "simple_value is a 32-bit float");
        scalars.insert(
            tag,
            f32::from_le_bytes(simple.2.clone().try_into().unwrap()),
        );
    }
    assert_eq!(scalars["accuracy"], 0.75);
    assert_eq!(scalars["epsilon/record_max"], 0.6);
    assert_eq!(scalars["epsilon/client_level"], 1.0);
    assert_eq!(scalars["time/train_mean_s"], 0.25);
    assert_eq!(scalars["clients/contributed"], 4.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_files_summary_and_plots_are_written() {
    let dir = temp_dir("files");
    let mut w = ReportWriter::create(&dir).unwrap();
    let mut aborted = record(2, 0.5, 0.6);
    aborted.status = "aborted: too few updates, 1 of 3".into();
    aborted.stage_s.insert("secagg_unmask".into(), 0.5);
    w.record(record(1, 0.5, 0.3)).unwrap();
    w.record(aborted).unwrap();
    let summary = Summary {
        name: "t".into(),
        seed: 7,
        clients: 5,
        rounds: 2,
        rounds_completed: 1,
        parameters: 10,
        final_accuracy: 0.5,
        best_accuracy: 0.5,
        epsilon_record_max: 0.6,
        epsilon_record_mean: 0.3,
        delta: 1e-5,
        epsilon_client_level: None,
        epsilon_by_client: BTreeMap::from([("a".into(), 0.6)]),
        wall_s: 1.0,
        peak_rss_mb: Some(10.0),
        settings: BTreeMap::new(),
    };
    w.finish(&summary).unwrap();

    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "round,status,accuracy,loss,epsilon_record_max,epsilon_record_mean,epsilon_client_level,participants,contributed,stage_open_s,stage_secagg_unmask_s,stage_train_mean_s"
    );
    assert_eq!(lines[1], "1,completed,0.5,1,0.3,0.15,,5,4,0.01,,0.25");
    assert!(lines[2].starts_with("2,\"aborted: too few updates, 1 of 3\",0.5,0.5,0.6,0.3,1,5,4,"));

    let json: Vec<RoundRecord> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json, w.records());
    let back: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(back, summary);
    for plot in ["accuracy_vs_round.svg", "accuracy_vs_epsilon.svg"] {
        let svg = std::fs::read_to_string(dir.join(plot)).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
        assert!(svg.contains("test accuracy"), "{plot} has its axis label");
        assert!(svg.contains("<circle"), "{plot} marks the rounds");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn timings_are_the_only_thing_stripped_for_comparison() {
    let r = record(3, 0.9, 1.0);
    let s = r.without_timings();
    assert!(s.stage_s.is_empty());
    assert_eq!(
        RoundRecord {
            stage_s: r.stage_s.clone(),
            ..s
        },
        r
    );
}

#[test]
fn csv_cells_with_line_breaks_and_quotes_round_trip() {
    let mut r = record(1, 0.5, 0.3);
    r.status = "aborted: \"late\"\r\nthen, more".into();
    let text = metrics_csv(&[r.clone()]).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[1], r.status);
    assert_eq!(
        reader.records().count(),
        0,
        "one record, however many line breaks"
    );
}
