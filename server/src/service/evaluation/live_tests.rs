use std::collections::BTreeMap;

use cohort_evaluation::{ClassificationCounts, ClassificationShape, Shape};
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Placement, ReleasePlan};
use cohort_protocol::FederationId;
use cohort_protocol::evaluation::{EvaluationTask, TaskNoise};

use super::{LiveEvaluation, Refusal};
use crate::domain::{ClientId, Timestamp};

fn shape() -> ClassificationShape {
    ClassificationShape::new(2, 1, 4, 1.0, 1).unwrap()
}

fn live(plan: Option<ReleasePlan>, per_site: bool) -> LiveEvaluation {
    let task = EvaluationTask {
        federation: FederationId::parse("f").unwrap(),
        evaluation: 1,
        model_version: 0,
        shape: Shape::Classification(shape()),
        group_column: None,
        group_values: vec![String::new()],
        noise: TaskNoise::Off,
        epsilon_after: None,
        upload_deadline_ms: 0,
        model_spec: None,
        config: Default::default(),
    };
    let participants: BTreeMap<ClientId, Option<f64>> = ["a", "b"]
        .into_iter()
        .map(|c| (ClientId::parse(c).unwrap(), None))
        .collect();
    LiveEvaluation::new(
        1,
        task,
        Shape::Classification(shape()),
        participants,
        plan,
        per_site,
        Timestamp::from_millis(10_000),
    )
}

fn site(records: usize) -> Vec<i64> {
    let mut c = ClassificationCounts::new(shape());
    for i in 0..records {
        c.add(0, i % 2, &[0.4, 0.6], 0.5).unwrap();
    }
    c.to_vector()
}

fn id(c: &str) -> ClientId {
    ClientId::parse(c).unwrap()
}

#[test]
fn sums_what_the_asked_sites_send_once_before_the_deadline() {
    let mut l = live(None, false);
    let t = Timestamp::from_millis(1);
    assert_eq!(l.accept(&id("a"), site(3), t), Ok(1));
    assert!(!l.is_due(t));
    assert_eq!(l.accept(&id("a"), site(3), t), Err(Refusal::Duplicate));
    assert_eq!(l.accept(&id("z"), site(3), t), Err(Refusal::NotAsked));
    assert_eq!(
        l.accept(&id("b"), site(3), Timestamp::from_millis(10_000)),
        Err(Refusal::Late)
    );
    assert_eq!(l.accept(&id("b"), site(5), t), Ok(2));
    assert!(l.is_due(t));
    let both: Vec<i64> = site(3).iter().zip(site(5)).map(|(a, b)| a + b).collect();
    assert_eq!(l.sum.values(), &both[..]);
    assert_eq!(l.sum_variance(), Some(0.0));
    assert!(
        l.sites.is_none(),
        "per-site vectors are not kept unless allowed"
    );
}

#[test]
fn bad_vectors_are_refused_and_change_nothing() {
    let mut l = live(None, false);
    let t = Timestamp::from_millis(1);
    let before = l.sum.clone();
    let mut negative = site(2);
    negative[0] -= 3;
    negative[1] += 3;
    for bad in [site(2)[1..].to_vec(), negative, vec![0; 1000]] {
        assert!(matches!(
            l.accept(&id("a"), bad, t),
            Err(Refusal::Invalid(_))
        ));
    }
    assert_eq!(l.sum, before);
    assert!(
        l.contributed.is_empty(),
        "a refused site may still send valid statistics"
    );
    assert_eq!(l.accept(&id("a"), site(2), t), Ok(1));
}

#[test]
fn noisy_sites_are_kept_apart_only_when_allowed_and_the_sum_carries_their_noise() {
    let sensitivity = Shape::Classification(shape()).sensitivity().unwrap();
    let plan = ReleasePlan::calibrate(
        EpsDelta::new(1.0, 1e-6).unwrap(),
        sensitivity,
        Placement::Local,
    )
    .unwrap();
    let mut l = live(Some(plan), true);
    let t = Timestamp::from_millis(1);
    let mut noisy = site(2);
    noisy[0] = -3; // plausible under noise of std ~3
    assert_eq!(l.accept(&id("a"), noisy, t), Ok(1));
    assert_eq!(l.sites.as_ref().map(Vec::len), Some(1));
    assert_eq!(l.sum_variance(), Some(2.0 * plan.per_site_mu()));
    let mut absurd = site(2);
    absurd[0] = -1_000_000;
    assert!(matches!(
        l.accept(&id("b"), absurd, t),
        Err(Refusal::Invalid(_))
    ));
}
