use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> DataSpec {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn parse_err(text: &str) -> String {
    match text.parse::<DataSpec>() {
        Ok(spec) => panic!("{text} parsed as {spec:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_the_documented_examples() {
    let spec = parse("csv:client/data/breast_cancer.csv?label=diagnosis");
    let DataSpec::Csv { path, options } = &spec else {
        panic!("{spec:?}")
    };
    assert_eq!(path, Path::new("client/data/breast_cancer.csv"));
    assert_eq!(options, &CsvOptions::new("diagnosis"));

    let spec = parse(
        "csv:sites.csv?label=outcome&group=hospital&drop=patient_id,name&test=0.25&seed=3&standardize=false",
    );
    let DataSpec::Csv { options, .. } = &spec else {
        panic!("{spec:?}")
    };
    assert_eq!(options.group.as_deref(), Some("hospital"));
    assert_eq!(options.drop, vec!["patient_id", "name"]);
    assert_eq!(
        (options.test_fraction, options.seed, options.standardize),
        (0.25, 3, false)
    );

    assert_eq!(
        parse("mnist:data/mnist"),
        DataSpec::Mnist {
            path: "data/mnist".into()
        }
    );
    assert_eq!(parse("fashion-mnist:/x").kind(), "fashion-mnist");

    let spec = parse("text:book.txt?context=32&level=byte&stride=4");
    let DataSpec::Text { options, .. } = &spec else {
        panic!("{spec:?}")
    };
    assert_eq!(
        (
            options.context,
            options.level,
            options.stride,
            options.test_fraction
        ),
        (32, TextLevel::Byte, 4, 0.1)
    );
    let DataSpec::Text { options, .. } = parse("text:book.txt") else {
        panic!()
    };
    assert_eq!(options, TextOptions::new(64));
}

#[test]
fn canonical_form_keeps_only_non_defaults() {
    let text = "csv:a.csv?test=0.2&label=y&seed=0&standardize=true";
    assert_eq!(parse(text).to_string(), "csv:a.csv?label=y");
    assert_eq!(
        parse("text:t.txt?context=64&level=char").to_string(),
        "text:t.txt"
    );
    assert_eq!(parse("mnist:d?").to_string(), "mnist:d");
}

#[test]
fn escapes_protect_reserved_characters() {
    let spec = parse("csv:odd%3Fname.csv?label=a%26b&drop=x%2Cy,z");
    let DataSpec::Csv { path, options } = &spec else {
        panic!()
    };
    assert_eq!(path, Path::new("odd?name.csv"));
    assert_eq!(options.label, "a&b");
    assert_eq!(options.drop, vec!["x,y", "z"]);
    assert_eq!(parse(&spec.to_string()), spec);
}

#[test]
fn errors_say_what_is_accepted() {
    assert!(parse_err("mnist").contains("expected KIND:PATH"));
    assert!(parse_err("cifar:data").contains("unknown kind `cifar`"));
    assert!(parse_err("csv:").contains("path after `:` is empty"));
    assert!(parse_err("csv:a.csv").contains("needs `label=COLUMN`"));
    let message = parse_err("csv:a.csv?label=y&lable=z");
    assert!(
        message.contains("unknown option `lable`") && message.contains("label, test"),
        "{message}"
    );
    assert!(parse_err("csv:a.csv?label=y&label=z").contains("given twice"));
    assert!(parse_err("csv:a.csv?label=y&test=1.5").contains("strictly between 0 and 1"));
    assert!(parse_err("csv:a.csv?label=y&test=abc").contains("expected a fraction"));
    assert!(parse_err("csv:a.csv?label=y&seed=-1").contains("whole number"));
    assert!(parse_err("csv:a.csv?label=y&standardize=maybe").contains("`true` or `false`"));
    assert!(parse_err("csv:a.csv?label").contains("KEY=VALUE"));
    assert!(parse_err("csv:a.csv?label=%zz").contains("%XX"));
    assert!(parse_err("mnist:d?seed=1").contains("takes no options"));
    assert!(parse_err("text:t?context=0").contains("at least 1"));
    assert!(parse_err("text:t?level=word").contains("`char` or `byte`"));
}

#[test]
fn serde_uses_the_string_form() {
    let spec = parse("csv:a.csv?label=y&group=site");
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(json, r#""csv:a.csv?label=y&group=site""#);
    assert_eq!(serde_json::from_str::<DataSpec>(&json).unwrap(), spec);
    let bad = serde_json::from_str::<DataSpec>(r#""csv:a.csv""#).unwrap_err();
    assert!(bad.to_string().contains("label=COLUMN"), "{bad}");
}

#[test]
fn load_dispatches_on_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "a,b,y\n1,2,p\n3,4,q\n5,6,p\n7,8,q\n9,1,p\n").unwrap();
    let spec = parse(&format!("csv:{}?label=y&test=0.4", csv.display()));
    let split = load(&spec).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (3, 2));
    let err = load(&parse(&format!("mnist:{}", dir.path().display()))).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
}

fn name() -> impl Strategy<Value = String> {
    // Printable text including every reserved character, never empty.
    "[a-zA-Z0-9_ .%?&=,:/-]{1,12}"
}

fn csv_spec() -> impl Strategy<Value = DataSpec> {
    (
        name(),
        name(),
        prop::collection::vec(name(), 0..3),
        prop::option::of(name()),
        1u32..99,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(path, label, drop, group, percent, seed, standardize)| DataSpec::Csv {
                path: path.into(),
                options: CsvOptions {
                    label,
                    drop,
                    group,
                    test_fraction: f64::from(percent) / 100.0,
                    seed,
                    standardize,
                },
            },
        )
}

fn other_spec() -> impl Strategy<Value = DataSpec> {
    (name(), 0u8..4, 1usize..512, 1usize..9, 1u32..99).prop_map(
        |(path, which, context, stride, percent)| match which {
            0 => DataSpec::Mnist { path: path.into() },
            1 => DataSpec::FashionMnist { path: path.into() },
            _ => DataSpec::Text {
                path: path.into(),
                options: TextOptions {
                    context,
                    level: if which == 2 {
                        TextLevel::Char
                    } else {
                        TextLevel::Byte
                    },
                    stride,
                    test_fraction: f64::from(percent) / 100.0,
                },
            },
        },
    )
}

proptest! {
    #[test]
    fn display_then_parse_is_the_identity(spec in prop_oneof![csv_spec(), other_spec()]) {
        let text = spec.to_string();
        let back: DataSpec = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, spec);
    }
}
