#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const SAMPLE: &str = include_str!("../../examples/sim/hospitals.toml");

fn message(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    from_toml(text, &sets, None, "t").unwrap_err().0
}

#[test]
fn the_sample_config_validates_with_its_defaults() {
    let c = from_toml(SAMPLE, &[], None, "x").unwrap();
    assert_eq!(c.name, "hospitals");
    assert_eq!(c.rounds, 20);
    assert_eq!(c.clients, Some(5));
    assert_eq!(c.transport, TransportKind::InProcess);
    assert_eq!(c.partition, Partitioner::Iid);
    assert_eq!(c.model, ModelSource::Preset("logistic".into()));
    assert!(c.training.secure_aggregation());
    assert_eq!(c.budget_of(3).unwrap().epsilon(), 2.0);
    assert_eq!(c.budget_of(3).unwrap().delta(), 1e-5);
}

#[test]
fn set_overrides_nested_keys_with_typed_values_and_seed_wins() {
    let sets = [
        "rounds=3".to_owned(),
        "federation.dp_sgd.noise_multiplier=1.25".to_owned(),
        "data.partition=dirichlet:0.3".to_owned(),
        "transport=\"https\"".to_owned(),
        "clients.epsilon=[1.0, 2.0, 3.0, 4.0, 5.0]".to_owned(),
        "seed=9".to_owned(),
    ];
    let c = from_toml(SAMPLE, &sets, Some(11), "x").unwrap();
    assert_eq!(c.rounds, 3);
    assert_eq!(c.training.dp_sgd().noise_multiplier, 1.25);
    assert_eq!(
        c.partition,
        Partitioner::Dirichlet {
            alpha: 0.3,
            min_size: 1
        }
    );
    assert_eq!(c.transport, TransportKind::Https);
    assert_eq!(c.budget_of(4).unwrap().epsilon(), 5.0);
    assert_eq!(c.seed, 11, "--seed beats the file and --set");
}

#[test]
fn bad_configs_are_one_line_naming_the_key_and_the_fix() {
    let cases: &[(&[&str], &str)] = &[
        (&["rounds=0"], "rounds must be at least 1"),
        (&["workers=0"], "workers must be at least 1"),
        (&["transport=\"carrier-pigeon\""], "transport must be"),
        (&["data.partition=zipf"], "data.partition"),
        (&["data.clients=0"], "data.clients must be at least 1"),
        (&["model.spec=\"m.json\""], "exactly one of model.preset"),
        (&["training.learning_rate=-1"], "training.learning_rate"),
        (&["clients.epsilon=[1.0]"], "one budget per client"),
        (&["faults.dropout.upload=1.5"], "faults.dropout.upload"),
        (&["federation.min_clients=0"], "min_clients"),
        (
            &["federation.client_sampling_rate=2.0"],
            "client_sampling_rate",
        ),
        (&["typo=1"], "typo"),
        (&["novalue"], "KEY=VALUE"),
        (&["data.name_prefix=\"Bad Name\""], "data.name_prefix"),
        (&["rounds.x=1"], "not a table"),
    ];
    for (sets, expected) in cases {
        let m = message(SAMPLE, sets);
        assert!(m.contains(expected), "{sets:?}: {m}");
        assert!(!m.contains('\n'), "{sets:?}: not one line: {m}");
    }
    assert!(message("rounds = [", &[]).contains("not valid TOML"));
}

#[test]
fn a_missing_file_says_where_samples_are() {
    let e = load(Path::new("/nonexistent/x.toml"), &[], None).unwrap_err();
    assert!(e.0.contains("examples/sim/"), "{e}");
}
