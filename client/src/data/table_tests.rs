use super::*;
use std::io::Write;

fn write_csv(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn table_text(rows: usize) -> String {
    let mut text = String::from("id,age,site,marker,diagnosis\n");
    for i in 0..rows {
        let diagnosis = if i % 3 == 0 { "malignant" } else { "benign" };
        let site = ["north", "south"][i % 2];
        text.push_str(&format!("p{i},{},{site},{}.5,{diagnosis}\n", 30 + i, i % 7));
    }
    text
}

#[test]
fn reads_features_labels_and_skips_text_columns() {
    let file = write_csv(&table_text(10));
    let table = read_csv(file.path(), &CsvOptions::new("diagnosis")).unwrap();
    assert_eq!(table.rows(), 10);
    assert_eq!(table.feature_names, vec!["age", "marker"]);
    assert_eq!(table.skipped_columns, vec!["id", "site"]);
    assert_eq!(table.class_names, vec!["benign", "malignant"]);
    assert_eq!(&table.labels[..4], &[1, 0, 0, 1]);
    assert_eq!(&table.features[..4], &[30.0, 0.5, 31.0, 1.5]);
}

#[test]
fn numeric_labels_sort_numerically() {
    let file = write_csv("x,y\n1,10\n2,2\n3,10\n4,-1\n");
    let table = read_csv(file.path(), &CsvOptions::new("y")).unwrap();
    assert_eq!(table.class_names, vec!["-1", "2", "10"]);
    assert_eq!(table.labels, vec![2, 1, 2, 0]);
}

#[test]
fn missing_value_names_line_and_column() {
    let file = write_csv("a,b,label\n1,2,x\n3,,y\n5,6,x\n");
    let err = read_csv(file.path(), &CsvOptions::new("label")).unwrap_err();
    match &err {
        DataError::BadValue {
            line,
            column,
            problem,
            ..
        } => {
            assert_eq!(
                (*line, column.as_str(), *problem),
                (3, "b", "missing value")
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("line 3") && message.contains("`b`"),
        "{message}"
    );
    assert!(message.contains("drop=b"), "{message}");
}

#[test]
fn non_numeric_cell_in_a_numeric_column_is_an_error() {
    let file = write_csv("a,b,label\n1,2,x\n3,4,y\n5,six,x\n7,oops,y\n");
    let err = read_csv(file.path(), &CsvOptions::new("label")).unwrap_err();
    assert!(
        matches!(&err, DataError::BadValue { line: 4, column, problem: "not a number", value, .. }
            if column == "b" && value == "six"),
        "{err:?}"
    );
}

#[test]
fn infinite_value_is_rejected() {
    let file = write_csv("a,label\n1,x\ninf,y\n");
    let err = read_csv(file.path(), &CsvOptions::new("label")).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadValue {
                problem: "not finite",
                line: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn missing_label_is_an_error() {
    let file = write_csv("a,label\n1,x\n2,\n");
    let err = read_csv(file.path(), &CsvOptions::new("label")).unwrap_err();
    assert!(
        matches!(&err, DataError::BadValue { line: 3, column, .. } if column == "label"),
        "{err:?}"
    );
}

#[test]
fn ragged_row_is_an_error_with_its_line() {
    let file = write_csv("a,b,label\n1,2,x\n3,4\n");
    let err = read_csv(file.path(), &CsvOptions::new("label")).unwrap_err();
    assert!(matches!(err, DataError::Csv { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("has 2 fields but the header has 3"),
        "{err}"
    );
}

#[test]
fn unknown_label_column_lists_the_header() {
    let file = write_csv("a,b,label\n1,2,x\n");
    let err = read_csv(file.path(), &CsvOptions::new("diagnosis")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DataError::MissingColumn { .. }));
    assert!(message.contains("a, b, label"), "{message}");
}

#[test]
fn single_class_and_header_only_files_are_rejected() {
    let one_class = write_csv("a,label\n1,x\n2,x\n");
    assert!(read_csv(one_class.path(), &CsvOptions::new("label")).is_err());
    let header_only = write_csv("a,label\n");
    let err = read_csv(header_only.path(), &CsvOptions::new("label")).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    let missing = read_csv(Path::new("/nonexistent/x.csv"), &CsvOptions::new("label"));
    assert!(matches!(missing, Err(DataError::Io { .. })));
}

#[test]
fn drop_and_group_columns_are_not_features() {
    let file = write_csv(&table_text(12));
    let mut options = CsvOptions::new("diagnosis");
    options.drop = vec!["marker".into()];
    options.group = Some("site".into());
    let split = load_csv(file.path(), &options).unwrap();
    assert_eq!(split.info.feature_names, vec!["age"]);
    let groups = split.info.groups.unwrap();
    assert_eq!(groups.name, "site");
    assert_eq!(groups.train.len() + groups.test.len(), 12);
    // The site column follows its rows through the shuffle: age 30+i has site i%2.
    let ages: Vec<f32> = Vec::try_from(&split.train.features.view([-1])).unwrap();
    let scaler = split.info.standardizer.unwrap();
    for (age, site) in ages.iter().zip(&groups.train) {
        let raw = age * scaler.std[0] + scaler.mean[0];
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = (raw.round() as usize) - 30;
        assert_eq!(site, ["north", "south"][i % 2]);
    }
}

#[test]
fn standardisation_uses_training_statistics_only() {
    let file = write_csv(&table_text(50));
    let split = load_csv(file.path(), &CsvOptions::new("diagnosis")).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (40, 10));
    let mean: Vec<f32> =
        Vec::try_from(&split.train.features.mean_dim(0, false, tch::Kind::Float)).unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
    // Undo the scaling on the test side with the stored (training) statistics: the raw ages
    // must come back as whole numbers in 30..80, which only holds if the test side was scaled
    // with exactly those statistics.
    let scaler = split.info.standardizer.unwrap();
    let test: Vec<f32> = Vec::try_from(&split.test.features.select(1, 0)).unwrap();
    for scaled in test {
        let raw = scaled * scaler.std[0] + scaler.mean[0];
        assert!(
            (raw - raw.round()).abs() < 1e-3 && (30.0..80.0).contains(&raw),
            "{raw}"
        );
    }
}

#[test]
fn split_is_seeded() {
    let file = write_csv(&table_text(30));
    let labels = |seed| {
        let mut options = CsvOptions::new("diagnosis");
        options.seed = seed;
        load_csv(file.path(), &options)
            .unwrap()
            .test
            .label_vec()
            .unwrap()
    };
    assert_eq!(labels(1), labels(1));
    let features = |seed| {
        let mut options = CsvOptions::new("diagnosis");
        options.seed = seed;
        options.standardize = false;
        let split = load_csv(file.path(), &options).unwrap();
        Vec::<f32>::try_from(&split.test.features.view([-1])).unwrap()
    };
    assert_ne!(features(1), features(2));
}

/// The vendored breast-cancer table loads as documented in client/data/README.md.
#[test]
fn vendored_breast_cancer_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/breast_cancer.csv");
    let split = load_csv(&path, &CsvOptions::new("diagnosis")).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (455, 114));
    assert_eq!(split.train.features.size(), vec![455, 30]);
    assert_eq!(split.info.class_names, vec!["benign", "malignant"]);
    assert_eq!(split.info.feature_names[0], "mean_radius");
    assert_eq!(split.info.feature_names[29], "worst_fractal_dimension");
    assert!(split.info.skipped_columns.is_empty());
    let mut labels = split.train.label_vec().unwrap();
    labels.extend(split.test.label_vec().unwrap());
    let malignant = labels.iter().filter(|&&l| l == 1).count();
    assert_eq!((labels.len() - malignant, malignant), (357, 212));
}
