use proptest::prelude::*;

use super::*;
use crate::data::{self, DataSpec};

fn load(text: &str) -> Result<Split, DataError> {
    data::load(
        &text
            .parse::<DataSpec>()
            .unwrap_or_else(|e| panic!("{text}: {e}")),
    )
}

fn rows(side: &Dataset) -> Vec<Vec<f32>> {
    (0..side.len())
        .map(|i| Vec::try_from(&side.features.get(i).flatten(0, -1)).unwrap())
        .collect()
}

#[test]
fn windows_and_labels_follow_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    let mut text = String::from("x,y,note\n");
    for t in 0..20 {
        text.push_str(&format!("{t},{},n{t}\n", 2 * t));
    }
    std::fs::write(&path, text).unwrap();
    let split = load(&format!(
        "timeseries:{}?target=y&window=3&horizon=2&test=0.25&standardize=false",
        path.display()
    ))
    .unwrap();
    assert_eq!(split.info.feature_names, ["x", "y"]);
    assert_eq!(split.train.features.size(), [11, 3, 2]);
    assert_eq!(split.train.num_classes, 1);
    assert_eq!(split.train.labels.kind(), Kind::Float);
    // Cut at row 15: train windows end at rows 2..=12 (label row ≤ 14), test at row 17.
    assert_eq!(rows(&split.train)[0], [0.0, 0.0, 1.0, 2.0, 2.0, 4.0]);
    let labels: Vec<f32> = Vec::try_from(&split.train.labels).unwrap();
    assert_eq!(
        labels,
        (2..=12).map(|e| 2.0 * (e + 2) as f32).collect::<Vec<_>>()
    );
    assert_eq!(rows(&split.test), [[15.0, 30.0, 16.0, 32.0, 17.0, 34.0]]);
    let test: Vec<f32> = Vec::try_from(&split.test.labels).unwrap();
    assert_eq!(test, [38.0]);
}

#[test]
fn no_test_window_touches_a_training_time_step() {
    // Three series, rows shuffled in the file, ordered by a numeric time column; `t` repeats
    // the time as an input so each window shows which steps it used.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    let mut lines = Vec::new();
    for (series, len) in [("a", 40), ("b", 30), ("c", 31)] {
        for t in 0..len {
            lines.push(format!("{series},{t},{t},{}", (t * 7) % 5));
        }
    }
    let order = crate::data::permutation(lines.len(), 9);
    let mut text = String::from("patient,hour,t,value\n");
    for i in order {
        text.push_str(&lines[i]);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let (window, horizon) = (5, 3);
    let split = load(&format!(
        "timeseries:{}?target=value&window={window}&horizon={horizon}&group=patient&time=hour\
         &test=0.3&standardize=false",
        path.display()
    ))
    .unwrap();
    let groups = split.info.groups.as_ref().unwrap();
    assert_eq!(split.info.feature_names, ["t", "value"]);
    for series in ["a", "b", "c"] {
        let steps = |side: &Dataset, names: &[String], with_label: bool| -> Vec<f32> {
            let mut used = Vec::new();
            for (row, name) in rows(side).iter().zip(names) {
                if name == series {
                    let times: Vec<f32> = row.chunks(2).map(|c| c[0]).collect();
                    // Consecutive steps, in order: the time column ordered the rows.
                    assert!(times.windows(2).all(|w| w[1] == w[0] + 1.0), "{times:?}");
                    used.extend_from_slice(&times);
                    if with_label {
                        used.push(times[window - 1] + horizon as f32);
                    }
                }
            }
            used
        };
        let train = steps(&split.train, &groups.train, true);
        let test = steps(&split.test, &groups.test, true);
        assert!(!train.is_empty() && !test.is_empty(), "series {series}");
        let last_train = train.iter().copied().fold(f32::MIN, f32::max);
        let first_test = test.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            last_train < first_test,
            "series {series}: {last_train} ≥ {first_test}"
        );
    }
}

proptest! {
    #[test]
    fn window_ends_never_cross_the_cut(
        len in 1usize..200,
        window in 1usize..20,
        horizon in 1usize..10,
        test in 0.05f64..0.95,
    ) {
        let (cut, train, test_ends) = window_ends(len, window, horizon, test);
        for &e in &train {
            prop_assert!(e + 1 >= window && e + horizon < cut);
        }
        for &e in &test_ends {
            prop_assert!(e + 1 - window >= cut && e + horizon < len);
        }
        // Every window fully on one side is used.
        let expect_train = (cut.saturating_sub(horizon)).saturating_sub(window - 1);
        prop_assert_eq!(train.len(), expect_train);
    }
}

#[test]
fn a_class_target_gives_class_indices_and_is_not_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    let mut text = String::from("date,hr,state\n");
    for day in 1..=28 {
        let state = if day % 3 == 0 { "alarm" } else { "ok" };
        text.push_str(&format!("2026-02-{day:02},{},{state}\n", 60 + day));
    }
    std::fs::write(&path, text).unwrap();
    let split = load(&format!(
        "timeseries:{}?target=state&window=2&target_type=class&time=date",
        path.display()
    ))
    .unwrap();
    assert_eq!(split.info.class_names, ["alarm", "ok"]);
    assert_eq!(split.info.feature_names, ["hr"]);
    assert_eq!(split.train.labels.kind(), Kind::Int64);
    assert_eq!(split.train.num_classes, 2);
    // Window ending on day e (row e−1) predicts day e+1: alarm when e+1 is a multiple of 3.
    let labels = split.train.label_vec().unwrap();
    let want: Vec<i64> = (2..=21)
        .map(|day: i64| i64::from((day + 1) % 3 != 0))
        .collect();
    assert_eq!(labels, want);
}

#[test]
fn malformed_input_gets_one_error_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    std::fs::write(&path, "id,t,v\na,1,1\na,2,x\na,3,2\n").unwrap();
    let spec = format!(
        "timeseries:{}?target=v&window=1&group=id&time=t",
        path.display()
    );
    let err = load(&spec).unwrap_err().to_string();
    assert!(err.contains("line 3, column `v`: not a number"), "{err}");

    std::fs::write(&path, "id,t,v\na,1,1\na,1,2\na,3,2\n").unwrap();
    let err = load(&spec).unwrap_err().to_string();
    assert!(err.contains("series `a` has two rows at `t`"), "{err}");

    let mut text = String::from("id,t,v\n");
    for t in 0..30 {
        text.push_str(&format!("long,{t},{t}\n"));
    }
    text.push_str("short,0,1\nshort,1,2\n");
    std::fs::write(&path, text).unwrap();
    let err = load(&spec).unwrap_err().to_string();
    assert!(
        err.contains("series \"short\"") && err.contains("2 rows"),
        "{err}"
    );

    let err = load(&format!("timeseries:{}?target=w&window=2", path.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column named `w`"), "{err}");
}

#[test]
fn the_spec_round_trips_and_checks_its_options() {
    let text = "timeseries:v.csv?target=hr&window=24&horizon=6&group=patient&time=hour\
                &drop=a,b&target_type=class&test=0.3&standardize=false";
    let spec: DataSpec = text.parse().unwrap();
    assert_eq!(spec.to_string(), text);
    assert_eq!(
        "timeseries:v.csv?window=3&target=y"
            .parse::<DataSpec>()
            .unwrap()
            .to_string(),
        "timeseries:v.csv?target=y&window=3"
    );
    for (bad, says) in [
        ("timeseries:v.csv?target=y", "window=W"),
        ("timeseries:v.csv?window=2", "target=COLUMN"),
        ("timeseries:v.csv?target=y&window=0", "at least 1"),
        (
            "timeseries:v.csv?target=y&window=2&target_type=int",
            "`real` or `class`",
        ),
    ] {
        let err = bad.parse::<DataSpec>().unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
